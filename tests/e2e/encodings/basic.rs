//! `Authorization: Basic` credentials carry placeholders inside their base64: curl `-u`, a URL's
//! userinfo, API keys as the Basic user or password (Stripe, Twilio, Jira). The sidecar decodes
//! them, fills user and password in, and encodes them again; malformed base64 passes untouched.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::encodings::{bearer_jwt, relayed, World};
use crate::support::client::{curl, get, run_command};
use crate::support::jwt::verify_demo;
use crate::support::raw::exchange;
use crate::support::upstream::Recorded;

/// The decoded `user:password` a request carried.
fn basic_credentials(seen: &Recorded) -> String {
    let value = seen.header("authorization").expect("an Authorization header");
    let encoded = value.strip_prefix("Basic ").unwrap_or_else(|| panic!("not Basic: {value}"));
    String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("UTF-8 credentials")
}

/// The JWT in `user:password` at `part` (0 user, 1 password), checked to be the route's.
fn jwt_in(credentials: &str, part: usize) -> String {
    let token = credentials.splitn(2, ':').nth(part).expect("a user:password pair").to_string();
    assert_eq!(verify_demo(&token)["sub"], "tok", "{credentials}");
    token
}

#[tokio::test]
async fn curl_dash_u_and_url_userinfo_get_their_placeholders_filled() {
    let world = World::start().await;
    let proxy = format!("http://{}", world.run.proxy());
    for (what, user_pass, want_user, jwt_password) in [
        ("git-style password", "x-access-token:{/auth_token}", "x-access-token", true),
        ("Stripe-style key as the user", "{/hostile}:", crate::encodings::HOSTILE, false),
        ("Twilio-style account and token", "AC0123456789:{/tok}", "AC0123456789", true),
    ] {
        let mut cmd = curl();
        cmd.args(["-s", "-S", "-x", &proxy, "-u", user_pass, &world.url("/basic")]);
        let out = run_command(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "upstream ok", "{what}: {stderr}");
        let credentials = basic_credentials(&world.received());
        let (user, password) = credentials.split_once(':').expect("user:password");
        assert_eq!(user, want_user, "{what}");
        if jwt_password {
            jwt_in(&credentials, 1);
        } else {
            assert_eq!(password, "", "{what}");
        }
    }

    // In a URL the placeholder is percent-encoded (a raw `/` would end the host part); curl
    // decodes it and sends Basic credentials, through HTTP_PROXY.
    let mut cmd = curl();
    cmd.args(["-s", "-S"]).arg(world.url("/userinfo").replace("http://", "http://x-access-token:%7B%2Fauth_token%7D@"));
    cmd.env("http_proxy", &proxy);
    let out = run_command(cmd).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "upstream ok", "{}", String::from_utf8_lossy(&out.stderr));
    let seen = world.received();
    assert_eq!(seen.path(), "/userinfo");
    jwt_in(&basic_credentials(&seen), 1);
}

#[tokio::test]
async fn userinfo_in_an_absolute_form_target_becomes_basic_credentials() {
    let world = World::start().await;
    let addr = world.upstream.addr;
    let request = |auth: &str| {
        format!(
            "GET http://x-access-token:%7B%2Fauth_token%7D@{addr}/ui HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
        )
    };
    let reply = exchange(world.run.proxy(), request("").as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    let seen = world.received();
    assert_eq!(seen.uri, "/ui");
    assert_eq!(seen.hosts(), [addr.to_string()], "no userinfo in the Host sent upstream");
    let credentials = basic_credentials(&seen);
    assert!(credentials.starts_with("x-access-token:"), "{credentials}");
    jwt_in(&credentials, 1);

    // A request that already has credentials keeps them; the userinfo is dropped.
    let reply = exchange(world.run.proxy(), request("Authorization: Bearer {/auth_token}\r\n").as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    bearer_jwt(&world.received());
}

#[tokio::test]
async fn basic_values_without_a_filled_placeholder_pass_byte_for_byte() {
    let world = World::start().await;
    let unchanged = [
        format!("Basic {}", STANDARD.encode("user:password")),
        format!("Basic {}", STANDARD.encode("user:{/not_configured}")),
        "Basic not*base64{/auth_token".to_string(),
        format!("Basic {}!", STANDARD.encode("user:{/auth_token}")),
    ];
    for value in &unchanged {
        let reply = get(world.run.proxy(), &world.url("/same"), &[("authorization", value)]).await;
        let seen = relayed(&world, &reply);
        assert_eq!(seen.header("authorization"), Some(value.as_str()));
    }
    // Not base64 at all, but a raw placeholder: filled like any header value.
    let reply = get(world.run.proxy(), &world.url("/raw"), &[("authorization", "Basic {/hostile}")]).await;
    let seen = relayed(&world, &reply);
    assert_eq!(seen.headers["authorization"].as_bytes(), format!("Basic {}", crate::encodings::HOSTILE).as_bytes());
}
