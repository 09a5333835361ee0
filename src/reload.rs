//! Hot reload: watch the config file and key files, rebuild, swap in one store.
//!
//! The watcher observes the *folders* of the config and key files, because editors replace
//! files by write-and-rename and Kubernetes swaps a `..data` symlink: neither is seen by a
//! watch on the file itself. Any event there starts a short debounce, after which the files
//! are read again; if their bytes did not change nothing happens. A new config is checked
//! whole (every key loaded, every changed token signed) before it replaces the running one;
//! a bad one is logged with file:line:column and the old one keeps serving.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, LoadError};
use crate::server::Sidecar;
use crate::snapshot::Snapshot;

/// Quiet time after the last file event before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What one reload attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is serving.
    Applied,
    /// The files are byte-for-byte what is already running.
    Unchanged,
}

/// Why a reload was rejected; the old config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Build(#[from] crate::snapshot::BuildError),
}

/// Reloads the sidecar from `path` once.
pub async fn reload(path: &Path, sidecar: &Sidecar) -> Result<ReloadOutcome, ReloadError> {
    let result = try_reload(path, sidecar).await;
    let label = match &result {
        Ok(ReloadOutcome::Applied) => "ok",
        Ok(ReloadOutcome::Unchanged) => return result,
        Err(_) => "error",
    };
    metrics::counter!("config_reloads_total", "result" => label).increment(1);
    match &result {
        Ok(_) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload rejected, previous configuration still serving: {line}");
            }
        }
    }
    result
}

async fn try_reload(path: &Path, sidecar: &Sidecar) -> Result<ReloadOutcome, ReloadError> {
    let current = sidecar.state().load_full();
    // Digest taken before reading: if a file changes after we read it, the next event sees a
    // digest different from the one stored and reloads again.
    let before = digest_files(&current.config.watched_files);
    if before == current.files_digest {
        return Ok(ReloadOutcome::Unchanged);
    }
    let config = Config::load(path)?;
    for change in sidecar.listener_changes(&config) {
        tracing::warn!("{change} changed; this takes effect only after a restart");
    }
    let same_files = config.watched_files == current.config.watched_files;
    let mut snapshot = Snapshot::build(config, Some(&current)).await?;
    // With the same files, the digest taken before reading (a change made while reading is
    // then seen by the next event). With a new set of files, the digest the build took of
    // them: a reset digest would make the next unrelated event reload again.
    if same_files {
        snapshot.files_digest = before;
    }
    sidecar.state().store(Arc::new(snapshot));
    Ok(ReloadOutcome::Applied)
}

/// A digest of the contents of every file a config depends on (missing files hash as such).
pub fn digest_files(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            Err(_) => ctx.update(b"\xff missing"),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Signal handlers, installed before the sidecar reports ready so that an early SIGHUP or
/// SIGTERM is handled instead of killing the process.
pub struct Signals {
    hangup: Hangup,
    stop: Stop,
}

impl Signals {
    pub fn install() -> Signals {
        Signals { hangup: hangup_signal(), stop: stop_signal() }
    }
}

/// Watches the config's files and reloads on change and on SIGHUP, until SIGTERM/SIGINT.
pub async fn run_until_stopped(path: &Path, sidecar: &Sidecar, signals: Signals) {
    let Signals { hangup, stop } = signals;
    tokio::select! {
        _ = watch_with(path, sidecar, hangup) => {}
        _ = wait_for_stop(stop) => {}
    }
}

/// Reloads on file changes and SIGHUP, forever.
pub async fn watch(path: &Path, sidecar: &Sidecar) {
    watch_with(path, sidecar, hangup_signal()).await;
}

async fn watch_with(path: &Path, sidecar: &Sidecar, mut hangup: Hangup) {
    let (tx, mut events) = mpsc::unbounded_channel();
    // Names of the files that matter; events about anything else in the watched folders (a
    // log file the sidecar itself writes there, say) are ignored.
    let relevant: Arc<std::sync::Mutex<BTreeSet<OsString>>> = Arc::default();
    let filter = Arc::clone(&relevant);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (including our own) are not changes.
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant =
            event.paths.is_empty() || filter.lock().is_ok_and(|names| event.paths.iter().any(|p| concerns(p, &names)));
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP instead");
            None
        }
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    // Digest of the files of a config that was rejected, so unrelated events do not report it
    // again; any change to those files (the config or a key it names) retries.
    let mut last_rejected: Option<[u8; 32]> = None;
    loop {
        // Watch the folders of the running config's files and of the files the config on disk
        // names (a new key file in a new folder must be seen too).
        if let Some(w) = watcher.as_mut() {
            let mut files = sidecar.state().load().config.watched_files.clone();
            files.extend(files_named_by(path));
            if let Ok(mut names) = relevant.lock() {
                *names = files.iter().filter_map(|f| f.file_name().map(OsString::from)).collect();
            }
            let wanted = folders(&files);
            for dir in wanted.difference(&watched.clone()) {
                match w.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        watched.insert(dir.clone());
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder"),
                }
            }
        }
        let forced = tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
                // Debounce: wait until the burst of events is over.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                false
            }
            _ = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading");
                true
            }
        };
        let attempted = digest_files(&files_named_by(path));
        if !forced && last_rejected == Some(attempted) {
            continue;
        }
        last_rejected = reload(path, sidecar).await.is_err().then_some(attempted);
    }
}

/// Whether a file event about `path` could change the config: it names one of the config's
/// files, or it is part of a Kubernetes atomic update (`..data` and `..TIMESTAMP` entries,
/// swapped under the files' symlinks).
fn concerns(path: &Path, names: &BTreeSet<OsString>) -> bool {
    path.file_name().is_some_and(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
}

/// The config file and every key file its text names, read leniently (the config may be
/// invalid): the files whose change could make a rejected config acceptable.
fn files_named_by(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let base = path.parent().unwrap_or(Path::new(""));
    let table = std::fs::read_to_string(path).ok().and_then(|text| text.parse::<toml::Table>().ok());
    if let Some(tokens) = table.as_ref().and_then(|t| t.get("tokens")).and_then(toml::Value::as_table) {
        for token in tokens.values() {
            if let Some(file) = token.get("key_file").and_then(toml::Value::as_str) {
                files.push(base.join(file));
            }
        }
    }
    files
}

fn folders(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup.as_mut() {
        signal.recv().await;
        return;
    }
    let _ = hangup;
    std::future::pending::<()>().await;
}

#[cfg(unix)]
type Stop = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Stop = Option<()>;

fn stop_signal() -> Stop {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Returns on SIGTERM or SIGINT.
async fn wait_for_stop(mut stop: Stop) {
    #[cfg(unix)]
    if let Some(term) = stop.as_mut() {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = &mut stop;
    let _ = tokio::signal::ctrl_c().await;
}
