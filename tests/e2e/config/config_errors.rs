//! Config errors as users see them: `file:line:col: key.path: message`, all at once, from the
//! library and from `token-sidecar check`; and the shipped configs pass `check`.

use std::path::Path;

use jsonwebtoken::DecodingKey;
use token_sidecar::config::Config;

use crate::support::client::{stderr, stdout};
use crate::support::config::{mint, render, single, ConfigDir};
use crate::support::jwt::{algorithm, decoding_key, parts, validation, verify};
use crate::support::keys::{demo_key, repo_root};
use crate::support::sidecar::{binary, run_cli};

/// A file with one mistake of each kind the validator collects; lines matter.
const MANY_MISTAKES: &str = r#"# token-sidecar config with several mistakes: check reports them all in one pass.
[proxy]
listen = "127.0.0.1:8080"
unmatched = "drop"
connect_timeout = "ten seconds"

[admin]
listen = "localhost:9090"

[tokens.acme]
kind = "jwt"
algorithm = "RS999"
key_type = "RsaPem"
key = "x"
ttl = "15"

[tokens.billing]
algorithm = "HS256"
key_type = "RsaPem"
key = "x"
ttl = "1m"

[[routes]]
host = "api.acme.example"
tokens = ["acme", "acem"]
"#;

const MANY_MISTAKES_OUTPUT: &str = r#"sidecar.toml:4:13: proxy.unmatched: unknown policy "drop" (expected "forward" or "deny")
sidecar.toml:5:19: proxy.connect_timeout: invalid duration "ten seconds" (expected number at 0); write it like "90s", "15m" or "1h"
sidecar.toml:8:10: admin.listen: invalid address "localhost:9090" (expected IP:PORT, such as "127.0.0.1:8080")
sidecar.toml:12:13: tokens.acme.algorithm: unknown algorithm "RS999" (expected one of HS256, HS384, HS512, ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA)
sidecar.toml:15:7: tokens.acme.ttl: invalid duration "15" (time unit needed, for example 15sec or 15ms); write it like "90s", "15m" or "1h"
sidecar.toml:19:12: tokens.billing.key_type: key type RsaPem cannot sign HS256 (use one of Secret, Base64Secret, UrlSafeBase64Secret, Jwk)
sidecar.toml:25:19: routes[0].tokens: no token named "acem" (defined: acme, billing)"#;

#[test]
fn golden_every_error_reported_together_by_the_library() {
    let errors = Config::from_text(Path::new("sidecar.toml"), MANY_MISTAKES).expect_err("config has mistakes");
    assert_eq!(errors.to_string(), MANY_MISTAKES_OUTPUT);
    let first = &errors.0[3];
    assert_eq!(first.file, Path::new("sidecar.toml"));
    assert_eq!((first.line, first.column), (12, 13));
    assert_eq!(first.key_path, "tokens.acme.algorithm");
    assert!(first.message.starts_with("unknown algorithm \"RS999\" (expected one of HS256, "));
}

#[test]
fn golden_check_prints_every_error_and_exits_1() {
    let dir = ConfigDir::empty();
    dir.write("sidecar.toml", MANY_MISTAKES);
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(1), "check fails on a bad file");
    assert_eq!(stderr(&out), format!("{MANY_MISTAKES_OUTPUT}\n"));
    assert_eq!(stdout(&out), "");
}

#[test]
fn check_exits_0_on_a_good_file() {
    let dir = ConfigDir::empty();
    dir.write(
        "sidecar.toml",
        "[tokens.svc]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"s3cret\"\nttl = \"1m\"\n\n\
         [[routes]]\nhost = \"api.example.com\"\ntokens = [\"svc\"]\n",
    );
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    // The first line; the effective policy follows (tests/e2e/policy/check.rs).
    assert_eq!(stdout(&out).lines().next(), Some("sidecar.toml: ok (1 tokens, 1 routes, 0 listeners)"));
    assert_eq!(stderr(&out), "");

    // TOKEN_SIDECAR_CONFIG names the file too.
    let out = binary()
        .arg("check")
        .current_dir(dir.root())
        .env("TOKEN_SIDECAR_CONFIG", "sidecar.toml")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn check_exits_1_on_a_missing_file_and_on_a_bad_key() {
    let dir = ConfigDir::empty();
    let out = run_cli(dir.root(), &["check", "--config", "nope.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "cannot read nope.toml: No such file or directory (os error 2)\n");

    // A bad key is found by check, not at the first refresh.
    dir.write(
        "sidecar.toml",
        "[tokens.t]\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey = \"AAAA\"\nttl = \"1m\"\n",
    );
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("sidecar.toml:4:7: tokens.t.key: no PEM block found;"), "{}", stderr(&out));
}

#[test]
fn unknown_key_names_its_path_and_position() {
    let dir = ConfigDir::empty();
    let errors = dir.errors("[tokens.acme]\nalgorithm = \"RS256\"\nkey_typ = \"RsaPem\"\nkey = \"x\"\nttl = \"1m\"\n");
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.acme.key_typ", "{e}");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.message.starts_with("unknown field `key_typ`, expected one of "), "{e}");
    assert!(e.message.contains("`key_type`"), "the message lists the known keys: {e}");

    let errors = dir.errors("[proxy]\nlisten = \"127.0.0.1:8080\"\nworkers = 2\n");
    let e = single(&errors);
    assert_eq!(e.key_path, "proxy.workers", "{e}");
    assert_eq!((e.line, e.column), (3, 1), "{e}");

    let errors = dir.errors("[proxy]\n\n[metrics]\nlisten = \"127.0.0.1:9\"\n");
    let e = single(&errors);
    assert_eq!(e.key_path, "metrics", "{e}");
    assert_eq!((e.line, e.column), (3, 2), "{e}");
    assert!(e.message.starts_with("unknown field `metrics`"), "{e}");
}

#[test]
fn wrong_value_type_names_its_path_and_position() {
    let dir = ConfigDir::empty();
    let errors = dir.errors("[tokens.acme]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"x\"\nttl = 15\n");
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.acme.ttl", "{e}");
    assert_eq!((e.line, e.column), (5, 7), "{e}");
    assert!(e.message.contains("expected a string"), "{e}");
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let dir = ConfigDir::empty();
    let errors = dir.errors("[proxy]\nlisten = \"127.0.0.1:8080\"\nunmatched = = \"deny\"\n");
    let e = single(&errors);
    assert_eq!((e.line, e.column), (3, 13), "{e}");
    assert_eq!(e.key_path, "");
    assert!(e.to_string().starts_with(&format!("{}:3:13: ", dir.path("sidecar.toml").display())), "{e}");

    let errors = dir.errors("[tokens.a]\nalgorithm = \"HS256\nttl = \"1m\"\n");
    let e = single(&errors);
    assert_eq!(e.line, 2, "an unterminated string is reported on its line: {e}");
}

#[test]
fn errors_in_several_tokens_and_routes_are_all_reported() {
    let dir = ConfigDir::empty();
    let errors = dir.errors(
        r#"[tokens.a]
algorithm = "HS256"
key_type = "Secret"
ttl = "1s"

[tokens.b]
key_type = "Nope"
key = "x"
ttl = "1m"
refresh_before = "2m"
auto_claims = ["exp", "sub"]

[[routes]]
host = "a.example"
port = 70000
path_prefix = "api"
tokens = ["missing"]

[routes.placeholders]
auth_token = "gone"
"#,
    );
    // Errors come in file order.
    let got: Vec<(&str, usize)> = errors.iter().map(|e| (e.key_path.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("tokens.a", 1),
            ("tokens.a.ttl", 4),
            ("tokens.b", 6),
            ("tokens.b.key_type", 7),
            ("tokens.b.refresh_before", 10),
            ("tokens.b.auto_claims", 11),
            ("routes[0].port", 15),
            ("routes[0].path_prefix", 16),
            ("routes[0].tokens", 17),
            ("routes[0].placeholders.auth_token", 20),
        ],
        "\n{}",
        render(&errors)
    );
    let msg = |path: &str| errors.iter().find(|e| e.key_path == path).map(|e| e.message.as_str()).unwrap_or_default();
    assert_eq!(msg("tokens.a.ttl"), "must be at least 2s");
    assert!(msg("tokens.b").starts_with("missing `algorithm` (one of HS256, "), "{}", msg("tokens.b"));
    assert_eq!(msg("tokens.b.refresh_before"), "must be shorter than ttl");
    assert_eq!(msg("routes[0].tokens"), "no token named \"missing\" (defined: a, b)");
}

/// Verification material for the demo keys shipped in examples/keys.
fn demo_decoding_key(alg: &str) -> DecodingKey {
    match alg {
        "HS256" | "HS384" | "HS512" => {
            use base64::Engine;
            let secret = base64::engine::general_purpose::STANDARD.decode(demo_key("demo-hs.secret.b64").trim());
            DecodingKey::from_secret(&secret.expect("base64 demo secret"))
        }
        "ES256" => decoding_key(algorithm(alg), &demo_key("demo-ec.pub.pem")),
        "EdDSA" => decoding_key(algorithm(alg), &demo_key("demo-ed.pub.pem")),
        _ => decoding_key(algorithm(alg), &demo_key("demo-rsa.pub.pem")),
    }
}

#[test]
fn check_accepts_the_shipped_configs() {
    let mut files = vec!["sidecar.toml".to_string()];
    let mut examples: Vec<String> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| format!("examples/{n}"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 4, "examples: {examples:?}");
    files.extend(examples);

    for file in &files {
        let out = run_cli(repo_root(), &["check", "--config", file]);
        assert_eq!(out.status.code(), Some(0), "check {file}: {}", stderr(&out));
        assert!(stdout(&out).starts_with(&format!("{file}: ok (")), "{}", stdout(&out));

        // Every token in it mints a token that verifies with the published demo key.
        let config = Config::load(&repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!config.tokens.is_empty(), "{file} defines tokens");
        for (name, def) in &config.tokens {
            let token = mint(&config, name);
            let (_, claims) = parts(&token);
            let aud = claims.get("aud").and_then(|a| a.as_str());
            let alg = algorithm(def.algorithm_name().expect("a signed token"));
            let mut v = validation(alg, aud);
            v.validate_nbf = true;
            verify(&token, &demo_decoding_key(def.algorithm_name().expect("a signed token")), &v);
        }
    }
}

#[test]
fn set_headers_naming_an_unbound_token_is_a_config_error() {
    let dir = ConfigDir::empty();
    let errors = dir.errors(
        r#"[tokens.a]
algorithm = "HS256"
key_type = "Secret"
key = "s"
ttl = "1m"

[tokens.b]
algorithm = "HS256"
key_type = "Secret"
key = "s"
ttl = "1m"

[[routes]]
host = "a.example"
tokens = ["a"]

[routes.set_headers]
Authorization = "Bearer {/b}"
X-Ok = "{/a} {/not_a_token}"
"#,
    );
    let rendered = render(&errors);
    assert_eq!(errors.len(), 1, "{rendered}");
    assert_eq!(errors[0].key_path, "routes[0].set_headers.Authorization");
    assert_eq!(errors[0].line, 18);
    assert!(errors[0].message.contains("{/b}"), "{rendered}");
}
