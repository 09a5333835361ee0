//! Hot reload while requests keep flowing: claim changes, a route coming and going, and key
//! rotation, each written the way real tools write files (rename or in place). No request may
//! fail, and each change must reach the upstream within a second of the write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::support::client::Client;
use crate::support::config::{write_by_rename, write_in_place, ConfigDir};
use crate::support::jwt::{claims, decode, validation};
use crate::support::keys::demo_key;
use crate::support::sidecar::{start_file, with_watcher};
use crate::support::upstream::{Recorded, Upstream};
use crate::support::wait::wait_until;

/// The part of the config the test changes.
struct State {
    rev: u32,
    secondary_route: bool,
}

fn config_text(primary: u16, secondary: u16, s: &State) -> String {
    let mut text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.reload_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/signing.key.pem"
kid = "reload"
ttl = "10m"

[tokens.reload_api.claims]
iss = "ops-reload"
rev = {rev}

[[routes]]
name = "reload-primary"
scheme = "http"
host = "127.0.0.1"
port = {primary}
tokens = ["reload_api"]

[routes.placeholders]
auth_token = "reload_api"
"#,
        rev = s.rev
    );
    if s.secondary_route {
        text.push_str(&format!(
            r#"
[[routes]]
name = "reload-secondary"
scheme = "http"
host = "127.0.0.1"
port = {secondary}
tokens = ["reload_api"]

[routes.placeholders]
auth_token = "reload_api"
"#
        ));
    }
    text
}

/// Whether a request the upstream saw shows a change.
type Shows<'a> = dyn Fn(&Recorded) -> bool + 'a;

#[derive(Debug, Clone, Copy)]
enum Step {
    Claim,
    AddRoute,
    RemoveRoute,
    RotateKey,
}

/// One client: absolute-form requests on a keep-alive connection until `stop`, paced so the
/// two cores are shared with the sidecar and the upstreams. Returns (requests, failures).
async fn client(proxy: std::net::SocketAddr, url: String, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut c = Client::new(proxy);
    let mut sent = 0;
    let mut failures = Vec::new();
    let hard_stop = Instant::now() + Duration::from_secs(30);
    let mut pace = tokio::time::interval(Duration::from_millis(4));
    while !stop.load(Ordering::SeqCst) && Instant::now() < hard_stop {
        pace.tick().await;
        sent += 1;
        match c.get(&url, &[("authorization", "Bearer {/auth_token}")]).await {
            Ok(r) if r.status == 200 && r.sidecar_error().is_none() && &r.body[..] == b"upstream ok" => {}
            Ok(r) => failures.push(format!("{} {:?}: {}", r.status, r.sidecar_error(), r.text())),
            Err(e) => failures.push(e),
        }
    }
    (sent, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load() {
    let dir = ConfigDir::with_demo_keys();
    let key_a = demo_key("demo-rsa.key.pem");
    let pub_a = DecodingKey::from_rsa_pem(demo_key("demo-rsa.pub.pem").as_bytes()).unwrap();
    let generated = dir.path("generated");
    token_sidecar::keygen::generate(
        token_sidecar::tokens::algorithm::Algorithm::RS256,
        None,
        &generated,
        "rotated",
        Some("reload"),
    )
    .unwrap();
    let key_b = std::fs::read_to_string(generated.join("rotated.key.pem")).unwrap();
    let pub_b = DecodingKey::from_rsa_pem(&std::fs::read(generated.join("rotated.pub.pem")).unwrap()).unwrap();
    let rs256 = &validation(Algorithm::RS256, None);
    let key_path = dir.path("keys/signing.key.pem");
    write_in_place(&key_path, key_a.as_bytes());

    let primary = Upstream::start().await;
    let secondary = Upstream::start().await;
    let mut state = State { rev: 0, secondary_route: false };
    let path = dir.write_config(&config_text(primary.port(), secondary.port(), &state));
    let sidecar = start_file(&path).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(tokio::spawn(client(sidecar.proxy_addr, primary.url("/primary"), Arc::clone(&stop))));
    }
    clients.push(tokio::spawn(client(sidecar.proxy_addr, secondary.url("/secondary"), Arc::clone(&stop))));

    let steps = [Step::Claim, Step::AddRoute, Step::Claim, Step::RemoveRoute, Step::RotateKey].repeat(4);
    assert_eq!(steps.len(), 20);
    let mut latencies: Vec<(String, Duration)> = Vec::new();
    let mut on_key_b = false;
    let mut config_writes = 0;
    let mut key_writes = 0;

    with_watcher(&sidecar, &path, async {
        // Traffic is flowing and carries the first config before anything changes.
        let flowing = wait_until(Duration::from_secs(5), async || {
            primary.last().and_then(|s| s.jwt().map(|t| claims(t)["rev"] == 0)).unwrap_or(false)
                && secondary.count() > 0
        })
        .await;
        assert!(flowing, "requests did not flow through the proxy before the first change");

        for (i, step) in steps.iter().enumerate() {
            let written = Instant::now();
            let rename;
            match step {
                Step::Claim | Step::AddRoute | Step::RemoveRoute => {
                    match step {
                        Step::Claim => state.rev = i as u32 + 1,
                        Step::AddRoute => state.secondary_route = true,
                        _ => state.secondary_route = false,
                    }
                    config_writes += 1;
                    rename = config_writes % 2 == 1;
                    let text = config_text(primary.port(), secondary.port(), &state);
                    if rename {
                        write_by_rename(&path, text.as_bytes());
                    } else {
                        write_in_place(&path, text.as_bytes());
                    }
                }
                Step::RotateKey => {
                    on_key_b = !on_key_b;
                    key_writes += 1;
                    rename = key_writes % 2 == 1;
                    let key = if on_key_b { &key_b } else { &key_a };
                    if rename {
                        write_by_rename(&key_path, key.as_bytes());
                    } else {
                        write_in_place(&key_path, key.as_bytes());
                    }
                }
            }
            let rev = state.rev;
            let public = if on_key_b { &pub_b } else { &pub_a };
            // The first request after the write that shows the change.
            let (upstream, pred): (&Upstream, Box<Shows<'_>>) = match step {
                Step::Claim => {
                    (&primary, Box::new(move |s: &Recorded| s.jwt().is_some_and(|t| claims(t)["rev"] == rev)))
                }
                Step::AddRoute => (&secondary, Box::new(|s: &Recorded| s.jwt().is_some())),
                Step::RemoveRoute => (&secondary, Box::new(|s: &Recorded| s.bearer() == Some("{/auth_token}"))),
                Step::RotateKey => {
                    (&primary, Box::new(move |s: &Recorded| s.jwt().is_some_and(|t| decode(t, public, rs256).is_ok())))
                }
            };
            let what = format!("step {} {step:?} ({})", i + 1, if rename { "rename" } else { "in place" });
            let mut seen = None;
            wait_until(Duration::from_secs(5), async || {
                seen = upstream.first_since(written, &pred);
                seen.is_some()
            })
            .await;
            let seen = seen.unwrap_or_else(|| panic!("{what}: the change never reached the upstream"));
            latencies.push((what, seen.at - written));
            // The change shows in the token as a whole: the claim is the current one and the
            // signature verifies with the current key.
            if let Some(token) = seen.jwt() {
                let claims = decode(token, public, rs256)
                    .unwrap_or_else(|e| panic!("step {}: token does not verify with the current key: {e}", i + 1));
                assert_eq!(claims["rev"], rev, "step {}: stale claim in {token}", i + 1);
            }
        }
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (sent, failed) = c.await.unwrap();
        total += sent;
        failures.extend(failed);
    }
    let slowest = latencies.iter().max_by_key(|(_, d)| *d).cloned().unwrap();
    eprintln!("reload_under_load: {total} requests, slowest change {:?} ({})", slowest.1, slowest.0);
    assert!(failures.is_empty(), "{} of {total} requests failed during reloads: {:?}", failures.len(), &failures[..]);
    assert!(total >= 200, "too little traffic to mean anything: {total} requests");
    // Every request on the routed upstream carried a valid token: no config (not even a
    // half-written, empty one) was ever served without the route.
    let mut distinct = std::collections::HashSet::new();
    for s in primary.requests() {
        let token = s.jwt().unwrap_or_else(|| panic!("primary upstream got no token: {:?}", s.bearer()));
        if !distinct.insert(token.to_string()) {
            continue;
        }
        assert!(
            decode(token, &pub_a, rs256).is_ok() || decode(token, &pub_b, rs256).is_ok(),
            "a token signed by neither key reached the upstream"
        );
    }
    let late: Vec<_> = latencies.iter().filter(|(_, d)| *d >= Duration::from_secs(1)).collect();
    assert!(late.is_empty(), "changes took a second or more to reach the upstream: {late:?}");
    sidecar.shutdown().await;
}
