//! Node.js with undici's `EnvHttpProxyAgent` as the global dispatcher, as the README's
//! client guide says: `http://` URLs go through a CONNECT tunnel (undici's default) in
//! which the sidecar serves plain HTTP, `https://` URLs through interception with
//! `NODE_EXTRA_CA_CERTS`. undici's own fetch, Node's built-in fetch and an agent with
//! `allowH2` and the CA in `requestTls` are checked (the last speaks h2 inside the tunnel).
//!
//! Skipped, with a message, when `node` is missing or undici cannot be installed; `.ci/test`
//! installs undici into `target/e2e-node` when node is present.

use std::path::PathBuf;

use super::{json_lines, step};
use crate::protocols::ClientSetup;
use crate::support::client::{command, run_command};
use crate::support::jwt::verify_demo;

const CLIENT: &str = include_str!("undici_client.js");

/// The undici package folder, installing it with npm the first time; `None` (with the reason
/// printed) when node or the package cannot be had.
async fn undici() -> Option<PathBuf> {
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = INSTALL.lock().await;
    let mut node = command("node");
    node.arg("--version");
    if !tokio::task::spawn_blocking(move || node.output()).await.ok()?.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: node is not installed; the undici tests need Node.js 20 or newer");
        return None;
    }
    let prefix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-node");
    let package = prefix.join("node_modules/undici");
    if !package.join("package.json").exists() {
        let mut npm = command("npm");
        npm.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"]).arg(&prefix).arg("undici@7");
        let out = run_command(npm).await;
        if !out.status.success() {
            println!("SKIPPED: npm could not install undici: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
    }
    Some(package)
}

#[tokio::test]
async fn undici_env_http_proxy_agent_for_http_and_https() {
    let Some(undici) = undici().await else { return };
    let ClientSetup { plain, tls, running } = ClientSetup::start().await;
    let proxy = format!("http://{}", running.proxy());
    let http_url = plain.url("/from-node");
    let https_url = format!("https://localhost:{}/from-node", tls.port());
    let mut node = command("node");
    node.args(["-e", CLIENT, "--"]).arg(&undici).args([&http_url, &https_url]);
    node.env("http_proxy", &proxy).env("https_proxy", &proxy).env("NODE_EXTRA_CA_CERTS", running.dir.path("ca/ca.pem"));
    let lines = json_lines(&run_command(node).await, "node undici client");
    for which in ["undici", "builtin", "h2"] {
        for url in [&http_url, &https_url] {
            let line = step(&lines, &format!("{which} {url}"));
            assert_eq!(line["status"], 200, "{line}");
            assert_eq!(line["body"], "upstream ok", "{line}");
        }
    }
    for upstream in [&plain, &tls] {
        let requests = upstream.requests();
        assert_eq!(requests.len(), 3, "{requests:?}");
        for request in requests {
            assert_eq!(verify_demo(request.token())["sub"], "tok");
        }
    }
}
