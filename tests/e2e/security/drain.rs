//! Shutdown drains every kind of connection (issue 10, item 1): a request inside an
//! intercepted HTTPS tunnel that is in flight when SIGTERM arrives still gets its answer.

use std::time::Duration;

use crate::support::ca::TestCa;
use crate::support::config::{config, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::raw::get_bytes;
use crate::support::sidecar::Running;
use crate::support::tunnel::{h2_send, intercepted_h2, intercepted_raw};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const AUTH: (&str, &str) = ("authorization", "Bearer {/tok}");

async fn drains_a_request_inside_a_tunnel(alpn_h2: bool) {
    let ca = TestCa::new();
    let upstream = Upstream::builder().tls(&ca).delay(Duration::from_secs(2)).start().await;
    let config = format!(
        "{}{TLS_SECTION}{}[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\"\nshutdown_grace = \"10s\""), ""),
        rs256_token("tok", "10m"),
        upstream.port(),
    );
    let mut run = Running::start_with(&config, Some(&ca), "info").await;
    let target = format!("localhost:{}", upstream.port());
    let proxy = run.proxy();
    let ca_pem = run.ca_pem();
    let in_flight = if alpn_h2 {
        let mut h2 = intercepted_h2(proxy, &target, &ca_pem, "localhost").await;
        let req = http::Request::builder()
            .uri(format!("https://{target}/slow"))
            .header(AUTH.0, AUTH.1)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        tokio::spawn(async move {
            let (status, _, body) = h2_send(&mut h2, req).await;
            (status, body.to_vec())
        })
    } else {
        let mut conn = intercepted_raw(proxy, &target, &ca_pem, "localhost").await;
        let request = get_bytes("/slow", &target, &[AUTH]);
        tokio::spawn(async move {
            let reply = conn.request(&request).await.expect("a response to the in-flight request");
            (reply.status, reply.body.to_vec())
        })
    };
    assert!(wait_until(Duration::from_secs(5), async || upstream.count() == 1).await, "request never arrived");
    run.sidecar.signal("TERM").await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(8), in_flight)
        .await
        .expect("the in-flight request finished within the grace period")
        .expect("client task");
    assert_eq!((status, body.as_slice()), (200, &b"upstream ok"[..]), "log:\n{}", run.sidecar.log_text());
    let exit = run.sidecar.wait_exit(Duration::from_secs(10)).await.expect("exited after draining");
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_https_request_over_http1() {
    drains_a_request_inside_a_tunnel(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_https_request_over_h2() {
    drains_a_request_inside_a_tunnel(true).await;
}
