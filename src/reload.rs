//! Waiting for signals (reload on change arrives with the reload work).

use std::path::Path;

use crate::server::Sidecar;

/// Returns when SIGTERM or SIGINT arrives.
pub async fn run_until_stopped(_path: &Path, _sidecar: &Sidecar) {
    wait_for_stop().await;
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
