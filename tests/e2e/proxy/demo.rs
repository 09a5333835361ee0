//! The shipped `sidecar.toml` works as the README's quick start shows.
//!
//! The demo runs from a copy of the file in a temporary folder, so `generate_if_missing` really
//! creates the demo CA (under the copy's `target/demo-ca/`) on every run. Its listeners are put
//! on port 0; the demo's routes name the echo's ports, so once the sidecar has bound them the
//! copy is rewritten with the bound ports and reloaded. The config serving the requests is then
//! the shipped one with only the port numbers and the key paths changed.

use std::path::Path;

use token_sidecar::config::Config;
use token_sidecar::reload::{reload, ReloadOutcome};

use crate::support::client::{curl, run_command};
use crate::support::config::toml_str;
use crate::support::jwt::verify_demo;
use crate::support::keys::{demo_key_path, repo_root};
use crate::support::sidecar::start_config;

/// `shipped` with each `from` (which must occur exactly once) replaced by its `to`.
fn rewrite(shipped: &str, changes: &[(&str, String)]) -> String {
    let mut text = shipped.to_string();
    for (from, to) in changes {
        assert_eq!(shipped.matches(from).count(), 1, "sidecar.toml no longer has exactly one `{from}`");
        text = text.replace(from, to);
    }
    text
}

#[tokio::test]
async fn shipped_config_with_the_readme_curl_command() {
    let shipped = std::fs::read_to_string(repo_root().join("sidecar.toml")).expect("read sidecar.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sidecar.toml");
    // The demo keys stay where they are; the CA goes into the copy's folder.
    let keys = |file: &str| (format!("\"examples/keys/{file}\""), toml_str(&demo_key_path(file).to_string_lossy()));
    let (rsa_from, rsa_to) = keys("demo-rsa.key.pem");
    let (ed_from, ed_to) = keys("demo-ed.key.pem");
    let paths = [(rsa_from.as_str(), rsa_to), (ed_from.as_str(), ed_to)];
    let listen = |proxy: &str, admin: &str, echo: &str, echo_tls: &str| {
        [
            ("listen = \"127.0.0.1:8080\"", format!("listen = \"{proxy}\"")),
            ("listen = \"127.0.0.1:9090\"", format!("listen = \"{admin}\"")),
            ("listen = \"127.0.0.1:8099\"", format!("listen = \"{echo}\"")),
            ("tls_listen = \"127.0.0.1:8443\"", format!("tls_listen = \"{echo_tls}\"")),
        ]
    };
    let any = "127.0.0.1:0";
    let mut first = paths.to_vec();
    first.extend(listen(any, any, any, any));
    std::fs::write(&path, rewrite(&shipped, &first)).expect("write the copy");

    let ca = dir.path().join("target/demo-ca/ca.pem");
    let ca_key = dir.path().join("target/demo-ca/ca.key");
    assert!(!ca.exists() && !ca_key.exists(), "a fresh folder has no demo CA");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("the shipped config is rejected:\n{e}"));
    let sidecar = start_config(config).await;
    assert!(ca.exists() && ca_key.exists(), "generate_if_missing did not create the demo CA in target/demo-ca");

    // The routes to the echo name its ports: the bound ones, and the listeners as bound.
    let (proxy, admin) = (sidecar.proxy_addr, sidecar.admin_addr);
    let echo = sidecar.echo_addr.expect("the demo enables the echo");
    let echo_tls = sidecar.echo_tls_addr.expect("the demo enables the TLS echo");
    let mut bound = paths.to_vec();
    bound.extend(listen(&proxy.to_string(), &admin.to_string(), &echo.to_string(), &echo_tls.to_string()));
    bound.push(("port = 8099", format!("port = {}", echo.port())));
    bound.push(("port = 8443", format!("port = {}", echo_tls.port())));
    std::fs::write(&path, rewrite(&shipped, &bound)).expect("rewrite the copy");
    let outcome = reload(&path, &sidecar).await.unwrap_or_else(|e| panic!("the demo with its bound ports: {e}"));
    assert_eq!(outcome, ReloadOutcome::Applied);

    // Exactly the README's command, with the ports substituted.
    let mut command = curl();
    command.args(["-s", "-x", &format!("http://{proxy}"), &format!("http://{echo}/hello")]);
    command.args(["-H", "Authorization: Bearer {/auth_token}"]);
    let out = run_command(command).await;
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the echo did not answer JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(echoed["uri"], "/hello");
    let auth = echoed["headers"]["authorization"].as_str().expect("echoed authorization header");
    let token = auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a bearer header: {auth}"));
    let claims = verify_demo(token);
    assert_eq!(claims["iss"], "token-sidecar-demo");
    assert_eq!(claims["aud"], "echo.demo");
    assert_eq!(claims["scope"], "read write");
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    assert_eq!(header.kid.as_deref(), Some("demo-rsa-2026"));

    // The README's HTTPS_PROXY command, trusting the demo CA created on start.
    let mut command = curl();
    command.arg("-s").arg("--cacert").arg(relative(&ca, dir.path()));
    command.current_dir(dir.path());
    command.args(["-x", &format!("http://{proxy}"), &format!("https://localhost:{}/hello", echo_tls.port())]);
    command.args(["-H", "Authorization: Bearer {/auth_token}"]);
    let out = run_command(command).await;
    assert!(out.status.success(), "curl over HTTPS_PROXY failed: {}", String::from_utf8_lossy(&out.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the TLS echo did not answer JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let auth = echoed["headers"]["authorization"].as_str().expect("echoed authorization header");
    verify_demo(auth.strip_prefix("Bearer ").expect("bearer"));
    sidecar.shutdown().await;
}

/// `path` relative to `base`, as the README writes `--cacert target/demo-ca/ca.pem`.
fn relative<'a>(path: &'a Path, base: &Path) -> &'a Path {
    path.strip_prefix(base).expect("inside the folder")
}
