//! Listener addresses take effect only after a restart: a reload that changes them logs a
//! warning saying so, applies the rest of the config, and the listeners bound at start-up keep
//! serving.

use std::time::Duration;

use crate::support::client::get;
use crate::support::config::{write_by_rename, ConfigDir};
use crate::support::jwt::claims;
use crate::support::metrics::scrape;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, proxy_listen: &str, admin_listen: &str, rev: u32) -> String {
    format!(
        r#"
[proxy]
listen = "{proxy_listen}"

[admin]
listen = "{admin_listen}"

[tokens.listen_api]
algorithm = "HS256"
key_type = "Secret"
key = "a demo secret that is long enough for HS256"
ttl = "10m"

[tokens.listen_api.claims]
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["listen_api"]
"#
    )
}

async fn rev_served(sidecar: &SidecarProcess, upstream: &Upstream) -> serde_json::Value {
    let reply = get(sidecar.proxy, &upstream.url("/listen"), &[("authorization", "Bearer {/listen_api}")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    claims(upstream.last().unwrap().jwt().expect("a token"))["rev"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_listen_addresses_warn_and_keep_serving() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), "127.0.0.1:0", "127.0.0.1:0", 1));
    let mut sidecar = SidecarProcess::start(&path, "info").await;
    assert_eq!(rev_served(&sidecar, &upstream).await, 1);

    // Both listen addresses and a claim change.
    write_by_rename(&path, config_text(upstream.port(), "127.0.0.1:1", "127.0.0.1:2", 2).as_bytes());
    sidecar.hup().await;
    // The rest of the config is applied, through the proxy listener bound at start-up.
    let applied = wait_until(Duration::from_secs(5), async || rev_served(&sidecar, &upstream).await == 2).await;
    assert!(applied, "the new claim was not applied; log:\n{}", sidecar.log_text());
    let warnings = sidecar.messages("WARN");
    for what in ["[proxy] listen", "[admin] listen"] {
        let expected = format!("{what} changed; this takes effect only after a restart");
        assert!(warnings.iter().any(|w| w.contains(&expected)), "no warning {expected:?} in {warnings:?}");
    }
    // The admin listener bound at start-up still answers too.
    assert!(scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "ok")]) >= 1.0);
    assert!(sidecar.running());
}
