//! The request path, in phase order: snapshot -> target -> route -> substitute -> upstream ->
//! respond -> record.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme as UriScheme};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, BodyLimits, ClientBody, Pending, RequestBody};
use super::budget::BufferBudget;
use super::headers::strip_hop_by_hop;
use super::path;
use super::protocol::upstream_protocol;
use super::target::{target_of, Entry, Target};
use super::timed::TimedBody;
use super::upgrade::{self, Upgrade};
use super::upstream::Protocol;
use super::ProxyBody;
use crate::cache::{self, Fetched, Lookup};
use crate::config::Unmatched;
use crate::error::ProxyError;
use crate::policy::callers::{Caller, Listener, Peer};
use crate::policy::positions::{Explainer, RequestResolvers};
use crate::policy::{audit, connect::AddressDenied};
use crate::routes::Scheme;
use crate::snapshot::{RequestTokens, Snapshot};
use crate::substitute::{RedactingBody, Redactions, Refused, Resolve};

/// What the request path learned about a request, for metrics and the audit line.
#[derive(Default)]
struct Seen {
    route: Option<usize>,
    caller: Option<Arc<Caller>>,
    /// Names the place of a refusal by position.
    explainer: Option<Explainer>,
    /// The audit line being filled in, when `[audit]` is on.
    audit: Option<audit::Entry>,
}

/// Serves one request with one snapshot, turning every failure into a JSON error response.
///
/// Each phase that may wait is awaited from here, and only the one this request needs: a
/// routed request's future holds the upstream part and no cache's, nor an unrouted one's.
pub async fn forward(
    snapshot: Arc<Snapshot>,
    budget: Arc<BufferBudget>,
    entry: Entry,
    peer: Peer,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let mut seen = Seen::default();
    if snapshot.policy.audit.is_some() {
        seen.audit = Some(audit::Entry::started(method.as_str()));
    }
    let result = match admit(&snapshot, &entry, &peer, req, &mut seen) {
        Err(error) => Err(error),
        Ok(Admitted::Unrouted(unrouted)) => unrouted.send(&snapshot).await,
        // Boxed: the cache phase is a large future only cached routes need.
        Ok(Admitted::Cached(routed)) => Box::pin(cached(&snapshot, &budget, routed, &mut seen)).await,
        Ok(Admitted::Routed(routed)) => {
            let Routed { outbound, parts, body } = routed;
            let body = RequestBody::Client(body);
            fetch(&snapshot, &budget, outbound, parts, body, Some(&mut seen)).await.map(|f| f.response)
        }
    };
    let result = match &seen.explainer {
        Some(explainer) => result.map_err(|e| explainer.explain(e)),
        None => result,
    };
    let error = result.as_ref().err().map(ProxyError::code);
    let response = result.unwrap_or_else(ProxyError::into_response);
    let status = response.status();
    let elapsed = started.elapsed();
    let route = seen.route;
    let route_name = match route.and_then(|r| snapshot.compiled.get(r)) {
        Some(compiled) => {
            compiled.duration.record(elapsed.as_secs_f64());
            metrics::SharedString::from(Arc::clone(&compiled.name))
        }
        None => {
            metrics::histogram!("proxy_request_duration_seconds", "route" => "none").record(elapsed.as_secs_f64());
            metrics::SharedString::const_str("none")
        }
    };
    tracing::debug!(%method, route = &*route_name, status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "request");
    crate::policy::record(&snapshot.policy, seen.caller.as_deref(), &route_name, status_label(status), error);
    match route.and_then(|r| snapshot.compiled.get(r)) {
        Some(compiled) => compiled.requests.increment(status_label(status)),
        None => {
            metrics::counter!("proxy_requests_total", "route" => "none", "status" => status_label(status)).increment(1)
        }
    }
    match (seen.audit, &snapshot.policy.audit) {
        (Some(mut entry), Some(log)) => {
            entry.caller = seen.caller.map(|c| Arc::clone(&c.name));
            entry.route = route.and_then(|r| snapshot.compiled.get(r)).map(|r| Arc::clone(&r.name));
            entry.status = status.as_u16();
            entry.error = error;
            response.map(|body| audit::audited(body, entry, started, Arc::clone(log)))
        }
        _ => response,
    }
}

/// A status code as a `'static` label, so counting a request allocates no string.
fn status_label(status: http::StatusCode) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| (0..1000u16).map(|code| &*Box::leak(code.to_string().into_boxed_str())).collect());
    LABELS.get(usize::from(status.as_u16())).copied().unwrap_or("other")
}

/// What the request path decided before anything is awaited.
enum Admitted {
    /// No route matched and policy lets it through: forwarded untouched, placeholders and all.
    Unrouted(Unrouted),
    /// A routed request on a route with a cache (never an upgrade).
    Cached(Routed),
    /// A routed request to be sent upstream.
    Routed(Routed),
}

/// An unrouted request, ready to send.
struct Unrouted {
    parts: http::request::Parts,
    uri: Uri,
    body: ProxyBody,
    target: Target,
    protocol: Protocol,
    upgrade: Option<Upgrade>,
}

impl Unrouted {
    async fn send(self, snapshot: &Snapshot) -> Result<Response<ProxyBody>, ProxyError> {
        let Unrouted { parts, uri, body, target, protocol, upgrade } = self;
        let response = send(snapshot, upstream_request(parts, uri, body, protocol), &target, 0, protocol).await?;
        let idle_timeout = snapshot.config.proxy.idle_timeout;
        upgrade::finish(upgrade, response, "none", idle_timeout, target.authority.as_str())
    }
}

/// A routed request admitted by policy, with its body still unread.
struct Routed {
    outbound: Outbound,
    parts: http::request::Parts,
    body: ClientBody,
}

/// Works out the target, the caller and the route, and checks the request against policy:
/// everything the request path decides without waiting.
fn admit(
    snapshot: &Arc<Snapshot>,
    entry: &Entry,
    peer: &Peer,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Admitted, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let upgrade = Upgrade::take(&mut parts);
    let settings = &snapshot.config.proxy;
    let body = TimedBody::new(body, settings.body_timeout);
    let target = target_of(entry, &parts)?;
    if let Some(entry) = &mut seen.audit {
        entry.target(&target);
    }
    // Who is asking, before any route or token is looked at (407 if it cannot be told).
    let caller = snapshot.policy.identify(listener_of(entry), peer, &parts.headers)?;
    seen.caller = caller.clone();
    // Userinfo never goes upstream in the target; a client that put credentials there meant
    // them as Basic credentials (which then get their placeholders filled like any others).
    if let (Entry::Proxy(_) | Entry::Unix(_), Some(basic)) = (entry, crate::substitute::basic_from_userinfo(&parts.uri))
    {
        parts.headers.entry(header::AUTHORIZATION).or_insert(basic);
    }
    // Invariant 8: routes are matched on one view of the path, and that view is what a
    // routed request sends.
    let path_view = path::match_view(target.path_and_query.path());
    let route = snapshot.routes.find(target.scheme, &target.host, target.port, &path_view, &parts.method).copied();

    let Some(route) = route else {
        if settings.unmatched == Unmatched::Deny {
            return Err(ProxyError::UnmatchedDenied(target.authority.to_string()));
        }
        snapshot.policy.admit_unrouted(&target.host, caller.as_deref())?;
        let uri = upstream_uri(&target, target.scheme, None)?;
        prepare_headers(&mut parts.headers, &target, upgrade.as_ref());
        let protocol = upstream_protocol(&parts.headers, upgrade.is_some(), false);
        let body = counted(body::untouched(body, &parts.method, &mut parts.headers), Some(seen));
        return Ok(Admitted::Unrouted(Unrouted { parts, uri, body, target, protocol, upgrade }));
    };
    seen.route = Some(route);
    let compiled = &snapshot.compiled[route];
    path::check_routed(&compiled.path_prefix, &path_view).map_err(ProxyError::PathNotNormalised)?;
    snapshot.policy.admit_route(route, &compiled.name, caller.as_deref())?;
    let path_and_query = match (path_view, target.path_and_query.query()) {
        (std::borrow::Cow::Borrowed(_), _) => target.path_and_query.as_str().to_owned(),
        (std::borrow::Cow::Owned(path), None) => path,
        (std::borrow::Cow::Owned(path), Some(query)) => format!("{path}?{query}"),
    };
    // An upgrade is never answered from the cache.
    let cached = compiled.cache.is_some() && upgrade.is_none();
    let routed = Routed { outbound: Outbound { route, target, path_and_query, upgrade }, parts, body };
    Ok(if cached { Admitted::Cached(routed) } else { Admitted::Routed(routed) })
}

/// A request on a cached route: a stored answer is served here, after the policy admitted
/// the request and before any token is loaded; otherwise it is fetched and maybe stored.
async fn cached(
    snapshot: &Arc<Snapshot>,
    budget: &Arc<BufferBudget>,
    routed: Routed,
    seen: &mut Seen,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Routed { outbound, mut parts, body } = routed;
    let limits = BodyLimits::of(&snapshot.config.proxy, budget);
    let Outbound { route, target, path_and_query, .. } = &outbound;
    match cache::lookup(snapshot, *route, target, path_and_query, &mut parts, body, &limits).await? {
        Lookup::Answer(response, refresh) => {
            if let Some(refresh) = refresh {
                refresh_in_background(snapshot, budget, outbound, refresh);
            }
            Ok(response)
        }
        Lookup::Fetch(body, ticket) => {
            let fetched = fetch(snapshot, budget, outbound, parts, body, Some(seen)).await;
            match ticket {
                Some(ticket) => ticket.settle(fetched),
                None => fetched.map(|f| f.response),
            }
        }
    }
}

/// Where a routed request goes, as decided before its upstream part.
struct Outbound {
    route: usize,
    target: Target,
    /// The path (normalised for matching) and query as the client sent them.
    path_and_query: String,
    /// The protocol upgrade the client asked for, carried through when the upstream agrees.
    upgrade: Option<Upgrade>,
}

/// The upstream part of a routed request: substitute, send (and once more after a 401 that
/// renewed its exchanged token), then bound and redact the response. `seen` collects what
/// the audit line records (absent for a background cache refresh).
async fn fetch(
    snapshot: &Arc<Snapshot>,
    budget: &Arc<BufferBudget>,
    outbound: Outbound,
    mut parts: http::request::Parts,
    body: RequestBody,
    mut seen: Option<&mut Seen>,
) -> Result<Fetched, ProxyError> {
    let Outbound { route, target, path_and_query, upgrade } = outbound;
    let settings = &snapshot.config.proxy;
    let compiled = &snapshot.compiled[route];
    let route_policy = snapshot.policy.routes.get(route);
    let network_set = route_policy.map_or(0, |p| p.network_set);
    let positions = route_policy.and_then(|p| p.positions.as_ref());
    prepare_headers(&mut parts.headers, &target, upgrade.as_ref());
    let protocol = upstream_protocol(&parts.headers, upgrade.is_some(), compiled.upstream_http2);
    for (name, template) in &compiled.set_headers {
        parts.headers.insert(name.clone(), template.clone());
    }
    if compiled.redact_responses {
        // A compressed response could not be scanned for the values to redact.
        parts.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    // An upstream's 401 to an exchanged token may mean the issuer revoked it early: keep the
    // request as the client wrote it, to send again once with a renewed token.
    let retry = compiled.retry_on_401 && compiled.bindings.iter().any(|(_, cell, _)| cell.renews_on_rejection());
    let mut tokens = Arc::new(RequestTokens::load(Arc::clone(snapshot), route, SystemTime::now()));
    // A DPoP server may ask for a nonce with a 401: the request is then sent again with it.
    let unsubstituted = (retry || tokens.has_dpop()).then(|| (parts.method.clone(), parts.headers.clone()));
    let method = parts.method.clone();
    let head = Head { snapshot, compiled, target: &target, path_and_query: &path_and_query, method: &method };
    if let Some(entry) = seen.as_deref_mut().and_then(|s| s.audit.as_mut()) {
        entry.tokens = Some(Arc::clone(&tokens));
    }
    // Each part of the request is substituted by the route's `substitute_in` rule for it.
    let resolvers = RequestResolvers::new(Arc::clone(&tokens) as Arc<dyn Resolve>, positions, &parts.headers);
    if let Some(seen) = seen.as_deref_mut() {
        seen.explainer = resolvers.explainer();
    }
    let limits = BodyLimits::of(settings, budget);
    let body_resolver = resolvers.body();
    // A token signed over the body's hash (body_sha256) needs the body before the headers.
    // Rare, so boxed: every other request's future does not carry the space of reading it.
    let pending = if tokens.needs_body(&parts.headers) {
        Box::pin(body::read_first_for_signing(body, &mut parts.headers, &body_resolver, &limits, &tokens)).await?
    } else {
        Pending::Unsubstituted(body)
    };
    let uri = head.substitute(&mut parts.headers, &resolvers, &tokens)?;
    let (body, replayable) = match pending {
        Pending::Unsubstituted(body) => {
            body::substituted(body, &parts.method, &mut parts.headers, body_resolver, limits).await?
        }
        Pending::Ready(body, replay) => (body, replay),
    };
    let body = counted(body, seen.as_deref());
    // Invariant 7: the body may have taken a while; no token leaves after its `exp`.
    tokens.check_fresh(SystemTime::now())?;
    let mut response =
        send(snapshot, upstream_request(parts, uri, body, protocol), &target, network_set, protocol).await?;

    let dpop_nonce = tokens.retry_for_dpop_nonce(&response);
    if response.status() == http::StatusCode::UNAUTHORIZED {
        if let (Some((method, headers)), Some(replayable)) = (unsubstituted, replayable) {
            if dpop_nonce || (retry && renew_rejected(&tokens).await) {
                drop(response);
                tokens = Arc::new(RequestTokens::load(Arc::clone(snapshot), route, SystemTime::now()));
                if let Some(entry) = seen.as_deref_mut().and_then(|s| s.audit.as_mut()) {
                    entry.tokens = Some(Arc::clone(&tokens));
                }
                let (mut parts, ()) = Request::new(()).into_parts();
                parts.method = method;
                parts.headers = headers;
                let resolvers =
                    RequestResolvers::new(Arc::clone(&tokens) as Arc<dyn Resolve>, positions, &parts.headers);
                let uri = head.substitute(&mut parts.headers, &resolvers, &tokens)?;
                let body = body::replay(
                    &replayable,
                    &mut parts.headers,
                    resolvers.body(),
                    budget,
                    settings.max_buffered_total,
                )?;
                let body = counted(body, seen.as_deref());
                tokens.check_fresh(SystemTime::now())?;
                response = send(snapshot, upstream_request(parts, uri, body, protocol), &target, network_set, protocol)
                    .await?;
                tokens.retry_for_dpop_nonce(&response);
            }
        }
    }
    let response =
        upgrade::finish(upgrade, response, &compiled.name, settings.idle_timeout, target.authority.as_str())?;
    let response = match compiled.redact_responses.then(|| tokens.redactions()).flatten() {
        Some(redactions) => redact(response, Arc::new(redactions)),
        None => response,
    };
    Ok(Fetched { response, tokens })
}

/// Repeats a request whose stale answer was served (stale-while-revalidate), so the cache
/// holds a fresh one for the next; nobody waits for it.
fn refresh_in_background(
    snapshot: &Arc<Snapshot>,
    budget: &Arc<BufferBudget>,
    outbound: Outbound,
    refresh: Box<cache::Refresh>,
) {
    let (snapshot, budget) = (Arc::clone(snapshot), Arc::clone(budget));
    tokio::spawn(async move {
        let max_body = refresh.max_body();
        let cache::Refresh { parts, body, ticket } = *refresh;
        let fetched = fetch(&snapshot, &budget, outbound, parts, body, None).await;
        if let Ok(response) = ticket.settle(fetched) {
            cache::drain(response, max_body).await;
        }
    });
}

/// Renews every exchanged token a rejected request carried (one exchange however many
/// requests were rejected together). False when there was none, or a renewal failed: the
/// client then gets the upstream's 401.
async fn renew_rejected(tokens: &RequestTokens) -> bool {
    let rejected = tokens.renewable_used();
    if rejected.is_empty() {
        return false;
    }
    for (cell, value) in rejected {
        metrics::counter!("token_renewals_after_401_total", "token" => cell.name().to_string()).increment(1);
        if cell.renew_rejected(&value).await.is_err() {
            return false;
        }
    }
    true
}

/// What the request head is built from, so a replay builds it again with other tokens.
struct Head<'a> {
    snapshot: &'a Snapshot,
    compiled: &'a crate::snapshot::CompiledRoute,
    target: &'a Target,
    path_and_query: &'a str,
    method: &'a http::Method,
}

impl Head<'_> {
    /// Substitutes the request target and `headers` (each part by the rule `resolvers` has for
    /// it), returning the upstream URI; `tokens` signs the tokens made for this request.
    fn substitute(
        &self,
        headers: &mut http::HeaderMap,
        resolvers: &RequestResolvers,
        tokens: &RequestTokens,
    ) -> Result<Uri, ProxyError> {
        let settings = &self.snapshot.config.proxy;
        let max_uri = usize::try_from(settings.max_uri_bytes).unwrap_or(usize::MAX);
        let uri_too_long = |e| ProxyError::from_bounded(e, ProxyError::UriTooLong(settings.max_uri_bytes));
        let rewritten = match resolvers.target(self.path_and_query, max_uri).map_err(uri_too_long)? {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(text) => Some(text),
        };
        if rewritten.as_ref().map_or(self.path_and_query.len(), String::len) > max_uri {
            return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
        }
        let scheme = if self.compiled.upstream_tls { Scheme::Https } else { self.target.scheme };
        let rewritten = rewritten.or_else(|| {
            // A path normalised for matching is what is sent (invariant 8).
            (self.path_and_query != self.target.path_and_query.as_str()).then(|| self.path_and_query.to_string())
        });
        let uri = upstream_uri(self.target, scheme, rewritten)?;
        // Tokens signed per request sign this method and URI (and add DPoP proofs after).
        tokens.begin_headers(self.method, &uri, headers);
        let max_head = usize::try_from(settings.max_header_bytes).unwrap_or(usize::MAX);
        resolvers
            .headers(headers, max_head)
            .map_err(|e| ProxyError::from_bounded(e, ProxyError::HeadersTooLarge(settings.max_header_bytes)))?;
        tokens.finish_headers(headers)?;
        Ok(uri)
    }
}

/// Replaces the request's token values with their placeholders in the response.
fn redact(response: Response<ProxyBody>, redactions: Arc<Redactions>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    redactions.headers(&mut parts.headers);
    if body.is_end_stream() {
        return Response::from_parts(parts, body);
    }
    // Redaction changes the length.
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, RedactingBody::new(body, redactions).boxed_unsync())
}

/// Drops hop-by-hop headers (but keeps an upgrade the proxy carries) and sets Host from the
/// target (never from the client's Host).
fn prepare_headers(headers: &mut http::HeaderMap, target: &Target, upgrade: Option<&Upgrade>) {
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        upgrade.restore(headers);
    }
    if let Ok(host) = HeaderValue::from_str(target.authority.as_str()) {
        headers.insert(header::HOST, host);
    }
}

/// The URI sent upstream; `rewritten` is the substituted path and query, if it changed.
fn upstream_uri(target: &Target, scheme: Scheme, rewritten: Option<String>) -> Result<Uri, ProxyError> {
    let path_and_query = match rewritten {
        None => target.path_and_query.clone(),
        Some(text) => PathAndQuery::try_from(text)
            .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI".into()))?,
    };
    let authority = if scheme == target.scheme {
        target.authority.clone()
    } else {
        // Upgrading http -> https: the default port becomes 443, any other port is kept.
        let text = if target.port == 80 { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
        Authority::try_from(text).map_err(|e| ProxyError::BadRequest(format!("invalid upstream authority: {e}")))?
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match scheme {
        Scheme::Http => UriScheme::HTTP,
        Scheme::Https => UriScheme::HTTPS,
    });
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|e| ProxyError::BadRequest(format!("invalid upstream URI: {e}")))
}

/// Which listener kind a request came through, for caller identification.
fn listener_of(entry: &Entry) -> Listener {
    match entry {
        Entry::Proxy(_) | Entry::Unix(_) => Listener::Proxy,
        Entry::Reverse(_) => Listener::Reverse,
        Entry::Tunnel(_) => Listener::Tunnel,
    }
}

/// The request body, counted for the audit line when there is one.
fn counted(body: ProxyBody, seen: Option<&Seen>) -> ProxyBody {
    match seen.and_then(|s| s.audit.as_ref()) {
        Some(entry) => audit::count_request(body, &entry.bytes_in),
        None => body,
    }
}

/// The request sent upstream: `parts` with the upstream URI and the protocol's version.
fn upstream_request(
    mut parts: http::request::Parts,
    uri: Uri,
    body: ProxyBody,
    protocol: Protocol,
) -> Request<ProxyBody> {
    parts.uri = uri;
    parts.version = if protocol == Protocol::Http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    Request::from_parts(parts, body)
}

/// Sends a request with the client of `[policy]` rule set `network_set`.
///
/// It takes the request whole: every parameter of an async function is stored in its
/// future, and each layer above stores that future again.
async fn send(
    snapshot: &Snapshot,
    req: Request<ProxyBody>,
    target: &Target,
    network_set: usize,
    protocol: Protocol,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client = snapshot.upstream.client_for(network_set, protocol);
    match tokio::time::timeout(snapshot.config.proxy.request_timeout, client.request(req)).await {
        Err(_) => {
            let error = ProxyError::UpstreamTimeout(target.authority.to_string());
            metrics::counter!("upstream_errors_total", "kind" => error.code()).increment(1);
            Err(error)
        }
        Ok(Err(e)) => {
            let error = classify(&e, target);
            // A placeholder refused inside a streamed body is the request's fault, and an
            // address refused by policy the policy's, not the upstream's.
            if !matches!(error, ProxyError::Refused(_) | ProxyError::PolicyDenied(_)) {
                metrics::counter!("upstream_errors_total", "kind" => error.code()).increment(1);
            }
            Err(error)
        }
        Ok(Ok(response)) => Ok(from_upstream(response, snapshot.config.proxy.body_timeout)),
    }
}

/// An upstream's response as the client gets it (before redaction).
fn from_upstream(
    response: Response<super::client::UpstreamBody>,
    body_timeout: std::time::Duration,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // The body was framed by Transfer-Encoding; a Content-Length beside it is stale
        // (RFC 9112 section 6.3) and must not reach the client.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    upgrade::strip_response_headers(parts.status, &mut parts.headers);
    // The body is cut if the upstream pauses longer than body_timeout in the middle of it.
    let body =
        if body.is_end_stream() { body.boxed_unsync() } else { TimedBody::new(body, body_timeout).boxed_unsync() };
    Response::from_parts(parts, body)
}

/// Maps an upstream client error to what the user should be told.
fn classify(err: &super::client::ClientError, target: &Target) -> ProxyError {
    let host = target.authority.to_string();
    let mut timed_out = false;
    for e in error_chain(err) {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return ProxyError::Refused(r.clone());
        }
        if let Some(denied) = e.downcast_ref::<AddressDenied>() {
            return ProxyError::PolicyDenied(denied.to_string());
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return ProxyError::UpstreamTls { host, reason: tls.to_string() };
        }
        timed_out |= e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    }
    if timed_out {
        ProxyError::UpstreamTimeout(host)
    } else if err.is_connect() {
        ProxyError::UpstreamUnreachable(host)
    } else {
        ProxyError::UpstreamFailed(host)
    }
}

/// Every error in a chain. `io::Error::source` skips the error it wraps (it returns that
/// error's source), and TLS failures arrive as io errors wrapping io errors wrapping
/// `rustls::Error`, so io errors are entered through `get_ref` instead.
fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}
