//! Shared exchanged tokens: the [`Mint`] that asks the fleet before asking the identity
//! provider.
//!
//! On a scheduled refresh (and at start) a sidecar reads the token's entry in Redis; if it
//! holds a token fresh beyond the refresh window, that is used and no exchange happens.
//! Otherwise one sidecar takes the token's lease and exchanges; the others poll for the new
//! entry (retrying the lease, so a holder that died is replaced once its lease lapses) for up
//! to `lease_wait`, then exchange themselves. An admin refresh exchanges at once and replaces
//! the entry; a 401 first deletes the entry if it still holds the rejected token, so the whole
//! fleet moves on from it, and then goes through the same steps.
//!
//! Whenever Redis fails, the sidecar exchanges locally, exactly as without a fleet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::shared::{Entry, SharedStore};
use super::FleetError;
use crate::store::{Mint, MintFuture, MintReason};
use crate::tokens::{MintError, MintedToken};

/// Largest token entry read back (a token answer is at most 1 MiB).
const MAX_ENTRY: usize = crate::exchange::MAX_ANSWER_BYTES + 4096;
/// How often a waiting sidecar looks for the lease holder's result.
const POLL: Duration = Duration::from_millis(100);

/// A token as stored in its (sealed) entry: what a peer needs to use it as its own.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    token: String,
    issued_at_ms: u64,
    expires_at_ms: u64,
    #[serde(default)]
    exposed: Vec<(String, String)>,
}

impl StoredToken {
    fn from_token(t: &MintedToken) -> Option<StoredToken> {
        Some(StoredToken {
            token: String::from_utf8(t.value.to_vec()).ok()?,
            issued_at_ms: millis(t.issued_at),
            expires_at_ms: millis(t.expires_at),
            exposed: t
                .exposed
                .iter()
                .map(|(f, v)| Some((f.to_string(), String::from_utf8(v.to_vec()).ok()?)))
                .collect::<Option<_>>()?,
        })
    }

    /// The token, if it is one a request may carry: printable, and not yet expired.
    fn into_token(self, expose: &[Box<str>]) -> Option<MintedToken> {
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(&self.token) || self.exposed.iter().any(|(_, v)| !v.bytes().all(|b| b.is_ascii_graphic())) {
            return None;
        }
        // The fields this sidecar exposes must all be there (the identity covers `expose`,
        // so they are, unless the entry was written by a different version).
        let exposed: Vec<(Box<str>, Bytes)> = expose
            .iter()
            .map(|field| {
                let (_, v) = self.exposed.iter().find(|(f, _)| **f == **field)?;
                Some((field.clone(), Bytes::from(v.clone())))
            })
            .collect::<Option<_>>()?;
        Some(MintedToken {
            value: Bytes::from(self.token),
            issued_at: UNIX_EPOCH + Duration::from_millis(self.issued_at_ms),
            expires_at: UNIX_EPOCH + Duration::from_millis(self.expires_at_ms),
            exposed,
        })
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Settings of the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub ttl: Duration,
    pub wait: Duration,
}

/// An exchanged token shared with the fleet.
pub struct SharedExchange {
    name: String,
    exchange: Arc<dyn Mint>,
    store: Arc<SharedStore>,
    entry_key: String,
    lease_key: String,
    lease: LeaseSettings,
    /// The field names this token exposes, which a shared entry must carry.
    expose: Vec<Box<str>>,
    source: Mutex<&'static str>,
}

impl SharedExchange {
    /// Shares `exchange` (the token's own [`crate::exchange::Exchanger`]) under `identity`.
    pub fn new(
        name: &str,
        exchange: Arc<dyn Mint>,
        store: Arc<SharedStore>,
        identity: &[u8; 32],
        expose: Vec<Box<str>>,
        lease: LeaseSettings,
    ) -> SharedExchange {
        SharedExchange {
            name: name.to_string(),
            entry_key: store.key("token", identity),
            lease_key: store.key("lease:token", identity),
            exchange,
            store,
            lease,
            expose,
            source: Mutex::new("exchange"),
        }
    }

    /// The Redis key of this token's entry (for tests and diagnostics; it reveals nothing).
    pub fn entry_key(&self) -> &str {
        &self.entry_key
    }

    fn set_source(&self, source: &'static str) {
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
        metrics::counter!("fleet_token_sources_total", "token" => self.name.clone(), "source" => source).increment(1);
    }

    /// The entry's token, if it is usable now: unexpired, fresh beyond the refresh window
    /// (with the refresher's jitter), and not the value an upstream just rejected.
    async fn read_fresh(&self, rejected: Option<&MintedToken>) -> Result<Option<MintedToken>, FleetError> {
        let Some(entry) = self.store.get(&self.entry_key, MAX_ENTRY).await? else { return Ok(None) };
        let Some(token) =
            serde_json::from_slice::<StoredToken>(&entry.value).ok().and_then(|s| s.into_token(&self.expose))
        else {
            metrics::counter!("fleet_entries_rejected_total", "reason" => "invalid").increment(1);
            tracing::warn!(token = %self.name, "fleet: the shared entry opened but holds no usable token; ignoring it");
            return Ok(None);
        };
        if rejected.is_some_and(|r| r.value == token.value) {
            return Ok(None);
        }
        let lead = self.exchange.refresh_before(&token).mul_f64(1.1);
        let fresh = token.expires_at.checked_sub(lead).is_some_and(|at| at > SystemTime::now());
        Ok(fresh.then_some(token))
    }

    /// Exchanges here and, unless `share` is false, writes the result for the fleet.
    async fn exchange_and_share(&self, share: bool) -> Result<MintedToken, MintError> {
        let token = Arc::clone(&self.exchange).mint(SystemTime::now()).await?;
        if share {
            if let Some(stored) = StoredToken::from_token(&token).and_then(|s| serde_json::to_vec(&s).ok()) {
                let ttl = token.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
                if !ttl.is_zero() {
                    if let Err(e) = self.store.put(&self.entry_key, &stored, ttl).await {
                        tracing::debug!(token = %self.name, error = %e, "fleet: could not share the new token");
                    }
                }
            }
        }
        Ok(token)
    }

    /// Exchanges locally because Redis failed.
    async fn fallback(&self, e: &FleetError) -> Result<MintedToken, MintError> {
        tracing::debug!(token = %self.name, error = %e, "fleet: exchanging locally");
        let token = Arc::clone(&self.exchange).mint(SystemTime::now()).await?;
        self.set_source("exchange_fallback");
        Ok(token)
    }

    async fn shared(&self, rejected: Option<Arc<MintedToken>>) -> Result<MintedToken, MintError> {
        if let Some(bad) = &rejected {
            // Take the rejected token out for the whole fleet, unless a peer already replaced it.
            match self.store.get(&self.entry_key, MAX_ENTRY).await {
                Ok(Some(entry)) if holds(&entry, bad) => {
                    if let Err(e) = self.store.delete_if_unchanged(&self.entry_key, &entry).await {
                        return self.fallback(&e).await;
                    }
                }
                Ok(_) => {}
                Err(e) => return self.fallback(&e).await,
            }
        }
        let rejected = rejected.as_deref();
        match self.read_fresh(rejected).await {
            Ok(Some(token)) => {
                self.set_source("shared");
                return Ok(token);
            }
            Ok(None) => {}
            Err(e) => return self.fallback(&e).await,
        }
        let deadline = tokio::time::Instant::now() + self.lease.wait;
        loop {
            match self.store.lease(&self.lease_key, self.lease.ttl).await {
                Err(e) => return self.fallback(&e).await,
                Ok(Some(lease)) => {
                    // A peer may have written a new entry and released between our read and
                    // our lease: look once more before exchanging.
                    let result = match self.read_fresh(rejected).await {
                        Ok(Some(token)) => {
                            self.set_source("shared");
                            Ok(token)
                        }
                        _ => {
                            let result = self.exchange_and_share(true).await;
                            if result.is_ok() {
                                self.set_source("exchange");
                            }
                            result
                        }
                    };
                    if let Err(e) = self.store.release(lease).await {
                        tracing::debug!(token = %self.name, error = %e, "fleet: could not release the lease");
                    }
                    return result;
                }
                Ok(None) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    token = %self.name,
                    waited = %humantime::format_duration(self.lease.wait),
                    "fleet: no peer shared a new token in time; exchanging here"
                );
                let result = self.exchange_and_share(true).await;
                if result.is_ok() {
                    self.set_source("exchange");
                }
                return result;
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
            match self.read_fresh(rejected).await {
                Ok(Some(token)) => {
                    self.set_source("shared");
                    return Ok(token);
                }
                Ok(None) => {}
                Err(e) => return self.fallback(&e).await,
            }
        }
    }

    async fn forced(&self) -> Result<MintedToken, MintError> {
        let result = self.exchange_and_share(true).await;
        if result.is_ok() {
            self.set_source("exchange");
        }
        result
    }
}

/// Whether `entry` holds the token `value` (an entry that does not parse holds nothing).
fn holds(entry: &Entry, token: &MintedToken) -> bool {
    serde_json::from_slice::<StoredToken>(&entry.value).is_ok_and(|s| s.token.as_bytes() == token.value)
}

impl Mint for SharedExchange {
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
        self.mint_for(now, MintReason::Scheduled)
    }

    fn mint_for(self: Arc<Self>, _now: SystemTime, reason: MintReason) -> MintFuture {
        Box::pin(async move {
            match reason {
                MintReason::Scheduled => self.shared(None).await,
                MintReason::Rejected(bad) => self.shared(Some(bad)).await,
                MintReason::Forced => self.forced().await,
            }
        })
    }

    fn refresh_before(&self, token: &MintedToken) -> Duration {
        self.exchange.refresh_before(token)
    }

    fn required_at_start(&self) -> bool {
        self.exchange.required_at_start()
    }

    fn renews_on_rejection(&self) -> bool {
        self.exchange.renews_on_rejection()
    }

    fn use_upstream(&self, upstream: &Arc<crate::proxy::upstream::Upstream>) {
        self.exchange.use_upstream(upstream);
    }

    fn source(&self) -> &'static str {
        self.source.lock().map(|s| *s).unwrap_or("exchange")
    }
}
