//! After a reload that changes which files the config depends on (a token with a new key file),
//! a later file event whose bytes did not change reloads nothing: the digest kept for the next
//! comparison is the one of the new set of files.

use std::time::Duration;

use crate::support::client::get;
use crate::support::config::{write_by_rename, write_in_place, ConfigDir};
use crate::support::keys::demo_key;
use crate::support::metrics::scrape;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const SECOND_TOKEN: &str = r#"
[tokens.added_api]
algorithm = "ES256"
key_type = "EcPem"
key_file = "keys/added.key.pem"
ttl = "10m"
"#;

fn config_text(upstream: u16, with_second_token: bool) -> String {
    let (second, bound) = if with_second_token { (SECOND_TOKEN, r#", "added_api""#) } else { ("", "") };
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.first_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/demo-rsa.key.pem"
ttl = "10m"
{second}
[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["first_api"{bound}]
"#
    )
}

/// `config_reloads_total{result="ok"}`.
async fn reloads(sidecar: &SidecarProcess) -> f64 {
    scrape(sidecar.admin).await.count("config_reloads_total", &[("result", "ok")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_bytes_after_the_watched_files_changed_do_not_reload() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), false));
    let sidecar = SidecarProcess::start(&path, "info").await;
    let before = reloads(&sidecar).await;

    // A reload that adds a key file to the watched set: the key first, then the config.
    let key = dir.write("keys/added.key.pem", demo_key("demo-ec.key.pem"));
    let config = config_text(upstream.port(), true);
    write_by_rename(&path, config.as_bytes());
    let url = upstream.url("/added");
    let applied = wait_until(Duration::from_secs(5), async || {
        get(sidecar.proxy, &url, &[("authorization", "Bearer {/added_api}")]).await.status == 200
            && upstream.last().is_some_and(|r| r.jwt().is_some())
    })
    .await;
    assert!(applied, "the config with the new token was not applied; log:\n{}", sidecar.log_text());

    // File events that change no bytes: the config and the new key written again as they are.
    write_in_place(&path, config.as_bytes());
    write_in_place(&key, demo_key("demo-ec.key.pem").as_bytes());
    // A barrier: the watcher handles file events and signals one at a time, and a SIGHUP with
    // nothing changed reloads nothing either. Once the second SIGHUP is logged, the first and
    // whatever file events came before it have been handled.
    sidecar.hup().await;
    sidecar.hup().await;

    assert_eq!(
        reloads(&sidecar).await - before,
        1.0,
        "only the change that added the key file may count as a reload; log:\n{}",
        sidecar.log_text()
    );
    assert_eq!(
        sidecar.count_log("configuration reloaded"),
        1,
        "only the change that added the key file may reload; log:\n{}",
        sidecar.log_text()
    );
}
