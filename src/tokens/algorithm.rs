//! The signing algorithms and key types a JWT token may name, and which pairs fit together.
//!
//! The sidecar signs with aws-lc-rs itself (see [`super::signer`]), so the algorithm list is
//! its own: it includes ES512 (P-521), which jsonwebtoken lacks.

/// A JWS signing algorithm (RFC 7518 §3), as named in `algorithm = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    ES256,
    ES384,
    ES512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

/// Every algorithm name accepted in `algorithm = "..."`, in the order shown to users.
pub const ALGORITHMS: [(&str, Algorithm); 13] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("ES512", Algorithm::ES512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("EdDSA", Algorithm::EdDSA),
];

impl Algorithm {
    /// Whether one signature costs so little (a few tens of microseconds at most) that it may
    /// be made on the request path for every request: HMAC, ES256 and EdDSA. RSA (0.7 ms and
    /// more) and the larger curves need an explicit opt-in there.
    pub fn fast_enough_per_request(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 | Algorithm::ES256 | Algorithm::EdDSA)
    }
}

/// The elliptic curve an EC algorithm signs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The ES algorithm that signs on this curve.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Curve::P256 => Algorithm::ES256,
            Curve::P384 => Algorithm::ES384,
            Curve::P521 => Algorithm::ES512,
        }
    }

    /// Bytes of one coordinate (and of the private scalar).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    pub fn from_name(name: &str) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521].into_iter().find(|c| c.name() == name)
    }
}

/// The curve of an ES algorithm.
pub fn algorithm_curve(alg: Algorithm) -> Option<Curve> {
    match alg {
        Algorithm::ES256 => Some(Curve::P256),
        Algorithm::ES384 => Some(Curve::P384),
        Algorithm::ES512 => Some(Curve::P521),
        _ => None,
    }
}

/// How the key material in `key`, `key_file` or `key_env` is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// The secret's bytes as written.
    Secret,
    /// A secret in standard base64.
    Base64Secret,
    /// A secret in URL-safe base64.
    UrlSafeBase64Secret,
    /// An RSA private key in PEM (PKCS#1 or PKCS#8).
    RsaPem,
    /// An EC private key in PEM (SEC1 or PKCS#8).
    EcPem,
    /// An Ed25519 private key in PEM (PKCS#8).
    EdPem,
    /// An RSA private key as base64 DER (PKCS#1 or PKCS#8).
    RsaDer,
    /// An EC private key as base64 DER (SEC1 or PKCS#8).
    EcDer,
    /// An Ed25519 private key as base64 DER (PKCS#8).
    EdDer,
    /// A Google service-account key file as downloaded (JSON): its `private_key` signs, its
    /// `private_key_id` is the default `kid`, its `client_email` the default `iss` and `sub`.
    GoogleServiceAccountJson,
    /// A private JWK (RFC 7517): `RSA`, `EC` (P-256/384/521), `OKP` (Ed25519) or `oct`. Its
    /// `kid` is the default `kid`. Fits every algorithm whose family the key belongs to.
    Jwk,
}

/// The families of keys: each algorithm takes keys of exactly one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyType {
    pub const ALL: [KeyType; 11] = [
        KeyType::Secret,
        KeyType::Base64Secret,
        KeyType::UrlSafeBase64Secret,
        KeyType::RsaPem,
        KeyType::EcPem,
        KeyType::EdPem,
        KeyType::RsaDer,
        KeyType::EcDer,
        KeyType::EdDer,
        KeyType::GoogleServiceAccountJson,
        KeyType::Jwk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Secret => "Secret",
            KeyType::Base64Secret => "Base64Secret",
            KeyType::UrlSafeBase64Secret => "UrlSafeBase64Secret",
            KeyType::RsaPem => "RsaPem",
            KeyType::EcPem => "EcPem",
            KeyType::EdPem => "EdPem",
            KeyType::RsaDer => "RsaDer",
            KeyType::EcDer => "EcDer",
            KeyType::EdDer => "EdDer",
            KeyType::GoogleServiceAccountJson => "GoogleServiceAccountJson",
            KeyType::Jwk => "Jwk",
        }
    }

    pub fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The one family of keys this encoding holds; `None` for a JWK, which names its own.
    pub fn family(self) -> Option<KeyFamily> {
        match self {
            KeyType::Secret | KeyType::Base64Secret | KeyType::UrlSafeBase64Secret => Some(KeyFamily::Hmac),
            KeyType::RsaPem | KeyType::RsaDer | KeyType::GoogleServiceAccountJson => Some(KeyFamily::Rsa),
            KeyType::EcPem | KeyType::EcDer => Some(KeyFamily::Ec),
            KeyType::EdPem | KeyType::EdDer => Some(KeyFamily::Ed),
            KeyType::Jwk => None,
        }
    }

    /// Whether the material is binary DER given as base64 text.
    pub fn is_der(self) -> bool {
        matches!(self, KeyType::RsaDer | KeyType::EcDer | KeyType::EdDer)
    }
}

/// The canonical name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    ALGORITHMS.iter().find(|(_, a)| *a == alg).map_or("unsupported", |(n, _)| n)
}

pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The key family an algorithm signs with.
pub fn algorithm_family(alg: Algorithm) -> KeyFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => KeyFamily::Ec,
        Algorithm::EdDSA => KeyFamily::Ed,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => KeyFamily::Rsa,
    }
}

/// The key types that may be used with an algorithm: those of its family, and a JWK.
pub fn compatible_key_types(alg: Algorithm) -> impl Iterator<Item = KeyType> {
    let family = algorithm_family(alg);
    KeyType::ALL.into_iter().filter(move |k| k.family().is_none_or(|f| f == family))
}

/// Names joined for error messages: `"HS256, HS384, ..."`.
pub fn algorithm_names() -> String {
    ALGORITHMS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

pub fn key_type_names() -> String {
    KeyType::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_has_at_least_two_key_types() {
        for (name, alg) in ALGORITHMS {
            assert_eq!(parse_algorithm(name), Some(alg));
            assert_eq!(algorithm_name(alg), name);
            assert!(compatible_key_types(alg).count() >= 2, "{name}");
            assert!(compatible_key_types(alg).any(|k| k == KeyType::Jwk), "{name} takes a JWK");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(KeyType::parse(k.name()), Some(k));
        }
        assert_eq!(KeyType::parse("rsapem"), None);
    }

    #[test]
    fn only_fast_algorithms_run_per_request_by_default() {
        let fast: Vec<&str> = ALGORITHMS.iter().filter(|(_, a)| a.fast_enough_per_request()).map(|(n, _)| *n).collect();
        assert_eq!(fast, ["HS256", "HS384", "HS512", "ES256", "EdDSA"]);
    }
}
