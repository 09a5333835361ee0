//! SIGHUP reloads the config, and a SIGHUP with nothing changed is harmless.
//!
//! The sidecar is given `sidecar.toml` as a symlink to a file in another folder, and the test
//! edits that file in place. The file watcher watches the folder of the path it was given (the
//! symlink's), where nothing changes, so the change can only be applied by the signal.

use std::os::unix::fs::symlink;
use std::time::Duration;

use crate::support::client::get;
use crate::support::config::{toml_str, write_in_place, ConfigDir};
use crate::support::jwt::claims;
use crate::support::keys::demo_key_path;
use crate::support::metrics::scrape;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, rev: u32) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.hup_api]
algorithm = "ES256"
key_type = "EcPem"
key_file = {key}
ttl = "10m"

[tokens.hup_api.claims]
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["hup_api"]
"#,
        key = toml_str(&demo_key_path("demo-ec.key.pem").to_string_lossy()),
    )
}

async fn rev_served(sidecar: &SidecarProcess, upstream: &Upstream) -> serde_json::Value {
    let reply = get(sidecar.proxy, &upstream.url("/hup"), &[("authorization", "Bearer {/hup_api}")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    claims(upstream.last().unwrap().jwt().expect("a token"))["rev"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup() {
    let upstream = Upstream::start().await;
    // The real config lives in its own folder; the sidecar's folder holds only a symlink to it.
    let real = ConfigDir::empty();
    let real_path = real.write("real.toml", config_text(upstream.port(), 1));
    let dir = ConfigDir::empty();
    let path = dir.path("sidecar.toml");
    symlink(&real_path, &path).expect("symlink sidecar.toml -> real.toml");
    // `start` waits until the SIGHUP handler is installed, so the signal cannot kill it.
    let mut sidecar = SidecarProcess::start(&path, "info").await;
    assert_eq!(rev_served(&sidecar, &upstream).await, 1);

    // Edited in place in its own folder, then SIGHUP: the change is applied.
    write_in_place(&real_path, config_text(upstream.port(), 2).as_bytes());
    sidecar.hup().await;
    let reloaded = wait_until(Duration::from_secs(5), async || rev_served(&sidecar, &upstream).await == 2).await;
    assert!(reloaded, "the change was not applied after SIGHUP; log:\n{}", sidecar.log_text());
    assert!(sidecar.running(), "SIGHUP must not stop the sidecar");

    // A second SIGHUP with nothing changed: still running, still serving, nothing reloaded.
    let reloads = scrape(sidecar.admin).await.count("config_reloads_total", &[]);
    let reloaded_lines = sidecar.count_log("configuration reloaded");
    sidecar.hup().await;
    // Signals are handled one after the other: once the third is logged, the reload the second
    // started has finished.
    sidecar.hup().await;
    assert!(sidecar.running(), "SIGHUP must not stop the sidecar");
    assert_eq!(rev_served(&sidecar, &upstream).await, 2);
    assert_eq!(
        scrape(sidecar.admin).await.count("config_reloads_total", &[]),
        reloads,
        "an unchanged config must not count as a reload"
    );
    assert_eq!(
        sidecar.count_log("configuration reloaded"),
        reloaded_lines,
        "an unchanged config must not be reloaded; log:\n{}",
        sidecar.log_text()
    );
}
