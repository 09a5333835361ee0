//! Nothing goes to Redis in the clear: after sidecars shared a token, every key and value in
//! Redis is searched for the token, the client secret and the fleet key. Entries that the fleet
//! did not seal (a hand-written plaintext entry, a flipped byte) are refused, counted, and
//! replaced; the token they offered never reaches an upstream.

use std::time::Duration;

use base64::Engine;

use crate::fleet::{api_ok, call_api, idp_with_lifetime, token_status, Fleet, CLIENT_SECRET, FLEET_KEY_B64};
use crate::support::idp::access_token;
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_secret_or_key_bytes_are_in_redis_in_the_clear() {
    let fleet = Fleet::start().await;
    let idp = idp_with_lifetime(3600).await;
    let api = api_ok().await;
    let toml = fleet.config(&idp, api.port(), "");
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    assert_eq!(idp.count(), 1);
    assert_eq!(token_status(b.admin(), "api").await["source"], "shared");
    // A renewal writes too (the 401 path is in renewal.rs); an admin refresh does here.
    let refreshed = crate::exchange::admin_refresh(a.admin(), "api").await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());

    let key = base64::engine::general_purpose::STANDARD.decode(FLEET_KEY_B64).expect("key");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("first token", access_token(1).into_bytes()),
        ("second token", access_token(2).into_bytes()),
        ("token prefix", b"idp-access".to_vec()),
        ("client secret", CLIENT_SECRET.as_bytes().to_vec()),
        ("fleet key (raw)", key.clone()),
        ("fleet key (base64)", FLEET_KEY_B64.as_bytes().to_vec()),
        ("fleet key (hex)", hex.into_bytes()),
        ("client id", b"fleet-agent".to_vec()),
        ("token name", b"api".to_vec()),
    ];
    let keys = fleet.redis.keys();
    assert!(!keys.is_empty(), "the fleet wrote nothing");
    for k in &keys {
        let value = fleet.redis.get(k).unwrap_or_default();
        assert!(value.starts_with(b"TSF1"), "a value not in the sealed format under {}", String::from_utf8_lossy(k));
        for (what, bytes) in &secrets {
            assert!(!contains(k, bytes), "the {what} is in a key name: {}", String::from_utf8_lossy(k));
            assert!(!contains(&value, bytes), "the {what} is in the value of {}", String::from_utf8_lossy(k));
        }
    }
    let reply = call_api(b.proxy(), &api).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tampered_entries_are_refused_counted_and_replaced() {
    let fleet = Fleet::start().await;
    let idp = idp_with_lifetime(3600).await;
    let api = api_ok().await;
    let toml = fleet.config(&idp, api.port(), "");
    let first = Running::start(&toml).await;
    let entries = fleet.redis.keys_containing("token-sidecar:token:");
    assert_eq!(entries.len(), 1, "one entry for the one shared token");
    let entry = entries[0].clone();
    let sealed = fleet.redis.get(&entry).expect("the entry");
    drop(first);

    // A hand-written plaintext entry, shaped like the real one.
    let forged = serde_json::json!({
        "token": "attacker-token",
        "issued_at_ms": 0,
        "expires_at_ms": 4_102_444_800_000u64,
        "exposed": [],
    });
    fleet.redis.set(&entry, forged.to_string().as_bytes(), Duration::from_secs(3600));
    let second = Running::start(&toml).await;
    assert_eq!(idp.count(), 2, "the plaintext entry was not used: the sidecar exchanged");
    let metrics = scrape(second.admin()).await;
    // Counted at each read (before and after taking the lease).
    assert!(metrics.count("fleet_entries_rejected_total", &[("reason", "foreign")]) >= 1.0);
    assert_eq!(metrics.count("fleet_entries_rejected_total", &[("reason", "tampered")]), 0.0);
    let reply = call_api(second.proxy(), &api).await;
    assert_eq!(api.last().and_then(|s| s.bearer().map(str::to_string)), Some(access_token(2)), "{}", reply.text());
    let replaced = fleet.redis.get(&entry).expect("the entry");
    assert!(replaced.starts_with(b"TSF1"), "the sidecar replaced the forged entry with a sealed one");

    // The real sealed entry with one byte flipped (in the ciphertext, then in the nonce).
    for at in [sealed.len() - 20, 6] {
        let mut tampered = replaced.clone();
        tampered[at] ^= 0x01;
        fleet.redis.set(&entry, &tampered, Duration::from_secs(3600));
        let before = idp.count();
        let next = Running::start(&toml).await;
        assert_eq!(idp.count(), before + 1, "the tampered entry was not used: the sidecar exchanged");
        let metrics = scrape(next.admin()).await;
        assert!(metrics.count("fleet_entries_rejected_total", &[("reason", "tampered")]) >= 1.0);
        assert_eq!(token_status(next.admin(), "api").await["source"], "exchange");
    }
    assert!(api.requests().iter().all(|s| s.bearer() != Some("attacker-token")), "the forged token reached the API");
}
