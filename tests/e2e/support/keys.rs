//! Key material: the demo keys shipped in `examples/keys`, and keys generated once per test
//! binary with the `openssl` CLI (so they come in the forms users really have).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::client::command;

/// The repository root, where `sidecar.toml` and `examples/` live.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of a demo key or secret in `examples/keys/`.
pub fn demo_key_path(file: &str) -> PathBuf {
    repo_root().join("examples/keys").join(file)
}

/// The contents of a demo key or secret in `examples/keys/`.
pub fn demo_key(file: &str) -> String {
    std::fs::read_to_string(demo_key_path(file)).unwrap_or_else(|e| panic!("examples/keys/{file}: {e}"))
}

/// One asymmetric key in every encoding the tests hand to the sidecar.
pub struct KeyForms {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub pkcs8_pem: String,
    /// PKCS#8 DER, base64.
    pub pkcs8_der_b64: String,
    /// The algorithm-specific form: PKCS#1 for RSA, SEC1 for EC (PEM); `None` for Ed25519.
    pub traditional_pem: Option<String>,
    /// The same, as base64 DER.
    pub traditional_der_b64: Option<String>,
    /// SubjectPublicKeyInfo PEM, from `openssl pkey -pubout`.
    pub public_pem: String,
}

/// Every key the suite uses, generated once per test binary.
pub struct Keys {
    pub rsa: KeyForms,
    pub ec256: KeyForms,
    pub ec384: KeyForms,
    pub ed: KeyForms,
    /// A 1024-bit RSA key from `openssl genrsa 1024` (PKCS#8 PEM, as OpenSSL 3 writes it).
    pub rsa1024_pem: String,
    /// `rsa.pkcs8_pem` encrypted with `openssl pkcs8 -topk8 -v2 aes-256-cbc`.
    pub rsa_encrypted_pem: String,
    /// A self-signed certificate for `rsa`.
    pub rsa_cert_pem: String,
}

/// HMAC secret bytes chosen so their base64 forms contain `+`, `/` (standard) and `-`, `_`
/// (URL-safe): a decoder using the wrong alphabet fails instead of passing by luck.
pub const HMAC_SECRET: [u8; 32] = [
    0xfb, 0xff, 0xbf, 0xfe, 0x3e, 0xff, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0xfa, 0xfb, 0xfc,
    0xfd, 0xfe, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0,
];

/// A plain-text secret for `key_type = "Secret"`.
pub const PLAIN_SECRET: &str = "plain-text secret, exactly as written: 32+ bytes";

/// Standard base64 with padding.
pub fn hmac_secret_b64() -> String {
    STANDARD.encode(HMAC_SECRET)
}

/// URL-safe base64 without padding (as in a JWK `k`).
pub fn hmac_secret_b64url() -> String {
    URL_SAFE_NO_PAD.encode(HMAC_SECRET)
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(generate_keys)
}

fn generate_keys() -> Keys {
    let b64 = |der: Vec<u8>| STANDARD.encode(der);
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("openssl wrote PEM text");

    let rsa_pkcs8 = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], b"");
    let rsa = KeyForms {
        traditional_pem: Some(text(openssl(&["rsa", "-traditional"], &rsa_pkcs8))),
        traditional_der_b64: Some(b64(openssl(&["rsa", "-traditional", "-outform", "DER"], &rsa_pkcs8))),
        pkcs8_der_b64: b64(openssl(&["pkey", "-outform", "DER"], &rsa_pkcs8)),
        public_pem: text(openssl(&["pkey", "-pubout"], &rsa_pkcs8)),
        pkcs8_pem: text(rsa_pkcs8.clone()),
    };
    let ec = |curve: &str| {
        let sec1 = openssl(&["ecparam", "-genkey", "-name", curve, "-noout"], b"");
        KeyForms {
            pkcs8_pem: text(openssl(&["pkcs8", "-topk8", "-nocrypt"], &sec1)),
            pkcs8_der_b64: b64(openssl(&["pkey", "-outform", "DER"], &sec1)),
            traditional_der_b64: Some(b64(openssl(&["ec", "-outform", "DER"], &sec1))),
            public_pem: text(openssl(&["pkey", "-pubout"], &sec1)),
            traditional_pem: Some(text(sec1)),
        }
    };
    let ed_pem = openssl(&["genpkey", "-algorithm", "ED25519"], b"");
    let ed = KeyForms {
        pkcs8_der_b64: b64(openssl(&["pkey", "-outform", "DER"], &ed_pem)),
        public_pem: text(openssl(&["pkey", "-pubout"], &ed_pem)),
        traditional_pem: None,
        traditional_der_b64: None,
        pkcs8_pem: text(ed_pem),
    };
    let rsa_encrypted_pem =
        text(openssl(&["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:x"], rsa.pkcs8_pem.as_bytes()));
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("rsa.pem");
    std::fs::write(&key_path, &rsa.pkcs8_pem).expect("write key");
    let rsa_cert_pem = text(openssl(
        &["req", "-x509", "-new", "-key", key_path.to_str().expect("utf-8 path"), "-subj", "/CN=test", "-days", "1"],
        b"",
    ));
    Keys {
        rsa,
        ec256: ec("prime256v1"),
        ec384: ec("secp384r1"),
        ed,
        rsa1024_pem: text(openssl(&["genrsa", "1024"], b"")),
        rsa_encrypted_pem,
        rsa_cert_pem,
    }
}

/// Runs `openssl ARGS` with `stdin` as input and returns its stdout; panics with its stderr.
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = command("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI must be installed");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write to openssl");
    drop(input);
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
