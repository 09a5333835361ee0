//! Issue 9, finding 4 (beyond the CONNECT case): at `--log trace`, with every library target
//! enabled, no log line may carry a token or key bytes, whatever the traffic. This test
//! pushes a representative mix through the real binary (forward HTTP with placeholders in
//! headers, target and body, buffered and streamed; a reverse listener; an intercepted HTTPS
//! tunnel over h1 and h2; refused requests; an unreachable upstream; an upstream that echoes
//! the request, Authorization included), then searches the whole log for every token value
//! the upstreams received and every line of the key files.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::ca::TestCa;
use crate::support::config::{config, listener, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::{find_jwts, parts};
use crate::support::logs::{contains, line_with, log_leaks};
use crate::support::raw::{exchange, get_bytes, request_bytes, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::{h2_send, intercepted_h2, intercepted_raw};
use crate::support::upstream::Upstream;

fn other_tokens() -> String {
    "[tokens.ec]\nalgorithm = \"ES256\"\nkey_type = \"EcPem\"\nkey_file = \"keys/demo-ec.key.pem\"\nttl = \"10m\"\n\n\
     [tokens.hs]\nalgorithm = \"HS256\"\nkey_type = \"Base64Secret\"\nkey_file = \"keys/demo-hs.secret.b64\"\n\
     ttl = \"10m\"\n\n[tokens.ed]\nalgorithm = \"EdDSA\"\nkey_type = \"EdPem\"\nkey_file = \"keys/demo-ed.key.pem\"\n\
     ttl = \"10m\"\n\n"
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_log_of_a_whole_traffic_mix_holds_no_token_and_no_key_material() {
    let plain = Upstream::start().await;
    let echo = Upstream::builder().echo().start().await;
    let ca = TestCa::new();
    let tls = Upstream::tls(&ca).await;
    // An address nothing listens on: a port bound, then released (it cannot be otherwise).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind");
    let (p, e, t, d) = (plain.port(), echo.port(), tls.port(), dead.port());
    let config = format!(
        "{base}{TLS_SECTION}{tok}{other}{ed_route}\
         [[routes]]\nname = \"plain\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {p}\npath_prefix = \"/api\"\n\
         tokens = [\"tok\", \"ec\", \"hs\"]\n\n\
         [[routes]]\nname = \"echo\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {e}\ntokens = [\"tok\"]\n\n\
         [[routes]]\nname = \"dead\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {d}\ntokens = [\"tok\"]\n\n\
         [[routes]]\nname = \"tls\"\nhost = \"localhost\"\nport = {t}\ntokens = [\"tok\", \"ec\", \"hs\"]\n\n\
         [routes.set_headers]\nX-Set = \"{{/hs}}\"\n\n\
         {listener}",
        base = config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\"\nmax_buffered_body = \"16KiB\""), ""),
        tok = rs256_token("tok", "10m"),
        other = other_tokens(),
        // `ed` is configured but bound only to another host: naming it here is refused.
        ed_route = "[[routes]]\nname = \"elsewhere\"\nhost = \"elsewhere.example\"\ntokens = [\"ed\", \"hs\"]\n\n",
        listener = listener(&plain.url("/api")),
    );
    let run = Running::start_with(&config, Some(&ca), "trace").await;
    let proxy = run.proxy();
    let plain_auth = format!("127.0.0.1:{p}");
    let listener = run.listener();
    let mut statuses = Vec::new();
    let mut note = |what: &str, status: u16| statuses.push(format!("{what}: {status}"));

    // Forward HTTP: placeholders in headers, the target (raw and percent-encoded) and bodies.
    let headers = [("Authorization", "Bearer {/tok}"), ("X-Ec", "{/ec}"), ("X-Hs", "token={/hs}")];
    let r =
        exchange(proxy, &get_bytes(&format!("http://{plain_auth}/api/%7B%2Ftok%7D?ec={{/ec}}"), &plain_auth, &headers))
            .await;
    note("forward GET", r.status);
    let small = br#"{"token":"{/tok}","ec":"{/ec}"}"#;
    let r = exchange(
        proxy,
        &request_bytes("POST", &format!("http://{plain_auth}/api/small"), &[("Host", &plain_auth)], &headers, small),
    )
    .await;
    note("forward POST small", r.status);
    let mut large = Vec::new();
    while large.len() < 40 * 1024 {
        large.extend_from_slice(b"padding padding padding {/tok} more padding {/hs} ");
    }
    let r = exchange(
        proxy,
        &request_bytes("POST", &format!("http://{plain_auth}/api/large"), &[("Host", &plain_auth)], &headers, &large),
    )
    .await;
    note("forward POST streamed", r.status);
    // Chunked request body.
    let mut conn = RawConn::tcp(proxy).await;
    let head = format!(
        "POST http://{plain_auth}/api/chunked HTTP/1.1\r\nHost: {plain_auth}\r\nAuthorization: Bearer {{/tok}}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut bytes = head.into_bytes();
    for piece in [&b"first {/t"[..], b"ok} second {/ec}", b" third"] {
        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        bytes.extend_from_slice(piece);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    note("forward POST chunked", conn.request(&bytes).await.expect("chunked POST").status);

    // Reverse listener.
    let r = exchange(listener, &get_bytes("/reverse?t={/tok}", &listener.to_string(), &headers)).await;
    note("reverse GET", r.status);
    let r = exchange(listener, &request_bytes("POST", "/reverse", &[("Host", &listener.to_string())], &headers, small))
        .await;
    note("reverse POST", r.status);

    // Intercepted tunnel, HTTP/1.1 then h2.
    let ca_pem = run.ca_pem();
    let tunnel = format!("localhost:{t}");
    let mut conn = intercepted_raw(proxy, &tunnel, &ca_pem, "localhost").await;
    let r = conn
        .request(&request_bytes(
            "POST",
            "/h1?q={/ec}",
            &[("Host", &tunnel)],
            &[("Authorization", "Bearer {/tok}")],
            small,
        ))
        .await
        .expect("h1 in tunnel");
    note("tunnel h1 POST", r.status);
    let mut h2 = intercepted_h2(proxy, &tunnel, &ca_pem, "localhost").await;
    for (method, body) in [("GET", Bytes::new()), ("POST", Bytes::from(large.clone()))] {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://{tunnel}/h2/%7B%2Fec%7D"))
            .header("authorization", "Bearer {/tok}")
            .body(Full::new(body))
            .expect("h2 request");
        let (status, _, _) = h2_send(&mut h2, req).await;
        note(&format!("tunnel h2 {method}"), status);
    }

    // Refusals: an unbound configured token, in a header, the target and the body.
    let r =
        exchange(proxy, &get_bytes(&format!("http://{plain_auth}/api/x"), &plain_auth, &[("X-Other", "{/ed}")])).await;
    note("refused header", r.status);
    let r = exchange(proxy, &get_bytes(&format!("http://{plain_auth}/api/{{/ed}}"), &plain_auth, &headers)).await;
    note("refused target", r.status);
    let r = exchange(
        proxy,
        &request_bytes("POST", &format!("http://{plain_auth}/api/x"), &[("Host", &plain_auth)], &headers, b"{/ed}"),
    )
    .await;
    note("refused body", r.status);
    let r = exchange(proxy, &get_bytes(&format!("http://{plain_auth}/api/..%2Fadmin"), &plain_auth, &headers)).await;
    note("traversal", r.status);
    let r = exchange(proxy, &get_bytes("/origin-form", &proxy.to_string(), &headers)).await;
    note("origin-form on the proxy port", r.status);
    // CONNECT requests where CONNECT means nothing: a reverse listener and inside a tunnel.
    let r = exchange(
        listener,
        format!("CONNECT /v1/%7B%2Ftok%7D HTTP/1.1\r\nHost: {listener}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    note("CONNECT on listener", r.status);
    let mut conn = intercepted_raw(proxy, &tunnel, &ca_pem, "localhost").await;
    let r = conn
        .request(format!("CONNECT /v1/%7B%2Ftok%7D HTTP/1.1\r\nHost: {tunnel}\r\n\r\n").as_bytes())
        .await
        .expect("CONNECT in tunnel");
    note("CONNECT in tunnel", r.status);

    // Upstream errors: nothing listening, and an upstream that reflects the request.
    let dead_auth = format!("127.0.0.1:{d}");
    let r =
        exchange(proxy, &get_bytes(&format!("http://{dead_auth}/down?t={{/tok}}"), &dead_auth, &headers[..1])).await;
    note("dead upstream", r.status);
    let echo_auth = format!("127.0.0.1:{e}");
    let r =
        exchange(proxy, &get_bytes(&format!("http://{echo_auth}/echo?t={{/tok}}"), &echo_auth, &headers[..1])).await;
    note("echo upstream", r.status);
    assert!(!find_jwts(&r.text()).is_empty(), "the echo reflected the token to the client (a route without redaction)");

    // Every token value an upstream received.
    let mut tokens = plain.jwts();
    tokens.extend(echo.jwts());
    tokens.extend(tls.jwts());
    tokens.sort();
    tokens.dedup();
    let signers: std::collections::BTreeSet<String> =
        tokens.iter().map(|t| parts(t).0["alg"].as_str().unwrap_or_default().to_string()).collect();
    assert!(
        ["RS256", "ES256", "HS256"].iter().all(|a| signers.contains(*a)),
        "the mix should have delivered RS256, ES256 and HS256 tokens; got {signers:?}; statuses:\n{}",
        statuses.join("\n")
    );

    let key_files = run.key_files();
    let Running { dir: _dir, sidecar } = run;
    let log = sidecar.stop();
    let request_lines = memchr::memmem::find_iter(log.as_bytes(), b"\"message\":\"request\"").count();
    assert!(request_lines >= 10, "the log should hold per-request debug lines at trace; got {request_lines}");

    let mut leaks = Vec::new();
    for token in &tokens {
        let alg = parts(token).0["alg"].as_str().unwrap_or_default().to_string();
        let segments: Vec<&str> = token.split('.').collect();
        // Its signature or its claims (a truncated or re-encoded copy still leaks the token).
        for (what, needle) in [("signature", segments[2]), ("claims", segments[1])] {
            if contains(&log, needle) {
                leaks.push(format!("the {what} of a delivered {alg} token: {}", line_with(&log, needle)));
                break;
            }
        }
    }
    leaks.extend(log_leaks(&log, &key_files));
    assert!(
        leaks.is_empty(),
        "{} leak(s) in the --log trace output ({} lines) after {} tokens were delivered; first ones:\n{}\nstatuses:\n{}",
        leaks.len(),
        memchr::memchr_iter(b'\n', log.as_bytes()).count(),
        tokens.len(),
        leaks.iter().take(5).cloned().collect::<Vec<_>>().join("\n"),
        statuses.join("\n")
    );
}
