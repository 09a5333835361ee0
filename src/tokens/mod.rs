//! Token definitions: what each `[tokens.NAME]` table mints, checked when the config loads.
//!
//! `kind` selects how a token is produced: `jwt` signs one, `secret` serves a static value (an
//! API key the agent must not hold), `oauth2` exchanges other tokens for one at a token
//! endpoint. The store, routes and substitution are the same for all of them, because they
//! only ever see a [`MintedToken`].

pub mod algorithm;
pub mod der;
pub mod dpop;
mod fields;
pub mod jwe;
pub mod jwk;
pub mod jwt;
pub mod keys;
pub mod oauth2;
pub mod per_request;
pub mod qsh;
pub mod request_bound;
pub mod signer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::config::raw::RawToken;
use crate::config::values::{checked, parse_duration};
use crate::config::Collector;
use algorithm::{algorithm_names, compatible_key_types, key_type_names, parse_algorithm, KeyType};
use jwt::{expand_env, expand_env_str, toml_to_json, AutoClaims, JwtDefinition};

/// A signed token and its validity window. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct MintedToken {
    pub value: Bytes,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    /// Extra fields of a token endpoint's answer (`[tokens.NAME.expose]`), written as
    /// `{/NAME.field}` under the same route binding as the token.
    pub exposed: Vec<(Box<str>, Bytes)>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("value", &"[redacted]")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not be minted. Never carries key or token bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("the system clock is before 1970")]
    Clock,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the signing task stopped unexpectedly")]
    Aborted,
    /// A token endpoint exchange failed; the message never holds a secret or token.
    #[error("{0}")]
    Exchange(String),
}

/// How a token is produced.
#[derive(Debug, Clone)]
pub enum TokenKind {
    // Boxed: a definition holds a key and claims, a secret only bytes.
    Jwt(Box<JwtDefinition>),
    Secret(StaticSecret),
    Exchange(Box<oauth2::ExchangeDefinition>),
    /// A DPoP key (RFC 9449), used through the oauth2 tokens that name it in `dpop`.
    Dpop(Arc<dpop::DpopKey>),
}

/// A static value from `key`, `key_file` or `key_env`. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct StaticSecret {
    value: Bytes,
}

impl std::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticSecret").field("value", &"[redacted]").finish()
    }
}

/// How long a static secret is "valid": it never expires, but the store and the 503 rules
/// speak in expiry times, so it gets one no request will reach.
const STATIC_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One checked `[tokens.NAME]` entry.
#[derive(Debug, Clone)]
pub struct TokenDefinition {
    pub name: String,
    pub kind: TokenKind,
    pub ttl: Duration,
    /// How long before expiry a fresh token is minted.
    pub refresh_before: Duration,
    key_file: Option<PathBuf>,
    /// Other files the token reads (the `[encrypt]` recipient key), watched like the key.
    extra_files: Vec<PathBuf>,
    /// Digest of everything that defines the token (settings and key bytes), so a reload can
    /// tell an unchanged token from a changed one without keeping key material around twice.
    fingerprint: [u8; 32],
}

/// Where a token is being built, for error messages and relative paths.
pub struct BuildContext<'a> {
    pub name: &'a str,
    pub key_path: &'a str,
    pub base_dir: &'a Path,
}

impl TokenDefinition {
    /// Checks one raw token, loading its key and making a test signature. Problems go to `c`.
    pub fn build(ctx: &BuildContext<'_>, raw: &Spanned<RawToken>, c: &mut Collector<'_>) -> Option<TokenDefinition> {
        let before = c.len();
        let r = raw.get_ref();
        let at = |field: &str| format!("{}.{field}", ctx.key_path);

        if let Some(kind) = &r.kind {
            match kind.get_ref().as_str() {
                "jwt" => {}
                "secret" => return build_secret(ctx, raw, c),
                "oauth2" => return build_exchange(ctx, raw, c),
                "dpop" => return build_dpop(ctx, raw, c),
                other => {
                    c.error(
                        kind.span(),
                        at("kind"),
                        format!("unknown token kind {other:?} (expected \"jwt\", \"secret\", \"oauth2\" or \"dpop\")"),
                    );
                }
            }
        }
        for (field, span) in fields::not_taken_by(r, fields::Kinds::JWT) {
            let why = if field == "dpop" {
                "applies to kind = \"oauth2\" tokens (name a kind = \"dpop\" key there)"
            } else {
                "does not apply to kind = \"jwt\" (set kind = \"oauth2\" to exchange a token at a token endpoint)"
            };
            c.error(span, at(field), why);
        }
        let algorithm = match &r.algorithm {
            None => {
                c.error(raw.span(), ctx.key_path, format!("missing `algorithm` (one of {})", algorithm_names()));
                None
            }
            Some(a) => parse_algorithm(a.get_ref()).or_else(|| {
                c.error(
                    a.span(),
                    at("algorithm"),
                    format!("unknown algorithm {:?} (expected one of {})", a.get_ref(), algorithm_names()),
                );
                None
            }),
        };
        let key_type = match &r.key_type {
            None => {
                c.error(raw.span(), ctx.key_path, format!("missing `key_type` (one of {})", key_type_names()));
                None
            }
            Some(k) => KeyType::parse(k.get_ref()).or_else(|| {
                c.error(
                    k.span(),
                    at("key_type"),
                    format!("unknown key type {:?} (expected one of {})", k.get_ref(), key_type_names()),
                );
                None
            }),
        };
        if let (Some(alg), Some(kt), Some(k)) = (algorithm, key_type, &r.key_type) {
            if !compatible_key_types(alg).any(|c| c == kt) {
                let fits: Vec<_> = compatible_key_types(alg).map(KeyType::name).collect();
                c.error(
                    k.span(),
                    at("key_type"),
                    format!(
                        "key type {} cannot sign {} (use one of {})",
                        kt.name(),
                        algorithm::algorithm_name(alg),
                        fits.join(", ")
                    ),
                );
            }
        }
        let ttl = match &r.ttl {
            None => {
                c.error(raw.span(), ctx.key_path, "missing `ttl` (how long each token is valid, such as \"15m\")");
                Duration::ZERO
            }
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) if d.as_secs() >= 2 => d,
                Ok(_) => {
                    c.error(t.span(), at("ttl"), "must be at least 2s");
                    Duration::ZERO
                }
                Err(e) => {
                    c.error(t.span(), at("ttl"), e);
                    Duration::ZERO
                }
            },
        };
        let refresh_before = shorter_than_ttl(&r.refresh_before, ttl, &at("refresh_before"), c).unwrap_or(ttl / 5);
        let auto = match &r.auto_claims {
            None => AutoClaims::default(),
            Some(list) => {
                AutoClaims::from_names(list.get_ref().iter().map(|s| s.get_ref().as_str())).unwrap_or_else(|e| {
                    c.error(list.span(), at("auto_claims"), e);
                    AutoClaims::default()
                })
            }
        };
        // A ttl that is itself wrong is reported there; the skew adds no second error for it.
        let skew_bound = if ttl.is_zero() { Duration::MAX } else { ttl };
        let iat_skew = shorter_than_ttl(&r.iat_skew, skew_bound, &at("iat_skew"), c)
            .map_or(Duration::ZERO, |d| Duration::from_secs(d.as_secs()));
        let mut claims = claims(ctx, r, auto, c);
        let mut header = header(ctx, r, c);
        let (material, key_file) = read_key(ctx, "", raw.span(), [&r.key, &r.key_file, &r.key_env], c);
        // A service-account file names the key and the account: defaults for kid, iss, sub.
        if let (Some(KeyType::GoogleServiceAccountJson), Some(bytes)) = (key_type, &material) {
            if let Ok(account) = keys::ServiceAccount::parse(bytes) {
                if header.kid.is_none() {
                    header.kid = account.private_key_id.clone();
                }
                if let Some(email) = &account.client_email {
                    for claim in ["iss", "sub"] {
                        claims.entry(claim).or_insert_with(|| email.clone().into());
                    }
                }
            }
        }
        // A JWK may name itself.
        if let (Some(KeyType::Jwk), Some(bytes), None) = (key_type, &material, &header.kid) {
            header.kid = jwk::Jwk::parse(bytes).ok().and_then(|k| k.kid().map(str::to_string));
        }
        let encrypt = r.encrypt.as_ref().and_then(|e| jwe::config::build(ctx, e, c));
        let per_request = per_request::build(ctx, raw, algorithm, &auto, c);

        let (Some(alg), Some(kt), Some(material)) = (algorithm, key_type, material) else {
            return None;
        };
        if c.len() != before {
            return None;
        }
        let (key_field, key_span) = key_source(raw);
        let signer = match keys::load_signing_key(alg, kt, &material) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                c.error(key_span, at(key_field), e.to_string());
                return None;
            }
        };
        let mut jwt = jwt::JwtDefinition::new(
            signer,
            header.typ.as_deref(),
            header.kid.clone(),
            &header.extras,
            claims,
            auto,
            iat_skew,
        );
        let mut fingerprint_parts: Vec<Vec<u8>> = vec![
            format!("{alg:?} {kt:?} {ttl:?} {refresh_before:?} {auto:?} {iat_skew:?}").into_bytes(),
            jwt.header_json.clone().into_bytes(),
            Value::Object(jwt.claims.clone()).to_string().into_bytes(),
            material,
        ];
        let mut extra_files = Vec::new();
        if let Some(built) = encrypt {
            fingerprint_parts.push(format!("{:?}", built.encryptor).into_bytes());
            fingerprint_parts.push(built.material);
            extra_files.extend(built.key_file);
            jwt.encrypt = Some(Arc::new(built.encryptor));
        }
        if let Some(per_request) = per_request {
            fingerprint_parts.push(format!("per_request {per_request:?}").into_bytes());
            jwt.per_request = Some(Arc::new(per_request));
        }
        let def = TokenDefinition {
            name: ctx.name.to_string(),
            fingerprint: fingerprint(&fingerprint_parts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            kind: TokenKind::Jwt(Box::new(jwt)),
            ttl,
            refresh_before,
            key_file,
            extra_files,
        };
        let test = match def.jwt().and_then(|j| j.per_request.as_ref()) {
            Some(_) => def.sign_request(&per_request::PerRequest::sample_facts(), SystemTime::now()).map(|_| ()),
            None => def.mint(SystemTime::now()).map(|_| ()).map_err(RequestSignError::Sign),
        };
        if let Err(e) = test {
            c.error(key_span, at(key_field), format!("test signature failed: {e}"));
            return None;
        }
        Some(def)
    }

    /// The JWT definition, for `kind = "jwt"`.
    pub fn jwt(&self) -> Option<&jwt::JwtDefinition> {
        match &self.kind {
            TokenKind::Jwt(jwt) => Some(jwt),
            _ => None,
        }
    }

    /// Whether this token is signed for each request (`per_request = true`).
    pub fn is_per_request(&self) -> bool {
        self.jwt().is_some_and(|j| j.per_request.is_some())
    }

    /// The DPoP key, for `kind = "dpop"`.
    pub fn dpop_key(&self) -> Option<&Arc<dpop::DpopKey>> {
        match &self.kind {
            TokenKind::Dpop(key) => Some(key),
            _ => None,
        }
    }

    /// Signs a `per_request` token for one request, from `facts`. On the request path: the
    /// key was parsed when the config loaded, so this costs one signature.
    pub fn sign_request(
        &self,
        facts: &per_request::RequestFacts,
        now: SystemTime,
    ) -> Result<MintedToken, RequestSignError> {
        let Some((jwt, per_request)) = self.jwt().and_then(|j| Some((j, j.per_request.as_ref()?))) else {
            return Err(RequestSignError::Sign(MintError::Sign("not a per_request token".into())));
        };
        let iat = per_request::unix_seconds(now).map_err(RequestSignError::Sign)?;
        let ttl = Duration::from_secs(self.ttl.as_secs());
        let value = jwt
            .sign_for_request(per_request, facts, iat, ttl)
            .map_err(RequestSignError::Derive)?
            .map_err(RequestSignError::Sign)?;
        let issued_at = UNIX_EPOCH + Duration::from_secs(iat);
        Ok(MintedToken { value: Bytes::from(value), issued_at, expires_at: issued_at + ttl, exposed: Vec::new() })
    }

    /// Signs a fresh token. Runs on the refresher, never on the request path. A `per_request`
    /// token or a DPoP key has no value of its own: it gives an empty one that never expires,
    /// so its cell is ready (the real values are signed per request).
    pub fn mint(&self, now: SystemTime) -> Result<MintedToken, MintError> {
        match &self.kind {
            TokenKind::Jwt(jwt) if jwt.per_request.is_some() => Ok(MintedToken {
                exposed: Vec::new(),
                value: Bytes::new(),
                issued_at: now,
                expires_at: now + STATIC_LIFETIME,
            }),
            TokenKind::Dpop(_) => Ok(MintedToken {
                exposed: Vec::new(),
                value: Bytes::new(),
                issued_at: now,
                expires_at: now + STATIC_LIFETIME,
            }),
            TokenKind::Jwt(jwt) => {
                // Whole seconds, as in the claims: `expires_at` must be exactly the `exp` the
                // upstream checks, or a token could be injected in the last second after it.
                let iat = now.duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs();
                let ttl = Duration::from_secs(self.ttl.as_secs());
                let value = jwt.sign(iat, ttl)?;
                let issued_at = UNIX_EPOCH + Duration::from_secs(iat);
                Ok(MintedToken {
                    exposed: Vec::new(),
                    value: Bytes::from(value),
                    issued_at,
                    expires_at: issued_at + ttl,
                })
            }
            TokenKind::Secret(secret) => Ok(MintedToken {
                exposed: Vec::new(),
                value: secret.value.clone(),
                issued_at: now,
                expires_at: now + STATIC_LIFETIME,
            }),
            // Exchanges need the network and other tokens: `crate::exchange` runs them.
            TokenKind::Exchange(_) => Err(MintError::Exchange("an exchanged token needs the exchange client".into())),
        }
    }

    /// The token endpoint exchange, for `kind = "oauth2"`.
    pub fn exchange(&self) -> Option<&oauth2::ExchangeDefinition> {
        match &self.kind {
            TokenKind::Exchange(e) => Some(e),
            _ => None,
        }
    }

    /// Folds the fingerprints of the tokens an exchange uses into its own, so that a changed
    /// secret or signing key makes a reload exchange again.
    pub(crate) fn include_dependencies(&mut self, dependencies: &[[u8; 32]]) {
        let mut parts: Vec<&[u8]> = vec![&self.fingerprint];
        parts.extend(dependencies.iter().map(|d| d.as_slice()));
        self.fingerprint = fingerprint(&parts);
    }

    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Whether the token's cell value expires at all (a static secret does not; a per-request
    /// token and a DPoP key have no cached value).
    pub fn expires(&self) -> bool {
        !matches!(self.kind, TokenKind::Secret(_) | TokenKind::Dpop(_)) && !self.is_per_request()
    }

    /// The key file to watch for rotation, if the key comes from a file.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// Every file the token reads (its key, an `[encrypt]` recipient key), to watch.
    pub fn watched_files(&self) -> impl Iterator<Item = &Path> {
        self.key_file.iter().chain(&self.extra_files).map(PathBuf::as_path)
    }

    /// Whether two definitions would mint equivalent tokens (same settings, same key).
    pub fn same_definition(&self, other: &TokenDefinition) -> bool {
        self.fingerprint == other.fingerprint
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TokenKind::Jwt(_) => "jwt",
            TokenKind::Secret(_) => "secret",
            TokenKind::Exchange(_) => "oauth2",
            TokenKind::Dpop(_) => "dpop",
        }
    }

    /// The signing algorithm, for signed tokens.
    pub fn algorithm_name(&self) -> Option<&'static str> {
        match &self.kind {
            TokenKind::Jwt(jwt) => Some(algorithm::algorithm_name(jwt.algorithm)),
            TokenKind::Dpop(key) => Some(algorithm::algorithm_name(key.algorithm)),
            TokenKind::Secret(_) | TokenKind::Exchange(_) => None,
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Jwt(jwt) => jwt.kid.as_deref(),
            TokenKind::Secret(_) | TokenKind::Exchange(_) | TokenKind::Dpop(_) => None,
        }
    }

    /// The public verification key as a JWK (with `kid`, `alg`, `use`), for asymmetric tokens.
    pub fn public_jwk(&self) -> Option<Map<String, Value>> {
        match &self.kind {
            TokenKind::Jwt(jwt) => jwt.public_jwk(),
            TokenKind::Secret(_) | TokenKind::Exchange(_) | TokenKind::Dpop(_) => None,
        }
    }
}

/// `kind = "secret"`: the value from `key`, `key_file` (one trailing newline dropped; watched)
/// or `key_env`, served as is. It is written into headers and URLs, so it must be printable.
fn build_secret(ctx: &BuildContext<'_>, raw: &Spanned<RawToken>, c: &mut Collector<'_>) -> Option<TokenDefinition> {
    let before = c.len();
    let r = raw.get_ref();
    for (field, span) in fields::not_taken_by(r, fields::Kinds::SECRET) {
        c.error(
            span,
            format!("{}.{field}", ctx.key_path),
            "does not apply to kind = \"secret\" (a static value from key_env, key_file or key)",
        );
    }
    let (material, key_file) = read_key(ctx, "", raw.span(), [&r.key, &r.key_file, &r.key_env], c);
    let material = material?;
    if let Some(at) = material.iter().position(|&b| b < 0x20 || b == 0x7f) {
        let (field, span) = key_source(raw);
        c.error(
            span,
            format!("{}.{field}", ctx.key_path),
            format!(
                "the secret has a control character at byte {at}; it is written into headers and URLs as is, \
                 so it must be printable (only one trailing newline of a key_file is dropped)"
            ),
        );
    }
    if c.len() != before {
        return None;
    }
    Some(TokenDefinition {
        name: ctx.name.to_string(),
        fingerprint: fingerprint(&[b"secret", &material]),
        kind: TokenKind::Secret(StaticSecret { value: Bytes::from(material) }),
        ttl: STATIC_LIFETIME,
        refresh_before: Duration::ZERO,
        key_file,
        extra_files: Vec::new(),
    })
}

/// `kind = "dpop"`: a DPoP key (see [`dpop`]).
fn build_dpop(ctx: &BuildContext<'_>, raw: &Spanned<RawToken>, c: &mut Collector<'_>) -> Option<TokenDefinition> {
    let (key, material, key_file) = dpop::build(ctx, raw, c)?;
    Some(TokenDefinition {
        name: ctx.name.to_string(),
        fingerprint: fingerprint(&[b"dpop", format!("{key:?}").as_bytes(), &material]),
        kind: TokenKind::Dpop(Arc::new(key)),
        ttl: STATIC_LIFETIME,
        refresh_before: Duration::ZERO,
        key_file,
        extra_files: Vec::new(),
    })
}

/// Why a per-request token could not be signed for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestSignError {
    #[error("{0}")]
    Sign(MintError),
    #[error("the request does not give what the token signs: {0:?}")]
    Derive(per_request::DeriveError),
}

/// `kind = "oauth2"`: checked here, exchanged by [`crate::exchange`].
fn build_exchange(ctx: &BuildContext<'_>, raw: &Spanned<RawToken>, c: &mut Collector<'_>) -> Option<TokenDefinition> {
    let exchange = oauth2::build(ctx, raw, c)?;
    Some(TokenDefinition {
        name: ctx.name.to_string(),
        fingerprint: fingerprint(&[b"oauth2", format!("{exchange:?}").as_bytes()]),
        refresh_before: exchange.refresh_before.unwrap_or_default(),
        kind: TokenKind::Exchange(Box::new(exchange)),
        ttl: Duration::ZERO,
        key_file: None,
        extra_files: Vec::new(),
    })
}

/// base64url without padding, as every JOSE segment is written.
pub fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn claims(
    ctx: &BuildContext<'_>,
    r: &RawToken,
    auto: AutoClaims,
    c: &mut Collector<'_>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let lookup = |k: &str| std::env::var(k).ok();
    for (name, value) in &r.claims {
        let key = format!("{}.claims.{name}", ctx.key_path);
        if auto.contains(name) {
            c.error(
                value.span(),
                &key,
                format!("`{name}` is added automatically; remove it here, or leave \"{name}\" out of auto_claims"),
            );
            continue;
        }
        match toml_to_json(value.get_ref()).and_then(|mut v| expand_env(&mut v, &lookup).map(|()| v)) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => c.error(value.span(), &key, e),
        }
    }
    out
}

/// The configured JWS header: `typ`, `kid` and the extra fields.
struct HeaderSettings {
    typ: Option<String>,
    kid: Option<String>,
    extras: Map<String, Value>,
}

fn header(ctx: &BuildContext<'_>, r: &RawToken, c: &mut Collector<'_>) -> HeaderSettings {
    let lookup = |k: &str| std::env::var(k).ok();
    let kid = r.kid.as_ref().and_then(|k| {
        expand_env_str(k.get_ref(), &lookup).map_err(|e| c.error(k.span(), format!("{}.kid", ctx.key_path), e)).ok()
    });
    let typ = match &r.typ {
        None => Some("JWT".to_string()),
        Some(typ) => (!typ.get_ref().is_empty()).then(|| typ.get_ref().clone()),
    };
    let mut extras = Map::new();
    for (name, value) in &r.header {
        let key = format!("{}.header.{name}", ctx.key_path);
        if matches!(name.as_str(), "alg" | "kid" | "typ") {
            c.error(value.span(), &key, format!("set `{name}` with its own field on the token, not in [header]"));
            continue;
        }
        match toml_to_json(value.get_ref()).and_then(|mut v| expand_env(&mut v, &lookup).map(|()| v)) {
            Ok(v) => {
                extras.insert(name.clone(), v);
            }
            Err(e) => c.error(value.span(), &key, e),
        }
    }
    HeaderSettings { typ, kid, extras }
}

/// A duration that must be shorter than `ttl` (`refresh_before`, `iat_skew`); `None` when
/// absent or wrong (the problem is recorded).
fn shorter_than_ttl(
    value: &Option<Spanned<String>>,
    ttl: Duration,
    key: &str,
    c: &mut Collector<'_>,
) -> Option<Duration> {
    let refuse = |d: &Duration| (*d >= ttl).then_some("must be shorter than ttl");
    checked(value.as_ref()?, key, parse_duration, refuse, c)
}

/// Which of `key`, `key_file`, `key_env` holds the key material, and where, for errors.
fn key_source(raw: &Spanned<RawToken>) -> (&'static str, std::ops::Range<usize>) {
    let r = raw.get_ref();
    key_source_of([&r.key, &r.key_file, &r.key_env], raw.span())
}

/// Like [`key_source`], for the key fields of any table.
pub(crate) fn key_source_of(
    [key, key_file, key_env]: [&Option<Spanned<String>>; 3],
    table_span: std::ops::Range<usize>,
) -> (&'static str, std::ops::Range<usize>) {
    [("key", key), ("key_file", key_file), ("key_env", key_env)]
        .into_iter()
        .find_map(|(field, value)| value.as_ref().map(|v| (field, v.span())))
        .unwrap_or(("key_env", table_span))
}

/// Reads key bytes from exactly one of `key`, `key_file`, `key_env` (the fields of the token,
/// or of a sub-table such as `encrypt`: `prefix` is `""` or `"encrypt."`).
pub(crate) fn read_key(
    ctx: &BuildContext<'_>,
    prefix: &str,
    table_span: std::ops::Range<usize>,
    [key, key_file, key_env]: [&Option<Spanned<String>>; 3],
    c: &mut Collector<'_>,
) -> (Option<Vec<u8>>, Option<PathBuf>) {
    let given = [key.is_some(), key_file.is_some(), key_env.is_some()].iter().filter(|b| **b).count();
    let table = format!(
        "{}{}",
        ctx.key_path,
        if prefix.is_empty() { String::new() } else { format!(".{}", prefix.trim_end_matches('.')) }
    );
    if given != 1 {
        c.error(
            table_span,
            table,
            if given == 0 {
                "no key given: set one of key_file, key_env or key (inline, for demos only)"
            } else {
                "more than one of key, key_file, key_env is set; keep exactly one"
            },
        );
        return (None, None);
    }
    if let Some(k) = key {
        return (Some(k.get_ref().as_bytes().to_vec()), None);
    }
    if let Some(f) = key_file {
        let path = ctx.base_dir.join(f.get_ref());
        return match std::fs::read(&path) {
            Ok(mut bytes) => {
                strip_one_newline(&mut bytes);
                (Some(bytes), Some(path))
            }
            Err(e) => {
                c.error(
                    f.span(),
                    format!("{}.{prefix}key_file", ctx.key_path),
                    format!("cannot read {}: {e}", path.display()),
                );
                (None, Some(path))
            }
        };
    }
    if let Some(var) = key_env {
        return match std::env::var_os(var.get_ref()) {
            Some(v) if !v.is_empty() => (Some(v.into_encoded_bytes()), None),
            _ => {
                c.error(
                    var.span(),
                    format!("{}.{prefix}key_env", ctx.key_path),
                    format!("environment variable {} is not set or empty", var.get_ref()),
                );
                (None, None)
            }
        };
    }
    (None, None)
}

/// Editors and `echo` end files with a newline that is not part of a secret.
fn strip_one_newline(bytes: &mut Vec<u8>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn secret_config(dir: &Path, token_table: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        let path = dir.join("sidecar.toml");
        crate::config::Config::from_text(&path, &format!("[tokens.api_key]\nkind = \"secret\"\n{token_table}"))
    }

    #[test]
    fn a_secret_serves_its_file_without_the_newline_and_never_shows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("api.key"), "sk_test_0123456789\n").expect("write");
        let config = secret_config(dir.path(), "key_file = \"api.key\"\n").expect("valid");
        let def = &config.tokens["api_key"];
        assert_eq!(def.kind_name(), "secret");
        assert!(!def.expires() && def.algorithm_name().is_none() && def.public_jwk().is_none());
        assert_eq!(def.key_file(), Some(dir.path().join("api.key").as_path()));
        let now = SystemTime::now();
        let token = def.mint(now).expect("mint");
        assert_eq!(&token.value[..], b"sk_test_0123456789");
        assert!(token.expires_at > now + Duration::from_secs(50 * 365 * 24 * 3600), "never expires in practice");
        let shown = format!("{def:?} {config:?}");
        assert!(!shown.contains("sk_test"), "Debug shows the secret: {shown}");
    }

    #[test]
    fn a_secret_refuses_signing_fields_and_unprintable_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let errors = secret_config(dir.path(), "key = \"abc\"\nttl = \"5m\"\nalgorithm = \"HS256\"\n")
            .expect_err("signing fields");
        let keys: Vec<&str> = errors.0.iter().map(|d| d.key_path.as_str()).collect();
        assert_eq!(keys, ["tokens.api_key.ttl", "tokens.api_key.algorithm"], "{errors}");
        let errors = secret_config(dir.path(), "key = \"a\\tb\"\n").expect_err("control character");
        assert!(errors.0[0].message.contains("control character at byte 1"), "{errors}");
        assert!(!errors.to_string().contains("a\tb"), "the value is not echoed: {errors}");
        let errors = secret_config(dir.path(), "").expect_err("no value");
        assert!(errors.0[0].message.contains("no key given"), "{errors}");
    }

    /// Each kind refuses a field it does not take, pointing at the line that sets it, with
    /// its own explanation (one table decides which kind takes what: see `fields`).
    #[test]
    fn every_kind_refuses_a_field_it_does_not_take_at_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("jwt", "grant = \"client_credentials\"", "grant", "does not apply to kind = \"jwt\""),
            ("jwt", "dpop = \"proof\"", "dpop", "applies to kind = \"oauth2\" tokens"),
            ("secret", "kid = \"1\"", "kid", "does not apply to kind = \"secret\""),
            ("secret", "[tokens.t.claims]\nsub = \"a\"", "claims", "does not apply to kind = \"secret\""),
            ("oauth2", "kid = \"1\"", "kid", "does not apply to kind = \"oauth2\""),
            ("dpop", "token_url = \"https://issuer.example/token\"", "token_url", "does not apply to kind = \"dpop\""),
        ];
        for (kind, line, field, says) in cases {
            let text = format!("[tokens.t]\nkind = \"{kind}\"\n{line}\n");
            let errors = crate::config::Config::from_text(&dir.path().join("sidecar.toml"), &text)
                .expect_err("a field the kind does not take");
            let key = format!("tokens.t.{field}");
            let Some(refusal) = errors.0.iter().find(|d| d.key_path == key) else {
                panic!("{kind} does not refuse {field}: {errors}");
            };
            assert!(refusal.message.contains(says), "{kind}/{field}: {errors}");
            let line_of_field = if field == "claims" { 4 } else { 3 };
            assert_eq!(refusal.line, line_of_field, "{kind}/{field}: {errors}");
        }
    }

    fn decoded(part: &str) -> serde_json::Value {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    /// GitHub's recipe: `iat` 60 s in the past, `exp` counted from the real signing time; and
    /// `${VAR}` in `kid` and `[header]` values, as in claims.
    #[test]
    fn iat_skew_back_dates_iat_and_nbf_and_env_expands_in_the_header() {
        std::env::set_var("TS_UNIT_KID_SUFFIX", "2026-11");
        let text = "[tokens.gh]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\n\
                    key = \"a secret only for this test, long enough\"\nttl = \"9m\"\niat_skew = \"60s\"\n\
                    auto_claims = [\"iat\", \"exp\", \"nbf\"]\nkid = \"app-${TS_UNIT_KID_SUFFIX}\"\n\
                    [tokens.gh.header]\nx5u = \"https://keys.example/${TS_UNIT_KID_SUFFIX}\"\n";
        let config = crate::config::Config::from_text(Path::new("skew-test.toml"), text).expect("valid config");
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let minted = config.tokens["gh"].mint(now).expect("signs");
        let value = String::from_utf8(minted.value.to_vec()).expect("ASCII");
        let parts: Vec<&str> = value.split('.').collect();
        let (header, claims) = (decoded(parts[0]), decoded(parts[1]));
        assert_eq!(claims["iat"], 2_000_000_000u64 - 60);
        assert_eq!(claims["nbf"], 2_000_000_000u64 - 60);
        assert_eq!(claims["exp"], 2_000_000_000u64 + 540);
        assert_eq!(minted.expires_at, now + Duration::from_secs(540), "the store expires it at its exp");
        assert_eq!(header["kid"], "app-2026-11");
        assert_eq!(header["x5u"], "https://keys.example/2026-11");

        let bad = text.replace("iat_skew = \"60s\"", "iat_skew = \"10m\"");
        let errors = crate::config::Config::from_text(Path::new("skew-test.toml"), &bad).expect_err("skew >= ttl");
        assert_eq!(errors.0[0].key_path, "tokens.gh.iat_skew", "{errors}");
        let unset = text.replace("TS_UNIT_KID_SUFFIX}\"\n[", "TS_UNIT_KID_UNSET}\"\n[");
        let errors = crate::config::Config::from_text(Path::new("skew-test.toml"), &unset).expect_err("unset variable");
        assert_eq!(errors.0[0].key_path, "tokens.gh.kid", "{errors}");
    }

    /// A downloaded service-account file: its key signs (checked with the public half), and it
    /// supplies `kid`, `iss` and `sub` unless the config sets them.
    #[test]
    fn a_google_service_account_file_signs_and_names_the_account() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let private_pem = std::fs::read_to_string(manifest.join("examples/keys/demo-rsa.key.pem")).expect("demo key");
        let public_pem = std::fs::read(manifest.join("examples/keys/demo-rsa.pub.pem")).expect("demo public key");
        let account = serde_json::json!({
            "type": "service_account",
            "project_id": "demo",
            "private_key_id": "0123abcd",
            "private_key": private_pem,
            "client_email": "agent@demo.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sa.json"), account.to_string()).expect("write");
        let config = |extra: &str| {
            crate::config::Config::from_text(
                &dir.path().join("sidecar.toml"),
                &format!(
                    "[tokens.google]\nalgorithm = \"RS256\"\nkey_type = \"GoogleServiceAccountJson\"\n\
                     key_file = \"sa.json\"\nttl = \"1h\"\n{extra}[tokens.google.claims]\naud = \"https://pubsub.googleapis.com/\"\n"
                ),
            )
        };
        let defaults = config("").expect("valid");
        let token = defaults.tokens["google"].mint(SystemTime::now()).expect("signs");
        let token = std::str::from_utf8(&token.value).expect("ASCII");
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_pem).expect("public key");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["https://pubsub.googleapis.com/"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).expect("verifies");
        assert_eq!(data.header.kid.as_deref(), Some("0123abcd"));
        assert_eq!(data.claims["iss"], "agent@demo.iam.gserviceaccount.com");
        assert_eq!(data.claims["sub"], "agent@demo.iam.gserviceaccount.com");

        let explicit = config("kid = \"mine\"\n").expect("valid");
        let token = explicit.tokens["google"].mint(SystemTime::now()).expect("signs");
        let header = decoded(std::str::from_utf8(&token.value).expect("ASCII").split('.').next().expect("header"));
        assert_eq!(header["kid"], "mine", "the config's kid wins");

        std::fs::write(dir.path().join("sa.json"), "{\"private_key_id\": \"x\", \"note\": \"SECRETBITS\"}")
            .expect("write");
        let errors = config("").expect_err("no private_key");
        assert_eq!(errors.0[0].key_path, "tokens.google.key_file", "{errors}");
        assert!(errors.to_string().contains("service-account JSON"), "{errors}");
        assert!(!errors.to_string().contains("SECRETBITS"), "the file is not quoted: {errors}");
    }

    /// `Debug` of a minted token, and of anything holding one, shows none of the token's three
    /// parts: a `{:?}` in a log line or a panic message cannot leak it.
    #[test]
    fn debug_of_a_minted_token_is_redacted() {
        let text = "[tokens.debug_api]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\n\
                    key = \"a secret only for this test, long enough\"\nttl = \"10m\"\n";
        let config = crate::config::Config::from_text(Path::new("debug-test.toml"), text).expect("valid config");
        let minted = config.tokens["debug_api"].mint(SystemTime::now()).expect("signs");
        let value = String::from_utf8(minted.value.to_vec()).expect("a JWT is ASCII");
        let parts: Vec<&str> = value.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWS compact token: {value}");

        #[derive(Debug)]
        #[allow(dead_code)] // read only through Debug
        struct Holder {
            token: Arc<MintedToken>,
            maybe: Option<MintedToken>,
            all: Vec<MintedToken>,
        }
        let holder = Holder { token: Arc::new(minted.clone()), maybe: Some(minted.clone()), all: vec![minted.clone()] };
        let shown = [format!("{minted:?}"), format!("{minted:#?}"), format!("{holder:?}"), format!("{holder:#?}")];
        for text in &shown {
            for part in &parts {
                assert!(!text.contains(part), "Debug shows part of the token ({part}): {text}");
            }
        }
        // Still useful: it says what it is and when it expires.
        assert!(shown[0].starts_with("MintedToken") && shown[0].contains("expires_at"), "{}", shown[0]);
    }
}
