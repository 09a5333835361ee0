//! HTTP edge cases, each once through the proxy: an HTTP/1.0 client, `Expect:
//! 100-continue`, `OPTIONS *`, HEAD, 204 and 304 answers, a chunked upstream response, and
//! large response headers.

use crate::support::client::{curl, run_command, stderr, stdout};
use crate::support::config::{config, listener, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::raw::RawConn;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

fn aliased(port: u16) -> String {
    format!("{}{}", rs256_token("tok", "15m"), route(port, &["tok"], "[routes.placeholders]\nauth_token = \"tok\""))
}

/// A raw upstream answering by path: a chunked body, 204, 304, a large head.
async fn scripted() -> Upstream {
    Upstream::builder()
        .raw(|seen| {
            let answer: Vec<u8> = match seen.path() {
                "/chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                        .to_vec()
                }
                "/no-content" => b"HTTP/1.1 204 No Content\r\nX-Kept: yes\r\n\r\n".to_vec(),
                "/not-modified" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 11\r\n\r\n".to_vec(),
                "/large-head" => {
                    let mut head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_string();
                    head.push_str(&format!("X-Large: {}\r\n", "a".repeat(48 << 10)));
                    for i in 0..80 {
                        head.push_str(&format!("X-Header-{i}: value-{i}\r\n"));
                    }
                    head.push_str("\r\nok");
                    head.into_bytes()
                }
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nupstream ok".to_vec(),
            };
            vec![answer]
        })
        .start()
        .await
}

#[tokio::test]
async fn http_1_0_clients_get_a_response_they_can_read() {
    let upstream = scripted().await;
    let running = Running::start(&config("", &aliased(upstream.port()))).await;
    // HTTP/1.0, no Host header, and a chunked upstream answer, which 1.0 cannot read:
    // the body comes delimited by the connection's close.
    let request = format!(
        "GET http://127.0.0.1:{}/chunked HTTP/1.0\r\nAuthorization: Bearer {{/auth_token}}\r\n\r\n",
        upstream.port()
    );
    let mut conn = RawConn::sending(running.proxy(), request.as_bytes()).await;
    let rest = conn.rest_until_close(std::time::Duration::from_secs(10)).await.expect("the proxy closes after 1.0");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("transfer-encoding"), "chunked to an HTTP/1.0 client: {text}");
    assert!(text.ends_with("\r\n\r\nhello world"), "{text}");
    assert_eq!(verify_demo(upstream.single().token())["sub"], "tok");

    // curl --http1.0 too.
    let mut curl = curl();
    curl.args(["-s", "--http1.0", "-x", &format!("http://{}", running.proxy()), &upstream.url("/plain")]);
    assert_eq!(stdout(&run_command(curl).await), "upstream ok");
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_the_body_substituted() {
    let upstream = Upstream::start().await;
    let running = Running::start(&config("", &aliased(upstream.port()))).await;
    let mut curl = curl();
    curl.args(["-sv", "-x", &format!("http://{}", running.proxy()), &upstream.url("/upload")]);
    curl.args(["-H", "Expect: 100-continue", "-H", "Content-Type: application/json"]);
    curl.args(["--data-binary", "{\"token\": \"{/auth_token}\"}"]);
    let out = run_command(curl).await;
    assert_eq!(stdout(&out), "upstream ok", "{}", stderr(&out));
    assert!(stderr(&out).contains("< HTTP/1.1 100 Continue"), "no 100 Continue from the proxy:\n{}", stderr(&out));
    let seen = upstream.single();
    let body: serde_json::Value = serde_json::from_slice(&seen.body()).expect("JSON body");
    verify_demo(body["token"].as_str().expect("token"));
}

#[tokio::test]
async fn options_asterisk_head_204_304_chunked_and_large_headers() {
    let upstream = scripted().await;
    let text = config("", &format!("{}{}", aliased(upstream.port()), listener(&upstream.url("/base"))));
    let running = Running::start(&text).await;
    let host = format!("127.0.0.1:{}", upstream.port());

    // OPTIONS * on the proxy port is about the proxy: answered by it.
    let mut conn = RawConn::sending(running.proxy(), b"OPTIONS * HTTP/1.1\r\nHost: proxy\r\n\r\n").await;
    let answer = conn.expect_response("OPTIONS * on the proxy port").await;
    assert_eq!(answer.status, 200, "{}", answer.summary());
    assert!(answer.header("allow").is_some_and(|a| a.contains("CONNECT")), "{}", answer.summary());
    upstream.assert_nothing_received("OPTIONS * to the proxy");
    // On a reverse listener it is about the upstream server: forwarded as OPTIONS *, without
    // the listener's base path.
    let request = b"OPTIONS * HTTP/1.1\r\nHost: listener\r\nAuthorization: Bearer {/auth_token}\r\n\r\n";
    let mut conn = RawConn::sending(running.listener(), request).await;
    assert_eq!(conn.expect_response("OPTIONS * on a listener").await.status, 200);
    let seen = upstream.single();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("OPTIONS", "*"));
    // It is about the whole host, so only a route for the whole host (path_prefix "/")
    // matches it, and fills in that route's tokens.
    verify_demo(seen.token());

    let mut conn = RawConn::tcp(running.proxy()).await;
    let get = |path: &str, method: &str| {
        format!(
            "{method} http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {{/auth_token}}\r\n\r\n"
        )
    };
    // HEAD keeps the length and sends no body; the connection goes on.
    let head = conn.request(get("/head", "HEAD").as_bytes()).await.expect("HEAD");
    assert_eq!((head.status, head.header("content-length"), head.body.len()), (200, Some("11"), 0));
    // 204 and 304 have no body, whatever the 304's Content-Length says.
    let no_content = conn.request(get("/no-content", "GET").as_bytes()).await.expect("204");
    assert_eq!((no_content.status, no_content.header("x-kept"), no_content.body.len()), (204, Some("yes"), 0));
    let not_modified = conn.request(get("/not-modified", "GET").as_bytes()).await.expect("304");
    assert_eq!((not_modified.status, not_modified.header("etag"), not_modified.body.len()), (304, Some("\"v1\""), 0));
    // A chunked answer stays chunked to an HTTP/1.1 client, without a Content-Length.
    let chunked = conn.request(get("/chunked", "GET").as_bytes()).await.expect("chunked");
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"), "{}", chunked.summary());
    assert_eq!((chunked.header("content-length"), chunked.body.as_slice()), (None, &b"hello world"[..]));
    // A 48 KiB header among 80 more arrives whole.
    let large = conn.request(get("/large-head", "GET").as_bytes()).await.expect("large head");
    assert_eq!(large.status, 200, "{}", large.summary());
    assert_eq!(large.header("x-large").map(str::len), Some(48 << 10));
    assert_eq!(large.header("x-header-79"), Some("value-79"));
    assert_eq!(large.body, b"ok");
    for request in upstream.requests() {
        assert_eq!(verify_demo(request.token())["sub"], "tok", "{}", request.uri);
    }
    assert_eq!(upstream.count(), 6);
}
