//! Mistakes in `kind = "oauth2"` tokens are config errors at load, each naming its key path
//! and position: signing fields that belong to JWTs, references to unknown tokens or tokens
//! of the wrong kind, reference cycles, plain-HTTP token endpoints off loopback, and keys that
//! do not fit the grant. `check` validates without contacting the endpoint.

use token_sidecar::config::Diagnostic;

use crate::exchange::{assertion_jwt, secret};
use crate::support::client::{stderr, stdout};
use crate::support::config::{render, rs256_token, single, ConfigDir};
use crate::support::idp::Idp;
use crate::support::sidecar::run_cli;

const URL: &str = "http://127.0.0.1:9/token";

fn token(name: &str, body: &str) -> String {
    format!("\n[tokens.{name}]\nkind = \"oauth2\"\ntoken_url = \"{URL}\"\n{body}\n")
}

/// The one error of `text`, which must name `key_path` at a real position.
fn error_at(text: &str, key_path: &str) -> Diagnostic {
    let errors = ConfigDir::with_demo_keys().errors(text);
    let e = single(&errors).clone();
    assert_eq!(e.key_path, key_path, "{e}\n--- config ---\n{text}");
    assert!(e.line > 0 && e.column > 0, "no position: {e}");
    e
}

#[test]
fn jwt_signing_fields_are_refused_on_oauth2() {
    for (field, value) in [
        ("algorithm", "\"RS256\""),
        ("key_type", "\"RsaPem\""),
        ("key", "\"x\""),
        ("key_file", "\"keys/demo-rsa.key.pem\""),
        ("key_env", "\"E2E_NOPE\""),
        ("ttl", "\"5m\""),
        ("iat_skew", "\"30s\""),
        ("kid", "\"k1\""),
        ("typ", "\"JWT\""),
        ("auto_claims", "[\"iat\"]"),
    ] {
        let text = token("api", &format!("grant = \"client_credentials\"\n{field} = {value}"));
        error_at(&text, &format!("tokens.api.{field}"));
    }
    for table in ["claims", "header"] {
        let text = token("api", &format!("grant = \"client_credentials\"\n\n[tokens.api.{table}]\nx = \"y\""));
        let errors = ConfigDir::with_demo_keys().errors(&text);
        let e = single(&errors);
        assert!(e.key_path.starts_with(&format!("tokens.api.{table}")), "{e}");
    }
}

#[test]
fn references_must_name_tokens_of_the_right_kind() {
    let e = error_at(&token("api", "grant = \"jwt_bearer\"\nassertion = \"no_such_jwt\""), "tokens.api.assertion");
    assert!(e.message.contains("no_such_jwt"), "{e}");

    let jwt = rs256_token("signer", "5m");
    let text = format!(
        "{jwt}{}",
        token("api", "grant = \"client_credentials\"\nclient_id = \"c\"\nclient_secret = \"signer\"")
    );
    let e = error_at(&text, "tokens.api.client_secret");
    assert!(e.message.contains("signer"), "{e}");

    let text = format!("{}{}", secret("s", "x"), token("api", "grant = \"jwt_bearer\"\nassertion = \"s\""));
    error_at(&text, "tokens.api.assertion");

    let text =
        format!("{}{}", secret("s", "x"), token("api", "grant = \"client_credentials\"\nclient_assertion = \"s\""));
    error_at(&text, "tokens.api.client_assertion");

    let text = token("api", "grant = \"client_credentials\"\n\n[tokens.api.form]\nx = \"{/ghost}\"");
    let errors = ConfigDir::with_demo_keys().errors(&text);
    let e = single(&errors);
    assert!(e.key_path.starts_with("tokens.api.form"), "{e}");
    assert!(e.message.contains("ghost"), "{e}");
}

#[test]
fn a_cycle_between_two_exchanges_is_refused() {
    let text = format!(
        "{}{}",
        token("a", "grant = \"client_credentials\"\n\n[tokens.a.form]\nsubject_token = \"{/b}\""),
        token("b", "grant = \"client_credentials\"\n\n[tokens.b.form]\nsubject_token = \"{/a}\""),
    );
    let errors = ConfigDir::with_demo_keys().errors(&text);
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            e.key_path.starts_with("tokens.a.form") || e.key_path.starts_with("tokens.b.form"),
            "the error names where the cycle is: {e}"
        );
        assert!(e.line > 0, "{e}");
    }
    let all = render(&errors).to_lowercase();
    assert!(all.contains("cycle") || all.contains("circular"), "the error says it is a cycle:\n{all}");

    // A token referring to itself.
    let text = token("a", "grant = \"client_credentials\"\n\n[tokens.a.form]\nself = \"{/a}\"");
    let errors = ConfigDir::with_demo_keys().errors(&text);
    assert!(errors.iter().all(|e| e.key_path.starts_with("tokens.a.form")), "{}", render(&errors));
}

#[test]
fn plain_http_token_urls_only_on_loopback() {
    let text = "[tokens.api]\nkind = \"oauth2\"\ntoken_url = \"http://login.example.com/token\"\ngrant = \"client_credentials\"\n";
    let e = error_at(text, "tokens.api.token_url");
    assert_eq!((e.line, e.column), (3, 13), "{e}");
    for url in
        ["http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:9/token", "https://login.example.com/t"]
    {
        let text = format!("[tokens.api]\nkind = \"oauth2\"\ntoken_url = \"{url}\"\ngrant = \"client_credentials\"\n");
        ConfigDir::with_demo_keys().config(&text);
    }
    // A missing key is reported on its table, like every missing key.
    let e = error_at("[tokens.api]\nkind = \"oauth2\"\ngrant = \"client_credentials\"\n", "tokens.api");
    assert!(e.message.contains("token_url"), "{e}");
}

#[test]
fn keys_that_do_not_fit_the_grant_are_refused() {
    // jwt_bearer needs an assertion.
    let errors = ConfigDir::with_demo_keys().errors(&token("api", "grant = \"jwt_bearer\""));
    let e = single(&errors);
    assert!(e.key_path.starts_with("tokens.api"), "{e}");
    assert!(e.to_string().contains("assertion"), "{e}");

    // An assertion with another grant.
    let text =
        format!("{}{}", assertion_jwt("sa", "x"), token("api", "grant = \"client_credentials\"\nassertion = \"sa\""));
    error_at(&text, "tokens.api.assertion");

    // grant = "custom" takes its request from [request] only.
    for (key, value) in [("scope", "\"read\""), ("client_id", "\"c\""), ("client_auth", "\"none\"")] {
        let text = token("api", &format!("grant = \"custom\"\n{key} = {value}\n\n[tokens.api.request]\nbody = \"x\""));
        error_at(&text, &format!("tokens.api.{key}"));
    }
    let text = token("api", "grant = \"custom\"\n\n[tokens.api.request]\nbody = \"x\"\n\n[tokens.api.form]\nx = \"y\"");
    let errors = ConfigDir::with_demo_keys().errors(&text);
    assert!(single(&errors).key_path.starts_with("tokens.api.form"), "{}", render(&errors));

    // [request] with another grant; json and body together.
    let text = token("api", "grant = \"client_credentials\"\n\n[tokens.api.request]\nbody = \"x\"");
    error_at(&text, "tokens.api.request");
    let text = token("api", "grant = \"custom\"\n\n[tokens.api.request]\nbody = \"x\"\njson = { a = 1 }");
    let errors = ConfigDir::with_demo_keys().errors(&text);
    assert!(single(&errors).key_path.starts_with("tokens.api.request"), "{}", render(&errors));

    // An exposed field name with a dot.
    let text = token("api", "grant = \"client_credentials\"\n\n[tokens.api.expose]\n\"a.b\" = \"/x\"");
    let errors = ConfigDir::with_demo_keys().errors(&text);
    assert!(single(&errors).key_path.starts_with("tokens.api.expose"), "{}", render(&errors));

    let e = error_at(&token("api", "grant = \"password\""), "tokens.api.grant");
    assert!(e.message.contains("password"), "{e}");
}

/// `check` validates an exchange config without contacting the token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_an_exchange_config_without_contacting_the_endpoint() {
    let idp = Idp::start().await;
    let dir = ConfigDir::with_demo_keys();
    let text = format!(
        "{}{}\n[tokens.api]\nkind = \"oauth2\"\ntoken_url = \"{}\"\ngrant = \"jwt_bearer\"\nassertion = \"sa\"\n\n\
         [[routes]]\nhost = \"api.example.com\"\ntokens = [\"api\"]\n",
        assertion_jwt("sa", "x"),
        secret("unused", "x"),
        idp.url("/token"),
    );
    dir.write_config(&text);
    let root = dir.root().to_path_buf();
    let out = tokio::task::spawn_blocking(move || run_cli(&root, &["check", "--config", "sidecar.toml"]))
        .await
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    // The first line; the effective policy follows (tests/e2e/policy/check.rs).
    assert_eq!(stdout(&out).lines().next(), Some("sidecar.toml: ok (3 tokens, 1 routes, 0 listeners)"));
    assert_eq!(idp.count(), 0, "check contacted the token endpoint");
}
