//! Where stored responses live: the [`Store`] trait, the [`Entry`] it holds, and
//! [`LocalStore`], the in-process store (moka, evicting least recently used entries by size).
//!
//! The trait is small on purpose: get, insert, purge and a usage report, with entries that
//! encode to bytes ([`Entry::encode`]) and keys that are the same in every process
//! ([`CacheKey`]: the route's identity and a digest of the request), so the fleet's shared
//! store ([`super::shared`]) sits behind this one as a second tier.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use moka::notification::RemovalCause;

use super::identity::RouteId;

/// What identifies one stored response: the route's identity (it changes when the route's
/// definition or tokens change, so older entries are never reached again) and a SHA-256 of
/// the request as the function sent it (which covers the route's identity too). Both are the
/// same in every process with the same config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub route: RouteId,
    pub digest: [u8; 32],
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.route)?;
        self.digest.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One stored response, and what is needed to judge its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The route's name, for purges and the usage report.
    pub route: Arc<str>,
    pub status: StatusCode,
    /// The response's headers as sent to the client (hop-by-hop ones and `Age` removed).
    pub headers: HeaderMap,
    /// The whole body, shared by every hit.
    pub body: Bytes,
    /// When it was stored (wall clock, so another process can judge it too).
    pub stored_at: SystemTime,
    /// The age it already had then (the upstream's `Age`).
    pub initial_age: Duration,
    /// How long it is fresh, counted in age.
    pub fresh_for: Duration,
    /// After that, how long it may be served while a refresh runs (zero: not at all).
    pub stale_while_revalidate: Duration,
    /// After that, how long it may be served when the upstream fails (zero: not at all).
    pub stale_if_error: Duration,
}

/// How usable an entry is at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Stale; may be served while one request refreshes it.
    StaleWhileRevalidate,
    /// Stale; may be served only if the upstream fails.
    StaleIfError,
    /// Past every window.
    Expired,
}

/// Bytes an entry costs besides its body and headers (the key, the map slot, the `Arc`s).
const ENTRY_OVERHEAD: u64 = 256;

impl Entry {
    /// Its age at `now` (RFC 9111 4.2.3, without a `Date` correction: both clocks are ours).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.stored_at).unwrap_or(Duration::ZERO)
    }

    pub fn freshness(&self, now: SystemTime) -> Freshness {
        let age = self.age(now);
        let Some(stale_for) = age.checked_sub(self.fresh_for) else { return Freshness::Fresh };
        if stale_for < self.stale_while_revalidate {
            Freshness::StaleWhileRevalidate
        } else if stale_for < self.stale_if_error {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// How long after it was stored the entry is of no more use.
    pub fn useful_for(&self) -> Duration {
        let windows = self.stale_while_revalidate.max(self.stale_if_error);
        (self.fresh_for + windows).saturating_sub(self.initial_age)
    }

    /// How long from `now` the entry is still of use (an entry read from the fleet's store
    /// was stored earlier, maybe by another sidecar).
    pub fn useful_for_from(&self, now: SystemTime) -> Duration {
        let elapsed = now.duration_since(self.stored_at).unwrap_or(Duration::ZERO);
        self.useful_for().saturating_sub(elapsed)
    }

    /// What it costs in memory, for the `max_bytes` budget.
    pub fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        ENTRY_OVERHEAD + self.body.len() as u64 + headers as u64 + self.route.len() as u64
    }

    /// A self-describing binary form, for stores outside this process.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight() as usize);
        out.put_u8(ENCODING_VERSION);
        put_bytes(&mut out, self.route.as_bytes());
        out.put_u16(self.status.as_u16());
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.body);
        out.put_u64(self.stored_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
        for d in [self.initial_age, self.fresh_for, self.stale_while_revalidate, self.stale_if_error] {
            out.put_u64(d.as_millis() as u64);
        }
        out.freeze()
    }

    /// Reads what [`Entry::encode`] wrote; anything else is an error, never a panic.
    pub fn decode(mut data: Bytes) -> Result<Entry, DecodeError> {
        if take_u8(&mut data)? != ENCODING_VERSION {
            return Err(DecodeError("unknown version"));
        }
        let route = std::str::from_utf8(&take_bytes(&mut data)?).map_err(|_| DecodeError("route name"))?.into();
        let status = StatusCode::from_u16(take_u16(&mut data)?).map_err(|_| DecodeError("status"))?;
        let count = take_u32(&mut data)?;
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = HeaderName::from_bytes(&take_bytes(&mut data)?).map_err(|_| DecodeError("header name"))?;
            let value =
                HeaderValue::from_maybe_shared(take_bytes(&mut data)?).map_err(|_| DecodeError("header value"))?;
            headers.append(name, value);
        }
        let body = take_bytes(&mut data)?;
        let stored_at = UNIX_EPOCH + Duration::from_millis(take_u64(&mut data)?);
        let mut durations = [Duration::ZERO; 4];
        for d in &mut durations {
            *d = Duration::from_millis(take_u64(&mut data)?);
        }
        if data.has_remaining() {
            return Err(DecodeError("trailing bytes"));
        }
        let [initial_age, fresh_for, stale_while_revalidate, stale_if_error] = durations;
        Ok(Entry {
            route,
            status,
            headers,
            body,
            stored_at,
            initial_age,
            fresh_for,
            stale_while_revalidate,
            stale_if_error,
        })
    }
}

const ENCODING_VERSION: u8 = 1;

/// Why bytes did not decode into an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stored response: {0}")]
pub struct DecodeError(&'static str);

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn take_bytes(data: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = take_u32(data)? as usize;
    if data.remaining() < len {
        return Err(DecodeError("truncated"));
    }
    Ok(data.split_to(len))
}

fn take_u8(data: &mut Bytes) -> Result<u8, DecodeError> {
    data.try_get_u8().map_err(|_| DecodeError("truncated"))
}

fn take_u16(data: &mut Bytes) -> Result<u16, DecodeError> {
    data.try_get_u16().map_err(|_| DecodeError("truncated"))
}

fn take_u32(data: &mut Bytes) -> Result<u32, DecodeError> {
    data.try_get_u32().map_err(|_| DecodeError("truncated"))
}

fn take_u64(data: &mut Bytes) -> Result<u64, DecodeError> {
    data.try_get_u64().map_err(|_| DecodeError("truncated"))
}

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    All,
    /// Every entry of the route with this name, whatever its identity.
    Route(String),
    /// Every entry of these route identities (routes a reload changed or removed, or whose
    /// entries the fleet purged).
    Routes(Vec<RouteId>),
}

/// Entries and bytes held, in total and per route name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
    pub routes: BTreeMap<Arc<str>, RouteUsage>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteUsage {
    pub entries: u64,
    pub bytes: u64,
}

/// A boxed future, so stores that wait on a network fit the same trait.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where entries are kept. Implementations bound their own memory and never fail a request:
/// a store that cannot answer returns `None` (a miss) and drops inserts.
pub trait Store: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Arc<Entry>>>;
    /// Stores `entry`. Called as a response body ends, so it does not wait: when it returns,
    /// a `get` in this process finds the entry (a shared store writes further on its own).
    fn insert(&self, key: CacheKey, entry: Arc<Entry>);
    /// Removes the entries `scope` names; returns how many.
    fn purge<'a>(&'a self, scope: &'a Purge) -> StoreFuture<'a, u64>;
    fn usage(&self) -> Usage;
}

/// The in-process store: a moka cache weighed in bytes, least recently used out first.
pub struct LocalStore {
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    max_bytes: u64,
    accounting: Arc<Accounting>,
}

/// Bytes held, kept exact by counting every insert and every removal moka reports.
struct Accounting {
    resident: AtomicU64,
    gauge: metrics::Gauge,
    evictions: metrics::Counter,
}

impl Accounting {
    fn add(&self, bytes: u64) {
        let now = self.resident.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.gauge.set(now as f64);
    }

    fn remove(&self, bytes: u64) {
        let before = self.resident.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.set(before.saturating_sub(bytes) as f64);
    }
}

/// Expires each entry once it is of no more use (fresh and stale windows both over).
struct Lifetimes;

impl moka::Expiry<CacheKey, Arc<Entry>> for Lifetimes {
    fn expire_after_create(&self, _: &CacheKey, entry: &Arc<Entry>, _: std::time::Instant) -> Option<Duration> {
        Some(entry.useful_for_from(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        entry: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.useful_for_from(SystemTime::now()))
    }
}

impl LocalStore {
    pub fn new(max_bytes: u64) -> LocalStore {
        let accounting = Arc::new(Accounting {
            resident: AtomicU64::new(0),
            gauge: metrics::gauge!("cache_bytes"),
            evictions: metrics::counter!("cache_evictions_total"),
        });
        accounting.gauge.set(0.0);
        let listener = Arc::clone(&accounting);
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, entry: &Arc<Entry>| u32::try_from(entry.weight()).unwrap_or(u32::MAX))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(Lifetimes)
            .eviction_listener(move |_key, entry: Arc<Entry>, cause| {
                listener.remove(entry.weight());
                if cause == RemovalCause::Size {
                    listener.evictions.increment(1);
                }
            })
            .build();
        LocalStore { entries, max_bytes, accounting }
    }

    /// Bytes held by stored entries right now.
    pub fn resident(&self) -> u64 {
        self.accounting.resident.load(Ordering::Acquire)
    }

    /// Removes the entries `scope` names, now; returns how many.
    pub fn purge_now(&self, scope: &Purge) -> u64 {
        let mut removed = 0;
        for (key, entry) in self.entries.iter() {
            let matches = match scope {
                Purge::All => true,
                Purge::Route(name) => *entry.route == **name,
                Purge::Routes(routes) => routes.contains(&key.route),
            };
            if matches && self.entries.remove(&*key).is_some() {
                removed += 1;
            }
        }
        self.entries.run_pending_tasks();
        removed
    }
}

impl Store for LocalStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Arc<Entry>>> {
        Box::pin(std::future::ready(self.entries.get(key)))
    }

    fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        self.accounting.add(entry.weight());
        self.entries.insert(key, entry);
        // moka evicts in batches; past the budget, evict now so memory never runs ahead of it.
        if self.resident() > self.max_bytes {
            self.entries.run_pending_tasks();
        }
    }

    fn purge<'a>(&'a self, scope: &'a Purge) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(self.purge_now(scope)))
    }

    fn usage(&self) -> Usage {
        self.entries.run_pending_tasks();
        let mut usage = Usage::default();
        for (_, entry) in self.entries.iter() {
            let weight = entry.weight();
            let route = usage.routes.entry(Arc::clone(&entry.route)).or_default();
            route.entries += 1;
            route.bytes += weight;
            usage.entries += 1;
            usage.bytes += weight;
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str, body: &'static [u8]) -> Arc<Entry> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        Arc::new(Entry {
            route: route.into(),
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            stored_at: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
            initial_age: Duration::from_secs(1),
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
        })
    }

    fn key(route: u8, n: u8) -> CacheKey {
        CacheKey { route: RouteId([route; 32]), digest: [n; 32] }
    }

    #[test]
    fn entries_encode_and_decode_to_the_same_value() {
        let e = entry("lookup", b"{\"id\": 1}");
        let decoded = Entry::decode(e.encode()).expect("decodes");
        assert_eq!(decoded, *e);
    }

    #[test]
    fn damaged_encodings_are_errors_not_panics() {
        let bytes = entry("lookup", b"body").encode();
        for cut in 0..bytes.len() {
            assert!(Entry::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = BytesMut::from(&bytes[..]);
        longer.put_u8(0);
        assert_eq!(Entry::decode(longer.freeze()), Err(DecodeError("trailing bytes")));
        let mut other_version = BytesMut::from(&bytes[..]);
        other_version[0] = 99;
        assert!(Entry::decode(other_version.freeze()).is_err());
        let huge_length = Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(Entry::decode(huge_length).is_err());
    }

    #[test]
    fn freshness_follows_age_and_windows() {
        let e = entry("r", b"");
        let at = |secs: u64| e.stored_at + Duration::from_secs(secs);
        assert_eq!(e.age(at(0)), Duration::from_secs(1), "the upstream's Age counts");
        assert_eq!(e.freshness(at(58)), Freshness::Fresh);
        assert_eq!(e.freshness(at(59)), Freshness::StaleWhileRevalidate);
        assert_eq!(e.freshness(at(68)), Freshness::StaleWhileRevalidate);
        assert_eq!(e.freshness(at(69)), Freshness::StaleIfError);
        assert_eq!(e.freshness(at(359)), Freshness::Expired);
        assert_eq!(e.useful_for(), Duration::from_secs(359));
        assert_eq!(e.freshness(e.stored_at - Duration::from_secs(5)), Freshness::Fresh, "a clock step back");
    }

    #[test]
    fn keys_print_as_route_and_hex_digest() {
        let text = key(7, 0xab).to_string();
        assert_eq!(text, format!("{}:{}", "07".repeat(8), "ab".repeat(32)));
    }

    #[test]
    fn an_entry_read_later_is_of_use_for_what_is_left_of_its_lifetime() {
        let e = entry("r", b"");
        assert_eq!(e.useful_for_from(e.stored_at), Duration::from_secs(359));
        assert_eq!(e.useful_for_from(e.stored_at + Duration::from_secs(300)), Duration::from_secs(59));
        assert_eq!(e.useful_for_from(e.stored_at + Duration::from_secs(400)), Duration::ZERO);
        assert_eq!(e.useful_for_from(e.stored_at - Duration::from_secs(5)), Duration::from_secs(359));
    }

    #[tokio::test]
    async fn the_local_store_stays_within_its_budget_and_accounts_every_byte() {
        let one = entry("r", &[0u8; 1000]).weight();
        let store = LocalStore::new(one * 10);
        for n in 0..50u8 {
            store.insert(key(1, n), entry("r", &[0u8; 1000]));
            assert!(store.resident() <= one * 10, "over budget after {n}: {}", store.resident());
        }
        let usage = store.usage();
        assert_eq!(usage.bytes, store.resident());
        assert!(usage.entries <= 10 && usage.entries >= 5, "{usage:?}");
        assert!(store.get(&key(1, 49)).await.is_some(), "the newest entry is kept");
        assert!(store.get(&key(1, 0)).await.is_none(), "the oldest was evicted");
    }

    #[tokio::test]
    async fn purges_remove_by_route_name_identity_or_all() {
        let store = LocalStore::new(1 << 20);
        store.insert(key(1, 1), entry("a", b"1"));
        store.insert(key(1, 2), entry("a", b"2"));
        store.insert(key(2, 3), entry("b", b"3"));
        store.insert(key(3, 4), entry("c", b"4"));
        assert_eq!(store.purge(&Purge::Route("a".into())).await, 2);
        assert!(store.get(&key(1, 1)).await.is_none());
        assert_eq!(store.purge(&Purge::Routes(vec![RouteId([2; 32])])).await, 1);
        assert!(store.get(&key(3, 4)).await.is_some());
        assert_eq!(store.purge(&Purge::All).await, 1);
        assert_eq!(store.usage(), Usage::default());
        assert_eq!(store.resident(), 0);
    }

    #[tokio::test]
    async fn replacing_an_entry_counts_only_the_new_one() {
        let store = LocalStore::new(1 << 20);
        store.insert(key(1, 1), entry("a", b"first"));
        store.insert(key(1, 1), entry("a", b"second, longer"));
        store.entries.run_pending_tasks();
        assert_eq!(store.resident(), entry("a", b"second, longer").weight());
        assert_eq!(store.get(&key(1, 1)).await.expect("kept").body, "second, longer");
    }
}
