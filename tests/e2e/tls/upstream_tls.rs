//! `upstream_tls = true`: a plain `http://` request (through `HTTP_PROXY`) to a routed host is
//! sent to the upstream over HTTPS, verified against `[proxy] extra_ca_file`, with its token.

use crate::support::ca::TestCa;
use crate::support::client::get;
use crate::support::config::{config, rs256_token, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_on_an_upstream_tls_route_reaches_an_https_only_upstream_with_its_token() {
    let ca = TestCa::new();
    // Speaks only TLS: a plain-HTTP request never gets past its handshake.
    let upstream = Upstream::tls(&ca).await;
    let toml = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{}\n[[routes]]\nname = \"tls-up\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\n\
             upstream_tls = true\ntokens = [\"A\"]\n",
            rs256_token("A", "10m"),
            upstream.port()
        ),
    );
    let run = Running::start_with(&toml, Some(&ca), "info").await;

    let url = format!("http://127.0.0.1:{}/v1/items?q=1", upstream.port());
    let reply = get(run.proxy(), &url, &[("authorization", "Bearer {/A}")]).await;
    reply.assert_upstream_ok();
    let seen = upstream.single();
    assert_eq!(seen.uri, "/v1/items?q=1");
    // One host named, as Host (HTTP/1.1) or :authority (h2, which the upstream offers).
    assert_eq!(seen.hosts(), [format!("127.0.0.1:{}", upstream.port())]);
    let claims = verify_demo(seen.token());
    assert_eq!(claims["sub"], "A", "{claims}");
}
