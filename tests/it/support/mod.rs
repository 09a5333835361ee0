//! Shared helpers: keys generated once per test binary with the `openssl` CLI (so they come in
//! the forms users really have), a temp-dir config writer, independent JWT verification, and a
//! runner for the `token-sidecar` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use token_sidecar::config::{Config, ConfigErrors, Diagnostic};

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
    let mut child = Command::new("openssl")
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

/// Quotes text as a TOML string (any content: PEM, paths, secrets).
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A temp folder holding a config file and the files it names.
pub struct TempConfig {
    pub dir: tempfile::TempDir,
}

impl TempConfig {
    pub fn new() -> Self {
        TempConfig { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file into the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Writes `sidecar.toml` and builds it with `Config::from_text` (relative paths resolve
    /// against the temp folder).
    pub fn build(&self, text: &str) -> Result<Config, ConfigErrors> {
        let path = self.write("sidecar.toml", text);
        Config::from_text(&path, text)
    }

    /// Like [`TempConfig::build`], but the config must be valid.
    pub fn config(&self, text: &str) -> Config {
        self.build(text).unwrap_or_else(|e| panic!("config should be valid, got:\n{e}\n--- config ---\n{text}"))
    }

    /// Like [`TempConfig::build`], but the config must be rejected.
    pub fn errors(&self, text: &str) -> Vec<Diagnostic> {
        match self.build(text) {
            Ok(_) => panic!("config should be rejected:\n{text}"),
            Err(e) => e.0,
        }
    }
}

/// Builds a config that must be valid and mints its token `name` at `now`.
pub fn mint(config: &Config, name: &str) -> String {
    mint_at(config, name, SystemTime::now())
}

pub fn mint_at(config: &Config, name: &str, now: SystemTime) -> String {
    let minted = config.tokens[name].mint(now).expect("mint");
    String::from_utf8(minted.value.to_vec()).expect("a JWT is ASCII")
}

/// The header and claims of a JWT as raw JSON, without checking the signature.
pub fn parts(token: &str) -> (Value, Value) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "a JWS compact token has three segments: {token}");
    let json = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url segment")).expect("JSON segment")
    };
    (json(segments[0]), json(segments[1]))
}

/// A validation that checks the algorithm, the signature, `exp` (required) and `aud` when given.
pub fn validation(alg: Algorithm, aud: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    match aud {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    v
}

/// Verifies a token independently of the sidecar and returns its claims.
pub fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Value {
    match jsonwebtoken::decode::<Value>(token, key, validation) {
        Ok(data) => data.claims,
        Err(e) => panic!("token does not verify: {e:?}\n{token}"),
    }
}

/// The public key of an asymmetric key pair as a jsonwebtoken verification key.
pub fn decoding_key(alg: Algorithm, public_pem: &str) -> DecodingKey {
    let pem = public_pem.as_bytes();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
    .expect("public PEM from openssl")
}

pub fn algorithm(name: &str) -> Algorithm {
    token_sidecar::tokens::algorithm::parse_algorithm(name).unwrap_or_else(|| panic!("unknown algorithm {name}"))
}

/// Runs the `token-sidecar` binary in `cwd`, with no config or log settings from the
/// environment the tests run in.
pub fn sidecar(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_token-sidecar"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TOKEN_SIDECAR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run token-sidecar")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

/// The repository root, where `sidecar.toml` and `examples/` live.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Asserts there is exactly one diagnostic and returns it.
pub fn single(errors: &[Diagnostic]) -> &Diagnostic {
    assert_eq!(errors.len(), 1, "expected exactly one error, got:\n{}", render(errors));
    &errors[0]
}

pub fn render(errors: &[Diagnostic]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
