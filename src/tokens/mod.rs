//! Token definitions: what each `[tokens.NAME]` table mints, checked when the config loads.
//!
//! `kind` selects how a token is produced. Only `jwt` exists today; later kinds (an OAuth2
//! token exchange with a JWT assertion, a static secret) add a variant to [`TokenKind`] and
//! their own fields, and the store, routes and substitution stay as they are, because they
//! only ever see a [`MintedToken`].

pub mod algorithm;
pub mod jwt;
pub mod keys;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::Header;
use toml::Spanned;

use crate::config::raw::RawToken;
use crate::config::values::parse_duration;
use crate::config::Collector;
use algorithm::{algorithm_names, compatible_key_types, key_type_names, parse_algorithm, KeyType};
use jwt::{expand_env, toml_to_json, AutoClaims, JwtDefinition};

/// A signed token and its validity window. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct MintedToken {
    pub value: Bytes,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
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
}

/// How a token is produced.
#[derive(Debug, Clone)]
pub enum TokenKind {
    Jwt(JwtDefinition),
}

/// One checked `[tokens.NAME]` entry.
#[derive(Debug, Clone)]
pub struct TokenDefinition {
    pub name: String,
    pub kind: TokenKind,
    pub ttl: Duration,
    /// How long before expiry a fresh token is minted.
    pub refresh_before: Duration,
    key_file: Option<PathBuf>,
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
            if kind.get_ref() != "jwt" {
                c.error(kind.span(), at("kind"), format!("unknown token kind {:?} (expected \"jwt\")", kind.get_ref()));
            }
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
        let refresh_before = match &r.refresh_before {
            None => ttl / 5,
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) if d < ttl => d,
                Ok(_) => {
                    c.error(t.span(), at("refresh_before"), "must be shorter than ttl");
                    ttl / 5
                }
                Err(e) => {
                    c.error(t.span(), at("refresh_before"), e);
                    ttl / 5
                }
            },
        };
        let auto = match &r.auto_claims {
            None => AutoClaims::default(),
            Some(list) => {
                AutoClaims::from_names(list.get_ref().iter().map(|s| s.get_ref().as_str())).unwrap_or_else(|e| {
                    c.error(list.span(), at("auto_claims"), e);
                    AutoClaims::default()
                })
            }
        };
        let claims = claims(ctx, r, auto, c);
        let header = algorithm.map(|alg| header(ctx, r, alg, c));
        let (material, key_file) = key_material(ctx, raw, c);

        let (Some(alg), Some(kt), Some(material), Some(header)) = (algorithm, key_type, material, header) else {
            return None;
        };
        if c.len() != before {
            return None;
        }
        let key_span = [&r.key, &r.key_file, &r.key_env].into_iter().flatten().next().map_or(raw.span(), Spanned::span);
        let key_field = if r.key.is_some() {
            "key"
        } else if r.key_file.is_some() {
            "key_file"
        } else {
            "key_env"
        };
        let key = match keys::load_encoding_key(alg, kt, &material) {
            Ok(k) => k,
            Err(e) => {
                c.error(key_span, at(key_field), e.to_string());
                return None;
            }
        };
        let def = TokenDefinition {
            name: ctx.name.to_string(),
            fingerprint: fingerprint(&[
                format!("{alg:?} {kt:?} {ttl:?} {refresh_before:?} {auto:?}").as_bytes(),
                serde_json::to_string(&header).unwrap_or_default().as_bytes(),
                serde_json::Value::Object(claims.clone()).to_string().as_bytes(),
                &material,
            ]),
            kind: TokenKind::Jwt(JwtDefinition { algorithm: alg, key, header, claims, auto }),
            ttl,
            refresh_before,
            key_file,
        };
        if let Err(e) = def.mint(SystemTime::now()) {
            c.error(key_span, at(key_field), format!("test signature failed: {e}"));
            return None;
        }
        Some(def)
    }

    /// Signs a fresh token. Runs on the refresher, never on the request path.
    pub fn mint(&self, now: SystemTime) -> Result<MintedToken, MintError> {
        match &self.kind {
            TokenKind::Jwt(jwt) => {
                // Whole seconds, as in the claims: `expires_at` must be exactly the `exp` the
                // upstream checks, or a token could be injected in the last second after it.
                let iat = now.duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs();
                let ttl = Duration::from_secs(self.ttl.as_secs());
                let value = jwt.sign(iat, ttl)?;
                let issued_at = UNIX_EPOCH + Duration::from_secs(iat);
                Ok(MintedToken { value: Bytes::from(value), issued_at, expires_at: issued_at + ttl })
            }
        }
    }

    /// The key file to watch for rotation, if the key comes from a file.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// Whether two definitions would mint equivalent tokens (same settings, same key).
    pub fn same_definition(&self, other: &TokenDefinition) -> bool {
        self.fingerprint == other.fingerprint
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TokenKind::Jwt(_) => "jwt",
        }
    }

    pub fn algorithm_name(&self) -> &'static str {
        match &self.kind {
            TokenKind::Jwt(jwt) => algorithm::algorithm_name(jwt.algorithm),
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Jwt(jwt) => jwt.header.kid.as_deref(),
        }
    }

    /// The public verification key, for asymmetric tokens.
    pub fn public_jwk(&self) -> Option<jsonwebtoken::jwk::Jwk> {
        match &self.kind {
            TokenKind::Jwt(jwt) => jwt.public_jwk(),
        }
    }
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

fn header(ctx: &BuildContext<'_>, r: &RawToken, alg: jsonwebtoken::Algorithm, c: &mut Collector<'_>) -> Header {
    let mut header = Header::new(alg);
    header.kid = r.kid.as_ref().map(|k| k.get_ref().clone());
    if let Some(typ) = &r.typ {
        header.typ = (!typ.get_ref().is_empty()).then(|| typ.get_ref().clone());
    }
    for (name, value) in &r.header {
        let key = format!("{}.header.{name}", ctx.key_path);
        if matches!(name.as_str(), "alg" | "kid" | "typ") {
            c.error(value.span(), &key, format!("set `{name}` with its own field on the token, not in [header]"));
            continue;
        }
        match toml_to_json(value.get_ref()) {
            Ok(v) => header.extras.insert(name.clone(), v),
            Err(e) => c.error(value.span(), &key, e),
        }
    }
    header
}

/// Reads the key bytes from exactly one of `key`, `key_file`, `key_env`.
fn key_material(
    ctx: &BuildContext<'_>,
    raw: &Spanned<RawToken>,
    c: &mut Collector<'_>,
) -> (Option<Vec<u8>>, Option<PathBuf>) {
    let r = raw.get_ref();
    let given = [r.key.is_some(), r.key_file.is_some(), r.key_env.is_some()].iter().filter(|b| **b).count();
    if given != 1 {
        c.error(
            raw.span(),
            ctx.key_path,
            if given == 0 {
                "no key given: set one of key_file, key_env or key (inline, for demos only)"
            } else {
                "more than one of key, key_file, key_env is set; keep exactly one"
            },
        );
        return (None, None);
    }
    if let Some(k) = &r.key {
        return (Some(k.get_ref().as_bytes().to_vec()), None);
    }
    if let Some(f) = &r.key_file {
        let path = ctx.base_dir.join(f.get_ref());
        return match std::fs::read(&path) {
            Ok(mut bytes) => {
                strip_one_newline(&mut bytes);
                (Some(bytes), Some(path))
            }
            Err(e) => {
                c.error(f.span(), format!("{}.key_file", ctx.key_path), format!("cannot read {}: {e}", path.display()));
                (None, Some(path))
            }
        };
    }
    if let Some(var) = &r.key_env {
        return match std::env::var_os(var.get_ref()) {
            Some(v) if !v.is_empty() => (Some(v.into_encoded_bytes()), None),
            _ => {
                c.error(
                    var.span(),
                    format!("{}.key_env", ctx.key_path),
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
