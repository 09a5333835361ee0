//! `[proxy] connect_timeout`: an upstream whose TCP handshake never completes gets a 504
//! `upstream_timeout` after the connect timeout (long before `request_timeout`), for a proxied
//! request and for a blind CONNECT tunnel alike, counted in `upstream_errors_total`.
//!
//! The upstream that never completes a handshake, on loopback only: a listener with backlog 1
//! that never accepts, its accept queue filled by connections the test holds. Linux then drops
//! every further SYN, so a new connect neither succeeds nor fails until its own timeout.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::client::get;
use crate::support::config::{config, route, rs256_token};
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;
use crate::support::tunnel::open_tunnel;
use crate::support::wait::wait_until;

/// A listener that never accepts, with a full accept queue.
struct Unresponsive {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Unresponsive {
    async fn start() -> Unresponsive {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        // Linux queues backlog + 1 connections; each of these completes its handshake.
        let mut queued = Vec::new();
        for _ in 0..2 {
            queued.push(TcpStream::connect(addr).await.expect("connect while the accept queue has room"));
        }
        let full =
            wait_until(Duration::from_secs(5), async || accept_queue(addr).is_some_and(|(len, max)| len > max)).await;
        assert!(full, "the accept queue did not fill: {:?} (queued, backlog)", accept_queue(addr));
        // The technique itself: a new connect now hangs.
        let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
        assert!(probe.is_err(), "a connect to the full listener did not hang: {probe:?}");
        Unresponsive { addr, _listener: listener, _queued: queued }
    }
}

/// The accept queue of the listening socket at `addr`: (connections queued, backlog), from
/// `/proc/net/tcp` (for a listening socket, rx_queue and tx_queue hold these two).
fn accept_queue(addr: SocketAddr) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(Ipv4Addr::LOCALHOST.octets()), addr.port());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State 0A is LISTEN.
        if fields.len() < 5 || fields[1] != local || fields[3] != "0A" {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((u64::from_str_radix(rx, 16).ok()?, u64::from_str_radix(tx, 16).ok()?))
    })
}

async fn timeouts(run: &Running) -> f64 {
    scrape(run.admin()).await.count("upstream_errors_total", &[("kind", "upstream_timeout")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_completes_the_tcp_handshake_times_out_at_connect_timeout() {
    let upstream = Unresponsive::start().await;
    let port = upstream.addr.port();
    let toml = config(
        "connect_timeout = \"300ms\"\nrequest_timeout = \"10s\"",
        &format!("{}{}", rs256_token("A", "10m"), route(port, &["A"], "")),
    );
    // The real binary: upstream_errors_total is process-wide.
    let run = Running::start(&toml).await;
    let before = timeouts(&run).await;

    // A routed request through HTTP_PROXY.
    let started = Instant::now();
    let reply = get(run.proxy(), &format!("http://{}/x", upstream.addr), &[("authorization", "Bearer {/A}")]).await;
    let waited = started.elapsed();
    reply.assert_error(504, "upstream_timeout");
    assert!(waited >= Duration::from_millis(250), "answered before connect_timeout: {waited:?}");
    assert!(waited < Duration::from_secs(3), "not answered at connect_timeout (300ms): {waited:?}");
    assert_eq!(timeouts(&run).await - before, 1.0, "upstream_errors_total{{kind=\"upstream_timeout\"}}");

    // A blind CONNECT tunnel: `localhost` matches no route (the route names 127.0.0.1; a
    // CONNECT to an http-routed host is opened first, to see whether plain HTTP follows).
    let started = Instant::now();
    let refused = open_tunnel(run.proxy(), &format!("localhost:{port}")).await.expect_err("no tunnel to a dead end");
    let waited = started.elapsed();
    refused.assert_error(504, "upstream_timeout", "CONNECT");
    assert!(waited >= Duration::from_millis(250), "CONNECT answered before connect_timeout: {waited:?}");
    assert!(waited < Duration::from_secs(3), "CONNECT not answered at connect_timeout (300ms): {waited:?}");
    let after = scrape(run.admin()).await;
    assert_eq!(after.count("upstream_errors_total", &[("kind", "upstream_timeout")]) - before, 2.0);
    assert_eq!(after.count("proxy_requests_total", &[("route", "tunnel"), ("status", "504")]), 1.0);
}
