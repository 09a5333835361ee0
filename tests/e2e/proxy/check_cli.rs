//! `token-sidecar check` reports every problem of a config in one run: a misspelled key, a
//! value of the wrong type, a key file that is not there and a route naming an unknown token,
//! each as `FILE:LINE:COLUMN: KEY: MESSAGE`, and exits non-zero.

use crate::support::client::{stderr, stdout};
use crate::support::config::ConfigDir;
use crate::support::sidecar::run_cli;

/// Four mistakes of four kinds; lines matter.
const FOUR_MISTAKES: &str = r#"[proxy]
listen = "127.0.0.1:8080"
conect_timeout = "5s"

[tokens.api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/missing.pem"
ttl = 600

[[routes]]
host = "api.example.com"
tokens = ["api", "billing"]
"#;

#[test]
fn check_reports_a_misspelled_key_a_wrong_type_a_missing_key_file_and_an_unknown_token_at_once() {
    let dir = ConfigDir::empty();
    dir.write("sidecar.toml", FOUR_MISTAKES);
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    let report = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "check must fail on a bad file; stderr:\n{report}");
    assert_eq!(stdout(&out), "", "nothing on stdout for a bad file");

    // (line, column, key path, start of the message), in file order.
    let expected = [
        (3, 1, "proxy.conect_timeout", "unknown field `conect_timeout`, expected one of "),
        (8, 12, "tokens.api.key_file", "cannot read keys/missing.pem: "),
        (9, 7, "tokens.api.ttl", "invalid type: integer `600`, expected a string"),
        (13, 18, "routes[0].tokens", "no token named \"billing\" (defined: api)"),
    ];
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), expected.len(), "one line per mistake, got:\n{report}");
    for (line, (row, column, key, message)) in lines.iter().zip(expected) {
        let prefix = format!("sidecar.toml:{row}:{column}: {key}: ");
        let rest = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("expected {prefix}..., got:\n{report}"));
        assert!(rest.starts_with(message), "{key}: expected a message starting {message:?}, got {rest:?}");
    }
    assert!(lines[0].contains("`connect_timeout`"), "the unknown key's message names the right one: {}", lines[0]);
}
