//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/seed-*` and `crash-*`) through the
//! same checks the fuzz targets run, on stable, so CI guards against regressions without
//! nightly or cargo-fuzz. The checks live in `fuzz/checks/<target>.rs`; see `fuzz/README.md`.
//!
//! Only files named `seed-*` or `crash-*` are replayed: a local `cargo fuzz run` adds its own
//! finds to the same folders (git-ignored), and those are not part of the suite.

use std::path::{Path, PathBuf};

mod substitute_stream {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/substitute_stream.rs"));
}

mod substitute_uri {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/substitute_uri.rs"));
}

mod substitute_syntax {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/substitute_syntax.rs"));
}

mod config_parse {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/config_parse.rs"));
}

mod route_match {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/route_match.rs"));
}

mod path_check {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/path_check.rs"));
}

mod connect_target {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/checks/connect_target.rs"));
}

/// The checked-in inputs of one target, sorted; panics if there are none (a renamed folder
/// must not turn the replay into a silent no-op).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            p.is_file() && (name.starts_with("seed-") || name.starts_with("crash-"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seed-* or crash-* files in {}", dir.display());
    files
}

/// Runs `check` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("fuzz check {target} failed on {}: {message}", path.display());
        }
    }
}

#[test]
fn substitute_stream_corpus() {
    replay("substitute_stream", substitute_stream::check);
}

#[test]
fn substitute_uri_corpus() {
    replay("substitute_uri", substitute_uri::check);
}

#[test]
fn substitute_syntax_corpus() {
    replay("substitute_syntax", substitute_syntax::check);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", config_parse::check);
}

#[test]
fn route_match_corpus() {
    replay("route_match", route_match::check);
}

#[test]
fn path_check_corpus() {
    replay("path_check", path_check::check);
}

#[test]
fn connect_target_corpus() {
    replay("connect_target", connect_target::check);
}
