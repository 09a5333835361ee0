//! Log set-up. Nothing in this program logs key material or token values; see DESIGN.md.
//!
//! Libraries are another matter: hyper, hyper-util and h2 log request targets and header
//! frames at debug and trace, and hyper-util's client warns with the path of a request it
//! rewrites. After substitution those hold tokens, so their events are dropped at every
//! level, whatever `--log` asks for. Other libraries log their warnings and errors only.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// Library targets that can print a request (target, headers) after substitution.
const SILENCED: [&str; 4] = ["hyper", "hyper_util", "h2", "hyper_rustls"];

/// Whether an event may be written, whatever the user's filter says.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    if is_under(target, "token_sidecar") {
        return true;
    }
    if SILENCED.iter().any(|lib| is_under(target, lib)) {
        return false;
    }
    *meta.level() <= Level::WARN
}

fn is_under(target: &str, module: &str) -> bool {
    target.strip_prefix(module).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Installs the global subscriber; later calls (as in tests) are ignored.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter).with_filter(filter_fn(allowed))).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_targets_are_matched_by_module() {
        assert!(is_under("hyper_util::client::legacy", "hyper_util"));
        assert!(is_under("h2", "h2"));
        assert!(!is_under("h2o", "h2"));
        assert!(!is_under("hyperx", "hyper"));
    }
}
