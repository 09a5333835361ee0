//! Issue 9, finding 12: a stale `Content-Length` from an upstream that also says chunked,
//! `CONNECT host.:port` (trailing dot), wildcard routes matching empty labels, and a
//! `--log trace` log file inside the watched config folder feeding the watcher.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::ca::TestCa;
use crate::support::config::{config, rs256_token, ConfigDir, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::claims;
use crate::support::metrics::scrape;
use crate::support::raw::{exchange, get_bytes, RawConn, DEADLINE};
use crate::support::sidecar::Running;
use crate::support::sidecar::SidecarProcess;
use crate::support::tunnel::intercepted_raw;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const AUTH: (&str, &str) = ("Authorization", "Bearer {/tok}");

fn plain_route(port: u16) -> String {
    format!(
        "[[routes]]\nname = \"plain\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [\"tok\"]\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_with_a_content_length_reaches_the_client_whole_without_that_length() {
    const PIECES: [&str; 3] = ["0123456789", " and then some more text", ", the end"];
    let upstream = Upstream::builder()
        .raw(|_| {
            // Both framings, disagreeing: the chunked body is 43 bytes, Content-Length says 5.
            let mut out = vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n".to_vec()];
            for piece in PIECES {
                out.push(format!("{:x}\r\n{piece}\r\n", piece.len()).into_bytes());
            }
            out.push(b"0\r\n\r\n".to_vec());
            out
        })
        .start()
        .await;
    let config = config("", &format!("{}{}", rs256_token("tok", "10m"), plain_route(upstream.port())));
    let run = Running::start(&config).await;
    let authority = format!("127.0.0.1:{}", upstream.port());
    let expected = PIECES.concat();
    for (what, headers) in [("routed", &[AUTH][..]), ("without placeholder", &[][..])] {
        let mut conn = RawConn::tcp(run.proxy()).await;
        let response = conn
            .request(&get_bytes(&format!("http://{authority}/mixed"), &authority, headers))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let lengths = response.header_all("content-length");
        let chunked = response.header("transfer-encoding").is_some_and(|te| te.contains("chunked"));
        assert!(
            lengths.is_empty() || (!chunked && lengths == [expected.len().to_string()]),
            "{what}: the client must not see the upstream's Content-Length: 5 (head:\n{})",
            response.head
        );
        assert_eq!(response.status, 200, "{what}: {}", response.summary());
        assert_eq!(response.text(), expected, "{what}: the client receives the whole body (head:\n{})", response.head);
        let rest = conn.rest_until_close(DEADLINE).await;
        assert!(
            rest.as_ref().is_none_or(|r| r.is_empty()),
            "{what}: bytes after the response's end: {:?}",
            rest.map(|r| String::from_utf8_lossy(&r).into_owned())
        );
    }
    assert!(upstream.requests().iter().all(|h| h.method == "GET" && h.uri == "/mixed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_host_with_a_trailing_dot_is_intercepted_and_works() {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let port = upstream.port();
    let config = format!(
        "{}{TLS_SECTION}{}[[routes]]\nname = \"tls\"\nhost = \"localhost\"\nport = {port}\ntokens = [\"tok\"]\n\n",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), ""),
        rs256_token("tok", "10m"),
    );
    let run = Running::start_with(&config, Some(&ca), "info").await;
    // SNI is sent without the dot (as clients do); the request names the host as routed.
    let mut conn = intercepted_raw(run.proxy(), &format!("localhost.:{port}"), &run.ca_pem(), "localhost").await;
    let response = conn
        .request(&get_bytes("/dotted", &format!("localhost:{port}"), &[AUTH]))
        .await
        .expect("a response inside the tunnel");
    assert_eq!(response.status, 200, "{}", response.summary());
    let seen = upstream.last().expect("the upstream received the request");
    assert_eq!(seen.uri, "/dotted");
    assert_eq!(seen.hosts(), vec![format!("localhost:{port}")], "the upstream is told the host without the dot");
    let token = seen.bearer().unwrap_or_default();
    assert!(token.starts_with("eyJ"), "the token was injected: {token:?}");
    assert_eq!(claims(token)["sub"], "tok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_routes_do_not_match_hosts_with_empty_labels() {
    let upstream = Upstream::start().await;
    let port = upstream.port();
    let config = format!(
        "{}{}[[routes]]\nname = \"wild\"\nscheme = \"http\"\nhost = \"*.wild.test\"\nport = {port}\ntokens = [\"tok\"]\n\n\
         [[routes]]\nname = \"wild-tls\"\nhost = \"*.wild.test\"\ntokens = [\"tok\"]\n\n",
        config("", ""),
        rs256_token("tok", "10m"),
    );
    let run = Running::start(&config).await;
    let mut failures = Vec::new();
    for host in [".wild.test", "x..wild.test"] {
        let authority = format!("{host}:{port}");
        let response = exchange(run.proxy(), &get_bytes(&format!("http://{authority}/"), &authority, &[AUTH])).await;
        if !response.is_error(400, "bad_host") {
            failures.push(format!("GET http://{authority}/: got {}", response.summary()));
        }
        let target = format!("{host}:443");
        let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let response = exchange(run.proxy(), connect.as_bytes()).await;
        if !response.is_error(400, "bad_host") {
            failures.push(format!("CONNECT {target}: got {}", response.summary()));
        }
    }
    assert!(failures.is_empty(), "hosts with empty labels must get 400 bad_host:\n{}", failures.join("\n"));
    assert_eq!(upstream.count(), 0, "nothing is forwarded");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The first line of `path` containing `needle` and how many lines contain it (reads the
/// file once, line by line: it may be large).
fn scan_log(path: &Path, needle: &str) -> (usize, Option<String>) {
    let Ok(file) = std::fs::File::open(path) else { return (0, None) };
    let mut count = 0;
    let mut first = None;
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if line.contains(needle) {
            count += 1;
            if first.is_none() {
                first = Some(line.chars().take(400).collect());
            }
        }
    }
    (count, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_log_file_inside_the_config_folder_does_not_feed_the_watcher() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let config =
        dir.write_config(&config("", &format!("{}{}", rs256_token("tok", "10m"), plain_route(upstream.port()))));
    let log_path = dir.path("sidecar.log");
    // Ready: the ready line names the bound addresses.
    let sidecar = SidecarProcess::start_logging_to(&config, "trace", &log_path).await;
    let (proxy, admin) = (sidecar.proxy, sidecar.admin);

    // Traffic: every request writes trace lines into the log file in the watched folder.
    let authority = format!("127.0.0.1:{}", upstream.port());
    for i in 0..10 {
        let response = exchange(proxy, &get_bytes(&format!("http://{authority}/r{i}"), &authority, &[AUTH])).await;
        assert_eq!(response.status, 200, "request {i}: {}", response.summary());
    }

    // The reload debounce is 150 ms: a watcher that reacts to the log's own writes reloads
    // (or logs its event) within that of each write, so the log never goes quiet. Once the
    // traffic is over, the log must stop growing: quiet for four debounce periods in a row.
    let quiet_for = Duration::from_millis(600);
    let mut last_len = file_len(&log_path);
    let mut last_change = Instant::now();
    let quiet = wait_until(Duration::from_secs(4), async || {
        let len = file_len(&log_path);
        if len != last_len {
            last_len = len;
            last_change = Instant::now();
        }
        last_change.elapsed() >= quiet_for
    })
    .await;
    if !quiet {
        let grown = file_len(&log_path);
        let (events, first) = scan_log(&log_path, "sidecar.log");
        panic!(
            "the log kept growing without traffic ({grown} bytes): {events} lines are the watcher reacting to the \
             log file itself, e.g. {}",
            first.unwrap_or_default()
        );
    }

    // No reload was attempted because of the log file.
    for needle in ["configuration reloaded", "reload rejected", "changed; this takes effect"] {
        let (count, first) = scan_log(&log_path, needle);
        assert_eq!(count, 0, "{count} {needle:?} lines, e.g. {}", first.unwrap_or_default());
    }
    let metrics = scrape(admin).await;
    assert_eq!(metrics.count("config_reloads_total", &[]), 0.0, "no reload happened");

    // Still serving, with the token.
    let before = upstream.count();
    let response = exchange(proxy, &get_bytes(&format!("http://{authority}/after"), &authority, &[AUTH])).await;
    assert_eq!(response.status, 200, "{}", response.summary());
    assert_eq!(upstream.count(), before + 1);
    assert!(upstream.last().and_then(|s| s.jwt().map(str::to_string)).is_some(), "token injected");
}
