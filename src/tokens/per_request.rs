//! Tokens signed for each request (`per_request = true`): claims and header fields derived
//! from the request itself, for APIs that want a JWT covering the call (Atlassian Connect's
//! `qsh`, Coinbase's `uri`), which cannot be signed ahead.
//!
//! A per-request token is signed when its placeholder is first written into the request's
//! headers, once per request, with the key prepared when the config loaded. It can only be
//! written into headers: its claims cover the target and body, which a token inside them
//! would change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Uri};
use serde_json::{Map, Value};
use toml::Spanned;

use super::algorithm::{algorithm_name, Algorithm};
use super::qsh::{hex, query_string_hash};
use super::{base64url, BuildContext, MintError};
use crate::config::raw::RawToken;
use crate::config::Collector;

/// A value derived from the request, for `[request_claims]` and `[request_header]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Derived {
    /// The method, upper case: `GET`.
    Method,
    /// The upstream URL: `https://api.example.com/v1/items?limit=5` (default port left out).
    Url,
    /// The host, with the port when it is not the scheme's default: `api.example.com`.
    Host,
    /// The path as sent: `/v1/items`.
    Path,
    /// Atlassian Connect's query string hash of method, path and query.
    QueryHashAtlassian,
    /// Lowercase hex SHA-256 of the body as sent (after substitution).
    BodySha256,
    /// Coinbase's `METHOD host/path`: `GET api.coinbase.com/api/v3/brokerage/accounts`.
    UriCoinbase,
    /// base64url SHA-256 of the access token in the request's `Authorization` header (the
    /// credential after the scheme), as RFC 9449 `ath`.
    Ath,
    /// 16 random bytes in hex, new for every request (Coinbase's header `nonce`).
    Nonce,
}

pub const DERIVED: [(&str, Derived); 9] = [
    ("method", Derived::Method),
    ("url", Derived::Url),
    ("host", Derived::Host),
    ("path", Derived::Path),
    ("query_hash_atlassian", Derived::QueryHashAtlassian),
    ("body_sha256", Derived::BodySha256),
    ("uri_coinbase", Derived::UriCoinbase),
    ("ath", Derived::Ath),
    ("nonce", Derived::Nonce),
];

impl Derived {
    pub fn parse(name: &str) -> Option<Derived> {
        DERIVED.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }
}

/// Why a per-request token could not be signed for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeriveError {
    /// `body_sha256` for a body that was not read whole.
    BodyNotBuffered,
    /// `ath` without an access token in `Authorization`.
    NoAccessToken,
}

/// What a per-request token is signed over, taken from the request as it will be sent.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub method: Method,
    /// The upstream URI, absolute.
    pub uri: Uri,
    /// The `Authorization` header as it will be sent (placeholders of other tokens filled in).
    pub authorization: Option<Vec<u8>>,
    /// SHA-256 of the body as it will be sent, when it was read whole first.
    pub body_sha256: Option<[u8; 32]>,
}

impl RequestFacts {
    /// `host[:port]`, the port only when it is not the scheme's default.
    pub fn host(&self) -> String {
        let host = self.uri.host().unwrap_or_default();
        let default = if self.uri.scheme_str() == Some("http") { 80 } else { 443 };
        match self.uri.port_u16() {
            Some(port) if port != default => format!("{host}:{port}"),
            _ => host.to_string(),
        }
    }

    /// The URL without query and fragment, as RFC 9449 `htu`.
    pub fn url_without_query(&self) -> String {
        format!("{}://{}{}", self.uri.scheme_str().unwrap_or("https"), self.host(), self.uri.path())
    }

    /// The access token of `Authorization: SCHEME TOKEN`.
    pub fn access_token(&self) -> Option<&[u8]> {
        let value = self.authorization.as_deref()?;
        let token = match memchr::memchr(b' ', value) {
            Some(space) => &value[space + 1..],
            None => value,
        };
        let token = token.trim_ascii();
        (!token.is_empty()).then_some(token)
    }

    fn value(&self, derived: Derived, context_path: Option<&str>) -> Result<Value, DeriveError> {
        Ok(Value::String(match derived {
            Derived::Method => self.method.as_str().to_ascii_uppercase(),
            Derived::Url => {
                let query = self.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                format!("{}{query}", self.url_without_query())
            }
            Derived::Host => self.host(),
            Derived::Path => self.uri.path().to_string(),
            Derived::QueryHashAtlassian => {
                query_string_hash(self.method.as_str(), self.uri.path(), self.uri.query(), context_path)
            }
            Derived::BodySha256 => hex(&self.body_sha256.ok_or(DeriveError::BodyNotBuffered)?),
            Derived::UriCoinbase => {
                format!("{} {}{}", self.method.as_str().to_ascii_uppercase(), self.host(), self.uri.path())
            }
            Derived::Ath => sha256_b64url(self.access_token().ok_or(DeriveError::NoAccessToken)?),
            Derived::Nonce => hex(&rand::random::<[u8; 16]>()),
        }))
    }
}

/// base64url SHA-256, as `ath`.
pub fn sha256_b64url(bytes: &[u8]) -> String {
    base64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The per-request part of a jwt token: which claims and header fields come from the request.
#[derive(Debug, Clone)]
pub struct PerRequest {
    pub claims: Vec<(String, Derived)>,
    pub header: Vec<(String, Derived)>,
    /// Dropped from the path before `query_hash_atlassian`.
    pub context_path: Option<String>,
}

impl PerRequest {
    /// Whether the token needs the body's hash (so the body is read before the headers).
    pub fn needs_body(&self) -> bool {
        self.claims.iter().chain(&self.header).any(|(_, d)| *d == Derived::BodySha256)
    }

    /// The request-derived claims, added to the token's own.
    pub fn claims(&self, facts: &RequestFacts, claims: &mut Map<String, Value>) -> Result<(), DeriveError> {
        for (name, derived) in &self.claims {
            claims.insert(name.clone(), facts.value(*derived, self.context_path.as_deref())?);
        }
        Ok(())
    }

    /// The request-derived header fields.
    pub fn header(&self, facts: &RequestFacts) -> Result<Map<String, Value>, DeriveError> {
        let mut out = Map::new();
        for (name, derived) in &self.header {
            out.insert(name.clone(), facts.value(*derived, self.context_path.as_deref())?);
        }
        Ok(out)
    }

    /// Facts for the test signature made when the config loads.
    pub fn sample_facts() -> RequestFacts {
        RequestFacts {
            method: Method::GET,
            uri: Uri::from_static("https://example.invalid/check?a=1"),
            authorization: Some(b"Bearer sample".to_vec()),
            body_sha256: Some([0; 32]),
        }
    }
}

/// Whole seconds since the epoch.
pub fn unix_seconds(now: SystemTime) -> Result<u64, MintError> {
    Ok(now.duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs())
}

/// A signed value and when it expires.
pub fn expiry(iat: u64, ttl: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(iat) + Duration::from_secs(ttl.as_secs())
}

/// Checks the per-request settings of a jwt token: `None` when it is not per-request (its
/// per-request-only fields are then errors). `algorithm` decides whether it is fast enough.
pub fn build(
    ctx: &BuildContext<'_>,
    raw: &Spanned<RawToken>,
    algorithm: Option<Algorithm>,
    auto: &super::jwt::AutoClaims,
    c: &mut Collector<'_>,
) -> Option<PerRequest> {
    let r = raw.get_ref();
    let at = |field: &str| format!("{}.{field}", ctx.key_path);
    let enabled = r.per_request.as_ref().is_some_and(|p| *p.get_ref());
    if !enabled {
        let only = [
            ("request_claims", r.request_claims.values().next().map(Spanned::span)),
            ("request_header", r.request_header.values().next().map(Spanned::span)),
            ("context_path", r.context_path.as_ref().map(Spanned::span)),
            ("allow_slow_signing", r.allow_slow_signing.as_ref().map(Spanned::span)),
        ];
        for (field, span) in only {
            if let Some(span) = span {
                c.error(span, at(field), "applies only with per_request = true (a token signed for each request)");
            }
        }
        return None;
    }
    if let Some(rb) = &r.refresh_before {
        c.error(
            rb.span(),
            at("refresh_before"),
            "does not apply to a per_request token: it is signed for each request",
        );
    }
    check_fast(ctx, algorithm, r.allow_slow_signing.as_ref(), r.algorithm.as_ref().map(Spanned::span), c);
    let derived = |table: &str,
                   entries: &std::collections::BTreeMap<String, Spanned<String>>,
                   c: &mut Collector<'_>| {
        let mut out = Vec::new();
        for (name, value) in entries {
            match Derived::parse(value.get_ref()) {
                Some(d) => out.push((name.clone(), d)),
                None => {
                    let known: Vec<&str> = DERIVED.iter().map(|(n, _)| *n).collect();
                    c.error(
                        value.span(),
                        format!("{}.{table}.{name}", ctx.key_path),
                        format!("unknown request value {:?} (expected one of {})", value.get_ref(), known.join(", ")),
                    );
                }
            }
        }
        out
    };
    let claims = derived("request_claims", &r.request_claims, c);
    let header = derived("request_header", &r.request_header, c);
    for (name, value) in &r.request_claims {
        if auto.contains(name) || r.claims.contains_key(name) {
            c.error(
                value.span(),
                format!("{}.request_claims.{name}", ctx.key_path),
                format!("`{name}` is also set in [claims] or auto_claims; keep one"),
            );
        }
    }
    for (name, value) in &r.request_header {
        if matches!(name.as_str(), "alg" | "typ" | "kid" | "crit") || r.header.contains_key(name) {
            c.error(
                value.span(),
                format!("{}.request_header.{name}", ctx.key_path),
                format!("`{name}` cannot come from the request (it is fixed, or set in [header])"),
            );
        }
    }
    let context_path = r.context_path.as_ref().map(|p| p.get_ref().clone());
    if let Some(p) = &r.context_path {
        if !p.get_ref().starts_with('/') {
            c.error(
                p.span(),
                at("context_path"),
                "must start with `/` (the path of the app's base URL, such as \"/wiki\")",
            );
        }
    }
    Some(PerRequest { claims, header, context_path })
}

/// Signing on the request path must be cheap: RSA and the larger curves only with
/// `allow_slow_signing = true`.
pub fn check_fast(
    ctx: &BuildContext<'_>,
    algorithm: Option<Algorithm>,
    allow_slow: Option<&Spanned<bool>>,
    span: Option<std::ops::Range<usize>>,
    c: &mut Collector<'_>,
) {
    let Some(alg) = algorithm else { return };
    if alg.fast_enough_per_request() || allow_slow.is_some_and(|a| *a.get_ref()) {
        return;
    }
    c.error(
        span.unwrap_or(0..0),
        format!("{}.algorithm", ctx.key_path),
        format!(
            "{} is signed on the request path here, which costs 0.1 ms (ES384) to several ms (RSA) per request; \
             use HS256/384/512, ES256 or EdDSA, or set allow_slow_signing = true to accept the cost",
            algorithm_name(alg)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(method: &str, uri: &str) -> RequestFacts {
        RequestFacts {
            method: method.parse().expect("method"),
            uri: uri.parse().expect("uri"),
            authorization: Some(b"DPoP the-token".to_vec()),
            body_sha256: None,
        }
    }

    #[test]
    fn values_leave_default_ports_out_and_keep_others() {
        let f = facts("get", "https://api.coinbase.com:443/api/v3/brokerage/accounts?limit=1");
        assert_eq!(f.value(Derived::UriCoinbase, None).unwrap(), "GET api.coinbase.com/api/v3/brokerage/accounts");
        assert_eq!(f.value(Derived::Url, None).unwrap(), "https://api.coinbase.com/api/v3/brokerage/accounts?limit=1");
        assert_eq!(f.url_without_query(), "https://api.coinbase.com/api/v3/brokerage/accounts");
        let f = facts("POST", "http://127.0.0.1:8080/x");
        assert_eq!(f.value(Derived::Host, None).unwrap(), "127.0.0.1:8080");
        assert_eq!(f.value(Derived::Method, None).unwrap(), "POST");
    }

    #[test]
    fn ath_hashes_the_credential_after_the_scheme_and_body_needs_a_hash() {
        let f = facts("GET", "https://a.example/");
        // RFC 9449 §7.1's example: ath of "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".
        let mut g = f.clone();
        g.authorization = Some(b"DPoP Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".to_vec());
        assert_eq!(g.value(Derived::Ath, None).unwrap(), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert_eq!(f.value(Derived::BodySha256, None), Err(DeriveError::BodyNotBuffered));
        let mut none = f.clone();
        none.authorization = None;
        assert_eq!(none.value(Derived::Ath, None), Err(DeriveError::NoAccessToken));
        let (a, b) = (f.value(Derived::Nonce, None).unwrap(), f.value(Derived::Nonce, None).unwrap());
        assert_ne!(a, b, "a fresh nonce each time");
    }
}
