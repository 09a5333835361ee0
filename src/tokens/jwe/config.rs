//! `[tokens.NAME.encrypt]`: checked when the config loads, like a signing key.

use toml::Spanned;

use super::content::{ContentEncryption, CONTENT_ENCRYPTIONS};
use super::key_management::{KeyAlgorithm, RecipientKind, KEY_ALGORITHMS};
use super::recipient::{recipient_key, RecipientKeyType, RECIPIENT_KEY_TYPES};
use super::Encryptor;
use crate::config::raw::RawEncrypt;
use crate::config::Collector;
use crate::tokens::jwt::expand_env_str;
use crate::tokens::{key_source_of, read_key, BuildContext};

/// A checked `[encrypt]` table, with the material it read (for the token's fingerprint) and
/// its key file (to watch).
pub struct BuiltEncryption {
    pub encryptor: Encryptor,
    pub material: Vec<u8>,
    pub key_file: Option<std::path::PathBuf>,
}

fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Checks one `[encrypt]` table, reading and checking the recipient key. Problems go to `c`.
pub fn build(ctx: &BuildContext<'_>, raw: &Spanned<RawEncrypt>, c: &mut Collector<'_>) -> Option<BuiltEncryption> {
    let before = c.len();
    let r = raw.get_ref();
    let at = |field: &str| format!("{}.encrypt.{field}", ctx.key_path);
    let table = format!("{}.encrypt", ctx.key_path);
    let alg = match &r.alg {
        None => {
            c.error(raw.span(), &table, format!("missing `alg` (one of {})", names(&KEY_ALGORITHMS)));
            None
        }
        Some(a) => KeyAlgorithm::parse(a.get_ref()).or_else(|| {
            let e = format!(
                "unknown key management algorithm {:?} (expected one of {})",
                a.get_ref(),
                names(&KEY_ALGORITHMS)
            );
            c.error(a.span(), at("alg"), e);
            None
        }),
    };
    let enc = match &r.enc {
        None => {
            c.error(raw.span(), &table, format!("missing `enc` (one of {})", names(&CONTENT_ENCRYPTIONS)));
            None
        }
        Some(e) => ContentEncryption::parse(e.get_ref()).or_else(|| {
            let m = format!(
                "unknown content encryption {:?} (expected one of {})",
                e.get_ref(),
                names(&CONTENT_ENCRYPTIONS)
            );
            c.error(e.span(), at("enc"), m);
            None
        }),
    };
    let lookup = |k: &str| std::env::var(k).ok();
    let kid = r
        .kid
        .as_ref()
        .and_then(|k| expand_env_str(k.get_ref(), &lookup).map_err(|e| c.error(k.span(), at("kid"), e)).ok());
    let key_type = match &r.key_type {
        None => None,
        Some(t) => match RecipientKeyType::parse(t.get_ref()) {
            Some(kt) => Some(kt),
            None => {
                let m = format!("unknown key type {:?} (expected one of {})", t.get_ref(), names(&RECIPIENT_KEY_TYPES));
                c.error(t.span(), at("key_type"), m);
                return None;
            }
        },
    };
    let (material, key_file) = read_key(ctx, "encrypt.", raw.span(), [&r.key, &r.key_file, &r.key_env], c);
    let (Some(alg), Some(enc), Some(material)) = (alg, enc, material) else { return None };
    if c.len() != before {
        return None;
    }
    let (field, span) = key_source_of([&r.key, &r.key_file, &r.key_env], raw.span());
    let Some(key_type) = key_type.or_else(|| RecipientKeyType::detect(&material)) else {
        let hint = match alg.recipient() {
            RecipientKind::Shared(_) => "set key_type to Secret, Base64Secret or UrlSafeBase64Secret (or give a JWK)",
            _ => "give the recipient's public key as PEM (\"-----BEGIN PUBLIC KEY-----\") or as a JWK",
        };
        c.error(span, at(field), format!("cannot tell how the recipient key is written: {hint}"));
        return None;
    };
    match recipient_key(alg, enc, key_type, &material) {
        Ok(recipient) => {
            Some(BuiltEncryption { encryptor: Encryptor::new(alg, enc, kid, recipient), material, key_file })
        }
        Err(e) => {
            c.error(span, at(field), e.to_string());
            None
        }
    }
}
