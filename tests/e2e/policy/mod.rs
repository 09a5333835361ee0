//! Issue 13, egress policy: address rules on resolved addresses ([`networks`]), host rules for
//! unrouted traffic ([`hosts`]), caller identity ([`callers`]), where a token may be written
//! ([`positions`]), the audit log ([`audit`]), rate limits ([`rate_limits`]) and the effective
//! policy `check` prints ([`check`]).
//!
//! Every request goes to loopback only: deny rules are shown with `deny_networks =
//! ["loopback"]` against 127.0.0.2 and names that resolve to 127.0.0.1 (`localhost`), and the
//! cloud metadata and link-local classes are covered by the classifier's unit tests.

mod audit;
mod callers;
mod check;
mod hosts;
mod networks;
mod positions;
mod rate_limits;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

/// A listener on 127.0.0.2 that only counts the connections it accepts (and closes them): a
/// count of zero proves a denied request never reached the address, not even a TCP handshake.
pub struct Sentinel {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::AbortHandle,
}

impl Sentinel {
    pub async fn start() -> Sentinel {
        let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
        let addr = listener.local_addr().expect("sentinel addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        })
        .abort_handle();
        Sentinel { addr, accepted, task }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `[policy]` with `keys` (TOML lines).
pub fn policy(keys: &str) -> String {
    format!("\n[policy]\n{keys}\n\n")
}
