//! JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037): a private JWK as a signing key
//! (`key_type = "Jwk"`), and the members the JWE recipient code reads from a public one.
//!
//! Errors name the member that is wrong, never a key value.

use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use serde_json::{Map, Value};

use super::algorithm::{algorithm_curve, algorithm_family, algorithm_name, Algorithm, Curve, KeyFamily};
use super::keys::{ecdsa_algorithm, rsa_pair, wrong_curve, KeyError};
use super::signer::Signer;

/// base64url with or without padding (RFC 7515 says without; some tools add it).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One JWK's members, parsed from key material.
pub struct Jwk(Map<String, Value>);

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk").field("kty", &self.0.get("kty")).field("kid", &self.0.get("kid")).finish_non_exhaustive()
    }
}

impl Jwk {
    /// Parses one JWK (a JSON object). A JWK set is refused with a hint: the sidecar needs
    /// to know which key is meant.
    pub fn parse(material: &[u8]) -> Result<Jwk, KeyError> {
        let value: Value = serde_json::from_slice(material).map_err(|e| KeyError::Malformed {
            expected: "a JWK (a JSON object with \"kty\")",
            reason: format!("not valid JSON at line {} column {}", e.line(), e.column()),
        })?;
        let Value::Object(members) = value else {
            return Err(KeyError::Jwk("is not a JSON object".into()));
        };
        if members.contains_key("keys") && !members.contains_key("kty") {
            return Err(KeyError::Jwk(
                "is a JWK set ({\"keys\": [...]}); give the one key to use, as its own JSON object".into(),
            ));
        }
        Ok(Jwk(members))
    }

    /// `kty`: `RSA`, `EC`, `OKP` or `oct`.
    pub fn kty(&self) -> Result<&str, KeyError> {
        self.text("kty")
    }

    /// `kid`, if the key names itself.
    pub fn kid(&self) -> Option<&str> {
        self.0.get("kid").and_then(Value::as_str)
    }

    /// Whether the key carries private members (`d`, or `k` of a symmetric key).
    pub fn is_private(&self) -> bool {
        self.0.contains_key("d") || self.0.contains_key("k")
    }

    /// A string member.
    pub fn text(&self, name: &str) -> Result<&str, KeyError> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(KeyError::Jwk(format!("member \"{name}\" is not a string"))),
            None => Err(KeyError::Jwk(format!("has no \"{name}\" member"))),
        }
    }

    /// A base64url member, decoded.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, KeyError> {
        let text = self.text(name)?;
        B64URL
            .decode(text.trim())
            .map_err(|_| KeyError::Jwk(format!("member \"{name}\" is not base64url")))
            .and_then(|b| if b.is_empty() { Err(KeyError::Jwk(format!("member \"{name}\" is empty"))) } else { Ok(b) })
    }

    /// Checks `alg` and `use` when the key states them: a key marked for another
    /// algorithm or for encryption is a mistake worth stopping at.
    fn check_purpose(&self, wanted_alg: &str, wanted_use: &str) -> Result<(), KeyError> {
        if let Some(alg) = self.0.get("alg").and_then(Value::as_str) {
            if alg != wanted_alg {
                return Err(KeyError::Jwk(format!("is marked \"alg\": {alg:?}, but is used for {wanted_alg}")));
            }
        }
        if let Some(usage) = self.0.get("use").and_then(Value::as_str) {
            if usage != wanted_use {
                return Err(KeyError::Jwk(format!(
                    "is marked \"use\": {usage:?}, but is used for {}",
                    if wanted_use == "sig" { "signing (\"sig\")" } else { "encryption (\"enc\")" }
                )));
            }
        }
        Ok(())
    }

    /// The EC point (`04 || x || y`) and curve of an `EC` key.
    pub fn ec_point(&self) -> Result<(Curve, Vec<u8>), KeyError> {
        let crv = self.text("crv")?;
        let curve = Curve::from_name(crv)
            .ok_or_else(|| KeyError::Jwk(format!("has \"crv\": {crv:?}, not P-256, P-384 or P-521")))?;
        let n = curve.coordinate_len();
        let (x, y) = (self.bytes("x")?, self.bytes("y")?);
        if x.len() != n || y.len() != n {
            return Err(KeyError::Jwk(format!("\"x\" and \"y\" of a {} key must be {n} bytes each", curve.name())));
        }
        let mut point = Vec::with_capacity(1 + 2 * n);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Ok((curve, point))
    }

    /// The public numbers of an `RSA` key.
    pub fn rsa_public(&self) -> Result<PublicKeyComponents<Vec<u8>>, KeyError> {
        Ok(PublicKeyComponents { n: self.bytes("n")?, e: self.bytes("e")? })
    }
}

/// A signing key from a private JWK, for `alg`.
pub fn signing_key(alg: Algorithm, material: &[u8]) -> Result<Signer, KeyError> {
    let jwk = Jwk::parse(material)?;
    let kty = jwk.kty()?;
    let family = algorithm_family(alg);
    let expected_kty = match family {
        KeyFamily::Hmac => "oct",
        KeyFamily::Rsa => "RSA",
        KeyFamily::Ec => "EC",
        KeyFamily::Ed => "OKP",
    };
    if kty != expected_kty {
        return Err(KeyError::Jwk(format!(
            "has \"kty\": {kty:?}, but {} needs a {expected_kty:?} key",
            algorithm_name(alg)
        )));
    }
    jwk.check_purpose(algorithm_name(alg), "sig")?;
    if !jwk.is_private() {
        return Err(KeyError::Jwk(format!(
            "is a public key (no \"{}\"); the sidecar needs the private key to sign",
            if family == KeyFamily::Hmac { "k" } else { "d" }
        )));
    }
    match family {
        KeyFamily::Hmac => Ok(Signer::hmac(alg, &jwk.bytes("k")?)),
        KeyFamily::Rsa => rsa(alg, &jwk),
        KeyFamily::Ec => ec(alg, &jwk),
        KeyFamily::Ed => ed(&jwk),
    }
}

fn rsa(alg: Algorithm, jwk: &Jwk) -> Result<Signer, KeyError> {
    for member in ["p", "q", "dp", "dq", "qi"] {
        if !jwk.0.contains_key(member) {
            return Err(KeyError::Jwk(format!(
                "has no \"{member}\"; an RSA JWK needs its CRT members (p, q, dp, dq, qi) to sign"
            )));
        }
    }
    let components = KeyPairComponents {
        public_key: jwk.rsa_public()?,
        d: jwk.bytes("d")?,
        p: jwk.bytes("p")?,
        q: jwk.bytes("q")?,
        dP: jwk.bytes("dp")?,
        dQ: jwk.bytes("dq")?,
        qInv: jwk.bytes("qi")?,
    };
    let modulus_bits = components.public_key.n.iter().skip_while(|b| **b == 0).count() * 8;
    if modulus_bits < 2048 {
        return Err(KeyError::RsaTooSmall { bits: modulus_bits });
    }
    let pair = RsaKeyPair::from_components(&components)
        .map_err(|_| KeyError::Jwk("is not a consistent RSA key (its numbers do not fit together)".into()))?;
    rsa_pair(alg, pair)
}

fn ec(alg: Algorithm, jwk: &Jwk) -> Result<Signer, KeyError> {
    let (curve, point) = jwk.ec_point()?;
    let wanted = algorithm_curve(alg).unwrap_or(curve);
    if curve != wanted {
        return Err(wrong_curve(alg, wanted, curve));
    }
    let mut d = jwk.bytes("d")?;
    let n = curve.coordinate_len();
    if d.len() > n {
        return Err(KeyError::Jwk(format!("\"d\" of a {} key must be {n} bytes", curve.name())));
    }
    // RFC 7518 §6.2.2.1 wants d at full length; some tools drop leading zero bytes.
    while d.len() < n {
        d.insert(0, 0);
    }
    let pair = EcdsaKeyPair::from_private_key_and_public_key(ecdsa_algorithm(curve), &d, &point)
        .map_err(|_| KeyError::Jwk("is not a consistent EC key (\"d\" does not match \"x\" and \"y\")".into()))?;
    Ok(Signer::ecdsa(alg, pair))
}

fn ed(jwk: &Jwk) -> Result<Signer, KeyError> {
    let crv = jwk.text("crv")?;
    if crv != "Ed25519" {
        return Err(KeyError::Jwk(format!("has \"crv\": {crv:?}; EdDSA signs with Ed25519 keys only")));
    }
    let (seed, public) = (jwk.bytes("d")?, jwk.bytes("x")?);
    let pair = Ed25519KeyPair::from_seed_and_public_key(&seed, &public)
        .map_err(|_| KeyError::Jwk("is not a consistent Ed25519 key (\"d\" does not match \"x\")".into()))?;
    Ok(Signer::ed25519(pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7520 §3.2: an EC P-521 private key.
    const RFC7520_EC_P521: &str = r#"{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521",
        "x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt",
        "y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1",
        "d":"AAhRON2r9cqXX1hg-RoI6R1tX5p2rUAYdmpHZoC1XNM56KtscrX6zbKipQrCW9CGZH3T4ubpnoTKLDYJ_fF3_rJt"}"#;

    #[test]
    fn an_rfc7520_p521_key_signs_es512_and_publishes_its_public_half() {
        let signer = signing_key(Algorithm::ES512, RFC7520_EC_P521.as_bytes()).expect("loads");
        let jwk = signer.public_jwk().expect("public JWK");
        assert_eq!(jwk["crv"], "P-521");
        assert_eq!(
            jwk["x"],
            "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt"
        );
        assert!(!jwk.contains_key("d"));
        let signature = signer.sign(b"message").expect("signs");
        assert_eq!(signature.len(), 132, "r || s, 66 bytes each");
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
            Jwk::parse(RFC7520_EC_P521.as_bytes()).unwrap().ec_point().unwrap().1,
        );
        public.verify(b"message", &signature).expect("verifies");
    }

    #[test]
    fn mistakes_are_named_without_quoting_the_key() {
        let err = |alg, text: &str| signing_key(alg, text.as_bytes()).expect_err("refused").to_string();
        let e = err(Algorithm::ES256, RFC7520_EC_P521);
        assert!(e.contains("ES256 needs a P-256 key, but this is a P-521 key (use ES512)"), "{e}");
        let with = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut jwk: Map<String, Value> = serde_json::from_str(RFC7520_EC_P521).unwrap();
            edit(&mut jwk);
            Value::Object(jwk).to_string()
        };
        assert!(err(Algorithm::ES512, &with(&|j| drop(j.remove("d")))).contains("is a public key"));
        assert!(err(Algorithm::RS256, RFC7520_EC_P521).contains("needs a \"RSA\" key"));
        assert!(
            err(Algorithm::ES512, &with(&|j| drop(j.insert("use".into(), "enc".into())))).contains("\"use\": \"enc\"")
        );
        assert!(err(Algorithm::ES512, &with(&|j| drop(j.insert("alg".into(), "ES256".into()))))
            .contains("\"alg\": \"ES256\""));
        let other = with(&|j| {
            drop(j.insert(
                "d".into(),
                "AQhRON2r9cqXX1hg-RoI6R1tX5p2rUAYdmpHZoC1XNM56KtscrX6zbKipQrCW9CGZH3T4ubpnoTKLDYJ_fF3_rJt".into(),
            ))
        });
        let e = err(Algorithm::ES512, &other);
        assert!(e.contains("not a consistent EC key") && !e.contains("AQhRON"), "{e}");
        assert!(err(Algorithm::HS256, r#"{"keys":[]}"#).contains("JWK set"));
        assert!(err(Algorithm::HS256, "{not json").contains("not valid JSON"));
    }

    #[test]
    fn an_oct_jwk_signs_hmac() {
        let signer = signing_key(Algorithm::HS256, br#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#)
            .expect("loads");
        assert!(signer.public_jwk().is_none(), "a secret is never published");
        assert_eq!(signer.sign(b"x").expect("signs").len(), 32);
    }
}
