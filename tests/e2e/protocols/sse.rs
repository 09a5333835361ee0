//! Server-Sent Events stream with no added delay: the upstream sends one event and waits
//! for the test's signal, given only once the client has read that event, before it sends
//! the next. Through HTTP_PROXY (hyper client, HTTP/1.1) and through HTTPS_PROXY
//! interception (curl -N).

use std::io::BufRead;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::support::ca::TestCa;
use crate::support::client::curl;
use crate::support::config::{config, route, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::raw::DEADLINE;
use crate::support::sidecar::Running;
use crate::support::sse::{SseUpstream, FIRST_EVENT, SECOND_EVENT};

/// Reads body frames until `text` has arrived, within [`DEADLINE`]; returns what arrived.
async fn read_until(body: &mut hyper::body::Incoming, received: &mut String, text: &str) {
    let found = tokio::time::timeout(DEADLINE, async {
        while !received.contains(text) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                other => panic!("the event stream ended early ({other:?}) after {received:?}"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "{text:?} did not reach the client in time; got {received:?}");
}

#[tokio::test]
async fn events_reach_an_http_proxy_client_one_by_one() {
    let upstream = SseUpstream::plain().await;
    let text = config("", &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")));
    let running = Running::start(&text).await;
    let stream = tokio::net::TcpStream::connect(running.proxy()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{}/events", upstream.port()))
        .header("host", format!("127.0.0.1:{}", upstream.port()))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut received = String::new();
    read_until(&mut body, &mut received, FIRST_EVENT).await;
    upstream.release();
    read_until(&mut body, &mut received, SECOND_EVENT).await;
    assert_eq!(received, format!("{FIRST_EVENT}{SECOND_EVENT}"));
}

#[tokio::test]
async fn events_reach_curl_through_interception_one_by_one() {
    let ca = TestCa::new();
    let upstream = SseUpstream::tls(&ca).await;
    let text = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{}\n[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n",
            rs256_token("tok", "15m"),
            upstream.port()
        ),
    );
    let running = Running::start_with(&text, Some(&ca), "info").await;
    let mut command = curl();
    command
        .args(["-sN", "--max-time", "20", "--cacert"])
        .arg(running.dir.path("ca/ca.pem"))
        .arg(format!("https://localhost:{}/events", upstream.port()))
        .env("https_proxy", format!("http://{}", running.proxy()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start curl");
    let stdout = child.stdout.take().expect("stdout");
    // curl's output, line by line, from a reader thread.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut until = async |wanted: &str, lines: &mut Vec<String>| {
        let got = tokio::time::timeout(DEADLINE, async {
            while !lines.iter().any(|l| l == wanted) {
                match rx.recv().await {
                    Some(line) => lines.push(line),
                    None => break,
                }
            }
        })
        .await;
        assert!(got.is_ok() && lines.iter().any(|l| l == wanted), "curl did not print {wanted:?} in time: {lines:?}");
    };
    until("data: one", &mut lines).await;
    upstream.release();
    until("data: two", &mut lines).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines, ["event: tick", "data: one", "", "event: tick", "data: two"]);
}
