//! The `[fleet]` surface: config mistakes found by `check` in one pass, each at its key and
//! position and never quoting a password or key; `shared = false` opts a token out; a jwt is
//! never shared; `/tokens` says what is shared and where each value came from, and `/metrics`
//! has the fleet's series from the start.

use crate::fleet::{api_ok, api_token, call_api, token_status, Fleet};
use crate::support::client::admin_get;
use crate::support::config::{config, render, route, rs256_token, ConfigDir};
use crate::support::idp::Idp;
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;

const IDP: &str = "http://127.0.0.1:9/token";

fn oauth2(extra: &str) -> String {
    format!(
        "\n[tokens.api]\nkind = \"oauth2\"\ntoken_url = \"{IDP}\"\ngrant = \"client_credentials\"\n\
         client_id = \"a\"\nclient_auth = \"none\"\n{extra}\n"
    )
}

#[test]
fn every_fleet_mistake_is_reported_at_its_key_in_one_pass() {
    let dir = ConfigDir::with_demo_keys();
    dir.write("short.key", "c2hvcnQ=\n");
    let text = format!(
        "{}{}shared = true\n{}\n[fleet]\nredis_url = \"redis://:hunter2-password@redis:notaport\"\n\
         encryption_key = {{ key_file = \"short.key\" }}\nlease_ttl = \"soon\"\n",
        oauth2(""),
        rs256_token("signed", "5m"),
        ""
    );
    let errors = dir.errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key_path.as_str()).collect();
    assert_eq!(
        keys,
        ["tokens.signed.shared", "fleet.redis_url", "fleet.encryption_key.key_file", "fleet.lease_ttl"],
        "{}",
        render(&errors)
    );
    assert!(errors.iter().all(|e| e.line > 0 && e.column > 0), "{}", render(&errors));
    let shown = render(&errors);
    assert!(!shown.contains("hunter2"), "the password is quoted: {shown}");
    assert!(shown.contains("5 bytes; it must be 32"), "{shown}");
    assert!(shown.contains("only kind = \"oauth2\" tokens are shared"), "{shown}");

    let errors = dir.errors(&format!("{}shared = true\n", oauth2("")));
    assert_eq!(errors[0].key_path, "tokens.api.shared");
    assert!(errors[0].message.contains("needs a [fleet] section"), "{}", render(&errors));

    let errors = dir.errors("[fleet]\nredis_url = \"redis://r\"\n");
    assert!(errors[0].message.contains("missing `encryption_key`"), "{}", render(&errors));
    let errors =
        dir.errors("[fleet]\nredis_url = \"redis://r\"\nencryption_key = { key_env = \"TS_FLEET_KEY_UNSET_E2E\" }\n");
    assert_eq!(errors[0].key_path, "fleet.encryption_key.key_env", "{}", render(&errors));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_false_opts_out_and_tokens_and_metrics_describe_the_fleet() {
    let fleet = Fleet::start().await;
    let idp = Idp::start().await;
    let api = api_ok().await;
    let body = format!(
        "{}{}{}{}",
        api_token(&idp, "shared = false\n"),
        rs256_token("signed", "5m"),
        route(api.port(), &["api", "signed"], ""),
        fleet.section("")
    );
    let toml = config("", &body);
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    assert_eq!(idp.count(), 2, "an opted-out token is exchanged by each sidecar");
    assert!(fleet.redis.keys().is_empty(), "nothing shared: {:?}", fleet.redis.keys());
    let status = token_status(b.admin(), "api").await;
    assert_eq!((status["shared"].as_bool(), status["source"].as_str()), (Some(false), Some("exchange")), "{status}");
    let signed = token_status(b.admin(), "signed").await;
    assert_eq!((signed["shared"].as_bool(), signed["source"].as_str()), (Some(false), Some("signed")), "{signed}");
    let all = admin_get(a.admin(), "/tokens").await.json();
    assert_eq!(all["fleet"]["redis_up"], true, "{all}");
    assert_eq!(all["fleet"]["redis"], format!("redis://127.0.0.1:{}/0", fleet.redis.port), "{all}");
    let metrics = scrape(a.admin()).await;
    assert_eq!(metrics.value("fleet_redis_up", &[]), Some(1.0));
    assert!(metrics.count("fleet_operations_total", &[("op", "ping"), ("result", "ok")]) >= 1.0);
    assert_eq!(call_api(a.proxy(), &api).await.status, 200);
}

/// examples/kubernetes/fleet/configmap.yaml holds a config that `check` accepts, given the
/// files and variable its Secrets provide.
#[test]
fn the_kubernetes_fleet_example_passes_check() {
    let yaml =
        std::fs::read_to_string(crate::support::keys::repo_root().join("examples/kubernetes/fleet/configmap.yaml"))
            .expect("the example");
    let toml: String = yaml
        .split_once("sidecar.toml: |\n")
        .expect("a sidecar.toml block")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = ConfigDir::empty();
    std::fs::create_dir_all(dir.path("fleet")).expect("dir");
    std::fs::create_dir_all(dir.path("oauth")).expect("dir");
    dir.write("fleet/fleet.key", crate::fleet::FLEET_KEY_B64);
    dir.write("oauth/client_secret", "example-secret");
    let root = format!("{}/", dir.root().display());
    let path = dir.write_config(&toml.replace("/etc/token-sidecar/", &root));
    let out = crate::support::sidecar::binary()
        .env("REDIS_PASSWORD", "example-password")
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
