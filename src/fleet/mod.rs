//! Fleet mode: sidecars share exchanged tokens through Redis (or Valkey), so a thousand pods
//! cost an identity provider what one does.
//!
//! The parts, each usable on its own (the shared function-result cache will reuse all but the
//! last):
//! - [`target`]: `redis_url` parsed, the password kept out of every log;
//! - [`resp`] and [`connection`]: the Redis protocol, with bounded replies, over TCP or TLS;
//! - [`client`]: pooled connections, a timeout on every operation, health with backoff,
//!   `fleet_redis_up` and `fleet_operations_total`;
//! - [`seal`]: AES-256-GCM under the fleet key, bound to the Redis key;
//! - [`shared`]: sealed values with a TTL, and leases (`SET NX PX`, compare-and-delete);
//! - [`identity`] and [`tokens`]: what makes an exchanged token the same across sidecars, and
//!   the [`crate::store::Mint`] that reads the fleet's entry before exchanging.
//!
//! Redis is never needed for a request to succeed: every failure falls back to exchanging
//! locally, as a sidecar without a fleet does.

pub mod client;
pub mod connection;
pub mod identity;
pub mod resp;
pub mod seal;
pub mod shared;
pub mod target;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use crate::config::FleetSettings;
use client::{RedisClient, Timeouts};
use seal::Sealer;
use shared::SharedStore;

/// Why a fleet operation did not happen. Never holds a secret: no password, key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// Redis is marked down and its backoff has not run out; nothing was sent.
    #[error("Redis is unavailable (backing off)")]
    Down,
    #[error("Redis did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Connecting, TLS, authentication or the connection itself failed.
    #[error("{0}")]
    Unavailable(String),
    /// Redis answered with an error (`-ERR ...`), or a value could not be sealed.
    #[error("Redis refused: {0}")]
    Refused(String),
    /// Redis sent something this client does not accept (too large, malformed).
    #[error("unusable answer from Redis: {0}")]
    Protocol(String),
}

/// The running fleet: one Redis client and sealer for every shared token of a snapshot.
/// Kept across reloads that leave `[fleet]` and `extra_ca_file` unchanged.
#[derive(Debug)]
pub struct Fleet {
    pub settings: FleetSettings,
    pub store: Arc<SharedStore>,
    /// Digest of `extra_ca_file` as loaded for `rediss://`.
    pub ca_digest: [u8; 32],
}

impl Fleet {
    /// Starts the client (connecting lazily) on the current runtime.
    pub fn start(settings: &FleetSettings, extra_ca_file: &Option<std::path::PathBuf>) -> Result<Fleet, String> {
        let tls = match settings.redis.tls {
            true => Some(connection::tls_config(extra_ca_file.as_deref())?),
            false => None,
        };
        let timeouts = Timeouts { connect: settings.connect_timeout, operation: settings.operation_timeout };
        let client = RedisClient::start(settings.redis.clone(), tls, timeouts);
        let sealer = Sealer::new(&settings.encryption_key)?;
        let store = Arc::new(SharedStore::new(client, sealer, settings.key_prefix.clone()));
        let ca_digest = crate::reload::digest_files(extra_ca_file.as_slice());
        Ok(Fleet { settings: settings.clone(), store, ca_digest })
    }

    /// Whether this fleet can serve a config with `settings` and `extra_ca_file` as is.
    pub fn serves(&self, settings: &FleetSettings, extra_ca_file: &Option<std::path::PathBuf>) -> bool {
        self.settings == *settings
            && (!settings.redis.tls || self.ca_digest == crate::reload::digest_files(extra_ca_file.as_slice()))
    }
}
