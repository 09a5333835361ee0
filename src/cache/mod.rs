//! The function-result cache: per-route stored responses, so an agent's repeated call is
//! answered without another upstream request (issue 14).
//!
//! One phase of the request path ([`lookup`]) runs after the route is matched and its path
//! checked, before any token is loaded. It answers from the cache, or lets the request go on
//! with a [`Ticket`] that, once the upstream has answered, may serve a stale entry instead of
//! a failure and tees a storable response into the cache as it streams to the client.
//!
//! - [`key`]: the key, the request as the function sent it (no token value is ever in it);
//! - [`policy`]: HTTP semantics (what is storable, for how long);
//! - [`request`]: which requests bypass the cache, and the binding check of every answer;
//! - [`store`]: the store trait, its entries and the in-process store;
//! - [`identity`]: what makes a route the same route, across reloads and sidecars;
//! - [`shared`]: the fleet's tier in Redis (`[cache] backend = "redis"`), behind the local store;
//! - [`coalesce`]: one upstream request for concurrent misses of one key;
//! - [`capture`]: the body tee.
//!
//! A response that carries a token value the sidecar injected into its request (an echo, an
//! error page quoting the Authorization header) is never stored, so the cache cannot hand a
//! live token to a function that did not send the request. Entries live across reloads; a
//! reload drops those of routes whose definition or tokens changed (their [`identity`]
//! changed; see [`crate::snapshot::Snapshot::build`]).

pub mod admin;
pub mod capture;
mod coalesce;
pub mod identity;
pub mod key;
pub mod policy;
pub mod request;
pub mod shared;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use self::capture::{Capture, Completion};
use self::coalesce::{Coalescer, Join, Leader};
use self::identity::RouteId;
use self::key::{KeyInput, Keyed};
use self::policy::{Lifetime, RequestDirectives};
use self::shared::{Epoch, EpochValue, FleetLead, FleetLease, SharedTier, TryLease};
use self::store::{CacheKey, Entry, Freshness, LocalStore, Purge, Store, Usage};
use crate::config::{CacheBackend, CacheSettings, RouteCacheSettings};
use crate::error::ProxyError;
use crate::fleet::Fleet;
use crate::proxy::body::{self, BodyLimits, ClientBody, RequestBody};
use crate::proxy::budget::BufferBudget;
use crate::proxy::target::Target;
use crate::proxy::ProxyBody;
use crate::snapshot::{RequestTokens, Snapshot};
use crate::substitute::Redactions;

/// The response header that says how the cache served a request of a cached route.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-token-sidecar-cache");

/// How the cache took part in one request (`x-token-sidecar-cache`, and the `result` label
/// of `cache_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh entry.
    Hit = 0,
    /// Looked up, not found (or not fresh): fetched from the upstream.
    Miss = 1,
    /// Answered from a stale entry (while it is refreshed, or because the upstream failed).
    Stale = 2,
    /// The cache was not read (see [`request`]); a `no-cache` request's answer is still stored.
    Bypass = 3,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Stale, Outcome::Bypass];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }
}

/// The cache all routes share: one store (and with the Redis backend, the fleet's tier behind
/// it), the misses in flight, and the capture budget.
pub struct Cache {
    /// This process's entries: the whole cache, or the first tier in front of Redis.
    store: Arc<LocalStore>,
    /// The fleet's tier, with `[cache] backend = "redis"`.
    shared: Option<Arc<SharedTier>>,
    flights: Coalescer,
    /// Response bodies being captured, all together, are held within `max_bytes` too.
    captures: Arc<BufferBudget>,
    max_bytes: u64,
    /// Bumped by every purge: a response fetched before a purge is not stored after it.
    purges: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("max_bytes", &self.max_bytes).finish()
    }
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Entries removed from this process's store.
    pub removed: u64,
    /// With the Redis backend and routes to purge there: whether every one of their epochs
    /// moved (their entries retired for the whole fleet); false if Redis could not be told.
    pub shared: Option<bool>,
}

impl Cache {
    /// A cache for `settings`; with the Redis backend, `fleet` is the Redis it shares
    /// entries through (the config guarantees one).
    pub fn new(settings: &CacheSettings, fleet: Option<&Arc<Fleet>>) -> Arc<Cache> {
        let shared = match settings.backend {
            CacheBackend::Redis => fleet.map(|f| Arc::new(SharedTier::new(Arc::clone(&f.store)))),
            CacheBackend::Local => None,
        };
        Arc::new(Cache {
            store: Arc::new(LocalStore::new(settings.max_bytes)),
            shared,
            flights: Coalescer::default(),
            captures: BufferBudget::new(),
            max_bytes: settings.max_bytes,
            purges: AtomicU64::new(0),
        })
    }

    /// Whether this cache was built for `settings` and `fleet` (a reload keeps it, and its
    /// entries).
    pub fn fits(&self, settings: &CacheSettings, fleet: Option<&Arc<Fleet>>) -> bool {
        let same_tier = match (&self.shared, settings.backend, fleet) {
            (None, CacheBackend::Local, _) => true,
            (Some(tier), CacheBackend::Redis, Some(fleet)) => tier.uses(&fleet.store),
            _ => false,
        };
        self.max_bytes == settings.max_bytes && same_tier
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// `"local"` or `"redis"`.
    pub fn backend(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "local"
        }
    }

    /// Removes the entries `scope` names from this process's store, and with the Redis
    /// backend retires the fleet's entries of `fleet_routes` (their epochs move first, so
    /// nothing older is read back meanwhile). Responses being fetched while it runs are not
    /// stored.
    pub async fn purge(&self, scope: Purge, fleet_routes: &[Arc<RouteCache>]) -> Purged {
        self.purges.fetch_add(1, Ordering::AcqRel);
        let shared = match &self.shared {
            Some(tier) if !fleet_routes.is_empty() => {
                let mut all = true;
                for route in fleet_routes {
                    all &= tier.purge(route).await;
                }
                Some(all)
            }
            _ => None,
        };
        let removed = self.store.purge(&scope).await;
        self.purges.fetch_add(1, Ordering::AcqRel);
        Purged { removed, shared }
    }

    pub fn usage(&self) -> Usage {
        self.store.usage()
    }

    /// Keys being fetched now, and requests waiting for those fetches.
    pub fn coalescing(&self) -> (usize, usize) {
        (self.flights.in_flight(), self.flights.waiting())
    }

    /// Requests waiting for another sidecar's fetch now (Redis backend).
    pub fn waiting_on_fleet(&self) -> usize {
        self.shared.as_ref().map_or(0, |tier| tier.waiting())
    }

    /// The route's epoch in the fleet, when Redis backs the cache and answers.
    async fn epoch(&self, route: &Arc<RouteCache>) -> Option<EpochValue> {
        let tier = self.shared.as_ref()?;
        tier.epoch(route, drop_local_entries(&self.store)).await
    }

    /// The entry for `key`: this process's if it is fresh; else the fleet's when that one is
    /// newer (a peer stored or refreshed it), kept here too; else this process's, if any.
    async fn find(&self, route: &RouteCache, key: &CacheKey, epoch: Option<EpochValue>) -> Option<Arc<Entry>> {
        let local = self.store.get(key).await;
        let (Some(tier), Some(epoch)) = (&self.shared, epoch) else { return local };
        if local.as_ref().is_some_and(|e| e.freshness(SystemTime::now()) == Freshness::Fresh) {
            return local;
        }
        match tier.get(route, key, epoch).await {
            Some(remote) if local.as_ref().is_none_or(|l| remote.stored_at > l.stored_at) => {
                self.keep(route, *key, &remote, epoch);
                Some(remote)
            }
            _ => local,
        }
    }

    /// Keeps an entry read from the fleet in this process's store, unless the route was
    /// purged since the epoch it was read under.
    fn keep(&self, route: &RouteCache, key: CacheKey, entry: &Arc<Entry>, epoch: EpochValue) {
        if !route.epoch.moved_from(epoch) {
            self.store.insert(key, Arc::clone(entry));
        }
    }

    /// A miss's part in the fleet: lead it, or wait for a peer's answer.
    async fn lead(&self, route: &RouteCache, key: &CacheKey, epoch: Option<EpochValue>, wait: Duration) -> FleetLead {
        match (&self.shared, epoch) {
            (Some(tier), Some(epoch)) => tier.lead(route, key, epoch, wait).await,
            _ => FleetLead::Alone,
        }
    }
}

/// What a sidecar does when it sees a route's epoch move (a purge elsewhere in the fleet):
/// drop its own entries of the route.
fn drop_local_entries(store: &Arc<LocalStore>) -> impl Fn(&RouteCache) + Send + Sync + Clone + 'static {
    let store = Arc::clone(store);
    move |route: &RouteCache| {
        store.purge_now(&Purge::Routes(vec![route.identity]));
    }
}

/// One cached route, ready for the request path.
#[derive(Debug)]
pub struct RouteCache {
    pub settings: RouteCacheSettings,
    pub name: Arc<str>,
    /// The route's identity: its entries are keyed under it, in this process and the fleet.
    pub identity: RouteId,
    /// Its purge epoch in the fleet (Redis backend), kept across reloads with the identity.
    pub epoch: Arc<Epoch>,
    /// Headers the route's `set_headers` replace.
    replaced: Vec<HeaderName>,
    /// `cache_requests_total{route, result}`, registered once, by [`Outcome`].
    counters: [metrics::Counter; 4],
}

impl RouteCache {
    pub fn new(
        name: Arc<str>,
        settings: RouteCacheSettings,
        identity: RouteId,
        epoch: Arc<Epoch>,
        replaced: Vec<HeaderName>,
    ) -> RouteCache {
        let counters = Outcome::ALL
            .map(|o| metrics::counter!("cache_requests_total", "route" => Arc::clone(&name), "result" => o.label()));
        RouteCache { settings, name, identity, epoch, replaced, counters }
    }

    fn count(&self, outcome: Outcome) {
        self.counters[outcome as usize].increment(1);
    }
}

/// What the cache phase decided.
pub enum Lookup {
    /// Answer with this response; when a [`Refresh`] comes with it, fetch that in the
    /// background to renew the stale entry served.
    Answer(Response<ProxyBody>, Option<Box<Refresh>>),
    /// Go upstream with `body`; settle the result with the ticket, if the route is cached.
    Fetch(RequestBody, Option<Ticket>),
}

/// A request to repeat in the background (stale-while-revalidate): its head as the function
/// sent it, a copy of its body, and the ticket that stores the answer.
pub struct Refresh {
    pub parts: Parts,
    pub body: RequestBody,
    pub ticket: Ticket,
}

impl Refresh {
    /// The most of the answer worth reading: past it, nothing is stored.
    pub fn max_body(&self) -> u64 {
        self.ticket.route.settings.max_body
    }
}

/// The upstream's answer to a fetched request, with the tokens it carried (a response that
/// contains one of their values is not stored).
pub struct Fetched {
    pub response: Response<ProxyBody>,
    pub tokens: Arc<RequestTokens>,
}

/// The cache phase: answers from the cache or says how to go on. Runs before any token is
/// loaded; on the way it may read the body ahead (for a POST key), and it asks cached
/// upstreams for unencoded answers (`Accept-Encoding: identity`) so they can be checked.
pub async fn lookup(
    snapshot: &Arc<Snapshot>,
    route: usize,
    target: &Target,
    path_and_query: &str,
    parts: &mut Parts,
    body: ClientBody,
    limits: &BodyLimits<'_>,
) -> Result<Lookup, ProxyError> {
    let Some((compiled, rc)) = snapshot.compiled.get(route).and_then(|c| Some((c, c.cache.as_ref()?))) else {
        return Ok(Lookup::Fetch(RequestBody::Client(body), None));
    };
    let cache = &snapshot.cache;
    let asks = RequestDirectives::of(&parts.headers);
    if let Some(reason) = request::bypass(rc, compiled, parts, &asks) {
        tracing::debug!(route = &*rc.name, ?reason, "cache bypassed");
        return Ok(Lookup::Fetch(RequestBody::Client(body), Some(Ticket::new(cache, rc, Outcome::Bypass))));
    }
    let read = body::read(body, &parts.headers, limits).await?;
    let Some(raw_body) = read.whole().cloned() else {
        tracing::debug!(route = &*rc.name, reason = ?request::Bypass::Body, "cache bypassed");
        return Ok(Lookup::Fetch(RequestBody::Read(read), Some(Ticket::new(cache, rc, Outcome::Bypass))));
    };
    let keyed = key::key(&KeyInput {
        route: rc.identity,
        method: &parts.method,
        target,
        path_and_query,
        headers: &parts.headers,
        vary: &rc.settings.vary,
        replaced: &rc.replaced,
        body: &raw_body,
    });
    // The answer is checked so the upstream cannot hide an injected token in an encoding.
    parts.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let purges = cache.purges.load(Ordering::Acquire);
    let head = parts.method == Method::HEAD;
    // With the Redis backend: the route's purge epoch, part of every fleet entry's name.
    let epoch = cache.epoch(rc).await;
    if asks.no_cache {
        let ticket = Ticket::new(cache, rc, Outcome::Bypass).storing(Storing::new(keyed, purges, epoch));
        return Ok(Lookup::Fetch(RequestBody::Read(read), Some(ticket)));
    }

    let answer = |entry: &Entry, outcome: Outcome| -> Result<Response<ProxyBody>, ProxyError> {
        request::check_binding(snapshot, route, path_and_query, &parts.headers, &raw_body)?;
        rc.count(outcome);
        Ok(respond(entry, outcome, SystemTime::now(), head))
    };
    let found = cache.find(rc, &keyed.key, epoch).await;
    let mut stale = None;
    if let Some(entry) = found {
        let fresh_enough = asks.max_age.is_none_or(|max| entry.age(SystemTime::now()) <= max);
        match entry.freshness(SystemTime::now()) {
            Freshness::Fresh if fresh_enough => return Ok(Lookup::Answer(answer(&entry, Outcome::Hit)?, None)),
            Freshness::StaleWhileRevalidate if asks.max_age.is_none() => {
                // One refresh per key at a time (in the fleet too); other stale answers
                // meanwhile start none.
                let mut refresh = None;
                if let Some(leader) = cache.flights.try_lead(keyed.key) {
                    let wait = snapshot.config.cache.coalesce_wait;
                    let fleet = match (&cache.shared, epoch) {
                        (Some(tier), Some(e)) => tier.try_lease(rc, &keyed.key, e, wait).await,
                        _ => TryLease::Unavailable,
                    };
                    let lease = match fleet {
                        // A peer refreshed it just now: answer with that.
                        TryLease::Refreshed(fresh) => {
                            if let Some(e) = epoch {
                                cache.keep(rc, keyed.key, &fresh, e);
                            }
                            return Ok(Lookup::Answer(answer(&fresh, Outcome::Hit)?, None));
                        }
                        TryLease::Taken => None,
                        TryLease::Held(lease) => Some(Some(lease)),
                        TryLease::Unavailable => Some(None),
                    };
                    refresh = lease.and_then(|lease| {
                        let body = read.copy(limits.budget, limits.budget_limit)?;
                        let storing = Storing::new(keyed, purges, epoch).led(leader, lease);
                        let mut ticket = Ticket::new(cache, rc, Outcome::Miss).storing(storing);
                        ticket.background = true;
                        Some(Box::new(Refresh { parts: copy_head(parts), body: RequestBody::Read(body), ticket }))
                    });
                }
                return Ok(Lookup::Answer(answer(&entry, Outcome::Stale)?, refresh));
            }
            Freshness::Expired => {}
            _ => stale = Some(entry),
        }
    }

    let wait = snapshot.config.cache.coalesce_wait;
    let mut storing = Storing::new(keyed, purges, epoch);
    match cache.flights.join(storing.keyed.key) {
        // This process's one miss for the key; with the Redis backend, the fleet's too, or
        // it waits for the sidecar that leads it.
        Join::Leader(leader) => match cache.lead(rc, &storing.keyed.key, epoch, wait).await {
            FleetLead::Found(entry) => {
                if let Some(e) = epoch {
                    cache.keep(rc, storing.keyed.key, &entry, e);
                }
                // Local followers wake now, and find the entry.
                drop(leader);
                return Ok(Lookup::Answer(answer(&entry, Outcome::Hit)?, None));
            }
            FleetLead::Holder(lease) => storing = storing.led(leader, Some(lease)),
            FleetLead::Alone => storing = storing.led(leader, None),
        },
        Join::Follower(follower) => {
            if follower.wait(wait).await {
                if let Some(entry) = cache.store.get(&storing.keyed.key).await {
                    if entry.freshness(SystemTime::now()) == Freshness::Fresh {
                        return Ok(Lookup::Answer(answer(&entry, Outcome::Hit)?, None));
                    }
                }
            }
            // The first request's answer was not stored, or took too long: go upstream too.
        }
    }
    let mut ticket = Ticket::new(cache, rc, Outcome::Miss).storing(storing);
    ticket.stale = stale;
    Ok(Lookup::Fetch(RequestBody::Read(read), Some(ticket)))
}

/// A request head as the function sent it, for a background refresh (extensions dropped).
fn copy_head(parts: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// A response built from an entry: its status, headers and shared body, with `Age` and
/// `x-token-sidecar-cache`.
fn respond(entry: &Entry, outcome: Outcome, now: SystemTime, head: bool) -> Response<ProxyBody> {
    let body = Full::new(entry.body.clone()).map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    *headers = entry.headers.clone();
    if !head && !matches!(entry.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    }
    headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    headers.insert(CACHE_HEADER, HeaderValue::from_static(outcome.label()));
    response
}

/// What the cache does once a fetched request has its answer.
pub struct Ticket {
    cache: Arc<Cache>,
    route: Arc<RouteCache>,
    outcome: Outcome,
    storing: Option<Box<Storing>>,
    /// An entry past its freshness that may stand in for a failed upstream.
    stale: Option<Arc<Entry>>,
    /// A background refresh: its client was already answered (and counted).
    background: bool,
}

struct Storing {
    keyed: Keyed,
    /// Held until the answer is stored or found unstorable: coalesced misses wait on it.
    leader: Option<Leader>,
    /// The purge count when the request was looked up.
    purges: u64,
    /// The route's fleet epoch when the request was looked up (`None`: no Redis then).
    epoch: Option<EpochValue>,
    /// The key's lease in the fleet, held until the answer is stored or found unstorable:
    /// other sidecars' misses wait on it.
    fleet: Option<FleetLease>,
}

impl Storing {
    fn new(keyed: Keyed, purges: u64, epoch: Option<EpochValue>) -> Storing {
        Storing { keyed, leader: None, purges, epoch, fleet: None }
    }

    /// This request leads the key's fetch (in this process, and in the fleet with `fleet`).
    fn led(mut self, leader: Leader, fleet: Option<FleetLease>) -> Storing {
        self.leader = Some(leader);
        self.fleet = fleet;
        self
    }
}

impl Ticket {
    fn new(cache: &Arc<Cache>, route: &Arc<RouteCache>, outcome: Outcome) -> Ticket {
        Ticket {
            cache: Arc::clone(cache),
            route: Arc::clone(route),
            outcome,
            storing: None,
            stale: None,
            background: false,
        }
    }

    fn storing(mut self, storing: Storing) -> Ticket {
        self.storing = Some(Box::new(storing));
        self
    }

    /// The client's response: the upstream's (teed into the cache when storable), or a stale
    /// entry when the upstream failed within `stale_if_error`.
    pub fn settle(self, fetched: Result<Fetched, ProxyError>) -> Result<Response<ProxyBody>, ProxyError> {
        let now = SystemTime::now();
        let failed = match &fetched {
            Err(e) => is_upstream_failure(e),
            Ok(f) => matches!(f.response.status().as_u16(), 500 | 502 | 503 | 504),
        };
        if failed {
            if let Some(stale) = self.stale.as_ref().filter(|e| e.freshness(now) != Freshness::Expired) {
                self.route.count(Outcome::Stale);
                return Ok(respond(stale, Outcome::Stale, now, false));
            }
        }
        if !self.background {
            self.route.count(self.outcome);
        }
        let Fetched { response, tokens } = fetched?;
        let (mut parts, body) = response.into_parts();
        let body = match self.storing {
            Some(storing) => store_on_the_way(&self.cache, &self.route, *storing, &mut parts, body, &tokens, now),
            None => body,
        };
        parts.headers.insert(CACHE_HEADER, HeaderValue::from_static(self.outcome.label()));
        Ok(Response::from_parts(parts, body))
    }
}

/// Failures a stale entry may stand in for: the upstream unreachable, timing out or
/// breaking, and a token that cannot be had (the identity provider down).
fn is_upstream_failure(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTls { .. }
            | ProxyError::UpstreamFailed(_)
            | ProxyError::UpstreamTimeout(_)
    ) || e.code() == "token_unavailable"
}

/// Wraps a storable response's body so it is stored once it has streamed whole; returns the
/// body unchanged (and releases coalesced misses) when it may not be stored.
fn store_on_the_way(
    cache: &Arc<Cache>,
    route: &Arc<RouteCache>,
    storing: Storing,
    parts: &mut http::response::Parts,
    body: ProxyBody,
    tokens: &RequestTokens,
    now: SystemTime,
) -> ProxyBody {
    let settings = &route.settings;
    let decision = policy::storable(parts.status, &parts.headers, settings, now, |name| {
        storing.keyed.covers(name, &route.replaced)
    });
    let lifetime = match decision {
        Ok(lifetime) => lifetime,
        Err(reason) => {
            tracing::debug!(route = &*route.name, status = parts.status.as_u16(), ?reason, "response not stored");
            return body;
        }
    };
    let mut headers = parts.headers.clone();
    headers.remove(header::AGE);
    headers.remove(CACHE_HEADER);
    let completion = Storage {
        cache: Arc::clone(cache),
        route: Arc::clone(route),
        key: storing.keyed.key,
        status: parts.status,
        headers,
        stored_at: now,
        lifetime,
        injected: injected_values(tokens),
        purges: storing.purges,
        epoch: storing.epoch,
        fleet: storing.fleet,
        _leader: storing.leader,
    };
    let reservation = cache.captures.reservation();
    capture::capture(body, Capture::new(settings.max_body, reservation, cache.max_bytes, Box::new(completion)))
}

/// The values the sidecar wrote into the request (looked for in every form it writes them
/// in), for the check that keeps them out of the cache.
fn injected_values(tokens: &RequestTokens) -> Option<Redactions> {
    Redactions::new(tokens.injected().into_iter().map(|v| (v, String::new(), metrics::Counter::noop())))
}

/// Stores a response whose body was captured whole.
struct Storage {
    cache: Arc<Cache>,
    route: Arc<RouteCache>,
    key: CacheKey,
    status: StatusCode,
    headers: http::HeaderMap,
    stored_at: SystemTime,
    lifetime: Lifetime,
    injected: Option<Redactions>,
    purges: u64,
    epoch: Option<EpochValue>,
    /// Released once the fleet has the entry (or on drop, when it is not stored).
    fleet: Option<FleetLease>,
    /// Released (dropped) after the insert, so coalesced misses find the entry.
    _leader: Option<Leader>,
}

impl Completion for Storage {
    fn complete(self: Box<Self>, body: Bytes) {
        let name = &*self.route.name;
        if let Some(injected) = &self.injected {
            if injected.found_in_headers(&self.headers) || injected.found_in(&body) {
                tracing::debug!(route = name, "response not stored: it carries a token value the sidecar injected");
                return;
            }
        }
        let purged_in_fleet = self.epoch.is_some_and(|e| self.route.epoch.moved_from(e));
        if self.cache.purges.load(Ordering::Acquire) != self.purges || purged_in_fleet {
            tracing::debug!(route = name, "response not stored: the cache was purged while it was fetched");
            return;
        }
        let settings = &self.route.settings;
        let (swr, sie) = match self.lifetime.may_serve_stale {
            true => (settings.stale_while_revalidate, settings.stale_if_error),
            false => Default::default(),
        };
        let entry = Entry {
            route: Arc::clone(&self.route.name),
            status: self.status,
            headers: self.headers,
            body,
            stored_at: self.stored_at,
            initial_age: self.lifetime.initial_age,
            fresh_for: self.lifetime.fresh_for,
            stale_while_revalidate: swr,
            stale_if_error: sie,
        };
        let entry = Arc::new(entry);
        self.cache.store.insert(self.key, Arc::clone(&entry));
        // The fleet gets it in the background; the lease is released once it has it.
        let (Some(tier), Some(epoch)) = (&self.cache.shared, self.epoch) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (tier, route, key, lease) = (Arc::clone(tier), Arc::clone(&self.route), self.key, self.fleet);
        let on_change = drop_local_entries(&self.cache.store);
        runtime.spawn(async move { tier.put(&route, key, epoch, entry, lease, on_change).await });
    }
}

/// Reads a background refresh's response to its end, so the capture completes; a body past
/// `max_body` cannot be stored, so reading stops there.
pub async fn drain(response: Response<ProxyBody>, max_body: u64) {
    let mut body = response.into_body();
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > max_body {
            return;
        }
    }
}
