//! AES Key Wrap (RFC 3394, the default IV), as JWE's A128KW, A192KW and A256KW use it.
//!
//! Written over single AES blocks (ECB on one block at a time) from aws-lc-rs, whose own key
//! wrap API has no 192-bit key; the unit tests check it against RFC 3394's vectors and
//! aws-lc-rs's own key wrap for 128 and 256 bits.

use aws_lc_rs::cipher::{EncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256};

/// The default initial value of RFC 3394 §2.2.3.1.
const DEFAULT_IV: [u8; 8] = [0xa6; 8];

/// Wraps `key` (a multiple of 8 bytes, at least 16) under the key-encryption key `kek` (16, 24
/// or 32 bytes). The result is 8 bytes longer than `key`.
pub fn wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, &'static str> {
    if !key.len().is_multiple_of(8) || key.len() < 16 {
        return Err("a wrapped key must be a multiple of 8 bytes, at least 16");
    }
    let cipher = match kek.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        _ => return Err("an AES key wrap key must be 16, 24 or 32 bytes"),
    };
    let aes = EncryptingKey::ecb(UnboundCipherKey::new(cipher, kek).map_err(|_| "AES key")?).map_err(|_| "AES key")?;
    let n = key.len() / 8;
    let mut a = DEFAULT_IV;
    let mut r: Vec<[u8; 8]> = key.chunks_exact(8).map(|c| c.try_into().unwrap_or([0; 8])).collect();
    let mut block = [0u8; 16];
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            block[..8].copy_from_slice(&a);
            block[8..].copy_from_slice(ri);
            aes.encrypt(&mut block).map_err(|_| "AES block encryption")?;
            let t = (n as u64) * j + (i as u64 + 1);
            a.copy_from_slice(&block[..8]);
            for (byte, t_byte) in a.iter_mut().zip(t.to_be_bytes()) {
                *byte ^= t_byte;
            }
            ri.copy_from_slice(&block[8..]);
        }
    }
    let mut out = Vec::with_capacity(8 * (n + 1));
    out.extend_from_slice(&a);
    for ri in &r {
        out.extend_from_slice(ri);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    /// RFC 3394 §4.1, §4.2, §4.3 and §4.6.
    #[test]
    fn rfc3394_vectors() {
        let data128 = hex("00112233445566778899AABBCCDDEEFF");
        let kek128 = hex("000102030405060708090A0B0C0D0E0F");
        let kek192 = hex("000102030405060708090A0B0C0D0E0F1011121314151617");
        let kek256 = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        assert_eq!(wrap(&kek128, &data128).unwrap(), hex("1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"));
        assert_eq!(wrap(&kek192, &data128).unwrap(), hex("96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D"));
        assert_eq!(wrap(&kek256, &data128).unwrap(), hex("64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"));
        let data256 = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        assert_eq!(
            wrap(&kek256, &data256).unwrap(),
            hex("28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21")
        );
    }

    #[test]
    fn agrees_with_aws_lc_key_wrap() {
        use aws_lc_rs::key_wrap::{AesKek, KeyWrap, AES_128 as KW128, AES_256 as KW256};
        let key: Vec<u8> = (0u8..64).collect();
        for (kek, algorithm) in [(vec![7u8; 16], &KW128), (vec![9u8; 32], &KW256)] {
            let theirs = AesKek::new(algorithm, &kek).expect("kek");
            let mut out = vec![0u8; key.len() + 8];
            let expected = theirs.wrap(&key, &mut out).expect("wraps").to_vec();
            assert_eq!(wrap(&kek, &key).unwrap(), expected);
        }
    }

    #[test]
    fn refuses_bad_lengths() {
        assert!(wrap(&[0; 15], &[0; 16]).is_err());
        assert!(wrap(&[0; 16], &[0; 12]).is_err());
        assert!(wrap(&[0; 16], &[0; 8]).is_err());
    }
}
