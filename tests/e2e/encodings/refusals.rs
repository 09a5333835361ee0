//! Refusals hold in every spelling and every position: a token bound to another route gets 403
//! `placeholder_not_allowed`, and a bound token with no value 503 `token_unavailable`, however
//! the placeholder is spelled, and nothing reaches the upstream. Look-alikes the grammar does
//! not take (double or mixed encodings, overlong names) are text: forwarded as written, with
//! no token in them.

use base64::Engine as _;

use crate::encodings::World;
use crate::support::client::{post, request, send};
use crate::support::raw::exchange;

/// One request: target, extra headers, Content-Type, body.
type Case = (String, Vec<(String, String)>, &'static str, String);

/// Every (position, spelling) of placeholder `name`, as a POST.
fn every_position(name: &str) -> Vec<Case> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let plain = |target: String| (target, vec![], "text/plain", String::new());
    let mut cases = vec![
        plain(format!("/p/{{/{name}}}")),
        plain(format!("/p/%7B%2F{name}%7D")),
        plain(format!("/p/%7B/{name}%7D")),
        plain(format!("/p/%7b%2f{name}%7d")),
        // Routes match (and send) the path with unreserved escapes decoded, so an escaped name
        // byte is the name.
        plain(format!("/p/%7B%2F%{:02X}{}%7D", name.as_bytes()[0], &name[1..])),
        plain(format!("/p?q={{/{name}}}")),
        plain(format!("/p?q=%7B%2F{name}%7D")),
        plain(format!("/p?q=%7b/{name}%7D")),
    ];
    let header = |k: &str, v: String| ("/h".to_string(), vec![(k.to_string(), v)], "text/plain", String::new());
    cases.push(header("authorization", format!("Bearer {{/{name}}}")));
    cases.push(header("x-anything", format!("a {{/{name}}} b")));
    cases.push(header("authorization", format!("Basic {}", b64(format!("user:{{/{name}}}")))));
    cases.push(header("authorization", format!("Basic {}", b64(format!("{{/{name}}}:")))));
    let body = |ct: &'static str, b: String| ("/b".to_string(), vec![], ct, b);
    let form = "application/x-www-form-urlencoded";
    cases.push(body(form, format!("a=1&k={{/{name}}}")));
    cases.push(body(form, format!("a=1&k=%7B%2F{name}%7D")));
    cases.push(body(form, format!("a=1&k=%7B/{name}%7D")));
    cases.push(body(form, format!("a=1&k=%7b%2F{name}%7d")));
    cases.push(body("application/json", format!("{{\"k\":\"{{\\/{name}}}\"}}")));
    cases.push(body("application/json", format!("{{\"k\":\"{{/{name}}}\"}}")));
    cases.push(body("text/plain", format!("k={{/{name}}}")));
    cases
}

async fn assert_refused_everywhere(name: &str, status: u16, code: &str) {
    let world = World::start().await;
    for (target, headers, content_type, body) in every_position(name) {
        let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.push(("content-type", content_type));
        let reply = post(world.run.proxy(), &world.url(&target), &all, body.clone()).await;
        assert!(
            reply.status.as_u16() == status && reply.sidecar_error() == Some(code),
            "{target} {headers:?} {content_type} {body:?}: expected {status} {code}, got {} {}",
            reply.status,
            reply.text()
        );
        reply.assert_error(status, code);
    }
    // Userinfo in the absolute-form target becomes Basic credentials, and is refused as such.
    let raw = format!(
        "GET http://u:%7B%2F{name}%7D@{addr}/userinfo HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        addr = world.upstream.addr
    );
    exchange(world.run.proxy(), raw.as_bytes()).await.assert_error(status, code, "userinfo");
    world.upstream.assert_nothing_received(&format!("{name} in any spelling"));
}

#[tokio::test]
async fn a_token_bound_elsewhere_is_refused_in_every_spelling_and_position() {
    assert_refused_everywhere("elsewhere", 403, "placeholder_not_allowed").await;
}

#[tokio::test]
async fn an_unavailable_token_is_refused_in_every_spelling_and_position() {
    assert_refused_everywhere("later", 503, "token_unavailable").await;
}

#[tokio::test]
async fn look_alikes_are_text_and_carry_no_token() {
    let world = World::start().await;
    let long = "e".repeat(65);
    let targets = [
        "/p/%257B%252Felsewhere%257D".to_string(),
        "/p/%7B%252Felsewhere%7D".to_string(),
        "/p/{%2Felsewhere}".to_string(),
        "/p/%7B/elsewhere}".to_string(),
        "/p/{/elsewhere%7D".to_string(),
        "/p?q=%7B%2F%65lsewhere%7D".to_string(),
        format!("/p/%7B%2F{long}%7D?q={{/{long}}}"),
    ];
    for target in &targets {
        let reply = send(world.run.proxy(), request("GET", &world.url(target), &[], "")).await;
        reply.assert_upstream_ok();
        assert_eq!(&world.received().uri, target, "forwarded as written");
    }
    let bodies = [
        ("text/plain", "k=%7B%2Felsewhere%7D&j={\\/elsewhere}"),
        ("application/x-www-form-urlencoded", "k=%257B%252Felsewhere%257D&j={\\/elsewhere}&m=%7B%2Felsewhere}"),
        ("application/json", "{\"k\":\"%7B%2Felsewhere%7D\",\"j\":\"{\\\\/elsewhere}\",\"u\":\"\\u007b/elsewhere}\"}"),
    ];
    for (content_type, body) in bodies {
        let headers = [("content-type", content_type), ("x-enc", "%7B%2Felsewhere%7D {\\/elsewhere}")];
        post(world.run.proxy(), &world.url("/b"), &headers, body).await.assert_upstream_ok();
        let seen = world.received();
        assert_eq!(seen.body_text(), body, "{content_type}");
        assert_eq!(seen.header("x-enc"), Some("%7B%2Felsewhere%7D {\\/elsewhere}"));
    }
    assert_eq!(world.upstream.jwts(), Vec::<String>::new(), "no token left the sidecar");
}
