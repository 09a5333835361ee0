//! The shared function-result cache (`[cache] backend = "redis"`, issue 16 item 3): sidecars
//! of a fleet answer from each other's stored responses through a real `redis-server`.
//!
//! Each sidecar here signs its own RS256 token (self-signed tokens are never shared), so the
//! routes are the same route on both only because their definitions are: what the route
//! identity promises. The origin counts what reaches it (`support::origin`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{assert_reply, cache_report, cache_state, cached_route};
use crate::fleet::{Fleet, FLEET_KEY_B64, PROMPT};
use crate::support::client::{curl, get, request, run_command, send, stdout, Reply};
use crate::support::config::{config, render, rs256_token, ConfigDir};
use crate::support::metrics::scrape;
use crate::support::origin::{Answer, Origin};
use crate::support::redis::Resp;
use crate::support::sidecar::Running;
use crate::support::wait::wait_until;

/// Where entries live in Redis (leases are `token-sidecar:lease:cache:`, epochs
/// `token-sidecar:cache-epoch:`).
const ENTRIES: &str = "token-sidecar:cache:";

/// A fleet sidecar's config: `[cache] backend = "redis"` (with `cache_extra`), token `tok`
/// and route `lookup` to the origin at `port` with `[routes.cache]` holding `cache`.
fn shared(fleet: &Fleet, port: u16, cache: &str, cache_extra: &str, fleet_extra: &str) -> String {
    config(
        "",
        &format!(
            "[cache]\nbackend = \"redis\"\n{cache_extra}\n{}{}{}",
            rs256_token("tok", "10m"),
            cached_route("lookup", port, &["tok"], "", cache),
            fleet.section(fleet_extra)
        ),
    )
}

/// A function's lookup through `proxy`, its token as a placeholder.
async fn lookup(proxy: SocketAddr, url: &str) -> Reply {
    get(proxy, url, &[("authorization", "Bearer {/tok}")]).await
}

/// Sends `n` identical lookups at once.
fn fire(proxy: SocketAddr, url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { lookup(proxy, &url).await })
        })
        .collect()
}

/// Waits until Redis holds `n` entries.
async fn wait_for_entries(fleet: &Fleet, n: usize) {
    let stored = wait_until(PROMPT, async || fleet.redis.keys_containing(ENTRIES).len() >= n).await;
    assert!(stored, "expected {n} entries in Redis: {:?}", fleet.redis.keys_containing(ENTRIES).len());
}

async fn admin(addr: SocketAddr, method: &str, path: &str) -> Reply {
    send(addr, request(method, path, &[("host", &addr.to_string())], "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_fetched_through_one_sidecar_is_a_hit_on_another() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"\nstale_if_error = \"120s\"", "", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let url = origin.url("/v1/customers/42");

    assert_reply(&lookup(a.proxy(), &url).await, "1", "miss");
    wait_for_entries(&fleet, 1).await;
    // A real client through the second sidecar: answered from Redis, no upstream request.
    let mut c = curl();
    c.args(["-s", "-D", "-", "-x", &format!("http://{}", b.proxy()), &url, "-H", "Authorization: Bearer {/tok}"]);
    let out = stdout(&run_command(c).await);
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("x-token-sidecar-cache: hit") && lower.contains("\r\nage: "), "{out}");
    assert!(out.ends_with("\r\n\r\n1"), "{out}");
    assert_eq!(origin.count(), 1, "two sidecars, one upstream request");

    // The entry lives in Redis for its ttl and stale window, no longer.
    let entry = fleet.redis.keys_containing(ENTRIES).remove(0);
    let Resp::Int(ttl_ms) = fleet.redis.cmd(&[b"PTTL", &entry]) else { panic!("PTTL") };
    assert!((150_000..=180_000).contains(&ttl_ms), "TTL {ttl_ms} ms for ttl 60s + stale_if_error 120s");

    // The second sidecar keeps it in its local tier: the next hit does not ask Redis.
    let gets = |m: &crate::support::metrics::Metrics| m.count("fleet_operations_total", &[("op", "cache_get")]);
    let before = gets(&scrape(b.admin()).await);
    assert_reply(&lookup(b.proxy(), &url).await, "1", "hit");
    let metrics = scrape(b.admin()).await;
    assert_eq!(gets(&metrics), before, "a local hit reads nothing from Redis");
    assert_eq!(metrics.count("cache_shared_lookups_total", &[("route", "lookup"), ("result", "hit")]), 1.0);
    assert_eq!(metrics.count("cache_requests_total", &[("route", "lookup"), ("result", "hit")]), 2.0);
    let report = cache_report(b.admin()).await;
    assert_eq!((&report["backend"], &report["entries"]), (&"redis".into(), &1.into()), "{report}");

    // Another request is another entry; the first sidecar finds the second's answers too.
    assert_reply(&lookup(b.proxy(), &origin.url("/v1/customers/43")).await, "2", "miss");
    wait_for_entries(&fleet, 2).await;
    assert_reply(&lookup(a.proxy(), &origin.url("/v1/customers/43")).await, "2", "hit");
    assert_eq!(origin.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_whose_route_differs_keep_separate_entries() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let a = Running::start(&shared(&fleet, origin.port(), "ttl = \"60s\"", "", "")).await;
    // The same route with another ttl, and the same route binding a token with other
    // claims (another identity at the upstream): other routes, other entries.
    let other_ttl = Running::start(&shared(&fleet, origin.port(), "ttl = \"61s\"", "", "")).await;
    let other_claims = shared(&fleet, origin.port(), "ttl = \"60s\"", "", "");
    let other_claims = Running::start(&other_claims.replace("iss = \"e2e-tests\"", "iss = \"another-issuer\"")).await;
    let url = origin.url("/v1/customers/7");
    assert_reply(&lookup(a.proxy(), &url).await, "1", "miss");
    wait_for_entries(&fleet, 1).await;
    assert_reply(&lookup(other_ttl.proxy(), &url).await, "2", "miss");
    assert_reply(&lookup(other_claims.proxy(), &url).await, "3", "miss");
    wait_for_entries(&fleet, 3).await;
    let same = Running::start(&shared(&fleet, origin.port(), "ttl = \"60s\"", "", "")).await;
    assert_reply(&lookup(same.proxy(), &url).await, "1", "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_two_sidecars_make_one_upstream_request() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    origin.hold();
    // A long wait, so the test's own pace never outlasts the lease.
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "coalesce_wait = \"60s\"", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let url = origin.url("/v1/report?id=7");

    let first = fire(a.proxy(), &url, 5);
    let leading =
        wait_until(PROMPT, async || origin.count() == 1 && cache_report(a.admin()).await["waiting"] == 4).await;
    assert!(leading, "one of the first sidecar's requests is at the upstream, four wait for it");
    let second = fire(b.proxy(), &url, 5);
    // The second sidecar's one miss waits for the first sidecar's fetch; its others wait on it.
    let mut report = serde_json::Value::Null;
    let waiting = wait_until(PROMPT, async || {
        report = cache_report(b.admin()).await;
        report["waiting_on_fleet"] == 1 && report["waiting"] == 4
    })
    .await;
    assert!(waiting, "the second sidecar waits for the first one's answer: {report}");
    assert_eq!(origin.count(), 1);
    origin.release(1);

    let mut states = Vec::new();
    for (sidecar, replies) in [("a", first), ("b", second)] {
        for reply in replies {
            let reply = reply.await.expect("request task");
            assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "1"), "every caller got the one answer");
            states.push(format!("{sidecar} {}", cache_state(&reply)));
        }
    }
    states.sort();
    assert_eq!(states, ["a hit", "a hit", "a hit", "a hit", "a miss", "b hit", "b hit", "b hit", "b hit", "b hit"]);
    assert_eq!(origin.count(), 1, "ten callers on two sidecars, one upstream request");
    assert_eq!(cache_report(b.admin()).await["waiting_on_fleet"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sidecar_goes_upstream_as_soon_as_the_answer_proves_unstorable() {
    let fleet = Fleet::start().await;
    let origin = Origin::start(|_, n| Answer::ok(n.to_string()).header("cache-control", "no-store")).await;
    origin.hold();
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "coalesce_wait = \"60s\"", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let url = origin.url("/v1/live");
    let first = fire(a.proxy(), &url, 1);
    assert!(wait_until(PROMPT, async || origin.count() == 1).await);
    let second = fire(b.proxy(), &url, 1);
    let waiting = wait_until(PROMPT, async || cache_report(b.admin()).await["waiting_on_fleet"] == 1).await;
    assert!(waiting, "the second sidecar waits on the first");
    origin.release(1);
    // The lease is released without an entry: the second sidecar goes upstream now, not after
    // its 60 s wait.
    let started = Instant::now();
    assert!(wait_until(PROMPT, async || origin.count() == 2).await, "the second sidecar did not go upstream");
    assert!(started.elapsed() < PROMPT);
    origin.release(1);
    for reply in first.into_iter().chain(second) {
        let reply = reply.await.expect("request task");
        assert_eq!((reply.status.as_u16(), cache_state(&reply)), (200, "miss"));
    }
    assert!(fleet.redis.keys_containing(ENTRIES).is_empty(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_refreshed_by_one_sidecar_of_the_fleet() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"1s\"\nstale_while_revalidate = \"60s\"", "", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let url = origin.url("/v1/rates");
    assert_reply(&lookup(a.proxy(), &url).await, "1", "miss");
    wait_for_entries(&fleet, 1).await;
    origin.hold();
    // Past the ttl, the first sidecar answers stale and refreshes (held at the upstream).
    let stale = wait_until(PROMPT, async || cache_state(&lookup(a.proxy(), &url).await) == "stale").await;
    assert!(stale, "the entry never went stale");
    assert!(wait_until(PROMPT, async || origin.count() == 2).await, "the first sidecar did not refresh");
    // The second sidecar answers stale from Redis too, and leaves the refresh to the first.
    assert_reply(&lookup(b.proxy(), &url).await, "1", "stale");
    origin.release(1);
    let refreshed = wait_until(PROMPT, async || {
        let reply = lookup(b.proxy(), &url).await;
        cache_state(&reply) == "hit" && reply.text() == "2"
    })
    .await;
    assert!(refreshed, "the second sidecar did not find the refreshed entry");
    assert_eq!(origin.count(), 2, "one refresh for the fleet");
}

/// Lookups of rotating keys through every sidecar until stopped; records every failure.
struct Lookups {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<usize>,
}

impl Lookups {
    fn start(proxies: Vec<SocketAddr>, origin: &Origin) -> Lookups {
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (flag, failed, base) = (Arc::clone(&stop), Arc::clone(&failures), origin.url("/v1/traffic"));
        let task = tokio::spawn(async move {
            let mut sent = 0;
            while !flag.load(Ordering::SeqCst) {
                for (i, proxy) in proxies.iter().enumerate() {
                    let reply = lookup(*proxy, &format!("{base}?key={}", sent % 7)).await;
                    sent += 1;
                    if reply.status != 200 {
                        failed.lock().unwrap().push(format!("sidecar {i}: {} {}", reply.status, reply.text()));
                    }
                }
                // Pacing, not waiting for anything.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        });
        Lookups { stop, failures, task }
    }

    /// Stops; returns how many lookups were sent and every failure.
    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.task.await.expect("lookup task");
        let failures = self.failures.lock().unwrap().clone();
        (sent, failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_sidecar_caches_locally_no_request_fails_and_sharing_resumes() {
    let mut fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "", "");
    let sidecars = [Running::start(&toml).await, Running::start(&toml).await];
    let (a, b) = (&sidecars[0], &sidecars[1]);
    let traffic = Lookups::start(sidecars.iter().map(Running::proxy).collect(), &origin);

    fleet.redis.kill();
    for s in &sidecars {
        let down = wait_until(PROMPT, async || scrape(s.admin()).await.value("fleet_redis_up", &[]) == Some(0.0)).await;
        assert!(down, "fleet_redis_up did not drop to 0");
    }
    // Each sidecar fetches a new key once, then answers it from its own store.
    for (i, s) in sidecars.iter().enumerate() {
        let url = origin.url(&format!("/v1/down?sidecar={i}"));
        let first = lookup(s.proxy(), &url).await;
        assert_eq!((first.status.as_u16(), cache_state(&first)), (200, "miss"));
        let again = lookup(s.proxy(), &url).await;
        assert_eq!((again.status.as_u16(), cache_state(&again)), (200, "hit"), "cached locally while Redis is down");
        assert_eq!(again.text(), first.text());
    }
    let metrics = scrape(a.admin()).await;
    let failed_ops: f64 = ["unavailable", "timeout", "skipped"]
        .iter()
        .map(|r| {
            ["cache_epoch", "cache_get", "cache_lease", "cache_set"]
                .iter()
                .map(|op| metrics.count("fleet_operations_total", &[("op", op), ("result", r)]))
                .sum::<f64>()
        })
        .sum();
    assert!(failed_ops >= 1.0, "cache operations against a dead Redis are counted");

    fleet.redis.restart().await;
    for s in &sidecars {
        let up = wait_until(PROMPT, async || scrape(s.admin()).await.value("fleet_redis_up", &[]) == Some(1.0)).await;
        assert!(up, "fleet_redis_up did not return to 1");
    }
    let (sent, failures) = traffic.stop().await;
    assert!(sent >= 10, "too little traffic to mean anything: {sent}");
    assert!(failures.is_empty(), "requests failed while Redis was down: {failures:?}");

    // Sharing resumes by itself: once a sidecar with traffic has read the route's epoch
    // again, it uses Redis; the second then answers from the first one's entries.
    let epoch_reads = |m: &crate::support::metrics::Metrics| {
        m.count("fleet_operations_total", &[("op", "cache_epoch"), ("result", "ok")])
    };
    for s in &sidecars {
        let reads = epoch_reads(&scrape(s.admin()).await);
        let reading = wait_until(PROMPT, async || {
            lookup(s.proxy(), &origin.url("/v1/warm")).await;
            epoch_reads(&scrape(s.admin()).await) > reads
        })
        .await;
        assert!(reading, "a sidecar did not use Redis again");
    }
    let entries = fleet.redis.keys_containing(ENTRIES).len();
    let url = origin.url("/v1/after");
    let fetched = lookup(a.proxy(), &url).await;
    assert_reply(&fetched, &origin.count().to_string(), "miss");
    wait_for_entries(&fleet, entries + 1).await;
    let before = origin.count();
    let shared = lookup(b.proxy(), &url).await;
    assert_eq!(cache_state(&shared), "hit", "{}", shared.text());
    assert_eq!(origin.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_request_at_most_the_operation_timeout() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "", "operation_timeout = \"300ms\"");
    let a = Running::start(&toml).await;
    assert_reply(&lookup(a.proxy(), &origin.url("/v1/before")).await, "1", "miss");
    fleet.redis.signal("STOP");
    for n in 2..5 {
        let started = Instant::now();
        let reply = lookup(a.proxy(), &origin.url(&format!("/v1/hung?n={n}"))).await;
        assert_reply(&reply, &n.to_string(), "miss");
        // At most one epoch read, one lookup and one lease, each cut at 300 ms.
        assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    }
    let metrics = scrape(a.admin()).await;
    let timeouts: f64 = ["cache_epoch", "cache_get", "cache_lease", "cache_poll", "cache_set"]
        .iter()
        .map(|op| metrics.count("fleet_operations_total", &[("op", op), ("result", "timeout")]))
        .sum();
    assert!(timeouts >= 1.0, "no request waited on the hung Redis, so this proved nothing");
    fleet.redis.signal("CONT");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_redis_is_in_the_clear() {
    const SECRET: &str = "static-secret-7d1c9e4b";
    const MARKER: &str = "customer-record-MARKER-5521";
    let fleet = Fleet::start().await;
    let origin =
        Origin::start(|_, _| Answer::ok(format!("{{\"name\": \"{MARKER}\"}}")).header("x-marker", MARKER)).await;
    let token = format!("[tokens.key]\nkind = \"secret\"\nkey = \"{SECRET}\"\n");
    let route = cached_route("crm-lookup", origin.port(), &["key"], "", "ttl = \"60s\"");
    let toml = config("", &format!("[cache]\nbackend = \"redis\"\n{token}{route}{}", fleet.section("")));
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let path = "/v1/customers/lookup-path-9931";
    let reply = get(a.proxy(), &origin.url(path), &[("x-api-key", "{/key}")]).await;
    assert_eq!((reply.status.as_u16(), cache_state(&reply)), (200, "miss"));
    assert_eq!(origin.last().header("x-api-key"), Some(SECRET), "the upstream got the secret");
    // A purge writes the route's epoch; the next answer an entry under it.
    let purged = admin(a.admin(), "DELETE", "/cache/crm-lookup").await;
    assert_eq!(purged.json()["shared_purged"], true, "{}", purged.text());
    let again = get(a.proxy(), &origin.url(path), &[("x-api-key", "{/key}")]).await;
    assert_eq!(cache_state(&again), "miss");
    wait_for_entries(&fleet, 2).await;
    let hit = get(b.proxy(), &origin.url(path), &[("x-api-key", "{/key}")]).await;
    assert_eq!((cache_state(&hit), hit.text().contains(MARKER)), ("hit", true));

    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, FLEET_KEY_B64).expect("key");
    let forbidden: Vec<(&str, Vec<u8>)> = vec![
        ("secret token", SECRET.as_bytes().to_vec()),
        ("response body", MARKER.as_bytes().to_vec()),
        ("request path", b"lookup-path-9931".to_vec()),
        ("route name", b"crm-lookup".to_vec()),
        ("upstream host", b"127.0.0.1".to_vec()),
        ("placeholder", b"{/key}".to_vec()),
        ("fleet key", key),
        ("fleet key (base64)", FLEET_KEY_B64.as_bytes().to_vec()),
    ];
    let keys = fleet.redis.keys();
    let kinds = ["token-sidecar:cache:", "token-sidecar:cache-epoch:"];
    for kind in kinds {
        assert!(keys.iter().any(|k| k.starts_with(kind.as_bytes())), "no {kind} key in {keys:?}");
    }
    for k in &keys {
        let value = fleet.redis.get(k).unwrap_or_default();
        let name = String::from_utf8_lossy(k);
        assert!(value.starts_with(b"TSF1"), "a value not in the sealed format under {name}");
        for (what, bytes) in &forbidden {
            assert!(!contains(k, bytes), "the {what} is in a key name: {name}");
            assert!(!contains(&value, bytes), "the {what} is in the value of {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_fleet_did_not_seal_for_their_key_are_never_served() {
    let fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let rejected = async |s: &Running, reason: &str| {
        scrape(s.admin()).await.count("fleet_entries_rejected_total", &[("reason", reason)])
    };

    // Two genuine entries, swapped: each is sealed for its own key only.
    for path in ["/v1/x/1", "/v1/x/2"] {
        assert_eq!(cache_state(&lookup(a.proxy(), &origin.url(path)).await), "miss");
    }
    wait_for_entries(&fleet, 2).await;
    let names = fleet.redis.keys_containing(ENTRIES);
    let values: Vec<Vec<u8>> = names.iter().map(|k| fleet.redis.get(k).expect("value")).collect();
    fleet.redis.set(&names[0], &values[1], Duration::from_secs(60));
    fleet.redis.set(&names[1], &values[0], Duration::from_secs(60));
    for (path, fresh) in [("/v1/x/1", "3"), ("/v1/x/2", "4")] {
        assert_reply(&lookup(b.proxy(), &origin.url(path)).await, fresh, "miss");
    }
    assert!(rejected(&b, "tampered").await >= 2.0, "moved entries are counted as tampered");

    // One flipped byte.
    assert_eq!(cache_state(&lookup(a.proxy(), &origin.url("/v1/y")).await), "miss");
    wait_for_entries(&fleet, 3).await;
    let before: Vec<Vec<u8>> = names.clone();
    let entry = fleet.redis.keys_containing(ENTRIES).into_iter().find(|k| !before.contains(k)).expect("new entry");
    let mut tampered = fleet.redis.get(&entry).expect("value");
    let last = tampered.len() - 20;
    tampered[last] ^= 0x01;
    fleet.redis.set(&entry, &tampered, Duration::from_secs(60));
    assert_reply(&lookup(b.proxy(), &origin.url("/v1/y")).await, "6", "miss");

    // A hand-written plaintext entry under a real name.
    assert_eq!(cache_state(&lookup(a.proxy(), &origin.url("/v1/z")).await), "miss");
    wait_for_entries(&fleet, 4).await;
    let seen: Vec<Vec<u8>> = fleet.redis.keys_containing(ENTRIES);
    let z = seen.iter().find(|k| !before.contains(k) && **k != entry).expect("the /v1/z entry").clone();
    fleet.redis.set(&z, b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged", Duration::from_secs(60));
    let reply = lookup(b.proxy(), &origin.url("/v1/z")).await;
    assert_reply(&reply, "8", "miss");
    assert!(rejected(&b, "foreign").await >= 1.0);
    assert_eq!(origin.count(), 8, "every rejected entry cost an upstream request, none was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_retire_a_routes_entries_for_the_whole_fleet() {
    let mut fleet = Fleet::start().await;
    let origin = Origin::counting().await;
    let toml = shared(&fleet, origin.port(), "ttl = \"60s\"", "", "");
    let (a, b) = (Running::start(&toml).await, Running::start(&toml).await);
    let url = origin.url("/v1/p");
    assert_reply(&lookup(a.proxy(), &url).await, "1", "miss");
    wait_for_entries(&fleet, 1).await;
    assert_reply(&lookup(b.proxy(), &url).await, "1", "hit");

    // DELETE /cache/ROUTE on one sidecar: its own entries go, and the route's epoch moves.
    let purged = admin(a.admin(), "DELETE", "/cache/lookup").await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json(), serde_json::json!({"route": "lookup", "purged": 1, "shared_purged": true}));
    assert_reply(&lookup(a.proxy(), &url).await, "2", "miss");
    wait_for_entries(&fleet, 2).await;
    // The other sidecar notices within about a second and drops its copy; it then finds the
    // first sidecar's new answer in Redis.
    let mut last = None;
    let moved_on = wait_until(PROMPT, async || {
        let reply = lookup(b.proxy(), &url).await;
        let done = reply.text() != "1";
        last = Some(reply);
        done
    })
    .await;
    let last = last.expect("a reply");
    assert!(moved_on, "the second sidecar still answers from before the purge");
    assert_reply(&last, "2", "hit");
    assert_eq!(origin.count(), 2, "the post-purge answer was shared");

    // DELETE /cache does the same for every route.
    let purged = admin(b.admin(), "DELETE", "/cache").await;
    assert_eq!(purged.json(), serde_json::json!({"purged": 1, "shared_purged": true}));
    let mut last = None;
    let moved_on = wait_until(PROMPT, async || {
        let reply = lookup(a.proxy(), &url).await;
        let done = reply.text() != "2";
        last = Some(reply);
        done
    })
    .await;
    assert!(moved_on, "the first sidecar still answers from before the second one's purge");
    assert_reply(&last.expect("a reply"), "3", "miss");

    // Without Redis a purge reaches only this sidecar, and says so.
    fleet.redis.kill();
    let purged = admin(a.admin(), "DELETE", "/cache/lookup").await;
    assert_eq!(purged.json(), serde_json::json!({"route": "lookup", "purged": 1, "shared_purged": false}));
}

#[test]
fn the_redis_backend_needs_a_fleet() {
    let dir = ConfigDir::with_demo_keys();
    let errors = dir.errors("[cache]\nmax_bytes = \"8MiB\"\nbackend = \"redis\"\n");
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!((errors[0].key_path.as_str(), errors[0].line, errors[0].column), ("cache.backend", 3, 11));
    assert!(errors[0].message.contains("needs a [fleet] section"), "{}", render(&errors));
}
