//! gRPC with grpcio through the sidecar: over TLS interception (`https_proxy`, ALPN h2), as
//! plain h2 inside CONNECT (`grpc_proxy` with an insecure channel) and h2c to a reverse
//! listener. Unary, server-streaming and bidi calls, initial and trailing metadata, the
//! token in `authorization` metadata, `te: trailers` and `grpc-timeout` kept, and a
//! client's deadline resetting the upstream stream. Also `upstream_http2` routes, which send
//! any request over h2.

use std::time::Duration;

use http::Version;

use super::{json_lines, require_python_module, step, tok_route};
use crate::support::ca::TestCa;
use crate::support::client::{python, run_command};
use crate::support::config::{config, listener, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::grpc::{GrpcCall, GrpcUpstream};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::Running;
use crate::support::wait::wait_until;

const CLIENT: &str = include_str!("grpc_client.py");

/// Runs the client script against `target` with `env`, returning its JSON lines.
async fn run_client(target: &str, mode: &str, env: &[(&str, String)]) -> Vec<serde_json::Value> {
    let mut client = python();
    client.args(["-c", CLIENT, target, mode]);
    for (name, value) in env {
        client.env(name, value);
    }
    json_lines(&run_command(client).await, &format!("grpcio client ({mode}, {target})"))
}

/// What every run of the client must have seen.
fn assert_calls_worked(lines: &[serde_json::Value]) {
    let unary = step(lines, "unary");
    assert_eq!(unary["reply"], "echo:hello");
    assert_eq!(unary["code"], "OK");
    assert_eq!(unary["initial"]["x-initial"], "yes", "initial metadata lost: {unary}");
    assert_eq!(unary["trailing"]["x-trailer"], "done", "trailing metadata lost: {unary}");

    assert_eq!(step(lines, "stream-first")["reply"], "one");
    let rest = step(lines, "stream-rest");
    assert_eq!(rest["replies"], serde_json::json!(["two"]));
    assert_eq!(rest["trailing"]["x-trailer"], "done");
    assert_eq!(rest["code"], "OK");

    let bidi = step(lines, "bidi");
    assert_eq!(bidi["replies"], serde_json::json!(["echo:ping1", "echo:ping2", "echo:ping3"]));
    assert_eq!(bidi["leftover"], serde_json::json!([]));
    assert_eq!(bidi["code"], "OK");

    assert_eq!(step(lines, "hang")["code"], "DEADLINE_EXCEEDED");
}

/// What the upstream must have seen: h2, the token, `te: trailers`, and the reset deadline.
async fn assert_upstream_saw(upstream: &GrpcUpstream) {
    let calls = upstream.calls();
    assert!(calls.len() >= 5, "calls: {calls:?}");
    for call in &calls {
        assert_eq!(call.version, Version::HTTP_2, "{call:?}");
        assert_eq!(call.header("te"), Some("trailers"), "{call:?}");
        assert_eq!(call.header("content-type"), Some("application/grpc"), "{call:?}");
        let auth = call.header("authorization").expect("authorization metadata");
        let token = auth.strip_prefix("Bearer ").expect("bearer");
        assert_eq!(verify_demo(token)["sub"], "tok");
    }
    let bidi: Vec<GrpcCall> = upstream.calls_to("Bidi");
    assert_eq!(bidi[0].messages, ["ping1", "ping2", "ping3"].map(|m| bytes::Bytes::from_static(m.as_bytes())));
    let hang = &upstream.calls_to("Hang")[0];
    let timeout = hang.header("grpc-timeout").expect("grpc-timeout kept");
    assert!(timeout.ends_with(['m', 'u', 'n', 'S']), "grpc-timeout {timeout:?}");
    let reset = wait_until(Duration::from_secs(10), async || upstream.calls_to("Hang")[0].cancelled).await;
    assert!(reset, "the client's deadline did not reset the upstream stream");
}

#[tokio::test]
async fn grpcio_over_tls_interception() {
    require_python_module("import grpc", "grpcio").await;
    let ca = TestCa::new();
    let upstream = GrpcUpstream::tls(&ca).await;
    let text = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{}{}",
            rs256_token("tok", "15m"),
            tok_route("grpc", "https", "localhost", upstream.port())
        ),
    );
    let running = Running::start_with(&text, Some(&ca), "info").await;
    let proxy = format!("http://{}", running.proxy());
    let roots = running.dir.path("ca/ca.pem").to_string_lossy().into_owned();
    let env = [("https_proxy", proxy), ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", roots)];
    let lines = run_client(&format!("localhost:{}", upstream.port()), "tls", &env).await;
    assert_calls_worked(&lines);
    assert_upstream_saw(&upstream).await;
}

#[tokio::test]
async fn grpcio_plain_h2_through_connect_and_to_a_reverse_listener() {
    require_python_module("import grpc", "grpcio").await;
    let upstream = GrpcUpstream::plain().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("tok", "15m"),
            tok_route("grpc", "http", "127.0.0.1", upstream.port()),
            listener(&format!("http://127.0.0.1:{}", upstream.port()))
        ),
    );
    let running = Running::start(&text).await;

    // An insecure channel with grpc_proxy: CONNECT, then h2 with prior knowledge inside.
    let env = [("grpc_proxy", format!("http://{}", running.proxy()))];
    let lines = run_client(&format!("127.0.0.1:{}", upstream.port()), "plain", &env).await;
    assert_calls_worked(&lines);
    assert_upstream_saw(&upstream).await;

    // h2c straight to a reverse listener.
    let before = upstream.calls().len();
    let lines = run_client(&running.listener().to_string(), "plain", &[]).await;
    assert_calls_worked(&lines);
    assert!(upstream.calls().len() >= before + 5);
    assert_upstream_saw(&upstream).await;
}

#[tokio::test]
async fn upstream_http2_routes_speak_h2c_to_plain_upstreams() {
    let h2 = crate::support::upstream::Upstream::start().await;
    let h1 = crate::support::upstream::Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("tok", "15m"),
            crate::support::config::route(h2.port(), &["tok"], "upstream_http2 = true"),
            crate::support::config::route(h1.port(), &["tok"], "")
        ),
    );
    let running = Running::start(&text).await;
    for upstream in [&h2, &h1] {
        let reply =
            crate::support::client::get(running.proxy(), &upstream.url("/v"), &[("authorization", "Bearer {/tok}")])
                .await;
        reply.assert_upstream_ok();
    }
    let (over_h2, over_h1) = (h2.single(), h1.single());
    assert_eq!(over_h2.version, Version::HTTP_2, "upstream_http2 = true");
    verify_demo(over_h2.token());
    assert_eq!(over_h1.version, Version::HTTP_11, "the default to a plain-HTTP upstream");
}
