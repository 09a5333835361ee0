//! Logs: capturing an in-process sidecar's `tracing` events, and searching a log for what must
//! never be in it (tokens and key material).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::jwt::find_jwts;

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

/// Lines of key files that must never appear in a log: every base64 body line of each PEM
/// file (and the whole content of non-PEM secrets), 16 characters or longer.
fn key_material_lines(files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for line in text.lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                out.push(line.to_string());
            }
        }
    }
    out
}

/// Whether `haystack` contains `needle` (memchr's memmem, fast even in a debug build: logs at
/// trace run to hundreds of megabytes).
pub fn contains(haystack: &str, needle: &str) -> bool {
    memchr::memmem::find(haystack.as_bytes(), needle.as_bytes()).is_some()
}

/// What in `log` must not be there: JWT-shaped strings and lines of key material from
/// `key_files` (one description each, with the offending log line).
pub fn log_leaks(log: &str, key_files: &[PathBuf]) -> Vec<String> {
    let mut jwts = find_jwts(log);
    jwts.sort();
    jwts.dedup();
    let mut leaks = Vec::new();
    for jwt in jwts {
        leaks.push(format!("a JWT in: {}", line_with(log, &jwt)));
    }
    for line in key_material_lines(key_files) {
        if contains(log, &line) {
            leaks.push(format!("key material in: {}", line_with(log, &line)));
        }
    }
    leaks
}

/// The first log line containing `needle`, for failure messages.
pub fn line_with(log: &str, needle: &str) -> String {
    let Some(at) = memchr::memmem::find(log.as_bytes(), needle.as_bytes()) else { return String::new() };
    let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = log[at..].find('\n').map_or(log.len(), |i| at + i);
    truncate(&log[start..end], 600)
}

/// At most `n` bytes of `s` (on a character boundary), with `...` when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}
