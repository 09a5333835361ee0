//! `/healthz` says the process is up; `/readyz` says every token has a current value, and turns
//! 503 when a token expires because its refresh keeps failing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;
use token_sidecar::store::Mint;

use crate::support::client::admin_get;
use crate::support::config::ConfigDir;
use crate::support::sidecar::FailAfterFirst;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_healthz() {
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.steady]
algorithm = "ES256"
key_type = "EcPem"
key_file = "keys/demo-ec.key.pem"
ttl = "10m"

[tokens.doomed]
algorithm = "ES256"
key_type = "EcPem"
key_file = "keys/demo-ec.key.pem"
ttl = "2s"
"#,
    );
    let config = Config::load(&path).unwrap();
    let minter = FailAfterFirst::new(config.tokens["doomed"].clone());
    let minters: HashMap<String, Arc<dyn Mint>> = HashMap::from([("doomed".to_string(), Arc::clone(&minter) as _)]);
    let sidecar = Sidecar::start_with(config, &minters).await.unwrap();
    let admin = sidecar.admin_addr;

    let health = admin_get(admin, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "every token was minted at start: {}", ready.text());

    // The doomed token's refreshes fail; once its only token expires, the sidecar is not ready.
    let mut last = None;
    let unready = wait_until(Duration::from_secs(6), async || {
        let r = admin_get(admin, "/readyz").await;
        let done = r.status == 503;
        last = Some(r);
        done
    })
    .await;
    let last = last.unwrap();
    assert!(unready, "/readyz stayed {} after the token expired: {}", last.status, last.text());
    assert!(minter.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2, "a refresh was attempted and failed");
    let health = admin_get(admin, "/healthz").await;
    assert_eq!(health.status, 200, "not ready is not unhealthy: {}", health.text());

    let doc = admin_get(admin, "/tokens").await.json();
    let doomed = doc["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "doomed").unwrap().clone();
    assert_eq!(doomed["current"], false, "{doomed}");
    assert_eq!(doomed["last_refresh_result"], "error", "{doomed}");
    let steady = doc["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "steady").unwrap().clone();
    assert_eq!(steady["current"], true, "{steady}");
    sidecar.shutdown().await;
}
