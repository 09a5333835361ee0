//! Hot reload: watch the config file and key files, rebuild, swap in one store.
//!
//! The watcher observes the *folders* of the config and key files, because editors replace
//! files by write-and-rename and Kubernetes swaps a `..data` symlink: neither is seen by a
//! watch on the file itself. Any event there starts a short debounce, after which the files
//! are read again; if their bytes did not change nothing happens. A new config is checked
//! whole (every key loaded, every changed token signed) before it replaces the running one;
//! a bad one is logged with file:line:column and the old one keeps serving.

use std::collections::BTreeSet;
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
    // With a new set of files the digest is unknown: store one that never matches.
    snapshot.files_digest = if same_files { before } else { [0; 32] };
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

/// Watches the config's files and reloads on change and on SIGHUP, until SIGTERM/SIGINT.
pub async fn run_until_stopped(path: &Path, sidecar: &Sidecar) {
    tokio::select! {
        _ = watch(path, sidecar) => {}
        _ = wait_for_stop() => {}
    }
}

/// Reloads on file changes and SIGHUP, forever.
pub async fn watch(path: &Path, sidecar: &Sidecar) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (including our own) are not changes.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
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
    let mut hangup = hangup_signal();
    // A rejected config is reported once, not again on every unrelated event.
    let mut last_rejected: Option<[u8; 32]> = None;
    loop {
        // Keep watching every folder the current config depends on (key files may move).
        if let Some(w) = watcher.as_mut() {
            let wanted = folders(&sidecar.state().load().config.watched_files);
            for dir in wanted.difference(&watched.clone()) {
                match w.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        watched.insert(dir.clone());
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder"),
                }
            }
        }
        tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
                // Debounce: wait until the burst of events is over.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
            }
            _ = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading");
            }
        }
        let attempted = digest_files(&sidecar.state().load().config.watched_files);
        if last_rejected == Some(attempted) {
            continue;
        }
        last_rejected = reload(path, sidecar).await.is_err().then_some(attempted);
    }
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

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
