//! `kind = "secret"`: an API key the agent never holds. It is injected like a token, a rotated
//! key file is served after the reload, and neither value reaches the log or the admin port.

use std::time::Duration;

use crate::support::client::{admin_get, get};
use crate::support::config::{write_in_place, ConfigDir};
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const FIRST: &str = "sk_test_first_4f9a1c";
const ROTATED: &str = "sk_test_rotated_77b2e0";

async fn served(sidecar: &SidecarProcess, upstream: &Upstream) -> String {
    let reply = get(sidecar.proxy, &upstream.url("/v1/charges"), &[("authorization", "Bearer {/billing_key}")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    upstream.last().expect("a request").header("authorization").unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_secret_is_injected_rotated_and_never_shown() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::empty();
    let key = dir.write("billing.key", format!("{FIRST}\n"));
    let path = dir.write_config(&format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.billing_key]
kind = "secret"
key_file = "billing.key"

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {port}
tokens = ["billing_key"]
"#,
        port = upstream.port()
    ));
    let sidecar = SidecarProcess::start(&path, "debug").await;
    assert_eq!(served(&sidecar, &upstream).await, format!("Bearer {FIRST}"));

    // Not routed here: the placeholder stays text, the secret is not sent.
    let other = Upstream::start().await;
    let reply = get(sidecar.proxy, &other.url("/"), &[("authorization", "Bearer {/billing_key}")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(other.single().header("authorization"), Some("Bearer {/billing_key}"));

    // The key file is watched: a rotation is served after the reload it triggers.
    write_in_place(&key, format!("{ROTATED}\n").as_bytes());
    let rotated =
        wait_until(Duration::from_secs(10), async || served(&sidecar, &upstream).await == format!("Bearer {ROTATED}"))
            .await;
    assert!(rotated, "the rotated key was not served; log:\n{}", sidecar.log_text());

    let tokens = admin_get(sidecar.admin, "/tokens").await;
    let status = &tokens.json()["tokens"][0];
    assert_eq!(status["kind"], "secret", "{status}");
    assert_eq!(status["current"], true, "{status}");
    assert!(status["expires_at"].is_null(), "a static secret has no expiry: {status}");
    let metrics = admin_get(sidecar.admin, "/metrics").await.text();
    let log = sidecar.log_text();
    for value in [FIRST, ROTATED] {
        assert!(!tokens.text().contains(value), "/tokens shows the secret");
        assert!(!metrics.contains(value), "/metrics shows the secret");
        assert!(!log.contains(value), "the log shows the secret:\n{log}");
    }
}
