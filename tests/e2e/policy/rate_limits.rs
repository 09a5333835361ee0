//! Rate limits per route and per caller: a burst passes, the next request gets 429 with
//! `Retry-After`, and the bucket refills at its rate.

use std::time::Duration;

use crate::support::client::get;
use crate::support::config::{config, rs256_token};
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn route(name: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\npath_prefix = \"/{name}\"\n\
         tokens = [\"tok\"]\n{extra}\n"
    )
}

fn retry_after(reply: &crate::support::client::Reply) -> u64 {
    let value = reply.headers.get("retry-after").and_then(|v| v.to_str().ok()).expect("a Retry-After header");
    value.parse().unwrap_or_else(|_| panic!("Retry-After is whole seconds: {value:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_passes_its_burst_then_answers_429_until_the_bucket_refills() {
    let upstream = Upstream::start().await;
    let port = upstream.port();
    let routes =
        [route("limited", port, "rate_limit = { per_second = 2, burst = 3 }"), route("free", port, "")].concat();
    let run = Running::start(&config("", &format!("{}{routes}", rs256_token("tok", "10m")))).await;
    let auth = [("authorization", "Bearer {/tok}")];

    for i in 0..3 {
        get(run.proxy(), &upstream.url(&format!("/limited/{i}")), &auth).await.assert_upstream_ok();
    }
    let refused = get(run.proxy(), &upstream.url("/limited/over"), &auth).await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(retry_after(&refused), 1, "half a second rounds up to one");
    assert!(refused.text().contains("route limited (2/s burst 3) is over its rate limit"), "{}", refused.text());
    // Another route is not limited by this one.
    get(run.proxy(), &upstream.url("/free/x"), &auth).await.assert_upstream_ok();
    assert_eq!(upstream.count(), 4, "the refused request reached the upstream");

    // One request every half second: a retry passes once the bucket has refilled (refused
    // retries take nothing from it).
    let refilled = wait_until(Duration::from_secs(5), async || {
        get(run.proxy(), &upstream.url("/limited/later"), &auth).await.status == 200
    })
    .await;
    assert!(refilled, "the bucket did not refill");
    let metrics = scrape(run.admin()).await;
    assert!(metrics.count("policy_denials_total", &[("reason", "rate_limited")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_limit_counts_its_requests_on_every_route_and_unrouted() {
    let upstream = Upstream::start().await;
    let port = upstream.port();
    let secret = "rate-caller-0123456789abcdef";
    let toml = config(
        "",
        &format!(
            "{}\n[[callers]]\nname = \"slow\"\nkey = \"{secret}\"\nrate_limit = {{ per_second = 0.01, burst = 2 }}\n\n\
             [[callers]]\nname = \"fast\"\nkey = \"{secret}-fast\"\n{}{}",
            rs256_token("tok", "10m"),
            route("one", port, ""),
            route("two", port, ""),
        ),
    );
    let run = Running::start(&toml).await;
    let slow = [("proxy-authorization", format!("Bearer {secret}"))];
    let slow: Vec<(&str, &str)> = slow.iter().map(|(k, v)| (*k, v.as_str())).collect();

    get(run.proxy(), &upstream.url("/one/a"), &slow).await.assert_upstream_ok();
    get(run.proxy(), &upstream.url("/two/a"), &slow).await.assert_upstream_ok();
    for url in [upstream.url("/one/b"), upstream.url("/unrouted")] {
        let refused = get(run.proxy(), &url, &slow).await;
        refused.assert_error(429, "rate_limited");
        assert_eq!(retry_after(&refused), 100, "one request every 100 s");
        assert!(refused.text().contains("caller slow (0.01/s burst 2)"), "{}", refused.text());
    }
    // Another caller has its own allowance.
    let fast = format!("Bearer {secret}-fast");
    get(run.proxy(), &upstream.url("/one/c"), &[("proxy-authorization", &fast)]).await.assert_upstream_ok();
    assert_eq!(upstream.count(), 3);
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("policy_denials_total", &[("reason", "rate_limited"), ("caller", "slow")]), 2.0);
}
