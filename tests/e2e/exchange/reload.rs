//! Reloads and exchanged tokens: rotating the client secret's file exchanges again with the new
//! secret, changing a token's own settings exchanges again with them, and a reload that
//! changes neither keeps the token without contacting the endpoint.

use std::time::Duration;

use crate::exchange::{get_with, PROMPT};
use crate::support::config::{config, route, toml_str, write_in_place, ConfigDir};
use crate::support::idp::{access_token, Idp};
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const FIRST: &str = "cs_first_9d1f7e";
const ROTATED: &str = "cs_rotated_52ab0c";

fn tokens(idp: &Idp, scope: &str) -> String {
    format!(
        "[tokens.client_secret]\nkind = \"secret\"\nkey_file = \"client.secret\"\n\n\
         [tokens.api]\nkind = \"oauth2\"\ntoken_url = {url}\ngrant = \"client_credentials\"\n\
         client_auth = \"client_secret_post\"\nclient_id = \"svc\"\nclient_secret = \"client_secret\"\nscope = {scope}\n\n",
        url = toml_str(&idp.url("/token")),
        scope = toml_str(scope),
    )
}

async fn served(sidecar: &SidecarProcess, upstream: &Upstream) -> Option<String> {
    get_with(sidecar.proxy, &upstream.url("/"), "api").await.assert_upstream_ok();
    upstream.last().and_then(|r| r.bearer().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_client_secret_file_exchanges_with_the_new_secret() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let dir = ConfigDir::empty();
    let secret_file = dir.write("client.secret", format!("{FIRST}\n"));
    let path =
        dir.write_config(&config("", &format!("{}{}", tokens(&idp, "read"), route(upstream.port(), &["api"], ""))));
    let sidecar = SidecarProcess::start(&path, "debug").await;
    assert_eq!(idp.wait_for(1, PROMPT).await.must("client_secret"), FIRST);
    assert_eq!(served(&sidecar, &upstream).await, Some(access_token(1)));

    write_in_place(&secret_file, format!("{ROTATED}\n").as_bytes());
    let second = idp.wait_for(2, PROMPT).await;
    assert_eq!(second.must("client_secret"), ROTATED, "the re-exchange uses the rotated secret");
    let rotated = wait_until(PROMPT, async || served(&sidecar, &upstream).await == Some(access_token(2))).await;
    assert!(rotated, "requests never got the token exchanged with the new secret; log:\n{}", sidecar.log_text());
    assert_eq!(idp.count(), 2, "one exchange per change");

    let log = sidecar.log_text();
    for value in [FIRST, ROTATED] {
        assert!(!log.contains(value), "the log shows the client secret:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_re_exchanges_only_tokens_whose_settings_changed() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let dir = ConfigDir::empty();
    dir.write("client.secret", format!("{FIRST}\n"));
    let routes = route(upstream.port(), &["api"], "");
    let path = dir.write_config(&config("", &format!("{}{routes}", tokens(&idp, "read"))));
    let sidecar = SidecarProcess::start(&path, "info").await;
    idp.wait_for(1, PROMPT).await;

    // Another route: api's settings and its secret are unchanged.
    let reloads = sidecar.count_log("configuration reloaded");
    dir.write_config(&config("", &format!("{}{routes}{}", tokens(&idp, "read"), route(other.port(), &["api"], ""))));
    let reloaded = wait_until(PROMPT, async || sidecar.count_log("configuration reloaded") > reloads).await;
    assert!(reloaded, "the config change was not reloaded; log:\n{}", sidecar.log_text());
    get_with(sidecar.proxy, &other.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(other.single().bearer(), Some(access_token(1).as_str()), "the new route serves the kept token");
    assert!(!idp.reaches(2, Duration::from_secs(1)).await, "an unchanged token was exchanged again");

    // Its own scope changed: exchanged again, with the new scope.
    dir.write_config(&config("", &format!("{}{routes}", tokens(&idp, "read write"))));
    let second = idp.wait_for(2, PROMPT).await;
    assert_eq!(second.must("scope"), "read write");
    let renewed = wait_until(PROMPT, async || served(&sidecar, &upstream).await == Some(access_token(2))).await;
    assert!(renewed, "requests never got the token of the new settings; log:\n{}", sidecar.log_text());
}
