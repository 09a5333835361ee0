//! Placeholders in headers, the request target and bodies become verifiable tokens.

use crate::support::client::{get, post};
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::{Recorded, Upstream};

/// One token `tok`, routed to `upstream` under its own name and the alias `auth_token`.
fn aliased(upstream: &Upstream, route_extra: &str) -> String {
    config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], &format!("[routes.placeholders]\nauth_token = \"tok\"\n{route_extra}"))
        ),
    )
}

/// The token carried in `X-Token` (sent as a placeholder by the test), verified.
fn header_token(r: &Recorded) -> String {
    let token = r.header("x-token").expect("x-token header").to_string();
    let claims = verify_demo(&token);
    assert_eq!(claims["sub"], "tok", "token of the wrong definition: {claims}");
    assert_eq!(claims["iss"], "e2e-tests");
    token
}

/// A buffered body arrives with an exact Content-Length and no chunked encoding.
fn assert_exact_length(r: &Recorded) {
    let declared: usize = r.header("content-length").expect("no Content-Length").parse().expect("numeric length");
    assert_eq!(declared, r.body().len(), "Content-Length does not match the body the upstream read");
    assert!(r.header("transfer-encoding").is_none(), "buffered body sent chunked");
}

#[tokio::test]
async fn header_placeholders_by_alias_and_by_token_name() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream, "")).await;

    let reply = get(
        sidecar.proxy_addr,
        &upstream.url("/v1/items"),
        &[("authorization", "Bearer {/auth_token}"), ("x-token", "{/tok}"), ("x-mixed", "a={/tok};b={/auth_token}")],
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let token = header_token(&r);
    assert_eq!(r.token(), token, "alias and token name must give the same token within one request");
    assert_eq!(r.header("x-mixed"), Some(format!("a={token};b={token}").as_str()));
    assert_eq!(r.path(), "/v1/items");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn query_and_path_placeholders_raw_and_percent_encoded() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream, "")).await;

    let url = upstream.url("/p/{/auth_token}/q?raw={/tok}&enc=%7B%2Fauth_token%7D&lower=%7b%2ftok%7d&keep=1");
    let reply = get(sidecar.proxy_addr, &url, &[("x-token", "{/tok}")]).await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let t = header_token(&r);
    let expected = format!("/p/{t}/q?raw={t}&enc={t}&lower={t}&keep=1");
    assert_eq!(r.uri, expected);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn json_body_placeholders() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream, "")).await;

    let body = r#"{"token":"{/auth_token}","nested":{"again":"{/tok}"},"literal":"{not a placeholder}","n":1}"#;
    let reply = post(
        sidecar.proxy_addr,
        &upstream.url("/json"),
        &[("content-type", "application/json"), ("x-token", "{/tok}")],
        body,
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    assert_eq!(r.method, http::Method::POST);
    let t = header_token(&r);
    assert_exact_length(&r);
    let json: serde_json::Value = serde_json::from_slice(&r.body()).expect("upstream body is still JSON");
    assert_eq!(json["token"], t.as_str());
    assert_eq!(json["nested"]["again"], t.as_str());
    assert_eq!(json["literal"], "{not a placeholder}");
    assert_eq!(json["n"], 1);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn form_urlencoded_body_placeholders() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream, "")).await;

    let reply = post(
        sidecar.proxy_addr,
        &upstream.url("/form"),
        &[("content-type", "application/x-www-form-urlencoded"), ("x-token", "{/tok}")],
        "grant_type=jwt-bearer&assertion={/auth_token}&client=a%20b",
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let t = header_token(&r);
    assert_exact_length(&r);
    assert_eq!(r.body_text(), format!("grant_type=jwt-bearer&assertion={t}&client=a%20b"));
    sidecar.shutdown().await;
}

#[tokio::test]
async fn text_body_placeholders() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream, "")).await;

    let reply = post(
        sidecar.proxy_addr,
        &upstream.url("/text"),
        &[("content-type", "text/plain"), ("x-token", "{/tok}")],
        "first {/tok}\nsecond {/auth_token}{/tok}\nunknown {/nope}\n",
    )
    .await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let t = header_token(&r);
    assert_exact_length(&r);
    assert_eq!(r.body_text(), format!("first {t}\nsecond {t}{t}\nunknown {{/nope}}\n"));
    sidecar.shutdown().await;
}

#[tokio::test]
async fn set_headers_adds_the_header_without_the_client_sending_it() {
    let upstream = Upstream::start().await;
    let extra = "[routes.set_headers]\nAuthorization = \"Bearer {/auth_token}\"\n";
    let sidecar = start(&aliased(&upstream, extra)).await;

    let reply = get(sidecar.proxy_addr, &upstream.url("/auto"), &[("x-token", "{/tok}")]).await;
    reply.assert_upstream_ok();

    let r = upstream.single();
    let t = header_token(&r);
    assert_eq!(r.token(), t, "set_headers must use the request's token");
    sidecar.shutdown().await;
}
