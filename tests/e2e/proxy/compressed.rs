//! A compressed body cannot be scanned, so it is forwarded byte for byte; headers still are.

use crate::support::client::post;
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

#[tokio::test]
async fn encoded_body_is_forwarded_untouched_while_headers_are_substituted() {
    let upstream = Upstream::start().await;
    let toml = config("", &format!("{}{}", rs256_token("A", "15m"), route(upstream.port(), &["A"], "")));
    let sidecar = start(&toml).await;

    // Not real gzip, which is the point: the proxy must not look inside.
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00];
    body.extend_from_slice(b"{/A}");
    body.extend((0..=255u8).rev());
    body.extend_from_slice(b"..{/A}");
    let reply = post(
        sidecar.proxy_addr,
        &upstream.url("/upload"),
        &[("content-encoding", "gzip"), ("content-type", "application/json"), ("authorization", "Bearer {/A}")],
        body.clone(),
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    assert_eq!(r.body().as_ref(), body.as_slice(), "an encoded body was rewritten");
    assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    verify_demo(r.token());
    sidecar.shutdown().await;
}
