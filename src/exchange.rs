//! Token endpoint exchanges (`kind = "oauth2"`): the [`Mint`] that asks an identity provider
//! for an access token, using other tokens (a freshly signed assertion, a client secret) that
//! the agent never sees either.
//!
//! An exchange runs on the refresher, never on the request path, through the same upstream
//! client as proxied requests (the same roots, `extra_ca_file` and timeouts). Its errors say
//! what the endpoint answered (status, OAuth `error` code and description) but never carry a
//! secret, an assertion, a token or an answer body.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use crate::proxy::upstream::Upstream;
use crate::proxy::{BoxError, ProxyBody};
use crate::store::{Mint, MintFuture, TokenCell};
use crate::substitute::{substitute, Resolution, Resolve};
use crate::tokens::dpop::{asks_for_nonce, DpopKey, Server};
use crate::tokens::oauth2::{ExchangeBody, ExchangeDefinition, ResponseSpec};
use crate::tokens::{MintError, MintedToken, TokenDefinition};

/// Answers above this are refused: a token answer is a few KiB, and a hostile or broken
/// endpoint must not make the sidecar hold unbounded memory.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// How much of an endpoint's `error_description` goes into `last_error`.
const MAX_DESCRIPTION: usize = 200;

/// Another token an exchange uses.
enum Dependency {
    /// A jwt (signed fresh for every exchange: an assertion is single-use at many IdPs) or a
    /// static secret.
    Fresh(Arc<TokenDefinition>),
    /// Another exchanged token: its current value.
    Cell(Arc<TokenCell>),
}

/// Produces one `kind = "oauth2"` token by exchanging at its token endpoint.
pub struct Exchanger {
    name: String,
    definition: ExchangeDefinition,
    upstream: ArcSwap<Upstream>,
    dependencies: HashMap<String, Dependency>,
    /// `dpop`: the key whose proofs go with the token request (RFC 9449 §5).
    dpop: Option<Arc<DpopKey>>,
}

impl Exchanger {
    /// An exchanger for `token` (which must be `kind = "oauth2"`), using `upstream` and the
    /// tokens it names: jwt and secret tokens from `tokens`, exchanged ones from `cells`
    /// (started before it, in dependency order).
    pub fn new(
        token: &TokenDefinition,
        upstream: Arc<Upstream>,
        tokens: &BTreeMap<String, TokenDefinition>,
        cells: &HashMap<String, Arc<TokenCell>>,
    ) -> Option<Exchanger> {
        let definition = token.exchange()?.clone();
        let mut dependencies = HashMap::new();
        for reference in definition.references.iter().filter(|r| r.kind != Some("dpop")) {
            let Some(name) = dependency_name(&reference.name, tokens) else { continue };
            let Some(def) = tokens.get(name) else { continue };
            let dependency = match def.exchange() {
                Some(_) => Dependency::Cell(Arc::clone(cells.get(name)?)),
                None => Dependency::Fresh(Arc::new(def.clone())),
            };
            dependencies.insert(name.to_string(), dependency);
        }
        let dpop = definition.dpop.as_ref().and_then(|n| tokens.get(n)).and_then(|d| d.dpop_key().cloned());
        Some(Exchanger { name: token.name.clone(), definition, upstream: ArcSwap::new(upstream), dependencies, dpop })
    }

    /// Exchanges once; with DPoP, once more when the endpoint asks for a nonce
    /// (`use_dpop_nonce`, RFC 9449 §8), with the tokens it uses signed afresh.
    async fn exchange(&self, now: SystemTime) -> Result<MintedToken, MintError> {
        let (mut status, headers, mut body) = self.attempt(now).await?;
        if let Some(dpop) = &self.dpop {
            let new_nonce = self.note_nonce(dpop, &headers);
            if !status.is_success() && new_nonce && asks_for_nonce(None, Some(&body)) {
                let (again, headers, answer) = self.attempt(now).await?;
                self.note_nonce(dpop, &headers);
                (status, body) = (again, answer);
            }
        }
        if !status.is_success() {
            return Err(MintError::Exchange(rejection(status.as_u16(), &body)));
        }
        read_answer(&self.definition.response, &self.definition.expose, &body, now)
    }

    /// Keeps a `DPoP-Nonce` the token endpoint sent; whether there was one.
    fn note_nonce(&self, dpop: &DpopKey, headers: &http::HeaderMap) -> bool {
        let server = Server::authorization(&htu_of(&self.definition.token_url));
        headers.get("dpop-nonce").is_some_and(|n| dpop.remember_nonce(server, n.as_bytes()))
    }

    /// One request to the token endpoint: status, headers and the (bounded) answer.
    async fn attempt(&self, now: SystemTime) -> Result<(http::StatusCode, http::HeaderMap, Bytes), MintError> {
        let values = self.dependency_values(now).await?;
        let mut request = self.request(&values)?;
        if let Some(dpop) = &self.dpop {
            let htu = htu_of(&self.definition.token_url);
            let proof = dpop.proof(self.definition.method.as_str(), &htu, None, SystemTime::now())?;
            let value = HeaderValue::from_str(&proof)
                .map_err(|_| MintError::Sign("DPoP proof is not a header value".into()))?;
            request.headers_mut().insert("dpop", value);
        }
        let upstream = self.upstream.load_full();
        let timeout = upstream.request_timeout;
        let answer = tokio::time::timeout(timeout, async {
            let response = upstream.client.request(request).await.map_err(|e| unreachable(&e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        MintError::Exchange(format!("token endpoint answer is larger than {MAX_ANSWER_BYTES} bytes"))
                    } else {
                        MintError::Exchange(format!("token endpoint answer was cut off: {}", error_chain(e.as_ref())))
                    }
                })?
                .to_bytes();
            Ok::<_, MintError>((status, headers, body))
        })
        .await
        .map_err(|_| {
            MintError::Exchange(format!("token endpoint did not answer within {}", humantime::format_duration(timeout)))
        })?;
        answer
    }

    /// The current value of every token the exchange names, signing jwts afresh.
    async fn dependency_values(&self, now: SystemTime) -> Result<Values, MintError> {
        let mut values = HashMap::new();
        for (name, dependency) in &self.dependencies {
            let token = match dependency {
                Dependency::Fresh(def) => {
                    let def = Arc::clone(def);
                    tokio::task::spawn_blocking(move || TokenDefinition::mint(&def, now))
                        .await
                        .unwrap_or(Err(MintError::Aborted))?
                }
                Dependency::Cell(cell) => cell.current(now).map(|t| (*t).clone()).ok_or_else(|| {
                    MintError::Exchange(format!("token {name:?}, which this exchange uses, has no current value"))
                })?,
            };
            values.insert(name.clone(), token);
        }
        Ok(Values(values))
    }

    fn request(&self, values: &Values) -> Result<Request<ProxyBody>, MintError> {
        let d = &self.definition;
        let fill = |template: &str| -> Result<Bytes, MintError> {
            substitute(template.as_bytes(), values)
                .map(|v| Bytes::copy_from_slice(&v))
                .map_err(|r| MintError::Exchange(format!("token {:?}, which this exchange uses, has no value", r.name)))
        };
        let mut builder = Request::builder().method(d.method.clone()).uri(d.token_url.clone());
        let mut content_type_set = false;
        for (name, template) in &d.headers {
            let value = HeaderValue::from_maybe_shared(fill(template)?).map_err(|_| {
                MintError::Exchange(format!("request header {name} is not a valid header value once filled in"))
            })?;
            content_type_set |= name == header::CONTENT_TYPE;
            builder = builder.header(name, value);
        }
        if !d.headers.iter().any(|(n, _)| n == header::ACCEPT) {
            builder = builder.header(header::ACCEPT, "application/json");
        }
        builder = builder.header(header::USER_AGENT, concat!("token-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some((id, secret)) = &d.basic {
            // RFC 6749 §2.3.1: each part form-urlencoded before joining, then base64.
            let mut credentials = form_encode(id.as_bytes());
            credentials.push(':');
            credentials.push_str(&form_encode(&fill(secret)?));
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                .map_err(|_| MintError::Exchange("client credentials do not fit a header".into()))?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let (body, content_type) = match &d.body {
            ExchangeBody::Form(fields) => {
                let mut out = String::new();
                for field in fields {
                    if !out.is_empty() {
                        out.push('&');
                    }
                    out.push_str(&form_encode(field.name.as_bytes()));
                    out.push('=');
                    let value = if field.template { fill(&field.value)? } else { Bytes::from(field.value.clone()) };
                    out.push_str(&form_encode(&value));
                }
                (Bytes::from(out), Some("application/x-www-form-urlencoded"))
            }
            ExchangeBody::Json(template) => {
                let filled = fill_json(template, &fill)?;
                (Bytes::from(serde_json::to_vec(&filled).unwrap_or_default()), Some("application/json"))
            }
            ExchangeBody::Text(template) => (fill(template)?, Some("application/x-www-form-urlencoded")),
            ExchangeBody::Empty => (Bytes::new(), None),
        };
        if let (Some(ct), false) = (content_type, content_type_set) {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let body: ProxyBody = Full::new(body).map_err(|never| -> BoxError { match never {} }).boxed_unsync();
        builder.body(body).map_err(|e| MintError::Exchange(format!("cannot build the token endpoint request: {e}")))
    }
}

impl Mint for Exchanger {
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
        Box::pin(async move {
            let result = self.exchange(now).await;
            if let Err(e) = &result {
                tracing::debug!(token = %self.name, error = %e, "token exchange failed");
            }
            result
        })
    }

    /// A fifth of the issued lifetime, or the configured lead when it is shorter than the
    /// lifetime (an endpoint may issue tokens shorter than anyone configured for).
    fn refresh_before(&self, token: &MintedToken) -> Duration {
        let lifetime = token.expires_at.duration_since(token.issued_at).unwrap_or_default();
        match self.definition.refresh_before {
            Some(lead) if lead < lifetime => lead,
            _ => lifetime / 5,
        }
    }

    fn required_at_start(&self) -> bool {
        false
    }

    fn renews_on_rejection(&self) -> bool {
        true
    }

    fn source(&self) -> &'static str {
        "exchange"
    }

    fn use_upstream(&self, upstream: &Arc<Upstream>) {
        self.upstream.store(Arc::clone(upstream));
    }
}

/// RFC 9449 `htu`: the URL without query and fragment, default port left out.
pub fn htu_of(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or_default();
    let default = if scheme == "http" { 80 } else { 443 };
    let port = uri.port_u16().filter(|p| *p != default).map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// Which token a reference names: the whole name if a token has it, else the part before
/// the last dot (`{/sf.instance_url}` names `sf`).
pub fn dependency_name<'a, T>(reference: &'a str, tokens: &BTreeMap<String, T>) -> Option<&'a str> {
    if tokens.contains_key(reference) {
        return Some(reference);
    }
    let (token, _) = reference.rsplit_once('.')?;
    tokens.contains_key(token).then_some(token)
}

/// The values an exchange's templates are filled with.
struct Values(HashMap<String, MintedToken>);

impl Resolve for Values {
    fn resolve(&self, name: &str) -> Resolution {
        if let Some(token) = self.0.get(name) {
            return Resolution::Value(token.value.clone());
        }
        let exposed = name.rsplit_once('.').and_then(|(token, field)| {
            let token = self.0.get(token)?;
            token.exposed.iter().find(|(f, _)| &**f == field).map(|(_, v)| v.clone())
        });
        exposed.map_or(Resolution::Unknown, Resolution::Value)
    }
}

fn fill_json(template: &Value, fill: &dyn Fn(&str) -> Result<Bytes, MintError>) -> Result<Value, MintError> {
    Ok(match template {
        Value::String(s) if s.contains("{/") => Value::String(String::from_utf8_lossy(&fill(s)?).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill_json(i, fill)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), fill_json(v, fill)?))).collect::<Result<_, MintError>>()?,
        ),
        other => other.clone(),
    })
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2): alphanumerics and `*-._` as is,
/// space as `+`, every other byte percent-encoded.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn unreachable(e: &crate::proxy::client::ClientError) -> MintError {
    MintError::Exchange(format!("token endpoint unreachable: {}", error_chain(e)))
}

/// `last_error` for a non-2xx answer: the status and, for an OAuth error answer (RFC 6749
/// §5.2), its `error` code and a printable, bounded piece of its description.
fn rejection(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(printable);
    match (field("error"), field("error_description")) {
        (Some(code), Some(description)) if !description.is_empty() => {
            format!("token endpoint answered {status}: {code}: {description}")
        }
        (Some(code), _) => format!("token endpoint answered {status}: {code}"),
        _ => format!("token endpoint answered {status}"),
    }
}

/// Printable ASCII only, at most [`MAX_DESCRIPTION`] characters: it goes into logs.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_DESCRIPTION).collect()
}

/// Reads the token, its lifetime and the exposed fields from a 2xx answer.
fn read_answer(
    spec: &ResponseSpec,
    expose: &[(Box<str>, String)],
    body: &[u8],
    now: SystemTime,
) -> Result<MintedToken, MintError> {
    let fail = |m: String| MintError::Exchange(m);
    let answer: Value = serde_json::from_slice(body).map_err(|_| fail("token endpoint answer is not JSON".into()))?;
    let token = answer
        .pointer(&spec.token)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| fail(format!("token endpoint answer has no {}", spec.token)))?;
    // It is written into headers and URLs as is.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(format!("token endpoint answer's {} is not printable text", spec.token)));
    }
    if let Some(expected) = &spec.token_type {
        let got = answer.get("token_type").and_then(Value::as_str).unwrap_or_default();
        if !got.eq_ignore_ascii_case(expected) {
            return Err(fail(format!("token endpoint answered token_type {:?}, not {expected:?}", printable(got))));
        }
    }
    let expires_at = lifetime(spec, &answer, token, now)?;
    let expires_at = match spec.max_ttl {
        Some(max) => expires_at.min(now + max),
        None => expires_at,
    };
    if expires_at <= now {
        return Err(fail("token endpoint gave a token that has already expired".into()));
    }
    let mut exposed = Vec::with_capacity(expose.len());
    for (field, pointer) in expose {
        let text = match answer.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => return Err(fail(format!("token endpoint answer has no {pointer} (expose.{field})"))),
        };
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(format!("token endpoint answer's {pointer} (expose.{field}) is not printable text")));
        }
        exposed.push((field.clone(), Bytes::from(text)));
    }
    Ok(MintedToken { value: Bytes::copy_from_slice(token.as_bytes()), issued_at: now, expires_at, exposed })
}

/// When the token expires: the first of `expires_at`, `expires_in`, the token's own `exp`
/// (`expiry_from = "jwt"`) and `default_ttl` that is present.
fn lifetime(spec: &ResponseSpec, answer: &Value, token: &str, now: SystemTime) -> Result<SystemTime, MintError> {
    let fail = |m: String| MintError::Exchange(m);
    if let Some(pointer) = &spec.expires_at {
        if let Some(v) = answer.pointer(pointer) {
            return instant(v).ok_or_else(|| fail(format!("token endpoint answer's {pointer} is not a time")));
        }
    }
    if let Some(v) = answer.pointer(&spec.expires_in) {
        let secs = seconds(v)
            .ok_or_else(|| fail(format!("token endpoint answer's {} is not a number of seconds", spec.expires_in)))?;
        return Ok(now + secs);
    }
    if spec.expiry_from_jwt {
        let exp = jwt_exp(token).ok_or_else(|| fail("the issued token is not a JWT with an exp claim".into()))?;
        return Ok(UNIX_EPOCH + Duration::from_secs(exp));
    }
    spec.default_ttl
        .map(|ttl| now + ttl)
        .ok_or_else(|| fail("token endpoint gave no lifetime (set response.default_ttl)".into()))
}

/// A number of seconds, as a JSON number or numeric string; negative means none left.
fn seconds(v: &Value) -> Option<Duration> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then(|| Duration::from_secs_f64(n.clamp(0.0, 1e10)))
}

/// An RFC 3339 time or epoch seconds (number or numeric string).
fn instant(v: &Value) -> Option<SystemTime> {
    if let Some(secs) = seconds(v) {
        return Some(UNIX_EPOCH + secs);
    }
    let text = v.as_str()?;
    let at = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The `exp` of a compact JWS, read without verifying (the issuer's own token).
fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64().or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ResponseSpec {
        ResponseSpec {
            token: "/access_token".into(),
            expires_in: "/expires_in".into(),
            expires_at: None,
            expiry_from_jwt: false,
            default_ttl: None,
            max_ttl: None,
            token_type: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn form_encoding_follows_the_whatwg_rules() {
        assert_eq!(form_encode(b"a b+c:d/e~f*g-h._"), "a+b%2Bc%3Ad%2Fe%7Ef*g-h._");
        assert_eq!(form_encode("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn lifetime_precedence_is_expires_at_then_expires_in_then_jwt_then_default() {
        let now = at(1_000_000);
        let mut s = spec();
        s.expires_at = Some("/expires_at".into());
        s.expiry_from_jwt = true;
        s.default_ttl = Some(Duration::from_secs(7));
        let both = serde_json::json!({"access_token": "t", "expires_at": "1970-01-12T13:46:50Z", "expires_in": 60});
        assert_eq!(read_answer(&s, &[], both.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_010));
        let only_in = serde_json::json!({"access_token": "t", "expires_in": "60"});
        assert_eq!(read_answer(&s, &[], only_in.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_060));
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1000030}"#);
        let jwt = format!("e30.{payload}.sig");
        let from_jwt = serde_json::json!({ "access_token": jwt });
        assert_eq!(read_answer(&s, &[], from_jwt.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_030));
        let nothing = serde_json::json!({"access_token": "opaque"});
        assert!(read_answer(&s, &[], nothing.to_string().as_bytes(), now).is_err(), "not a JWT, with expiry_from");
        s.expiry_from_jwt = false;
        assert_eq!(read_answer(&s, &[], nothing.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_007));
        s.default_ttl = None;
        let e = read_answer(&s, &[], nothing.to_string().as_bytes(), now).unwrap_err();
        assert_eq!(e.to_string(), "token endpoint gave no lifetime (set response.default_ttl)");
    }

    #[test]
    fn max_ttl_clamps_and_short_lifetimes_are_kept() {
        let now = at(1_000_000);
        let mut s = spec();
        s.max_ttl = Some(Duration::from_secs(600));
        let long = serde_json::json!({"access_token": "t", "expires_in": 86400});
        assert_eq!(read_answer(&s, &[], long.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_600));
        let short = serde_json::json!({"access_token": "t", "expires_in": 3});
        assert_eq!(read_answer(&s, &[], short.to_string().as_bytes(), now).unwrap().expires_at, at(1_000_003));
        let gone = serde_json::json!({"access_token": "t", "expires_in": 0});
        assert!(read_answer(&s, &[], gone.to_string().as_bytes(), now).is_err());
    }

    #[test]
    fn answers_that_cannot_be_used_fail_with_a_message_naming_the_field_not_the_value() {
        let now = at(1_000_000);
        let s = spec();
        let e = read_answer(&s, &[], br#"{"token":"secret-value","expires_in":60}"#, now).unwrap_err();
        assert_eq!(e.to_string(), "token endpoint answer has no /access_token");
        let e = read_answer(&s, &[], b"{\"access_token\":\"a\\nb\",\"expires_in\":60}", now).unwrap_err();
        assert!(!e.to_string().contains("a\nb"));
        let expose = [(Box::from("instance_url"), "/instance_url".to_string())];
        let e = read_answer(&s, &expose, br#"{"access_token":"t","expires_in":60}"#, now).unwrap_err();
        assert_eq!(e.to_string(), "token endpoint answer has no /instance_url (expose.instance_url)");
        let t = read_answer(&s, &expose, br#"{"access_token":"t","expires_in":60,"instance_url":"https://x.my"}"#, now)
            .unwrap();
        assert_eq!(t.exposed, vec![(Box::from("instance_url"), Bytes::from_static(b"https://x.my"))]);
        let mut typed = spec();
        typed.token_type = Some("Bearer".into());
        assert!(read_answer(&typed, &[], br#"{"access_token":"t","expires_in":60,"token_type":"bearer"}"#, now).is_ok());
        assert!(read_answer(&typed, &[], br#"{"access_token":"t","expires_in":60,"token_type":"N_A"}"#, now).is_err());
    }

    #[test]
    fn rejections_report_the_oauth_error_and_a_bounded_printable_description() {
        assert_eq!(
            rejection(400, br#"{"error":"invalid_grant","error_description":"bad\nassertion"}"#),
            "token endpoint answered 400: invalid_grant: badassertion"
        );
        assert_eq!(rejection(401, br#"{"error":"invalid_client"}"#), "token endpoint answered 401: invalid_client");
        assert_eq!(rejection(503, b"<html>down</html>"), "token endpoint answered 503");
        let long = format!(r#"{{"error":"x","error_description":"{}"}}"#, "d".repeat(5000));
        assert!(rejection(400, long.as_bytes()).len() < 300);
    }
}
