//! Content encryption (RFC 7518 §5): AES-GCM and AES-CBC with HMAC-SHA2, on aws-lc-rs.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

/// A content encryption algorithm (`enc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncryption {
    A128Gcm,
    A256Gcm,
    A128CbcHs256,
    A256CbcHs512,
}

/// Every `enc` accepted, in the order shown to users.
pub const CONTENT_ENCRYPTIONS: [(&str, ContentEncryption); 4] = [
    ("A128GCM", ContentEncryption::A128Gcm),
    ("A256GCM", ContentEncryption::A256Gcm),
    ("A128CBC-HS256", ContentEncryption::A128CbcHs256),
    ("A256CBC-HS512", ContentEncryption::A256CbcHs512),
];

/// The sealed content: ciphertext and authentication tag.
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

impl ContentEncryption {
    pub fn parse(name: &str) -> Option<ContentEncryption> {
        CONTENT_ENCRYPTIONS.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    pub fn name(self) -> &'static str {
        CONTENT_ENCRYPTIONS.iter().find(|(_, e)| *e == self).map_or("", |(n, _)| n)
    }

    /// Bytes of the content encryption key (for CBC-HS: the MAC key and the AES key).
    pub fn key_len(self) -> usize {
        match self {
            ContentEncryption::A128Gcm => 16,
            ContentEncryption::A256Gcm | ContentEncryption::A128CbcHs256 => 32,
            ContentEncryption::A256CbcHs512 => 64,
        }
    }

    /// Bytes of the initialization vector: 96 bits for GCM, one AES block for CBC.
    pub fn iv_len(self) -> usize {
        match self {
            ContentEncryption::A128Gcm | ContentEncryption::A256Gcm => 12,
            ContentEncryption::A128CbcHs256 | ContentEncryption::A256CbcHs512 => 16,
        }
    }

    /// Encrypts `plaintext` under `cek` and `iv`, authenticating `aad` (the ASCII of the
    /// encoded protected header). The caller supplies a fresh random CEK and IV per token.
    pub fn seal(self, cek: &[u8], iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, &'static str> {
        if cek.len() != self.key_len() || iv.len() != self.iv_len() {
            return Err("wrong content key or IV length");
        }
        match self {
            ContentEncryption::A128Gcm | ContentEncryption::A256Gcm => {
                let algorithm = if self == ContentEncryption::A128Gcm { &AES_128_GCM } else { &AES_256_GCM };
                let key = LessSafeKey::new(UnboundKey::new(algorithm, cek).map_err(|_| "AES-GCM key")?);
                let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| "AES-GCM nonce")?;
                let mut ciphertext = plaintext.to_vec();
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut ciphertext)
                    .map_err(|_| "AES-GCM encryption")?;
                Ok(Sealed { ciphertext, tag: tag.as_ref().to_vec() })
            }
            ContentEncryption::A128CbcHs256 | ContentEncryption::A256CbcHs512 => {
                cbc_hmac(self == ContentEncryption::A128CbcHs256, cek, iv, aad, plaintext)
            }
        }
    }
}

/// AES_CBC_HMAC_SHA2 (RFC 7518 §5.2.2.1): the first half of the key authenticates, the second
/// encrypts; the tag is the first half of HMAC(A || IV || E || AL), AL being the bit length of
/// A as a 64-bit big-endian number.
fn cbc_hmac(small: bool, cek: &[u8], iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, &'static str> {
    let half = cek.len() / 2;
    let (mac_key, enc_key) = cek.split_at(half);
    let (cipher, hash) = if small { (&AES_128, hmac::HMAC_SHA256) } else { (&AES_256, hmac::HMAC_SHA512) };
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(cipher, enc_key).map_err(|_| "AES key")?)
        .map_err(|_| "AES-CBC key")?;
    let iv: [u8; 16] = iv.try_into().map_err(|_| "AES-CBC IV")?;
    let mut ciphertext = plaintext.to_vec();
    key.less_safe_encrypt(&mut ciphertext, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| "AES-CBC encryption")?;
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hash, mac_key));
    mac.update(aad);
    mac.update(&iv);
    mac.update(&ciphertext);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let tag = mac.sign().as_ref()[..half].to_vec();
    Ok(Sealed { ciphertext, tag })
}
