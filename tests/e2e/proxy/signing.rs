//! Signing failures: the last good token is served until its exp, then 503, never a stale
//! token; service resumes once signing works again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use token_sidecar::store::{Mint, MintFuture};
use token_sidecar::tokens::{MintError, MintedToken};

use crate::support::client::{get, Reply};
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::{signed_claims, unix_secs, verify_demo, verify_demo_at};
use crate::support::keys::demo_key;
use crate::support::sidecar::{parse_config, start_with, FailAfterFirst};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

/// Signs RS256 tokens with the demo key, valid until the whole second at or before
/// `now + ttl`, and reports that same instant as `expires_at`; can be switched to fail.
struct SwitchableMint {
    key: jsonwebtoken::EncodingKey,
    ttl: Duration,
    failing: AtomicBool,
    minted: Mutex<Vec<String>>,
}

impl SwitchableMint {
    fn new(ttl: Duration) -> SwitchableMint {
        let pem = demo_key("demo-rsa.key.pem");
        SwitchableMint {
            key: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("parse demo-rsa.key.pem"),
            ttl,
            failing: AtomicBool::new(false),
            minted: Mutex::new(Vec::new()),
        }
    }

    fn minted(&self) -> Vec<String> {
        self.minted.lock().unwrap().clone()
    }
}

impl Mint for SwitchableMint {
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
        Box::pin(std::future::ready(self.sign(now)))
    }

    fn refresh_before(&self, _token: &MintedToken) -> Duration {
        Duration::from_millis(500)
    }
}

impl SwitchableMint {
    fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(MintError::Sign("injected test failure".into()));
        }
        let iat = now.duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs();
        let exp = (now + self.ttl).duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs();
        let claims = serde_json::json!({ "iss": "proxy-tests", "sub": "A", "iat": iat, "exp": exp });
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        let value = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))?;
        self.minted.lock().unwrap().push(value.clone());
        Ok(MintedToken {
            value: Bytes::from(value),
            issued_at: now,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            exposed: Vec::new(),
        })
    }
}

fn toml_for(upstream: &Upstream) -> String {
    config("", &format!("{}{}", rs256_token("A", "2s"), route(upstream.port(), &["A"], "")))
}

fn exp_of(token: &str) -> SystemTime {
    let exp = signed_claims(token)["exp"].as_u64().expect("exp");
    UNIX_EPOCH + Duration::from_secs(exp)
}

async fn call(sidecar: &token_sidecar::server::Sidecar, upstream: &Upstream) -> Reply {
    get(sidecar.proxy_addr, &upstream.url("/signed"), &[("authorization", "Bearer {/A}")]).await
}

#[tokio::test]
async fn last_good_token_until_exp_then_503_then_recovery() {
    let upstream = Upstream::start().await;
    let mint = Arc::new(SwitchableMint::new(Duration::from_secs(2)));
    let minters = HashMap::from([("A".to_string(), Arc::clone(&mint) as Arc<dyn Mint>)]);
    let sidecar = start_with(&toml_for(&upstream), &minters).await;

    call(&sidecar, &upstream).await.assert_upstream_ok();
    let first = upstream.single().token().to_string();
    assert!(mint.minted().contains(&first), "the token did not come from the test minter");
    verify_demo(&first);

    // Signing breaks. Requests keep getting the last good token until its exp.
    mint.failing.store(true, Ordering::SeqCst);
    let mut served_while_failing = 0;
    let refused = loop {
        let before = upstream.count();
        let reply = call(&sidecar, &upstream).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(upstream.count(), before, "a 503 request still reached the upstream");
            break reply;
        }
        reply.assert_upstream_ok();
        let r = upstream.requests().pop().expect("record");
        verify_demo_at(r.token(), r.arrived);
        served_while_failing += 1;
        assert!(served_while_failing < 400, "still served after 10 s of failed signing");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let refused_at = SystemTime::now();
    refused.assert_error(503, "token_unavailable");
    assert!(served_while_failing >= 1, "the last good token was not served after signing broke");
    let good = mint.minted();
    let last_exp = good.iter().map(|t| exp_of(t)).max().expect("minted tokens");
    assert!(
        refused_at >= last_exp,
        "503 at {:.3} before the last good token expired at {:.3}",
        unix_secs(refused_at),
        unix_secs(last_exp)
    );
    for r in upstream.requests() {
        assert!(good.iter().any(|t| t == r.token()), "the upstream received a token the minter never made");
    }

    // Still failing: still 503, still nothing upstream.
    let before = upstream.count();
    for _ in 0..2 {
        call(&sidecar, &upstream).await.assert_error(503, "token_unavailable");
    }
    assert_eq!(upstream.count(), before);

    // Signing works again: after the refresher's backoff, requests succeed with a new token.
    mint.failing.store(false, Ordering::SeqCst);
    let recovered =
        wait_until(Duration::from_secs(10), async || call(&sidecar, &upstream).await.status == StatusCode::OK).await;
    assert!(recovered, "timed out after 10s waiting until requests succeed again after signing recovered");
    let r = upstream.requests().pop().expect("record");
    let fresh = r.token();
    assert!(!good.iter().any(|t| t == fresh), "after recovery the old token was served again");
    verify_demo_at(fresh, r.arrived);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn configured_tokens_are_never_served_past_their_exp_claim() {
    let upstream = Upstream::start().await;
    let toml = toml_for(&upstream);
    let definition = parse_config(&toml).tokens.remove("A").expect("token A");
    // The token minted at start is the last good one: every refresh after it fails.
    let mint = FailAfterFirst::new(definition);
    let minters = HashMap::from([("A".to_string(), Arc::clone(&mint) as Arc<dyn Mint>)]);
    let sidecar = start_with(&toml, &minters).await;

    let mut served = HashSet::new();
    let mut refused = false;
    for _ in 0..200 {
        let reply = call(&sidecar, &upstream).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            reply.assert_error(503, "token_unavailable");
            refused = true;
            break;
        }
        reply.assert_upstream_ok();
        let r = upstream.requests().pop().expect("record");
        let token = r.token().to_string();
        // Strict RFC 7519 check: the upstream's clock must be before exp.
        verify_demo_at(&token, r.arrived);
        served.insert(token);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "never refused although signing failed and the token's ttl is 2s");
    assert_eq!(served.len(), 1, "a token was minted although signing failed");
    sidecar.shutdown().await;
}
