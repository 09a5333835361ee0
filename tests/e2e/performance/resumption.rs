//! TLS session resumption inside intercepted tunnels: a client that keeps its session (as
//! browsers, curl within one run, Go and Java clients do) skips the certificate signature on
//! its next connection, however many other clients the sidecar serves.

use std::sync::Arc;

use rustls::HandshakeKind;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::ca::{client_config, TestCa};
use crate::support::config::{config, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::raw::{get_bytes, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::{open_tunnel, tls_with};
use crate::support::upstream::Upstream;

/// More clients than rustls's default server session cache serves (256 sessions, two per
/// handshake).
const CLIENTS: usize = 160;

struct World {
    upstream: Upstream,
    run: Running,
}

async fn world() -> World {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let text = format!(
        "{}{TLS_SECTION}{}[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), ""),
        rs256_token("tok", "10m"),
        upstream.port(),
    );
    let run = Running::start_with(&text, Some(&ca), "info").await;
    World { upstream, run }
}

/// CONNECT, TLS with `client` (SNI localhost), and one request with a placeholder; returns
/// how the handshake went.
async fn visit(world: &World, client: Arc<rustls::ClientConfig>) -> HandshakeKind {
    let target = format!("localhost:{}", world.upstream.port());
    let stream = open_tunnel(world.run.proxy(), &target).await.unwrap_or_else(|r| panic!("CONNECT: {}", r.head));
    let tls: TlsStream<TcpStream> = tls_with(stream, client, "localhost").await.expect("TLS inside the tunnel");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let mut conn = RawConn::new(tls);
    // Reading the answer also reads the session tickets the sidecar sent after the handshake.
    let reply = conn.request(&get_bytes("/r", &target, &[("x-token", "{/tok}")])).await.expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_that_keeps_its_session_resumes_it() {
    let world = Arc::new(world().await);
    // One session store per client, as separate processes have.
    let clients: Vec<Arc<rustls::ClientConfig>> =
        (0..CLIENTS).map(|_| client_config(&world.run.ca_pem(), &[b"http/1.1"])).collect();
    let mut full = Vec::new();
    for client in &clients {
        full.push(visit(&world, Arc::clone(client)).await);
    }
    assert!(full.iter().all(|k| *k == HandshakeKind::Full), "first visits: {full:?}");
    let mut resumed = 0;
    for client in &clients {
        if visit(&world, Arc::clone(client)).await == HandshakeKind::Resumed {
            resumed += 1;
        }
    }
    assert_eq!(resumed, CLIENTS, "clients whose second connection resumed its session");
    // Each intercepted request was still served with the token.
    assert_eq!(world.upstream.count(), 2 * CLIENTS);
    assert!(world.upstream.requests().iter().all(|r| r.header("x-token").is_some_and(|t| t.starts_with("eyJ"))));
}
