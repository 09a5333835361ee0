//! Start-up and shutdown (stub).
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

/// Loads the config and runs the sidecar until it is told to stop.
pub fn run_blocking(path: &Path) -> ExitCode {
    let config = match crate::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, t) in &config.tokens {
        match t.mint(SystemTime::now()) {
            Ok(m) => tracing::info!(token = %name, expires_at = ?m.expires_at, "minted"),
            Err(e) => tracing::error!(token = %name, error = %e, "mint failed"),
        }
    }
    ExitCode::SUCCESS
}
