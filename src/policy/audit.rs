//! The audit log: one JSON line per request, to a file (rotated by size) or to stdout.
//!
//! A line says who ([`Entry::caller`]) sent what where (method, scheme, host, port, path
//! with query values dropped), through which route with which tokens (their names, never
//! their values), what happened (status, the policy decision and the sidecar's error code),
//! how many body bytes went each way and how long it took. It is written when the response
//! has been sent, so the byte counts and duration are final.
//!
//! The request path never waits for the log: lines go through a bounded queue to a writer
//! thread, and a line that finds the queue full is dropped and counted
//! (`audit_lines_dropped_total`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::config::AuditSettings;
use crate::proxy::{BoxError, ProxyBody};

/// A running audit log: the queue to its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    settings: AuditSettings,
    queue: SyncSender<String>,
}

impl AuditLog {
    /// Opens the file (or takes stdout) and starts the writer.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub fn start(settings: &AuditSettings) -> Result<Arc<AuditLog>, String> {
        let sink = match &settings.file {
            None => Sink::Stdout,
            Some(path) => {
                let file = open(path).map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File { path: path.clone(), out: Some(BufWriter::new(file)), size }
            }
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(settings.buffer);
        let writer = Writer { sink, max_size: settings.max_size, max_files: settings.max_files };
        std::thread::Builder::new()
            .name("sidecar-audit".into())
            .spawn(move || writer.run(lines))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Arc::new(AuditLog { settings: settings.clone(), queue }))
    }

    /// The settings it was started with (a reload with the same keeps it).
    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// Queues one line, or drops it when the writer is behind.
    pub fn write(&self, mut line: String) {
        line.push('\n');
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("audit_lines_dropped_total").increment(1);
            }
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

enum Sink {
    Stdout,
    File { path: PathBuf, out: Option<BufWriter<File>>, size: u64 },
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    max_size: u64,
    max_files: u32,
}

impl Writer {
    /// Writes lines until every sender is gone, flushing whenever the queue runs dry.
    fn run(mut self, lines: Receiver<String>) {
        while let Ok(line) = lines.recv() {
            self.write(&line);
            loop {
                match lines.try_recv() {
                    Ok(line) => self.write(&line),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }

    /// Writes one line (ending in a newline) with one `write_all`, so it stays in one piece
    /// even beside another writer appending to the same file.
    fn write(&mut self, line: &str) {
        let written = match &mut self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File { path, out, size } => {
                let len = line.len() as u64;
                if *size > 0 && *size + len > self.max_size {
                    if let Some(mut full) = out.take() {
                        let _ = full.flush();
                    }
                    rotate(path, self.max_files);
                    *size = 0;
                }
                if out.is_none() {
                    *out = open(path).ok().map(BufWriter::new);
                    *size = out.as_ref().and_then(|o| o.get_ref().metadata().ok()).map_or(0, |m| m.len());
                }
                match out {
                    Some(file) => {
                        let result = file.write_all(line.as_bytes());
                        if result.is_ok() {
                            *size += len;
                        } else {
                            // Reopened for the next line (the file may have been removed).
                            *out = None;
                        }
                        result
                    }
                    None => Err(std::io::Error::other("the audit log cannot be opened")),
                }
            }
        };
        if written.is_err() {
            metrics::counter!("audit_write_errors_total").increment(1);
        }
    }

    fn flush(&mut self) {
        let flushed = match &mut self.sink {
            Sink::Stdout => std::io::stdout().lock().flush(),
            Sink::File { out: Some(file), .. } => file.flush(),
            Sink::File { out: None, .. } => Ok(()),
        };
        if flushed.is_err() {
            metrics::counter!("audit_write_errors_total").increment(1);
        }
    }
}

/// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2` ... up to `FILE.max_files`; with no
/// rotated files kept, `FILE` is simply started again.
fn rotate(path: &Path, max_files: u32) {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if max_files == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = std::fs::remove_file(numbered(max_files));
    for n in (1..max_files).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// What the sidecar decided about a request, for the `decision` field.
pub fn decision(error: Option<&str>) -> &'static str {
    match error {
        Some(
            "policy_denied"
            | "proxy_auth_required"
            | "placeholder_not_allowed_here"
            | "placeholder_not_allowed"
            | "rate_limited"
            | "unmatched_denied",
        ) => "denied",
        _ => "allowed",
    }
}

/// `path?a=1&b=2` as `path?a=&b=`: the names of query parameters stay, their values go.
pub fn without_query_values(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else { return path_and_query.to_string() };
    let names: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}="),
            None => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", names.join("&"))
}

/// One request's line, filled in as the request goes.
#[derive(Default)]
pub struct Entry {
    pub time: Option<SystemTime>,
    pub caller: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub method: String,
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// Path and query as the client wrote them (placeholders, never values), query values dropped.
    pub path: String,
    /// The request's tokens: the names of those written into it are logged.
    pub tokens: Option<Arc<crate::snapshot::RequestTokens>>,
    pub status: u16,
    /// Body bytes sent to the upstream, counted as they leave.
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: u64,
    pub error: Option<&'static str>,
}

impl Entry {
    /// A line for a request that started now.
    pub fn started(method: &str) -> Entry {
        Entry { time: Some(SystemTime::now()), method: method.to_string(), ..Entry::default() }
    }

    /// Records where the request goes (its path as the client wrote it, query values dropped).
    pub fn target(&mut self, target: &crate::proxy::target::Target) {
        self.scheme = match target.scheme {
            crate::routes::Scheme::Http => "http",
            crate::routes::Scheme::Https => "https",
        };
        self.host = target.host.clone();
        self.port = target.port;
        self.path = without_query_values(target.path_and_query.as_str());
    }

    /// A line for a CONNECT to `target`.
    pub fn connect(
        caller: Option<&super::callers::Caller>,
        target: &crate::proxy::target::HostPort,
        scheme: &'static str,
    ) -> Entry {
        Entry {
            time: Some(SystemTime::now()),
            caller: caller.map(|c| Arc::clone(&c.name)),
            method: "CONNECT".to_string(),
            scheme,
            host: target.host.clone(),
            port: target.port,
            ..Entry::default()
        }
    }

    /// The JSON line, `duration` after the request started.
    pub fn line(&self, duration: std::time::Duration) -> String {
        let time = self.time.unwrap_or_else(SystemTime::now);
        serde_json::json!({
            "time": humantime::format_rfc3339_millis(time).to_string(),
            "caller": self.caller.as_deref(),
            "route": self.route.as_deref(),
            "method": self.method,
            "scheme": self.scheme,
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "tokens": self.tokens.as_ref().map(|t| t.used_tokens()).unwrap_or_default(),
            "status": self.status,
            "bytes_in": self.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.bytes_out,
            "duration_ms": (duration.as_secs_f64() * 1e6).round() / 1e3,
            "decision": decision(self.error),
            "error": self.error,
        })
        .to_string()
    }
}

/// The line of a blind tunnel, written when it closes.
pub struct TunnelLine {
    entry: Entry,
    started: Instant,
    log: Arc<AuditLog>,
}

impl TunnelLine {
    pub fn new(entry: Entry, log: Arc<AuditLog>) -> TunnelLine {
        TunnelLine { entry, started: Instant::now(), log }
    }

    /// Writes the line with the bytes copied each way (client to upstream first).
    pub fn finish(mut self, copied: Option<(u64, u64)>) {
        let (up, down) = copied.unwrap_or((0, 0));
        self.entry.bytes_in.store(up, Ordering::Relaxed);
        self.entry.bytes_out = down;
        self.log.write(self.entry.line(self.started.elapsed()));
    }
}

/// A request body that counts what the upstream reads of it.
pub fn count_request(body: ProxyBody, counter: &Arc<AtomicU64>) -> ProxyBody {
    Counted { inner: body, counter: Arc::clone(counter) }.boxed_unsync()
}

pin_project_lite::pin_project! {
    struct Counted {
        #[pin]
        inner: ProxyBody,
        counter: Arc<AtomicU64>,
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.counter.fetch_add(data.map_or(0, |d| d.len() as u64), Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that writes its request's audit line once it is done (sent, or dropped
/// by a client that went away).
pub fn audited(body: ProxyBody, entry: Entry, started: Instant, log: Arc<AuditLog>) -> ProxyBody {
    Audited { inner: body, pending: Some(Pending { entry, started, log }) }.boxed_unsync()
}

struct Pending {
    entry: Entry,
    started: Instant,
    log: Arc<AuditLog>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.log.write(self.entry.line(self.started.elapsed()));
    }
}

pin_project_lite::pin_project! {
    struct Audited {
        #[pin]
        inner: ProxyBody,
        pending: Option<Pending>,
    }
}

impl Body for Audited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(p)) = (f.data_ref(), this.pending.as_mut()) {
                    p.entry.bytes_out += data.len() as u64;
                }
            }
            // Done: the line is written now rather than when hyper drops the body.
            None | Some(Err(_)) => drop(this.pending.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_dropped_and_names_kept() {
        assert_eq!(without_query_values("/v1/x"), "/v1/x");
        assert_eq!(without_query_values("/v1/x?token=abc&page=2&flag"), "/v1/x?token=&page=&flag");
        assert_eq!(without_query_values("/?a=b=c&&x="), "/?a=&&x=");
    }

    #[test]
    fn policy_codes_are_denials() {
        assert_eq!(decision(None), "allowed");
        assert_eq!(decision(Some("upstream_timeout")), "allowed");
        for code in ["policy_denied", "proxy_auth_required", "placeholder_not_allowed_here", "rate_limited"] {
            assert_eq!(decision(Some(code)), "denied", "{code}");
        }
    }

    #[test]
    fn a_full_queue_drops_lines_instead_of_waiting() {
        // A writer that has stalled (a full disk, a blocked pipe): its queue is never read.
        let (queue, lines) = std::sync::mpsc::sync_channel(2);
        let settings = AuditSettings { file: None, max_size: 4096, max_files: 0, buffer: 2 };
        let log = AuditLog { settings, queue };
        let started = Instant::now();
        for i in 0..10_000 {
            log.write(format!("line {i}"));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "writing waited for the writer");
        let queued: Vec<String> = lines.try_iter().collect();
        assert_eq!(queued, ["line 0\n", "line 1\n"], "the first lines are kept, the rest dropped");
    }

    #[test]
    fn files_rotate_by_size_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let settings = AuditSettings { file: Some(path.clone()), max_size: 4096, max_files: 2, buffer: 100 };
        let file = open(&path).unwrap();
        let mut writer = Writer {
            sink: Sink::File { path: path.clone(), out: Some(BufWriter::new(file)), size: 0 },
            max_size: settings.max_size,
            max_files: settings.max_files,
        };
        let line = "x".repeat(999);
        for i in 0..13 {
            writer.write(&format!("{i:04}{}\n", &line[4..]));
        }
        writer.flush();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        // Four 1000-byte lines fill 4096 bytes: 13 lines are files of 4, 4, 4 and 1 lines,
        // and only the newest two full ones are kept.
        assert_eq!(read(&path).lines().count(), 1);
        assert!(read(&path).starts_with("0012"));
        assert!(read(&numbered(1)).starts_with("0008"));
        assert!(read(&numbered(2)).starts_with("0004"));
        assert!(!numbered(3).exists());
        for p in [path.clone(), numbered(1), numbered(2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096);
        }
    }
}
