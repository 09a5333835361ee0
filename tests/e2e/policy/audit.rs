//! The audit log: one JSON line per request (and per CONNECT) with who, what, where, which
//! tokens by name, status, bytes each way, duration and the policy decision; never a token
//! value or a query value; to a file rotated by size, or to stdout.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{get, post};
use crate::support::config::{config, rs256_token, ConfigDir};
use crate::support::jwt::find_jwts;
use crate::support::raw::{Answering, RawConn};
use crate::support::sidecar::{Running, SidecarProcess};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const SECRET: &str = "audited-caller-0123456789abcdef";
const STATIC_VALUE: &str = "sk_live_static_value_never_logged";

/// The JSON lines of `path` once there are at least `n` (panics after a deadline).
async fn lines(path: &Path, n: usize) -> Vec<Value> {
    let mut found = Vec::new();
    let complete = wait_until(Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
        found.len() >= n
    })
    .await;
    assert!(complete, "expected {n} audit lines in {}, found {}: {found:#?}", path.display(), found.len());
    found
}

fn audited_config(upstream: &Upstream, audit: &str) -> String {
    config(
        "",
        &format!(
            "{audit}{}\n[tokens.static]\nkind = \"secret\"\nkey = \"{STATIC_VALUE}\"\n\n\
             [[callers]]\nname = \"fn-a\"\nkey = \"{SECRET}\"\n\n\
             [[routes]]\nname = \"api\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\npath_prefix = \"/api\"\n\
             tokens = [\"tok\", \"static\"]\n",
            rs256_token("tok", "10m"),
            upstream.port()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_line_with_names_never_values() {
    let upstream = Upstream::start().await;
    let run = Running::start(&audited_config(&upstream, "\n[audit]\nfile = \"audit.jsonl\"\n\n")).await;
    let log = run.dir.path("audit.jsonl");
    let caller = format!("Bearer {SECRET}");
    let me = ("proxy-authorization", caller.as_str());

    let url = upstream.url("/api/items?token={/tok}&page=2");
    get(run.proxy(), &url, &[me, ("authorization", "Bearer {/tok}"), ("x-key", "{/static}")])
        .await
        .assert_upstream_ok();
    let body = "x".repeat(100);
    post(run.proxy(), &upstream.url("/api/upload"), &[me], body.clone()).await.assert_upstream_ok();
    get(run.proxy(), &upstream.url("/elsewhere?q=secret-query-value"), &[me]).await.assert_upstream_ok();
    get(run.proxy(), &upstream.url("/api/x"), &[("authorization", "Bearer {/tok}")])
        .await
        .assert_error(407, "proxy_auth_required");

    // A blind tunnel's line is written when it closes, with the bytes it carried.
    // (To an unrouted port: a CONNECT to the routed one would be served as routed requests.)
    let unrouted = Upstream::start().await;
    let mut tunnel = RawConn::tcp(run.proxy()).await;
    let target = format!("127.0.0.1:{}", unrouted.port());
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {caller}\r\n\r\n");
    tunnel.send(connect.as_bytes()).await.expect("CONNECT");
    assert_eq!(tunnel.read_response(Answering::Connect).await.expect("CONNECT answer").status, 200);
    let (mut stream, _) = tunnel.into_parts();
    let inner = format!("GET /tunnelled HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(inner.as_bytes()).await.expect("write in the tunnel");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read in the tunnel");
    drop(stream);

    let found = lines(&log, 5).await;
    let text = std::fs::read_to_string(&log).expect("audit log");
    let jwts: Vec<String> =
        upstream.requests().iter().flat_map(|r| find_jwts(&format!("{:?} {}", r.headers, r.uri))).collect();
    assert!(!jwts.is_empty());
    for secret in jwts.iter().map(String::as_str).chain([STATIC_VALUE, SECRET, "secret-query-value", "eyJ"]) {
        assert!(!text.contains(secret), "the audit log holds {secret:?}:\n{text}");
    }

    let by_path = |path: &str| {
        found.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("no line for {path}: {found:#?}")).clone()
    };
    let first = by_path("/api/items?token=&page=");
    assert_eq!(first["caller"], "fn-a");
    assert_eq!(first["route"], "api");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["scheme"], "http");
    assert_eq!(first["host"], "127.0.0.1");
    assert_eq!(first["port"], upstream.port());
    let mut tokens: Vec<&str> = first["tokens"].as_array().expect("tokens").iter().filter_map(Value::as_str).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, ["static", "tok"]);
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_in"], 0);
    assert_eq!(first["bytes_out"], "upstream ok".len());
    assert_eq!(first["decision"], "allowed");
    assert!(first["error"].is_null());
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{first}");
    let time = first["time"].as_str().expect("time");
    assert!(humantime::parse_rfc3339(time).is_ok(), "RFC 3339 time: {time}");

    let upload = by_path("/api/upload");
    assert_eq!(upload["method"], "POST");
    assert_eq!(upload["bytes_in"], body.len());
    assert_eq!(upload["tokens"], serde_json::json!([]));

    let unrouted = by_path("/elsewhere?q=");
    assert!(unrouted["route"].is_null());
    assert_eq!(unrouted["caller"], "fn-a");

    let denied = by_path("/api/x");
    assert!(denied["caller"].is_null());
    assert_eq!(denied["status"], 407);
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["error"], "proxy_auth_required");
    assert_eq!(denied["tokens"], serde_json::json!([]), "a refused request carried no token");

    let tunnel = found.iter().find(|l| l["method"] == "CONNECT").expect("a CONNECT line");
    assert_eq!(tunnel["caller"], "fn-a");
    assert_eq!(tunnel["scheme"], "tunnel");
    assert_eq!(tunnel["bytes_in"], inner.len());
    assert_eq!(tunnel["bytes_out"], answer.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotates_by_size_and_keeps_max_files() {
    let upstream = Upstream::start().await;
    let audit = "\n[audit]\nfile = \"audit.jsonl\"\nmax_size = \"4KiB\"\nmax_files = 2\n\n";
    let run = Running::start(&audited_config(&upstream, audit)).await;
    let caller = format!("Bearer {SECRET}");
    let padding = "p".repeat(200);
    for i in 0..60 {
        let url = upstream.url(&format!("/api/{i:03}/{padding}"));
        get(run.proxy(), &url, &[("proxy-authorization", &caller)]).await.assert_upstream_ok();
    }
    let log = run.dir.path("audit.jsonl");
    let (one, two, three) =
        (run.dir.path("audit.jsonl.1"), run.dir.path("audit.jsonl.2"), run.dir.path("audit.jsonl.3"));
    // The newest line ends up in the current file.
    let last = format!("/api/059/{padding}");
    let written = wait_until(Duration::from_secs(10), async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().last().is_some_and(|l| l.contains(&last)))
    })
    .await;
    assert!(written, "the last line was not written to {}", log.display());
    assert!(one.exists() && two.exists(), "two rotated files are kept");
    assert!(!three.exists(), "max_files = 2 keeps no third");
    for file in [&log, &one, &two] {
        let text = std::fs::read_to_string(file).expect("read");
        assert!(text.len() <= 4096, "{} is {} bytes, over max_size", file.display(), text.len());
        for line in text.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("a cut line ({e}) in {}", file.display()));
        }
    }
    // Files are rotated in order: .2 is older than .1, which is older than the current one.
    let first_path = |file: &Path| -> String {
        let text = std::fs::read_to_string(file).expect("read");
        let line: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        line["path"].as_str().unwrap_or_default().to_string()
    };
    assert!(first_path(&two) < first_path(&one) && first_path(&one) < first_path(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_lines_go_to_stdout_and_the_log_stays_on_stderr() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::empty();
    let path = dir.write_config(&audited_config(&upstream, "\n[audit]\n\n"));
    let stdout = dir.path("stdout.txt");
    let sidecar = SidecarProcess::start_with_stdout(&path, "info", &stdout).await;
    let caller = format!("Bearer {SECRET}");
    get(sidecar.proxy, &upstream.url("/api/stdout"), &[("proxy-authorization", &caller)]).await.assert_upstream_ok();
    let found = lines(&stdout, 1).await;
    assert_eq!(found.len(), 1, "only audit lines on stdout: {found:#?}");
    assert_eq!(found[0]["path"], "/api/stdout");
    assert_eq!(found[0]["caller"], "fn-a");
}
