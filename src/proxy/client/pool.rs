//! Open upstream connections kept for reuse, per endpoint (scheme and authority).
//!
//! HTTP/1.1 connections wait in a stack (the most recently used is reused first, so the
//! rest age out when traffic drops); an h2 connection is shared by every request to its
//! endpoint. A connection idle for `pool_idle_timeout` is never reused, and a sweeper task
//! (running only while anything is pooled) closes such connections.
//!
//! One lock guards the pool; it is held for a hash probe and a push or pop, never across an
//! await, so the single-threaded default runtime never waits on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use super::super::ProxyBody;

/// Where a pooled connection goes: the endpoint's scheme and authority (compared without
/// regard to case, as hosts are).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub https: bool,
    pub authority: Authority,
}

/// A connection ready for one request.
pub enum Sender {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// The pooled connections of one client.
pub struct Pool {
    endpoints: Mutex<HashMap<Key, Arc<Slot>, rustc_hash::FxBuildHasher>>,
    idle_timeout: Duration,
    /// A sweeper task is running.
    sweeping: AtomicBool,
}

/// The pooled connections to one endpoint. A request holds its endpoint's slot from
/// checkout to the end of its response, so returning a connection needs no lookup.
pub struct Slot {
    endpoint: Mutex<Endpoint>,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Endpoint {
    /// Idle HTTP/1.1 connections, most recently returned last.
    idle: Vec<Idle>,
    /// The endpoint's h2 connection, shared by all requests.
    h2: Option<Shared>,
    /// Held while an h2 connection is being opened, so concurrent requests wait for it
    /// instead of each opening their own.
    h2_opening: Option<Arc<tokio::sync::Mutex<()>>>,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

struct Shared {
    sender: http2::SendRequest<ProxyBody>,
    /// Sweeps since a request last used it.
    unused_sweeps: u32,
}

/// Nothing panics while a pool lock is held; a poisoned lock still guards consistent data.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// An empty pool whose connections are dropped after `idle_timeout` unused.
    pub fn new(idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool { endpoints: Mutex::default(), idle_timeout, sweeping: AtomicBool::new(false) })
    }

    /// The slot of `key`'s endpoint (made on first use).
    pub fn slot(self: &Arc<Self>, key: &Key) -> Arc<Slot> {
        let mut endpoints = locked(&self.endpoints);
        if let Some(slot) = endpoints.get(key) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(Slot { endpoint: Mutex::default(), idle_timeout: self.idle_timeout });
        endpoints.insert(key.clone(), Arc::clone(&slot));
        drop(endpoints);
        self.sweep_later();
        slot
    }

    /// Starts the sweeper unless it runs (it ends when the pool is empty or dropped).
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let pool = Arc::downgrade(self);
        // Twice per timeout: a connection is closed between one and one and a half
        // timeouts after its last use.
        let period = (self.idle_timeout / 2).max(Duration::from_millis(50));
        runtime.spawn(sweep(pool, period));
    }

    /// Drops expired and closed connections, and endpoints with nothing pooled that no
    /// request holds; false when nothing is left to sweep.
    fn sweep_once(&self) -> bool {
        let now = Instant::now();
        let mut endpoints = locked(&self.endpoints);
        endpoints.retain(|_, slot| !slot.sweep(now) || Arc::strong_count(slot) > 1);
        if endpoints.is_empty() {
            // Stopped under the lock: a new slot after this starts a new sweeper.
            self.sweeping.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// How many idle HTTP/1.1 connections and shared h2 connections are pooled.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let endpoints = locked(&self.endpoints);
        let each = endpoints.values().map(|slot| {
            let endpoint = locked(&slot.endpoint);
            (endpoint.idle.len(), usize::from(endpoint.h2.is_some()))
        });
        each.fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

impl Slot {
    /// A pooled connection: the shared h2 one (unless `http1_only`), else the most recently
    /// returned idle HTTP/1.1 one that is ready. Closed and expired connections met on the
    /// way are dropped; ones not ready yet (their previous exchange is still finishing) stay
    /// pooled.
    pub fn checkout(&self, http1_only: bool) -> Option<Sender> {
        let mut endpoint = locked(&self.endpoint);
        if !http1_only {
            if let Some(shared) = &mut endpoint.h2 {
                if !shared.sender.is_closed() {
                    shared.unused_sweeps = 0;
                    return Some(Sender::Http2(shared.sender.clone()));
                }
                endpoint.h2 = None;
            }
        }
        let now = Instant::now();
        let mut not_ready = Vec::new();
        let mut found = None;
        while let Some(idle) = endpoint.idle.pop() {
            if idle.sender.is_closed() || now.saturating_duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            if idle.sender.is_ready() {
                found = Some(Sender::Http1(idle.sender));
                break;
            }
            not_ready.push(idle);
        }
        // Back in their order, below anything returned later.
        while let Some(idle) = not_ready.pop() {
            endpoint.idle.push(idle);
        }
        found
    }

    /// Returns an HTTP/1.1 connection whose exchange finished, for the next request.
    pub fn put(&self, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        locked(&self.endpoint).idle.push(Idle { sender, since: Instant::now() });
    }

    /// Makes `sender` the h2 connection requests share, unless a live one is there.
    pub fn share_h2(&self, sender: &http2::SendRequest<ProxyBody>) {
        let mut endpoint = locked(&self.endpoint);
        if endpoint.h2.as_ref().is_some_and(|s| !s.sender.is_closed()) {
            return;
        }
        endpoint.h2 = Some(Shared { sender: sender.clone(), unused_sweeps: 0 });
    }

    /// The lock a request holds while opening an h2 connection here.
    pub fn h2_opening(&self) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(locked(&self.endpoint).h2_opening.get_or_insert_with(Arc::default))
    }

    /// Drops expired and closed connections; true when nothing is left here.
    fn sweep(&self, now: Instant) -> bool {
        // An h2 connection unused for this many sweeps has been idle for a timeout.
        const H2_SWEEPS: u32 = 2;
        let mut endpoint = locked(&self.endpoint);
        endpoint.idle.retain(|i| !i.sender.is_closed() && now.saturating_duration_since(i.since) < self.idle_timeout);
        if let Some(shared) = &mut endpoint.h2 {
            shared.unused_sweeps += 1;
            if shared.sender.is_closed() || shared.unused_sweeps > H2_SWEEPS {
                endpoint.h2 = None;
            }
        }
        let opening = endpoint.h2_opening.as_ref().is_some_and(|lock| Arc::strong_count(lock) > 1);
        if !opening {
            endpoint.h2_opening = None;
        }
        endpoint.idle.is_empty() && endpoint.h2.is_none() && !opening
    }
}

async fn sweep(pool: Weak<Pool>, period: Duration) {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.sweep_once() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    fn key() -> Key {
        Key { https: false, authority: Authority::from_static("Example.com:80") }
    }

    /// An HTTP/1.1 sender over an in-memory pipe whose far end answers nothing.
    async fn sender() -> (http1::SendRequest<ProxyBody>, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1024);
        let (sender, conn) = http1::handshake(TokioIo::new(near)).await.unwrap();
        tokio::spawn(conn);
        (sender, far)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_reused_newest_first_until_they_expire() {
        let pool = Pool::new(Duration::from_secs(10));
        let (first, _a) = sender().await;
        let (second, _b) = sender().await;
        let slot = pool.slot(&key());
        slot.put(first);
        tokio::time::advance(Duration::from_secs(6)).await;
        slot.put(second);
        assert_eq!(pool.counts(), (2, 0));
        // Keys compare hosts without regard to case.
        let other_case = Key { https: false, authority: Authority::from_static("example.COM:80") };
        assert!(Arc::ptr_eq(&pool.slot(&other_case), &slot));
        assert!(matches!(slot.checkout(false), Some(Sender::Http1(_))));
        assert_eq!(pool.counts(), (1, 0), "the newest was taken");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(slot.checkout(false).is_none(), "the older one is past the idle timeout");
        assert_eq!(pool.counts(), (0, 0));
        let https = Key { https: true, ..key() };
        let (third, _c) = sender().await;
        slot.put(third);
        assert!(pool.slot(&https).checkout(false).is_none(), "another scheme is another endpoint");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_closes_expired_connections_and_stops_when_empty() {
        let pool = Pool::new(Duration::from_secs(10));
        let (sender, mut far) = sender().await;
        pool.slot(&key()).put(sender);
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert_eq!(pool.counts(), (0, 0));
        assert!(locked(&pool.endpoints).is_empty(), "the endpoint went with its last connection");
        assert!(!pool.sweeping.load(Ordering::Acquire), "the sweeper ended with the pool empty");
        // The connection was dropped: its far end reads the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(tokio::io::AsyncReadExt::read(&mut far, &mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn closed_connections_are_not_reused() {
        let pool = Pool::new(Duration::from_secs(10));
        let (sender, far) = sender().await;
        let slot = pool.slot(&key());
        slot.put(sender);
        drop(far);
        // The connection task sees the end of the stream and closes the sender.
        let deadline = Instant::now() + Duration::from_secs(5);
        let all_closed = |slot: &Slot| locked(&slot.endpoint).idle.iter().all(|i| i.sender.is_closed());
        while !all_closed(&slot) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(slot.checkout(false).is_none(), "a closed connection was handed out");
        assert_eq!(pool.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_connection_still_busy_stays_pooled_but_is_not_handed_out() {
        let pool = Pool::new(Duration::from_secs(10));
        let (mut sender, _far) = sender().await;
        // A request in flight: the connection is not ready for another.
        let request = http::Request::builder()
            .uri("/")
            .header("host", "example.com")
            .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap();
        let _pending = sender.send_request(request);
        tokio::task::yield_now().await;
        let slot = pool.slot(&key());
        slot.put(sender);
        assert!(slot.checkout(false).is_none());
        assert_eq!(pool.counts(), (1, 0));
    }
}
