//! Plain HTTP inside CONNECT: a tunnel to a host and port with an `http` route is served as
//! routed plain HTTP when the client speaks HTTP in it, with the tunnel's binding rules (the
//! Host must name the tunnel's host; unbound tokens are refused). TLS in such a tunnel is
//! intercepted when the host and port also has an `https` route, tunnelled blind when it
//! has none, and closed when interception is not configured.

use crate::support::ca::TestCa;
use crate::support::config::{config, route, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::raw::{get_bytes, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::{open_tunnel, tls_over};
use crate::support::upstream::Upstream;

fn aliased(port: u16, bound: &[&str]) -> String {
    route(port, bound, "[routes.placeholders]\nauth_token = \"tok\"")
}

#[tokio::test]
async fn plain_http_in_a_tunnel_is_routed_and_bound_to_the_tunnel_host() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}{}",
            rs256_token("tok", "15m"),
            rs256_token("elsewhere", "15m"),
            aliased(upstream.port(), &["tok"]),
            route(other.port(), &["elsewhere"], "")
        ),
    );
    let running = Running::start(&text).await;
    let target = format!("127.0.0.1:{}", upstream.port());

    // Two keep-alive requests in one tunnel: origin form and absolute form.
    let mut conn = RawConn::new(open_tunnel(running.proxy(), &target).await.expect("CONNECT accepted"));
    let first = format!(
        "GET /one?t={{/auth_token}} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {{/auth_token}}\r\n\r\n"
    );
    let response = conn.request(first.as_bytes()).await.expect("first response");
    assert_eq!(response.status, 200, "{}", response.summary());
    let second = get_bytes(&format!("http://{target}/two"), &target, &[("Authorization", "Bearer {/tok}")]);
    assert_eq!(conn.request(&second).await.expect("second response").status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    let token = seen[0].token().to_string();
    assert_eq!(verify_demo(&token)["sub"], "tok");
    assert_eq!(seen[0].uri, format!("/one?t={token}"));
    verify_demo(seen[1].token());

    // A Host naming another host than the tunnel's, or a token bound elsewhere: refused,
    // nothing forwarded.
    let mut conn = RawConn::new(open_tunnel(running.proxy(), &target).await.expect("CONNECT accepted"));
    let other_host = format!("127.0.0.1:{}", other.port());
    let misdirected = get_bytes("/x", &other_host, &[("Authorization", "Bearer {/auth_token}")]);
    conn.request(&misdirected).await.expect("answer").assert_error(421, "misdirected_request", "other Host");
    let mut conn = RawConn::new(open_tunnel(running.proxy(), &target).await.expect("CONNECT accepted"));
    let unbound = get_bytes("/x", &target, &[("Authorization", "Bearer {/elsewhere}")]);
    conn.request(&unbound).await.expect("answer").assert_error(403, "placeholder_not_allowed", "unbound");
    assert_eq!(upstream.count(), 2, "a refused request reached the upstream");
    other.assert_nothing_received("misdirected");
}

#[tokio::test]
async fn tls_in_a_tunnel_to_an_http_routed_port_is_blind_intercepted_or_closed() {
    // Only an http route for a port that speaks TLS: the TLS goes through blind, so the
    // client sees the upstream's own certificate.
    let ca = TestCa::new();
    let tls_upstream = Upstream::tls(&ca).await;
    let text = config("", &format!("{}{}", rs256_token("tok", "15m"), aliased(tls_upstream.port(), &["tok"])));
    let running = Running::start(&text).await;
    let stream = open_tunnel(running.proxy(), &format!("localhost:{}", tls_upstream.port())).await.expect("CONNECT");
    let tls = tls_over(stream, &ca.pem, "localhost", &[b"http/1.1"]).await.expect("the upstream's own TLS");
    let mut conn = RawConn::new(tls);
    let request = get_bytes("/blind", &format!("localhost:{}", tls_upstream.port()), &[]);
    assert_eq!(conn.request(&request).await.expect("answer").status, 200);
    assert_eq!(tls_upstream.single().path(), "/blind");
    drop(running);

    // http and https routes for the same host and port: TLS is intercepted (the sidecar's
    // certificate), plain text is routed plain HTTP.
    let plain_upstream = Upstream::start().await;
    let port = plain_upstream.port();
    let both = format!(
        "{}{}\n[[routes]]\nhost = \"localhost\"\nport = {port}\ntokens = [\"tok\"]\n\n[[routes]]\nscheme = \"http\"\nhost = \"localhost\"\nport = {port}\ntokens = [\"tok\"]\n",
        TLS_SECTION,
        rs256_token("tok", "15m"),
    );
    let running =
        Running::start_with(&config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), &both), Some(&ca), "info")
            .await;
    let target = format!("localhost:{port}");
    let stream = open_tunnel(running.proxy(), &target).await.expect("CONNECT");
    tls_over(stream, &running.ca_pem(), "localhost", &[b"http/1.1"]).await.expect("intercepted with the sidecar's CA");
    let mut conn = RawConn::new(open_tunnel(running.proxy(), &target).await.expect("CONNECT"));
    let request = get_bytes("/plain", &target, &[("Authorization", "Bearer {/tok}")]);
    assert_eq!(conn.request(&request).await.expect("answer").status, 200);
    verify_demo(plain_upstream.single().token());

    // The same without [tls]: plain text still works; TLS is closed, not tunnelled blind.
    let without_tls = both.replace(TLS_SECTION, "");
    let running = Running::start(&config("", &without_tls)).await;
    let stream = open_tunnel(running.proxy(), &target).await.expect("CONNECT");
    assert!(tls_over(stream, &ca.pem, "localhost", &[b"http/1.1"]).await.is_err(), "TLS went through uninspected");
    let mut conn = RawConn::new(open_tunnel(running.proxy(), &target).await.expect("CONNECT"));
    assert_eq!(conn.request(&request).await.expect("answer").status, 200);
}
