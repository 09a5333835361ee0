//! The signing algorithms and key types a JWT token may name, and which pairs fit together.

use jsonwebtoken::Algorithm;

/// Every algorithm name accepted in `algorithm = "..."`, in the order shown to users.
pub const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("EdDSA", Algorithm::EdDSA),
];

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
    pub const ALL: [KeyType; 10] = [
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
        }
    }

    pub fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn family(self) -> KeyFamily {
        match self {
            KeyType::Secret | KeyType::Base64Secret | KeyType::UrlSafeBase64Secret => KeyFamily::Hmac,
            KeyType::RsaPem | KeyType::RsaDer | KeyType::GoogleServiceAccountJson => KeyFamily::Rsa,
            KeyType::EcPem | KeyType::EcDer => KeyFamily::Ec,
            KeyType::EdPem | KeyType::EdDer => KeyFamily::Ed,
        }
    }

    /// Whether the material is binary DER given as base64 text.
    pub fn is_der(self) -> bool {
        matches!(self, KeyType::RsaDer | KeyType::EcDer | KeyType::EdDer)
    }
}

/// The canonical name of an algorithm (`Algorithm` is non-exhaustive, so names live here).
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
        Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
        Algorithm::EdDSA => KeyFamily::Ed,
        _ => KeyFamily::Rsa,
    }
}

/// The key types that may be used with an algorithm.
pub fn compatible_key_types(alg: Algorithm) -> impl Iterator<Item = KeyType> {
    let family = algorithm_family(alg);
    KeyType::ALL.into_iter().filter(move |k| k.family() == family)
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
        }
    }

    #[test]
    fn names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(KeyType::parse(k.name()), Some(k));
        }
        assert_eq!(KeyType::parse("rsapem"), None);
    }
}
