//! `token-sidecar check` prints the effective policy as a table, and reports every mistake in
//! the policy keys at once with its place in the file.

use crate::support::client::{stderr, stdout};
use crate::support::config::ConfigDir;
use crate::support::keys::{demo_key_path, repo_root};
use crate::support::sidecar::{binary, run_cli};

const POLICY: &str = r#"[policy]
deny_networks = ["loopback", "private"]
allow_networks = ["10.1.0.0/16"]
deny_hosts = ["*.internal.example"]

[[callers]]
name = "fn-a"
key = "fn-a-secret-0123456789"
rate_limit = { per_second = 1, burst = 5 }

[[callers]]
name = "fn-b"
uid = 1000

[audit]
file = "audit.jsonl"

[tokens.gh]
kind = "secret"
key = "ghp_example"

[tokens.crm]
kind = "secret"
key = "crm_example"

[[routes]]
name = "github"
host = "api.github.com"
tokens = ["gh"]
callers = ["fn-a"]
substitute_in = ["header:Authorization"]

[[routes]]
name = "crm"
host = "crm.example.com"
path_prefix = "/v2"
placeholders = { auth_token = "crm" }
substitute_in = { auth_token = ["header:Authorization", "json:/auth/token"] }
rate_limit = { per_second = 10, burst = 20 }
"#;

#[test]
fn check_prints_what_each_caller_may_reach_with_which_token() {
    let dir = ConfigDir::empty();
    dir.write("sidecar.toml", POLICY);
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "sidecar.toml: ok (2 tokens, 2 routes, 0 listeners)");
    assert_eq!(lines[2], "Addresses denied: metadata, link_local, loopback, private (allowed: 10.1.0.0/16)");
    assert_eq!(lines[3], "Unrouted traffic: forwarded untouched, to any host but *.internal.example");
    assert_eq!(lines[4], "Callers: fn-a (Proxy-Authorization); fn-b (uid 1000)");
    assert!(lines[5].starts_with("Audit log: ") && lines[5].ends_with("audit.jsonl"), "{}", lines[5]);
    let rows: Vec<Vec<&str>> =
        lines[7..].iter().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    let expected: [&[&str]; 6] = [
        &["CALLER", "ROUTE", "REACHES", "TOKENS", "WRITTEN IN", "RATE LIMIT"],
        &["fn-a", "github", "https://api.github.com/", "gh", "header:authorization", "caller 1/s burst 5"],
        &[
            "fn-a",
            "crm",
            "https://crm.example.com/v2",
            "crm (as auth_token)",
            "header:authorization, json:/auth/token",
            "route 10/s burst 20; caller 1/s burst 5",
        ],
        &["fn-a", "(unrouted)", "any host but *.internal.example", "-", "-", "caller 1/s burst 5"],
        &[
            "fn-b",
            "crm",
            "https://crm.example.com/v2",
            "crm (as auth_token)",
            "header:authorization, json:/auth/token",
            "route 10/s burst 20",
        ],
        &["fn-b", "(unrouted)", "any host but *.internal.example", "-", "-", "-"],
    ];
    assert_eq!(rows.len(), expected.len(), "{text}");
    for (row, want) in rows.iter().zip(expected) {
        assert_eq!(row.as_slice(), want, "{text}");
    }
    assert!(!text.contains("fn-a-secret"), "check printed a caller secret");
}

const MISTAKES: &str = r#"[policy]
deny_networks = ["loopbak", "10.1.2.3/8"]
allow_hosts = ["*"]

[[callers]]
name = "fn-a"
key = "short"

[[callers]]
name = "fn-b"

[[callers]]
name = "fn-c"
uid = 1000

[[callers]]
name = "fn-d"
uid = 1000

[audit]
max_size = "1KiB"

[tokens.t]
kind = "secret"
key = "v"

[[routes]]
host = "api.example.com"
tokens = ["t"]
callers = ["fn-x"]
allow_networks = ["nope"]
substitute_in = ["cookies", "json:token"]
rate_limit = { per_second = 0 }
"#;

#[test]
fn check_reports_every_policy_mistake_in_one_run() {
    let dir = ConfigDir::empty();
    dir.write("sidecar.toml", MISTAKES);
    let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
    let report = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let expected = [
        (2, "policy.deny_networks", "\"loopbak\" is neither a network class nor an address or CIDR (classes: metadata"),
        (2, "policy.deny_networks", "\"10.1.2.3/8\" has bits set past its /8; did you mean 10.0.0.0/8?"),
        (3, "policy.allow_hosts", "invalid host pattern \"*\""),
        (7, "callers[0].key", "a caller secret must be at least 16 printable ASCII characters"),
        (9, "callers[1]", "a caller needs a way to be recognised"),
        (16, "callers[3]", "matches the same Unix-socket peers as caller \"fn-c\""),
        (21, "audit.max_size", "must be at least 4KiB"),
        (30, "routes[0].callers", "no caller named \"fn-x\" (defined: fn-a, fn-b, fn-c, fn-d)"),
        (31, "routes[0].allow_networks", "\"nope\" is neither a network class"),
        (32, "routes[0].substitute_in", "unknown place \"cookies\""),
        (32, "routes[0].substitute_in", "JSON Pointer \"token\" must start with '/'"),
        (33, "routes[0].rate_limit.per_second", "must be a number above zero"),
    ];
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), expected.len(), "one line per mistake:\n{report}");
    for (row, key, message) in expected {
        let prefix = format!("sidecar.toml:{row}:");
        let found = lines.iter().any(|l| l.starts_with(&prefix) && l.contains(&format!(": {key}: {message}")));
        assert!(found, "expected line {row}: {key}: {message}...\n{report}");
    }
    assert!(!report.contains("short\""), "a secret in an error message:\n{report}");
}

/// The recommended production config of README.md ("Securing agent egress") and the config of
/// `examples/kubernetes/configmap.yaml`, each checked with its files in a temp folder.
#[test]
fn the_recommended_configs_pass_check() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let after = readme.split("A recommended production config").nth(1).expect("the README's recommended config");
    let readme_toml = after.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a TOML block");
    let configmap = std::fs::read_to_string(repo_root().join("examples/kubernetes/configmap.yaml")).expect("configmap");
    let configmap_toml: String = configmap
        .split("sidecar.toml: |\n")
        .nth(1)
        .expect("the configmap's sidecar.toml")
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();

    for (name, text) in [("README.md", readme_toml.to_string()), ("configmap.yaml", configmap_toml)] {
        let dir = ConfigDir::empty();
        let root = format!("{}/", dir.root().display());
        let text = text.replace("/etc/token-sidecar/", &root).replace("/var/log/token-sidecar/", &root);
        std::fs::create_dir_all(dir.path("keys")).expect("keys");
        std::fs::create_dir_all(dir.path("callers")).expect("callers");
        std::fs::copy(demo_key_path("demo-rsa.key.pem"), dir.path("keys/acme.key.pem")).expect("key");
        dir.write("keys/github-token", "ghp_example_token");
        for caller in ["research-agent", "agent-function"] {
            dir.write(&format!("callers/{caller}"), "0123456789abcdef0123456789abcdef\n");
        }
        token_sidecar::tls::generate_ca(&dir.path("ca")).expect("a CA");
        dir.write("sidecar.toml", &text);
        let out = run_cli(dir.root(), &["check", "--config", "sidecar.toml"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}\n{text}", stderr(&out));
        let report = stdout(&out);
        assert!(report.contains("Addresses denied: metadata, link_local, loopback, private"), "{name}: {report}");
        assert!(report.contains("Unrouted traffic: denied"), "{name}: {report}");
        assert!(report.contains("header:authorization"), "{name}: {report}");
    }
}

#[test]
fn a_caller_secret_can_come_from_the_environment() {
    let dir = ConfigDir::empty();
    dir.write("sidecar.toml", "[[callers]]\nname = \"fn-env\"\nkey_env = \"FN_ENV_PROXY_SECRET\"\n");
    let check = |secret: Option<&str>| {
        let mut command = binary();
        command.args(["check", "--config", "sidecar.toml"]).current_dir(dir.root()).env_remove("FN_ENV_PROXY_SECRET");
        if let Some(secret) = secret {
            command.env("FN_ENV_PROXY_SECRET", secret);
        }
        command.output().expect("run check")
    };
    let ok = check(Some("from-the-environment-0123456789"));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("Callers: fn-env (Proxy-Authorization)"), "{}", stdout(&ok));
    let unset = check(None);
    assert!(
        stderr(&unset).contains("callers[0].key_env: environment variable FN_ENV_PROXY_SECRET is not set or empty"),
        "{}",
        stderr(&unset)
    );
    let short = check(Some("short"));
    assert!(stderr(&short).contains("a caller secret must be at least 16"), "{}", stderr(&short));
}
