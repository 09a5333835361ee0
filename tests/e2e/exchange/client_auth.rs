//! `grant = "client_credentials"` and the four ways a client authenticates to the token
//! endpoint (RFC 6749 §2.3.1, RFC 7523 §2.2): what each puts in the header and the form, the
//! defaults, and a `grant_type` override (Zoom's `account_credentials`).

use std::collections::BTreeMap;

use crate::exchange::{assertion_jwt, get_with, oauth2, secret, PROMPT};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, basic_header, Idp, Seen};
use crate::support::jwt::verify_demo_at;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Starts the binary with `tokens` and a route binding `api` to a fresh upstream, waits for
/// the first exchange, checks the upstream gets its access token, and returns the exchange.
async fn first_exchange(idp: &Idp, tokens: &str) -> Seen {
    let upstream = Upstream::start().await;
    let toml = config("", &format!("{tokens}{}", route(upstream.port(), &["api"], "")));
    let run = Running::start(&toml).await;
    let seen = idp.wait_for(1, PROMPT).await;
    get_with(run.proxy(), &upstream.url("/v1/resource"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.single().header("authorization"), Some(format!("Bearer {}", access_token(1)).as_str()));
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_form_encodes_id_and_secret_in_the_basic_header() {
    let idp = Idp::start().await;
    // Characters that must be form-encoded before base64: ':' (the separator), '+', ' ', '%'.
    let (id, secret_value) = ("client:id+1 x", "p@ss:w+rd s/=%");
    let tokens = format!(
        "{}{}",
        secret("client_secret", secret_value),
        // client_auth defaults to client_secret_basic when client_secret is set.
        oauth2(
            "api",
            &idp,
            "/oauth/token",
            &format!("grant = \"client_credentials\"\nclient_id = {id:?}\nclient_secret = \"client_secret\"\nscope = \"read\""),
        ),
    );
    let seen = first_exchange(&idp, &tokens).await;
    assert_eq!(
        seen.header("authorization"),
        Some("Basic Y2xpZW50JTNBaWQlMkIxK3g6cCU0MHNzJTNBdyUyQnJkK3MlMkYlM0QlMjU="),
        "base64(urlencode(id) ':' urlencode(secret))"
    );
    assert_eq!(seen.header("authorization"), Some(basic_header(id, secret_value).as_str()));
    assert_eq!(seen.basic(), Some((id.to_string(), secret_value.to_string())));
    assert_eq!(
        seen.field_names(),
        ["grant_type", "scope"],
        "the credentials are in the header only: {}",
        seen.body_text()
    );
    assert_eq!(seen.must("grant_type"), "client_credentials");
    assert_eq!(seen.must("scope"), "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_sends_id_and_secret_in_the_form() {
    let idp = Idp::start().await;
    let secret_value = "s3cr3t+/= with space";
    let tokens = format!(
        "{}{}",
        secret("client_secret", secret_value),
        oauth2(
            "api",
            &idp,
            "/token",
            "grant = \"client_credentials\"\nclient_auth = \"client_secret_post\"\nclient_id = \"my-client\"\n\
             client_secret = \"client_secret\"\nscope = [\"a\", \"b\"]",
        ),
    );
    let seen = first_exchange(&idp, &tokens).await;
    assert!(seen.header("authorization").is_none(), "client_secret_post sends no Authorization: {:?}", seen.headers);
    let names: Vec<&str> = seen.form_pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["grant_type", "scope", "client_id", "client_secret"], "{}", seen.body_text());
    assert_eq!(seen.must("grant_type"), "client_credentials");
    assert_eq!(seen.must("scope"), "a b");
    assert_eq!(seen.must("client_id"), "my-client");
    assert_eq!(seen.must("client_secret"), secret_value);
}

/// client_auth defaults to private_key_jwt when `client_assertion` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_sends_a_fresh_signed_client_assertion() {
    let idp = Idp::start().await;
    let tokens = format!(
        "{}{}",
        assertion_jwt("client_jwt", "https://login.example/token"),
        oauth2(
            "api",
            &idp,
            "/token",
            "grant = \"client_credentials\"\nclient_id = \"my-client\"\nclient_assertion = \"client_jwt\"",
        ),
    );
    let seen = first_exchange(&idp, &tokens).await;
    assert!(seen.header("authorization").is_none(), "private_key_jwt sends no Authorization: {:?}", seen.headers);
    let names: Vec<&str> = seen.form_pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["grant_type", "client_id", "client_assertion", "client_assertion_type"], "{}", seen.body_text());
    assert_eq!(seen.must("client_assertion_type"), CLIENT_ASSERTION_TYPE);
    assert_eq!(seen.must("client_id"), "my-client");
    let claims = verify_demo_at(seen.must("client_assertion"), seen.arrived);
    assert_eq!(claims["sub"], "client_jwt", "{claims}");
    assert_eq!(claims["aud"], "https://login.example/token", "{claims}");
    assert!(claims["jti"].is_string(), "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_none_sends_only_the_client_id() {
    let idp = Idp::start().await;
    let tokens = oauth2(
        "api",
        &idp,
        "/token",
        "grant = \"client_credentials\"\nclient_auth = \"none\"\nclient_id = \"public-client\"",
    );
    let seen = first_exchange(&idp, &tokens).await;
    assert!(seen.header("authorization").is_none(), "{:?}", seen.headers);
    let expected: BTreeMap<String, String> = [("grant_type", "client_credentials"), ("client_id", "public-client")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(seen.form(), expected, "{}", seen.body_text());
    assert_eq!(seen.form_pairs.len(), 2, "{}", seen.body_text());
}

/// Zoom Server-to-Server OAuth: `grant_type=account_credentials` and `account_id`, Basic
/// client credentials; the account id comes from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_type_override_for_zoom_account_credentials() {
    std::env::set_var("E2E_EXCHANGE_ZOOM_ACCOUNT", "acct-8Xz_42");
    std::env::set_var("E2E_EXCHANGE_ZOOM_CLIENT", "zoom-client-id");
    let idp = Idp::start().await;
    let tokens = format!(
        "{}{}",
        secret("zoom_secret", "zoom-client-secret"),
        oauth2(
            "api",
            &idp,
            "/oauth/token",
            "grant = \"client_credentials\"\ngrant_type = \"account_credentials\"\n\
             client_id = \"${E2E_EXCHANGE_ZOOM_CLIENT}\"\nclient_secret = \"zoom_secret\"\n\n\
             [tokens.api.form]\naccount_id = \"${E2E_EXCHANGE_ZOOM_ACCOUNT}\"",
        ),
    );
    let seen = first_exchange(&idp, &tokens).await;
    let names: Vec<&str> = seen.form_pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["grant_type", "account_id"], "{}", seen.body_text());
    assert_eq!(seen.must("grant_type"), "account_credentials");
    assert_eq!(seen.must("account_id"), "acct-8Xz_42");
    assert_eq!(seen.basic(), Some(("zoom-client-id".to_string(), "zoom-client-secret".to_string())));
}
