//! The TLS server of intercepted tunnels. Session resumption: a client that keeps its session
//! (as browsers, curl within one run, Go and Java clients do) skips the certificate
//! signature on its next connection, however many other clients the sidecar serves. Suites:
//! the sidecar picks AES-128-GCM with SHA-256 whatever order the client lists (the cheapest
//! handshake and records; see `tls::leaf`).

use std::sync::Arc;

use rustls::HandshakeKind;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
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

#[tokio::test]
async fn the_sidecar_picks_aes_128_gcm_sha256_over_the_clients_first_choice() {
    let world = world().await;
    // rustls, like OpenSSL, lists AES-256-GCM-SHA384 first.
    let client = client_config(&world.run.ca_pem(), &[b"http/1.1"]);
    assert_eq!(
        client.crypto_provider().cipher_suites.first().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    let target = format!("localhost:{}", world.upstream.port());
    let stream = open_tunnel(world.run.proxy(), &target).await.unwrap_or_else(|r| panic!("CONNECT: {}", r.head));
    let tls = tls_with(stream, Arc::clone(&client), "localhost").await.expect("TLS inside the tunnel");
    let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    // A client that offers only AES-256 still gets it.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(world.run.ca_pem().as_bytes()) {
        roots.add(cert.expect("PEM certificate")).expect("the sidecar's CA");
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384],
        ..(**client.crypto_provider()).clone()
    };
    let only_256 = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = open_tunnel(world.run.proxy(), &target).await.unwrap_or_else(|r| panic!("CONNECT: {}", r.head));
    let tls = tls_with(stream, Arc::new(only_256), "localhost").await.expect("TLS with AES-256 only");
    let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
}
