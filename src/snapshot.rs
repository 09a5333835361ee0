//! The running state: one immutable value built from a [`Config`], swapped whole on reload.
//!
//! A request loads the current snapshot once and uses it from start to end, so it sees one
//! route table, one set of token cells and one upstream client even if a reload lands while
//! it is in flight. Token cells are shared between consecutive snapshots when a token's
//! definition did not change, so a reload does not re-sign (or drop) unchanged tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue};

use crate::cache::{Cache, RouteCache};
use crate::config::{Config, RouteDefinition};
use crate::exchange::Exchanger;
use crate::fleet::tokens::{LeaseSettings, SharedExchange};
use crate::fleet::Fleet;
use crate::proxy::upstream::Upstream;
use crate::routes::RouteTable;
use crate::store::{Mint, TokenCell};
use crate::substitute::{Redactions, RefusalKind, Refused, Resolution, Resolve};
use crate::tls::Interceptor;
use crate::tokens::request_bound::{Bound, RequestBound};
use crate::tokens::{MintError, MintedToken};

/// One route, ready for the request path.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: Arc<str>,
    /// Placeholder name -> token cell (aliases and bound tokens' own names).
    pub bindings: Vec<(Box<str>, Arc<TokenCell>, metrics::Counter)>,
    /// Headers to set on every request, as templates that may hold placeholders.
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub upstream_tls: bool,
    /// The route's path prefix: a routed path must stay inside it under every reading.
    pub path_prefix: Box<str>,
    /// Whether injected values are replaced by their placeholders in responses.
    pub redact_responses: bool,
    /// Whether a 401 renews the exchanged tokens a request carried and sends it again once.
    pub retry_on_401: bool,
    /// Whether every request of the route goes upstream over HTTP/2.
    pub upstream_http2: bool,
    /// The route's function-result cache, when it has `[routes.cache]`.
    pub cache: Option<Arc<RouteCache>>,
    /// `proxy_request_duration_seconds` for this route, registered once.
    pub duration: metrics::Histogram,
    /// `proxy_requests_total` for this route, one handle per status.
    pub requests: crate::proxy::status_counters::StatusCounters,
    /// Per binding: what it signs per request (`per_request` tokens, DPoP proofs), if anything.
    pub bound: Vec<Option<Bound>>,
}

/// Everything a request needs, consistent with one config file.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable<usize>,
    pub compiled: Vec<CompiledRoute>,
    pub cells: HashMap<String, Arc<TokenCell>>,
    pub upstream: Arc<Upstream>,
    /// The function-result cache, kept across reloads while `[cache] max_bytes`, `backend`
    /// and (for the Redis backend) the fleet are the same.
    pub cache: Arc<Cache>,
    /// Present when `[tls]` is configured: terminates CONNECT tunnels to routed hosts.
    pub interceptor: Option<Arc<Interceptor>>,
    /// Present when `[fleet]` is configured: the Redis that shared tokens go through.
    pub fleet: Option<Arc<Fleet>>,
    /// Where traffic may go, who may send it, and the audit log.
    pub policy: crate::policy::Policy,
    /// Digest of the config and key files this snapshot was built from, so a file event that
    /// changed nothing does not rebuild.
    pub files_digest: [u8; 32],
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("routes", &self.compiled.len()).field("tokens", &self.cells.len()).finish()
    }
}

/// Why a snapshot could not be built from an otherwise valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("token {name}: first signing failed: {source}")]
    Mint { name: String, source: MintError },
    #[error("{0}")]
    Routes(#[from] crate::routes::RouteError),
    #[error("upstream client: {0}")]
    Upstream(String),
    #[error("TLS interception: {0}")]
    Tls(#[from] crate::tls::CaError),
    #[error("fleet: {0}")]
    Fleet(String),
    #[error("{0}")]
    Policy(String),
}

impl Snapshot {
    /// Builds a snapshot, minting every new or changed token before returning (so the new
    /// snapshot is ready for requests the moment it is stored). Cells of tokens whose
    /// definition is unchanged since `previous` are carried over with their current value.
    pub async fn build(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        Self::build_with(config, previous, &HashMap::new()).await
    }

    /// Like [`Snapshot::build`], with some tokens minted by the given minters instead of
    /// their definitions; tests use it to make signing fail on demand.
    pub async fn build_with(
        config: Config,
        previous: Option<&Snapshot>,
        minters: &HashMap<String, Arc<dyn Mint>>,
    ) -> Result<Snapshot, BuildError> {
        let policy = crate::policy::Policy::build(&config, previous.map(|p| &p.policy)).map_err(BuildError::Policy)?;
        let upstream = match previous {
            Some(p)
                if p.config.proxy.same_upstream_settings(&config.proxy)
                    && p.upstream.ca_digest == crate::reload::digest_files(config.proxy.extra_ca_file.as_slice())
                    && p.upstream.has_networks(&policy.network_sets) =>
            {
                Arc::clone(&p.upstream)
            }
            _ => Arc::new(Upstream::new(&config.proxy, &policy.network_sets).map_err(BuildError::Upstream)?),
        };
        let fleet = match (&config.fleet, previous.and_then(|p| p.fleet.as_ref())) {
            (None, _) => None,
            (Some(settings), Some(old)) if old.serves(settings, &config.proxy.extra_ca_file) => Some(Arc::clone(old)),
            (Some(settings), _) => {
                Some(Arc::new(Fleet::start(settings, &config.proxy.extra_ca_file).map_err(BuildError::Fleet)?))
            }
        };
        let reusable = |name: &String| {
            let p = previous?;
            let cell = p.cells.get(name)?;
            let old = p.config.tokens.get(name)?;
            // A shared token's cell holds its fleet: it is kept only with the same fleet.
            let same_sharing = p.config.shares(name) == config.shares(name)
                && (!config.shares(name) || same_fleet(p.fleet.as_ref(), fleet.as_ref()));
            (old.same_definition(config.tokens.get(name)?) && !minters.contains_key(name) && same_sharing)
                .then(|| Arc::clone(cell))
        };
        let mut cells = HashMap::new();
        // Signed and static tokens first, all in parallel; then exchanged tokens, level by
        // level, each after the exchanged tokens it uses.
        let mut levels: Vec<Vec<&String>> =
            vec![config.tokens.keys().filter(|n| config.tokens[*n].exchange().is_none()).collect()];
        let mut level_of: HashMap<&str, usize> = HashMap::new();
        let order = crate::config::dependencies::exchange_order(&config.tokens);
        for name in &order {
            let deps = crate::config::dependencies::direct_dependencies(&config.tokens[name], &config.tokens);
            let level = 1 + deps.iter().filter_map(|d| level_of.get(d.as_str())).max().copied().unwrap_or(0);
            level_of.insert(name, level);
            if levels.len() <= level {
                levels.resize_with(level + 1, Vec::new);
            }
            if let Some((key, _)) = config.tokens.get_key_value(name) {
                levels[level].push(key);
            }
        }
        for level in levels {
            let mut starting = tokio::task::JoinSet::new();
            for name in level {
                if let Some(cell) = reusable(name) {
                    cell.use_upstream(&upstream);
                    cells.insert(name.clone(), cell);
                    continue;
                }
                let def = &config.tokens[name];
                let minter: Arc<dyn Mint> = match minters.get(name) {
                    Some(m) => Arc::clone(m),
                    None => match Exchanger::new(def, Arc::clone(&upstream), &config.tokens, &cells) {
                        Some(exchanger) => share(name, Arc::new(exchanger), &config, fleet.as_ref()),
                        None => Arc::new(def.clone()),
                    },
                };
                let name = name.clone();
                starting.spawn(async move {
                    let cell = TokenCell::start(&name, minter).await;
                    (name, cell)
                });
            }
            // Every token of a level starts in parallel (signing on the blocking pool).
            while let Some(joined) = starting.join_next().await {
                let (name, cell) =
                    joined.map_err(|e| BuildError::Upstream(format!("token start-up task failed: {e}")))?;
                let cell = cell.map_err(|source| BuildError::Mint { name: name.clone(), source })?;
                cells.insert(name, cell);
            }
        }

        let routes = RouteTable::new(config.routes.iter().enumerate().map(|(i, r)| r.spec(i)).collect())?;
        let cache = match previous {
            Some(p) if p.cache.fits(&config.cache, fleet.as_ref()) => Arc::clone(&p.cache),
            _ => Cache::new(&config.cache, fleet.as_ref()),
        };
        let compiled: Vec<CompiledRoute> = config
            .routes
            .iter()
            .map(|r| compile_route(r, &cells, &config.tokens, route_cache(r, &config, previous)))
            .collect();
        let interceptor = match (&config.tls, previous.and_then(|p| p.interceptor.as_ref())) {
            (None, _) => None,
            (Some(tls), Some(old)) if old.is_current(tls) => Some(Arc::clone(old)),
            (Some(tls), _) => Some(Arc::new(Interceptor::load(tls)?)),
        };
        let files_digest = crate::reload::digest_files(&config.watched_files);
        if let Some(p) = previous.filter(|p| Arc::ptr_eq(&p.cache, &cache)) {
            purge_retired_routes(p, &compiled).await;
        }
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            compiled,
            cells,
            upstream,
            cache,
            interceptor,
            fleet,
            policy,
            files_digest,
        })
    }

    /// Whether every token has a current, unexpired value.
    pub fn all_tokens_current(&self, now: SystemTime) -> bool {
        self.cells.values().all(|c| c.current(now).is_some())
    }
}

/// The minter of an exchanged token: shared through the fleet when the config says so.
fn share(name: &str, exchanger: Arc<dyn Mint>, config: &Config, fleet: Option<&Arc<Fleet>>) -> Arc<dyn Mint> {
    let (Some(fleet), true) = (fleet, config.shares(name)) else { return exchanger };
    let Some(identity) = crate::fleet::identity::token_identity(name, &config.tokens) else { return exchanger };
    let expose = config
        .tokens
        .get(name)
        .and_then(|d| d.exchange())
        .map(|e| e.expose.iter().map(|(f, _)| f.clone()).collect())
        .unwrap_or_default();
    let lease = LeaseSettings { ttl: fleet.settings.lease_ttl, wait: fleet.settings.lease_wait };
    Arc::new(SharedExchange::new(name, exchanger, Arc::clone(&fleet.store), &identity, expose, lease))
}

fn same_fleet(a: Option<&Arc<Fleet>>, b: Option<&Arc<Fleet>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The cache of route `r`. Its identity covers the route's definition and its tokens', so a
/// route that did not change keeps its entries (and its fleet epoch) across a reload.
fn route_cache(r: &RouteDefinition, config: &Config, previous: Option<&Snapshot>) -> Option<Arc<RouteCache>> {
    let settings = r.cache.clone()?;
    let identity = crate::cache::identity::route_identity(r, &config.tokens);
    let epoch = previous
        .and_then(|p| p.compiled.iter().filter_map(|c| c.cache.as_ref()).find(|rc| rc.identity == identity))
        .map_or_else(Default::default, |old| Arc::clone(&old.epoch));
    let replaced = r.set_headers.iter().map(|(name, _)| name.clone()).collect();
    Some(Arc::new(RouteCache::new(Arc::from(r.name.as_str()), settings, identity, epoch, replaced)))
}

/// Drops the entries of routes a reload changed or removed: their identity is not one of any
/// route of the new snapshot. (In the fleet's Redis they simply stop matching, and expire.)
async fn purge_retired_routes(previous: &Snapshot, compiled: &[CompiledRoute]) {
    let identities = |routes: &[CompiledRoute]| -> Vec<crate::cache::identity::RouteId> {
        routes.iter().filter_map(|c| c.cache.as_ref().map(|rc| rc.identity)).collect()
    };
    let live = identities(compiled);
    let retired: Vec<_> = identities(&previous.compiled).into_iter().filter(|id| !live.contains(id)).collect();
    if !retired.is_empty() {
        let purged = previous.cache.purge(crate::cache::store::Purge::Routes(retired), &[]).await;
        tracing::debug!(removed = purged.removed, "cache entries of changed routes dropped");
    }
}

fn compile_route(
    r: &RouteDefinition,
    cells: &HashMap<String, Arc<TokenCell>>,
    tokens: &std::collections::BTreeMap<String, crate::tokens::TokenDefinition>,
    cache: Option<Arc<RouteCache>>,
) -> CompiledRoute {
    let mut bound = Vec::new();
    let bindings = r
        .bindings
        .iter()
        .filter_map(|(placeholder, token)| {
            let cell = cells.get(token)?;
            let counter = metrics::counter!("substitutions_total", "token" => token.clone());
            bound.push(tokens.get(token).and_then(|def| Bound::of(def, tokens)));
            Some((placeholder.clone().into_boxed_str(), Arc::clone(cell), counter))
        })
        .collect();
    let set_headers = r
        .set_headers
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), HeaderValue::from_str(value).ok()?)))
        .collect();
    let name: Arc<str> = Arc::from(r.name.as_str());
    let duration = metrics::histogram!("proxy_request_duration_seconds", "route" => Arc::clone(&name));
    CompiledRoute {
        name: Arc::clone(&name),
        bindings,
        set_headers,
        upstream_tls: r.upstream_tls,
        path_prefix: r.path_prefix.clone().into_boxed_str(),
        redact_responses: r.redact_responses,
        retry_on_401: r.retry_on_401,
        upstream_http2: r.upstream_http2,
        cache,
        duration,
        requests: crate::proxy::status_counters::StatusCounters::new(Arc::clone(&name)),
        bound,
    }
}

/// Resolves placeholders for one request against the token values loaded when it started.
///
/// Values are loaded once, up front, so the header, the target and a body that streams for
/// minutes all carry the same token even if the cell is refreshed meanwhile. Each value is
/// checked against its expiry every time it is written, and [`RequestTokens::check_fresh`]
/// checks every value used so far at the moment the request leaves (invariant 7).
pub struct RequestTokens {
    snapshot: Arc<Snapshot>,
    route: usize,
    values: Vec<Option<Arc<MintedToken>>>,
    /// Which bindings were written into the request, for the send-time check and redaction.
    used: Vec<AtomicBool>,
    /// Values signed for this request alone (per-request tokens, DPoP proofs), when the route
    /// has any.
    bound: Option<RequestBound>,
    /// Set while the `Authorization` header is read ahead for `ath`: not counted as written.
    quiet: AtomicBool,
}

impl RequestTokens {
    pub fn load(snapshot: Arc<Snapshot>, route: usize, now: SystemTime) -> RequestTokens {
        let values: Vec<_> = snapshot
            .compiled
            .get(route)
            .map(|r| r.bindings.iter().map(|(_, cell, _)| cell.current(now)).collect())
            .unwrap_or_default();
        let used = values.iter().map(|_| AtomicBool::new(false)).collect();
        let bound = snapshot.compiled.get(route).and_then(|r| RequestBound::new(&r.bound));
        RequestTokens { snapshot, route, values, used, bound, quiet: AtomicBool::new(false) }
    }

    /// Whether the request's headers write a token that signs the body's hash, so the body
    /// must be read whole (and its hash given with [`Self::set_body_sha256`]) before them.
    pub fn needs_body(&self, headers: &http::HeaderMap) -> bool {
        let (Some(bound), Some(route)) = (&self.bound, self.snapshot.compiled.get(self.route)) else { return false };
        let names: Vec<&str> = route.bindings.iter().map(|(n, _, _)| &**n).collect();
        bound.needs_body(&names, headers)
    }

    pub fn set_body_sha256(&self, digest: [u8; 32]) {
        if let Some(bound) = &self.bound {
            bound.set_body_sha256(digest);
        }
    }

    /// Called with the upstream URI once the target is filled in, before the headers are:
    /// per-request tokens in the headers are signed over this request.
    pub fn begin_headers(&self, method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) {
        let Some(bound) = &self.bound else { return };
        let authorization = bound.needs_authorization().then(|| {
            let value = crate::tokens::request_bound::authorization(headers)?;
            self.quiet.store(true, Ordering::Relaxed);
            let filled = crate::substitute::substitute(value.as_bytes(), self).ok().map(|v| v.into_owned());
            self.quiet.store(false, Ordering::Relaxed);
            filled
        });
        bound.begin_headers(method, uri, authorization.flatten());
    }

    /// Called once the headers are filled in: attaches DPoP proofs for the exchanged tokens
    /// the headers carry.
    pub fn finish_headers(&self, headers: &mut http::HeaderMap) -> Result<(), crate::error::ProxyError> {
        let Some(bound) = &self.bound else { return Ok(()) };
        let value = |i: usize| {
            self.used.get(i).filter(|u| u.load(Ordering::Relaxed))?;
            self.values.get(i)?.as_ref().map(|t| t.value.clone())
        };
        bound.finish_headers(headers, value, SystemTime::now()).map_err(|e| {
            crate::error::ProxyError::Refused(Refused {
                name: format!("DPoP proof ({e})"),
                kind: RefusalKind::Unavailable,
            })
        })
    }

    /// Reads the upstream's answer: keeps DPoP nonces, and says whether to send the request
    /// once more with the nonce the answer asks for.
    pub fn retry_for_dpop_nonce(&self, response: &http::Response<crate::proxy::ProxyBody>) -> bool {
        let Some(bound) = &self.bound else { return false };
        let used = |i: usize| self.used.get(i).is_some_and(|u| u.load(Ordering::Relaxed));
        bound.observe_response(response.status(), response.headers(), used)
    }

    /// Whether the route carries DPoP-bound tokens (whose requests a nonce may retry).
    pub fn has_dpop(&self) -> bool {
        self.bound.as_ref().is_some_and(RequestBound::has_dpop)
    }

    /// The value written for binding `i`: signed for this request, or loaded at its start.
    fn value(&self, i: usize) -> Option<Arc<MintedToken>> {
        match &self.bound {
            Some(bound) if bound.is_per_request(i) => bound.signed(i),
            _ => self.values.get(i).cloned().flatten(),
        }
    }

    /// Refuses the request if a token it carries has expired by `now`: checked when the
    /// request is handed to the upstream connection, however long its body took to arrive.
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), Refused> {
        let Some(route) = self.snapshot.compiled.get(self.route) else { return Ok(()) };
        for (i, used) in self.used.iter().enumerate() {
            if !used.load(Ordering::Relaxed) {
                continue;
            }
            let expired = self.value(i).is_none_or(|t| t.expires_at <= now);
            if expired {
                let name = route.bindings.get(i).map_or_else(String::new, |(n, _, _)| n.to_string());
                return Err(Refused { name, kind: RefusalKind::Unavailable });
            }
        }
        Ok(())
    }

    /// The exchanged tokens written into the request, with the values it carried: what an
    /// upstream's 401 asks to renew.
    pub fn renewable_used(&self) -> Vec<(Arc<TokenCell>, Arc<MintedToken>)> {
        let Some(route) = self.snapshot.compiled.get(self.route) else { return Vec::new() };
        let mut out: Vec<(Arc<TokenCell>, Arc<MintedToken>)> = Vec::new();
        for (i, used) in self.used.iter().enumerate() {
            let (Some((_, cell, _)), Some(Some(value))) = (route.bindings.get(i), self.values.get(i)) else { continue };
            // An alias and the token's own name are two bindings of one cell.
            if used.load(Ordering::Relaxed)
                && cell.renews_on_rejection()
                && !out.iter().any(|(c, _)| Arc::ptr_eq(c, cell))
            {
                out.push((Arc::clone(cell), Arc::clone(value)));
            }
        }
        out
    }

    /// The names of the tokens written into the request so far (each once, aliases as the
    /// token they stand for): what the audit log records, never a value.
    pub fn used_tokens(&self) -> Vec<String> {
        let Some(route) = self.snapshot.compiled.get(self.route) else { return Vec::new() };
        let mut names: Vec<String> = Vec::new();
        for (i, used) in self.used.iter().enumerate() {
            if let (true, Some((_, cell, _))) = (used.load(Ordering::Relaxed), route.bindings.get(i)) {
                if !names.iter().any(|n| n == cell.name()) {
                    names.push(cell.name().to_string());
                }
            }
        }
        names
    }

    /// The token values written into the request so far (a value bound under two names once).
    pub fn injected(&self) -> Vec<bytes::Bytes> {
        let mut out: Vec<bytes::Bytes> = Vec::new();
        for (i, used) in self.used.iter().enumerate() {
            if let (true, Some(Some(token))) = (used.load(Ordering::Relaxed), self.values.get(i)) {
                if !out.contains(&token.value) {
                    out.push(token.value.clone());
                }
            }
        }
        out
    }

    /// The values written into the request so far, each with its placeholder text and the
    /// `redactions_total` counter of its token.
    pub fn redactions(&self) -> Option<Redactions> {
        let route = self.snapshot.compiled.get(self.route)?;
        let used = self.used.iter().enumerate().filter(|(_, u)| u.load(Ordering::Relaxed));
        Redactions::new(used.filter_map(|(i, _)| {
            let value = self.value(i)?.value.clone();
            let (placeholder, cell, _) = route.bindings.get(i)?;
            let counter = metrics::counter!("redactions_total", "token" => cell.name().to_string());
            Some((value, format!("{{/{placeholder}}}"), counter))
        }))
    }
}

impl Resolve for RequestTokens {
    fn resolve(&self, name: &str) -> Resolution {
        let Some(route) = self.snapshot.compiled.get(self.route) else {
            return Resolution::Unknown;
        };
        // `{/NAME.field}`: a field the token endpoint gave with NAME, under NAME's binding.
        let (binding, field) = match route.bindings.iter().position(|(n, _, _)| &**n == name) {
            Some(i) => (Some(i), None),
            None => match name.rsplit_once('.') {
                Some((token, field)) => (route.bindings.iter().position(|(n, _, _)| &**n == token), Some(field)),
                None => (None, None),
            },
        };
        if let Some(i) = binding {
            let value = match &self.bound {
                Some(bound) if bound.is_per_request(i) => {
                    if field.is_some() {
                        return Resolution::Unknown;
                    }
                    match bound.resolve(i, SystemTime::now()) {
                        Ok(token) => Some(token),
                        Err(refusal) => return refusal,
                    }
                }
                _ => self.values.get(i).cloned().flatten(),
            };
            return match value {
                // Checked at every write: a body that streams past the token's expiry gets
                // an error, never the expired token.
                Some(token) if token.expires_at > SystemTime::now() => {
                    let value = match field {
                        None => token.value.clone(),
                        Some(field) => match token.exposed.iter().find(|(f, _)| &**f == field) {
                            Some((_, v)) => v.clone(),
                            None => return Resolution::Unknown,
                        },
                    };
                    if !self.quiet.load(Ordering::Relaxed) {
                        route.bindings[i].2.increment(1);
                        if let Some(used) = self.used.get(i) {
                            used.store(true, Ordering::Relaxed);
                        }
                    }
                    Resolution::Value(value)
                }
                _ => Resolution::Unavailable,
            };
        }
        let token = name.rsplit_once('.').filter(|_| !self.snapshot.cells.contains_key(name)).map_or(name, |(t, _)| t);
        if self.snapshot.cells.contains_key(token) {
            Resolution::Forbidden
        } else {
            Resolution::Unknown
        }
    }
}
