//! `[cache]` and `[routes.cache]`: the function-result cache's settings, checked.
//!
//! Kept apart from the rest of validation so the cache's rules (which methods and statuses
//! can be stored, how sizes relate) read in one place.

use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::diagnostic::Collector;
use super::raw::{RawCache, RawRouteCache};
use super::validate::positive_size;
use super::values::{checked, parse_duration};

/// Where stored responses live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheBackend {
    /// In this process only.
    #[default]
    Local,
    /// In the fleet's Redis (`[fleet]`), shared by every sidecar, with the local store in
    /// front as a first tier.
    Redis,
}

/// `[cache]` after validation: limits shared by every cached route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub backend: CacheBackend,
    /// Bytes all stored responses may take together in this process (bodies, headers and
    /// bookkeeping); with the Redis backend, what the local first tier may hold.
    pub max_bytes: u64,
    /// How long concurrent misses for one key wait for the first one's response before
    /// going upstream themselves.
    pub coalesce_wait: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings { backend: CacheBackend::Local, max_bytes: 64 << 20, coalesce_wait: Duration::from_secs(5) }
    }
}

/// The statuses stored by default: those RFC 9110 calls heuristically cacheable, less 206
/// (partial content is never stored) and 308 (added later; list it to store it).
pub const DEFAULT_STATUSES: [u16; 10] = [200, 203, 204, 300, 301, 404, 405, 410, 414, 501];

/// `[routes.cache]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCacheSettings {
    /// Longest time a stored response is served without asking the upstream again; a
    /// shorter `max-age` from the upstream wins.
    pub ttl: Duration,
    /// Methods whose responses are stored: GET and HEAD by default, POST on request (keyed by
    /// its body).
    pub methods: Vec<Method>,
    /// Request headers whose values join the key, lowercase.
    pub vary: Vec<HeaderName>,
    /// Largest response body stored; larger ones stream through uncached.
    pub max_body: u64,
    /// Response statuses that may be stored.
    pub statuses: Vec<u16>,
    /// Store and serve responses whatever their `Cache-Control` says (`no-store`, `private`,
    /// `no-cache`, `max-age`, `must-revalidate`).
    pub ignore_cache_control: bool,
    /// After the ttl, how long a stored response is still served while one request
    /// refreshes it in the background.
    pub stale_while_revalidate: Duration,
    /// After the ttl, how long a stored response is served when the upstream fails.
    pub stale_if_error: Duration,
}

/// Methods a cache may store responses to: safe ones, and POST for RPC-style calls.
const CACHEABLE_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// `[cache]`, with defaults for what is not written. `fleet` says whether the config has a
/// `[fleet]` section, which the Redis backend needs.
pub(super) fn global(raw: Option<&Spanned<RawCache>>, fleet: bool, c: &mut Collector<'_>) -> CacheSettings {
    let d = CacheSettings::default();
    let Some(raw) = raw.map(Spanned::get_ref) else { return d };
    CacheSettings {
        backend: raw.backend.as_ref().map_or(d.backend, |b| backend(b, fleet, c)),
        max_bytes: positive_size(&raw.max_bytes, "cache.max_bytes", d.max_bytes, c),
        coalesce_wait: raw
            .coalesce_wait
            .as_ref()
            .map_or(d.coalesce_wait, |s| duration(s, "cache.coalesce_wait", d.coalesce_wait, true, c)),
    }
}

fn backend(b: &Spanned<String>, fleet: bool, c: &mut Collector<'_>) -> CacheBackend {
    match b.get_ref().as_str() {
        "local" => CacheBackend::Local,
        "redis" if fleet => CacheBackend::Redis,
        "redis" => {
            c.error(
                b.span(),
                "cache.backend",
                "\"redis\" needs a [fleet] section (the Redis and encryption key the fleet shares entries through)",
            );
            CacheBackend::Local
        }
        other => {
            c.error(
                b.span(),
                "cache.backend",
                format!("{other:?} is not a cache backend (expected \"local\" or \"redis\")"),
            );
            CacheBackend::Local
        }
    }
}

/// `[routes.cache]` of the route at `prefix` (`routes[N]`).
pub(super) fn route(
    prefix: &str,
    raw: &Spanned<RawRouteCache>,
    global: &CacheSettings,
    c: &mut Collector<'_>,
) -> RouteCacheSettings {
    let key = |k: &str| format!("{prefix}.cache.{k}");
    let r = raw.get_ref();
    let ttl = duration(&r.ttl, &key("ttl"), Duration::from_secs(1), true, c);
    let methods = match &r.methods {
        None => vec![Method::GET, Method::HEAD],
        Some(list) => list.iter().filter_map(|m| method(m, &key("methods"), c)).collect(),
    };
    let vary = r
        .vary
        .iter()
        .filter_map(|v| {
            HeaderName::from_bytes(v.get_ref().as_bytes())
                .map_err(|_| {
                    c.error(v.span(), key("vary"), format!("{:?} is not a valid HTTP header name", v.get_ref()))
                })
                .ok()
        })
        .collect();
    let max_body = positive_size(&r.max_body, &key("max_body"), 1 << 20, c);
    if max_body > MAX_BODY {
        let span = r.max_body.as_ref().map_or(raw.span(), Spanned::span);
        c.error(span, key("max_body"), "must be at most 1GiB: a function result is a small answer, held in memory");
    } else if max_body > global.max_bytes {
        let span = r.max_body.as_ref().map_or(raw.span(), Spanned::span);
        c.error(
            span,
            key("max_body"),
            format!(
                "{max_body} bytes is more than [cache] max_bytes ({}): no response this size could be stored",
                global.max_bytes
            ),
        );
    }
    let statuses = match &r.statuses {
        None => DEFAULT_STATUSES.to_vec(),
        Some(list) => list.iter().filter_map(|s| status(s, &key("statuses"), c)).collect(),
    };
    let window = |v: &Option<Spanned<String>>, name: &str, c: &mut Collector<'_>| {
        v.as_ref().map_or(Duration::ZERO, |s| duration(s, &key(name), Duration::ZERO, false, c))
    };
    RouteCacheSettings {
        ttl,
        methods,
        vary,
        max_body,
        statuses,
        ignore_cache_control: r.ignore_cache_control.as_ref().is_some_and(|b| *b.get_ref()),
        stale_while_revalidate: window(&r.stale_while_revalidate, "stale_while_revalidate", c),
        stale_if_error: window(&r.stale_if_error, "stale_if_error", c),
    }
}

fn method(m: &Spanned<String>, key: &str, c: &mut Collector<'_>) -> Option<Method> {
    let upper = m.get_ref().to_ascii_uppercase();
    match CACHEABLE_METHODS.iter().find(|known| known.as_str() == upper) {
        Some(known) => Some(known.clone()),
        None => {
            c.error(m.span(), key, format!("{:?} responses are not stored (expected GET, HEAD or POST)", m.get_ref()));
            None
        }
    }
}

fn status(s: &Spanned<i64>, key: &str, c: &mut Collector<'_>) -> Option<u16> {
    let code = *s.get_ref();
    let refusal = match code {
        206 => Some("206 partial content is never stored (range requests bypass the cache)"),
        304 => Some("304 not modified has no body to store"),
        200..=599 => None,
        _ => Some("expected a final HTTP status from 200 to 599"),
    };
    match refusal {
        None => u16::try_from(code).ok(),
        Some(message) => {
            c.error(s.span(), key, format!("{code}: {message}"));
            None
        }
    }
}

/// Largest body one entry may hold.
const MAX_BODY: u64 = 1 << 30;

/// Longest ttl or stale window: past a year, "forever" is what is meant, and expiry
/// arithmetic stays far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration(s: &Spanned<String>, key: &str, default: Duration, positive: bool, c: &mut Collector<'_>) -> Duration {
    let refuse = |d: &Duration| {
        if positive && d.is_zero() {
            Some("must be longer than zero")
        } else if *d > MAX_DURATION {
            Some("must be at most a year (\"365d\")")
        } else {
            None
        }
    };
    checked(s, key, parse_duration, refuse, c).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const ROUTE: &str = "[[routes]]\nname = \"lookup\"\nhost = \"api.example.com\"\n";

    fn config(text: &str) -> Result<Config, crate::config::ConfigErrors> {
        Config::from_text(Path::new("/tmp/sidecar.toml"), text)
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let c = config(&format!("{ROUTE}[routes.cache]\nttl = \"60s\"\n")).expect("valid");
        assert_eq!(c.cache, CacheSettings::default());
        assert_eq!(c.cache.max_bytes, 64 << 20);
        let rc = c.routes[0].cache.as_ref().expect("the route is cached");
        assert_eq!(rc.ttl, Duration::from_secs(60));
        assert_eq!(rc.methods, [Method::GET, Method::HEAD]);
        assert_eq!(rc.statuses, DEFAULT_STATUSES);
        assert_eq!(rc.max_body, 1 << 20);
        assert!(rc.vary.is_empty() && !rc.ignore_cache_control);
        assert_eq!((rc.stale_while_revalidate, rc.stale_if_error), (Duration::ZERO, Duration::ZERO));
        assert!(config(ROUTE).expect("valid").routes[0].cache.is_none(), "no [routes.cache], no caching");
    }

    #[test]
    fn every_key_is_read() {
        let text = format!(
            "[cache]\nbackend = \"local\"\nmax_bytes = \"8MiB\"\ncoalesce_wait = \"2s\"\n{ROUTE}[routes.cache]\nttl = \"5m\"\n\
             methods = [\"get\", \"POST\"]\nvary = [\"Accept-Language\"]\nmax_body = \"64KiB\"\nstatuses = [200, 404]\n\
             ignore_cache_control = true\nstale_while_revalidate = \"30s\"\nstale_if_error = \"1h\"\n"
        );
        let c = config(&text).expect("valid");
        assert_eq!(
            c.cache,
            CacheSettings { backend: CacheBackend::Local, max_bytes: 8 << 20, coalesce_wait: Duration::from_secs(2) }
        );
        let rc = c.routes[0].cache.clone().expect("cached");
        assert_eq!(rc.methods, [Method::GET, Method::POST]);
        assert_eq!(rc.vary, [HeaderName::from_static("accept-language")]);
        assert_eq!((rc.max_body, rc.statuses.clone()), (64 << 10, vec![200, 404]));
        assert!(rc.ignore_cache_control);
        assert_eq!(rc.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(rc.stale_if_error, Duration::from_secs(3600));
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_key() {
        let text = format!(
            "[cache]\nbackend = \"memcached\"\nmax_bytes = \"1MiB\"\ncoalesce_wait = \"0s\"\n{ROUTE}[routes.cache]\nttl = \"soon\"\n\
             methods = [\"GET\", \"DELETE\"]\nvary = [\"bad header\"]\nmax_body = \"2MiB\"\nstatuses = [200, 206, 304, 99]\n\
             stale_if_error = \"400d\"\n"
        );
        let errors = config(&text).expect_err("rejected");
        let keys: Vec<&str> = errors.0.iter().map(|d| d.key_path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cache.backend",
                "cache.coalesce_wait",
                "routes[0].cache.ttl",
                "routes[0].cache.methods",
                "routes[0].cache.vary",
                "routes[0].cache.max_body",
                "routes[0].cache.statuses",
                "routes[0].cache.statuses",
                "routes[0].cache.statuses",
                "routes[0].cache.stale_if_error",
            ],
            "{errors}"
        );
        let text = errors.to_string();
        assert!(text.contains("\"DELETE\" responses are not stored"), "{text}");
        assert!(text.contains("206 partial content"), "{text}");
        assert!(text.contains("more than [cache] max_bytes"), "{text}");
        assert!(text.contains("\"memcached\" is not a cache backend"), "{text}");
    }

    #[test]
    fn the_redis_backend_needs_a_fleet() {
        let errors = config(&format!("[cache]\nbackend = \"redis\"\n{ROUTE}")).expect_err("rejected");
        assert_eq!(errors.0.len(), 1, "{errors}");
        let d = &errors.0[0];
        assert_eq!(d.key_path, "cache.backend");
        let text = errors.to_string();
        assert!(text.contains("sidecar.toml:2:11") && text.contains("needs a [fleet] section"), "{text}");
    }

    #[test]
    fn a_missing_ttl_and_an_unknown_key_are_structural_errors() {
        let huge = config(&format!(
            "[cache]\nmax_bytes = \"8GiB\"\n{ROUTE}[routes.cache]\nttl = \"1m\"\nmax_body = \"2GiB\"\n"
        ));
        assert!(huge.expect_err("rejected").to_string().contains("at most 1GiB"));
        let errors = config(&format!("{ROUTE}[routes.cache]\nmax_age = \"1m\"\n")).expect_err("rejected");
        let keys: Vec<&str> = errors.0.iter().map(|d| d.key_path.as_str()).collect();
        assert_eq!(keys, ["routes[0].cache.ttl", "routes[0].cache.max_age"], "{errors}");
    }
}
