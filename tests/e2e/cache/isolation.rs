//! Keys keep apart what the upstream could answer differently: routes, methods, targets,
//! `vary` headers and POST bodies; what it cannot (other headers) shares an entry. Requests
//! the route refuses are refused before the cache is read.

use super::{assert_reply, cached_route};
use crate::support::client::{get, post, request, send};
use crate::support::config::{config, rs256_token};
use crate::support::origin::Origin;
use crate::support::sidecar::start;

#[tokio::test]
async fn routes_methods_targets_vary_headers_and_bodies_each_have_their_own_entry() {
    let origin = Origin::counting().await;
    let routes = format!(
        "{}{}",
        cached_route(
            "api-a",
            origin.port(),
            &["tok"],
            "path_prefix = \"/a\"",
            "ttl = \"60s\"\nmethods = [\"GET\", \"POST\"]\nvary = [\"Accept-Language\"]"
        ),
        cached_route("api-b", origin.port(), &["tok"], "path_prefix = \"/b\"", "ttl = \"60s\""),
    );
    let sidecar = start(&config("", &format!("{}{routes}", rs256_token("tok", "10m")))).await;
    let proxy = sidecar.proxy_addr;
    let a = origin.url("/a/search?q=1");

    assert_reply(&get(proxy, &a, &[]).await, "1", "miss");
    assert_reply(&get(proxy, &origin.url("/b/search?q=1"), &[]).await, "2", "miss");
    assert_reply(&get(proxy, &origin.url("/a/search?q=2"), &[]).await, "3", "miss");
    assert_reply(&get(proxy, &a, &[("accept-language", "de")]).await, "4", "miss");
    assert_reply(&get(proxy, &a, &[("accept-language", "en")]).await, "5", "miss");
    assert_reply(&post(proxy, &a, &[], r#"{"q": 1}"#).await, "6", "miss");
    assert_reply(&post(proxy, &a, &[], r#"{"q": 2}"#).await, "7", "miss");
    assert_reply(&post(proxy, &a, &[], "").await, "8", "miss");

    assert_reply(&get(proxy, &a, &[]).await, "1", "hit");
    assert_reply(&get(proxy, &a, &[("user-agent", "another-agent/2.0")]).await, "1", "hit");
    assert_reply(&get(proxy, &origin.url("/b/search?q=1"), &[]).await, "2", "hit");
    assert_reply(&get(proxy, &a, &[("accept-language", "de")]).await, "4", "hit");
    assert_reply(&get(proxy, &a, &[("accept-language", "en")]).await, "5", "hit");
    assert_reply(&post(proxy, &a, &[], r#"{"q": 1}"#).await, "6", "hit");
    assert_reply(&post(proxy, &a, &[], r#"{"q": 2}"#).await, "7", "hit");
    assert_eq!(origin.count(), 8);
    // The body reached the upstream as sent (the POST key is the body, not a token).
    assert_eq!(origin.requests()[6].body, r#"{"q": 2}"#);

    // Route b stores only GET and HEAD; a POST there goes upstream every time.
    let b = origin.url("/b/search?q=1");
    assert_reply(&post(proxy, &b, &[], "x").await, "9", "bypass");
    assert_reply(&post(proxy, &b, &[], "x").await, "10", "bypass");
    assert_reply(&send(proxy, request("PUT", &a, &[], "x")).await, "11", "bypass");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_post_body_over_max_buffered_body_streams_past_the_cache() {
    let origin = Origin::counting().await;
    let route = cached_route("big-posts", origin.port(), &["tok"], "", "ttl = \"60s\"\nmethods = [\"POST\"]");
    let sidecar =
        start(&config("max_buffered_body = \"1KiB\"", &format!("{}{route}", rs256_token("tok", "10m")))).await;
    let url = origin.url("/rpc");
    let big = "x{/tok}".repeat(400);
    for n in ["1", "2"] {
        assert_reply(&post(sidecar.proxy_addr, &url, &[], big.clone()).await, n, "bypass");
    }
    let received = origin.last().body;
    assert!(received.len() > big.len() && !received.windows(6).any(|w| w == b"{/tok}"), "substituted as it streamed");
    assert_reply(&post(sidecar.proxy_addr, &url, &[], "small").await, "3", "miss");
    assert_reply(&post(sidecar.proxy_addr, &url, &[], "small").await, "3", "hit");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_path_that_leaves_its_prefix_is_refused_before_the_cache_is_read() {
    let origin = Origin::counting().await;
    let route = cached_route("prefixed", origin.port(), &["tok"], "path_prefix = \"/v1\"", "ttl = \"60s\"");
    let sidecar = start(&config("", &format!("{}{route}", rs256_token("tok", "10m")))).await;
    assert_reply(&get(sidecar.proxy_addr, &origin.url("/v1/admin"), &[]).await, "1", "miss");
    let sneaky = get(sidecar.proxy_addr, &origin.url("/v1/%2e%2e/v1/admin"), &[]).await;
    sneaky.assert_error(400, "path_not_normalised");
    assert_eq!(origin.count(), 1);
    sidecar.shutdown().await;
}
