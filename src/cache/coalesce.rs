//! Request coalescing: concurrent misses for one key make one upstream request.
//!
//! The first miss becomes the [`Leader`]; later ones [`Follower::wait`] until the leader
//! is done (its response stored, found unstorable, or abandoned) or a bounded wait passes,
//! then look again. The leader's guard releases them however it ends, dropped included, so
//! a leader that fails or whose client disconnects never strands its followers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::store::CacheKey;

type Flights = Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>;

/// The keys being fetched right now.
#[derive(Default)]
pub struct Coalescer {
    flights: Flights,
    /// Requests waiting for a leader right now.
    waiting: Arc<AtomicUsize>,
}

/// The one request fetching a key. Dropping it releases the followers.
pub struct Leader {
    key: CacheKey,
    flights: Flights,
    /// Dropped last: followers wake when the sender is gone.
    _done: watch::Sender<()>,
}

/// A request waiting for a leader.
pub struct Follower(watch::Receiver<()>, Arc<AtomicUsize>);

pub enum Join {
    Leader(Leader),
    Follower(Follower),
}

impl Coalescer {
    /// Leads the fetch of `key`, or follows the request already leading it.
    pub fn join(&self, key: CacheKey) -> Join {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = flights.get(&key) {
            return Join::Follower(Follower(running.clone(), Arc::clone(&self.waiting)));
        }
        let (done, watching) = watch::channel(());
        flights.insert(key, watching);
        Join::Leader(Leader { key, flights: Arc::clone(&self.flights), _done: done })
    }

    /// Leads the fetch of `key` unless another request already does.
    pub fn try_lead(&self, key: CacheKey) -> Option<Leader> {
        match self.join(key) {
            Join::Leader(leader) => Some(leader),
            Join::Follower(_) => None,
        }
    }

    /// Keys being fetched now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Requests waiting for another's fetch now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl Follower {
    /// Waits until the leader is done, at most `limit`; true if it finished in time.
    pub async fn wait(mut self, limit: Duration) -> bool {
        /// Counts the wait however it ends (a dropped request future included).
        struct Waiting(Arc<AtomicUsize>);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.1.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(Arc::clone(&self.1));
        // `changed` fails once the leader's sender is dropped: that is the signal.
        tokio::time::timeout(limit, async { while self.0.changed().await.is_ok() {} }).await.is_ok()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // Only our own flight: the map may already hold a newer leader's.
        if flights.get(&self.key).is_some_and(|r| r.same_channel(&self._done.subscribe())) {
            flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey { route: super::super::identity::RouteId([1; 32]), digest: [n; 32] }
    }

    #[tokio::test(start_paused = true)]
    async fn followers_wake_when_the_leader_is_done() {
        let c = Coalescer::default();
        let Join::Leader(leader) = c.join(key(1)) else { panic!("first is the leader") };
        let Join::Follower(follower) = c.join(key(1)) else { panic!("second follows") };
        assert!(matches!(c.join(key(2)), Join::Leader(_)), "other keys are independent");
        let waiting = tokio::spawn(follower.wait(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert_eq!((c.in_flight(), c.waiting()), (1, 1));
        drop(leader);
        assert!(waiting.await.unwrap(), "woken by the leader, not the timeout");
        assert_eq!((c.in_flight(), c.waiting()), (0, 0));
        assert!(matches!(c.join(key(1)), Join::Leader(_)), "a later miss leads again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_after_its_limit() {
        let c = Coalescer::default();
        let _leader = c.try_lead(key(1)).expect("leads");
        assert!(c.try_lead(key(1)).is_none());
        let Join::Follower(follower) = c.join(key(1)) else { panic!() };
        let started = tokio::time::Instant::now();
        assert!(!follower.wait(Duration::from_secs(2)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_follower_of_a_finished_leader_does_not_wait() {
        let c = Coalescer::default();
        let Join::Leader(leader) = c.join(key(1)) else { panic!() };
        let Join::Follower(follower) = c.join(key(1)) else { panic!() };
        drop(leader);
        assert!(follower.wait(Duration::from_secs(60)).await);
    }
}
