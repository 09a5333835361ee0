//! Fleet mode (`[fleet]`): sidecars share exchanged tokens through a real `redis-server`
//! (`support::redis`) in front of one mock IdP (`support::idp`). Each module covers one thing
//! an operator of a fleet relies on: one exchange per token lifetime for the whole fleet, a
//! lease holder that dies, Redis dying and coming back under traffic, sealing (nothing in
//! Redis in the clear; entries not sealed by the fleet are refused), the 401 renewal, TLS to
//! Redis, the config and admin surface, and the shared function-result cache.

mod auth;
mod config;
mod lease;
mod outage;
mod renewal;
mod sealing;
mod shared_cache;
mod sharing;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::client::{admin_get, get, Reply as HttpReply};
use crate::support::config::{config, route, toml_str};
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::redis::RedisServer;
use crate::support::sidecar::Running;

/// The fleet key the tests use (base64 of 32 bytes), and its bytes.
pub const FLEET_KEY_B64: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";

/// How long a test waits for something that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(15);

/// A fleet's shared pieces: its Redis and a key file every sidecar's config names.
pub struct Fleet {
    pub redis: RedisServer,
    key_dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn start() -> Fleet {
        let redis = RedisServer::start().await;
        Fleet::with(redis)
    }

    pub fn with(redis: RedisServer) -> Fleet {
        let key_dir = tempfile::tempdir().expect("key dir");
        std::fs::write(key_dir.path().join("fleet.key"), format!("{FLEET_KEY_B64}\n")).expect("key file");
        Fleet { redis, key_dir }
    }

    pub fn key_file(&self) -> PathBuf {
        self.key_dir.path().join("fleet.key")
    }

    /// `[fleet]` for this Redis and key; `extra` adds keys (`lease_ttl = "2s"`).
    pub fn section(&self, extra: &str) -> String {
        format!(
            "\n[fleet]\nredis_url = {}\nencryption_key = {{ key_file = {} }}\n{extra}\n",
            toml_str(&self.redis.url()),
            toml_str(&self.key_file().to_string_lossy())
        )
    }

    /// A whole config: token `api` (client credentials with a secret, exchanged at `idp`),
    /// a route to `api_port` binding it, and `[fleet]` with `fleet_extra`.
    pub fn config(&self, idp: &Idp, api_port: u16, fleet_extra: &str) -> String {
        config("", &format!("{}{}{}", api_token(idp, ""), route(api_port, &["api"], ""), self.section(fleet_extra)))
    }
}

/// The shared token of every fleet test: `client_credentials` with a client secret (kept out
/// of Redis, as the sealing test checks).
pub const CLIENT_SECRET: &str = "fleet-client-secret-5f1e2d";

pub fn api_token(idp: &Idp, extra: &str) -> String {
    format!(
        "\n[tokens.client_secret]\nkind = \"secret\"\nkey = {}\n\n[tokens.api]\nkind = \"oauth2\"\ntoken_url = {}\n\
         grant = \"client_credentials\"\nclient_id = \"fleet-agent\"\nclient_secret = \"client_secret\"\n{extra}\n",
        toml_str(CLIENT_SECRET),
        toml_str(&idp.url("/token"))
    )
}

/// An IdP issuing `idp-access-N` tokens that live `lifetime` seconds.
pub async fn idp_with_lifetime(lifetime: u64) -> Idp {
    let idp = Idp::start().await;
    idp.answer_with(move |seen| Reply::token(&access_token(seen.n), lifetime));
    idp
}

/// An API that answers 200 to everything (and records what it got).
pub async fn api_ok() -> Idp {
    let api = Idp::start().await;
    api.answer_with(|_| Reply::raw(200, "text/plain", "api ok"));
    api
}

/// Starts `n` sidecars on `toml` at once and waits until all are ready (on a `LocalSet`: the
/// start-up waits are not `Send`).
pub async fn start_all(n: usize, toml: &str) -> Vec<Running> {
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let toml = toml.to_string();
            local.spawn_local(async move { Running::start(&toml).await })
        })
        .collect();
    local
        .run_until(async move {
            let mut sidecars = Vec::with_capacity(n);
            for task in tasks {
                sidecars.push(task.await.expect("sidecar start task"));
            }
            sidecars
        })
        .await
}

/// Requests through every sidecar, round after round, until stopped: each carries
/// `Authorization: Bearer {/api}` and `?sidecar=I`, so the API's record tells who sent what.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(proxies: Vec<SocketAddr>, api: &Idp) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (flag, failed, base) = (Arc::clone(&stop), Arc::clone(&failures), api.url("/v1/items"));
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                for (i, proxy) in proxies.iter().enumerate() {
                    let url = format!("{base}?sidecar={i}");
                    let reply = get(*proxy, &url, &[("authorization", "Bearer {/api}")]).await;
                    if reply.status != 200 {
                        failed.lock().unwrap().push(format!("sidecar {i}: {} {}", reply.status, reply.text()));
                    }
                }
                // Pacing, not waiting for anything: a request per sidecar every 50 ms.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Traffic { stop, failures, task }
    }

    /// Stops and returns every failed request.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task");
        let failures = self.failures.lock().unwrap().clone();
        failures
    }
}

/// The bearer token of the last request the API received from sidecar `i` (via [`Traffic`]).
pub fn last_bearer(api: &Idp, i: usize) -> Option<String> {
    let tag = format!("sidecar={i}");
    api.requests().iter().rev().find(|s| s.uri.ends_with(&tag)).and_then(|s| s.bearer().map(str::to_string))
}

/// GET `/v1/items` of `api` through `proxy` with `Authorization: Bearer {/api}`.
pub async fn call_api(proxy: SocketAddr, api: &Idp) -> HttpReply {
    get(proxy, &api.url("/v1/items"), &[("authorization", "Bearer {/api}")]).await
}

/// The `/tokens` entry of token `name`.
pub async fn token_status(admin: SocketAddr, name: &str) -> serde_json::Value {
    let all = admin_get(admin, "/tokens").await.json();
    all["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name).cloned())
        .unwrap_or_else(|| panic!("/tokens has no {name:?}: {all}"))
}
