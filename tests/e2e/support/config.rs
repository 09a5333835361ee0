//! Config text and config folders.
//!
//! Builders produce TOML fragments that every test concatenates: [`config`] (the `[proxy]` and
//! `[admin]` listeners on port 0, where the sidecar reports what it bound), [`rs256_token`],
//! [`route`], [`listener`], [`TLS_SECTION`]. [`ConfigDir`] is a temp folder holding
//! `sidecar.toml` and the files it names.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use token_sidecar::config::{Config, ConfigErrors, Diagnostic};

use super::keys::{demo_key_path, repo_root};

/// A whole config: `[proxy]` and `[admin]` listening on 127.0.0.1:0, `proxy_extra` added to
/// `[proxy]`, then `rest` (tokens, routes, listeners, `[tls]`).
pub fn config(proxy_extra: &str, rest: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{rest}\n")
}

/// An RS256 token `name` signed with the demo RSA key (absolute path, so the text works in any
/// folder), kid `demo-rsa-2026`, claims `iss = "e2e-tests"` and `sub = NAME`. The text ends
/// inside the `[tokens.NAME]` table, so more keys (`refresh_before = ...`) may follow.
pub fn rs256_token(name: &str, ttl: &str) -> String {
    format!(
        "[tokens.{name}]\nkind = \"jwt\"\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey_file = {key}\n\
         kid = \"demo-rsa-2026\"\nttl = \"{ttl}\"\nclaims = {{ iss = \"e2e-tests\", sub = \"{name}\" }}\n",
        key = toml_str(&demo_key_path("demo-rsa.key.pem").to_string_lossy()),
    )
}

/// A plain-HTTP route to `127.0.0.1:port` binding `tokens`; `extra` may add keys and
/// sub-tables such as `[routes.placeholders]` or `[routes.set_headers]`.
pub fn route(port: u16, tokens: &[&str], extra: &str) -> String {
    let tokens: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "\n[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [{}]\n{extra}\n\n",
        tokens.join(", ")
    )
}

/// A reverse listener on 127.0.0.1:0 bound to `upstream` (a base URL).
pub fn listener(upstream: &str) -> String {
    format!("\n[[listeners]]\nlisten = \"127.0.0.1:0\"\nupstream = {}\n\n", toml_str(upstream))
}

/// `[tls]` with a CA the sidecar creates at start-up in `ca/` of the config folder.
pub const TLS_SECTION: &str =
    "\n[tls]\nca_cert = \"ca/ca.pem\"\nca_key = \"ca/ca.key\"\ngenerate_if_missing = true\n\n";

/// The file (relative to the config folder) holding a TLS upstream's CA, for `extra_ca_file`.
pub const UPSTREAM_CA_FILE: &str = "upstream-ca.pem";

/// Quotes text as a TOML string (any content: PEM, paths, secrets).
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A temp folder holding `sidecar.toml` and the files it names.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    /// An empty folder.
    pub fn empty() -> ConfigDir {
        ConfigDir { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A folder with the demo keys of `examples/keys` copied into `keys/`.
    pub fn with_demo_keys() -> ConfigDir {
        let dir = ConfigDir::empty();
        let keys = dir.path("keys");
        std::fs::create_dir(&keys).expect("keys dir");
        for entry in std::fs::read_dir(repo_root().join("examples/keys")).expect("examples/keys") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), keys.join(entry.file_name())).expect("copy key");
        }
        dir
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file into the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        write_in_place(&path, contents.as_ref());
        path
    }

    /// Writes `sidecar.toml` in place (truncate and write, as `echo > file` does).
    pub fn write_config(&self, text: &str) -> PathBuf {
        self.write("sidecar.toml", text)
    }

    /// Writes `sidecar.toml` and builds it with `Config::from_text` (relative paths resolve
    /// against the folder).
    pub fn build(&self, text: &str) -> Result<Config, ConfigErrors> {
        let path = self.write_config(text);
        Config::from_text(&path, text)
    }

    /// Like [`ConfigDir::build`], but the config must be valid.
    pub fn config(&self, text: &str) -> Config {
        self.build(text).unwrap_or_else(|e| panic!("config should be valid, got:\n{e}\n--- config ---\n{text}"))
    }

    /// Like [`ConfigDir::build`], but the config must be rejected.
    pub fn errors(&self, text: &str) -> Vec<Diagnostic> {
        match self.build(text) {
            Ok(_) => panic!("config should be rejected:\n{text}"),
            Err(e) => e.0,
        }
    }
}

/// Truncates and rewrites a file where it is.
pub fn write_in_place(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a temp file beside `path` and renames it over `path`, as editors and tools do.
pub fn write_by_rename(path: &Path, contents: &[u8]) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename over {}: {e}", path.display()));
}

/// Mints the token `name` of a valid config now.
pub fn mint(config: &Config, name: &str) -> String {
    mint_at(config, name, SystemTime::now())
}

pub fn mint_at(config: &Config, name: &str, now: SystemTime) -> String {
    let minted = config.tokens[name].mint(now).expect("mint");
    String::from_utf8(minted.value.to_vec()).expect("a JWT is ASCII")
}

/// Asserts there is exactly one diagnostic and returns it.
pub fn single(errors: &[Diagnostic]) -> &Diagnostic {
    assert_eq!(errors.len(), 1, "expected exactly one error, got:\n{}", render(errors));
    &errors[0]
}

pub fn render(errors: &[Diagnostic]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
