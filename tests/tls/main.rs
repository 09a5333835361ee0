//! HTTPS_PROXY: CONNECT interception for routed hosts, blind tunnels for the rest.
//!
//! Every test runs a real TLS upstream on 127.0.0.1 with its own test CA (trusted by the
//! sidecar through `extra_ca_file`), a real sidecar with a local CA, and real clients.

mod support;

use std::process::Command;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_https_proxy_gets_a_verified_token_over_http1_and_h2() {
    let world = World::new().await;
    for (flag, expect_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = Command::new("curl")
            .args(["-sS", "-g", flag, "-w", "\n%{http_version}", "--cacert"])
            .arg(&world.sidecar_ca)
            .args(["-x", &format!("http://{}", world.sidecar.proxy_addr)])
            .arg(format!("https://localhost:{}/v1/items?token={{/auth_token}}", world.upstream.port()))
            .args(["-H", "Authorization: Bearer {/auth_token}"])
            .output()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl failed: {} {}", stdout, String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("upstream ok"), "{stdout}");
        assert_eq!(stdout.lines().last(), Some(expect_version), "client-side HTTP version");
        let seen = world.upstream.last().expect("upstream saw the request");
        let auth = seen.header("authorization").expect("authorization header");
        let token = auth.strip_prefix("Bearer ").expect("bearer");
        verify_demo_token(token);
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
    let out = Command::new("curl")
        .args(["-sS", "-H", "Authorization: Bearer {/auth_token}"])
        .arg(&url)
        .env("HTTPS_PROXY", format!("http://{}", world.sidecar.proxy_addr))
        .env("CURL_CA_BUNDLE", &world.sidecar_ca)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    verify_demo_token(world.upstream.last().unwrap().bearer());

    let script = format!(
        "import requests\nr = requests.get({url:?}, headers={{'Authorization': 'Bearer {{/auth_token}}'}}, \
         proxies={{'https': 'http://{}'}})\nprint(r.status_code)\n",
        world.sidecar.proxy_addr
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .env("REQUESTS_CA_BUNDLE", &world.sidecar_ca)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python requests failed (.ci/run installs it with pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    let seen = world.upstream.last().unwrap();
    assert_eq!(seen.uri, "/env");
    verify_demo_token(seen.bearer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_connect_is_a_blind_tunnel_showing_the_upstreams_own_certificate() {
    let world = World::new().await;
    // The route names "localhost"; 127.0.0.1 is the same server but unrouted.
    let target = format!("127.0.0.1:{}", world.upstream.port());
    let tunnel = connect(world.sidecar.proxy_addr, &target).await.expect("tunnel opens");
    // Trusting only the upstream's test CA: this handshake succeeds only if the bytes reach
    // the upstream untouched (a sidecar-minted certificate would be rejected).
    let tls = tls_client(tunnel, &[&world.upstream_ca], "localhost").await.expect("upstream's own certificate");
    let (status, _) = get_over(tls, "localhost", "/blind", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 200);
    let seen = world.upstream.last().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer {/auth_token}"), "blind tunnels are never rewritten");
    assert_eq!(world.interceptor().cache_len(), 0, "no certificate minted for an unrouted host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_connect_is_refused_with_deny_policy() {
    let world = World::with_extra("unmatched = \"deny\"").await;
    let err = connect(world.sidecar.proxy_addr, &format!("127.0.0.1:{}", world.upstream.port())).await.unwrap_err();
    assert!(err.starts_with("HTTP/1.1 403"), "{err}");
    assert!(err.contains("x-token-sidecar-error: unmatched_denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_routed_host_on_another_port_is_not_intercepted() {
    let world = World::new().await;
    let other = TlsUpstream::start(world.dir.path(), &world.upstream_ca_issuer).await;
    let tunnel = connect(world.sidecar.proxy_addr, &format!("localhost:{}", other.port())).await.unwrap();
    tls_client(tunnel, &[&world.upstream_ca], "localhost").await.expect("the upstream's own certificate");
    assert_eq!(world.interceptor().cache_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_an_untrusted_certificate_gives_502() {
    // A server whose CA the sidecar does not trust, on a routed name and port.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = TlsUpstream::start(rogue_dir.path(), &TestCa::new()).await;
    let world = World::build(Options { route_port: Some(rogue.port()), ..Options::default() }).await;
    let tunnel = connect(world.sidecar.proxy_addr, &format!("localhost:{}", rogue.port())).await.unwrap();
    let tls = tls_client(tunnel, &[&world.sidecar_ca_pem()], "localhost").await.expect("sidecar certificate");
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
        let tunnel = connect(world.sidecar.proxy_addr, &format!("{host}:443")).await.unwrap();
        let tls = tls_client(tunnel, &[&ca], &host).await.expect("minted leaf verifies for its host");
        if i == 0 {
            first_cert = Some(peer_cert(&tls));
        }
        assert!(world.interceptor().cache_len() <= 4, "cache bound is leaf_cache_size");
    }
    // The same host twice in a row presents the very same certificate (cached).
    let a = peer_cert(
        &tls_client(connect(world.sidecar.proxy_addr, "h9.cache.test:443").await.unwrap(), &[&ca], "h9.cache.test")
            .await
            .unwrap(),
    );
    let b = peer_cert(
        &tls_client(connect(world.sidecar.proxy_addr, "h9.cache.test:443").await.unwrap(), &[&ca], "h9.cache.test")
            .await
            .unwrap(),
    );
    assert_eq!(a, b);
    // h0 was evicted long ago: it gets a newly minted certificate.
    let again = peer_cert(
        &tls_client(connect(world.sidecar.proxy_addr, "h0.cache.test:443").await.unwrap(), &[&ca], "h0.cache.test")
            .await
            .unwrap(),
    );
    assert_ne!(Some(again), first_cert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_fails_and_others_are_still_served() {
    let world = World::new().await;
    let tunnel = connect(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap();
    assert!(tls_client(tunnel, &[&world.upstream_ca], "localhost").await.is_err(), "untrusted CA must fail");
    let tunnel = connect(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap();
    let tls = tls_client(tunnel, &[&world.sidecar_ca_pem()], "localhost").await.unwrap();
    let (status, _) = get_over(tls, "localhost", "/after", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 200);
    verify_demo_token(world.upstream.last().unwrap().bearer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_sni_must_name_the_tunnel_host() {
    let world = World::new().await;
    let ca = world.sidecar_ca_pem();
    let target = format!("localhost:{}", world.upstream.port());
    // A Host header naming another host inside the tunnel: 421, nothing substituted or sent.
    let tls = tls_client(connect(world.sidecar.proxy_addr, &target).await.unwrap(), &[&ca], "localhost").await.unwrap();
    let (status, body) = get_over(tls, "evil.example", "/", &[("authorization", "Bearer {/auth_token}")]).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"));
    assert!(world.upstream.last().is_none());
    // SNI naming another host: the handshake is refused.
    let tunnel = connect(world.sidecar.proxy_addr, &target).await.unwrap();
    assert!(tls_client(tunnel, &[&ca], "other.cache.test").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_section_connect_to_a_routed_host_explains_how_to_enable_interception() {
    let world = World::without_tls().await;
    let err = connect(world.sidecar.proxy_addr, &format!("localhost:{}", world.upstream.port())).await.unwrap_err();
    assert!(err.starts_with("HTTP/1.1 403"), "{err}");
    assert!(err.contains("interception_disabled") && err.contains("ca init"), "{err}");
}

#[test]
fn ca_init_refuses_to_overwrite_and_export_prints_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_token-sidecar");
    let out = Command::new(bin).args(["ca", "init", "--out"]).arg(dir.path()).output().unwrap();
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
    let again = Command::new(bin).args(["ca", "init", "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read(&key).unwrap(), before, "existing CA untouched");

    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, &snippet).unwrap();
    let out = Command::new(bin).args(["ca", "export", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read(dir.path().join("ca.pem")).unwrap());
}
