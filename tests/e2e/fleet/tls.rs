//! `rediss://`: TLS to Redis with the same trust as upstreams (public roots plus
//! `extra_ca_file`). A Redis whose certificate is not trusted is never spoken to: the sidecar
//! exchanges locally and says so, and no request fails.

use crate::fleet::{api_ok, api_token, call_api, token_status, Fleet};
use crate::support::ca::TestCa;
use crate::support::config::{config, route, UPSTREAM_CA_FILE};
use crate::support::idp::Idp;
use crate::support::redis::{RedisServer, RedisTls};
use crate::support::sidecar::Running;

async fn tls_fleet(ca: &TestCa) -> Fleet {
    let dir = tempfile::tempdir().expect("cert dir");
    let (cert, key) = ca.leaf_pem(&["localhost"]);
    let (cert_file, key_file) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let redis = RedisServer::start_tls(RedisTls { cert_file, key_file }).await;
    // redis-server reads its files at start; the folder may go.
    drop(dir);
    Fleet::with(redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_extra_ca_file_shares_and_an_untrusted_redis_is_not_used() {
    let ca = TestCa::new();
    let fleet = tls_fleet(&ca).await;
    let idp = Idp::start().await;
    let api = api_ok().await;
    let rest = format!("{}{}{}", api_token(&idp, ""), route(api.port(), &["api"], ""), fleet.section(""));
    let trusted = config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), &rest);
    let a = Running::start_with(&trusted, Some(&ca), "info").await;
    let b = Running::start_with(&trusted, Some(&ca), "info").await;
    assert_eq!(idp.count(), 1, "shared over TLS");
    assert_eq!(token_status(b.admin(), "api").await["source"], "shared");
    assert_eq!(call_api(a.proxy(), &api).await.status, 200);

    // Without the CA, the certificate is not trusted: no sharing, no failure.
    let untrusted = Running::start(&config("", &rest)).await;
    assert_eq!(idp.count(), 2, "the sidecar that cannot verify Redis exchanged itself");
    assert_eq!(token_status(untrusted.admin(), "api").await["source"], "exchange_fallback");
    assert_eq!(call_api(untrusted.proxy(), &api).await.status, 200);
    let log = untrusted.sidecar.log_text();
    assert_eq!(untrusted.sidecar.count_log("Redis is unavailable"), 1, "{log}");
    assert!(log.contains("TLS with rediss://localhost"), "the log says why: {log}");
}
