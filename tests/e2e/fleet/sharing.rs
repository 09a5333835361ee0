//! Two and ten sidecars in front of one IdP make one exchange per token lifetime between them:
//! one sidecar exchanges, the others read its (sealed) entry from Redis, and every sidecar
//! carries every token the IdP issued.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::fleet::{api_ok, idp_with_lifetime, last_bearer, start_all, token_status, Fleet, Traffic, PROMPT};
use crate::support::idp::access_token;
use crate::support::wait::wait_until;

/// Token lifetime: the sidecars refresh a fifth of it before expiry.
const LIFETIME: u64 = 3;

async fn one_exchange_per_lifetime(n: usize) {
    let fleet = Fleet::start().await;
    let idp = idp_with_lifetime(LIFETIME).await;
    let api = api_ok().await;
    let sidecars = start_all(n, &fleet.config(&idp, api.port(), "")).await;
    assert_eq!(idp.count(), 1, "{n} sidecars starting together exchange once between them");

    // Traffic through every sidecar until the IdP has issued three tokens (two refreshes)
    // and every sidecar carries the third.
    let traffic = Traffic::start(sidecars.iter().map(|s| s.proxy()).collect(), &api);
    idp.wait_for(3, Duration::from_secs(4 * LIFETIME) + PROMPT).await;
    let all_on_third = wait_until(PROMPT, async || (0..n).all(|i| last_bearer(&api, i) == Some(access_token(3)))).await;
    let failures = traffic.stop().await;
    assert!(all_on_third, "not every sidecar moved to the third token");
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    // No two exchanges for one lifetime: consecutive exchanges are most of a lifetime apart.
    let exchanges = idp.requests();
    assert_eq!(exchanges.len(), 3, "one exchange per lifetime for the whole fleet");
    for pair in exchanges.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_secs(LIFETIME) / 2, "two exchanges {gap:?} apart: sidecars exchanged alone");
    }
    // Every sidecar carried each of the first two tokens (it read the others' exchanges).
    let mut carried: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in api.requests() {
        let sidecar = s.uri.rsplit('=').next().unwrap_or_default().to_string();
        carried.entry(s.bearer().unwrap_or_default().to_string()).or_default().insert(sidecar);
    }
    for token in [access_token(1), access_token(2)] {
        let by = carried.get(&token).map_or(0, BTreeSet::len);
        assert_eq!(by, n, "token {token} was carried by {by} of {n} sidecars: {carried:?}");
    }
    assert!(carried.keys().all(|t| t.starts_with("idp-access-")), "{carried:?}");

    // /tokens tells where each value came from: one sidecar exchanged, the others shared.
    let mut sources = Vec::new();
    for s in &sidecars {
        let status = token_status(s.admin(), "api").await;
        assert_eq!(status["shared"], true, "{status}");
        sources.push(status["source"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(sources.iter().filter(|s| *s == "exchange").count(), 1, "{sources:?}");
    assert_eq!(sources.iter().filter(|s| *s == "shared").count(), n - 1, "{sources:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_make_one_exchange_per_token_lifetime() {
    one_exchange_per_lifetime(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sidecars_make_one_exchange_per_token_lifetime() {
    one_exchange_per_lifetime(10).await;
}
