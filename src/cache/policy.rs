//! HTTP caching semantics (RFC 9111) as they apply to a function-result cache: what a
//! request asks of the cache, whether a response may be stored, and for how long.
//!
//! Pure functions over headers, so every rule is tested here without a network.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

use crate::config::RouteCacheSettings;

/// What a request's `Cache-Control` (or `Pragma`) asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-store`: neither answer from nor store into the cache.
    pub no_store: bool,
    /// `no-cache` (or `Pragma: no-cache`, or `max-age=0`): go upstream, then store the answer.
    pub no_cache: bool,
    /// `max-age=N`: only a stored response at most this old will do.
    pub max_age: Option<Duration>,
}

impl RequestDirectives {
    pub fn of(headers: &HeaderMap) -> RequestDirectives {
        let mut out = RequestDirectives::default();
        let mut has_cache_control = false;
        for (name, value) in directives(headers) {
            has_cache_control = true;
            match name.as_str() {
                "no-store" => out.no_store = true,
                "no-cache" => out.no_cache = true,
                // An unreadable max-age asks for nothing stale: treat it as 0.
                "max-age" => {
                    let age = value.as_deref().and_then(seconds).unwrap_or(Duration::ZERO);
                    out.max_age = Some(out.max_age.map_or(age, |a| a.min(age)));
                }
                _ => {}
            }
        }
        if out.max_age == Some(Duration::ZERO) {
            out.no_cache = true;
        }
        // RFC 9111 5.4: Pragma counts only when there is no Cache-Control.
        if !has_cache_control {
            out.no_cache |= headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().split(|&b| b == b',').any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache")));
        }
        out
    }
}

/// Why a response was not stored (logged at debug level, and asserted by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The status is not in the route's `statuses`.
    Status,
    /// `Set-Cookie`: a session handed to one function must not reach another.
    SetCookie,
    /// `Cache-Control: no-store`, `private` or `no-cache`.
    CacheControl,
    /// `Vary: *`, or a `Vary` naming a request header that is not part of the key.
    Vary,
    /// A `Content-Encoding`: the body could not be checked for injected token values.
    Encoded,
    /// The body is larger than the route's `max_body`.
    TooLarge,
    /// Already stale when it arrived (`max-age=0`, an old `Age`, a past `Expires`).
    Stale,
}

/// How long a storable response stays fresh, and how it may be served once stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Freshness lifetime: the route's ttl, or less when the upstream says so.
    pub fresh_for: Duration,
    /// The age the response already had when it arrived (its `Age` header).
    pub initial_age: Duration,
    /// Whether it may be served stale (not `must-revalidate` / `proxy-revalidate`).
    pub may_serve_stale: bool,
}

/// Decides whether a response may be stored, before its body is read.
///
/// `covered` tells whether a request header's value is part of the cache key, for the
/// response's `Vary`.
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    settings: &RouteCacheSettings,
    now: SystemTime,
    covered: impl Fn(&HeaderName) -> bool,
) -> Result<Lifetime, NotStored> {
    if !settings.statuses.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity")) {
        return Err(NotStored::Encoded);
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > settings.max_body) {
        return Err(NotStored::TooLarge);
    }
    if !vary_is_covered(headers, covered) {
        return Err(NotStored::Vary);
    }
    let initial_age =
        headers.get(header::AGE).and_then(|v| v.to_str().ok()).and_then(seconds).unwrap_or(Duration::ZERO);
    if settings.ignore_cache_control {
        return match settings.ttl.checked_sub(initial_age) {
            Some(left) if !left.is_zero() => {
                Ok(Lifetime { fresh_for: settings.ttl, initial_age, may_serve_stale: true })
            }
            _ => Err(NotStored::Stale),
        };
    }
    let mut shared_max_age: Option<Duration> = None;
    let mut max_age: Option<Duration> = None;
    let mut may_serve_stale = true;
    for (name, value) in directives(headers) {
        match name.as_str() {
            "no-store" | "private" | "no-cache" => return Err(NotStored::CacheControl),
            "must-revalidate" | "proxy-revalidate" => may_serve_stale = false,
            // RFC 9111 4.2.1: an invalid or duplicated lifetime makes the response stale;
            // the shortest of several values is the safe reading.
            "s-maxage" => {
                let v = value.as_deref().and_then(seconds).unwrap_or(Duration::ZERO);
                shared_max_age = Some(shared_max_age.map_or(v, |a| a.min(v)));
            }
            "max-age" => {
                let v = value.as_deref().and_then(seconds).unwrap_or(Duration::ZERO);
                max_age = Some(max_age.map_or(v, |a| a.min(v)));
            }
            _ => {}
        }
    }
    let upstream_says = shared_max_age.or(max_age).or_else(|| expires_in(headers, now));
    let fresh_for = upstream_says.map_or(settings.ttl, |d| d.min(settings.ttl));
    if fresh_for <= initial_age {
        return Err(NotStored::Stale);
    }
    Ok(Lifetime { fresh_for, initial_age, may_serve_stale })
}

/// `Expires` minus `Date` (or now, without a usable `Date`); zero for an invalid `Expires`,
/// which RFC 9111 5.3 says means "already expired".
fn expires_in(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = expires.to_str().ok().and_then(|t| httpdate::parse_http_date(t).ok()) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|t| httpdate::parse_http_date(t).ok())
        .unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// Whether every header the response's `Vary` names is part of the key (`*` never is).
fn vary_is_covered(headers: &HeaderMap, covered: impl Fn(&HeaderName) -> bool) -> bool {
    for value in headers.get_all(header::VARY) {
        for name in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|n| !n.is_empty()) {
            if name == b"*" {
                return false;
            }
            match HeaderName::from_bytes(name) {
                Ok(name) if covered(&name) => {}
                _ => return false,
            }
        }
    }
    true
}

/// Every `Cache-Control` directive, lowercase name and unquoted value.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers.get_all(header::CACHE_CONTROL).iter().flat_map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        split_directives(&text)
    })
}

/// Splits `a, b=1, c="x, y"` into directives, respecting quoted strings.
fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut quoted = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("");
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"').to_string())),
            None => (item, None),
        };
        out.push((name.to_ascii_lowercase(), value));
    }
    out
}

/// Delta-seconds (RFC 9111 1.2.2): digits only; a value too large to hold is "forever".
fn seconds(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::from(u32::MAX))))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn settings() -> RouteCacheSettings {
        RouteCacheSettings {
            ttl: Duration::from_secs(60),
            methods: vec![http::Method::GET],
            vary: vec![],
            max_body: 1000,
            statuses: crate::config::DEFAULT_STATUSES.to_vec(),
            ignore_cache_control: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn decide(status: u16, pairs: &[(&str, &str)]) -> Result<Lifetime, NotStored> {
        decide_with(&settings(), status, pairs)
    }

    fn decide_with(s: &RouteCacheSettings, status: u16, pairs: &[(&str, &str)]) -> Result<Lifetime, NotStored> {
        let covered = |n: &HeaderName| n == "accept-language";
        storable(StatusCode::from_u16(status).unwrap(), &headers(pairs), s, SystemTime::now(), covered)
    }

    fn fresh_for(pairs: &[(&str, &str)]) -> Duration {
        decide(200, pairs).expect("storable").fresh_for
    }

    #[test]
    fn only_listed_statuses_are_stored() {
        for status in crate::config::DEFAULT_STATUSES {
            assert!(decide(status, &[]).is_ok(), "{status}");
        }
        for status in [201, 302, 400, 401, 403, 429, 500, 502, 503] {
            assert_eq!(decide(status, &[]), Err(NotStored::Status), "{status}");
        }
        let s = RouteCacheSettings { statuses: vec![201], ..settings() };
        assert!(decide_with(&s, 201, &[]).is_ok());
        assert_eq!(decide_with(&s, 200, &[]), Err(NotStored::Status));
    }

    #[test]
    fn cookies_no_store_private_and_no_cache_are_not_stored() {
        assert_eq!(decide(200, &[("set-cookie", "s=1")]), Err(NotStored::SetCookie));
        for cc in
            ["no-store", "private", "private=\"x\"", "no-cache", "max-age=60, No-Store", "public,no-cache=\"a, b\""]
        {
            assert_eq!(decide(200, &[("cache-control", cc)]), Err(NotStored::CacheControl), "{cc}");
        }
        assert!(decide(200, &[("cache-control", "public, max-age=30")]).is_ok());
        // A quoted comma is not a separator.
        assert!(decide(200, &[("cache-control", "ext=\"a, no-store\"")]).is_ok());
    }

    #[test]
    fn ignore_cache_control_stores_what_the_upstream_forbids_but_never_a_cookie() {
        let s = RouteCacheSettings { ignore_cache_control: true, ..settings() };
        let l = decide_with(&s, 200, &[("cache-control", "no-store, private, max-age=1, must-revalidate")]).unwrap();
        assert_eq!(l.fresh_for, Duration::from_secs(60));
        assert!(l.may_serve_stale);
        assert_eq!(decide_with(&s, 200, &[("set-cookie", "a=b")]), Err(NotStored::SetCookie));
    }

    #[test]
    fn a_shorter_upstream_lifetime_wins_and_a_longer_one_is_capped() {
        assert_eq!(fresh_for(&[]), Duration::from_secs(60));
        assert_eq!(fresh_for(&[("cache-control", "max-age=10")]), Duration::from_secs(10));
        assert_eq!(fresh_for(&[("cache-control", "max-age=3600")]), Duration::from_secs(60));
        assert_eq!(fresh_for(&[("cache-control", "max-age=30, s-maxage=5")]), Duration::from_secs(5));
        assert_eq!(
            fresh_for(&[("cache-control", "max-age=20"), ("cache-control", "max-age=7")]),
            Duration::from_secs(7)
        );
        assert_eq!(fresh_for(&[("cache-control", "max-age=99999999999999999999999")]), Duration::from_secs(60));
        for stale in ["max-age=0", "max-age=soon", "max-age=-1", "max-age"] {
            assert_eq!(decide(200, &[("cache-control", stale)]), Err(NotStored::Stale), "{stale}");
        }
    }

    #[test]
    fn expires_counts_from_date_when_there_is_no_max_age() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(fresh_for(&[("date", date), ("expires", "Sun, 06 Nov 1994 08:49:57 GMT")]), Duration::from_secs(20));
        assert_eq!(decide(200, &[("date", date), ("expires", date)]), Err(NotStored::Stale));
        assert_eq!(decide(200, &[("expires", "0")]), Err(NotStored::Stale), "an invalid Expires is already expired");
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(fresh_for(&[("expires", &later)]), Duration::from_secs(60), "capped by the ttl");
        assert_eq!(fresh_for(&[("cache-control", "max-age=9"), ("expires", "0")]), Duration::from_secs(9));
    }

    #[test]
    fn age_from_the_upstream_counts_against_freshness() {
        let l = decide(200, &[("age", "15")]).unwrap();
        assert_eq!((l.fresh_for, l.initial_age), (Duration::from_secs(60), Duration::from_secs(15)));
        assert_eq!(decide(200, &[("age", "60")]), Err(NotStored::Stale));
        assert_eq!(decide(200, &[("age", "5"), ("cache-control", "max-age=5")]), Err(NotStored::Stale));
        assert_eq!(decide(200, &[("age", "junk")]).unwrap().initial_age, Duration::ZERO);
    }

    #[test]
    fn must_revalidate_forbids_serving_stale() {
        assert!(decide(200, &[]).unwrap().may_serve_stale);
        assert!(!decide(200, &[("cache-control", "max-age=5, must-revalidate")]).unwrap().may_serve_stale);
        assert!(!decide(200, &[("cache-control", "proxy-revalidate")]).unwrap().may_serve_stale);
    }

    #[test]
    fn vary_must_name_only_headers_in_the_key() {
        assert!(decide(200, &[("vary", "Accept-Language")]).is_ok());
        assert!(decide(200, &[("vary", "accept-language, ")]).is_ok());
        assert_eq!(decide(200, &[("vary", "*")]), Err(NotStored::Vary));
        assert_eq!(decide(200, &[("vary", "Accept-Language, Origin")]), Err(NotStored::Vary));
        assert_eq!(decide(200, &[("vary", "Accept-Language"), ("vary", "User-Agent")]), Err(NotStored::Vary));
    }

    #[test]
    fn encoded_and_oversized_bodies_are_not_stored() {
        assert_eq!(decide(200, &[("content-encoding", "gzip")]), Err(NotStored::Encoded));
        assert!(decide(200, &[("content-encoding", "identity")]).is_ok());
        assert_eq!(decide(200, &[("content-length", "1001")]), Err(NotStored::TooLarge));
        assert!(decide(200, &[("content-length", "1000")]).is_ok());
    }

    #[test]
    fn request_directives() {
        let of = |pairs: &[(&str, &str)]| RequestDirectives::of(&headers(pairs));
        assert_eq!(of(&[]), RequestDirectives::default());
        assert!(of(&[("cache-control", "no-store")]).no_store);
        assert!(of(&[("cache-control", "No-Cache")]).no_cache);
        assert!(of(&[("cache-control", "max-age=0")]).no_cache);
        assert!(of(&[("pragma", "no-cache")]).no_cache);
        assert!(
            !of(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache,
            "Pragma only without Cache-Control"
        );
        assert_eq!(of(&[("cache-control", "max-age=5")]).max_age, Some(Duration::from_secs(5)));
        assert!(of(&[("cache-control", "max-age=x")]).no_cache);
    }
}
