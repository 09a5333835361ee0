//! WebSocket through every way in: `wss://` with Python `websockets` through HTTPS_PROXY
//! (interception), `ws://` through HTTP_PROXY (websockets tunnels it with CONNECT), an
//! absolute-form upgrade on the proxy port, and a reverse listener. The upgrade request is
//! routed, bound and substituted like any request; then frames pass both ways untouched.
//! Also: a refused placeholder stops the upgrade, `Upgrade: h2c` is not carried, an idle
//! splice is closed after `idle_timeout`, and shutdown lets an open one finish its grace.

use std::time::Duration;

use super::{json_lines, require_python_module, step, tok_route};
use crate::support::ca::TestCa;
use crate::support::client::{python, run_command};
use crate::support::config::{config, listener, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::metrics::scrape;
use crate::support::raw::RawConn;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::websocket::{upgrade_request, WsClient, WsUpstream};

const CLIENT: &str = include_str!("ws_client.py");

/// The `websockets` client against `url`, with `env`; returns the reply it printed.
async fn websockets_client(url: &str, env: &[(&str, String)]) -> String {
    // websockets 15 is the first to honour proxy variables.
    let check = "import sys, websockets; sys.exit(int(websockets.__version__.split('.')[0]) < 15)";
    require_python_module(check, "'websockets>=15'").await;
    let mut client = python();
    client.args(["-c", CLIENT, url]);
    for (name, value) in env {
        client.env(name, value);
    }
    let lines = json_lines(&run_command(client).await, &format!("websockets client ({url})"));
    step(&lines, "reply")["reply"].as_str().expect("reply text").to_string()
}

/// The upstream received the upgrade with a valid token and the message after it.
fn assert_upgraded_with_token(upstream: &WsUpstream, path: &str) {
    let request = upstream.requests().into_iter().find(|r| r.uri.starts_with(path)).expect("upgrade request");
    assert_eq!(request.header("upgrade"), Some("websocket"));
    let token = request.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("bearer");
    assert_eq!(verify_demo(token)["sub"], "tok");
    assert!(upstream.messages().iter().any(|m| m.as_ref() == b"hello"), "{:?}", upstream.messages());
}

async fn upgrades_counted(running: &Running) -> f64 {
    scrape(running.admin()).await.count("proxy_upgrades_total", &[("route", "ws"), ("protocol", "websocket")])
}

#[tokio::test]
async fn wss_through_https_proxy_interception() {
    let ca = TestCa::new();
    let upstream = WsUpstream::tls(&ca).await;
    let text = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{}{}",
            rs256_token("tok", "15m"),
            tok_route("ws", "https", "localhost", upstream.port())
        ),
    );
    let running = Running::start_with(&text, Some(&ca), "info").await;
    let env = [
        ("https_proxy", format!("http://{}", running.proxy())),
        ("SIDECAR_CA", running.dir.path("ca/ca.pem").to_string_lossy().into_owned()),
    ];
    let reply = websockets_client(&format!("wss://localhost:{}/chat", upstream.port()), &env).await;
    assert_eq!(reply, "echo:hello");
    assert_upgraded_with_token(&upstream, "/chat");
    assert_eq!(upgrades_counted(&running).await, 1.0);
}

#[tokio::test]
async fn ws_through_http_proxy_absolute_form_and_reverse_listener() {
    let upstream = WsUpstream::plain().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("tok", "15m"),
            tok_route("ws", "http", "127.0.0.1", upstream.port()),
            listener(&format!("http://127.0.0.1:{}", upstream.port()))
        ),
    );
    let running = Running::start(&text).await;

    // websockets with http_proxy: CONNECT, then the plain upgrade inside the tunnel.
    let env = [("http_proxy", format!("http://{}", running.proxy()))];
    let reply = websockets_client(&format!("ws://127.0.0.1:{}/tunnelled", upstream.port()), &env).await;
    assert_eq!(reply, "echo:hello");
    assert_upgraded_with_token(&upstream, "/tunnelled");

    // The reverse listener, called directly.
    let reply = websockets_client(&format!("ws://{}/reverse", running.listener()), &[]).await;
    assert_eq!(reply, "echo:hello");
    assert_upgraded_with_token(&upstream, "/reverse");

    // An absolute-form upgrade on the proxy port, as HTTP_PROXY clients without CONNECT send.
    let target = format!("http://127.0.0.1:{}/absolute", upstream.port());
    let request = upgrade_request(&target, &upstream.addr.to_string(), &[("Authorization", "Bearer {/auth_token}")]);
    let stream = tokio::net::TcpStream::connect(running.proxy()).await.expect("connect");
    let mut ws = WsClient::open(stream, &request).await.expect("101 through the proxy");
    for message in ["one {/auth_token}", "two"] {
        ws.send_text(message).await.expect("send");
        // After the switch, frames are the application's: nothing in them is substituted.
        assert_eq!(ws.recv_text().await.expect("echo"), format!("echo:{message}"));
    }
    let request = upstream.requests().into_iter().find(|r| r.uri == "/absolute").expect("absolute-form upgrade");
    verify_demo(request.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("bearer"));
    assert_eq!(upgrades_counted(&running).await, 3.0);
}

#[tokio::test]
async fn refused_placeholders_stop_the_upgrade_and_h2c_is_not_carried() {
    let upstream = WsUpstream::plain().await;
    let plain = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}{}",
            rs256_token("tok", "15m"),
            rs256_token("other", "15m"),
            tok_route("ws", "http", "127.0.0.1", upstream.port()),
            crate::support::config::route(plain.port(), &["other"], ""),
        ),
    );
    let running = Running::start(&text).await;
    let target = format!("http://127.0.0.1:{}/ws", upstream.port());
    let request = upgrade_request(&target, &upstream.addr.to_string(), &[("Authorization", "Bearer {/other}")]);
    let mut conn = RawConn::sending(running.proxy(), &request).await;
    let response = conn.expect_response("upgrade naming an unbound token").await;
    response.assert_error(403, "placeholder_not_allowed", "upgrade");
    assert!(upstream.requests().is_empty(), "the refused upgrade reached the upstream");

    // Upgrade: h2c is between the client and the proxy: the request goes on without it.
    let h2c = format!(
        "GET http://127.0.0.1:{}/h2c HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        plain.port(),
        plain.port()
    );
    let mut conn = RawConn::sending(running.proxy(), h2c.as_bytes()).await;
    let response = conn.expect_response("h2c upgrade").await;
    assert_eq!(response.status, 200, "{}", response.summary());
    let seen = plain.single();
    assert!(seen.header("upgrade").is_none() && seen.header("http2-settings").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn idle_splices_are_closed_and_shutdown_waits_for_open_ones() {
    let upstream = WsUpstream::plain().await;
    let text = config(
        "idle_timeout = \"1s\"\nshutdown_grace = \"3s\"",
        &format!("{}{}", rs256_token("tok", "15m"), tok_route("ws", "http", "127.0.0.1", upstream.port())),
    );
    let mut running = Running::start(&text).await;
    let target = format!("http://127.0.0.1:{}/idle", upstream.port());
    let request = upgrade_request(&target, &upstream.addr.to_string(), &[]);

    // Nothing moves for idle_timeout: the sidecar closes the splice.
    let stream = tokio::net::TcpStream::connect(running.proxy()).await.expect("connect");
    let mut idle = WsClient::open(stream, &request).await.expect("101");
    assert!(idle.closed_within(Duration::from_secs(10)).await, "an idle splice was kept open");

    // An open splice keeps working after SIGTERM, and is cut when the grace period ends.
    let stream = tokio::net::TcpStream::connect(running.proxy()).await.expect("connect");
    let mut open = WsClient::open(stream, &request).await.expect("101");
    running.sidecar.signal("TERM").await;
    open.send_text("after SIGTERM").await.expect("send");
    assert_eq!(open.recv_text().await.expect("echo during the grace period"), "echo:after SIGTERM");
    let exited = running.sidecar.wait_exit(Duration::from_secs(15)).await;
    assert!(exited.is_some_and(|s| s.success()), "the sidecar did not exit after its grace period: {exited:?}");
    assert!(open.closed_within(Duration::from_secs(5)).await, "the splice outlived the process");
}
