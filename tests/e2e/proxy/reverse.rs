//! Reverse listeners: a local port bound to one upstream base URL, for clients that cannot
//! use a proxy.

use crate::support::client::get;
use crate::support::config::{config, listener, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

#[tokio::test]
async fn origin_form_request_arrives_under_the_base_path_with_tokens() {
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\""),
            listener(&upstream.url("/base"))
        ),
    );
    let sidecar = start(&toml).await;
    let listener = sidecar.listener_addrs[0];

    let reply = get(
        listener,
        "/items/{/tok}?q=%7B%2Fauth_token%7D",
        &[("host", &listener.to_string()), ("authorization", "Bearer {/auth_token}")],
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let t = r.token();
    assert_eq!(verify_demo(t)["sub"], "tok");
    assert_eq!(r.uri, format!("/base/items/{t}?q={t}"));
    assert_eq!(r.header("host"), Some(upstream.addr.to_string().as_str()), "Host must name the upstream");
    sidecar.shutdown().await;
}
