//! The rules of tokens signed per request: the derived claims (`method`, `url`, `host`,
//! `path`, `body_sha256`, `ath`), where they may be written, bodies too large to hash, and the
//! config checks that keep slow or contradictory settings out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;

use crate::support::client::{get, post, request, send};
use crate::support::config::{config, route, toml_str, ConfigDir};
use crate::support::jwt::{claims, verify};
use crate::support::keys::keys;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

const SECRET: &str = "per-request signing secret, long enough";

fn hs256_per_request(name: &str, request_claims: &str) -> String {
    format!(
        "[tokens.{name}]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"{SECRET}\"\nttl = \"1m\"\nper_request = true\n\n\
         [tokens.{name}.request_claims]\n{request_claims}\n\n"
    )
}

fn hs256_verify(token: &str) -> serde_json::Value {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    verify(token, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &v)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `method`, `url`, `host`, `path` and `body_sha256` (of the body as sent, after its own
/// placeholders were filled in), and `ath` of the access token in `Authorization`.
#[tokio::test]
async fn derived_claims_describe_the_request_as_sent() {
    let upstream = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}{}",
            hs256_per_request(
                "signed",
                "m = \"method\"\nu = \"url\"\nh = \"host\"\np = \"path\"\nb = \"body_sha256\"\na = \"ath\""
            ),
            "[tokens.api_key]\nkind = \"secret\"\nkey = \"sk_live_value\"\n\n",
            crate::support::config::rs256_token("bearer", "10m"),
            route(upstream.port(), &["signed", "api_key", "bearer"], ""),
        ),
    );
    let sidecar = start(&text).await;
    let body = r#"{"key": "{/api_key}", "n": 1}"#;
    let headers =
        [("x-signature", "{/signed}"), ("authorization", "Bearer {/bearer}"), ("content-type", "application/json")];
    post(sidecar.proxy_addr, &upstream.url("/v1/items?limit=5"), &headers, body).await.assert_upstream_ok();
    let r = upstream.single();
    let c = hs256_verify(r.header("x-signature").expect("signed header"));
    let host = format!("127.0.0.1:{}", upstream.port());
    assert_eq!(c["m"], "POST");
    assert_eq!(c["u"], format!("http://{host}/v1/items?limit=5"));
    assert_eq!(c["h"], host.as_str());
    assert_eq!(c["p"], "/v1/items");
    assert_eq!(r.body_text(), r#"{"key": "sk_live_value", "n": 1}"#, "the body's own placeholder was filled in");
    assert_eq!(c["b"], hex(&sha256(&r.body())), "body_sha256 is the hash of the body as received");
    let access_token = r.token();
    assert_eq!(c["a"], URL_SAFE_NO_PAD.encode(sha256(access_token.as_bytes())), "ath hashes the token as sent");
    sidecar.shutdown().await;
}

/// A per-request token signs the target and body, so it can only be written into headers;
/// `ath` needs an access token; a body too large to hash before sending is refused. Nothing
/// reaches the upstream in any of these cases.
#[tokio::test]
async fn misplaced_unsignable_and_unhashable_requests_are_refused() {
    let upstream = Upstream::start().await;
    let text = config(
        "max_buffered_body = \"1KiB\"",
        &format!(
            "{}{}{}",
            hs256_per_request("signed", "p = \"path\""),
            hs256_per_request("body_signed", "b = \"body_sha256\"\na = \"ath\""),
            route(upstream.port(), &["signed", "body_signed"], ""),
        ),
    );
    let sidecar = start(&text).await;
    let proxy = sidecar.proxy_addr;
    let reply = get(proxy, &upstream.url("/x?sig={/signed}"), &[]).await;
    reply.assert_error(400, "per_request_token_misplaced");
    assert!(reply.json()["message"].as_str().unwrap().contains("only be written into request headers"));
    post(proxy, &upstream.url("/x"), &[], "token={/signed}").await.assert_error(400, "per_request_token_misplaced");
    let no_authorization = post(proxy, &upstream.url("/x"), &[("x-sig", "{/body_signed}")], "small").await;
    no_authorization.assert_error(400, "request_not_signable");
    let big = Bytes::from(vec![b'a'; 4096]);
    let reply = send(
        proxy,
        request("POST", &upstream.url("/x"), &[("x-sig", "{/body_signed}"), ("authorization", "Bearer t")], big),
    )
    .await;
    reply.assert_error(413, "body_too_large_to_sign");
    upstream.assert_nothing_received("refused requests");
    // The same large body without the body-signing token streams as usual.
    let big = Bytes::from(vec![b'a'; 4096]);
    send(proxy, request("POST", &upstream.url("/x"), &[("x-sig", "{/signed}")], big)).await.assert_upstream_ok();
    assert_eq!(claims(upstream.single().header("x-sig").expect("signed"))["p"], "/x");
    sidecar.shutdown().await;
}

#[test]
fn config_keeps_slow_and_contradictory_per_request_settings_out() {
    let dir = ConfigDir::empty();
    let rsa = format!(
        "[tokens.t]\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey = {}\nttl = \"1m\"\nper_request = true\n",
        toml_str(&keys().rsa.pkcs8_pem)
    );
    let errors = dir.errors(&rsa);
    assert_eq!(errors[0].key_path, "tokens.t.algorithm");
    assert!(errors[0].message.contains("set allow_slow_signing = true"), "{}", errors[0]);
    dir.config(&format!("{rsa}allow_slow_signing = true\n"));

    let hs = "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"s\"\nttl = \"1m\"\n";
    let cases = [
        (format!("{hs}[tokens.t.request_claims]\nqsh = \"query_hash_atlassian\"\n"), "tokens.t.request_claims", "applies only with per_request = true"),
        (format!("{hs}per_request = true\nrefresh_before = \"10s\"\n"), "tokens.t.refresh_before", "signed for each request"),
        (format!("{hs}per_request = true\n[tokens.t.request_claims]\nx = \"cookie\"\n"), "tokens.t.request_claims.x", "unknown request value \"cookie\""),
        (format!("{hs}per_request = true\nclaims = {{ qsh = \"x\" }}\n[tokens.t.request_claims]\nqsh = \"query_hash_atlassian\"\n"), "tokens.t.request_claims.qsh", "keep one"),
        (format!("{hs}per_request = true\n[tokens.t.request_header]\nalg = \"method\"\n"), "tokens.t.request_header.alg", "cannot come from the request"),
        (
            format!("{hs}per_request = true\n[tokens.x]\nkind = \"oauth2\"\ntoken_url = \"https://idp.example/token\"\ngrant = \"jwt_bearer\"\nassertion = \"t\"\n"),
            "tokens.x.assertion",
            "is a per_request token",
        ),
    ];
    for (text, key, message) in cases {
        let errors = dir.errors(&text);
        let e = errors.iter().find(|e| e.key_path == key).unwrap_or_else(|| panic!("no error at {key}: {errors:?}"));
        assert!(e.message.contains(message), "{key}: {e}");
    }
}
