//! The inserted value is what its place needs. A JWT needs no escaping anywhere; a static
//! secret (or an exchanged token) can hold any byte, and written as it is it would end a form
//! field, a JSON string or a path segment early, or smuggle a second query parameter in. Each
//! place is decoded here as a server would decode it, and must give back the secret exactly.

use base64::Engine as _;

use crate::encodings::{form_fields, percent_decode, relayed, World, HOSTILE};
use crate::support::client::post;
use crate::support::config::{config, route, ConfigDir};
use crate::support::sidecar::{Running, SidecarProcess};
use crate::support::upstream::Upstream;

#[tokio::test]
async fn a_hostile_secret_is_escaped_for_the_target_the_form_the_json_and_basic() {
    let world = World::start().await;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("api:{/hostile}"));

    // Target, header and form body in one request.
    let headers = [
        ("x-key", "{/hostile}"),
        ("authorization", basic.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let target = "/e/{/hostile}/end?q=%7B/hostile%7D&after=1";
    let reply = post(world.run.proxy(), &world.url(target), &headers, "k=%7B%2Fhostile%7D&after=2").await;
    let seen = relayed(&world, &reply);

    let (path, query) = seen.uri.split_once('?').expect("a query");
    let segments: Vec<Vec<u8>> = path.split('/').map(|s| percent_decode(s, false)).collect();
    assert_eq!(segments, [b"".to_vec(), b"e".to_vec(), HOSTILE.as_bytes().to_vec(), b"end".to_vec()], "{path}");
    let query = form_fields(query.as_bytes());
    assert_eq!(query, [("q".to_string(), HOSTILE.into()), ("after".to_string(), "1".into())], "{}", seen.uri);

    assert_eq!(seen.headers["x-key"].as_bytes(), HOSTILE.as_bytes(), "a header value takes the secret as it is");
    let credentials = seen.header("authorization").and_then(|a| a.strip_prefix("Basic ")).expect("Basic credentials");
    let credentials = base64::engine::general_purpose::STANDARD.decode(credentials).expect("base64");
    assert_eq!(credentials, format!("api:{HOSTILE}").as_bytes());

    let form = form_fields(&seen.body());
    assert_eq!(form, [("k".to_string(), HOSTILE.into()), ("after".to_string(), "2".into())], "{}", seen.body_text());

    // A JSON body, both JSON spellings.
    let json = r#"{"raw":"{/hostile}","escaped":"{\/hostile}","after":3}"#;
    let reply = post(world.run.proxy(), &world.url("/j"), &[("content-type", "application/json")], json).await;
    let seen = relayed(&world, &reply);
    let parsed: serde_json::Value = serde_json::from_slice(&seen.body()).expect("the body is still JSON");
    assert_eq!(parsed, serde_json::json!({"raw": HOSTILE, "escaped": HOSTILE, "after": 3}));
}

#[tokio::test]
async fn a_secret_that_is_not_utf8_stays_out_of_json_but_is_encoded_elsewhere() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    // Latin-1 "café": bytes a JSON string cannot hold.
    dir.write("latin1.key", b"caf\xe9");
    let text = config(
        "",
        &format!(
            "[tokens.latin]\nkind = \"secret\"\nkey_file = \"latin1.key\"\n{}",
            route(upstream.port(), &["latin"], "")
        ),
    );
    let path = dir.write_config(&text);
    let run = Running { sidecar: SidecarProcess::start(&path, "info").await, dir };

    let json = r#"{"k":"{/latin}"}"#;
    post(run.proxy(), &upstream.url("/j"), &[("content-type", "application/json")], json).await.assert_upstream_ok();
    assert_eq!(upstream.last().expect("request").body_text(), json, "left as written rather than break the JSON");

    let form = "k={/latin}";
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    post(run.proxy(), &upstream.url("/f"), &headers, form).await.assert_upstream_ok();
    assert_eq!(upstream.last().expect("request").body_text(), "k=caf%E9");
}
