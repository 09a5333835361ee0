//! JWT tokens: a header and typed claims signed with one key, re-signed on every refresh (or,
//! with `per_request`, for every request).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::algorithm::{algorithm_name, Algorithm};
use super::signer::Signer;
use super::{base64url, MintError};

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
    /// The key, parsed once.
    pub signer: Arc<Signer>,
    pub kid: Option<String>,
    typ: Option<String>,
    extras: Map<String, Value>,
    /// The protected header as JSON text (`typ`, `alg`, `kid`, then the extra fields), and
    /// its base64url form, built once: every signature reuses it.
    pub header_json: String,
    header_segment: String,
    /// The configured claims, already converted to JSON with their TOML types kept.
    pub claims: Map<String, Value>,
    pub auto: AutoClaims,
    /// How far `iat` and `nbf` are back-dated, for servers whose clocks run behind (GitHub
    /// recommends 60 s); `exp` is still counted from the real signing time.
    pub iat_skew: Duration,
    /// `[encrypt]`: the signed token is then encrypted for its recipient (a nested JWT).
    pub encrypt: Option<Arc<super::jwe::Encryptor>>,
    /// `per_request = true`: signed for each request, over claims derived from it.
    pub per_request: Option<Arc<super::per_request::PerRequest>>,
}

impl std::fmt::Debug for JwtDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtDefinition")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

/// The protected header of a JWS as JSON text: `typ` (if any), `alg`, `kid` (if any), then the
/// extra fields in name order. Built by hand so the order is stable and familiar.
pub fn header_json(typ: Option<&str>, alg: &str, kid: Option<&str>, extras: &Map<String, Value>) -> String {
    let mut members: Vec<(&str, Value)> = Vec::with_capacity(3 + extras.len());
    if let Some(typ) = typ {
        members.push(("typ", typ.into()));
    }
    members.push(("alg", alg.into()));
    if let Some(kid) = kid {
        members.push(("kid", kid.into()));
    }
    members.extend(extras.iter().map(|(k, v)| (k.as_str(), v.clone())));
    json_object(&members)
}

/// A JSON object with members in the given order.
pub fn json_object(members: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String((*name).to_string()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

impl JwtDefinition {
    pub fn new(
        signer: Arc<Signer>,
        typ: Option<&str>,
        kid: Option<String>,
        extras: &Map<String, Value>,
        claims: Map<String, Value>,
        auto: AutoClaims,
        iat_skew: Duration,
    ) -> JwtDefinition {
        let algorithm = signer.algorithm();
        let header_json = header_json(typ, algorithm_name(algorithm), kid.as_deref(), extras);
        let header_segment = base64url(header_json.as_bytes());
        JwtDefinition {
            algorithm,
            signer,
            kid,
            typ: typ.map(str::to_string),
            extras: extras.clone(),
            header_json,
            header_segment,
            claims,
            auto,
            iat_skew,
            encrypt: None,
            per_request: None,
        }
    }

    /// Signs one token issued at `iat` (whole seconds since the epoch) and valid for `ttl`.
    pub fn sign(&self, iat: u64, ttl: Duration) -> Result<String, MintError> {
        self.sign_inner(None, iat, ttl, |_| {})
    }

    /// Signs this per-request token for one request: the configured claims and header plus
    /// those derived from `facts`. The outer error is what the request did not give.
    pub fn sign_for_request(
        &self,
        per_request: &super::per_request::PerRequest,
        facts: &super::per_request::RequestFacts,
        iat: u64,
        ttl: Duration,
    ) -> Result<Result<String, MintError>, super::per_request::DeriveError> {
        let derived_header = per_request.header(facts)?;
        let mut derived_claims = Map::new();
        per_request.claims(facts, &mut derived_claims)?;
        let header_segment = if derived_header.is_empty() {
            None
        } else {
            let mut extras = self.extras.clone();
            extras.extend(derived_header);
            let json = header_json(self.typ.as_deref(), algorithm_name(self.algorithm), self.kid.as_deref(), &extras);
            Some(base64url(json.as_bytes()))
        };
        Ok(self.sign_inner(header_segment.as_deref(), iat, ttl, |claims| claims.extend(derived_claims)))
    }

    /// Signs with the configured header (or `header_segment`), the configured and automatic
    /// claims and `more`, then encrypts when `[encrypt]` asks.
    fn sign_inner(
        &self,
        header_segment: Option<&str>,
        iat: u64,
        ttl: Duration,
        more: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<String, MintError> {
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
        more(&mut claims);
        let payload = serde_json::to_vec(&claims).map_err(|e| MintError::Sign(format!("claims: {e}")))?;
        let jws = sign_compact(header_segment.unwrap_or(&self.header_segment), &payload, &self.signer)?;
        match &self.encrypt {
            None => Ok(jws),
            Some(encryptor) => encryptor.encrypt(jws.as_bytes()),
        }
    }

    /// The public key as a JWK with `kid`, `alg` and `use`, for asymmetric algorithms.
    pub fn public_jwk(&self) -> Option<Map<String, Value>> {
        let mut jwk = self.signer.public_jwk()?;
        if let Some(kid) = &self.kid {
            jwk.insert("kid".into(), kid.clone().into());
        }
        jwk.insert("alg".into(), algorithm_name(self.algorithm).into());
        jwk.insert("use".into(), "sig".into());
        Some(jwk)
    }
}

/// A compact JWS: `header.payload.signature`, the header already base64url-encoded.
pub fn sign_compact(header_segment: &str, payload: &[u8], signer: &Signer) -> Result<String, MintError> {
    let mut out = String::with_capacity(header_segment.len() + payload.len() * 4 / 3 + 200);
    out.push_str(header_segment);
    out.push('.');
    base64::Engine::encode_string(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload, &mut out);
    let signature = signer.sign(out.as_bytes())?;
    out.push('.');
    base64::Engine::encode_string(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &signature, &mut out);
    Ok(out)
}

/// A random UUIDv4-formatted id, unique per signed token.
pub fn random_jti() -> String {
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
