//! Placeholders and tokens: the key is the request as the function wrote it, so two
//! functions share an entry while the token rotates underneath; a response that carries an
//! injected token value (echoed in a header, the body or a URL, raw or percent-encoded) is
//! never stored; a literal credential bypasses the cache.

use std::time::Duration;

use super::{assert_reply, cache_state, cached_route};
use crate::support::client::{admin_get, curl, get, python, run_command, stdout};
use crate::support::config::{config, rs256_token};
use crate::support::jwt::{find_jwts, verify_demo};
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::start;
use crate::support::wait::wait_until;

async fn issued_at(admin: std::net::SocketAddr, token: &str) -> u64 {
    let status = admin_get(admin, "/tokens").await.json();
    let tokens = status["tokens"].as_array().expect("tokens");
    let entry = tokens.iter().find(|t| t["name"] == token).expect("the token");
    entry["issued_at"].as_u64().expect("issued_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_functions_share_an_entry_while_the_token_rotates_underneath() {
    let mut probe = python();
    probe.args(["-c", "import requests"]);
    assert!(run_command(probe).await.status.success(), "python3 with requests is needed (.ci/test installs it)");

    let origin = Origin::counting().await;
    // A 2 s token is re-signed about every 1.6 s; the cache keeps answers for a minute.
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("short", "2s"),
            cached_route(
                "rotating",
                origin.port(),
                &["short"],
                "[routes.placeholders]\nauth_token = \"short\"\n",
                "ttl = \"60s\""
            )
        ),
    );
    let sidecar = start(&text).await;
    let proxy = format!("http://{}", sidecar.proxy_addr);
    let url = origin.url("/v1/customers/42");

    // Function one: curl.
    let mut one = curl();
    one.args(["-s", "-D", "-", "-x", &proxy, &url, "-H", "Authorization: Bearer {/auth_token}"]);
    let out = stdout(&run_command(one).await);
    assert!(out.to_ascii_lowercase().contains("x-token-sidecar-cache: miss") && out.ends_with("\r\n\r\n1"), "{out}");
    let first_token = origin.last().header("authorization").expect("a token").to_string();
    verify_demo(first_token.trim_start_matches("Bearer "));

    let before = issued_at(sidecar.admin_addr, "short").await;
    let rotated =
        wait_until(Duration::from_secs(10), async || issued_at(sidecar.admin_addr, "short").await > before).await;
    assert!(rotated, "the token was not re-signed");

    // Function two: Python requests, the same request as written, after the rotation.
    let script = r#"
import sys, requests
r = requests.get(sys.argv[1], headers={"Authorization": "Bearer {/auth_token}"}, proxies={"http": sys.argv[2]}, timeout=10)
print(r.status_code, r.headers.get("x-token-sidecar-cache"), r.text)
"#;
    let mut two = python();
    two.args(["-c", script, &url, &proxy]);
    assert_eq!(stdout(&run_command(two).await), "200 hit 1\n", "the second function shares the first one's entry");
    assert_eq!(origin.count(), 1);

    // The token did rotate: a refresh carries the new one.
    let refreshed =
        get(sidecar.proxy_addr, &url, &[("authorization", "Bearer {/auth_token}"), ("cache-control", "no-cache")])
            .await;
    assert_reply(&refreshed, "2", "bypass");
    let second_token = origin.last().header("authorization").expect("a token").to_string();
    assert_ne!(first_token, second_token, "the refresh went out with the rotated token");
    assert_reply(&get(sidecar.proxy_addr, &url, &[("authorization", "Bearer {/auth_token}")]).await, "2", "hit");
    sidecar.shutdown().await;
}

/// The origin reflects what it received: the Authorization header into a response header or
/// the body, or the request target into the body.
async fn echoing_origin() -> Origin {
    Origin::start(|seen, n| {
        let auth = seen.header("authorization").unwrap_or_default().to_string();
        match seen.uri.split('?').next().unwrap_or_default() {
            "/header" => Answer::ok(n.to_string()).header("x-whoami", &auth),
            "/body" => Answer::ok(format!("{n} you sent {auth}")),
            "/target" => Answer::ok(format!("{n} you asked for {}", seen.uri)),
            _ => Answer::ok(n.to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn a_response_that_carries_an_injected_token_is_never_stored() {
    let origin = echoing_origin().await;
    let text = config(
        "",
        &format!(
            "{}[tokens.api_key]\nkind = \"secret\"\nkey = \"sk+live/abc=\"\n{}",
            rs256_token("tok", "10m"),
            cached_route("echoes", origin.port(), &["tok", "api_key"], "", "ttl = \"60s\"")
        ),
    );
    let sidecar = start(&text).await;
    let auth = [("authorization", "Bearer {/tok}")];

    for (path, headers) in [("/header", &auth[..]), ("/body", &auth[..]), ("/target?key={/api_key}", &[][..])] {
        let url = origin.url(path);
        let before = origin.count();
        let first = get(sidecar.proxy_addr, &url, headers).await;
        let second = get(sidecar.proxy_addr, &url, headers).await;
        assert_eq!((cache_state(&first), cache_state(&second)), ("miss", "miss"), "{path}: never stored");
        assert_eq!(origin.count(), before + 2, "{path}: both went upstream");
    }
    // The secret went out percent-encoded, and the echo of it was recognised in that form.
    assert_eq!(origin.last().uri, "/target?key=sk%2Blive%2Fabc%3D");

    // The same route stores what carries no token.
    let plain = origin.url("/plain");
    assert_eq!(cache_state(&get(sidecar.proxy_addr, &plain, &auth).await), "miss");
    assert_eq!(cache_state(&get(sidecar.proxy_addr, &plain, &auth).await), "hit");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_redacted_echo_is_stored_and_served_without_the_token() {
    let origin = echoing_origin().await;
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "10m"),
            cached_route("redacted-echo", origin.port(), &["tok"], "redact_responses = true", "ttl = \"60s\"")
        ),
    );
    let sidecar = start(&text).await;
    let auth = [("authorization", "Bearer {/tok}")];
    let url = origin.url("/body");
    let first = get(sidecar.proxy_addr, &url, &auth).await;
    assert_reply(&first, "1 you sent Bearer {/tok}", "miss");
    let second = get(sidecar.proxy_addr, &url, &auth).await;
    assert_reply(&second, "1 you sent Bearer {/tok}", "hit");
    assert!(find_jwts(&second.text()).is_empty());
    assert_eq!(origin.count(), 1);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn literal_credentials_bypass_the_cache_and_placeholders_of_two_tokens_are_two_entries() {
    let origin = Origin::counting().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("reader", "10m"),
            rs256_token("admin", "10m"),
            cached_route("identities", origin.port(), &["reader", "admin"], "", "ttl = \"60s\"")
        ),
    );
    let sidecar = start(&text).await;
    let url = origin.url("/v1/me");
    let proxy = sidecar.proxy_addr;
    let get_as = async |auth: &str| get(proxy, &url, &[("authorization", auth)]).await;

    assert_reply(&get_as("Bearer literal-token-1").await, "1", "bypass");
    assert_reply(&get_as("Bearer literal-token-1").await, "2", "bypass");
    assert_reply(&get_as("Bearer {/not_a_token}").await, "3", "bypass");
    let cookie = get(sidecar.proxy_addr, &url, &[("cookie", "session=abc")]).await;
    assert_reply(&cookie, "4", "bypass");

    assert_reply(&get_as("Bearer {/reader}").await, "5", "miss");
    assert_reply(&get_as("Bearer {/admin}").await, "6", "miss");
    assert_reply(&get_as("Bearer {/reader}").await, "5", "hit");
    assert_reply(&get_as("Bearer {/admin}").await, "6", "hit");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "7", "miss");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "7", "hit");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_token_the_route_does_not_bind_is_refused_and_nothing_is_stored() {
    let origin = Origin::counting().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("mine", "10m"),
            rs256_token("theirs", "10m"),
            cached_route("bound", origin.port(), &["mine"], "", "ttl = \"60s\"")
        ),
    );
    let sidecar = start(&text).await;
    let url = origin.url("/x");
    for _ in 0..2 {
        let reply =
            get(sidecar.proxy_addr, &url, &[("authorization", "Bearer {/mine}"), ("x-other", "{/theirs}")]).await;
        reply.assert_error(403, "placeholder_not_allowed");
    }
    assert_eq!(origin.count(), 0);
    sidecar.shutdown().await;
}
