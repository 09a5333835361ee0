//! HTTPS_PROXY: CONNECT interception for routed hosts, blind tunnels for the rest.
//!
//! Every test runs a real TLS upstream on 127.0.0.1 with its own test CA (trusted by the
//! sidecar through `extra_ca_file`), a real sidecar with a local CA, and real clients.

use std::path::PathBuf;
use std::sync::Arc;

use token_sidecar::server::Sidecar;
use token_sidecar::tls::Interceptor;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::ca::{insecure_client_config, TestCa};
use crate::support::client::{curl, python, run_command};
use crate::support::config::{config, rs256_token, ConfigDir, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::raw::{get_bytes, RawConn};
use crate::support::sidecar::{binary, start_config};
use crate::support::tunnel::{open_tunnel, tls_over, tls_with};
use crate::support::upstream::Upstream;

#[derive(Default)]
struct Options {
    extra_proxy: &'static str,
    no_tls: bool,
    route_port: Option<u16>,
}

/// A TLS upstream and an in-process sidecar configured to intercept it.
struct World {
    _dir: ConfigDir,
    upstream: Upstream,
    upstream_ca_issuer: TestCa,
    sidecar_ca: PathBuf,
    sidecar: Sidecar,
}

impl World {
    async fn new() -> World {
        World::build(Options::default()).await
    }

    async fn with_extra(extra_proxy: &'static str) -> World {
        World::build(Options { extra_proxy, ..Options::default() }).await
    }

    async fn without_tls() -> World {
        World::build(Options { no_tls: true, ..Options::default() }).await
    }

    async fn build(opts: Options) -> World {
        let dir = ConfigDir::empty();
        let ca = TestCa::new();
        dir.write(UPSTREAM_CA_FILE, &ca.pem);
        let upstream = Upstream::tls(&ca).await;
        let (sidecar_ca, sidecar_key) = token_sidecar::tls::generate_ca(&dir.path("ca")).unwrap();
        let tls = if opts.no_tls {
            String::new()
        } else {
            format!("[tls]\nca_cert = {sidecar_ca:?}\nca_key = {sidecar_key:?}\nleaf_cache_size = 4\n")
        };
        let text = config(
            &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\"\n{}", opts.extra_proxy),
            &format!(
                r#"{tls}

{token}
[[routes]]
host = "localhost"
port = {port}
tokens = ["api"]

[routes.placeholders]
auth_token = "api"

[[routes]]
host = "*.cache.test"
tokens = ["api"]
"#,
                token = rs256_token("api", "5m"),
                port = opts.route_port.unwrap_or(upstream.port()),
            ),
        );
        let sidecar = start_config(dir.config(&text)).await;
        World { _dir: dir, upstream, upstream_ca_issuer: ca, sidecar_ca, sidecar }
    }

    fn upstream_ca(&self) -> &str {
        &self.upstream_ca_issuer.pem
    }

    fn sidecar_ca_pem(&self) -> String {
        std::fs::read_to_string(&self.sidecar_ca).unwrap()
    }

    fn interceptor(&self) -> Arc<Interceptor> {
        self.sidecar.state().load().interceptor.clone().expect("interception configured")
    }
}

/// A TLS client over `stream` trusting only `roots` (PEM), offering HTTP/1.1.
async fn tls_client(stream: TcpStream, roots: &str, name: &str) -> std::io::Result<TlsStream<TcpStream>> {
    tls_over(stream, roots, name, &[b"http/1.1"]).await
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends one GET over an established TLS stream; returns status and body text.
async fn get_over(tls: TlsStream<TcpStream>, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let response = RawConn::new(tls).request(&get_bytes(path, host, headers)).await.expect("a response in the tunnel");
    (response.status, response.text())
}

/// Checks a token was signed by the demo RSA key for this world's token, and has not expired.
fn verify_world_token(token: &str) {
    let claims = verify_demo(token);
    assert_eq!(claims["iss"], "e2e-tests", "{claims}");
    assert_eq!(claims["sub"], "api", "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_https_proxy_gets_a_verified_token_over_http1_and_h2() {
    let world = World::new().await;
    for (flag, expect_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let mut command = curl();
        command
            .args(["-sS", "-g", flag, "-w", "\n%{http_version}", "--cacert"])
            .arg(&world.sidecar_ca)
            .args(["-x", &format!("http://{}", world.sidecar.proxy_addr)])
            .arg(format!("https://localhost:{}/v1/items?token={{/auth_token}}", world.upstream.port()))
            .args(["-H", "Authorization: Bearer {/auth_token}"]);
        let out = run_command(command).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl failed: {} {}", stdout, String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("upstream ok"), "{stdout}");
        assert_eq!(stdout.lines().last(), Some(expect_version), "client-side HTTP version");
        let seen = world.upstream.last().expect("upstream saw the request");
        let token = seen.token();
        verify_world_token(token);
        assert_eq!(seen.uri, format!("/v1/items?token={token}"));
        if expect_version == "2" {
            assert_eq!(seen.version, http::Version::HTTP_2, "sidecar speaks h2 upstream when offered");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_https_proxy_env_and_python_requests_work() {
    let world = World::new().await;
    let url = format!("https://localhost:{}/env", world.upstream.port());
    let mut command = curl();
    command
        .args(["-sS", "-H", "Authorization: Bearer {/auth_token}"])
        .arg(&url)
        .env("HTTPS_PROXY", format!("http://{}", world.sidecar.proxy_addr))
        .env("CURL_CA_BUNDLE", &world.sidecar_ca);
    let out = run_command(command).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    verify_world_token(world.upstream.last().unwrap().token());

    let script = format!(
        "import requests\nr = requests.get({url:?}, headers={{'Authorization': 'Bearer {{/auth_token}}'}}, \
         proxies={{'https': 'http://{}'}})\nprint(r.status_code)\n",
        world.sidecar.proxy_addr
    );
    let mut command = python();
    command.args(["-c", &script]).env("REQUESTS_CA_BUNDLE", &world.sidecar_ca);
    let out = run_command(command).await;
    assert!(
        out.status.success(),
        "python requests failed (.ci/run installs it with pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    let seen = world.upstream.last().unwrap();
    assert_eq!(seen.uri, "/env");
    verify_world_token(seen.token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_connect_is_a_blind_tunnel_showing_the_upstreams_own_certificate() {
    let world = World::new().await;
    // The route names "localhost"; 127.0.0.1 is the same server but unrouted.
    let target = format!("127.0.0.1:{}", world.upstream.port());
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &target).await.expect("tunnel opens");
    // Trusting only the upstream's test CA: this handshake succeeds only if the bytes reach
    // the upstream untouched (a sidecar-minted certificate would be rejected).
    let tls = tls_client(tunnel, world.upstream_ca(), "localhost").await.expect("upstream's own certificate");
    let (status, _) = get_over(tls, "localhost", "/blind", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 200);
    let seen = world.upstream.last().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer {/auth_token}"), "blind tunnels are never rewritten");
    assert_eq!(world.interceptor().cache_len(), 0, "no certificate minted for an unrouted host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_connect_is_refused_with_deny_policy() {
    let world = World::with_extra("unmatched = \"deny\"").await;
    let err = open_tunnel(world.sidecar.proxy_addr, &format!("127.0.0.1:{}", world.upstream.port())).await.unwrap_err();
    err.assert_error(403, "unmatched_denied", "CONNECT to an unrouted host with unmatched = deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_routed_host_on_another_port_is_not_intercepted() {
    let world = World::new().await;
    let other = Upstream::tls(&world.upstream_ca_issuer).await;
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &format!("localhost:{}", other.port())).await.unwrap();
    tls_client(tunnel, world.upstream_ca(), "localhost").await.expect("the upstream's own certificate");
    assert_eq!(world.interceptor().cache_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_an_untrusted_certificate_gives_502() {
    // A server whose CA the sidecar does not trust, on a routed name and port.
    let rogue = Upstream::tls(&TestCa::new()).await;
    let world = World::build(Options { route_port: Some(rogue.port()), ..Options::default() }).await;
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &format!("localhost:{}", rogue.port())).await.unwrap();
    let tls = tls_client(tunnel, &world.sidecar_ca_pem(), "localhost").await.expect("sidecar certificate");
    let (status, body) = get_over(tls, "localhost", "/", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 502, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "upstream_tls_error");
    assert!(rogue.last().is_none(), "nothing reached the rogue upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_certificates_are_cached_and_the_cache_stays_bounded() {
    let world = World::new().await;
    let ca = world.sidecar_ca_pem();
    let mut first_cert = None;
    for i in 0..10 {
        let host = format!("h{i}.cache.test");
        let tunnel = open_tunnel(world.sidecar.proxy_addr, &format!("{host}:443")).await.unwrap();
        let tls = tls_client(tunnel, &ca, &host).await.expect("minted leaf verifies for its host");
        if i == 0 {
            first_cert = Some(peer_cert(&tls));
        }
        assert!(world.interceptor().cache_len() <= 4, "cache bound is leaf_cache_size");
    }
    // The same host twice in a row presents the very same certificate (cached).
    let a = peer_cert(
        &tls_client(open_tunnel(world.sidecar.proxy_addr, "h9.cache.test:443").await.unwrap(), &ca, "h9.cache.test")
            .await
            .unwrap(),
    );
    let b = peer_cert(
        &tls_client(open_tunnel(world.sidecar.proxy_addr, "h9.cache.test:443").await.unwrap(), &ca, "h9.cache.test")
            .await
            .unwrap(),
    );
    assert_eq!(a, b);
    // h0 was evicted long ago: it gets a newly minted certificate.
    let again = peer_cert(
        &tls_client(open_tunnel(world.sidecar.proxy_addr, "h0.cache.test:443").await.unwrap(), &ca, "h0.cache.test")
            .await
            .unwrap(),
    );
    assert_ne!(Some(again), first_cert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_fails_and_others_are_still_served() {
    let world = World::new().await;
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap();
    assert!(tls_client(tunnel, world.upstream_ca(), "localhost").await.is_err(), "untrusted CA must fail");
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap();
    let tls = tls_client(tunnel, &world.sidecar_ca_pem(), "localhost").await.unwrap();
    let (status, _) = get_over(tls, "localhost", "/after", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 200);
    verify_world_token(world.upstream.last().unwrap().token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_must_name_the_tunnel_host() {
    let world = World::new().await;
    let ca = world.sidecar_ca_pem();
    let target = format!("localhost:{}", world.upstream.port());
    // A Host header naming another host inside the tunnel: 421, nothing substituted or sent.
    let tls =
        tls_client(open_tunnel(world.sidecar.proxy_addr, &target).await.unwrap(), &ca, "localhost").await.unwrap();
    let (status, body) = get_over(tls, "evil.example", "/", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"));
    assert!(world.upstream.last().is_none());
}

/// Invariant 6 in TLS: the name the client asks TLS for must be the CONNECT host. The client
/// here accepts any certificate, so a refused handshake can only be the sidecar's doing (a
/// verifying client would reject the `localhost` certificate for `other.cache.test` itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_naming_another_host_is_refused_by_the_sidecar() {
    let world = World::new().await;
    let target = format!("localhost:{}", world.upstream.port());
    let insecure = insecure_client_config(&[b"http/1.1"]);
    // Control: the same client, naming the tunnel's host, completes the handshake.
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &target).await.expect("tunnel opens");
    let control = tls_with(tunnel, Arc::clone(&insecure), "localhost").await;
    assert!(control.is_ok(), "the certificate-blind client cannot complete a handshake at all: {control:?}");
    drop(control);

    // `other.cache.test` is routed too (`*.cache.test`), but it is not this tunnel's host.
    let tunnel = open_tunnel(world.sidecar.proxy_addr, &target).await.expect("tunnel opens");
    match tls_with(tunnel, insecure, "other.cache.test").await {
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "the sidecar neither refused nor answered: {e}"),
        Ok(mut tls) => {
            // Show what the sidecar would have served on it.
            let request = get_bytes("/", "localhost", &[("authorization", "Bearer {/auth_token}")]);
            let answer = RawConn::new(&mut tls).request(&request).await;
            panic!(
                "the sidecar completed a TLS handshake for SNI other.cache.test in a tunnel to {target}: {answer:?}"
            );
        }
    }
    assert_eq!(world.upstream.count(), 0, "a request reached the upstream: {:?}", world.upstream.requests());
    assert_eq!(world.upstream.bytes(), 0, "bytes reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_section_connect_to_a_routed_host_explains_how_to_enable_interception() {
    let world = World::without_tls().await;
    let err = open_tunnel(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap_err();
    err.assert_error(403, "interception_disabled", "CONNECT to a routed host without [tls]");
    assert!(err.text().contains("ca init"), "the refusal should say how to enable interception: {}", err.text());
}

#[test]
fn ca_init_refuses_to_overwrite_and_export_prints_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = binary().args(["ca", "init", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snippet = String::from_utf8(out.stdout).unwrap();
    assert!(snippet.starts_with("[tls]"));
    let key = dir.path().join("ca.key");
    let before = std::fs::read(&key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = binary().args(["ca", "init", "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read(&key).unwrap(), before, "existing CA untouched");

    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, &snippet).unwrap();
    let out = binary().args(["ca", "export", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read(dir.path().join("ca.pem")).unwrap());
}
