//! `token-sidecar keygen`: new signing keys in the forms the config and verifiers want.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::Engine;
use jsonwebtoken::Algorithm;

use crate::files::Visibility;
use crate::tokens::algorithm::{algorithm_family, algorithm_name, KeyFamily, KeyType};
use crate::tokens::keys::{load_encoding_key, pem_wrap};

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
    #[error("--bits applies to RS*/PS* keys only, and must be 2048, 3072 or 4096")]
    Bits,
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
            let size = match bits.unwrap_or(2048) {
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => KeySize::Rsa2048,
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| KeygenError::Crypto)?;
            let pkcs8 = pair.as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(|_| KeygenError::Crypto)?.as_ref().to_vec();
            (pkcs8, spki, KeyType::RsaPem)
        }
        KeyFamily::Ec => {
            let curve = if alg == Algorithm::ES384 {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            } else {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            };
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
    let key = load_encoding_key(alg, key_type, private_pem.as_bytes()).map_err(|_| KeygenError::Crypto)?;
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).map_err(|_| KeygenError::Crypto)?;
    jwk.common.key_id = kid.map(str::to_string);
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let jwk_json = serde_json::to_string_pretty(&jwk).map_err(|_| KeygenError::Crypto)?;

    let key_path = dir.join(format!("{name}.key.pem"));
    let pub_path = dir.join(format!("{name}.pub.pem"));
    let jwk_path = dir.join(format!("{name}.jwk.json"));
    for p in [&key_path, &pub_path, &jwk_path] {
        if p.exists() {
            return Err(KeygenError::Exists(p.clone()));
        }
    }
    write_new(&key_path, private_pem.as_bytes(), true)?;
    write_new(&pub_path, pem_wrap("PUBLIC KEY", &spki).as_bytes(), false)?;
    write_new(&jwk_path, format!("{jwk_json}\n").as_bytes(), false)?;
    Ok(Generated {
        config_snippet: format!(
            "[tokens.{table}]\nalgorithm = \"{alg_name}\"\nkey_type = \"{}\"\nkey_file = {}\nttl = \"15m\"\n{kid_line}",
            key_type.name(),
            toml_string(&key_path.display().to_string())
        ),
        files: vec![key_path, pub_path, jwk_path],
    })
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
