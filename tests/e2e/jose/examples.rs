//! The configs in `examples/jose/` pass `token-sidecar check` with the environment variables
//! their header documents, and `sign` makes each of their tokens: five JWE parts for an
//! encrypted one, a signature for the request given with `--request` for a per-request one.

use crate::support::client::{stderr, stdout};
use crate::support::jwt::parts;
use crate::support::keys::repo_root;
use crate::support::sidecar::binary;

/// `examples/jose/*.toml`, relative to the repository root.
fn files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("examples/jose"))
        .expect("examples/jose")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| format!("examples/jose/{n}"))
        .collect();
    files.sort();
    files
}

/// The variables of the `# Environment: A, B.` header line, with stand-in values.
fn environment(text: &str) -> Vec<(String, String)> {
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("# Environment:")) else { return Vec::new() };
    line.trim()
        .trim_end_matches('.')
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            // A shared 128-bit key for A128KW, a plain stand-in for the rest.
            let value = if v.ends_with("_KW_KEY") {
                "AAECAwQFBgcICQoLDA0ODw==".to_string()
            } else {
                format!("{}-example", v.to_lowercase())
            };
            (v.to_string(), value)
        })
        .collect()
}

fn run(file: &str, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = binary();
    cmd.args(args).args(["--config", file]).current_dir(repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("token-sidecar")
}

#[test]
fn every_jose_example_checks_and_signs() {
    let files = files();
    assert_eq!(files.len(), 6, "one example per form: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("example");
        let env = environment(&text);
        let out = run(file, &env, &["check"]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        let table: toml::Table = text.parse().expect("TOML");
        for (name, token) in table["tokens"].as_table().expect("tokens") {
            let kind = token.get("kind").and_then(toml::Value::as_str).unwrap_or("jwt");
            if kind != "jwt" {
                continue;
            }
            let per_request = token.get("per_request").and_then(toml::Value::as_bool) == Some(true);
            let mut args = vec!["sign", name.as_str()];
            if per_request {
                args.extend(["--request", "GET https://your-site.atlassian.net/rest/api/3/search?b=2&a=1"]);
            }
            let out = run(file, &env, &args);
            assert_eq!(out.status.code(), Some(0), "{file} {name}: {}", stderr(&out));
            let value = stdout(&out).trim().to_string();
            let expected_parts = if token.get("encrypt").is_some() { 5 } else { 3 };
            assert_eq!(value.split('.').count(), expected_parts, "{file} {name}: {value}");
            if expected_parts == 3 {
                let (header, claims) = parts(&value);
                assert_eq!(header["alg"], token["algorithm"].as_str().expect("algorithm"), "{file} {name}");
                if per_request {
                    let derived = token["request_claims"].as_table().expect("request_claims");
                    for claim in derived.keys() {
                        assert!(claims.get(claim).is_some(), "{file} {name}: no {claim} in {claims}");
                    }
                }
            }
        }
    }
}
