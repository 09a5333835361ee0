//! Reloads apply what the files say (issue 10, item 2): a rotated `extra_ca_file` is trusted
//! after SIGHUP, without a restart.

use std::time::Duration;

use crate::support::ca::TestCa;
use crate::support::config::{config, rs256_token, UPSTREAM_CA_FILE};
use crate::support::raw::{exchange, get_bytes};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_extra_ca_file_is_trusted_after_sighup() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    // The upstream's certificate comes from the new CA; the sidecar starts trusting the old.
    let upstream = Upstream::tls(&new_ca).await;
    let config = format!(
        "{}{}[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nupstream_tls = true\ntokens = [\"tok\"]\n",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), ""),
        rs256_token("tok", "10m"),
        upstream.port(),
    );
    let run = Running::start_with(&config, Some(&old_ca), "info").await;
    let url = format!("http://127.0.0.1:{}/x", upstream.port());
    let request = get_bytes(&url, &format!("127.0.0.1:{}", upstream.port()), &[("authorization", "Bearer {/tok}")]);
    exchange(run.proxy(), &request).await.assert_error(502, "upstream_tls_error", "before the rotation");

    std::fs::write(run.dir.path(UPSTREAM_CA_FILE), &new_ca.pem).expect("rotate the CA file");
    run.sidecar.signal("HUP").await;
    let trusted =
        wait_until(Duration::from_secs(10), async || exchange(run.proxy(), &request).await.status == 200).await;
    assert!(trusted, "the new CA is not trusted after SIGHUP; log:\n{}", run.sidecar.log_text());
    assert_eq!(upstream.count(), 1, "exactly the request after the rotation reached the upstream");
}
