//! The proxy listener's backlog: a burst of clients connecting at once is queued by the
//! kernel instead of having SYNs dropped (and retried a second later). With the standard
//! library's backlog of 128, connections beyond that many waiting to be accepted hang.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::config::{config, route, rs256_token};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

/// Connections waiting at once: more than 128.
const BURST: usize = 300;

#[tokio::test]
async fn a_burst_of_connections_beyond_max_connections_waits_in_the_queue() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    if somaxconn <= BURST {
        eprintln!("skipped: net.core.somaxconn is {somaxconn}, which caps every listener's backlog");
        return;
    }
    let upstream = Upstream::start().await;
    let text = config(
        "max_connections = 1\nhandshake_timeout = \"30s\"\nidle_timeout = \"30s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    // The one connection the sidecar serves; every other one waits to be accepted.
    let _served = TcpStream::connect(run.proxy()).await.expect("the first connection");
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let proxy = run.proxy();
        burst.spawn(async move { tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy)).await });
    }
    let mut queued = Vec::new();
    let mut hung = 0;
    while let Some(connect) = burst.join_next().await {
        match connect.expect("a connect task") {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("a connect failed: {e}"),
            Err(_) => hung += 1,
        }
    }
    assert_eq!(hung, 0, "connects that hung (their SYNs dropped by a full accept queue)");
    assert_eq!(queued.len(), BURST);
}
