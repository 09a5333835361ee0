//! Invariant 6 in forward mode, header hygiene, and malformed proxy requests.

use crate::support::client::get;
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

fn routed_a(upstream: &Upstream) -> String {
    config("", &format!("{}{}", rs256_token("A", "15m"), route(upstream.port(), &["A"], "")))
}

#[tokio::test]
async fn host_sent_upstream_comes_from_the_absolute_uri_not_the_host_header() {
    let routed = Upstream::start().await;
    let other = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    // A spoofed Host on a routed target: the upstream sees the URI's authority.
    let reply =
        get(sidecar.proxy_addr, &routed.url("/h"), &[("host", "evil.example"), ("authorization", "Bearer {/A}")]).await;
    reply.assert_upstream_ok();
    let r = routed.single();
    assert_eq!(r.header("host"), Some(routed.addr.to_string().as_str()));
    verify_demo(r.token());

    // The other way round: a Host naming the routed upstream does not make an unrouted
    // target routed. The token stays a placeholder and the Host is the real target's.
    let reply = get(
        sidecar.proxy_addr,
        &other.url("/steal"),
        &[("host", &routed.addr.to_string()), ("authorization", "Bearer {/A}")],
    )
    .await;
    reply.assert_upstream_ok();
    let r = other.single();
    assert_eq!(r.header("authorization"), Some("Bearer {/A}"), "a spoofed Host must not attract a token");
    assert_eq!(r.header("host"), Some(other.addr.to_string().as_str()));
    assert_eq!(routed.requests().len(), 1, "the spoofed request must not go to the Host header's upstream");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn proxy_and_hop_by_hop_headers_are_not_forwarded() {
    let routed = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    let reply = get(
        sidecar.proxy_addr,
        &routed.url("/hop"),
        &[
            ("proxy-authorization", "Basic dXNlcjpzZWNyZXQ="),
            ("proxy-connection", "keep-alive"),
            ("connection", "keep-alive, x-hop-private"),
            ("x-hop-private", "only for the proxy"),
            ("keep-alive", "timeout=5"),
            ("te", "deflate, trailers"),
            ("x-end-to-end", "kept"),
            ("authorization", "Bearer {/A}"),
        ],
    )
    .await;
    reply.assert_upstream_ok();

    let r = routed.single();
    for gone in ["proxy-authorization", "proxy-connection", "x-hop-private", "keep-alive"] {
        assert!(r.header(gone).is_none(), "{gone} was forwarded: {:?}", r.headers);
    }
    // TE is hop-by-hop, but "trailers" in it goes on (gRPC servers require it); codings do not.
    assert_eq!(r.header("te"), Some("trailers"));
    if let Some(connection) = r.header("connection") {
        assert!(!connection.contains("x-hop-private"), "the client's Connection header was forwarded: {connection}");
    }
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
    verify_demo(r.token());
    sidecar.shutdown().await;
}

#[tokio::test]
async fn origin_form_request_to_the_proxy_port_is_rejected() {
    let routed = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    let reply = get(sidecar.proxy_addr, "/hello", &[("host", &routed.addr.to_string()), ("x", "{/A}")]).await;
    reply.assert_error(400, "not_a_proxy_request");
    assert!(reply.text().contains("HTTP_PROXY"), "the message should say how to use the proxy: {}", reply.text());
    routed.assert_nothing_received("origin-form request");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn dot_segments_on_a_routed_request_are_rejected() {
    let routed = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    for path in ["/v1/../admin", "/v1/%2e%2E/admin", "/v1/./x", "/.."] {
        let reply = get(sidecar.proxy_addr, &routed.url(path), &[("authorization", "Bearer {/A}")]).await;
        assert_eq!(reply.status.as_u16(), 400, "{path}: {}", reply.text());
        reply.assert_error(400, "path_not_normalised");
    }
    routed.assert_nothing_received("dot-segment paths");

    // Dots inside a segment are ordinary names.
    get(sidecar.proxy_addr, &routed.url("/v1/..x/a.b"), &[("authorization", "Bearer {/A}")]).await.assert_upstream_ok();
    assert_eq!(routed.single().path(), "/v1/..x/a.b");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn userinfo_in_the_absolute_uri_never_reaches_the_host_header() {
    let routed = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    let url = format!("http://user:secret@{}/u", routed.addr);
    let reply = get(sidecar.proxy_addr, &url, &[("host", "evil.example"), ("authorization", "Bearer {/A}")]).await;
    reply.assert_upstream_ok();
    let r = routed.single();
    verify_demo(r.token());
    assert_eq!(r.header("host"), Some(routed.addr.to_string().as_str()), "Host must be host[:port] only");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn not_a_proxy_request_hint_names_the_bound_proxy_address() {
    let routed = Upstream::start().await;
    let sidecar = start(&routed_a(&routed)).await;

    let reply = get(sidecar.proxy_addr, "/hello", &[("host", &sidecar.proxy_addr.to_string())]).await;
    reply.assert_error(400, "not_a_proxy_request");
    let hint = format!("HTTP_PROXY=http://{}", sidecar.proxy_addr);
    assert!(reply.text().contains(&hint), "the hint should say {hint}: {}", reply.text());
    sidecar.shutdown().await;
}
