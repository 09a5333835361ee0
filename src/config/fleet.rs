//! `[fleet]`: the Redis that sidecars share exchanged tokens through, and each token's
//! `shared` switch, checked when the config loads (the key is read, the URL parsed; Redis
//! itself is only contacted at run time, and its absence is never a config error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Collector;
use super::raw::RawConfig;
use super::validate::positive_duration;
use crate::fleet::seal::FleetKey;
use crate::fleet::target::RedisTarget;
use crate::tokens::TokenDefinition;

/// `[fleet]` as written.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub redis_url: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
    pub encryption_key: Option<Spanned<RawFleetKey>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub operation_timeout: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub lease_wait: Option<Spanned<String>>,
}

/// `[fleet.encryption_key]` (or `encryption_key = { key_env = "..." }`).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFleetKey {
    pub key_env: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

/// `[fleet]` after validation, with defaults filled in. Its `Debug` shows no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    pub redis: RedisTarget,
    /// Prepended to every Redis key, so several fleets (or other programs) share one Redis.
    pub key_prefix: String,
    pub encryption_key: FleetKey,
    /// The key file, watched for rotation like token keys.
    pub key_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    /// How long one sidecar may hold the right to exchange a shared token.
    pub lease_ttl: Duration,
    /// How long the others wait for its result before exchanging themselves.
    pub lease_wait: Duration,
}

impl FleetSettings {
    pub const DEFAULT_PREFIX: &'static str = "token-sidecar:";
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(15);
}

/// Checks `[fleet]`; problems go to `c`.
pub(super) fn settings(raw: &RawConfig, base_dir: &Path, c: &mut Collector<'_>) -> Option<FleetSettings> {
    let f = raw.fleet.as_ref()?;
    let r = f.get_ref();
    let before = c.len();
    let lookup = |k: &str| std::env::var(k).ok();
    let redis = match &r.redis_url {
        None => {
            c.error(f.span(), "fleet", "missing `redis_url` (such as \"redis://redis.fleet.svc:6379\")");
            None
        }
        Some(url) => {
            // The URL may hold a password: errors describe it, never quote it.
            match crate::tokens::jwt::expand_env_str(url.get_ref(), &lookup) {
                Err(_) => {
                    c.error(
                        url.span(),
                        "fleet.redis_url",
                        "a ${VAR} in the URL is unclosed or names an unset variable",
                    );
                    None
                }
                Ok(text) => RedisTarget::parse(&text).map_err(|e| c.error(url.span(), "fleet.redis_url", e)).ok(),
            }
        }
    };
    let key_prefix = match &r.key_prefix {
        None => FleetSettings::DEFAULT_PREFIX.to_string(),
        Some(p) if p.get_ref().bytes().all(|b| b.is_ascii_graphic()) && p.get_ref().len() <= 128 => p.get_ref().clone(),
        Some(p) => {
            c.error(p.span(), "fleet.key_prefix", "must be at most 128 printable characters, without spaces");
            String::new()
        }
    };
    let (encryption_key, key_file) = match &r.encryption_key {
        None => {
            c.error(
                f.span(),
                "fleet",
                "missing `encryption_key` (key_env or key_file holding 32 bytes, such as from \
                 `openssl rand -base64 32`; everything written to Redis is sealed with it)",
            );
            (None, None)
        }
        Some(k) => encryption_key(k, base_dir, c),
    };
    let connect_timeout =
        positive_duration(&r.connect_timeout, "fleet.connect_timeout", FleetSettings::DEFAULT_CONNECT_TIMEOUT, c);
    let operation_timeout =
        positive_duration(&r.operation_timeout, "fleet.operation_timeout", FleetSettings::DEFAULT_OPERATION_TIMEOUT, c);
    let lease_ttl = positive_duration(&r.lease_ttl, "fleet.lease_ttl", FleetSettings::DEFAULT_LEASE_TTL, c);
    let lease_wait = positive_duration(&r.lease_wait, "fleet.lease_wait", FleetSettings::DEFAULT_LEASE_WAIT, c);
    let settings = FleetSettings {
        redis: redis?,
        key_prefix,
        encryption_key: encryption_key?,
        key_file,
        connect_timeout,
        operation_timeout,
        lease_ttl,
        lease_wait,
    };
    (c.len() == before).then_some(settings)
}

fn encryption_key(
    k: &Spanned<RawFleetKey>,
    base_dir: &Path,
    c: &mut Collector<'_>,
) -> (Option<FleetKey>, Option<PathBuf>) {
    let r = k.get_ref();
    match (&r.key_env, &r.key_file) {
        (Some(var), None) => {
            let key = "fleet.encryption_key.key_env";
            match std::env::var_os(var.get_ref()) {
                Some(v) if !v.is_empty() => {
                    (FleetKey::parse(v.as_encoded_bytes(), false).map_err(|e| c.error(var.span(), key, e)).ok(), None)
                }
                _ => {
                    c.error(var.span(), key, format!("environment variable {} is not set or empty", var.get_ref()));
                    (None, None)
                }
            }
        }
        (None, Some(file)) => {
            let key = "fleet.encryption_key.key_file";
            let path = base_dir.join(file.get_ref());
            match std::fs::read(&path) {
                Ok(bytes) => (FleetKey::parse(&bytes, true).map_err(|e| c.error(file.span(), key, e)).ok(), Some(path)),
                Err(e) => {
                    c.error(file.span(), key, format!("cannot read {}: {e}", path.display()));
                    (None, Some(path))
                }
            }
        }
        _ => {
            c.error(k.span(), "fleet.encryption_key", "set exactly one of key_env and key_file");
            (None, None)
        }
    }
}

/// Checks each token's `shared` against its kind and `[fleet]`.
pub(super) fn check_shared(
    raw: &RawConfig,
    tokens: &BTreeMap<String, TokenDefinition>,
    fleet: Option<&FleetSettings>,
    c: &mut Collector<'_>,
) {
    for (name, raw_token) in &raw.tokens {
        let Some(shared) = &raw_token.get_ref().shared else { continue };
        let key = format!("tokens.{name}.shared");
        let Some(def) = tokens.get(name) else { continue };
        if !*shared.get_ref() {
            continue;
        }
        if def.exchange().is_none() {
            c.error(
                shared.span(),
                key,
                format!(
                    "only kind = \"oauth2\" tokens are shared; a {} token is {} by each sidecar itself \
                     (sharing it would save nothing and put it in Redis)",
                    def.kind_name(),
                    if def.kind_name() == "jwt" { "signed" } else { "read" }
                ),
            );
        } else if raw.fleet.is_some() && fleet.is_none() {
            // `[fleet]` has its own errors.
        } else if fleet.is_none() {
            c.error(shared.span(), key, "needs a [fleet] section (the Redis that sidecars share tokens through)");
        }
    }
}
