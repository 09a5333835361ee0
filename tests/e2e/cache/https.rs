//! Through `HTTPS_PROXY`: requests inside an intercepted tunnel are cached like any other
//! (curl as the client, a TLS upstream).

use crate::support::ca::TestCa;
use crate::support::client::{curl, run_command, stdout};
use crate::support::config::{config, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_an_intercepted_tunnel_are_answered_from_the_cache() {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let text = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{}[[routes]]\nname = \"tls-lookup\"\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n\
             [routes.cache]\nttl = \"60s\"\n",
            rs256_token("tok", "10m"),
            upstream.port()
        ),
    );
    let run = Running::start_with(&text, Some(&ca), "info").await;
    let sidecar_ca = run.dir.path("ca/ca.pem");
    let url = format!("https://localhost:{}/v1/lookup", upstream.port());
    let mut states = Vec::new();
    for _ in 0..2 {
        let mut c = curl();
        c.args(["-s", "-i", "--cacert"]).arg(&sidecar_ca);
        c.args(["-x", &format!("http://{}", run.proxy()), &url, "-H", "Authorization: Bearer {/tok}"]);
        let out = stdout(&run_command(c).await);
        assert!(out.ends_with("upstream ok"), "{out}");
        let state = out.lines().find_map(|l| l.strip_prefix("x-token-sidecar-cache: ")).map(str::trim);
        states.push(state.unwrap_or_default().to_string());
    }
    assert_eq!(states, ["miss", "hit"]);
    assert_eq!(upstream.count(), 1);
    assert!(upstream.single().jwt().is_some(), "the one upstream request carried a token");
}
