//! The operations test harness: a recording upstream, a proxy client that sends absolute-form
//! requests, JWT decoding, a Prometheus text parser, config files in temp folders, and the
//! `token-sidecar` binary as a child process whose JSON log is captured.
//!
//! Timing is never guessed: every wait is a [`wait_until`] poll against a deadline.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Polls `cond` every 10 ms until it holds or `deadline` has passed; returns whether it held.
pub async fn wait_until(deadline: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The repository root, where `examples/keys` lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A demo key or secret from `examples/keys`.
pub fn example_key(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/keys").join(name)).expect("example key")
}

// ---------------------------------------------------------------------------------------------
// Config folders

/// A temp folder with the demo keys copied into `keys/`, holding one config file.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("keys dir");
        for entry in std::fs::read_dir(repo_root().join("examples/keys")).expect("examples/keys") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), keys.join(entry.file_name())).expect("copy key");
        }
        ConfigDir { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sidecar.toml` in the folder.
    pub fn config_path(&self) -> PathBuf {
        self.path("sidecar.toml")
    }

    /// Writes `sidecar.toml` in place (truncate and write, as `echo > file` does).
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.config_path();
        write_in_place(&path, text.as_bytes());
        path
    }
}

/// Truncates and rewrites a file where it is.
pub fn write_in_place(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a temp file beside `path` and renames it over `path`, as editors and tools do.
pub fn write_by_rename(path: &Path, contents: &[u8]) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename over {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Recording upstream

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request arrived.
    pub at: Instant,
    pub method: String,
    /// The request target as the upstream received it (origin-form).
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bearer credential of the Authorization header, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer "))
    }

    /// The bearer credential, if it is a JWT (not a placeholder left as text).
    pub fn jwt(&self) -> Option<&str> {
        self.bearer().filter(|t| t.split('.').count() == 3 && !t.contains('{'))
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that records every request and answers 200 "upstream ok",
/// optionally after a delay.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::with_delay(Duration::ZERO).await
    }

    /// An upstream that records each request on arrival, then waits `delay` before answering.
    pub async fn with_delay(delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let at = Instant::now();
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            record.lock().unwrap().push(Seen {
                                at,
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"upstream ok",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    /// The first request that arrived at or after `from` and satisfies `pred`.
    pub fn first_since(&self, from: Instant, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        self.seen.lock().unwrap().iter().find(|s| s.at >= from && pred(s)).cloned()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on (a port bound and released).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The code of an error the sidecar generated itself (`x-token-sidecar-error`).
    pub fn sidecar_error(&self) -> Option<&str> {
        self.headers.get(token_sidecar::error::ERROR_HEADER).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy, sending absolute-form requests
/// (as a client with `HTTP_PROXY` set does). Reconnects if the connection was closed.
pub struct ProxyClient {
    proxy: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl ProxyClient {
    pub fn new(proxy: SocketAddr) -> ProxyClient {
        ProxyClient { proxy, sender: None }
    }

    /// Sends `method url` with the given headers and body; `url` is absolute (`http://h:p/x`).
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut builder = Request::builder().method(method).uri(uri).header(http::header::HOST, host);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| e.to_string())?;
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !reused {
            self.sender = Some(handshake(self.proxy).await?);
        }
        let sender = self.sender.as_mut().expect("connected");
        sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let response = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("request failed: {e}"));
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }

    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        self.send("GET", url, headers, "").await
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request through the proxy on a fresh connection; panics if the exchange fails.
pub async fn proxy_get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    ProxyClient::new(proxy).get(url, headers).await.unwrap_or_else(|e| panic!("GET {url} via {proxy}: {e}"))
}

/// GET on the admin listener (origin-form).
pub async fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    let mut sender = handshake(admin).await.unwrap_or_else(|e| panic!("admin {admin}: {e}"));
    let req = Request::builder()
        .uri(path)
        .header(http::header::HOST, admin.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(req).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("admin body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// `/metrics`, parsed (and checked to be valid exposition text).
pub async fn scrape(admin: SocketAddr) -> Metrics {
    let reply = admin_get(admin, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    Metrics::parse(&reply.text()).unwrap_or_else(|e| panic!("/metrics is not valid exposition text: {e}"))
}

// ---------------------------------------------------------------------------------------------
// JWTs

/// The header and claims of a JWT, without checking the signature.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "a JWS compact token has three segments: {token}");
    let json = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url segment")).expect("JSON segment")
    };
    (json(segments[0]), json(segments[1]))
}

pub fn claims(token: &str) -> Value {
    jwt_parts(token).1
}

/// Verifies signature and `exp` (audience not checked) and returns the claims.
pub fn verify(token: &str, key: &jsonwebtoken::DecodingKey, alg: jsonwebtoken::Algorithm) -> Result<Value, String> {
    let mut v = jsonwebtoken::Validation::new(alg);
    v.validate_aud = false;
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, key, &v).map(|d| d.claims).map_err(|e| format!("{e:?}"))
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// Metric family name -> type, from `# TYPE` lines.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses Prometheus text format 0.0.4 strictly: every non-comment line is
    /// `name{labels} value [timestamp]` or `name value [timestamp]`, `# TYPE` lines name a
    /// valid type, and every sample belongs to a declared family.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |msg: String| format!("line {}: {msg}: {line:?}", i + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                match words.first() {
                    Some(&"TYPE") => {
                        let [_, name, kind] = words[..] else { return Err(at("malformed # TYPE".into())) };
                        if !valid_metric_name(name) {
                            return Err(at(format!("invalid metric name {name:?}")));
                        }
                        if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                            return Err(at(format!("invalid type {kind:?}")));
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(at(format!("second # TYPE for {name}")));
                        }
                    }
                    Some(&"HELP") if words.get(1).is_none_or(|n| !valid_metric_name(n)) => {
                        return Err(at("malformed # HELP".into()));
                    }
                    _ => {}
                }
                continue;
            }
            samples.push(parse_sample(line).map_err(at)?);
        }
        for s in &samples {
            let family = family_of(&s.name, &types);
            let Some(kind) = types.get(family) else {
                return Err(format!("sample {} has no # TYPE line", s.name));
            };
            if kind == "histogram" && s.name.ends_with("_bucket") && !s.labels.contains_key("le") {
                return Err(format!("histogram bucket {} without an le label", s.name));
            }
        }
        Ok(Metrics { samples, types })
    }

    /// The sum of every sample named `name` whose labels include all of `labels`
    /// (`None` when there is no such sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Metrics::value`], with absent counted as zero (for deltas).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .collect()
    }
}

fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|k| k == "histogram" || k == "summary") {
                return base;
            }
        }
    }
    name
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close;
        loop {
            let Some(&(start, c)) = chars.peek() else { return Err("unterminated label set".into()) };
            if c == '}' {
                close = start;
                break;
            }
            let eq = inner[start..].find('=').ok_or("label without '='")? + start;
            let key = &inner[start..eq];
            let key_ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(format!("invalid label name {key:?}"));
            }
            if inner.as_bytes().get(eq + 1) != Some(&b'"') {
                return Err(format!("label {key} value is not quoted"));
            }
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} given twice"));
            }
            if chars.peek().is_some_and(|&(_, c)| c == ',') {
                chars.next();
            }
        }
        rest = &inner[close + 1..];
    }
    let mut fields = rest.split_whitespace();
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text after the value".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

// ---------------------------------------------------------------------------------------------
// The binary as a child process

/// `token-sidecar run --config F --log-format json` as a child, with its stderr captured.
/// Killed when dropped.
pub struct SidecarProcess {
    child: Child,
    pub pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

pub const SIGHUP: u32 = 1;
pub const SIGTERM: u32 = 15;

impl SidecarProcess {
    /// Starts the binary with `--log LOG` and waits until it is ready and its SIGHUP and
    /// SIGTERM handlers are installed (so a signal sent afterwards is never fatal by default).
    pub async fn start(config: &Path, log: &str) -> SidecarProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_token-sidecar"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "--log", log])
            .current_dir(config.parent().expect("config folder"))
            .env_remove("TOKEN_SIDECAR_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start token-sidecar");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut process = SidecarProcess {
            child,
            pid,
            lines,
            reader: Some(reader),
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let ready =
            wait_until(Duration::from_secs(20), async || process.find_log("token-sidecar ready").is_some()).await;
        if !ready {
            panic!("token-sidecar did not become ready; log:\n{}", process.log_text());
        }
        let line = process.find_log("token-sidecar ready").expect("ready line");
        let addr = |field: &str| -> SocketAddr {
            line["fields"][field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {field} in the ready line: {line}"))
        };
        process.proxy = addr("proxy_addr");
        process.admin = addr("admin_addr");
        let handlers =
            wait_until(Duration::from_secs(10), async || process.catches(SIGHUP) && process.catches(SIGTERM)).await;
        assert!(handlers, "token-sidecar did not install its SIGHUP/SIGTERM handlers");
        process
    }

    /// Every line written to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// Every log line, parsed (each must be one JSON object).
    pub fn json_log(&self) -> Vec<Value> {
        self.log()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The first JSON log line whose message contains `text`.
    pub fn find_log(&self, text: &str) -> Option<Value> {
        self.json_log().into_iter().find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(text)))
    }

    /// Messages of every log line at `level` ("ERROR", "WARN", ...).
    pub fn messages(&self, level: &str) -> Vec<String> {
        self.json_log()
            .iter()
            .filter(|l| l["level"] == level)
            .filter_map(|l| l["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Sends a signal with the `kill` command (`kill -HUP PID`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Whether the process has a handler installed for signal `signo` (from /proc).
    pub fn catches(&self, signo: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else { return false };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(deadline, async || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        })
        .await;
        status
    }

    /// Stops the process and returns everything it logged.
    pub fn stop(mut self) -> String {
        self.kill();
        self.log_text()
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// In-process sidecars

/// Runs `body` while the sidecar watches `path` for changes. The watcher is polled first, so
/// its folder watches are in place before `body` makes its first change.
pub async fn with_watcher<T>(
    sidecar: &token_sidecar::server::Sidecar,
    path: &Path,
    body: impl std::future::Future<Output = T>,
) -> T {
    tokio::select! {
        biased;
        _ = sidecar.watch_config(path) => panic!("watch_config returned"),
        out = body => out,
    }
}

/// Loads a config file that must be valid and starts a sidecar from it.
pub async fn start_sidecar(path: &Path) -> token_sidecar::server::Sidecar {
    let config = token_sidecar::config::Config::load(path).unwrap_or_else(|e| panic!("config should load: {e}"));
    token_sidecar::server::Sidecar::start(config).await.unwrap_or_else(|e| panic!("sidecar should start: {e}"))
}

/// A minter that signs its first token with a real definition and fails every time after,
/// so the token expires (after the definition's ttl) and is never replaced.
pub struct FailAfterFirst {
    pub inner: token_sidecar::tokens::TokenDefinition,
    pub attempts: std::sync::atomic::AtomicU32,
}

impl FailAfterFirst {
    pub fn new(inner: token_sidecar::tokens::TokenDefinition) -> Arc<FailAfterFirst> {
        Arc::new(FailAfterFirst { inner, attempts: std::sync::atomic::AtomicU32::new(0) })
    }
}

impl token_sidecar::store::Mint for FailAfterFirst {
    fn mint(
        &self,
        now: std::time::SystemTime,
    ) -> Result<token_sidecar::tokens::MintedToken, token_sidecar::tokens::MintError> {
        if self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            self.inner.mint(now)
        } else {
            Err(token_sidecar::tokens::MintError::Sign("injected test failure".into()))
        }
    }

    fn refresh_before(&self) -> Duration {
        self.inner.refresh_before
    }
}

/// Every JWT-shaped string (`eyJ...` in three base64url segments) in `text`.
pub fn find_jwts(text: &str) -> Vec<String> {
    let is_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.split(|c: char| !is_char(c))
        .filter(|w| w.starts_with("eyJ") && w.split('.').count() == 3 && w.split('.').all(|s| !s.is_empty()))
        .map(str::to_string)
        .collect()
}

/// Every JWT a recording upstream received, in headers, targets or bodies.
pub fn jwts_received(upstream: &Upstream) -> Vec<String> {
    let mut out = Vec::new();
    for s in upstream.all() {
        for v in s.headers.values() {
            out.extend(find_jwts(&String::from_utf8_lossy(v.as_bytes())));
        }
        out.extend(find_jwts(&s.uri));
        out.extend(find_jwts(&String::from_utf8_lossy(&s.body)));
    }
    out.sort();
    out.dedup();
    out
}

/// A log buffer for `tracing` events of the current thread (use a current-thread runtime so
/// every task of an in-process sidecar logs into it).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures every event at TRACE and above on this thread until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
