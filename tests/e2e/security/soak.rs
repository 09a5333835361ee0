//! Soak: a million requests through the real binary while its token refreshes every second and
//! its config is rewritten every few seconds, sampling the sidecar's resident memory throughout.
//!
//! Ignored by default (it runs for a minute or more and wants a release build). Run it with
//!
//! ```text
//! cargo test --release --test e2e soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_REQUESTS=20000` (any count) makes a quick smoke run; `SOAK_CONNECTIONS` (default 32)
//! sets the number of keep-alive client connections.
//!
//! What it asserts:
//! - zero errors: every request gets 200 from the upstream, and the upstream saw a valid token
//!   on every one (HS256 signature, not expired, this test's issuer), never a placeholder;
//! - the token was refreshed and the config reloaded throughout (every rewrite changes a claim,
//!   and the upstream sees the new claim within a few seconds);
//! - RSS is flat: the largest sample of the last quarter of the run is at most
//!   [`RSS_GROWTH_ALLOWED`] (10%, but at least [`RSS_SLACK`]) above the largest of the second
//!   quarter (the first quarter is warm-up: pools, caches and allocator arenas filling up).
//!
//! The figures (requests/s, RSS samples, reloads, refreshes, duration) are printed at the end.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::net::{TcpListener, TcpStream};

use crate::support::config::{write_by_rename, ConfigDir};
use crate::support::jwt::decode;
use crate::support::metrics::scrape;
use crate::support::sidecar::{vm_rss, SidecarProcess};

const DEFAULT_REQUESTS: u64 = 1_000_000;
const DEFAULT_CONNECTIONS: usize = 32;
/// How often the config file is rewritten (each rewrite bumps the `rev` claim).
const RELOAD_EVERY: Duration = Duration::from_secs(3);
/// How often the sidecar's VmRSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Allowed growth of the last quarter's peak RSS over the second quarter's.
const RSS_GROWTH_ALLOWED: f64 = 0.10;
/// ...but never less than this, so a tiny RSS does not fail on allocator noise.
const RSS_SLACK: u64 = 2 * 1024 * 1024;
/// A run that has not finished by then is stuck.
const HARD_LIMIT: Duration = Duration::from_secs(30 * 60);
const ISSUER: &str = "token-sidecar-soak";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Short-lived HS256 token (3s, refreshed 1s before expiry: a new one about every second) on
/// a plain-http route to the upstream. (`refresh_before` stays at least a second below `ttl`:
/// expiry is in whole seconds, and a closer lead makes the refresher sign again and again until
/// the second turns over.)
fn config_text(upstream: u16, rev: u64) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.soak]
algorithm = "HS256"
key_type = "Base64Secret"
key_file = "keys/demo-hs.secret.b64"
ttl = "3s"
refresh_before = "1s"

[tokens.soak.claims]
iss = "{ISSUER}"
rev = {rev}

[[routes]]
name = "soak"
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["soak"]

[routes.placeholders]
tok = "soak"
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Upstream: checks the token on every request without keeping anything per request.

#[derive(Default)]
struct UpstreamStats {
    ok: AtomicU64,
    bad: AtomicU64,
    /// Distinct tokens seen (each verified in full once per connection).
    distinct_tokens: Mutex<HashSet<Bytes>>,
    /// Highest `rev` claim seen: the last reload that reached the upstream.
    max_rev: AtomicU64,
    first_bad: Mutex<Vec<String>>,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
    stats: UpstreamStats,
}

/// The last token a connection saw and its `exp`: tokens change once a second, so almost every
/// request is a string comparison and an expiry check.
type LastToken = Mutex<Option<(Bytes, u64)>>;

impl Verifier {
    fn check(&self, last: &LastToken, authorization: Option<&[u8]>) -> Result<(), String> {
        let token = authorization
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .ok_or_else(|| format!("no bearer token: {:?}", authorization.map(String::from_utf8_lossy)))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let mut last = last.lock().unwrap();
        if let Some((seen, exp)) = last.as_ref() {
            if seen.as_ref() == token {
                return if now <= *exp { Ok(()) } else { Err(format!("expired token (exp {exp}, now {now})")) };
            }
        }
        let text = std::str::from_utf8(token).map_err(|_| "token is not UTF-8".to_string())?;
        let claims = decode(text, &self.key, &self.validation).map_err(|e| format!("invalid token {text:?}: {e}"))?;
        let exp = claims["exp"].as_u64().ok_or("no exp")?;
        let rev = claims["rev"].as_u64().ok_or("no rev")?;
        self.stats.distinct_tokens.lock().unwrap().insert(Bytes::copy_from_slice(token));
        self.stats.max_rev.fetch_max(rev, Ordering::Relaxed);
        *last = Some((Bytes::copy_from_slice(token), exp));
        Ok(())
    }
}

async fn start_upstream(verifier: Arc<Verifier>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let verifier = Arc::clone(&verifier);
            let last: Arc<LastToken> = Arc::default();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let result = verifier.check(&last, req.headers().get("authorization").map(|v| v.as_bytes()));
                    let response = match result {
                        Ok(()) => {
                            verifier.stats.ok.fetch_add(1, Ordering::Relaxed);
                            Response::new(Full::new(Bytes::from_static(b"ok")))
                        }
                        Err(why) => {
                            verifier.stats.bad.fetch_add(1, Ordering::Relaxed);
                            let mut first = verifier.stats.first_bad.lock().unwrap();
                            if first.len() < 10 {
                                first.push(why.clone());
                            }
                            let mut r = Response::new(Full::new(Bytes::from(why)));
                            *r.status_mut() = StatusCode::UNAUTHORIZED;
                            r
                        }
                    };
                    async move {
                        // Drain the (empty) request body so the connection stays reusable.
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

// ---------------------------------------------------------------------------------------------
// Clients

#[derive(Default)]
struct ClientStats {
    done: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl ClientStats {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(what);
        }
    }
}

async fn connect(proxy: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(proxy).await.map_err(|e| format!("connect {proxy}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One keep-alive connection sending absolute-form requests until `next` reaches `total`.
async fn client(proxy: SocketAddr, upstream: SocketAddr, next: Arc<AtomicU64>, total: u64, stats: Arc<ClientStats>) {
    let url = format!("http://{upstream}/soak");
    let host = upstream.to_string();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        if sender.as_ref().is_none_or(SendRequest::is_closed) {
            if sender.is_some() {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            match connect(proxy).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    stats.error(e);
                    sender = None;
                    stats.done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected");
        let req = Request::builder()
            .uri(url.as_str())
            .header(http::header::HOST, host.as_str())
            .header(http::header::AUTHORIZATION, "Bearer {/tok}")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let outcome = async {
            s.ready().await.map_err(|e| format!("not ready: {e}"))?;
            let response = s.send_request(req).await.map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            let sidecar_error = response
                .headers()
                .get(token_sidecar::error::ERROR_HEADER)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = response.into_body().collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
            if status == StatusCode::OK && sidecar_error.is_none() && &body[..] == b"ok" {
                Ok(())
            } else {
                Err(format!("{status} {sidecar_error:?}: {}", String::from_utf8_lossy(&body)))
            }
        }
        .await;
        if let Err(e) = outcome {
            stats.error(e);
        }
        stats.done.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

#[derive(Debug, Clone, Copy)]
struct RssSample {
    at: Duration,
    requests: u64,
    rss: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn max_rss(samples: &[RssSample]) -> u64 {
    samples.iter().map(|s| s.rss).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: a million requests; run with --release --ignored (see the top of tests/e2e/security/soak.rs)"]
async fn soak() {
    let total: u64 = env_or("SOAK_REQUESTS", DEFAULT_REQUESTS);
    let connections: usize = env_or("SOAK_CONNECTIONS", DEFAULT_CONNECTIONS).max(1);

    let dir = ConfigDir::with_demo_keys();
    let secret_b64 = std::fs::read_to_string(dir.path("keys/demo-hs.secret.b64")).expect("demo secret");
    let secret = base64::engine::general_purpose::STANDARD.decode(secret_b64.trim()).expect("base64 secret");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let verifier =
        Arc::new(Verifier { key: DecodingKey::from_secret(&secret), validation, stats: UpstreamStats::default() });
    let (upstream, upstream_task) = start_upstream(Arc::clone(&verifier)).await;

    let config = dir.path("sidecar.toml");
    write_by_rename(&config, config_text(upstream.port(), 0).as_bytes());
    let sidecar = SidecarProcess::start(&config, "info").await;
    let pid = sidecar.pid;
    let before = scrape(sidecar.admin).await;

    let started = Instant::now();
    let finished = Arc::new(AtomicBool::new(false));
    let client_stats = Arc::new(ClientStats::default());

    // RSS sampler.
    let samples = Arc::new(Mutex::new(Vec::<RssSample>::new()));
    let sampler = {
        let (samples, finished, stats) = (Arc::clone(&samples), Arc::clone(&finished), Arc::clone(&client_stats));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while !finished.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(rss) = vm_rss(pid) {
                    let requests = stats.done.load(Ordering::Relaxed);
                    samples.lock().unwrap().push(RssSample { at: started.elapsed(), requests, rss });
                }
            }
        })
    };

    // Reloader: a new `rev` claim every few seconds, written as editors do (temp file + rename).
    let reloads_written = Arc::new(AtomicUsize::new(0));
    let reloader = {
        let (finished, written, config) = (Arc::clone(&finished), Arc::clone(&reloads_written), config.clone());
        let port = upstream.port();
        tokio::spawn(async move {
            let mut rev = 0;
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                if finished.load(Ordering::Relaxed) {
                    break;
                }
                rev += 1;
                write_by_rename(&config, config_text(port, rev).as_bytes());
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Progress line every 10 s, so a long run shows it is alive.
    let progress = {
        let (finished, stats) = (Arc::clone(&finished), Arc::clone(&client_stats));
        let samples = Arc::clone(&samples);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            while !finished.load(Ordering::Relaxed) {
                tick.tick().await;
                let done = stats.done.load(Ordering::Relaxed);
                let rss = samples.lock().unwrap().last().map_or(0, |s| s.rss);
                eprintln!(
                    "soak: {done}/{total} requests, {} errors, {:.0}/s, RSS {:.1} MiB",
                    stats.errors.load(Ordering::Relaxed),
                    done as f64 / started.elapsed().as_secs_f64(),
                    mib(rss)
                );
            }
        })
    };

    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(sidecar.proxy, upstream, Arc::clone(&next), total, Arc::clone(&client_stats))))
        .collect();
    let all_done = async {
        for c in clients {
            c.await.expect("client task");
        }
    };
    if tokio::time::timeout(HARD_LIMIT, all_done).await.is_err() {
        panic!(
            "soak did not finish within {HARD_LIMIT:?}: {} of {total} requests done",
            client_stats.done.load(Ordering::Relaxed)
        );
    }
    let duration = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    reloader.await.expect("reloader");
    sampler.await.expect("sampler");
    progress.abort();

    // Every rewrite but possibly the last (it may have landed just as traffic ended) must have
    // reached the upstream as a new `rev` claim: the watcher kept working to the end.
    let last_rev = reloads_written.load(Ordering::Relaxed) as u64;
    let max_rev = verifier.stats.max_rev.load(Ordering::Relaxed);
    let reached = max_rev >= last_rev.saturating_sub(1);
    let after = scrape(sidecar.admin).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    let reloads_ok = delta("config_reloads_total", &[("result", "ok")]);
    let reloads_failed = delta("config_reloads_total", &[("result", "error")]);
    let refreshes_ok = delta("token_refreshes_total", &[("token", "soak"), ("result", "ok")]);
    let refreshes_failed = delta("token_refreshes_total", &[("token", "soak"), ("result", "error")]);
    let errors_logged = sidecar.messages("ERROR");
    let log = sidecar.stop();
    upstream_task.abort();

    // Figures.
    let samples = samples.lock().unwrap().clone();
    let n = samples.len();
    let quarter = |q: usize| &samples[n * q / 4..n * (q + 1) / 4];
    let (second, last) = (quarter(1), quarter(3));
    let done = client_stats.done.load(Ordering::Relaxed);
    let errors = client_stats.errors.load(Ordering::Relaxed);
    let show = |s: Option<&RssSample>| {
        s.map_or("-".to_string(), |s| {
            format!("{:.1} MiB at {:.1}s ({} requests)", mib(s.rss), s.at.as_secs_f64(), s.requests)
        })
    };
    println!("soak figures:");
    println!("  requests        {done} over {connections} connections, {errors} errors");
    println!(
        "  duration        {:.1}s, {:.0} requests/s",
        duration.as_secs_f64(),
        done as f64 / duration.as_secs_f64()
    );
    println!(
        "  upstream        {} ok, {} rejected, {} distinct tokens, last rev seen {} (written {last_rev})",
        verifier.stats.ok.load(Ordering::Relaxed),
        verifier.stats.bad.load(Ordering::Relaxed),
        verifier.stats.distinct_tokens.lock().unwrap().len(),
        max_rev,
    );
    println!(
        "  reloads         {} written, {reloads_ok} ok, {reloads_failed} failed",
        reloads_written.load(Ordering::Relaxed)
    );
    println!("  refreshes       {refreshes_ok} ok, {refreshes_failed} failed");
    println!("  reconnects      {}", client_stats.reconnects.load(Ordering::Relaxed));
    println!("  RSS samples     {n}, every {SAMPLE_EVERY:?}");
    println!("  RSS first       {}", show(samples.first()));
    println!("  RSS mid         {}", show(samples.get(n / 2)));
    println!("  RSS last        {}", show(samples.last()));
    println!(
        "  RSS peak        {:.1} MiB overall, {:.1} MiB in the second quarter, {:.1} MiB in the last",
        mib(max_rss(&samples)),
        mib(max_rss(second)),
        mib(max_rss(last))
    );
    let deciles: Vec<String> =
        (0..10).filter_map(|d| samples.get(n * d / 10)).map(|s| format!("{:.1}", mib(s.rss))).collect();
    println!("  RSS by decile   {} MiB", deciles.join(" "));

    // Assertions.
    let first_errors = client_stats.first_errors.lock().unwrap().clone();
    let first_bad = verifier.stats.first_bad.lock().unwrap().clone();
    assert_eq!(done, total, "not every request was sent");
    assert_eq!(errors, 0, "client errors, first ones: {first_errors:#?}\nupstream rejections: {first_bad:#?}");
    assert_eq!(verifier.stats.bad.load(Ordering::Relaxed), 0, "upstream rejected tokens: {first_bad:#?}");
    assert_eq!(verifier.stats.ok.load(Ordering::Relaxed), total, "the upstream did not see every request");
    assert!(errors_logged.is_empty(), "the sidecar logged errors: {errors_logged:#?}");
    assert!(reached, "config rewrites up to rev {last_rev} were written, the upstream saw rev {max_rev}; log:\n{log}");
    assert_eq!(reloads_failed, 0.0, "failed reloads; log:\n{log}");
    assert_eq!(refreshes_failed, 0.0, "failed refreshes; log:\n{log}");
    let seconds = duration.as_secs();
    if seconds >= 10 {
        // About one refresh a second, plus one per reload (a changed claim mints anew).
        assert!(refreshes_ok >= (seconds / 2) as f64, "only {refreshes_ok} refreshes in {seconds}s");
        let most = (3 * seconds) as f64 + 2.0 * reloads_ok + 10.0;
        assert!(refreshes_ok <= most, "{refreshes_ok} refreshes in {seconds}s: the refresher is spinning");
        assert!(reloads_ok >= 1.0, "no reload in {seconds}s");
    }
    assert!(n >= 8, "only {n} RSS samples; the run was too short to judge memory (raise SOAK_REQUESTS)");
    let (second_peak, last_peak) = (max_rss(second), max_rss(last));
    let allowed = second_peak + ((second_peak as f64 * RSS_GROWTH_ALLOWED) as u64).max(RSS_SLACK);
    assert!(
        last_peak <= allowed,
        "RSS grew: last-quarter peak {:.1} MiB > {:.1} MiB allowed (second-quarter peak {:.1} MiB)",
        mib(last_peak),
        mib(allowed),
        mib(second_peak)
    );
}
