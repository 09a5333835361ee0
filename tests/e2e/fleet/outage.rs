//! Redis is never an outage: killed under traffic, every request still succeeds, each sidecar
//! exchanges for itself once per token lifetime, the state change is logged once and shown by
//! `fleet_redis_up`; restarted, the sidecars notice by themselves and share again. A hung Redis
//! (SIGSTOP) costs an operation timeout, not a request.

use std::time::Duration;

use crate::fleet::{api_ok, idp_with_lifetime, last_bearer, start_all, token_status, Fleet, Traffic, PROMPT};
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;
use crate::support::wait::wait_until;

const LIFETIME: u64 = 3;

async fn redis_up(sidecar: &Running) -> Option<f64> {
    scrape(sidecar.admin()).await.value("fleet_redis_up", &[])
}

async fn sources(sidecars: &[Running]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sidecars {
        out.push(token_status(s.admin(), "api").await["source"].as_str().unwrap_or_default().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_traffic_fails_no_request_and_sharing_resumes() {
    let mut fleet = Fleet::start().await;
    let idp = idp_with_lifetime(LIFETIME).await;
    let api = api_ok().await;
    let sidecars = start_all(2, &fleet.config(&idp, api.port(), "")).await;
    let traffic = Traffic::start(sidecars.iter().map(|s| s.proxy()).collect(), &api);
    for s in &sidecars {
        assert_eq!(redis_up(s).await, Some(1.0), "fleet_redis_up once connected");
    }
    assert_eq!(idp.count(), 1, "shared at start");

    // Redis dies. At their next refresh both sidecars exchange for themselves.
    fleet.redis.kill();
    let killed_with = idp.count();
    let local = wait_until(Duration::from_secs(2 * LIFETIME) + PROMPT, async || {
        sources(&sidecars).await.iter().all(|s| s == "exchange_fallback")
    })
    .await;
    assert!(local, "both sidecars exchange locally while Redis is down: {:?}", sources(&sidecars).await);
    for s in &sidecars {
        assert_eq!(redis_up(s).await, Some(0.0), "fleet_redis_up while Redis is down");
    }
    // One more lifetime down: one exchange per sidecar per lifetime, no more.
    let down_from = std::time::Instant::now();
    let base = idp.count();
    idp.wait_for(base + 2, Duration::from_secs(2 * LIFETIME) + PROMPT).await;
    let down_for = down_from.elapsed();
    let exchanged = idp.count() - killed_with;
    let per_sidecar_bound = (down_for.as_secs_f64() + 2.0 * LIFETIME as f64) / (0.75 * LIFETIME as f64) + 1.0;
    assert!(
        exchanged as f64 <= 2.0 * per_sidecar_bound,
        "{exchanged} exchanges while Redis was down for about {down_for:?}"
    );
    assert_ne!(last_bearer(&api, 0), last_bearer(&api, 1), "each sidecar carries its own token while Redis is down");

    // Redis comes back, empty. The sidecars notice without help and share again.
    fleet.redis.restart().await;
    for s in &sidecars {
        let back = wait_until(PROMPT, async || redis_up(s).await == Some(1.0)).await;
        assert!(back, "fleet_redis_up did not return to 1");
    }
    let together = wait_until(Duration::from_secs(3 * LIFETIME) + PROMPT, async || {
        let (a, b) = (last_bearer(&api, 0), last_bearer(&api, 1));
        a.is_some() && a == b && sources(&sidecars).await.contains(&"shared".to_string())
    })
    .await;
    assert!(together, "the sidecars did not share a token again after Redis came back");
    // From here, one exchange per lifetime for both.
    let shared_token = last_bearer(&api, 0);
    let at = idp.count();
    let next = wait_until(Duration::from_secs(2 * LIFETIME) + PROMPT, async || {
        let (a, b) = (last_bearer(&api, 0), last_bearer(&api, 1));
        a != shared_token && a == b
    })
    .await;
    assert!(next, "the sidecars did not move on to a new shared token");
    assert_eq!(idp.count(), at + 1, "one exchange for both sidecars after Redis came back");

    let failures = traffic.stop().await;
    assert!(failures.is_empty(), "requests failed while Redis was down or restarting: {failures:?}");
    for s in &sidecars {
        let log = &s.sidecar;
        assert_eq!(log.count_log("Redis is unavailable"), 1, "one line when Redis went down:\n{}", log.log_text());
        assert_eq!(log.count_log("Redis is reachable"), 2, "one line at start and one on recovery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_an_operation_timeout_not_a_request() {
    let fleet = Fleet::start().await;
    let idp = idp_with_lifetime(LIFETIME).await;
    let api = api_ok().await;
    let sidecars = start_all(1, &fleet.config(&idp, api.port(), "operation_timeout = \"300ms\"\n")).await;
    let traffic = Traffic::start(vec![sidecars[0].proxy()], &api);
    fleet.redis.signal("STOP");
    let local = wait_until(Duration::from_secs(2 * LIFETIME) + PROMPT, async || {
        sources(&sidecars).await == ["exchange_fallback"]
    })
    .await;
    fleet.redis.signal("CONT");
    assert!(local, "the sidecar did not fall back to a local exchange: {:?}", sources(&sidecars).await);
    let timeouts = scrape(sidecars[0].admin()).await.count("fleet_operations_total", &[("result", "timeout")]);
    assert!(timeouts >= 1.0, "a hung Redis is a timeout: {timeouts}");
    let failures = traffic.stop().await;
    assert!(failures.is_empty(), "requests failed while Redis hung: {failures:?}");
}
