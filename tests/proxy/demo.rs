//! The shipped `sidecar.toml` works as the README's quick start shows (on free ports).

use std::path::Path;
use std::process::Command;

use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;

use crate::harness::{free_ports, run_command, verify, MANIFEST_DIR};

#[tokio::test]
async fn shipped_config_with_the_readme_curl_command() {
    let path = Path::new(MANIFEST_DIR).join("sidecar.toml");
    let shipped = std::fs::read_to_string(&path).expect("read sidecar.toml");
    let [proxy, admin, echo, echo_tls] = free_ports::<4>();
    let mut text = shipped.clone();
    for (from, to) in [
        ("listen = \"127.0.0.1:8080\"", format!("listen = \"127.0.0.1:{proxy}\"")),
        ("listen = \"127.0.0.1:9090\"", format!("listen = \"127.0.0.1:{admin}\"")),
        ("listen = \"127.0.0.1:8099\"", format!("listen = \"127.0.0.1:{echo}\"")),
        ("port = 8099", format!("port = {echo}")),
        ("tls_listen = \"127.0.0.1:8443\"", format!("tls_listen = \"127.0.0.1:{echo_tls}\"")),
        ("port = 8443", format!("port = {echo_tls}")),
    ] {
        assert_eq!(shipped.matches(from).count(), 1, "sidecar.toml no longer has exactly one `{from}`");
        text = text.replace(from, &to);
    }
    let config = Config::from_text(&path, &text).unwrap_or_else(|e| panic!("the shipped config is rejected:\n{e}"));
    let sidecar = Sidecar::start(config).await.expect("start the demo");
    assert_eq!(sidecar.echo_addr.map(|a| a.port()), Some(echo));

    // Exactly the README's command, with the ports substituted.
    let mut curl = Command::new("curl");
    for var in ["http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"] {
        curl.env_remove(var);
    }
    curl.args(["-s", "-x", &format!("http://127.0.0.1:{proxy}"), &format!("http://127.0.0.1:{echo}/hello")]);
    curl.args(["-H", "Authorization: Bearer {/auth_token}"]);
    let out = run_command(curl).await;
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the echo did not answer JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(echoed["uri"], "/hello");
    let auth = echoed["headers"]["authorization"].as_str().expect("echoed authorization header");
    let token = auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a bearer header: {auth}"));
    let claims = verify(token);
    assert_eq!(claims["iss"], "token-sidecar-demo");
    assert_eq!(claims["aud"], "echo.demo");
    assert_eq!(claims["scope"], "read write");
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    assert_eq!(header.kid.as_deref(), Some("demo-rsa-2026"));

    // The README's HTTPS_PROXY command: the demo CA was created on start.
    let ca = Path::new(MANIFEST_DIR).join("target/demo-ca/ca.pem");
    assert!(ca.exists(), "generate_if_missing created the demo CA");
    let mut curl = Command::new("curl");
    for var in ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"] {
        curl.env_remove(var);
    }
    curl.arg("-s").arg("--cacert").arg(&ca);
    curl.args(["-x", &format!("http://127.0.0.1:{proxy}"), &format!("https://localhost:{echo_tls}/hello")]);
    curl.args(["-H", "Authorization: Bearer {/auth_token}"]);
    let out = run_command(curl).await;
    assert!(out.status.success(), "curl over HTTPS_PROXY failed: {}", String::from_utf8_lossy(&out.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the TLS echo did not answer JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let auth = echoed["headers"]["authorization"].as_str().expect("echoed authorization header");
    verify(auth.strip_prefix("Bearer ").expect("bearer"));
    sidecar.shutdown().await;
}
