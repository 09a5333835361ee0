//! Address rules: every upstream connection (routed or not, proxied, tunnelled or a token
//! exchange) goes only to addresses `[policy]` allows, judged after resolution.

use std::time::Duration;

use crate::exchange::{oauth2, wait_error};
use crate::policy::{policy, Sentinel};
use crate::support::client::{curl, get, run_command, stdout, Client};
use crate::support::config::{config, route, rs256_token};
use crate::support::idp::Idp;
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;
use crate::support::tunnel::open_tunnel;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const DENY_LOOPBACK: &str = "deny_networks = [\"loopback\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_addresses_are_refused_by_literal_name_and_mapped_form_before_any_connection() {
    let sentinel = Sentinel::start().await;
    let upstream = Upstream::start().await;
    let routed = format!(
        "\n[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.2\"\nport = {}\ntokens = [\"tok\"]\n",
        sentinel.addr.port()
    );
    let toml = config("", &format!("{}{}{routed}", policy(DENY_LOOPBACK), rs256_token("tok", "10m")));
    let run = Running::start(&toml).await;
    let (s, u) = (sentinel.addr.port(), upstream.port());

    let cases = [
        (
            format!("http://127.0.0.2:{s}/unrouted"),
            "connection to 127.0.0.2 denied by [policy] deny_networks: 127.0.0.2 is in loopback",
        ),
        (format!("http://127.0.0.2:{s}/routed"), "127.0.0.2 is in loopback"),
        // A name is judged by what it resolves to.
        (
            format!("http://localhost:{u}/x"),
            "connection to localhost denied by [policy] deny_networks: 127.0.0.1 is in loopback",
        ),
        (format!("http://[::1]:{u}/x"), "::1 is in loopback"),
        // An IPv4-mapped IPv6 address is its IPv4 address.
        (format!("http://[::ffff:127.0.0.2]:{s}/x"), "127.0.0.2 is in loopback"),
        (format!("http://127.1:{u}/x"), "127.0.0.1 is in loopback"),
    ];
    for (url, reason) in &cases {
        let reply = get(run.proxy(), url, &[("authorization", "Bearer {/tok}")]).await;
        reply.assert_error(403, "policy_denied");
        let message = reply.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(reason), "{url}: {message}");
    }
    // (127.0.0.3, not the routed 127.0.0.2: a CONNECT to a host and port with an `http` route
    // is opened and its requests are judged one by one, as routed requests.)
    for target in [format!("127.0.0.3:{s}"), format!("localhost:{u}")] {
        let refused = open_tunnel(run.proxy(), &target).await.expect_err("a CONNECT to a denied address");
        refused.assert_error(403, "policy_denied", &format!("CONNECT {target}"));
    }
    // A real client sees the same.
    let mut c = curl();
    c.args(["-s", "-x", &format!("http://{}", run.proxy()), &format!("http://127.0.0.2:{s}/curl")]);
    let out = stdout(&run_command(c).await);
    assert!(out.contains("\"error\":\"policy_denied\""), "curl got: {out}");

    assert_eq!(sentinel.accepted(), 0, "a denied address was connected to");
    upstream.assert_nothing_received("requests to denied addresses");
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("policy_denials_total", &[("reason", "policy_denied")]), 9.0);
    assert_eq!(metrics.count("upstream_errors_total", &[]), 0.0, "a policy denial is not an upstream error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_allowance_opens_only_that_route_and_its_connections_are_not_shared() {
    let upstream = Upstream::start().await;
    let allowed = route(upstream.port(), &["tok"], "path_prefix = \"/allowed\"\nallow_networks = [\"127.0.0.1\"]");
    let toml = config("", &format!("{}{}{allowed}", policy(DENY_LOOPBACK), rs256_token("tok", "10m")));
    let run = Running::start(&toml).await;

    // One keep-alive client connection to the proxy: the routed request opens a pooled
    // upstream connection under the route's allowance ...
    let mut client = Client::new(run.proxy());
    let ok = client.get(&upstream.url("/allowed/x"), &[("authorization", "Bearer {/tok}")]).await.expect("routed");
    ok.assert_upstream_ok();
    assert!(upstream.single().jwt().is_some(), "the route's token reached its upstream");
    // ... which unrouted traffic to the same host and port must not reuse.
    let unrouted = client.get(&upstream.url("/other"), &[]).await.expect("unrouted");
    unrouted.assert_error(403, "policy_denied");
    assert_eq!(upstream.count(), 1, "the unrouted request reached the upstream");
    let again = client.get(&upstream.url("/allowed/y"), &[]).await.expect("routed again");
    again.assert_upstream_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_denies_an_address_drops_the_connections_opened_before() {
    let upstream = Upstream::start().await;
    let open = config("", &route(upstream.port(), &[], ""));
    let run = Running::start(&open).await;
    let mut client = Client::new(run.proxy());
    client.get(&upstream.url("/before"), &[]).await.expect("before").assert_upstream_ok();

    let reloads = scrape(run.admin()).await.count("config_reloads_total", &[("result", "ok")]);
    run.dir.write_config(&config("", &format!("{}{}", policy(DENY_LOOPBACK), route(upstream.port(), &[], ""))));
    run.sidecar.hup().await;
    let applied = wait_until(Duration::from_secs(10), async || {
        scrape(run.admin()).await.count("config_reloads_total", &[("result", "ok")]) > reloads
    })
    .await;
    assert!(applied, "the reload was not applied; log:\n{}", run.sidecar.log_text());
    // The pooled connection to the now denied address is not reused.
    client.get(&upstream.url("/after"), &[]).await.expect("after").assert_error(403, "policy_denied");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchanges_meet_the_same_rules() {
    let idp = Idp::start().await;
    let toml = config(
        "",
        &format!("{}{}", policy(DENY_LOOPBACK), oauth2("api", &idp, "/token", "grant = \"client_credentials\"\n")),
    );
    let run = Running::start(&toml).await;
    let error = wait_error(run.admin(), "api").await;
    assert!(error.contains("connection to 127.0.0.1 denied by [policy] deny_networks"), "last_error: {error}");
    assert_eq!(idp.count(), 0, "the token endpoint at a denied address was contacted");
}
