//! SIGTERM: stop accepting at once, finish what is in flight, exit 0 within the grace period.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::support::client::Client;
use crate::support::config::ConfigDir;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, echo: bool) -> String {
    let echo = if echo { "[echo]\nlisten = \"127.0.0.1:0\"\n" } else { "" };
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
shutdown_grace = "10s"

[admin]
listen = "127.0.0.1:0"

{echo}
[tokens.slow_api]
algorithm = "EdDSA"
key_type = "EdPem"
key_file = "keys/demo-ed.key.pem"
ttl = "10m"

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["slow_api"]
"#
    )
}

async fn drains_in_flight_request(echo: bool) {
    let grace = Duration::from_secs(10);
    let upstream = Upstream::with_delay(Duration::from_millis(1500)).await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), echo));
    // `start` waits until the SIGTERM handler is installed.
    let mut sidecar = SidecarProcess::start(&path, "info").await;

    let proxy = sidecar.proxy;
    let url = upstream.url("/slow");
    let in_flight =
        tokio::spawn(async move { Client::new(proxy).get(&url, &[("authorization", "Bearer {/slow_api}")]).await });
    let arrived = wait_until(Duration::from_secs(5), async || upstream.count() == 1).await;
    assert!(arrived, "the slow request never reached the upstream");

    let signalled = Instant::now();
    sidecar.signal("TERM").await;
    let refused = wait_until(Duration::from_secs(1), async || TcpStream::connect(proxy).await.is_err()).await;
    assert!(refused, "the proxy still accepts new connections 1s after SIGTERM");

    let reply = match in_flight.await.unwrap() {
        Ok(reply) => reply,
        Err(e) => {
            let exit = sidecar.wait_exit(Duration::from_secs(1)).await;
            panic!(
                "the in-flight request failed: {e} (process exit: {exit:?}, {:?} after SIGTERM)\nlog:\n{}",
                signalled.elapsed(),
                sidecar.log_text()
            );
        }
    };
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(&reply.body[..], b"upstream ok");
    assert!(upstream.last().unwrap().jwt().is_some());

    let status = sidecar.wait_exit(grace).await;
    let status = status.unwrap_or_else(|| panic!("still running {grace:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}; log:\n{}", sidecar.log_text());
    assert!(signalled.elapsed() < grace);
    assert!(sidecar.find_log("shutting down").is_some(), "{}", sidecar.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() {
    drains_in_flight_request(false).await;
}

/// The same with the echo upstream enabled (one more listener task to wind down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_echo() {
    drains_in_flight_request(true).await;
}
