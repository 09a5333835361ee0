// Shared by fuzz/fuzz_targets/config_parse.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// `Config::from_text` on arbitrary text never panics, and its errors render (line/column
// lookup included) without panicking either.
//
// The config's folder does not exist, so relative key and CA paths just fail to read. Inputs
// that could name a device or a /proc file by absolute path (`/dev/zero` would be read
// forever) are skipped, as are TOML escapes that could spell such a path (\u, \U, \x).
//
// Input: the config text (invalid UTF-8 is replaced, as a lossy reader would).

use std::path::Path;

use token_sidecar::config::Config;

/// A folder that does not exist, so `../` cannot climb out of it either.
const CONFIG_PATH: &str = "/nonexistent-token-sidecar-fuzz/sidecar.toml";

fn could_read_a_special_file(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "\\u", "\\U", "\\x"].iter().any(|s| text.contains(s))
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if could_read_a_special_file(&text) {
        return;
    }
    match Config::from_text(Path::new(CONFIG_PATH), &text) {
        Ok(config) => {
            // Everything the loader promises about a config it accepts.
            assert!(!config.watched_files.is_empty(), "the config file itself is watched");
            for route in &config.routes {
                assert!(route.path_prefix.starts_with('/'), "route {:?}: prefix {:?}", route.name, route.path_prefix);
                for token in route.bindings.values() {
                    assert!(config.tokens.contains_key(token), "route {:?} binds unknown token {token:?}", route.name);
                }
            }
            let _ = format!("{config:?}");
        }
        Err(errors) => {
            let rendered = errors.to_string();
            assert!(!rendered.is_empty(), "an error without a message");
            let _ = format!("{errors:?}");
        }
    }
}
