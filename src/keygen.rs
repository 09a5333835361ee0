//! `token-sidecar keygen`: new signing keys in the forms the config and verifiers want, and
//! recipient key pairs for encrypted tokens (to test a JWE setup end to end).

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use base64::Engine;

use crate::files::Visibility;
use crate::tokens::algorithm::{algorithm_curve, algorithm_family, algorithm_name, Algorithm, KeyFamily, KeyType};
use crate::tokens::base64url;
use crate::tokens::jwe::key_management::{EcdhCurve, KeyAlgorithm, RecipientKind};
use crate::tokens::keys::{ecdsa_algorithm, load_signing_key, pem_wrap};

/// What `keygen` wrote, for the summary it prints.
#[derive(Debug)]
pub struct Generated {
    pub files: Vec<PathBuf>,
    /// A `[tokens.NAME]` snippet that uses the new key.
    pub config_snippet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{} already exists; refusing to overwrite a key (choose another --out or --name)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("--bits applies to RS*/PS*/RSA-OAEP* keys only, and must be 2048, 3072 or 4096")]
    Bits,
    #[error("--crv applies to ECDH-ES keys only: P-256, P-384, P-521 or X25519")]
    Curve,
    #[error("dir uses a shared key exactly as long as the content key; generate one with `openssl rand -base64 32` (A128CBC-HS256, A256GCM) or 64 (A256CBC-HS512), or use --alg A256KW")]
    Dir,
    #[error("key generation failed in the crypto library")]
    Crypto,
}

/// Generates a key for `alg`, writes it under `dir` as `NAME.key.pem` (0600), `NAME.pub.pem`
/// and `NAME.jwk.json` (secrets: `NAME.secret.b64` only).
pub fn generate(
    alg: Algorithm,
    bits: Option<usize>,
    dir: &Path,
    name: &str,
    kid: Option<&str>,
) -> Result<Generated, KeygenError> {
    let family = algorithm_family(alg);
    if bits.is_some() && (family != KeyFamily::Rsa || !matches!(bits, Some(2048 | 3072 | 4096))) {
        return Err(KeygenError::Bits);
    }
    std::fs::create_dir_all(dir).map_err(|source| KeygenError::Write { path: dir.to_path_buf(), source })?;
    let alg_name = algorithm_name(alg);
    let kid_line = kid.map(|k| format!("kid = {}\n", toml_string(k))).unwrap_or_default();
    let table = toml_table_key(name);

    if family == KeyFamily::Hmac {
        let len = match alg {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        };
        let secret: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let path = dir.join(format!("{name}.secret.b64"));
        write_new(&path, base64::engine::general_purpose::STANDARD.encode(secret).as_bytes(), true)?;
        return Ok(Generated {
            config_snippet: format!(
                "[tokens.{table}]\nalgorithm = \"{alg_name}\"\nkey_type = \"Base64Secret\"\nkey_file = {}\nttl = \"15m\"\n{kid_line}",
                toml_string(&path.display().to_string())
            ),
            files: vec![path],
        });
    }

    let (pkcs8, spki, key_type) = match family {
        KeyFamily::Rsa => {
            let (pkcs8, spki, _) = rsa_pair(bits)?;
            (pkcs8, spki, KeyType::RsaPem)
        }
        KeyFamily::Ec => {
            let curve = ecdsa_algorithm(algorithm_curve(alg).ok_or(KeygenError::Crypto)?);
            let pair = EcdsaKeyPair::generate(curve).map_err(|_| KeygenError::Crypto)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            (pkcs8, spki, KeyType::EcPem)
        }
        KeyFamily::Ed | KeyFamily::Hmac => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeygenError::Crypto)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            (pkcs8, spki, KeyType::EdPem)
        }
    };
    let private_pem = pem_wrap("PRIVATE KEY", &pkcs8);
    let signer = load_signing_key(alg, key_type, private_pem.as_bytes()).map_err(|_| KeygenError::Crypto)?;
    let mut jwk = signer.public_jwk().ok_or(KeygenError::Crypto)?;
    if let Some(kid) = kid {
        jwk.insert("kid".into(), kid.into());
    }
    jwk.insert("alg".into(), alg_name.into());
    jwk.insert("use".into(), "sig".into());
    let (key_path, _, _) = write_key_files(dir, name, &private_pem, &spki, &jwk)?;
    let files = vec![key_path.clone(), dir.join(format!("{name}.pub.pem")), dir.join(format!("{name}.jwk.json"))];
    Ok(Generated {
        config_snippet: format!(
            "[tokens.{table}]\nalgorithm = \"{alg_name}\"\nkey_type = \"{}\"\nkey_file = {}\nttl = \"15m\"\n{kid_line}",
            key_type.name(),
            toml_string(&key_path.display().to_string())
        ),
        files,
    })
}

/// Generates a recipient key pair for an encrypted token's `alg` (`RSA-OAEP`, `RSA-OAEP-256`,
/// `ECDH-ES` and `ECDH-ES+A*KW` on `curve`, default P-256), or a shared key for `A*KW`.
/// Writes `NAME.key.pem` (the recipient's private key, 0600: it belongs to the recipient, not
/// the sidecar), `NAME.pub.pem` and `NAME.jwk.json` (public, `use: "enc"`), and prints an
/// `[encrypt]` table naming the public key.
pub fn generate_recipient(
    alg: KeyAlgorithm,
    curve: Option<EcdhCurve>,
    bits: Option<usize>,
    dir: &Path,
    name: &str,
    kid: Option<&str>,
) -> Result<Generated, KeygenError> {
    let kind = alg.recipient();
    if bits.is_some() && (kind != RecipientKind::Rsa || !matches!(bits, Some(2048 | 3072 | 4096))) {
        return Err(KeygenError::Bits);
    }
    if curve.is_some() && kind != RecipientKind::Ecdh {
        return Err(KeygenError::Curve);
    }
    if kind == RecipientKind::Shared(None) {
        return Err(KeygenError::Dir);
    }
    std::fs::create_dir_all(dir).map_err(|source| KeygenError::Write { path: dir.to_path_buf(), source })?;
    let kid_line = kid.map(|k| format!("kid = {}\n", toml_string(k))).unwrap_or_default();
    let table = toml_table_key(name);
    let enc = "A256GCM";
    let mut jwk = serde_json::Map::new();
    let (pkcs8, spki) = match kind {
        RecipientKind::Shared(None) => return Err(KeygenError::Dir),
        RecipientKind::Shared(Some(len)) => {
            let secret: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let path = dir.join(format!("{name}.secret.b64"));
            write_new(&path, base64::engine::general_purpose::STANDARD.encode(secret).as_bytes(), true)?;
            return Ok(Generated {
                config_snippet: format!(
                    "[tokens.{table}.encrypt]\nalg = \"{}\"\nenc = \"{enc}\"\nkey_type = \"Base64Secret\"\nkey_file = {}\n{kid_line}",
                    alg.name(),
                    toml_string(&path.display().to_string())
                ),
                files: vec![path],
            });
        }
        RecipientKind::Rsa => {
            let (pkcs8, spki, (n, e)) = rsa_pair(bits)?;
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), base64url(&n).into());
            jwk.insert("e".into(), base64url(&e).into());
            (pkcs8, spki)
        }
        RecipientKind::Ecdh => {
            let curve = curve.unwrap_or(EcdhCurve::P256);
            let private =
                aws_lc_rs::agreement::PrivateKey::generate(curve.agreement()).map_err(|_| KeygenError::Crypto)?;
            let pkcs8 = agreement_pkcs8(curve, &private)?;
            let public = private.compute_public_key().map_err(|_| KeygenError::Crypto)?;
            let spki: PublicKeyX509Der<'static> = public.as_der().map_err(|_| KeygenError::Crypto)?;
            let point = public.as_ref();
            if curve == EcdhCurve::X25519 {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "X25519".into());
                jwk.insert("x".into(), base64url(point).into());
            } else {
                let n = (point.len() - 1) / 2;
                jwk.insert("kty".into(), "EC".into());
                jwk.insert("crv".into(), curve.name().into());
                jwk.insert("x".into(), base64url(&point[1..=n]).into());
                jwk.insert("y".into(), base64url(&point[1 + n..]).into());
            }
            (pkcs8, spki.as_ref().to_vec())
        }
    };
    if let Some(kid) = kid {
        jwk.insert("kid".into(), kid.into());
    }
    jwk.insert("alg".into(), alg.name().into());
    jwk.insert("use".into(), "enc".into());
    let (key_path, pub_path, jwk_path) = write_key_files(dir, name, &pem_wrap("PRIVATE KEY", &pkcs8), &spki, &jwk)?;
    Ok(Generated {
        config_snippet: format!(
            "[tokens.{table}.encrypt]\nalg = \"{}\"\nenc = \"{enc}\"\nkey_file = {}\n{kid_line}",
            alg.name(),
            toml_string(&pub_path.display().to_string())
        ),
        files: vec![key_path, pub_path, jwk_path],
    })
}

/// An agreement key as PKCS#8 v1. aws-lc-rs writes EC keys itself but not X25519 ones, whose
/// PKCS#8 form (RFC 8410) is a fixed prefix and the 32-byte private key.
fn agreement_pkcs8(curve: EcdhCurve, key: &aws_lc_rs::agreement::PrivateKey) -> Result<Vec<u8>, KeygenError> {
    use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
    if curve != EcdhCurve::X25519 {
        let der: Pkcs8V1Der<'static> = key.as_der().map_err(|_| KeygenError::Crypto)?;
        return Ok(der.as_ref().to_vec());
    }
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.110 }, OCTET STRING { OCTET STRING (32) } }
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20];
    let seed: Curve25519SeedBin<'static> = key.as_be_bytes().map_err(|_| KeygenError::Crypto)?;
    if seed.as_ref().len() != 32 {
        return Err(KeygenError::Crypto);
    }
    Ok([&PREFIX[..], seed.as_ref()].concat())
}

/// A new RSA key: PKCS#8, SubjectPublicKeyInfo, and the modulus and exponent.
fn rsa_pair(bits: Option<usize>) -> Result<(Vec<u8>, Vec<u8>, RsaNumbers), KeygenError> {
    let size = match bits.unwrap_or(2048) {
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => KeySize::Rsa2048,
    };
    let pair = RsaKeyPair::generate(size).map_err(|_| KeygenError::Crypto)?;
    let pkcs8 = pair.as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
    let spki = pair.public_key().as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
    let parts = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    Ok((pkcs8, spki, (parts.n, parts.e)))
}

/// An RSA public key's modulus and exponent.
type RsaNumbers = (Vec<u8>, Vec<u8>);

/// Writes `NAME.key.pem` (0600), `NAME.pub.pem` and `NAME.jwk.json`, refusing to overwrite.
fn write_key_files(
    dir: &Path,
    name: &str,
    private_pem: &str,
    spki: &[u8],
    jwk: &serde_json::Map<String, serde_json::Value>,
) -> Result<(PathBuf, PathBuf, PathBuf), KeygenError> {
    let jwk_json = serde_json::to_string_pretty(jwk).map_err(|_| KeygenError::Crypto)?;
    let key_path = dir.join(format!("{name}.key.pem"));
    let pub_path = dir.join(format!("{name}.pub.pem"));
    let jwk_path = dir.join(format!("{name}.jwk.json"));
    for p in [&key_path, &pub_path, &jwk_path] {
        if p.exists() {
            return Err(KeygenError::Exists(p.clone()));
        }
    }
    write_new(&key_path, private_pem.as_bytes(), true)?;
    write_new(&pub_path, pem_wrap("PUBLIC KEY", spki).as_bytes(), false)?;
    write_new(&jwk_path, format!("{jwk_json}\n").as_bytes(), false)?;
    Ok((key_path, pub_path, jwk_path))
}

/// A TOML string literal, escaped.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise (a dotted name must not nest tables).
fn toml_table_key(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        s.to_string()
    } else {
        toml_string(s)
    }
}

/// Creates a key file, mapping failures to keygen's errors.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), KeygenError> {
    let visibility = if private { Visibility::Private } else { Visibility::Public };
    crate::files::write_new(path, contents, visibility).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => KeygenError::Exists(path.to_path_buf()),
        _ => KeygenError::Write { path: path.to_path_buf(), source },
    })
}
