//! A bad config written over a running one is rejected whole: the old config keeps serving,
//! the rejection is counted in `/metrics`, and the log names the file, line and column.

use std::path::Path;
use std::time::Duration;

use token_sidecar::config::Config;

use crate::support::client::get;
use crate::support::config::{write_by_rename, write_in_place, ConfigDir};
use crate::support::jwt::claims;
use crate::support::keys::demo_key;
use crate::support::metrics::scrape;
use crate::support::sidecar::{start_file, with_watcher, SidecarProcess};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, rev: u32, key_file: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.broken_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "{key_file}"
ttl = "10m"

[tokens.broken_api.claims]
iss = "ops-broken"
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["broken_api"]
"#
    )
}

/// 1-based line of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).expect("line in config") + 1
}

/// The rev claim of the token the upstream receives now.
async fn rev_served(proxy: std::net::SocketAddr, upstream: &Upstream) -> serde_json::Value {
    let reply = get(proxy, &upstream.url("/r"), &[("authorization", "Bearer {/broken_api}")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    claims(upstream.last().unwrap().jwt().expect("a token"))["rev"].clone()
}

/// Waits for a rejection logged at ERROR whose message names `path:line:COLUMN`, and checks the
/// whole diagnostic (as `Config::load` words it) is in the log.
async fn wait_for_rejection(sidecar: &SidecarProcess, path: &Path, line: usize) -> String {
    let location = format!("{}:{line}:", path.display());
    let mut found = None;
    wait_until(Duration::from_secs(5), async || {
        found = sidecar.messages("ERROR").into_iter().find(|m| m.contains("reload rejected") && m.contains(&location));
        found.is_some()
    })
    .await;
    let message =
        found.unwrap_or_else(|| panic!("no ERROR log line naming {location}COLUMN; log:\n{}", sidecar.log_text()));
    let column = message.split(&location).nth(1).and_then(|rest| rest.split(':').next()).unwrap_or_default();
    assert!(column.parse::<usize>().is_ok_and(|c| c >= 1), "no column after {location} in {message:?}");
    let expected = Config::load(path).expect_err("the config on disk is invalid").to_string();
    for diagnostic in expected.lines() {
        assert!(message.contains(diagnostic), "log {message:?} does not say {diagnostic:?}");
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_rejected() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let good_key = "keys/demo-rsa.key.pem";
    let path = dir.write_config(&config_text(upstream.port(), 1, good_key));
    let sidecar = SidecarProcess::start(&path, "info").await;
    assert_eq!(rev_served(sidecar.proxy, &upstream).await, 1);
    let errors_before = scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "error")]);

    // 1. A syntax error: a claim with no value.
    let broken = config_text(upstream.port(), 1, good_key).replace("rev = 1", "rev = ");
    write_by_rename(&path, broken.as_bytes());
    let message = wait_for_rejection(&sidecar, &path, line_of(&broken, "rev =")).await;
    assert!(message.contains("previous configuration still serving"), "{message}");
    assert_eq!(rev_served(sidecar.proxy, &upstream).await, 1, "the old config must keep serving");
    let errors = scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "error")]);
    assert!(errors > errors_before, "config_reloads_total{{result=\"error\"}} did not move: {errors}");

    // 2. A key file full of garbage.
    write_in_place(&dir.path("keys/garbage.pem"), b"this is not a key\n");
    let bad_key = config_text(upstream.port(), 2, "keys/garbage.pem");
    write_in_place(&path, bad_key.as_bytes());
    let message = wait_for_rejection(&sidecar, &path, line_of(&bad_key, "key_file")).await;
    assert!(message.contains("tokens.broken_api.key_file"), "the log should name the key: {message}");
    assert_eq!(rev_served(sidecar.proxy, &upstream).await, 1, "the old config must keep serving");
    let errors_after_key = scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "error")]);
    assert!(errors_after_key > errors, "config_reloads_total{{result=\"error\"}} did not move for the bad key");

    // 3. A fixed config is applied.
    let ok_before = scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "ok")]);
    write_by_rename(&path, config_text(upstream.port(), 3, good_key).as_bytes());
    let applied = wait_until(Duration::from_secs(5), async || rev_served(sidecar.proxy, &upstream).await == 3).await;
    assert!(applied, "the fixed config was not applied; log:\n{}", sidecar.log_text());
    let ok = scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "ok")]);
    assert!(ok > ok_before, "config_reloads_total{{result=\"ok\"}} did not move");
    assert!(sidecar.find_log("configuration reloaded").is_some());
}

/// A config rejected because its new key file is bad is applied once the key file is fixed,
/// without touching the config file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_the_key_file_of_a_rejected_config_applies_it() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), 1, "keys/demo-rsa.key.pem"));
    let sidecar = start_file(&path).await;

    with_watcher(&sidecar, &path, async {
        assert_eq!(rev_served(sidecar.proxy_addr, &upstream).await, 1);
        // The recorder is shared by every in-process test: compare against a baseline.
        let errors_before = scrape(sidecar.admin_addr).await.count("config_reloads_total", &[("result", "error")]);
        // The new config names a key that is not there yet (garbage for now).
        write_in_place(&dir.path("keys/next.pem"), b"not yet a key\n");
        write_by_rename(&path, config_text(upstream.port(), 2, "keys/next.pem").as_bytes());
        let rejected = wait_until(Duration::from_secs(5), async || {
            scrape(sidecar.admin_addr).await.count("config_reloads_total", &[("result", "error")]) > errors_before
        })
        .await;
        assert!(rejected);
        assert_eq!(rev_served(sidecar.proxy_addr, &upstream).await, 1);

        // The operator copies the real key in; the config file is not touched again.
        write_by_rename(&dir.path("keys/next.pem"), demo_key("demo-rsa.key.pem").as_bytes());
        let applied =
            wait_until(Duration::from_secs(3), async || rev_served(sidecar.proxy_addr, &upstream).await == 2).await;
        assert!(applied, "the config was not applied after its key file was fixed");
    })
    .await;
    sidecar.shutdown().await;
}
