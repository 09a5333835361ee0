//! The fleet's tier of the function-result cache (`[cache] backend = "redis"`, issue 16):
//! entries in Redis, sealed like shared tokens, behind each sidecar's local store.
//!
//! - **Keys.** An entry lives at `PREFIX cache:NAME`, NAME an HMAC under the fleet key of the
//!   request's key (the route's identity and the request digest, the same on every sidecar
//!   with the same config) and the route's purge epoch. Redis learns nothing from a name.
//! - **Values** are [`Entry::encode`]d, sealed with AES-256-GCM bound to the Redis key
//!   ([`crate::fleet::shared`]), written with the entry's remaining lifetime (fresh and stale
//!   windows) as TTL, and read with a size bound (`max_body` plus room for headers). What does
//!   not open, decode, or fit the route's settings is ignored and counted, never served.
//! - **Coalescing.** A sidecar's one local miss for a key takes the key's lease (`SET NX PX`
//!   with a fencing value, for `coalesce_wait`); sidecars that find the lease taken poll for
//!   the entry and the lease, and answer from the entry once it appears. If the holder's answer
//!   cannot be stored, or it is gone, the lease disappears without an entry, and they go
//!   upstream themselves, as they do once `coalesce_wait` has passed.
//! - **Purges** bump the route's epoch, a random value at `PREFIX cache-epoch:NAME` that is part
//!   of every entry's name: older entries stop matching at once, for the whole fleet, and
//!   their TTLs remove them. Each sidecar re-reads a route's epoch at most every second while
//!   the route has traffic (in the background, or before a request after a quiet second), and
//!   empties its local store of that route when the epoch moved.
//!
//! Redis is never needed for an answer: every operation is bounded by `[fleet]
//! operation_timeout`, and a failure reads as a miss (or as "no peer is fetching"), so the
//! sidecar goes on with its local store alone, as without a fleet.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::store::{CacheKey, Entry, Freshness};
use super::RouteCache;
use crate::fleet::shared::{Lease, SharedStore};

/// How old a route's known epoch may be before a request re-reads it in the background.
const EPOCH_REFRESH: Duration = Duration::from_millis(500);
/// How old it may be before a request waits for it to be re-read (a purge elsewhere in the
/// fleet reaches this sidecar's local entries within about this long).
const EPOCH_MAX_AGE: Duration = Duration::from_secs(1);
/// An epoch outlives the entries written under the one before it by this much.
const EPOCH_MARGIN: Duration = Duration::from_secs(60);
/// How often a sidecar waiting for a peer's fetch looks for its entry.
const POLL: Duration = Duration::from_millis(25);
/// Room for an entry's status, headers and route name beyond its body, when reading it back
/// (headers past this are not written to Redis).
const HEAD_ALLOWANCE: u64 = 64 << 10;

/// A route's purge epoch: 16 random bytes, or all zero while no purge has set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpochValue([u8; 16]);

/// What this sidecar knows of one route's epoch. Kept across reloads that keep the route.
#[derive(Debug, Default)]
pub struct Epoch {
    known: Mutex<Known>,
    /// One read of the epoch at a time per route.
    reading: tokio::sync::Mutex<()>,
    /// A background read is under way.
    refreshing: AtomicBool,
}

#[derive(Debug, Default)]
struct Known {
    value: EpochValue,
    /// When it was last read (successfully or not).
    read_at: Option<Instant>,
    /// Whether the last read succeeded: if not, Redis is not used for the route until the
    /// next read succeeds.
    usable: bool,
}

impl Epoch {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch, if the last read succeeded and is at least as recent as `since`.
    fn read_since(&self, since: Instant) -> Option<Option<EpochValue>> {
        let k = self.known();
        k.read_at.filter(|at| *at >= since).map(|_| k.usable.then_some(k.value))
    }

    /// Whether the last read failed (Redis did not answer).
    fn failing(&self) -> bool {
        let k = self.known();
        k.read_at.is_some() && !k.usable
    }

    /// Whether the route's epoch moved away from `value` (a purge was seen since a request
    /// read it): what that request fetched must not be stored.
    pub fn moved_from(&self, value: EpochValue) -> bool {
        self.known().value != value
    }
}

/// The fleet's tier, shared by every cached route of a snapshot.
pub struct SharedTier {
    store: Arc<SharedStore>,
    /// Requests of this process waiting for a peer's fetch right now.
    waiting: Arc<AtomicUsize>,
}

/// How the fleet took part in a miss.
pub enum FleetLead {
    /// This sidecar holds the key's lease: fetch, store, release.
    Holder(FleetLease),
    /// A peer fetched it meanwhile; here is its entry.
    Found(Arc<Entry>),
    /// Fetch without the fleet: Redis unavailable, the peer's answer was not stored, or the
    /// wait ran out.
    Alone,
}

/// A background refresh's claim on a key, for stale-while-revalidate.
pub enum TryLease {
    Held(FleetLease),
    /// A peer refreshed it meanwhile; here is its fresh entry.
    Refreshed(Arc<Entry>),
    /// A peer is refreshing it already.
    Taken,
    Unavailable,
}

/// A key's lease in Redis, released when the answer is stored or found unstorable (on drop,
/// in the background, however the request ended).
pub struct FleetLease {
    store: Arc<SharedStore>,
    lease: Option<Lease>,
}

impl FleetLease {
    async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.store.release_as("cache_release", lease).await {
                tracing::debug!(error = %e, "fleet cache: could not release a lease (it lapses by itself)");
            }
        }
    }
}

impl Drop for FleetLease {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = Arc::clone(&self.store);
        runtime.spawn(async move {
            let _ = store.release_as("cache_release", lease).await;
        });
    }
}

/// `cache_shared_lookups_total{route, result}`.
fn count(route: &RouteCache, result: &'static str) {
    metrics::counter!("cache_shared_lookups_total", "route" => Arc::clone(&route.name), "result" => result)
        .increment(1);
}

impl SharedTier {
    pub fn new(store: Arc<SharedStore>) -> SharedTier {
        SharedTier { store, waiting: Arc::default() }
    }

    /// Whether this tier writes through `store`.
    pub fn uses(&self, store: &Arc<SharedStore>) -> bool {
        Arc::ptr_eq(&self.store, store)
    }

    /// Requests waiting for a peer's fetch now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn entry_key(&self, key: &CacheKey, epoch: EpochValue) -> String {
        self.store.key("cache", &entry_identity(key, epoch))
    }

    fn lease_key(&self, key: &CacheKey, epoch: EpochValue) -> String {
        self.store.key("lease:cache", &entry_identity(key, epoch))
    }

    fn epoch_key(&self, route: &RouteCache) -> String {
        self.store.key("cache-epoch", &route.identity.0)
    }

    /// The route's epoch for a request: the known one while it is recent (re-read in the
    /// background once it is half a second old), else read now. `None` when Redis is not
    /// answering: the request goes on with the local store alone. `on_change` runs when the
    /// epoch moved (a purge elsewhere in the fleet), before the new value is used.
    pub async fn epoch(
        self: &Arc<Self>,
        route: &Arc<RouteCache>,
        on_change: impl Fn(&RouteCache) + Send + Sync + Clone + 'static,
    ) -> Option<EpochValue> {
        let now = Instant::now();
        if let Some(known) = route.epoch.read_since(now.checked_sub(EPOCH_REFRESH).unwrap_or(now)) {
            return known;
        }
        // Recent enough to use while it is read again; and while Redis is not answering, no
        // request waits for it: the local store serves, and a read in the background notices
        // when Redis is back.
        let recent = route.epoch.read_since(now.checked_sub(EPOCH_MAX_AGE).unwrap_or(now));
        if let Some(known) = recent.or(route.epoch.failing().then_some(None)) {
            if !route.epoch.refreshing.swap(true, Ordering::AcqRel) {
                let (tier, route) = (Arc::clone(self), Arc::clone(route));
                tokio::spawn(async move {
                    tier.read_epoch(&route, Instant::now(), on_change).await;
                    route.epoch.refreshing.store(false, Ordering::Release);
                });
            }
            return known;
        }
        self.read_epoch(route, now, on_change).await
    }

    /// Reads the route's epoch from Redis unless a read since `since` already did.
    pub async fn read_epoch(
        &self,
        route: &RouteCache,
        since: Instant,
        on_change: impl Fn(&RouteCache),
    ) -> Option<EpochValue> {
        let _one = route.epoch.reading.lock().await;
        if let Some(known) = route.epoch.read_since(since) {
            return known;
        }
        let read = self.store.get_as("cache_epoch", &self.epoch_key(route), 64).await;
        let value = match read {
            Ok(found) => Some(found.and_then(|e| <[u8; 16]>::try_from(e.value.as_slice()).ok()).unwrap_or_default()),
            Err(e) => {
                tracing::debug!(route = &*route.name, error = %e, "fleet cache: epoch not read; local store only");
                None
            }
        };
        let moved = {
            let mut k = route.epoch.known();
            let moved = value.is_some_and(|v| k.read_at.is_some() && k.value != EpochValue(v));
            if let Some(v) = value {
                k.value = EpochValue(v);
            }
            k.usable = value.is_some();
            k.read_at = Some(Instant::now());
            moved
        };
        if moved {
            tracing::debug!(route = &*route.name, "fleet cache: the route was purged elsewhere; local entries dropped");
            on_change(route);
        }
        value.map(EpochValue)
    }

    /// The entry for `key` in Redis, if there is a usable one.
    pub async fn get(&self, route: &RouteCache, key: &CacheKey, epoch: EpochValue) -> Option<Arc<Entry>> {
        let found = self.store.get_as("cache_get", &self.entry_key(key, epoch), max_len(route)).await;
        match found {
            Ok(Some(stored)) => {
                let entry = admit(route, stored.value);
                count(route, if entry.is_some() { "hit" } else { "miss" });
                entry
            }
            Ok(None) => {
                count(route, "miss");
                None
            }
            Err(e) => {
                tracing::debug!(route = &*route.name, error = %e, "fleet cache: lookup failed; local store only");
                count(route, "unavailable");
                None
            }
        }
    }

    /// Takes the lease of `key` for this sidecar's miss, or waits (up to `wait`) for the peer
    /// holding it to store its answer.
    pub async fn lead(&self, route: &RouteCache, key: &CacheKey, epoch: EpochValue, wait: Duration) -> FleetLead {
        let lease_key = self.lease_key(key, epoch);
        match self.store.lease_as("cache_lease", &lease_key, wait).await {
            Err(_) => return FleetLead::Alone,
            Ok(Some(lease)) => {
                let lease = FleetLease { store: Arc::clone(&self.store), lease: Some(lease) };
                return match self.fresh_after_lease(route, key, epoch).await {
                    Some(entry) => {
                        lease.release().await;
                        FleetLead::Found(entry)
                    }
                    None => FleetLead::Holder(lease),
                };
            }
            Ok(None) => {}
        }
        struct Waiting(Arc<AtomicUsize>);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(Arc::clone(&self.waiting));
        let entry_key = self.entry_key(key, epoch);
        let deadline = Instant::now() + wait;
        loop {
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
            match self.store.poll_as("cache_poll", &entry_key, &lease_key, max_len(route)).await {
                Ok((Some(stored), _)) => {
                    let Some(entry) = admit(route, stored.value) else { return FleetLead::Alone };
                    if entry.freshness(SystemTime::now()) != Freshness::Fresh {
                        return FleetLead::Alone;
                    }
                    count(route, "hit");
                    return FleetLead::Found(entry);
                }
                // The holder is done and stored nothing, or it is gone.
                Ok((None, false)) | Err(_) => return FleetLead::Alone,
                Ok((None, true)) => {}
            }
            if Instant::now() >= deadline {
                tracing::debug!(route = &*route.name, "fleet cache: no peer stored its answer in time; fetching here");
                return FleetLead::Alone;
            }
        }
    }

    /// Claims `key` for a background refresh without waiting.
    pub async fn try_lease(&self, route: &RouteCache, key: &CacheKey, epoch: EpochValue, ttl: Duration) -> TryLease {
        match self.store.lease_as("cache_lease", &self.lease_key(key, epoch), ttl).await {
            Ok(Some(lease)) => {
                let lease = FleetLease { store: Arc::clone(&self.store), lease: Some(lease) };
                match self.fresh_after_lease(route, key, epoch).await {
                    Some(entry) => {
                        lease.release().await;
                        TryLease::Refreshed(entry)
                    }
                    None => TryLease::Held(lease),
                }
            }
            Ok(None) => TryLease::Taken,
            Err(_) => TryLease::Unavailable,
        }
    }

    /// Looks once more after taking a lease: a peer may have stored the key and released
    /// its lease between this sidecar's lookup and its lease, and its answer is then here.
    async fn fresh_after_lease(&self, route: &RouteCache, key: &CacheKey, epoch: EpochValue) -> Option<Arc<Entry>> {
        let stored = self.store.get_as("cache_get", &self.entry_key(key, epoch), max_len(route)).await.ok()??;
        let entry = admit(route, stored.value)?;
        (entry.freshness(SystemTime::now()) == Freshness::Fresh).then(|| {
            count(route, "hit");
            entry
        })
    }

    /// Writes `entry` for the fleet (if the route's epoch is still the one it was fetched
    /// under), then releases `lease`. Runs in the background, after the local store has it.
    pub async fn put(
        &self,
        route: &RouteCache,
        key: CacheKey,
        epoch: EpochValue,
        entry: Arc<Entry>,
        lease: Option<FleetLease>,
        on_change: impl Fn(&RouteCache),
    ) {
        // A purge while the answer was fetched must not be undone by writing it now.
        let current = self.read_epoch(route, Instant::now(), on_change).await;
        let ttl = entry.useful_for_from(SystemTime::now());
        let encoded = entry.encode();
        if current == Some(epoch) && !ttl.is_zero() && encoded.len() <= max_len(route) {
            if let Err(e) = self.store.put_as("cache_set", &self.entry_key(&key, epoch), &encoded, ttl).await {
                tracing::debug!(route = &*route.name, error = %e, "fleet cache: could not share an entry");
            }
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
    }

    /// Retires every entry of `route` in Redis by giving it a new epoch; false if Redis could
    /// not be told (the entries then stay until their TTLs end).
    pub async fn purge(&self, route: &RouteCache) -> bool {
        let mut value = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut value).is_err() {
            return false;
        }
        let settings = &route.settings;
        let lifetime = settings.ttl + settings.stale_while_revalidate.max(settings.stale_if_error) + EPOCH_MARGIN;
        let _one = route.epoch.reading.lock().await;
        match self.store.put_as("cache_purge", &self.epoch_key(route), &value, lifetime).await {
            Ok(()) => {
                let mut k = route.epoch.known();
                *k = Known { value: EpochValue(value), read_at: Some(Instant::now()), usable: true };
                true
            }
            Err(e) => {
                tracing::warn!(route = &*route.name, error = %e, "fleet cache: purge not shared (Redis unavailable)");
                false
            }
        }
    }
}

/// What names an entry in Redis (before the HMAC): the request's key and the epoch.
fn entry_identity(key: &CacheKey, epoch: EpochValue) -> Vec<u8> {
    let mut id = Vec::with_capacity(16 + 32 + 32 + 16);
    id.extend_from_slice(b"cache entry v1\0\0");
    id.extend_from_slice(&key.route.0);
    id.extend_from_slice(&key.digest);
    id.extend_from_slice(&epoch.0);
    id
}

/// The largest entry of `route` read from (or written to) Redis.
fn max_len(route: &RouteCache) -> usize {
    usize::try_from(route.settings.max_body.saturating_add(HEAD_ALLOWANCE)).unwrap_or(usize::MAX)
}

/// An entry read from Redis, if this route may serve it: it decodes, its body fits
/// `max_body`, its status is one the route stores, and its lifetimes are no longer than the
/// route's (a peer with the same route identity has the same settings; this holds even if
/// not). It takes this process's route name.
fn admit(route: &RouteCache, value: Vec<u8>) -> Option<Arc<Entry>> {
    let settings = &route.settings;
    let admitted = Entry::decode(bytes::Bytes::from(value))
        .ok()
        .filter(|e| e.body.len() as u64 <= settings.max_body && settings.statuses.contains(&e.status.as_u16()));
    let Some(mut entry) = admitted else {
        metrics::counter!("fleet_entries_rejected_total", "reason" => "invalid").increment(1);
        tracing::warn!(route = &*route.name, "fleet cache: an entry opened but is not one this route stores; ignored");
        return None;
    };
    entry.route = Arc::clone(&route.name);
    entry.fresh_for = entry.fresh_for.min(settings.ttl);
    entry.stale_while_revalidate = entry.stale_while_revalidate.min(settings.stale_while_revalidate);
    entry.stale_if_error = entry.stale_if_error.min(settings.stale_if_error);
    Some(Arc::new(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::identity::RouteId;

    fn key(n: u8) -> CacheKey {
        CacheKey { route: RouteId([1; 32]), digest: [n; 32] }
    }

    #[test]
    fn an_entry_is_named_by_its_key_and_the_epoch() {
        let zero = EpochValue::default();
        assert_eq!(entry_identity(&key(1), zero), entry_identity(&key(1), zero));
        assert_ne!(entry_identity(&key(1), zero), entry_identity(&key(2), zero));
        assert_ne!(entry_identity(&key(1), zero), entry_identity(&key(1), EpochValue([1; 16])));
    }

    #[tokio::test]
    async fn a_known_epoch_is_used_while_recent() {
        let epoch = Epoch::default();
        let now = Instant::now();
        assert_eq!(epoch.read_since(now), None, "never read");
        *epoch.known() = Known { value: EpochValue([3; 16]), read_at: Some(now), usable: true };
        assert_eq!(epoch.read_since(now), Some(Some(EpochValue([3; 16]))));
        assert!(!epoch.moved_from(EpochValue([3; 16])) && epoch.moved_from(EpochValue::default()));
        epoch.known().usable = false;
        assert_eq!(epoch.read_since(now), Some(None), "read, but Redis did not answer");
        assert!(epoch.failing());
        assert!(!epoch.moved_from(EpochValue([3; 16])), "Redis down is not a purge");
        assert_eq!(epoch.read_since(now + Duration::from_millis(1)), None, "older than asked");
    }
}
