//! Node.js with undici's `EnvHttpProxyAgent` as the global dispatcher, as the README's
//! client guide says: `http://` URLs go through a CONNECT tunnel (undici's default) in
//! which the sidecar serves plain HTTP, `https://` URLs through interception with
//! `NODE_EXTRA_CA_CERTS`. undici's own fetch, Node's built-in fetch and an agent with
//! `allowH2` and the CA in `requestTls` are checked (the last speaks h2 inside the tunnel).
//!
//! Code on Node's `http`/`https` modules (axios and the like) goes through the sidecar with
//! `global-agent@3` instead, also checked.
//!
//! Skipped, with a message, when `node` is missing or the packages cannot be installed;
//! `.ci/test` installs undici and global-agent into `target/e2e-node` when node is present.

use std::path::PathBuf;

use super::{json_lines, step};
use crate::protocols::ClientSetup;
use crate::support::client::{command, run_command};
use crate::support::jwt::verify_demo;

const CLIENT: &str = include_str!("undici_client.js");
const GLOBAL_AGENT_CLIENT: &str = include_str!("global_agent_client.js");

/// The folder of npm package `name`, installing `spec` with npm the first time; `None` (with
/// the reason printed) when node or the package cannot be had.
async fn node_package(name: &str, spec: &str) -> Option<PathBuf> {
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = INSTALL.lock().await;
    let mut node = command("node");
    node.arg("--version");
    if !tokio::task::spawn_blocking(move || node.output()).await.ok()?.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: node is not installed; the {name} test needs Node.js 20 or newer");
        return None;
    }
    let prefix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-node");
    let package = prefix.join("node_modules").join(name);
    if !package.join("package.json").exists() {
        let mut npm = command("npm");
        npm.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"]).arg(&prefix).arg(spec);
        let out = run_command(npm).await;
        if !out.status.success() {
            println!("SKIPPED: npm could not install {spec}: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
    }
    Some(package)
}

#[tokio::test]
async fn undici_env_http_proxy_agent_for_http_and_https() {
    let Some(undici) = node_package("undici", "undici@7").await else { return };
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

#[tokio::test]
async fn global_agent_for_the_http_and_https_modules() {
    let Some(global_agent) = node_package("global-agent", "global-agent@3").await else { return };
    let ClientSetup { plain, tls, running } = ClientSetup::start().await;
    let http_url = plain.url("/from-global-agent");
    let https_url = format!("https://localhost:{}/from-global-agent", tls.port());
    let mut node = command("node");
    node.arg("-r")
        .arg(global_agent.join("bootstrap"))
        .args(["-e", GLOBAL_AGENT_CLIENT, "--"])
        .args([&http_url, &https_url]);
    node.env("GLOBAL_AGENT_HTTP_PROXY", format!("http://{}", running.proxy()))
        .env("NODE_EXTRA_CA_CERTS", running.dir.path("ca/ca.pem"));
    let lines = json_lines(&run_command(node).await, "node global-agent client");
    for url in [&http_url, &https_url] {
        let line = step(&lines, &format!("global-agent {url}"));
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["body"], "upstream ok", "{line}");
    }
    for upstream in [&plain, &tls] {
        let request = upstream.single();
        assert_eq!(verify_demo(request.token())["sub"], "tok");
    }
}
