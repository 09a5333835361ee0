//! SIGHUP reloads the config, and a SIGHUP with nothing changed is harmless.

use std::time::Duration;

use crate::support::client::get;
use crate::support::config::{write_in_place, ConfigDir};
use crate::support::jwt::claims;
use crate::support::metrics::{scrape, Metrics};
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
key_file = "keys/demo-ec.key.pem"
ttl = "10m"

[tokens.hup_api.claims]
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["hup_api"]
"#
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
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), 1));
    // `start` waits until the SIGHUP handler is installed, so the signal cannot kill it.
    let mut sidecar = SidecarProcess::start(&path, "info").await;
    assert_eq!(rev_served(&sidecar, &upstream).await, 1);

    // The folder watcher may pick this change up on its own as well; the test holds either
    // way, and the log line below shows the signal itself was received and acted on.
    write_in_place(&path, config_text(upstream.port(), 2).as_bytes());
    sidecar.signal("HUP").await;
    let reloaded = wait_until(Duration::from_secs(5), async || rev_served(&sidecar, &upstream).await == 2).await;
    assert!(reloaded, "the change was not applied after SIGHUP; log:\n{}", sidecar.log_text());
    let hup_logged = wait_until(Duration::from_secs(5), async || sidecar.find_log("SIGHUP: reloading").is_some()).await;
    assert!(hup_logged, "no 'SIGHUP: reloading' log line:\n{}", sidecar.log_text());
    assert!(sidecar.running(), "SIGHUP must not stop the sidecar");

    // A second SIGHUP with nothing changed: still running, still serving, nothing reloaded.
    let reloads = |m: &Metrics| m.count("config_reloads_total", &[]);
    let before = reloads(&scrape(sidecar.admin).await);
    let hups = |s: &SidecarProcess| s.log().iter().filter(|l| l.contains("SIGHUP: reloading")).count();
    let hups_before = hups(&sidecar);
    sidecar.signal("HUP").await;
    let seen = wait_until(Duration::from_secs(5), async || hups(&sidecar) > hups_before).await;
    assert!(seen, "second SIGHUP not logged");
    assert!(sidecar.running(), "SIGHUP must not stop the sidecar");
    assert_eq!(rev_served(&sidecar, &upstream).await, 2);
    assert_eq!(reloads(&scrape(sidecar.admin).await), before, "an unchanged config must not count as a reload");
}
