//! Issue 9, findings 2, 3 and 4: the host a token is bound to comes only from a well-formed
//! `host:port` CONNECT target (or absolute URI), normalised, and is the only host the
//! upstream is told about; a second `Host` header is refused rather than half-checked; and a
//! CONNECT *request* anywhere but the proxy port is refused (it used to be forwarded, with
//! the token substituted into a target that hyper-util then logged).

use bytes::Bytes;
use http_body_util::Full;

use crate::support::ca::TestCa;
use crate::support::config::{config, listener, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::find_jwts;
use crate::support::logs::log_leaks;
use crate::support::raw::{exchange, get_bytes, request_bytes, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::{h2_send, intercepted_h2, intercepted_raw, open_tunnel, tls_over};
use crate::support::upstream::Upstream;

const AUTH: (&str, &str) = ("Authorization", "Bearer {/tok}");

/// A TLS upstream on localhost and a sidecar that intercepts it (route `localhost:PORT`,
/// prefix `/v1`, token `tok`), plus a plain upstream on 127.0.0.1 with its route and, if
/// asked, a reverse listener to it. Returns (TLS upstream, plain upstream, sidecar).
async fn tls_world(with_listener: bool, log: &str) -> (Upstream, Upstream, Running) {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let plain = Upstream::start().await;
    let plain_port = plain.port();
    let listener = if with_listener { listener(&plain.url("")) } else { String::new() };
    let config = format!(
        "{}{TLS_SECTION}{}{}[[routes]]\nname = \"tls\"\nhost = \"localhost\"\nport = {}\npath_prefix = \"/v1\"\n\
         tokens = [\"tok\", \"api_jwt\"]\n\n[[routes]]\nname = \"plain\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {plain_port}\n\
         path_prefix = \"/v1\"\ntokens = [\"tok\", \"api_jwt\"]\n\n{listener}",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), ""),
        rs256_token("tok", "10m"),
        rs256_token("api_jwt", "10m"),
        upstream.port(),
    );
    let run = Running::start_with(&config, Some(&ca), log).await;
    (upstream, plain, run)
}

/// When a CONNECT that should have been refused was accepted: completes TLS and one request
/// inside the tunnel, and says what the upstream was told (for the failure message).
async fn what_the_upstream_saw(stream: tokio::net::TcpStream, run: &Running, upstream: &Upstream) -> String {
    let tls = match tls_over(stream, &run.ca_pem(), "localhost", &[b"http/1.1"]).await {
        Ok(tls) => tls,
        Err(e) => return format!("the tunnel was opened (200), then TLS failed: {e}"),
    };
    let mut conn = RawConn::new(tls);
    let host = format!("localhost:{}", upstream.port());
    let reply = conn.request(&get_bytes("/v1/probe", &host, &[AUTH])).await;
    match (reply, upstream.last()) {
        (Ok(r), Some(seen)) => format!(
            "the tunnel was intercepted; the request got {} and the upstream received Host {:?} with token {}",
            r.status,
            seen.hosts(),
            seen.bearer().is_some_and(|t| t.starts_with("eyJ"))
        ),
        (r, _) => format!("the tunnel was intercepted; request result {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_target_with_userinfo_is_refused() {
    let (upstream, _plain, run) = tls_world(false, "info").await;
    let target = format!("evil.example:1@localhost:{}", upstream.port());
    match open_tunnel(run.proxy(), &target).await {
        Err(response) => response.assert_error(400, "bad_connect_target", &format!("CONNECT {target}")),
        Ok(stream) => {
            let saw = what_the_upstream_saw(stream, &run, &upstream).await;
            panic!("CONNECT {target} must get 400 bad_connect_target; instead {saw}");
        }
    }
    assert_eq!(upstream.count(), 0, "nothing reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_targets_that_are_not_host_and_port_are_refused() {
    let (upstream, _plain, run) = tls_world(false, "info").await;
    let port = upstream.port();
    let mut failures = Vec::new();
    for target in [format!("localhost:{port}/path"), format!("http://localhost:{port}"), "localhost".to_string()] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
        let response = exchange(run.proxy(), request.as_bytes()).await;
        // hyper's parser refuses an authority-form target with a path itself; the sidecar
        // answers that refusal with its own 400 bad_request.
        let parser_refusal = target.contains('/') && !target.contains("://") && response.is_error(400, "bad_request");
        if !response.is_error(400, "bad_connect_target") && !parser_refusal {
            failures.push(format!("CONNECT {target}: got {}", response.summary()));
        }
    }
    assert!(failures.is_empty(), "each must get 400 bad_connect_target:\n{}", failures.join("\n"));
    assert_eq!(upstream.count(), 0, "nothing reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_connect_tells_the_upstream_the_normalised_tunnel_host() {
    let (upstream, _plain, run) = tls_world(false, "info").await;
    let port = upstream.port();
    let mut conn = intercepted_raw(run.proxy(), &format!("LOCALHOST:{port}"), &run.ca_pem(), "localhost").await;
    let response = conn
        .request(&get_bytes("/v1/case", &format!("localhost:{port}"), &[AUTH]))
        .await
        .expect("request inside the tunnel");
    assert_eq!(response.status, 200, "{}", response.summary());
    let seen = upstream.last().expect("the upstream received the request");
    assert_eq!(seen.hosts(), vec![format!("localhost:{port}")], "the upstream must see exactly the tunnel's host");
    assert!(seen.bearer().is_some_and(|t| t.starts_with("eyJ")), "token injected: {:?}", seen.bearer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_inside_a_tunnel_is_refused() {
    let (upstream, _plain, run) = tls_world(false, "info").await;
    let authority = format!("localhost:{}", upstream.port());
    let mut conn = intercepted_raw(run.proxy(), &authority, &run.ca_pem(), "localhost").await;
    let request = request_bytes("GET", "/v1/x", &[("Host", &authority), ("Host", "evil.example")], &[AUTH], b"");
    let response = conn.request(&request).await.expect("an answer inside the tunnel");
    let forwarded = upstream.requests().iter().map(|s| s.hosts()).collect::<Vec<_>>();
    response.assert_error(
        400,
        "ambiguous_host",
        &format!("two Host headers inside a tunnel (upstream saw {forwarded:?})"),
    );
    assert_eq!(upstream.count(), 0, "nothing is forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_on_the_proxy_port_is_refused() {
    let (_tls, plain, run) = tls_world(false, "info").await;
    let authority = format!("127.0.0.1:{}", plain.port());
    let request = request_bytes(
        "GET",
        &format!("http://{authority}/v1/x"),
        &[("Host", &authority), ("Host", "evil.example")],
        &[AUTH],
        b"",
    );
    let response = exchange(run.proxy(), &request).await;
    let forwarded = plain.count();
    response.assert_error(
        400,
        "ambiguous_host",
        &format!("two Host headers on the proxy port ({forwarded} forwarded)"),
    );
    assert_eq!(plain.count(), 0, "nothing is forwarded");
}

/// RFC 9112 section 3.2.2: a proxy ignores the Host of an absolute-form request. The
/// upstream sees the URI's host, never the spoofed one (invariant 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_disagreeing_with_the_absolute_uri_is_replaced_by_the_uri_host() {
    let (_tls, plain, run) = tls_world(false, "info").await;
    let authority = format!("127.0.0.1:{}", plain.port());
    let request = request_bytes("GET", &format!("http://{authority}/v1/x"), &[("Host", "evil.example")], &[AUTH], b"");
    let response = exchange(run.proxy(), &request).await;
    assert_eq!(response.status, 200, "forwarded");
    let hosts: Vec<String> =
        plain.requests().iter().map(|s| s.header("host").unwrap_or_default().to_string()).collect();
    assert_eq!(hosts, vec![authority], "the upstream sees the URI's host only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_header_disagreeing_with_authority_inside_a_tunnel_is_refused() {
    let (upstream, _plain, run) = tls_world(false, "info").await;
    let authority = format!("localhost:{}", upstream.port());
    let mut h2 = intercepted_h2(run.proxy(), &authority, &run.ca_pem(), "localhost").await;
    let req = http::Request::builder()
        .uri(format!("https://{authority}/v1/x"))
        .header("host", "evil.example")
        .header("authorization", "Bearer {/tok}")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, body) = h2_send(&mut h2, req).await;
    let code = headers.get("x-token-sidecar-error").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(
        (status, code.as_deref()),
        (400, Some("ambiguous_host")),
        ":authority {authority} with Host evil.example; body {}",
        String::from_utf8_lossy(&body)
    );
    assert!(find_jwts(&String::from_utf8_lossy(&body)).is_empty());
    assert_eq!(upstream.count(), 0, "nothing is forwarded");
}

const CONNECT_WITH_PLACEHOLDER: &str = "CONNECT /v1/%7B%2Fapi_jwt%7D HTTP/1.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_request_on_a_reverse_listener_is_refused_and_no_token_is_logged() {
    let (_tls, plain, run) = tls_world(true, "trace").await;
    let listener = run.listener();
    let request = format!("{CONNECT_WITH_PLACEHOLDER}\r\nHost: {listener}\r\nConnection: close\r\n\r\n");
    let response = exchange(listener, request.as_bytes()).await;
    let forwarded = plain.requests().iter().map(|s| format!("{} {}", s.method, s.uri)).collect::<Vec<_>>();
    let key_files = run.key_files();
    let Running { dir: _dir, sidecar } = run;
    let log = sidecar.stop();
    let leaks = log_leaks(&log, &key_files);
    assert!(
        response.is_error(405, "connect_not_allowed") && forwarded.is_empty() && leaks.is_empty(),
        "CONNECT on a reverse listener must get 405 connect_not_allowed, forward nothing and log no token \
         (--log trace); got {}, forwarded {forwarded:?}, {} leak(s) in the log, first: {:?}",
        response.summary(),
        leaks.len(),
        leaks.first()
    );
    response.assert_error(405, "connect_not_allowed", "CONNECT on a reverse listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_request_inside_a_tunnel_is_refused_and_no_token_is_logged() {
    let (upstream, _plain, run) = tls_world(false, "trace").await;
    let authority = format!("localhost:{}", upstream.port());
    let mut conn = intercepted_raw(run.proxy(), &authority, &run.ca_pem(), "localhost").await;
    let request = format!("{CONNECT_WITH_PLACEHOLDER}\r\nHost: {authority}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.expect("an answer inside the tunnel");
    let forwarded = upstream.requests().iter().map(|s| format!("{} {}", s.method, s.uri)).collect::<Vec<_>>();
    drop(conn);
    let key_files = run.key_files();
    let Running { dir: _dir, sidecar } = run;
    let log = sidecar.stop();
    let leaks = log_leaks(&log, &key_files);
    assert!(
        response.is_error(405, "connect_not_allowed") && forwarded.is_empty() && leaks.is_empty(),
        "CONNECT inside a tunnel must get 405 connect_not_allowed, forward nothing and log no token \
         (--log trace); got {}, forwarded {forwarded:?}, {} leak(s) in the log, first: {:?}",
        response.summary(),
        leaks.len(),
        leaks.first()
    );
    response.assert_error(405, "connect_not_allowed", "CONNECT inside a tunnel");
}
