//! `[tokens.NAME.expose]`: other fields of the token endpoint's answer (Salesforce's
//! `instance_url`) as placeholders `{/NAME.field}` wherever the token itself may go.

use serde_json::json;

use crate::exchange::{oauth2, status, wait_error, wait_status, PROMPT};
use crate::support::client::get;
use crate::support::config::{config, route};
use crate::support::idp::{Idp, Reply};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

const SF: &str = "grant = \"client_credentials\"\nresponse.default_ttl = \"2h\"\n\n\
                  [tokens.sf.expose]\ninstance_url = \"/instance_url\"\norg = \"/org/id\"\nissued = \"/issued_at\"\n\
                  sandbox = \"/org/sandbox\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_answer_fields_fill_placeholders_in_the_target_and_headers() {
    let idp = Idp::start().await;
    idp.answer_with(|_| {
        Reply::ok(json!({
            "access_token": "sf-access-token",
            "token_type": "Bearer",
            "instance_url": "https://acme.my.salesforce.com",
            "issued_at": 1_735_000_000_123_u64,
            "org": { "id": "00Dxx0000001gPL", "sandbox": false },
        }))
    });
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!("{}{}", oauth2("sf", &idp, "/services/oauth2/token", SF), route(upstream.port(), &["sf"], "")),
    );
    let run = Running::start(&toml).await;
    wait_status(run.admin(), "sf", PROMPT, |s| s["current"] == true).await;

    let reply = get(
        run.proxy(),
        &upstream.url("/orgs/{/sf.org}/query?issued={/sf.issued}&sandbox={/sf.sandbox}"),
        &[("authorization", "Bearer {/sf}"), ("x-instance-url", "{/sf.instance_url}")],
    )
    .await;
    reply.assert_upstream_ok();
    let seen = upstream.single();
    assert_eq!(seen.uri, "/orgs/00Dxx0000001gPL/query?issued=1735000000123&sandbox=false");
    assert_eq!(seen.header("x-instance-url"), Some("https://acme.my.salesforce.com"));
    assert_eq!(seen.bearer(), Some("sf-access-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_missing_an_exposed_field_fails_the_exchange() {
    let idp = Idp::start().await;
    idp.answer_with(|_| {
        Reply::ok(
            json!({ "access_token": "sf-access-token", "token_type": "Bearer", "issued_at": 1, "org": { "id": "x" } }),
        )
    });
    let upstream = Upstream::start().await;
    let toml = config("", &format!("{}{}", oauth2("sf", &idp, "/token", SF), route(upstream.port(), &["sf"], "")));
    let run = Running::start(&toml).await;
    let error = wait_error(run.admin(), "sf").await;
    assert!(!error.contains("sf-access-token"), "last_error shows the token: {error}");
    assert_eq!(status(run.admin(), "sf").await["current"], false);
    let reply = get(run.proxy(), &upstream.url("/"), &[("x-instance-url", "{/sf.instance_url}")]).await;
    reply.assert_error(503, "token_unavailable");
    upstream.assert_nothing_received("nothing is forwarded without the token's answer");
}
