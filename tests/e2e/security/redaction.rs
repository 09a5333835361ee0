//! Issue 9, response redaction: on a route with `redact_responses = true`, the values of the
//! tokens injected into a request are replaced by their placeholder text, as the request
//! wrote it, in the upstream's response headers and body (streamed, a token split across
//! chunks included), so an echoing or error-reflecting upstream does not hand the agent a live
//! token. Counted in `redactions_total{token}`. Routes without it are unchanged.

use std::time::Duration;

use crate::support::config::{config, rs256_token};
use crate::support::jwt::find_jwts;
use crate::support::metrics::scrape;
use crate::support::raw::{exchange, get_bytes, RawResponse};
use crate::support::sidecar::Running;
use crate::support::upstream::{Recorded, Upstream};
use crate::support::wait::wait_until;

fn route(name: &str, port: u16, redact: bool) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [\"tok\"]\n\
         redact_responses = {redact}\n\n[routes.placeholders]\nauth_token = \"tok\"\n\n"
    )
}

async fn redactions(run: &Running) -> f64 {
    scrape(run.admin()).await.count("redactions_total", &[("token", "tok")])
}

async fn wait_for_redactions_above(run: &Running, before: f64) -> f64 {
    let mut now = before;
    wait_until(Duration::from_secs(5), async || {
        now = redactions(run).await;
        now > before
    })
    .await;
    now
}

fn get_echo(port: u16, placeholder: &str) -> Vec<u8> {
    let authority = format!("127.0.0.1:{port}");
    let auth = format!("Bearer {placeholder}");
    get_bytes(
        &format!("http://{authority}/echo"),
        &authority,
        &[("Authorization", &auth), ("Accept-Encoding", "gzip, br")],
    )
}

fn assert_redacted(response: &RawResponse, placeholder: &str, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.summary());
    let expected = format!("Bearer {placeholder}");
    assert_eq!(response.header("x-echo-authorization"), Some(expected.as_str()), "{what}: response header");
    let json = response.json();
    assert_eq!(json["authorization"], expected, "{what}: JSON body field");
    assert_eq!(json["headers"]["authorization"], expected, "{what}: JSON body header copy");
    response.assert_no_jwt(what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_route_shows_the_placeholder_instead_of_the_token_and_others_do_not() {
    let redacting = Upstream::builder().echo().start().await;
    let plain = Upstream::builder().echo().start().await;
    let config = format!(
        "{}{}{}{}",
        config("", ""),
        rs256_token("tok", "10m"),
        route("redacted", redacting.port(), true),
        route("control", plain.port(), false)
    );
    let run = Running::start(&config).await;
    let before = redactions(&run).await;

    let response = exchange(run.proxy(), &get_echo(redacting.port(), "{/tok}")).await;
    let seen = redacting.last().expect("the upstream received the request");
    let token = seen.bearer().unwrap_or_default().to_string();
    assert!(token.starts_with("eyJ"), "the upstream received the real token: {token:?}");
    assert_eq!(seen.header("accept-encoding"), Some("identity"), "redacted routes ask for an unencoded response");
    assert_redacted(&response, "{/tok}", "redact_responses = true");
    let after = wait_for_redactions_above(&run, before).await;
    assert!(after > before, "redactions_total{{token=\"tok\"}} did not increase ({before} -> {after})");

    // Control: without redact_responses the reflected token reaches the client as before.
    let response = exchange(run.proxy(), &get_echo(plain.port(), "{/tok}")).await;
    assert_eq!(response.status, 200, "{}", response.summary());
    let token = plain.last().and_then(|s| s.bearer().map(str::to_string)).expect("control upstream got a token");
    assert_eq!(response.header("x-echo-authorization"), Some(format!("Bearer {token}").as_str()));
    assert_eq!(response.json()["authorization"], format!("Bearer {token}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_uses_the_placeholder_name_the_request_wrote() {
    let redacting = Upstream::builder().echo().start().await;
    let config = config("", &format!("{}{}", rs256_token("tok", "10m"), route("redacted", redacting.port(), true)));
    let run = Running::start(&config).await;
    let before = redactions(&run).await;
    let response = exchange(run.proxy(), &get_echo(redacting.port(), "{/auth_token}")).await;
    let seen = redacting.last().expect("the upstream received the request");
    assert!(seen.bearer().is_some_and(|t| t.starts_with("eyJ")), "the alias was substituted: {:?}", seen.bearer());
    assert_redacted(&response, "{/auth_token}", "alias {/auth_token} of tok");
    let after = wait_for_redactions_above(&run, before).await;
    assert!(after > before, "redactions_total{{token=\"tok\"}} counts redactions under the token's own name");
}

/// Large responses in several writes, a token split across chunk boundaries in two places
/// and whole once, framed chunked or with a Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_body_is_redacted_across_chunk_boundaries() {
    fn pieces(token: &str) -> Vec<String> {
        let filler = "lorem ipsum dolor sit amet ".repeat(4000); // ~105 KiB
        let (a, b) = token.split_at(token.len() / 2);
        let (c, d) = token.split_at(3);
        vec![
            format!("{{\"echo\":\"{filler} first={a}"),
            format!("{b} {filler} second={c}"),
            format!("{d} {filler} whole={token} ]\"}}"),
        ]
    }
    /// The upstream's answer: it echoes the token it received in a header and, in pieces, in
    /// the body, framed chunked or with a Content-Length.
    fn answer(framing: &str, head: &Recorded) -> Vec<Vec<u8>> {
        let token = head.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        let pieces = pieces(token);
        let echo = format!("HTTP/1.1 200 OK\r\nX-Echo-Authorization: Bearer {token}\r\n");
        let mut out = Vec::new();
        if framing == "chunked" {
            out.push(format!("{echo}Transfer-Encoding: chunked\r\n\r\n").into_bytes());
            for p in &pieces {
                out.push(format!("{:x}\r\n{p}\r\n", p.len()).into_bytes());
            }
            out.push(b"0\r\n\r\n".to_vec());
        } else {
            let len: usize = pieces.iter().map(String::len).sum();
            out.push(format!("{echo}Content-Length: {len}\r\n\r\n").into_bytes());
            out.extend(pieces.into_iter().map(String::into_bytes));
        }
        out
    }
    for framing in ["chunked", "content-length"] {
        let upstream = Upstream::builder().raw(move |head| answer(framing, head)).start().await;
        let config = config("", &format!("{}{}", rs256_token("tok", "10m"), route("redacted", upstream.port(), true)));
        let run = Running::start(&config).await;
        let before = redactions(&run).await;
        let response = exchange(run.proxy(), &get_echo(upstream.port(), "{/tok}")).await;
        let head = upstream.requests().pop().expect("the upstream received the request");
        let token = head.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
        assert!(token.starts_with("eyJ"), "{framing}: the upstream received the real token");
        let expected = pieces(token).concat().replace(token, "{/tok}");
        assert_eq!(response.status, 200, "{framing}: {}", response.summary());
        assert_eq!(response.header("x-echo-authorization"), Some("Bearer {/tok}"), "{framing}: header");
        let found = find_jwts(&response.text());
        assert!(found.is_empty(), "{framing}: {} token(s) reached the client in the body", found.len());
        assert_eq!(response.body.len(), expected.len(), "{framing}: body length");
        assert!(response.text() == expected, "{framing}: the body is the upstream's with each token redacted");
        let after = wait_for_redactions_above(&run, before).await;
        assert!(after > before, "{framing}: redactions_total{{token=\"tok\"}} did not increase ({before} -> {after})");
    }
}

/// A token is written percent-encoded into a request target and JSON-escaped into a JSON
/// body; an upstream that reflects the target or the body reflects those forms, and they
/// are redacted like the raw value (fails when only the raw value is looked for).
#[tokio::test]
async fn escaped_forms_of_an_injected_token_are_redacted_too() {
    use crate::support::client::{get, post};
    use crate::support::origin::{Answer, Origin};
    use crate::support::sidecar::start;

    // A secret with bytes a URI must percent-encode and one a JSON string must escape.
    const SECRET: &str = "sk+live/abc=\\\"x";
    let origin = Origin::start(|seen, _| match seen.uri.split('?').next().unwrap_or_default() {
        "/target" => Answer::ok(format!("you asked for {}", seen.uri)),
        _ => Answer::ok(format!("you sent {}", String::from_utf8_lossy(&seen.body))),
    })
    .await;
    let text = config(
        "",
        &format!(
            "[tokens.api_key]\nkind = \"secret\"\nkey = '{SECRET}'\n\n[[routes]]\nname = \"reflecting\"\n\
             scheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\ntokens = [\"api_key\"]\nredact_responses = true\n\n",
            origin.port()
        ),
    );
    let sidecar = start(&text).await;

    let reply = get(sidecar.proxy_addr, &origin.url("/target?key={/api_key}"), &[]).await;
    assert_eq!(origin.last().uri, "/target?key=sk%2Blive%2Fabc%3D%5C%22x", "the secret went out percent-encoded");
    assert_eq!(reply.text(), "you asked for /target?key={/api_key}");

    let body = r#"{"key":"{/api_key}"}"#;
    let reply = post(sidecar.proxy_addr, &origin.url("/body"), &[("content-type", "application/json")], body).await;
    assert_eq!(origin.last().body.as_ref(), br#"{"key":"sk+live/abc=\\\"x"}"#, "the secret went out JSON-escaped");
    assert_eq!(reply.text(), r#"you sent {"key":"{/api_key}"}"#);
    sidecar.shutdown().await;
}
