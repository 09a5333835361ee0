//! A Redis with a password: the password comes from the environment through `${VAR}` in
//! `redis_url` and sidecars share; a sidecar without it is refused by Redis (`NOAUTH`), says
//! so once, and exchanges locally. The password is never logged.

use crate::fleet::{api_ok, api_token, call_api, token_status, Fleet};
use crate::support::config::{config, route};
use crate::support::idp::Idp;
use crate::support::redis::Resp;
use crate::support::sidecar::Running;

const PASSWORD: &str = "fleet-redis-pw-71c0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_comes_from_the_environment_and_a_missing_one_falls_back() {
    let fleet = Fleet::start().await;
    assert_eq!(fleet.redis.cmd(&[b"CONFIG", b"SET", b"requirepass", PASSWORD.as_bytes()]), Resp::Status("OK".into()));
    // Read by the sidecar processes, which inherit the test's environment.
    std::env::set_var("TS_E2E_FLEET_REDIS_PASSWORD", PASSWORD);
    let idp = Idp::start().await;
    let api = api_ok().await;
    let tokens = format!("{}{}", api_token(&idp, ""), route(api.port(), &["api"], ""));
    let with_password =
        fleet.section("").replace("redis://127.0.0.1", "redis://:${TS_E2E_FLEET_REDIS_PASSWORD}@127.0.0.1");
    let toml = config("", &format!("{tokens}{with_password}"));
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    assert_eq!(idp.count(), 1, "shared through the password-protected Redis");
    assert_eq!(token_status(b.admin(), "api").await["source"], "shared");

    let without = Running::start(&config("", &format!("{tokens}{}", fleet.section("")))).await;
    assert_eq!(idp.count(), 2, "without the password the sidecar exchanged itself");
    assert_eq!(token_status(without.admin(), "api").await["source"], "exchange_fallback");
    assert_eq!(call_api(without.proxy(), &api).await.status, 200);
    assert_eq!(without.sidecar.count_log("Redis is unavailable"), 1, "{}", without.sidecar.log_text());
    assert!(without.sidecar.log_text().contains("NOAUTH"), "the log says why: {}", without.sidecar.log_text());
    for s in [&a, &b] {
        assert!(!s.sidecar.log_text().contains(PASSWORD), "the password is in a log");
    }
}
