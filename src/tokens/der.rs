//! The little DER the key code reads itself: one element at a time, to look inside PKCS#8,
//! PKCS#1 and SubjectPublicKeyInfo structures (explaining a key that cannot be used, and
//! taking a recipient's EC or X25519 point out of its public key).

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const BIT_STRING: u8 = 0x03;
pub const OID: u8 = 0x06;

/// rsaEncryption, 1.2.840.113549.1.1.1.
pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// X25519, 1.3.101.110.
pub const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
/// prime256v1, 1.2.840.10045.3.1.7.
pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// secp521r1, 1.3.132.0.35.
pub const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// Reads one element: (tag, contents, rest).
pub fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The parts of a SubjectPublicKeyInfo: the algorithm OID, the parameter OID if any (a
/// curve), and the key bits.
#[derive(Debug, PartialEq, Eq)]
pub struct PublicKeyInfo<'a> {
    pub algorithm: &'a [u8],
    pub parameter: Option<&'a [u8]>,
    pub key: &'a [u8],
}

/// Reads a SubjectPublicKeyInfo.
pub fn read_subject_public_key_info(spki: &[u8]) -> Option<PublicKeyInfo<'_>> {
    let (SEQUENCE, body, _) = element(spki)? else { return None };
    let (SEQUENCE, identifier, rest) = element(body)? else { return None };
    let (OID, algorithm, parameters) = element(identifier)? else { return None };
    let parameter = match element(parameters) {
        Some((OID, oid, _)) => Some(oid),
        _ => None,
    };
    let (BIT_STRING, bits, _) = element(rest)? else { return None };
    let (0, key) = bits.split_first()? else { return None };
    Some(PublicKeyInfo { algorithm, parameter, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_read_and_truncated_elements_are_not() {
        let mut encoded = vec![OCTET_STRING, 0x82, 0x01, 0x2c];
        encoded.extend(std::iter::repeat_n(7u8, 300));
        let (tag, read, rest) = element(&encoded).expect("reads");
        assert_eq!((tag, read.len(), rest.len()), (OCTET_STRING, 300, 0));
        assert!(element(&encoded[..100]).is_none());
    }

    #[test]
    fn reads_an_ec_subject_public_key_info() {
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 0, 04 01 02 } }
        let mut spki = vec![SEQUENCE, 27, SEQUENCE, 19, OID, 7];
        spki.extend_from_slice(EC_PUBLIC_KEY);
        spki.extend_from_slice(&[OID, 8]);
        spki.extend_from_slice(P256);
        spki.extend_from_slice(&[BIT_STRING, 4, 0, 4, 1, 2]);
        let expected = PublicKeyInfo { algorithm: EC_PUBLIC_KEY, parameter: Some(P256), key: &[4, 1, 2] };
        assert_eq!(read_subject_public_key_info(&spki), Some(expected));
    }
}
