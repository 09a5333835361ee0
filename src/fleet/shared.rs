//! The fleet's shared store: sealed values with a time to live, and short leases, in Redis.
//!
//! Generic on purpose: shared tokens and the shared function-result cache keep their values
//! the same way (a value under a name, sealed, with a TTL; a lease to coalesce work across
//! the fleet), each counting its operations under its own names (`get`, `cache_get` ...). Names are opaque: [`SharedStore::key`] turns whatever
//! identifies an entry into an HMAC under the fleet key, so Redis learns nothing from them.
//!
//! Every value written is sealed ([`super::seal`]) with its Redis key as associated data.
//! A value that does not open (plaintext, tampered, another fleet's, moved from another key)
//! is ignored, counted in `fleet_entries_rejected_total{reason}`, and reads as missing.

use std::sync::Arc;
use std::time::Duration;

use super::client::RedisClient;
use super::resp::Reply;
use super::seal::{Sealer, Unsealed};
use super::FleetError;

/// Deletes a key only if it still holds the given value: how a lease is released (only by
/// its holder) and how a rejected token is invalidated (only if no one replaced it yet).
const COMPARE_AND_DELETE: &[u8] =
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A value and whether a lease is held, in one round trip (a missing value reads as nil).
const GET_AND_EXISTS: &[u8] = b"return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}";

/// Bytes sealing adds to a value (format marker, nonce, tag), with room to spare.
const SEAL_OVERHEAD: usize = 64;

/// A value read from the store: the opened plaintext and the sealed bytes as stored (to
/// delete exactly this value later, with [`SharedStore::delete_if_unchanged`]).
#[derive(Clone)]
pub struct Entry {
    pub value: Vec<u8>,
    stored: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("len", &self.value.len()).finish_non_exhaustive()
    }
}

/// A lease held in Redis: the fencing value written, so only this holder releases it.
#[derive(Debug)]
pub struct Lease {
    key: String,
    fence: Vec<u8>,
}

/// Sealed values and leases under one key prefix.
#[derive(Debug)]
pub struct SharedStore {
    client: Arc<RedisClient>,
    sealer: Sealer,
    prefix: String,
}

impl SharedStore {
    pub fn new(client: Arc<RedisClient>, sealer: Sealer, prefix: String) -> SharedStore {
        SharedStore { client, sealer, prefix }
    }

    /// The Redis key for an entry of `kind` (`token`, `cache`, `lease:token` ...) identified by
    /// `identity`: `PREFIX` + `kind` + `:` + an HMAC of the identity under the fleet key.
    pub fn key(&self, kind: &str, identity: &[u8]) -> String {
        format!("{}{kind}:{}", self.prefix, self.sealer.name(identity))
    }

    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// Reads and opens the value at `key`; `None` if there is none or it was rejected.
    /// Values over `max_len` bytes are not read at all (and are rejected).
    pub async fn get(&self, key: &str, max_len: usize) -> Result<Option<Entry>, FleetError> {
        self.get_as("get", key, max_len).await
    }

    /// [`SharedStore::get`], counted as `op` in `fleet_operations_total` (each kind of value
    /// has its own operation names).
    pub async fn get_as(&self, op: &'static str, key: &str, max_len: usize) -> Result<Option<Entry>, FleetError> {
        let reply = match self.client.call(op, &[b"GET", key.as_bytes()], max_len + SEAL_OVERHEAD).await {
            Err(FleetError::Protocol(_)) => {
                reject(key, "oversized");
                return Ok(None);
            }
            other => other?,
        };
        self.open(key, reply)
    }

    /// Reads the value at `key` and whether `lease_key` is held, in one round trip: how a
    /// sidecar waiting for a peer's result tells "not yet" from "the peer gave up".
    pub async fn poll_as(
        &self,
        op: &'static str,
        key: &str,
        lease_key: &str,
        max_len: usize,
    ) -> Result<(Option<Entry>, bool), FleetError> {
        let args: [&[u8]; 5] = [b"EVAL", GET_AND_EXISTS, b"2", key.as_bytes(), lease_key.as_bytes()];
        let reply = match self.client.call(op, &args, max_len + SEAL_OVERHEAD).await {
            Err(FleetError::Protocol(_)) => {
                reject(key, "oversized");
                return Ok((None, true));
            }
            other => other?,
        };
        match reply {
            Reply::Array(Some(mut parts)) if parts.len() == 2 => {
                let leased = matches!(parts.pop(), Some(Reply::Integer(n)) if n > 0);
                let value = parts.pop().unwrap_or(Reply::Bulk(None));
                Ok((self.open(key, value)?, leased))
            }
            Reply::Error(e) => Err(FleetError::Refused(e)),
            _ => Err(FleetError::Protocol("unexpected answer to EVAL".into())),
        }
    }

    /// Opens a reply to a GET of `key`.
    fn open(&self, key: &str, reply: Reply) -> Result<Option<Entry>, FleetError> {
        let stored = match reply {
            Reply::Bulk(Some(v)) => v,
            Reply::Bulk(None) => return Ok(None),
            Reply::Error(e) => return Err(FleetError::Refused(e)),
            _ => {
                // A key of another type (a hash, a list) under our name: not ours.
                reject(key, "foreign");
                return Ok(None);
            }
        };
        match self.sealer.open(key.as_bytes(), &stored) {
            Ok(value) => Ok(Some(Entry { value, stored })),
            Err(Unsealed::Foreign) => {
                reject(key, "foreign");
                Ok(None)
            }
            Err(Unsealed::Tampered) => {
                reject(key, "tampered");
                Ok(None)
            }
        }
    }

    /// Seals `value` and stores it at `key` for `ttl` (at least a millisecond).
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), FleetError> {
        self.put_as("set", key, value, ttl).await
    }

    /// [`SharedStore::put`], counted as `op`.
    pub async fn put_as(&self, op: &'static str, key: &str, value: &[u8], ttl: Duration) -> Result<(), FleetError> {
        let sealed = self.sealer.seal(key.as_bytes(), value).map_err(FleetError::Refused)?;
        let ms = ttl.as_millis().max(1).to_string();
        let reply = self.client.call(op, &[b"SET", key.as_bytes(), &sealed, b"PX", ms.as_bytes()], 64).await?;
        expect_ok(reply)
    }

    /// Tries to take the lease at `key` for `ttl` (`SET NX PX` with a random fencing value).
    /// `None` when another holder has it.
    pub async fn lease(&self, key: &str, ttl: Duration) -> Result<Option<Lease>, FleetError> {
        self.lease_as("lease", key, ttl).await
    }

    /// [`SharedStore::lease`], counted as `op`.
    pub async fn lease_as(&self, op: &'static str, key: &str, ttl: Duration) -> Result<Option<Lease>, FleetError> {
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| FleetError::Refused("no random source".into()))?;
        let fence = self.sealer.seal(key.as_bytes(), &nonce).map_err(FleetError::Refused)?;
        let ms = ttl.as_millis().max(1).to_string();
        let reply = self.client.call(op, &[b"SET", key.as_bytes(), &fence, b"NX", b"PX", ms.as_bytes()], 64).await?;
        match reply {
            Reply::Status(s) if s == "OK" => Ok(Some(Lease { key: key.to_string(), fence })),
            Reply::Bulk(None) => Ok(None),
            Reply::Error(e) => Err(FleetError::Refused(e)),
            _ => Err(FleetError::Protocol("unexpected answer to SET NX".into())),
        }
    }

    /// Releases a lease if it is still this holder's (it may have lapsed and been taken).
    pub async fn release(&self, lease: Lease) -> Result<(), FleetError> {
        self.release_as("release", lease).await
    }

    /// [`SharedStore::release`], counted as `op`.
    pub async fn release_as(&self, op: &'static str, lease: Lease) -> Result<(), FleetError> {
        self.compare_and_delete(op, &lease.key, &lease.fence).await.map(|_| ())
    }

    /// Deletes `entry` from `key` unless it was replaced since it was read. True if deleted.
    pub async fn delete_if_unchanged(&self, key: &str, entry: &Entry) -> Result<bool, FleetError> {
        self.compare_and_delete("invalidate", key, &entry.stored).await
    }

    async fn compare_and_delete(&self, op: &'static str, key: &str, value: &[u8]) -> Result<bool, FleetError> {
        let reply = self.client.call(op, &[b"EVAL", COMPARE_AND_DELETE, b"1", key.as_bytes(), value], 64).await?;
        match reply {
            Reply::Integer(n) => Ok(n > 0),
            Reply::Error(e) => Err(FleetError::Refused(e)),
            _ => Err(FleetError::Protocol("unexpected answer to EVAL".into())),
        }
    }
}

fn expect_ok(reply: Reply) -> Result<(), FleetError> {
    match reply {
        Reply::Status(s) if s == "OK" => Ok(()),
        Reply::Error(e) => Err(FleetError::Refused(e)),
        _ => Err(FleetError::Protocol("unexpected answer to SET".into())),
    }
}

fn reject(key: &str, reason: &'static str) {
    metrics::counter!("fleet_entries_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(key, reason, "fleet: ignored an entry in Redis that was not sealed by this fleet");
}
