//! Host rules for unrouted traffic: `allow_hosts` / `deny_hosts`, for absolute-form requests
//! and CONNECT targets alike; routed traffic goes where its route says.

use crate::policy::policy;
use crate::support::client::get;
use crate::support::config::{config, rs256_token};
use crate::support::sidecar::Running;
use crate::support::tunnel::open_tunnel;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_limits_unrouted_requests_and_tunnels_to_its_hosts() {
    let upstream = Upstream::start().await;
    let run = Running::start(&config("", &policy("allow_hosts = [\"localhost\"]"))).await;
    let port = upstream.port();

    get(run.proxy(), &format!("http://localhost:{port}/named"), &[]).await.assert_upstream_ok();
    let refused = get(run.proxy(), &format!("http://127.0.0.1:{port}/literal"), &[]).await;
    refused.assert_error(403, "policy_denied");
    assert!(refused.text().contains("127.0.0.1 is denied: it is not in [policy] allow_hosts"), "{}", refused.text());
    // Hosts are compared in one spelling.
    get(run.proxy(), &format!("http://LocalHost.:{port}/spelled"), &[]).await.assert_upstream_ok();

    assert!(open_tunnel(run.proxy(), &format!("localhost:{port}")).await.is_ok(), "CONNECT to an allowed host");
    let tunnel = open_tunnel(run.proxy(), &format!("127.0.0.1:{port}")).await.expect_err("CONNECT elsewhere");
    tunnel.assert_error(403, "policy_denied", "CONNECT to a host not in allow_hosts");
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/named", "/spelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_list_wins_and_routes_are_not_host_rules() {
    let upstream = Upstream::start().await;
    let port = upstream.port();
    let routed = format!(
        "\n[[routes]]\nscheme = \"http\"\nhost = \"localhost\"\nport = {port}\npath_prefix = \"/api\"\ntokens = [\"tok\"]\n"
    );
    let rules = policy("allow_hosts = [\"localhost\", \"127.0.0.1\"]\ndeny_hosts = [\"localhost\"]");
    let run = Running::start(&config("", &format!("{rules}{}{routed}", rs256_token("tok", "10m")))).await;

    get(run.proxy(), &format!("http://localhost:{port}/other"), &[]).await.assert_error(403, "policy_denied");
    // (Port 1, where no route is: a CONNECT to a routed host and port is opened, and what is
    // sent inside is judged as routed requests.)
    let tunnel = open_tunnel(run.proxy(), "localhost:1").await.expect_err("CONNECT to a denied host");
    assert!(tunnel.text().contains("denied by [policy] deny_hosts"), "{}", tunnel.summary());
    get(run.proxy(), &format!("http://127.0.0.1:{port}/allowed"), &[]).await.assert_upstream_ok();
    // The route to the denied host still works: host rules are for unrouted traffic.
    let routed =
        get(run.proxy(), &format!("http://localhost:{port}/api/x"), &[("authorization", "Bearer {/tok}")]).await;
    routed.assert_upstream_ok();
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/allowed", "/api/x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_deny_stays_the_strict_form() {
    let upstream = Upstream::start().await;
    let run = Running::start(&config("unmatched = \"deny\"", &policy("allow_hosts = [\"localhost\"]"))).await;
    get(run.proxy(), &format!("http://localhost:{}/x", upstream.port()), &[])
        .await
        .assert_error(403, "unmatched_denied");
    upstream.assert_nothing_received("unmatched = deny");
}
