//! What the jose tests share: the joserfc checker (`jose_check.py`), keys made with the openssl
//! CLI in the forms users have, and JWKs converted from them by joserfc.

use std::io::Write;
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::support::client::python;
use crate::support::keys::openssl;

const CHECKER: &str = include_str!("jose_check.py");

/// Runs the joserfc checker on `jobs` and returns one result per job. Panics (with how to
/// install it) when joserfc is missing: `.ci/test` installs it.
pub fn joserfc(jobs: Vec<Value>) -> Vec<Value> {
    let mut child = python()
        .args(["-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let input = json!({ "jobs": jobs }).to_string();
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write jobs");
    let out = child.wait_with_output().expect("checker output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the joserfc checker failed ({}); `.ci/test` installs joserfc (python3 -m pip install joserfc): {stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("checker output is not JSON ({e}): {stderr}"))
}

/// Keys made once per test binary with openssl.
pub struct JoseKeys {
    /// P-521, SEC1 PEM (`openssl ecparam -genkey -name secp521r1`).
    pub ec521_sec1: String,
    /// The same key as PKCS#8 PEM.
    pub ec521_pkcs8: String,
    pub ec521_public: String,
    /// X25519 private key PKCS#8 PEM and its public key.
    pub x25519: String,
    pub x25519_public: String,
}

pub fn jose_keys() -> &'static JoseKeys {
    static KEYS: OnceLock<JoseKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let text = |b: Vec<u8>| String::from_utf8(b).expect("PEM");
        let sec1 = openssl(&["ecparam", "-genkey", "-name", "secp521r1", "-noout"], b"");
        let x25519 = openssl(&["genpkey", "-algorithm", "X25519"], b"");
        JoseKeys {
            ec521_pkcs8: text(openssl(&["pkcs8", "-topk8", "-nocrypt"], &sec1)),
            ec521_public: text(openssl(&["pkey", "-pubout"], &sec1)),
            ec521_sec1: text(sec1),
            x25519_public: text(openssl(&["pkey", "-pubout"], &x25519)),
            x25519: text(x25519),
        }
    })
}

/// A PEM key as a JWK, converted by joserfc (private members kept when `private`).
pub fn to_jwk(pem: &str, private: bool) -> Value {
    let result = joserfc(vec![json!({"kind": "to_jwk", "pem": pem, "private": private})]).remove(0);
    assert_eq!(result["ok"], true, "{result}");
    result["jwk"].clone()
}

/// Asserts every checker result is ok, naming the failing job.
pub fn assert_all_ok(results: &[Value], names: &[String]) {
    let failed: Vec<String> = results
        .iter()
        .zip(names)
        .filter(|(r, _)| r["ok"] != true)
        .map(|(r, n)| format!("{n}: {}", r["error"]))
        .collect();
    assert!(failed.is_empty(), "{} of {} failed:\n{}", failed.len(), results.len(), failed.join("\n"));
}
