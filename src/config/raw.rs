//! The file format of `sidecar.toml`, exactly as written by the user.
//!
//! These types only describe shape; meaning (durations, algorithms, keys) is checked in
//! [`super::validate`] so that every problem in a file can be reported at once, each with the
//! line and column it came from.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub admin: RawAdmin,
    pub tls: Option<RawTls>,
    pub echo: Option<RawEcho>,
    /// `[cache]`: the function-result cache shared by routes with `[routes.cache]`.
    pub cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    pub tokens: BTreeMap<String, Spanned<RawToken>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    /// `[fleet]`: sharing exchanged tokens through Redis.
    pub fleet: Option<Spanned<super::fleet::RawFleet>>,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub callers: Vec<Spanned<RawCaller>>,
    pub audit: Option<Spanned<RawAudit>>,
}

/// `[proxy]`: the listener agent functions point `HTTP_PROXY` at, and the upstream client.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<Spanned<String>>,
    pub unmatched: Option<Spanned<String>>,
    pub max_buffered_body: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub extra_ca_file: Option<Spanned<String>>,
    pub worker_threads: Option<Spanned<i64>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_streams_per_connection: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<String>>,
    pub max_uri_bytes: Option<Spanned<String>>,
    pub max_buffered_total: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    /// A Unix-socket proxy listener, whose peers are identified by their uid/gid.
    pub listen_unix: Option<Spanned<String>>,
    /// The socket file's permissions, in octal (`"0666"`).
    pub listen_unix_mode: Option<Spanned<String>>,
}

/// `[admin]`: metrics and health endpoints.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
}

/// `[tls]`: the local CA used to intercept CONNECT tunnels to routed hosts.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_cert: Spanned<String>,
    pub ca_key: Spanned<String>,
    pub leaf_cache_size: Option<Spanned<i64>>,
    pub generate_if_missing: Option<Spanned<bool>>,
}

/// `[echo]`: a built-in upstream that answers every request with what it received.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawEcho {
    pub listen: Spanned<String>,
    pub tls_listen: Option<Spanned<String>>,
}

/// `[tokens.NAME]`: how to mint one token.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// `"jwt"` (the default), `"secret"` or `"oauth2"`.
    pub kind: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
    pub key_type: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
    pub refresh_before: Option<Spanned<String>>,
    pub iat_skew: Option<Spanned<String>>,
    pub kid: Option<Spanned<String>>,
    pub typ: Option<Spanned<String>>,
    pub auto_claims: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub claims: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub header: BTreeMap<String, Spanned<toml::Value>>,
    // `kind = "oauth2"`: an exchange at a token endpoint.
    pub token_url: Option<Spanned<String>>,
    pub grant: Option<Spanned<String>>,
    pub grant_type: Option<Spanned<String>>,
    pub assertion: Option<Spanned<String>>,
    /// A string, or an array of strings joined with spaces.
    pub scope: Option<Spanned<toml::Value>>,
    pub client_id: Option<Spanned<String>>,
    pub client_auth: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    pub client_assertion: Option<Spanned<String>>,
    #[serde(default)]
    pub form: BTreeMap<String, Spanned<String>>,
    pub request: Option<Spanned<RawExchangeRequest>>,
    pub response: Option<Spanned<RawExchangeResponse>>,
    #[serde(default)]
    pub expose: BTreeMap<String, Spanned<String>>,
    /// With `[fleet]`: whether this exchanged token is shared with the fleet (default true).
    pub shared: Option<Spanned<bool>>,
    /// `[tokens.NAME.encrypt]`: the signed token is encrypted for its recipient (JWE).
    pub encrypt: Option<Spanned<RawEncrypt>>,
    /// Sign this token for every request, over claims derived from the request.
    pub per_request: Option<Spanned<bool>>,
    /// `claim = "derived value"` for `per_request` tokens.
    #[serde(default)]
    pub request_claims: BTreeMap<String, Spanned<String>>,
    /// `header field = "derived value"` for `per_request` tokens (Coinbase's `nonce`).
    #[serde(default)]
    pub request_header: BTreeMap<String, Spanned<String>>,
    /// Accept a slow algorithm (RSA, ES384, ES512) for signing on the request path.
    pub allow_slow_signing: Option<Spanned<bool>>,
    /// Path prefix dropped before `query_hash_atlassian` (the app's base URL path).
    pub context_path: Option<Spanned<String>>,
    /// `kind = "oauth2"`: the `kind = "dpop"` token whose key proves possession (RFC 9449).
    pub dpop: Option<Spanned<String>>,
}

/// `[tokens.NAME.encrypt]`: the recipient and algorithms of an encrypted token.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawEncrypt {
    pub alg: Option<Spanned<String>>,
    pub enc: Option<Spanned<String>>,
    pub kid: Option<Spanned<String>>,
    pub key_type: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
}

/// `[tokens.NAME.request]`: the token endpoint request of `grant = "custom"`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawExchangeRequest {
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub json: Option<Spanned<toml::Value>>,
    pub body: Option<Spanned<String>>,
}

/// `[tokens.NAME.response]`: where the token and its lifetime are in the endpoint's answer.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawExchangeResponse {
    pub token: Option<Spanned<String>>,
    pub expires_in: Option<Spanned<String>>,
    pub expires_at: Option<Spanned<String>>,
    pub expiry_from: Option<Spanned<String>>,
    pub default_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    pub token_type: Option<Spanned<String>>,
}

/// `[[routes]]`: which requests get which tokens.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub scheme: Option<Spanned<String>>,
    pub host: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub tokens: Vec<Spanned<String>>,
    #[serde(default)]
    pub placeholders: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, Spanned<String>>,
    pub upstream_tls: Option<Spanned<bool>>,
    pub redact_responses: Option<Spanned<bool>>,
    /// Whether an upstream's 401 re-exchanges the route's exchanged tokens and replays once.
    pub retry_on_401: Option<Spanned<bool>>,
    /// Speak HTTP/2 to the upstream for every request (prior knowledge over plain HTTP).
    pub upstream_http2: Option<Spanned<bool>>,
    /// The callers that may use this route (all identified callers when absent).
    pub callers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Networks this route's upstream may be reached at although `[policy]` denies them.
    #[serde(default)]
    pub allow_networks: Vec<Spanned<String>>,
    /// Where in a request the route's tokens may be written: a list for every token, or a
    /// table of lists by placeholder name.
    pub substitute_in: Option<Spanned<toml::Value>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    /// `[routes.cache]`: store this route's responses and answer repeats from the cache.
    pub cache: Option<Spanned<RawRouteCache>>,
}

/// `[cache]`: limits of the function-result cache, across every cached route.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub backend: Option<Spanned<String>>,
    pub max_bytes: Option<Spanned<String>>,
    pub coalesce_wait: Option<Spanned<String>>,
}

/// `[routes.cache]`: which of a route's responses are stored, and for how long.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub ttl: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub vary: Vec<Spanned<String>>,
    pub max_body: Option<Spanned<String>>,
    pub statuses: Option<Vec<Spanned<i64>>>,
    pub ignore_cache_control: Option<Spanned<bool>>,
    pub stale_while_revalidate: Option<Spanned<String>>,
    pub stale_if_error: Option<Spanned<String>>,
}

/// `[[listeners]]`: a local port bound to one upstream, for clients that cannot use a proxy.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub listen: Spanned<String>,
    pub upstream: Spanned<String>,
}

/// `[policy]`: where traffic may go.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub deny_networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny_hosts: Vec<Spanned<String>>,
}

/// `[[callers]]`: a function that may use the sidecar, and how it is recognised.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    pub name: Spanned<String>,
    /// The secret it sends in `Proxy-Authorization`, from one of these.
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
    /// The peer process on the Unix-socket listener.
    pub uid: Option<Spanned<i64>>,
    pub gid: Option<Spanned<i64>>,
    /// Source addresses on the reverse listeners.
    #[serde(default)]
    pub sources: Vec<Spanned<String>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
}

/// `rate_limit = { per_second = 10, burst = 20 }`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: Spanned<f64>,
    pub burst: Option<Spanned<i64>>,
}

/// `[audit]`: one JSON line per request.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The log file; standard output when absent.
    pub file: Option<Spanned<String>>,
    pub max_size: Option<Spanned<String>>,
    pub max_files: Option<Spanned<i64>>,
    pub buffer: Option<Spanned<i64>>,
}
