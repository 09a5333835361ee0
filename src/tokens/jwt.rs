//! JWT tokens: a header and typed claims signed with one key, re-signed on every refresh.

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::algorithm::{algorithm_family, KeyFamily};
use super::MintError;

/// Claims the sidecar can add on every signing, each switchable in `auto_claims`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoClaims {
    pub iat: bool,
    pub exp: bool,
    pub nbf: bool,
    pub jti: bool,
}

impl Default for AutoClaims {
    fn default() -> Self {
        AutoClaims { iat: true, exp: true, nbf: false, jti: false }
    }
}

impl AutoClaims {
    pub const NAMES: [&'static str; 4] = ["iat", "exp", "nbf", "jti"];

    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut auto = AutoClaims { iat: false, exp: false, nbf: false, jti: false };
        for n in names {
            match n {
                "iat" => auto.iat = true,
                "exp" => auto.exp = true,
                "nbf" => auto.nbf = true,
                "jti" => auto.jti = true,
                other => {
                    return Err(format!("unknown automatic claim {other:?} (expected some of iat, exp, nbf, jti)"))
                }
            }
        }
        Ok(auto)
    }

    pub fn contains(&self, name: &str) -> bool {
        match name {
            "iat" => self.iat,
            "exp" => self.exp,
            "nbf" => self.nbf,
            "jti" => self.jti,
            _ => false,
        }
    }
}

/// A checked JWT definition, ready to sign.
#[derive(Clone)]
pub struct JwtDefinition {
    pub algorithm: Algorithm,
    pub key: EncodingKey,
    pub header: Header,
    /// The configured claims, already converted to JSON with their TOML types kept.
    pub claims: Map<String, Value>,
    pub auto: AutoClaims,
    /// How far `iat` and `nbf` are back-dated, for servers whose clocks run behind (GitHub
    /// recommends 60 s); `exp` is still counted from the real signing time.
    pub iat_skew: Duration,
}

impl std::fmt::Debug for JwtDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtDefinition")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.header.kid)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl JwtDefinition {
    /// Signs one token issued at `iat` (whole seconds since the epoch) and valid for `ttl`.
    pub fn sign(&self, iat: u64, ttl: Duration) -> Result<String, MintError> {
        let mut claims = self.claims.clone();
        let back_dated = iat.saturating_sub(self.iat_skew.as_secs());
        if self.auto.iat {
            claims.insert("iat".into(), back_dated.into());
        }
        if self.auto.nbf {
            claims.insert("nbf".into(), back_dated.into());
        }
        if self.auto.exp {
            claims.insert("exp".into(), (iat + ttl.as_secs()).into());
        }
        if self.auto.jti {
            claims.insert("jti".into(), random_jti().into());
        }
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))
    }

    /// The public key as a JWK with `kid`, `alg` and `use`, for asymmetric algorithms.
    pub fn public_jwk(&self) -> Option<Jwk> {
        if algorithm_family(self.algorithm) == KeyFamily::Hmac {
            return None;
        }
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).ok()?;
        jwk.common.key_id = self.header.kid.clone();
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Some(jwk)
    }
}

/// A random UUIDv4-formatted id, unique per signed token.
fn random_jti() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
}

/// Converts a TOML value to JSON, keeping its type. Datetimes become strings in the form they
/// were written: an offset date-time is an RFC 3339 `date-time`, a local date or time is an
/// RFC 3339 `full-date` / `partial-time`, and a local date-time (no zone) stays zoneless,
/// because inventing a zone would put a wrong instant in a signed claim.
pub fn toml_to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be written in JSON"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| Ok((k.clone(), toml_to_json(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

/// Expands `${VAR}` and `${VAR:-default}` in every string of a JSON value; `$${` writes a
/// literal `${`.
pub fn expand_env(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains('$') => *s = expand_str(s, lookup)?,
        Value::Array(items) => items.iter_mut().try_for_each(|v| expand_env(v, lookup))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| expand_env(v, lookup))?,
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}` in one string, as [`expand_env`] does in claims.
pub fn expand_env_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if s.contains('$') {
        expand_str(s, lookup)
    } else {
        Ok(s.to_string())
    }
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let (var, default) = match after[..end].split_once(":-") {
                Some((var, default)) => (var, Some(default)),
                None => (&after[..end], None),
            };
            // As in the shell, `:-` falls back when the variable is unset or empty.
            let val = lookup(var)
                .filter(|v| default.is_none() || !v.is_empty())
                .or_else(|| default.map(str::to_string))
                .ok_or_else(|| {
                    format!("environment variable {var} is not set (write ${{{var}:-default}} to fall back)")
                })?;
            out.push_str(&val);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_keep_the_form_they_were_written_in() {
        let table: toml::Table = toml::from_str(
            "offset = 1979-05-27T07:32:00Z\nshifted = 1979-05-27T00:32:00.5-07:00\n\
             date = 1979-05-27\ntime = 07:32:00\nlocal = 1979-05-27T07:32:00\n",
        )
        .expect("toml");
        let json = toml_to_json(&toml::Value::Table(table)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "offset": "1979-05-27T07:32:00Z",
                "shifted": "1979-05-27T00:32:00.5-07:00",
                "date": "1979-05-27",
                "time": "07:32:00",
                "local": "1979-05-27T07:32:00",
            })
        );
    }

    #[test]
    fn env_expansion() {
        let lookup = |k: &str| (k == "TEAM").then(|| "infra".to_string());
        let mut v = serde_json::json!({"a": "team-${TEAM}", "b": ["$${TEAM}", "$5", "${NOPE:-x}"], "c": 3});
        expand_env(&mut v, &lookup).unwrap();
        assert_eq!(v, serde_json::json!({"a": "team-infra", "b": ["${TEAM}", "$5", "x"], "c": 3}));
        let mut missing = serde_json::json!("${NOPE}");
        assert!(expand_env(&mut missing, &lookup).unwrap_err().starts_with("environment variable NOPE is not set"));
    }

    #[test]
    fn jti_is_uuid_shaped_and_unique() {
        let a = random_jti();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, random_jti());
    }

    #[test]
    fn toml_types_are_kept() {
        let t: toml::Table = toml::from_str("s = 'x'\ni = 3\nf = 1.5\nb = true\na = [1, 'y']\n[t]\nk = 'v'").unwrap();
        let v = toml_to_json(&toml::Value::Table(t)).unwrap();
        assert_eq!(v, serde_json::json!({"s": "x", "i": 3, "f": 1.5, "b": true, "a": [1, "y"], "t": {"k": "v"}}));
    }
}
