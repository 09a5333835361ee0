//! The real-provider examples in `examples/providers/` (Google, GitHub App, Salesforce,
//! NetSuite, Entra ID, Okta, Auth0, DocuSign, Box, Zoom, Vault, Tableau, SMART, Orkes): each one
//! passes `token-sidecar check` with the environment variables it documents, and each names the
//! RECIPES.md section it implements, the variables it reads and only keys that ship in
//! `examples/keys/`. `check` parses and test-signs; it exchanges nothing.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::client::{stderr, stdout};
use crate::support::keys::repo_root;
use crate::support::sidecar::binary;

/// `examples/providers/*.toml`, as paths relative to the repository root, sorted.
fn provider_files() -> Vec<String> {
    let dir = repo_root().join("examples/providers");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| format!("examples/providers/{n}"))
        .collect();
    files.sort();
    files
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn parse(file: &str) -> toml::Table {
    read(file).parse().unwrap_or_else(|e| panic!("{file} is not TOML: {e}"))
}

/// The comment block the file starts with (every line up to the first that is not a comment).
fn header(text: &str) -> String {
    text.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n")
}

/// Every string in a TOML value, keys included (template tables such as `headers` are keyed by
/// header name, which is never templated, but a stray `${` there is worth seeing too).
fn strings<'a>(value: &'a toml::Value, out: &mut Vec<&'a str>) {
    match value {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        toml::Value::Table(table) => {
            for (k, v) in table {
                out.push(k);
                strings(v, out);
            }
        }
        _ => {}
    }
}

/// A `${NAME}` or `${NAME:-default}` reference in a config string (`$${` is a literal).
struct EnvRef {
    name: String,
    has_default: bool,
}

fn env_refs(s: &str) -> Vec<EnvRef> {
    let bytes = s.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(at) = s[i..].find("${").map(|p| p + i) {
        i = at + 2;
        if at > 0 && bytes[at - 1] == b'$' {
            continue;
        }
        let name: String = s[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let has_default = s[i + name.len()..].starts_with(":-");
        refs.push(EnvRef { name, has_default });
    }
    refs
}

/// What a provider example reads from the environment: `${NAME}` references in its strings
/// (`required` unless they have a default) and `key_env` variables.
#[derive(Default)]
struct Env {
    required: BTreeSet<String>,
    defaulted: BTreeSet<String>,
}

fn env_of(file: &str) -> Env {
    let value = toml::Value::Table(parse(file));
    let mut all = Vec::new();
    strings(&value, &mut all);
    let table = value.as_table().expect("a table");
    let mut env = Env::default();
    for r in all.iter().flat_map(|s| env_refs(s)) {
        assert!(!r.name.is_empty(), "{file}: a `${{` with no variable name");
        if r.has_default {
            env.defaulted.insert(r.name);
        } else {
            env.required.insert(r.name);
        }
    }
    for (_, token) in tokens(table) {
        if let Some(var) = token.get("key_env").and_then(toml::Value::as_str) {
            env.required.insert(var.to_string());
        }
    }
    env.defaulted.retain(|v| !env.required.contains(v));
    env
}

fn tokens(table: &toml::Table) -> Vec<(&String, &toml::Table)> {
    table
        .get("tokens")
        .and_then(toml::Value::as_table)
        .map(|t| t.iter().filter_map(|(name, v)| v.as_table().map(|t| (name, t))).collect())
        .unwrap_or_default()
}

/// A stand-in value: lower-case letters, digits and `-`, so it fits a host label, a URL path
/// segment, a claim, a `kid` and a static secret alike.
fn sample_value(var: &str) -> String {
    format!("{}-example", var.to_ascii_lowercase().replace('_', "-"))
}

#[test]
fn every_provider_example_passes_check_with_the_variables_it_documents() {
    let files = provider_files();
    assert!(!files.is_empty(), "examples/providers/ holds no .toml files");
    let mut failures = Vec::new();
    for file in &files {
        let env = env_of(file);
        let mut cmd = binary();
        cmd.args(["check", "--config", file]).current_dir(repo_root());
        for var in &env.required {
            cmd.env(var, sample_value(var));
        }
        // Variables with a default are left unset, so the default is what gets checked.
        for var in &env.defaulted {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("run token-sidecar check");
        let ok = out.status.code() == Some(0) && stdout(&out).starts_with(&format!("{file}: ok ("));
        if !ok {
            failures.push(format!(
                "{file} (env {:?}): exit {:?}\nstdout: {}stderr: {}",
                env.required,
                out.status.code(),
                stdout(&out),
                stderr(&out)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} provider examples fail check:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_provider_example_names_its_recipe_its_variables_and_ships_its_keys() {
    let files = provider_files();
    assert!(files.len() >= 14, "expected an example per exchange provider of RECIPES.md, found {files:?}");
    let index = read("examples/providers/README.md");
    let keys_dir = repo_root().join("examples/keys").canonicalize().expect("examples/keys");
    let mut problems = Vec::new();
    for file in &files {
        let text = read(file);
        let head = header(&text);
        if !head.lines().any(|l| l.starts_with("# Provider: ")) {
            problems.push(format!("{file}: the header comment has no `# Provider: ` line"));
        }
        let section = head.lines().find_map(|l| l.strip_prefix("# RECIPES.md §2.")).and_then(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            n.parse::<u32>().ok()
        });
        match section {
            Some(n) if (1..=28).contains(&n) => {}
            other => problems.push(format!(
                "{file}: the header must name its section as `# RECIPES.md §2.N` (N 1-28), got {other:?}"
            )),
        }
        if !head.contains("Source: ") {
            problems.push(format!("{file}: the header names no `Source: ` (the provider's documentation)"));
        }
        if !head.contains("Environment: ") {
            problems.push(format!("{file}: the header has no `Environment: ` line (list the variables, or `none`)"));
        }
        let env = env_of(file);
        for var in env.required.iter().chain(&env.defaulted) {
            if !head.contains(var.as_str()) {
                problems.push(format!("{file}: reads ${var} but its header comment does not document it"));
            }
        }

        let name = Path::new(file).file_name().expect("file name").to_string_lossy().into_owned();
        if !index.contains(&format!("`{name}`")) {
            problems.push(format!("{file}: not listed in examples/providers/README.md"));
        }

        let table = parse(file);
        for (token, def) in tokens(&table) {
            let Some(key_file) = def.get("key_file").and_then(toml::Value::as_str) else { continue };
            let path = repo_root().join("examples/providers").join(key_file);
            match path.canonicalize() {
                Ok(p) if p.starts_with(&keys_dir) => {}
                Ok(p) => {
                    problems.push(format!("{file}: tokens.{token}.key_file {} is outside examples/keys/", p.display()))
                }
                Err(e) => problems.push(format!("{file}: tokens.{token}.key_file {key_file}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
