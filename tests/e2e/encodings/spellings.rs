//! Every spelling in every position, through the proxy to a recording upstream: the spellings
//! a position takes are filled in with the route's token, the others arrive as written.

use crate::encodings::{bearer_jwt, relayed, World};
use crate::support::client::{get, post};

#[tokio::test]
async fn the_path_and_query_take_raw_and_percent_encoded_spellings_in_any_hex_case() {
    let world = World::start().await;
    let target = "/v1/{/auth_token}/%7B%2Fauth_token%7D/%7B/auth_token%7D/%7b%2fauth_token%7d/%7b/auth_token%7D\
                  ?raw={/auth_token}&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D&lower=%7b%2Fauth_token%7d\
                  &mixed=%7B%2Fauth_token}&double=%257B%252Fauth_token%257D&brace={%2Fauth_token}";
    let reply = get(world.run.proxy(), &world.url(target), &[("authorization", "Bearer {/auth_token}")]).await;
    let seen = relayed(&world, &reply);
    let t = bearer_jwt(&seen);
    assert_eq!(
        seen.uri,
        format!(
            "/v1/{t}/{t}/{t}/{t}/{t}?raw={t}&slash={t}&bare={t}&lower={t}\
             &mixed=%7B%2Fauth_token}}&double=%257B%252Fauth_token%257D&brace={{%2Fauth_token}}"
        ),
        "every recognised spelling carries the token; mixed and double encodings are text"
    );
}

#[tokio::test]
async fn header_values_take_the_raw_spelling_only() {
    let world = World::start().await;
    let headers = [
        ("authorization", "Bearer {/auth_token}"),
        ("x-raw", "token={/auth_token};"),
        ("x-percent", "%7B%2Fauth_token%7D %7B/auth_token%7D"),
        ("x-json", "{\\/auth_token}"),
    ];
    let reply = get(world.run.proxy(), &world.url("/h"), &headers).await;
    let seen = relayed(&world, &reply);
    let t = bearer_jwt(&seen);
    assert_eq!(seen.header("x-raw"), Some(format!("token={t};").as_str()));
    assert_eq!(seen.header("x-percent"), Some("%7B%2Fauth_token%7D %7B/auth_token%7D"));
    assert_eq!(seen.header("x-json"), Some("{\\/auth_token}"));
}

/// One body, every spelling, sent with each Content-Type.
const EVERY_SPELLING: &str = "raw={/auth_token}&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D\
                              &lower=%7b%2fauth_token%7d&json={\\/auth_token}&mixed=%7B%2Fauth_token}";

#[tokio::test]
async fn a_body_takes_the_spellings_of_its_content_type() {
    let world = World::start().await;
    // (Content-Type, what the body must become; T stands for the token)
    let cases = [
        (
            "application/x-www-form-urlencoded",
            "raw=T&slash=T&bare=T&lower=T&json={\\/auth_token}&mixed=%7B%2Fauth_token}",
        ),
        (
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            "raw=T&slash=T&bare=T&lower=T&json={\\/auth_token}&mixed=%7B%2Fauth_token}",
        ),
        (
            "application/json",
            "raw=T&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D&lower=%7b%2fauth_token%7d&json=T\
             &mixed=%7B%2Fauth_token}",
        ),
        (
            "application/vnd.api+json; charset=utf-8",
            "raw=T&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D&lower=%7b%2fauth_token%7d&json=T\
             &mixed=%7B%2Fauth_token}",
        ),
        (
            "text/plain",
            "raw=T&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D&lower=%7b%2fauth_token%7d\
             &json={\\/auth_token}&mixed=%7B%2Fauth_token}",
        ),
        (
            "application/octet-stream",
            "raw=T&slash=%7B%2Fauth_token%7D&bare=%7B/auth_token%7D&lower=%7b%2fauth_token%7d\
             &json={\\/auth_token}&mixed=%7B%2Fauth_token}",
        ),
    ];
    for (content_type, want) in cases {
        let headers = [("authorization", "Bearer {/auth_token}"), ("content-type", content_type)];
        let reply = post(world.run.proxy(), &world.url("/b"), &headers, EVERY_SPELLING).await;
        let seen = relayed(&world, &reply);
        let t = bearer_jwt(&seen);
        let body = seen.body_text();
        assert_eq!(body, want.replace('T', &t), "{content_type}");
        assert_eq!(
            seen.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{content_type}: a buffered body keeps an exact Content-Length"
        );
    }
}

#[tokio::test]
async fn a_json_document_gets_its_escaped_slash_spelling_filled() {
    let world = World::start().await;
    // What PHP's json_encode and similar serializers make of {"assertion": "{/auth_token}"}.
    let body = r#"{"assertion":"{\/auth_token}","list":["{\/auth_token}", "{/auth_token}"],"n":1}"#;
    let headers = [("authorization", "Bearer {/auth_token}"), ("content-type", "application/json")];
    let reply = post(world.run.proxy(), &world.url("/j"), &headers, body).await;
    let seen = relayed(&world, &reply);
    let t = bearer_jwt(&seen);
    let json: serde_json::Value = serde_json::from_slice(&seen.body()).expect("still JSON");
    assert_eq!(json, serde_json::json!({"assertion": t, "list": [t, t], "n": 1}));
}
