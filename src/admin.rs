//! The admin listener: health, readiness, token status, public keys and Prometheus metrics.
//!
//! Nothing here ever returns a token value or key material: `/tokens` reports names, times
//! and errors; `/.well-known/jwks.json` holds public keys only.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// The process-wide Prometheus recorder, installed on first use so every metric recorded
/// afterwards (including handles cached in snapshots) reaches `/metrics`.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe_metrics();
        handle
    })
}

/// Drains recorded histogram samples into their buckets every few seconds. Without it,
/// samples pile up between scrapes, and memory grows with traffic when nobody scrapes.
pub async fn metrics_upkeep() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        metrics_handle().run_upkeep();
    }
}

/// Every metric the sidecar exports, with its help text (README "Metrics" lists the same).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("proxy_requests_total", "Requests served, by route and status.");
    describe_histogram!("proxy_request_duration_seconds", Unit::Seconds, "Time to response headers, by route.");
    describe_counter!("substitutions_total", "Placeholders replaced with a token, by token.");
    describe_counter!("token_refreshes_total", "Token signings and exchanges, by token and result (ok, error).");
    describe_counter!(
        "token_renewals_after_401_total",
        "Exchanged tokens renewed because an upstream answered 401, by token."
    );
    describe_gauge!("token_expires_in_seconds", Unit::Seconds, "Seconds until each token's current value expires.");
    describe_counter!("config_reloads_total", "Configuration reloads, by result (ok, error).");
    describe_counter!("upstream_errors_total", "Failed upstream requests, by kind.");
    describe_gauge!("proxy_open_connections", "Client connections currently open.");
    describe_counter!("tls_leaf_certificates_minted_total", "Leaf certificates minted for intercepted hosts.");
    describe_counter!("tls_handshake_failures_total", "TLS handshakes with clients that failed.");
    describe_gauge!("fleet_redis_up", "1 while the fleet's Redis answers, 0 while it does not ([fleet] only).");
    describe_counter!(
        "fleet_operations_total",
        "Redis operations, by op and result (ok, error, timeout, unavailable, skipped)."
    );
    describe_counter!(
        "fleet_entries_rejected_total",
        "Entries in Redis ignored because they were not sealed by this fleet, by reason."
    );
    describe_counter!(
        "fleet_token_sources_total",
        "Shared tokens obtained, by token and source (shared, exchange, exchange_fallback)."
    );
    describe_counter!(
        "cache_requests_total",
        "Requests of cached routes, by route and result (hit, miss, stale, bypass)."
    );
    describe_gauge!("cache_bytes", Unit::Bytes, "Bytes held by the function-result cache.");
    describe_counter!("cache_evictions_total", "Cached responses evicted to stay within [cache] max_bytes.");
    // Present from the start, so alerts on them work before the first event.
    for result in ["ok", "error"] {
        metrics::counter!("config_reloads_total", "result" => result).increment(0);
    }
    metrics::gauge!("proxy_open_connections").increment(0.0);
}

/// Serves the admin endpoints until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<ArcSwap<Snapshot>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&req, state.load_full()).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn route(req: &Request<Incoming>, snapshot: Arc<Snapshot>) -> Response<Full<Bytes>> {
    if let Some(name) = req.uri().path().strip_prefix("/tokens/").and_then(|p| p.strip_suffix("/refresh")) {
        if req.method() != Method::POST {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        return refresh(&snapshot, name).await;
    }
    if req.uri().path() == "/cache" || req.uri().path().starts_with("/cache/") {
        return crate::cache::admin::serve(req.method(), req.uri().path(), &snapshot).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let snapshot = &*snapshot;
    let now = SystemTime::now();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if snapshot.all_tokens_current(now) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: some tokens have no current value\n")
            }
        }
        "/metrics" => {
            update_expiry_gauges(snapshot, now);
            let mut r = text(StatusCode::OK, &metrics_handle().render());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        "/tokens" => json(&tokens_status(snapshot, now)),
        "/.well-known/jwks.json" => json(&jwks(snapshot)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics /tokens /cache /.well-known/jwks.json\n",
        ),
    }
}

/// `POST /tokens/NAME/refresh`: produce a new value now (after revoking a token at the
/// provider, or to check a changed client secret), waiting for a refresh already under way.
async fn refresh(snapshot: &Snapshot, name: &str) -> Response<Full<Bytes>> {
    let Some(cell) = snapshot.cells.get(name) else {
        let mut r = json(&serde_json::json!({
            "error": "unknown_token",
            "message": format!("no token named {name:?}; GET /tokens lists them"),
        }));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let expires = snapshot.config.tokens.get(name).is_some_and(|d| d.expires());
    match cell.refresh_now().await {
        Ok(token) => json(&serde_json::json!({
            "token": name,
            "result": "ok",
            "expires_at": unix(Some(token.expires_at).filter(|_| expires)),
        })),
        Err(e) => {
            let mut r = json(&serde_json::json!({ "error": "refresh_failed", "message": e.to_string() }));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

/// Seconds until each token expires, computed at scrape time.
fn update_expiry_gauges(snapshot: &Snapshot, now: SystemTime) {
    for (name, cell) in &snapshot.cells {
        if snapshot.config.tokens.get(name).is_some_and(|def| !def.expires()) {
            continue;
        }
        let left = cell.latest().map_or(0.0, |t| match t.expires_at.duration_since(now) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        });
        metrics::gauge!("token_expires_in_seconds", "token" => name.clone()).set(left);
    }
}

fn unix(t: Option<SystemTime>) -> serde_json::Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(serde_json::Value::Null, |d| d.as_secs().into())
}

/// Status of every token, without the token.
pub fn tokens_status(snapshot: &Snapshot, now: SystemTime) -> serde_json::Value {
    let tokens: Vec<serde_json::Value> = snapshot
        .config
        .tokens
        .iter()
        .map(|(name, def)| {
            let cell = snapshot.cells.get(name);
            let latest = cell.and_then(|c| c.latest());
            let status = cell.map(|c| c.status()).unwrap_or_default();
            serde_json::json!({
                "name": name,
                "kind": def.kind_name(),
                "algorithm": def.algorithm_name(),
                "kid": def.kid(),
                "issued_at": unix(latest.as_ref().map(|t| t.issued_at)),
                "expires_at": unix(latest.as_ref().filter(|_| def.expires()).map(|t| t.expires_at)),
                "current": cell.is_some_and(|c| c.current(now).is_some()),
                "last_refresh": unix(status.last_attempt),
                "last_refresh_result": if status.last_attempt.is_none() { "none" } else if status.last_error.is_some() { "error" } else { "ok" },
                "last_error": status.last_error,
                "consecutive_failures": status.consecutive_failures,
                "token_url_host": def.exchange().and_then(|e| e.token_url.host()),
                "shared": snapshot.config.shares(name),
                "source": status.source,
            })
        })
        .collect();
    let mut out = serde_json::json!({ "tokens": tokens });
    if let Some(fleet) = &snapshot.fleet {
        out["fleet"] = serde_json::json!({
            "redis": fleet.settings.redis.to_string(),
            "redis_up": fleet.store.client().is_up(),
        });
    }
    out
}

/// The public keys of every asymmetric token, as a JWK set.
pub fn jwks(snapshot: &Snapshot) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = snapshot
        .config
        .tokens
        .values()
        .filter_map(|def| def.public_jwk())
        .filter_map(|jwk| serde_json::to_value(jwk).ok())
        .collect();
    serde_json::json!({ "keys": keys })
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

// The measurement reads the resident size from /proc.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    /// Set in the child process that does the measuring.
    const CHILD: &str = "TOKEN_SIDECAR_UPKEEP_CHILD";
    const TEST: &str = "admin::tests::upkeep_drains_histogram_samples";
    /// Samples recorded between two upkeep ticks, and how many ticks. Each sample the exporter
    /// holds costs about 16 bytes (value and timestamp), so undrained they would take ~64 MiB.
    const BATCH: usize = 250_000;
    const BATCHES: usize = 16;

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().expect("VmRSS in kB") << 10
    }

    /// A running sidecar's upkeep timer drains recorded histogram samples, so memory stays
    /// bounded when nobody scrapes `/metrics` (a scrape drains them too; none happens here). Measured
    /// in a child process running only this test: the recorder is process-wide, and other tests
    /// would otherwise record into it and move the resident size.
    #[test]
    fn upkeep_drains_histogram_samples() {
        if std::env::var_os(CHILD).is_some() {
            return measure();
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([TEST, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && shown.contains("1 passed"), "the measuring child failed:\n{shown}");
    }

    fn measure() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            // A running sidecar (no tokens, no routes) and its upkeep timer.
            let text = "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
            let config = crate::config::Config::from_text(std::path::Path::new("upkeep.toml"), text).unwrap();
            let sidecar = crate::server::Sidecar::start(config).await.expect("the sidecar starts");
            let histogram = metrics::histogram!("proxy_request_duration_seconds", "route" => "upkeep-test");
            let start = rss_bytes();
            let mut peak = 0;
            for _ in 0..BATCHES {
                for i in 0..BATCH {
                    histogram.record(i as f64 * 1e-7);
                }
                // The paused clock jumps to the next upkeep tick.
                tokio::time::sleep(Duration::from_secs(5)).await;
                peak = peak.max(rss_bytes().saturating_sub(start));
            }
            sidecar.shutdown().await;
            let undrained = (BATCH * BATCHES * 16) as u64;
            eprintln!(
                "upkeep: resident size grew by at most {} KiB for {} KiB of samples",
                peak >> 10,
                undrained >> 10
            );
            assert!(
                peak < undrained / 4,
                "histogram samples pile up: +{} KiB after {} samples",
                peak >> 10,
                BATCH * BATCHES
            );
        });
    }
}
