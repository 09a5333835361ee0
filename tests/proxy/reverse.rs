//! Reverse listeners: a local port bound to one upstream base URL, for clients that cannot
//! use a proxy.

use crate::harness::{config, get, route, rs256_token, start, verify, Upstream};

#[tokio::test]
async fn origin_form_request_arrives_under_the_base_path_with_tokens() {
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{}{}[[listeners]]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:{}/base\"\n",
            rs256_token("tok", "15m", None),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\""),
            upstream.port()
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
    let t = r.bearer();
    assert_eq!(verify(&t)["sub"], "tok");
    assert_eq!(r.uri.path_and_query().map(|pq| pq.as_str()), Some(format!("/base/items/{t}?q={t}").as_str()));
    assert_eq!(r.header("host"), Some(upstream.addr.to_string().as_str()), "Host must name the upstream");
    sidecar.shutdown().await;
}
