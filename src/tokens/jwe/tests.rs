//! RFC 7516 Appendix A.3, RFC 7518 Appendix B.3 and C, RFC 7520 §5 (the JOSE cookbook) and
//! RFC 8037 Appendix A.6, typed in as test data: each step of the encryption must reproduce
//! the published bytes when given the published key, CEK, IV and ephemeral key.

use std::collections::VecDeque;

use aws_lc_rs::agreement::PrivateKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::aes_kw;
use super::content::ContentEncryption;
use super::key_management::{concat_kdf, manage, EcdhCurve, Fresh, KeyAlgorithm, RecipientKey};
use super::*;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The cookbook's plaintext (RFC 7520 §5).
const FRODO: &str = "You can trust us to stick with you through thick and thin\u{2013}to the bitter end. And you can trust us to keep any secret of yours\u{2013}closer than you keep it yourself. But you cannot trust us to let you face trouble alone, and go off without a word. We are your friends, Frodo.";

/// Supplies the vectors' "random" values in order.
struct Given {
    bytes: VecDeque<Vec<u8>>,
    ephemeral: Option<PrivateKey>,
}

impl Fresh for Given {
    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, &'static str> {
        let next = self.bytes.pop_front().ok_or("no more test bytes")?;
        assert_eq!(next.len(), len, "the vector's value has the length the algorithm asks for");
        Ok(next)
    }

    fn ephemeral(&mut self, _curve: EcdhCurve) -> Result<PrivateKey, &'static str> {
        self.ephemeral.take().ok_or("no test ephemeral key")
    }
}

fn seal(enc: ContentEncryption, cek: &[u8], iv: &[u8], protected_b64u: &str, plaintext: &[u8]) -> (String, String) {
    let sealed = enc.seal(cek, iv, protected_b64u.as_bytes(), plaintext).expect("seals");
    (base64url(&sealed.ciphertext), base64url(&sealed.tag))
}

/// RFC 7516 Appendix A.3: A128KW and A128CBC-HS256, the whole compact token.
#[test]
fn rfc7516_a3_a128kw_a128cbc_hs256() {
    let cek = [
        4, 211, 31, 197, 84, 157, 252, 254, 11, 100, 157, 250, 63, 170, 106, 206, 107, 124, 212, 45, 111, 107, 9, 219,
        200, 177, 0, 240, 143, 156, 44, 207,
    ];
    let kek = b64("GawgguFyGrWKav7AX4VKUg");
    let encrypted_key = aes_kw::wrap(&kek, &cek).expect("wraps");
    assert_eq!(base64url(&encrypted_key), "6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ");
    let token = seal_compact(
        r#"{"alg":"A128KW","enc":"A128CBC-HS256"}"#,
        ContentEncryption::A128CbcHs256,
        &cek,
        &encrypted_key,
        &b64("AxY8DCtDaGlsbGljb3RoZQ"),
        b"Live long and prosper.",
    )
    .expect("seals");
    assert_eq!(
        token,
        "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.\
         6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ.\
         AxY8DCtDaGlsbGljb3RoZQ.\
         KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY.\
         U0m_YmjN04DJvceFICbCVQ"
    );
}

/// RFC 7518 Appendix B.3: AES_256_CBC_HMAC_SHA_512.
#[test]
fn rfc7518_b3_a256cbc_hs512() {
    let key: Vec<u8> = (0u8..64).collect();
    let plaintext =
        b"A cipher system must not be required to be secret, and it must be able to fall into the hands of the enemy without inconvenience";
    let sealed = ContentEncryption::A256CbcHs512
        .seal(&key, &hex("1af38c2dc2b96ffdd86694092341bc04"), b"The second principle of Auguste Kerckhoffs", plaintext)
        .expect("seals");
    assert_eq!(
        sealed.ciphertext,
        hex("4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd822c301dd67c373bccb584ad3e9279c2\
             e6d12a1374b77f077553df829410446b36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3\
             a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950bbe2638d09dd7a4930930806d0703b1f6")
    );
    assert_eq!(sealed.tag, hex("4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5"));
}

/// RFC 7520 §5.8: A128KW with A128GCM.
#[test]
fn rfc7520_5_8_a128kw_a128gcm() {
    let recipient = RecipientKey::Shared(b64("GZy6sIZ6wl9NJOKB-jnmVQ"));
    let mut given = Given { bytes: [b64("aY5_Ghmk9KxWPBLu_glx1w")].into(), ephemeral: None };
    let managed = manage(KeyAlgorithm::A128Kw, &recipient, ContentEncryption::A128Gcm, &mut given).expect("wraps");
    assert_eq!(base64url(&managed.encrypted_key), "CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx");
    let (ciphertext, tag) = seal(
        ContentEncryption::A128Gcm,
        &managed.cek,
        &b64("Qx0pmsDa8KnJc9Jo"),
        "eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC04MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIn0",
        FRODO.as_bytes(),
    );
    assert!(ciphertext.starts_with("AwliP-KmWgsZ37BvzCefNen6VTbRK3QMA4TkvRkH0tP1bTdhtFJgJxeVmJkLD61A1hnWGetdg11c9ADsnWgL56NyxwSYjU1ZEHcGkd3EkU0vjHi9gTlb90qSYFfeF0LwkcTtjbYKCsiNJQkcIp1yeM03OmuiYSoYJVSpf7ej6zaYcMv3WwdxDFl8REwOhNImk2Xld2JXq6BR53TSFkyT7PwVLuq-1GwtGHlQeg7gDT6xW0JqHDPn_H-puQsmthc9Zg0ojmJfqqFvETUxLAF-KjcBTS5dNy6egwkYtOt8EIHK-oEsKYtZRaa8Z7MOZ7UGxGIMvEmxrGCPeJa14slv2-gaqK0kEThkaSqdYw0FkQZF"));
    assert_eq!(tag, "ER7MWJZ1FBI_NKvn7Zb1Lw");
}

/// RFC 7520 §5.6: dir with A128GCM.
#[test]
fn rfc7520_5_6_dir_a128gcm() {
    let key = b64("XctOhJAkA-pD9Lh7ZgW_2A");
    let mut given = Given { bytes: VecDeque::new(), ephemeral: None };
    let managed = manage(KeyAlgorithm::Dir, &RecipientKey::Shared(key.clone()), ContentEncryption::A128Gcm, &mut given)
        .expect("dir");
    assert_eq!(managed.cek, key);
    assert!(managed.encrypted_key.is_empty(), "dir sends no encrypted key");
    let (ciphertext, tag) = seal(
        ContentEncryption::A128Gcm,
        &managed.cek,
        &b64("refa467QzzKx6QAB"),
        "eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02MTdiNWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0",
        FRODO.as_bytes(),
    );
    assert!(ciphertext.starts_with("JW_i_f52hww_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7YhLpT1bjFuvZPjQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9zMDB2n0cRDIHAzFVeJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtBP-c_BIwCPTjb9o0SbdcdREEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZAxscj5g-NJsUPbjk29-s7LJAGb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9aKZSRSInZI-wjsY0yu3cT4_aQ3i1o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TTnp"));
    assert_eq!(tag, "vbb32Xvllea2OtmHAdccRQ");
}

/// RFC 7520 §5.2: the content part of RSA-OAEP with A256GCM (the encrypted key is random,
/// so the key part is checked by decrypting below).
#[test]
fn rfc7520_5_2_a256gcm_content() {
    let (ciphertext, tag) = seal(
        ContentEncryption::A256Gcm,
        &b64("mYMfsggkTAm0TbvtlFh2hyoXnbEzJQjMxmgLN3d8xXA"),
        &b64("-nBoKLH0YkLZPSI9"),
        "eyJhbGciOiJSU0EtT0FFUCIsImtpZCI6InNhbXdpc2UuZ2FtZ2VlQGhvYmJpdG9uLmV4YW1wbGUiLCJlbmMiOiJBMjU2R0NNIn0",
        FRODO.as_bytes(),
    );
    assert!(ciphertext.starts_with("o4k2cnGN8rSSw3IDo1YuySkqeS_t2m1GXklSgqBdpACm6UJuJowOHC5ytjqYgRL-I-soPlwqMUf4UgRWWeaOGNw6vGW-xyM01lTYxrXfVzIIaRdhYtEMRBvBWbEwP7ua1DRfvaOjgZv6Ifa3brcAM64d8p5lhhNcizPersuhw5f-pGYzseva-TUaL8iWnctc-sSwy7SQmRkfhDjwbz0fz6kFovEgj64X1I5s7E6GLp5fnbYGLa1QUiML7Cc2GxgvI7zqWo0YIEc7aCflLG1-8BboVWFdZKLK9vNoycrYHumwzKluLWEbSVmaPpOslY2n525DxDfWaVFUfKQxMF56vn4B9QMpWAbnypNimbM8zVOw"));
    assert_eq!(tag, "UCGiqJxhBI3IFVdPalHHvA");
}

/// RSA-OAEP uses SHA-1 and MGF1-SHA-1, RSA-OAEP-256 SHA-256 for both (RFC 7518 §4.3): the
/// recipient's private key opens each only with the matching parameters.
#[test]
fn rsa_oaep_variants_use_their_own_hash() {
    use aws_lc_rs::rsa::{
        KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
    };
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("key");
    let public = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(private.public_key()).expect("public");
    let recipient = RecipientKey::Rsa(public);
    let opener = OaepPrivateDecryptingKey::new(private).expect("private");
    for (alg, right, wrong) in [
        (KeyAlgorithm::RsaOaep, &OAEP_SHA1_MGF1SHA1, &OAEP_SHA256_MGF1SHA256),
        (KeyAlgorithm::RsaOaep256, &OAEP_SHA256_MGF1SHA256, &OAEP_SHA1_MGF1SHA1),
    ] {
        let mut fresh = key_management::SystemFresh;
        let managed = manage(alg, &recipient, ContentEncryption::A256Gcm, &mut fresh).expect("encrypts");
        let mut out = vec![0u8; 512];
        assert_eq!(opener.decrypt(right, &managed.encrypted_key, &mut out, None).expect("opens"), &managed.cek[..]);
        assert!(opener.decrypt(wrong, &managed.encrypted_key, &mut out, None).is_err());
    }
}

/// RFC 7520 §5.4: ECDH-ES+A128KW on P-384 with A128GCM.
#[test]
fn rfc7520_5_4_ecdh_es_a128kw_p384() {
    let public = [
        vec![4],
        b64("YU4rRUzdmVqmRtWOs2OpDE_T5fsNIodcG8G5FWPrTPMyxpzsSOGaQLpe2FpxBmu2"),
        b64("A8-yxCHxkfBz3hKZfI1jUYMjUhsEveZ9THuwFjH2sCNdtksRJU7D5-SkgaFL1ETP"),
    ]
    .concat();
    let recipient = RecipientKey::Ecdh { curve: EcdhCurve::P384, public };
    let ephemeral = key_management::private_key(
        EcdhCurve::P384,
        &b64("D5H4Y_5PSKZvhfVFbcCYJOtcGZygRgfZkpsBr59Icmmhe9sW6nkZ8WfwhinUfWJg"),
    );
    let mut given = Given { bytes: [b64("Nou2ueKlP70ZXDbq9UrRwg")].into(), ephemeral: Some(ephemeral) };
    let managed =
        manage(KeyAlgorithm::EcdhEsA128Kw, &recipient, ContentEncryption::A128Gcm, &mut given).expect("agrees");
    assert_eq!(base64url(&managed.encrypted_key), "0DJjBXri_kBcC46IkU5_Jk9BqaQeHdv2");
    let epk = managed.epk.expect("epk");
    assert_eq!(epk["crv"], "P-384");
    assert_eq!(epk["x"], "uBo4kHPw6kbjx5l0xowrd_oYzBmaz-GKFZu4xAFFkbYiWgutEK6iuEDsQ6wNdNg3");
    assert_eq!(epk["y"], "sp3p5SGhZVC2faXumI-e9JU2Mo8KpoYrFDr5yPNVtW4PgEwZOyQTA-JdaY8tb7E0");
    assert!(!epk.contains_key("d"), "the ephemeral private key never leaves");
    let (_, tag) = seal(
        ContentEncryption::A128Gcm,
        &managed.cek,
        &b64("mH-G2zVqgztUtnW_"),
        "eyJhbGciOiJFQ0RILUVTK0ExMjhLVyIsImtpZCI6InBlcmVncmluLnRvb2tAdHVja2Jvcm91Z2guZXhhbXBsZSIsImVwayI6eyJrdHkiOiJFQyIsImNydiI6IlAtMzg0IiwieCI6InVCbzRrSFB3Nmtiang1bDB4b3dyZF9vWXpCbWF6LUdLRlp1NHhBRkZrYllpV2d1dEVLNml1RURzUTZ3TmROZzMiLCJ5Ijoic3AzcDVTR2haVkMyZmFYdW1JLWU5SlUyTW84S3BvWXJGRHI1eVBOVnRXNFBnRXdaT3lRVEEtSmRhWTh0YjdFMCJ9LCJlbmMiOiJBMTI4R0NNIn0",
        FRODO.as_bytes(),
    );
    assert_eq!(tag, "WuGzxmcreYjpHGJoa17EBg");
}

/// RFC 7520 §5.5: ECDH-ES (direct) on P-256 with A128CBC-HS256.
#[test]
fn rfc7520_5_5_ecdh_es_p256_a128cbc_hs256() {
    let public = [
        vec![4],
        b64("Ze2loSV3wrroKUN_4zhwGhCqo3Xhu1td4QjeQ5wIVR0"),
        b64("HlLtdXARY_f55A3fnzQbPcm6hgr34Mp8p-nuzQCE0Zw"),
    ]
    .concat();
    let recipient = RecipientKey::Ecdh { curve: EcdhCurve::P256, public };
    let ephemeral = key_management::private_key(EcdhCurve::P256, &b64("AtH35vJsQ9SGjYfOsjUxYXQKrPH3FjZHmEtSKoSN8cM"));
    let mut given = Given { bytes: VecDeque::new(), ephemeral: Some(ephemeral) };
    let managed =
        manage(KeyAlgorithm::EcdhEs, &recipient, ContentEncryption::A128CbcHs256, &mut given).expect("agrees");
    assert_eq!(base64url(&managed.cek), "hzHdlfQIAEehb8Hrd_mFRhKsKLEzPfshfXs9l6areCc");
    assert!(managed.encrypted_key.is_empty(), "direct key agreement sends no encrypted key");
    let (_, tag) = seal(
        ContentEncryption::A128CbcHs256,
        &managed.cek,
        &b64("yc9N8v5sYyv3iGQT926IUg"),
        "eyJhbGciOiJFQ0RILUVTIiwia2lkIjoibWVyaWFkb2MuYnJhbmR5YnVja0BidWNrbGFuZC5leGFtcGxlIiwiZXBrIjp7Imt0eSI6IkVDIiwiY3J2IjoiUC0yNTYiLCJ4IjoibVBVS1RfYkFXR0hJaGcwVHBqanFWc1AxclhXUXVfdndWT0hIdE5rZFlvQSIsInkiOiI4QlFBc0ltR2VBUzQ2ZnlXdzVNaFlmR1RUMElqQnBGdzJTUzM0RHY0SXJzIn0sImVuYyI6IkExMjhDQkMtSFMyNTYifQ",
        FRODO.as_bytes(),
    );
    assert_eq!(tag, "WCCkNa-x4BeB9hIDIfFuhg");
}

/// RFC 7518 Appendix C: the Concat KDF with PartyUInfo "Alice" and PartyVInfo "Bob".
#[test]
fn rfc7518_c_concat_kdf() {
    let alice = key_management::private_key(EcdhCurve::P256, &b64("0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo"));
    let bob = [
        vec![4],
        b64("weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ"),
        b64("e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck"),
    ]
    .concat();
    let z = aws_lc_rs::agreement::agree(
        &alice,
        aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::ECDH_P256, &bob),
        (),
        |z| Ok(z.to_vec()),
    )
    .expect("agrees");
    assert_eq!(base64url(&concat_kdf(&z, b"A128GCM", b"Alice", b"Bob", 16)), "VqqN6vgjbSBcIijNcacQGg");
}

/// RFC 8037 Appendix A.6 (the keys of RFC 7748 §6.1): X25519 agreement and the `epk`.
#[test]
fn rfc8037_a6_x25519() {
    let ephemeral = key_management::private_key(
        EcdhCurve::X25519,
        &hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    );
    let bob = b64("3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08");
    let z = aws_lc_rs::agreement::agree(
        &ephemeral,
        aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::X25519, &bob),
        (),
        |z| Ok(z.to_vec()),
    )
    .expect("agrees");
    assert_eq!(z, hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"));
    let recipient = RecipientKey::Ecdh { curve: EcdhCurve::X25519, public: bob };
    let mut given = Given { bytes: VecDeque::new(), ephemeral: Some(ephemeral) };
    let managed = manage(KeyAlgorithm::EcdhEs, &recipient, ContentEncryption::A128Gcm, &mut given).expect("agrees");
    let epk = managed.epk.expect("epk");
    assert_eq!((epk["kty"].as_str(), epk["crv"].as_str()), (Some("OKP"), Some("X25519")));
    assert_eq!(epk["x"], "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo");
    assert_eq!(managed.cek, concat_kdf(&z, b"A128GCM", b"", b"", 16));
}

/// Every token gets a new CEK and IV (and ephemeral key): the same signed token encrypted
/// twice shares no key material.
#[test]
fn every_token_has_a_fresh_cek_iv_and_ephemeral_key() {
    let kw = Encryptor::new(
        KeyAlgorithm::A256Kw,
        ContentEncryption::A256Gcm,
        Some("k1".into()),
        RecipientKey::Shared(vec![3; 32]),
    );
    let (a, b) = (kw.encrypt(b"a.b.c").unwrap(), kw.encrypt(b"a.b.c").unwrap());
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    assert_eq!(a.len(), 5);
    assert_eq!(a[0], b[0], "same header");
    assert_ne!(a[1], b[1], "fresh CEK");
    assert_ne!(a[2], b[2], "fresh IV");
    let header: serde_json::Value = serde_json::from_slice(&b64(a[0])).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "A256KW", "enc": "A256GCM", "cty": "JWT", "kid": "k1"}));

    let probe = PrivateKey::generate(&aws_lc_rs::agreement::X25519).unwrap();
    let public = probe.compute_public_key().unwrap().as_ref().to_vec();
    let ecdh = Encryptor::new(
        KeyAlgorithm::EcdhEs,
        ContentEncryption::A128CbcHs256,
        None,
        RecipientKey::Ecdh { curve: EcdhCurve::X25519, public },
    );
    let headers: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_slice(&b64(ecdh.encrypt(b"x").unwrap().split('.').next().unwrap())).unwrap())
        .collect();
    assert_ne!(headers[0]["epk"]["x"], headers[1]["epk"]["x"], "a fresh ephemeral key per token");
}
