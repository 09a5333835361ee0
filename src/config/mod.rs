//! `sidecar.toml`: parsing, validation and the checked configuration the rest of the
//! program runs on.
//!
//! A [`Config`] is immutable once built. A reload builds a whole new one and swaps it in, so
//! a request never sees half of an old file and half of a new one.

mod cache;
pub mod dependencies;
mod diagnostic;
pub mod fleet;
pub mod policy;
pub mod raw;
mod structure;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::{CacheBackend, CacheSettings, RouteCacheSettings, DEFAULT_STATUSES};
pub use diagnostic::{Collector, ConfigErrors, Diagnostic};
pub use fleet::FleetSettings;
pub use policy::{AuditSettings, CallerDefinition, PolicySettings, Position, RateLimit, RoutePolicySettings};

use crate::routes::{HostPattern, Scheme};
use crate::tokens::TokenDefinition;

/// A checked configuration: every key loaded, every token test-signed.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from; relative key paths were resolved against its folder.
    pub source: PathBuf,
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub tls: Option<TlsSettings>,
    /// The built-in echo upstream, when enabled.
    pub echo: Option<EchoSettings>,
    /// `[cache]`: limits of the function-result cache (defaults when absent).
    pub cache: CacheSettings,
    pub tokens: BTreeMap<String, TokenDefinition>,
    pub routes: Vec<RouteDefinition>,
    pub listeners: Vec<ListenerDefinition>,
    /// Where traffic may go (`[policy]`).
    pub policy: PolicySettings,
    /// The functions that may use the sidecar; empty: anyone who can connect.
    pub callers: Vec<CallerDefinition>,
    /// The request log, when `[audit]` is present.
    pub audit: Option<AuditSettings>,
    /// Files whose change should trigger a reload (the config and every key file).
    pub watched_files: Vec<PathBuf>,
    /// `[fleet]`, when sidecars share exchanged tokens through Redis.
    pub fleet: Option<FleetSettings>,
    /// The exchanged tokens shared with the fleet (all of them unless `shared = false`).
    pub shared_tokens: std::collections::BTreeSet<String>,
}

/// What the proxy does with a request that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Forward it untouched (placeholders stay as text).
    Forward,
    /// Refuse it with 403.
    Deny,
}

/// `[proxy]` after validation, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub unmatched: Unmatched,
    /// Bodies up to this size are buffered so Content-Length stays exact; larger ones stream.
    pub max_buffered_body: u64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub extra_ca_file: Option<PathBuf>,
    pub worker_threads: usize,
    pub pool_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Open client connections across all listeners; further connections wait in the
    /// kernel's accept queue until one closes.
    pub max_connections: usize,
    /// Concurrent h2 streams per client connection.
    pub max_streams_per_connection: u32,
    /// The request's header section (names and values) after substitution: 431 beyond it.
    pub max_header_bytes: u64,
    /// The request target after substitution: 414 beyond it.
    pub max_uri_bytes: u64,
    /// Request bodies buffered for substitution, all requests together: 503 beyond it.
    pub max_buffered_total: u64,
    /// From accept (or the CONNECT answer) to the first request bytes / TLS handshake done.
    pub handshake_timeout: Duration,
    /// To receive a whole HTTP/1.1 request head.
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request or upstream response body.
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A Unix-socket proxy listener, whose peers are identified by uid/gid.
    pub listen_unix: Option<PathBuf>,
    /// Permissions of the socket file.
    pub listen_unix_mode: u32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            unmatched: Unmatched::Forward,
            max_buffered_body: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            extra_ca_file: None,
            worker_threads: 1,
            pool_idle_timeout: Duration::from_secs(90),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1024,
            max_streams_per_connection: 100,
            max_header_bytes: 64 << 10,
            max_uri_bytes: 16 << 10,
            max_buffered_total: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            listen_unix: None,
            listen_unix_mode: 0o666,
        }
    }
}

impl ProxySettings {
    /// Whether the upstream client (and its connection pool) can be kept across a reload.
    pub fn same_upstream_settings(&self, other: &ProxySettings) -> bool {
        self.connect_timeout == other.connect_timeout
            && self.extra_ca_file == other.extra_ca_file
            && self.pool_idle_timeout == other.pool_idle_timeout
    }
}

/// `[admin]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { listen: SocketAddr::from(([127, 0, 0, 1], 9090)) }
    }
}

/// `[tls]` after validation: where the interception CA lives.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub leaf_cache_size: usize,
    /// Create the CA at start-up when neither file exists (for demos and first runs).
    pub generate_if_missing: bool,
}

impl TlsSettings {
    /// Whether the CA is still to be created at start-up.
    pub fn pending_generation(&self) -> bool {
        self.generate_if_missing && !self.ca_cert.exists() && !self.ca_key.exists()
    }
}

/// `[echo]`: the built-in echo upstream's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoSettings {
    pub listen: SocketAddr,
    /// Also serve the echo over TLS, with a certificate from the `[tls]` CA.
    pub tls_listen: Option<SocketAddr>,
}

/// One `[[routes]]` entry after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDefinition {
    /// The user's name for it, or `routes[N]`; used in metrics and errors.
    pub name: String,
    pub scheme: Scheme,
    pub host: HostPattern,
    pub port: Option<u16>,
    pub path_prefix: String,
    pub methods: Vec<http::Method>,
    /// Placeholder name -> token name. Holds every bound token under its own name and every alias.
    pub bindings: BTreeMap<String, String>,
    pub set_headers: Vec<(http::HeaderName, String)>,
    pub upstream_tls: bool,
    /// Replace the values of tokens injected into a request by their placeholder text in the
    /// response, so an upstream that reflects a request cannot hand the agent a live token.
    pub redact_responses: bool,
    /// Whether an upstream's 401 re-exchanges the exchanged tokens the request carried and
    /// replays it once.
    pub retry_on_401: bool,
    /// Every request of the route goes to the upstream over HTTP/2 (h2c prior knowledge for
    /// plain HTTP, ALPN `h2` only for TLS); gRPC requests do so whatever this says.
    pub upstream_http2: bool,
    /// Who may use the route, which networks it may reach, where its tokens may be written,
    /// and how often.
    pub policy: RoutePolicySettings,
    /// `[routes.cache]`: store responses and answer repeated requests from the cache.
    pub cache: Option<RouteCacheSettings>,
}

/// One `[[listeners]]` entry: a local port that sends everything to one upstream base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerDefinition {
    pub listen: SocketAddr,
    pub upstream: http::Uri,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl Config {
    /// Whether token `name` is shared with the fleet through Redis.
    pub fn shares(&self, name: &str) -> bool {
        self.shared_tokens.contains(name)
    }

    /// Reads, parses and checks a config file, loading every key it names.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        Ok(Config::from_text(path, &text)?)
    }

    /// Parses and checks config text; `path` names it in errors and anchors relative paths.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(path, text)
    }
}
