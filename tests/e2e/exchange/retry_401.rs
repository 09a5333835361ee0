//! An upstream that answers 401 to an exchanged token (the issuer revoked it early): the
//! sidecar exchanges again, once for any number of concurrent 401s, and replays the request
//! with the new token; `retry_on_401 = false` turns that off; a second 401 is final.
//!
//! The upstream here is a second scripted server (`support::idp`) that rejects the first
//! access token and accepts any other.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::exchange::{oauth2, PROMPT};
use crate::support::client::{channel_body, post, send};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply, Seen};
use crate::support::sidecar::Running;

const CC: &str = "grant = \"client_credentials\"\n";

/// An API that answers 401 to `rejected` (after `delay`) and 200 `api ok` otherwise.
async fn api_rejecting(rejected: Option<String>, delay: Duration) -> Idp {
    let api = Idp::start().await;
    api.answer_with(move |seen: &Seen| match (&rejected, seen.bearer()) {
        (Some(bad), Some(got)) if bad != got => Reply::raw(200, "text/plain", "api ok"),
        _ => Reply::raw(401, "application/json", r#"{"message":"Bad credentials"}"#).delayed(delay),
    });
    api
}

async fn start(idp: &Idp, api: &Idp, route_extra: &str, proxy_extra: &str) -> Running {
    let toml = config(
        proxy_extra,
        &format!("{}{}", oauth2("api", idp, "/token", CC), route(api.port(), &["api"], route_extra)),
    );
    let run = Running::start(&toml).await;
    idp.wait_for(1, PROMPT).await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_re_exchanges_once_and_replays_the_request() {
    let idp = Idp::start().await;
    let api = api_rejecting(Some(access_token(1)), Duration::ZERO).await;
    let run = start(&idp, &api, "", "").await;

    let reply = post(
        run.proxy(),
        &api.url("/v1/orders?x=1"),
        &[("authorization", "Bearer {/api}"), ("content-type", "application/json")],
        r#"{"order":42}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "the client sees the replayed request's answer: {}", reply.text());
    assert_eq!(reply.text(), "api ok");
    assert_eq!(idp.count(), 2, "one extra exchange");
    let seen = api.requests();
    assert_eq!(seen.len(), 2, "the request and its replay");
    assert_eq!(seen[0].bearer(), Some(access_token(1).as_str()));
    assert_eq!(seen[1].bearer(), Some(access_token(2).as_str()), "the replay carries the new token");
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.uri, "/v1/orders?x=1");
        assert_eq!(s.body_text(), r#"{"order":42}"#, "the replay carries the same body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_cause_one_exchange() {
    const N: usize = 8;
    let idp = Idp::start().await;
    // The 401s are held back so that all N requests carry the first token at once.
    let api = api_rejecting(Some(access_token(1)), Duration::from_millis(300)).await;
    let run = start(&idp, &api, "", "").await;
    let proxy = run.proxy();
    let url = api.url("/v1/items");
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(proxy, &url, &[("authorization", "Bearer {/api}")], "").await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.expect("client task");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(idp.count(), 2, "{N} concurrent 401s for one token value: one extra exchange");
    let seen = api.requests();
    let with = |token: String| seen.iter().filter(|s| s.bearer() == Some(token.as_str())).count();
    assert_eq!(with(access_token(1)), N, "every request first went out with the first token");
    assert_eq!(with(access_token(2)), N, "every replay carried the one new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_401_false_returns_the_401() {
    let idp = Idp::start().await;
    let api = api_rejecting(Some(access_token(1)), Duration::ZERO).await;
    let run = start(&idp, &api, "retry_on_401 = false\n", "").await;
    let reply = post(run.proxy(), &api.url("/v1/orders"), &[("authorization", "Bearer {/api}")], "{}").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"message":"Bad credentials"}"#);
    assert_eq!(api.count(), 1, "no replay");
    assert!(!idp.reaches(2, Duration::from_secs(1)).await, "no extra exchange with retry_on_401 = false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_401_is_returned_as_is() {
    let idp = Idp::start().await;
    let api = api_rejecting(None, Duration::ZERO).await;
    let run = start(&idp, &api, "", "").await;
    let reply = post(run.proxy(), &api.url("/v1/orders"), &[("authorization", "Bearer {/api}")], "{}").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"message":"Bad credentials"}"#);
    let seen = api.requests();
    assert_eq!(seen.len(), 2, "one replay, no more");
    assert_eq!(seen[1].bearer(), Some(access_token(2).as_str()));
    assert!(!idp.reaches(3, Duration::from_secs(1)).await, "one re-exchange, no more");
    assert_eq!(idp.count(), 2);
}

/// A body streamed past `max_buffered_body` cannot be replayed: the 401 goes to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_not_replayed() {
    let idp = Idp::start().await;
    let api = api_rejecting(Some(access_token(1)), Duration::ZERO).await;
    let run = start(&idp, &api, "", "max_buffered_body = \"1KiB\"").await;
    let (tx, body) = channel_body(4);
    let request =
        Request::post(api.url("/v1/upload")).header("authorization", "Bearer {/api}").body(body).expect("request");
    let reply = tokio::spawn(send(run.proxy(), request));
    for _ in 0..8 {
        tx.send(Bytes::from(vec![b'a'; 1024])).await.expect("body chunk");
    }
    drop(tx);
    let reply = reply.await.expect("request task");
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(api.count(), 1, "a streamed body is not replayed");
    assert_eq!(api.nth(1).body.len(), 8 * 1024, "the whole body reached the upstream once");
}
