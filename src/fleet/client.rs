//! The Redis client every fleet feature goes through: a small pool of connections, a timeout
//! on every operation, and a health state that turns Redis trouble into fast local fallback.
//!
//! When an operation fails for want of Redis (refused, reset, timed out), Redis is marked down:
//! for a backoff period (0.5 s doubling to 5 s) operations fail at once without touching the
//! network, so a dead Redis costs requests nothing, and a background probe (`PING`) marks it
//! up again. Each change of state is logged once and shown by the `fleet_redis_up` gauge;
//! every operation is counted in `fleet_operations_total{op,result}`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::connection::Connection;
use super::resp::Reply;
use super::target::RedisTarget;
use super::FleetError;

/// Connections open at once; further operations wait (within their timeout) for one.
const MAX_OPEN: usize = 16;
/// Connections kept open between operations: all of them. The shared function-result cache
/// makes as many concurrent operations as the sidecar has concurrent lookups; keeping fewer
/// than it uses would close and reopen a connection on most operations (measured with 4 kept
/// at 16 concurrent cache hits: 2 connects for every 3 commands, and a third of the
/// throughput). Connections are only opened when operations overlap, so a sidecar that
/// shares tokens alone keeps one.
const MAX_IDLE: usize = MAX_OPEN;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often a healthy Redis is pinged, so the gauge is true between token refreshes.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Timeouts for talking to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect (TCP, TLS, AUTH, SELECT).
    pub connect: Duration,
    /// For one operation, from asking for a connection to the reply.
    pub operation: Duration,
}

#[derive(Debug)]
struct Health {
    /// `None` until the first operation ends either way.
    up: Option<bool>,
    /// While down: when the next attempt may touch the network.
    retry_at: Instant,
    backoff: Duration,
}

/// A pooled, health-tracked Redis client.
pub struct RedisClient {
    target: RedisTarget,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeouts: Timeouts,
    idle: Mutex<Vec<Connection>>,
    open: Semaphore,
    health: Mutex<Health>,
    prober: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        if let Some(handle) = self.prober.get_mut().ok().and_then(Option::take) {
            handle.abort();
        }
    }
}

impl RedisClient {
    /// A client for `target`; starts its health probe on the current runtime (it stops when
    /// the client is dropped). Connects lazily.
    pub fn start(target: RedisTarget, tls: Option<Arc<rustls::ClientConfig>>, timeouts: Timeouts) -> Arc<RedisClient> {
        let client = Arc::new(RedisClient {
            target,
            tls,
            timeouts,
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(MAX_OPEN),
            health: Mutex::new(Health { up: None, retry_at: Instant::now(), backoff: BACKOFF_START }),
            prober: Mutex::new(None),
        });
        let task = tokio::spawn(probe(Arc::downgrade(&client)));
        if let Ok(mut slot) = client.prober.lock() {
            *slot = Some(task.abort_handle());
        }
        client
    }

    /// Whether the last operation reached Redis (`None` before the first).
    pub fn is_up(&self) -> Option<bool> {
        self.health.lock().map(|h| h.up).unwrap_or(None)
    }

    /// Runs one command, counted as `op`. Bulk replies may be up to `max_bulk` bytes.
    pub async fn call(&self, op: &'static str, args: &[&[u8]], max_bulk: usize) -> Result<Reply, FleetError> {
        if !self.may_try() {
            count(op, "skipped");
            return Err(FleetError::Down);
        }
        let result = match tokio::time::timeout(self.timeouts.operation, self.call_pooled(args, max_bulk)).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::Timeout(self.timeouts.operation)),
        };
        match &result {
            // Redis answers, but not to us: this client cannot use it until the config changes.
            Ok(Reply::Error(e)) if is_access_error(e) => {
                self.mark(false, Some(&FleetError::Refused(e.clone())));
                count(op, "error");
            }
            Ok(Reply::Error(_)) => {
                // Redis answered: it is up, but refused this command.
                self.mark(true, None);
                count(op, "error");
            }
            Ok(_) => {
                self.mark(true, None);
                count(op, "ok");
            }
            // Redis sent something this client will not read (a value over the size bound):
            // that entry is bad, not Redis. The connection was dropped.
            Err(FleetError::Protocol(_)) => count(op, "error"),
            Err(e) => {
                self.mark(false, Some(e));
                count(op, if matches!(e, FleetError::Timeout(_)) { "timeout" } else { "unavailable" });
            }
        }
        result
    }

    async fn call_pooled(&self, args: &[&[u8]], max_bulk: usize) -> Result<Reply, FleetError> {
        let _permit = self.open.acquire().await.map_err(|_| FleetError::Down)?;
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = match connection.call(args, max_bulk).await {
            // A pooled connection may have been closed by Redis while idle (its `timeout`
            // setting, a restart): try once more on a new one.
            Err(FleetError::Unavailable(_)) if reused => {
                connection = self.connect().await?;
                connection.call(args, max_bulk).await?
            }
            other => other?,
        };
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
        Ok(reply)
    }

    async fn connect(&self) -> Result<Connection, FleetError> {
        tokio::time::timeout(self.timeouts.connect, Connection::open(&self.target, self.tls.as_ref()))
            .await
            .unwrap_or(Err(FleetError::Timeout(self.timeouts.connect)))
    }

    /// False while Redis is down and its backoff has not run out.
    fn may_try(&self) -> bool {
        self.health.lock().map(|h| h.up != Some(false) || Instant::now() >= h.retry_at).unwrap_or(true)
    }

    /// Records an outcome; logs and sets the gauge when the state changes.
    fn mark(&self, up: bool, error: Option<&FleetError>) {
        let Ok(mut health) = self.health.lock() else { return };
        let changed = health.up != Some(up);
        if up {
            health.backoff = BACKOFF_START;
        } else {
            health.retry_at = Instant::now() + health.backoff;
            health.backoff = (health.backoff * 2).min(BACKOFF_CAP);
            // Connections may be half-dead; start over when Redis is back.
            if let Ok(mut idle) = self.idle.lock() {
                idle.clear();
            }
        }
        health.up = Some(up);
        drop(health);
        if changed {
            metrics::gauge!("fleet_redis_up").set(if up { 1.0 } else { 0.0 });
            match error {
                None => {
                    tracing::info!(redis = %self.target, "fleet: Redis is reachable; sharing with the fleet")
                }
                Some(e) => tracing::warn!(
                    redis = %self.target,
                    error = %e,
                    "fleet: Redis is unavailable; exchanging tokens and caching locally until it is back"
                ),
            }
        }
    }
}

/// Errors that mean this client may not use Redis at all (a missing or wrong password, an ACL
/// user without the commands it needs), as opposed to one command going wrong.
fn is_access_error(e: &str) -> bool {
    ["NOAUTH", "WRONGPASS", "NOPERM"].iter().any(|code| e.starts_with(code))
}

fn count(op: &'static str, result: &'static str) {
    metrics::counter!("fleet_operations_total", "op" => op, "result" => result).increment(1);
}

/// Pings Redis: right away, then every [`PING_INTERVAL`] while up, or when the backoff runs
/// out while down, so recovery is noticed (and logged) without waiting for a token refresh.
async fn probe(client: Weak<RedisClient>) {
    loop {
        let Some(c) = client.upgrade() else { return };
        let _ = c.call("ping", &[b"PING"], 64).await;
        let wait = match c.health.lock() {
            Ok(h) if h.up == Some(false) => h.retry_at.saturating_duration_since(Instant::now()),
            _ => PING_INTERVAL,
        };
        drop(c);
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}
