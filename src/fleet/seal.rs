//! Sealing what the fleet writes to Redis: AES-256-GCM under `[fleet] encryption_key`, with
//! the entry's Redis key as associated data.
//!
//! Redis is shared infrastructure and tokens are secrets, so nothing goes there in the clear.
//! Binding the Redis key means an entry copied to another key (say, a token of one identity
//! pasted over another's) fails to open, as does anything written without the fleet's key:
//! a plaintext value, a tampered byte, an entry from another fleet. Such entries are ignored
//! and counted, never used.
//!
//! A sealed value is `TSF1 || nonce (12 bytes) || ciphertext || tag (16 bytes)`. Nonces are
//! random, so one key should seal fewer than 2^32 values (NIST SP 800-38D §8.3); a token fleet
//! writes a handful per token lifetime, and a shared cache should rotate its key well before.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use base64::Engine;

/// Marks a value sealed by this format, so a future format can be told apart.
const MAGIC: &[u8; 4] = b"TSF1";
const TAG_LEN: usize = 16;

/// The fleet's 32-byte key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey([u8; 32]);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey([redacted])")
    }
}

impl FleetKey {
    /// Reads a key as written in a `key_env` variable or a `key_file`: 64 hex digits
    /// (`openssl rand -hex 32`) or base64 of 32 bytes, standard or URL-safe, padded or not
    /// (`openssl rand -base64 32`). Surrounding whitespace is ignored. A `key_file` may also
    /// hold the 32 bytes themselves (`raw_allowed`). Errors never show the key.
    pub fn parse(bytes: &[u8], raw_allowed: bool) -> Result<FleetKey, String> {
        if raw_allowed && bytes.len() == 32 {
            let mut key = [0u8; 32];
            key.copy_from_slice(bytes);
            return Ok(FleetKey(key));
        }
        let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or_default();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect::<Option<Vec<u8>>>()
        } else {
            let unpadded = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
                .ok()
        };
        match decoded {
            Some(key) if key.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(&key);
                Ok(FleetKey(out))
            }
            Some(key) => {
                Err(format!("the key is {} bytes; it must be 32 (make one with `openssl rand -base64 32`)", key.len()))
            }
            None => Err(format!(
                "not a key: expected 64 hex digits or base64 of 32 bytes{} (make one with `openssl rand -base64 32`)",
                if raw_allowed { ", or a file of exactly 32 bytes" } else { "" }
            )),
        }
    }
}

/// Why a stored value was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    /// Not in this format at all (a plaintext value, another program's data).
    #[error("not a sealed entry")]
    Foreign,
    /// In this format, but it does not open under this key for this Redis key: tampered,
    /// moved from another key, or sealed by a fleet with another encryption key.
    #[error("entry does not open under the fleet key for its Redis key")]
    Tampered,
}

/// Seals and opens values, and names Redis keys, under the fleet key.
pub struct Sealer {
    aead: RandomizedNonceKey,
    /// A separate key (derived from the fleet key) for naming entries: an entry's name must
    /// reveal nothing of what it is about, and must not be computable without the key.
    names: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Fails only if the crypto library refuses a 32-byte AES-256 key, which it does not.
    pub fn new(key: &FleetKey) -> Result<Sealer, String> {
        // Two keys from one: the AEAD key and the naming key, each an HMAC of the fleet key
        // over its own label, so neither use can stand in for the other.
        let root = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
        let derive = |label: &[u8]| hmac::sign(&root, label);
        let aead_key = derive(b"token-sidecar fleet seal v1");
        let name_key = derive(b"token-sidecar fleet names v1");
        let aead = RandomizedNonceKey::new(&AES_256_GCM, aead_key.as_ref())
            .map_err(|_| "AES-256-GCM refused the derived key".to_string())?;
        Ok(Sealer { aead, names: hmac::Key::new(hmac::HMAC_SHA256, name_key.as_ref()) })
    }

    /// An opaque, stable name for `identity` (32 hex digits): equal identities give equal
    /// names on every sidecar with the same key.
    pub fn name(&self, identity: &[u8]) -> String {
        let tag = hmac::sign(&self.names, identity);
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plaintext` for storage under `redis_key`. Fails only if the system's random
    /// source does (no nonce, nothing safe to store).
    pub fn seal(&self, redis_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut body = plaintext.to_vec();
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(redis_key), &mut body)
            .map_err(|_| "cannot seal: no random nonce".to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value read from `redis_key`.
    pub fn open(&self, redis_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealed> {
        let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or(Unsealed::Foreign)?;
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(Unsealed::Tampered);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::Tampered)?;
        let mut body = body.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::from(redis_key), &mut body).map_err(|_| Unsealed::Tampered)?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FleetKey {
        FleetKey([byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_redis_key() {
        let sealer = Sealer::new(&key(7)).unwrap();
        let sealed = sealer.seal(b"fleet:token:abc", b"the token").unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(9).any(|w| w == b"the token"), "the plaintext is not in the sealed value");
        assert_eq!(sealer.open(b"fleet:token:abc", &sealed).unwrap(), b"the token");
        assert_eq!(sealer.open(b"fleet:token:abd", &sealed), Err(Unsealed::Tampered), "moved to another key");
        assert_eq!(
            Sealer::new(&key(8)).unwrap().open(b"fleet:token:abc", &sealed),
            Err(Unsealed::Tampered),
            "another fleet"
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert!(sealer.open(b"fleet:token:abc", &flipped).is_err(), "a flipped bit at {i} went unnoticed");
        }
        assert_eq!(sealer.open(b"fleet:token:abc", b"{\"value\":\"plain\"}"), Err(Unsealed::Foreign));
        assert_eq!(sealer.open(b"fleet:token:abc", b"TSF1short"), Err(Unsealed::Tampered));
        assert_ne!(
            sealer.seal(b"k", b"same").unwrap(),
            sealer.seal(b"k", b"same").unwrap(),
            "a fresh nonce every time"
        );
    }

    #[test]
    fn names_are_stable_per_key_and_reveal_nothing() {
        let a = Sealer::new(&key(1)).unwrap();
        assert_eq!(a.name(b"identity"), a.name(b"identity"));
        assert_ne!(a.name(b"identity"), a.name(b"identitz"));
        assert_ne!(a.name(b"identity"), Sealer::new(&key(2)).unwrap().name(b"identity"));
        assert_eq!(a.name(b"identity").len(), 32);
    }

    #[test]
    fn keys_are_read_as_hex_base64_or_raw_bytes_and_never_shown() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let expected = FleetKey(bytes.clone().try_into().unwrap());
        for text in [hex.clone(), hex.to_uppercase(), format!("{b64}\n"), url, b64.trim_end_matches('=').to_string()] {
            assert_eq!(FleetKey::parse(text.as_bytes(), false).as_ref(), Ok(&expected), "{text}");
        }
        assert_eq!(FleetKey::parse(&bytes, true).as_ref(), Ok(&expected), "raw bytes from a file");
        assert!(FleetKey::parse(&bytes, false).is_err(), "raw bytes are not accepted from the environment");
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        let e = FleetKey::parse(short.as_bytes(), false).unwrap_err();
        assert!(e.contains("16 bytes") && !e.contains(&short), "{e}");
        let e = FleetKey::parse(b"correct horse battery staple", true).unwrap_err();
        assert!(!e.contains("horse"), "{e}");
        assert!(!format!("{expected:?}").contains("00"), "Debug shows the key");
    }
}
