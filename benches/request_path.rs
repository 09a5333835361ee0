//! Per-request costs on the substitution path, against a real [`Snapshot`] built from a config
//! (one RS256 token with the demo key, bound to one route under its own name and the alias
//! `auth_token`, the Prometheus recorder installed as in the running sidecar):
//!
//! - `token_load/*`: `TokenCell::current` and `RequestTokens::load`, the once-per-request
//!   atomic loads of the token snapshot;
//! - `headers/*`: placeholder substitution over a realistic header map of 10 headers, with
//!   and without `Authorization: Bearer {/auth_token}` (the loop `proxy::forward` runs);
//! - `uri/*`: `substitute_uri` on a typical request target, with and without a placeholder;
//! - `tokens_and_headers`: load the tokens, then substitute the headers: everything a routed
//!   request without a body spends on tokens;
//! - `per_request/*`: the same for a token signed per request (issue 15): HS256 with
//!   Atlassian's `qsh`, ES256 and EdDSA with Coinbase's `uri` and header `nonce`; and
//!   `dpop_proof/es256`, one DPoP proof. This is what signing on the request path adds.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use token_sidecar::config::Config;
use token_sidecar::snapshot::{RequestTokens, Snapshot};
use token_sidecar::substitute::{substitute, substitute_uri, Refused, Resolve};

fn config_text(keys: &Path) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[tokens.api_jwt]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "{key}"
kid = "bench"
ttl = "15m"

[tokens.api_jwt.claims]
iss = "token-sidecar-bench"
sub = "agent-function"
aud = "api.example.com"
scope = "read write"

[tokens.other_jwt]
algorithm = "HS256"
key_type = "Secret"
key = "not-a-real-secret-just-for-the-bench"
ttl = "15m"

[tokens.atlassian]
algorithm = "HS256"
key_type = "Secret"
key = "an Atlassian sharedSecret for the bench"
ttl = "3m"
per_request = true
claims = {{ iss = "bench-app" }}
request_claims = {{ qsh = "query_hash_atlassian" }}

[tokens.coinbase_es256]
algorithm = "ES256"
key_type = "EcPem"
key_file = "{ec}"
ttl = "2m"
per_request = true
auto_claims = ["nbf", "exp", "jti"]
claims = {{ iss = "cdp", sub = "organizations/org/apiKeys/key" }}
request_claims = {{ uri = "uri_coinbase" }}
request_header = {{ nonce = "nonce" }}

[tokens.coinbase_eddsa]
algorithm = "EdDSA"
key_type = "EdPem"
key_file = "{ed}"
ttl = "2m"
per_request = true
request_claims = {{ uri = "uri_coinbase" }}

[tokens.dpop_key]
kind = "dpop"
algorithm = "ES256"
key_type = "EcPem"
key_file = "{ec}"

[[routes]]
name = "api"
host = "api.example.com"
tokens = ["api_jwt"]

[routes.placeholders]
auth_token = "api_jwt"

[[routes]]
name = "signed"
host = "signed.example.com"
tokens = ["atlassian", "coinbase_es256", "coinbase_eddsa"]
"#,
        key = keys.join("demo-rsa.key.pem").display(),
        ec = keys.join("demo-ec.key.pem").display(),
        ed = keys.join("demo-ed.key.pem").display(),
    )
}

fn snapshot() -> Arc<Snapshot> {
    // As `Sidecar::start` does, so the substitution counters are real ones.
    token_sidecar::admin::metrics_handle();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = config_text(&root.join("examples/keys"));
    let config = Config::from_text(&root.join("bench-sidecar.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Refreshers are spawned on this runtime and never run again: the token lives 15 minutes.
    let snapshot = runtime.block_on(Snapshot::build(config, None)).expect("snapshot");
    std::mem::forget(runtime);
    Arc::new(snapshot)
}

/// The headers of a typical JSON API call from an agent function's HTTP client.
fn headers(with_placeholder: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: &'static str| {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    put("host", "api.example.com");
    put("user-agent", "python-requests/2.32.3");
    put("accept", "application/json");
    put("accept-encoding", "gzip, deflate");
    put("content-type", "application/json");
    put("content-length", "87");
    put("x-request-id", "6f1c2a9e-3b7d-4c1e-9a8f-2d4b6c8e0f11");
    put("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    put("cookie", "session=abc123; theme=dark; {not=placeholder}");
    put("authorization", if with_placeholder { "Bearer {/auth_token}" } else { "Bearer static-token-value" });
    assert_eq!(h.len(), 10);
    h
}

/// The header loop of `proxy::forward` (`substitute_headers`), which is private there.
fn substitute_headers(headers: &mut HeaderMap, tokens: &dyn Resolve) -> Result<(), Refused> {
    for value in headers.values_mut() {
        let replaced = match substitute(value.as_bytes(), tokens)? {
            Cow::Borrowed(_) => continue,
            Cow::Owned(bytes) => bytes,
        };
        if let Ok(v) = HeaderValue::from_bytes(&replaced) {
            *value = v;
        }
    }
    Ok(())
}

fn bench_request_path(c: &mut Criterion) {
    let snapshot = snapshot();
    let route =
        snapshot.routes.find(token_sidecar::routes::Scheme::Https, "api.example.com", 443, "/", &http::Method::GET);
    let route = *route.expect("the bench route matches");
    let cell = Arc::clone(&snapshot.cells["api_jwt"]);
    let now = SystemTime::now();

    let mut group = c.benchmark_group("request_path/token_load");
    group.bench_function("TokenCell::current", |b| b.iter(|| black_box(cell.current(black_box(now)))));
    group.bench_function("RequestTokens::load", |b| {
        b.iter(|| black_box(RequestTokens::load(Arc::clone(&snapshot), black_box(route), now)))
    });
    group.finish();

    let tokens = RequestTokens::load(Arc::clone(&snapshot), route, now);
    let mut probe = headers(true);
    substitute_headers(&mut probe, &tokens).expect("bound token");
    assert!(probe["authorization"].as_bytes().starts_with(b"Bearer eyJ"), "placeholder replaced");

    let mut group = c.benchmark_group("request_path/headers");
    for (name, with) in [("10_headers_one_placeholder", true), ("10_headers_no_placeholder", false)] {
        let template = headers(with);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |h| substitute_headers(black_box(h), &tokens).expect("bound token"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("request_path/uri");
    for (name, target) in [
        ("plain", "/v1/customers/cus_8f3k2/orders?limit=50&cursor=eyJvZmZzZXQiOjUwfQ%3D%3D"),
        ("encoded_placeholder", "/v1/customers/cus_8f3k2/orders?limit=50&token=%7B%2Fauth_token%7D"),
    ] {
        group.bench_function(name, |b| b.iter(|| black_box(substitute_uri(black_box(target), &tokens))));
    }
    group.finish();

    let template = headers(true);
    c.bench_function("request_path/tokens_and_headers", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                let tokens = Arc::new(RequestTokens::load(Arc::clone(&snapshot), route, SystemTime::now()));
                substitute_headers(black_box(h), &*tokens).expect("bound token");
                tokens
            },
            BatchSize::SmallInput,
        )
    });
}

/// Tokens signed for each request: load, sign over the request, substitute the headers.
fn bench_per_request(c: &mut Criterion) {
    let snapshot = snapshot();
    let route = snapshot.routes.find(
        token_sidecar::routes::Scheme::Https,
        "signed.example.com",
        443,
        "/rest/api/3/search",
        &http::Method::GET,
    );
    let route = *route.expect("the signed route matches");
    let uri: http::Uri =
        "https://signed.example.com/rest/api/3/search?jql=project%20%3D%20X&maxResults=50&fields=a&fields=b"
            .parse()
            .expect("uri");
    let mut group = c.benchmark_group("request_path/per_request");
    for (name, token) in
        [("hs256_qsh", "atlassian"), ("es256_coinbase", "coinbase_es256"), ("eddsa_coinbase", "coinbase_eddsa")]
    {
        let mut template = headers(false);
        template
            .insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("JWT {{/{token}}}")).expect("value"));
        {
            let tokens = RequestTokens::load(Arc::clone(&snapshot), route, SystemTime::now());
            let mut probe = template.clone();
            tokens.begin_headers(&http::Method::GET, &uri, &probe);
            substitute_headers(&mut probe, &tokens).expect("signed");
            assert!(probe["authorization"].as_bytes().starts_with(b"JWT eyJ"), "{name}: signed per request");
        }
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |h| {
                    let tokens = RequestTokens::load(Arc::clone(&snapshot), route, SystemTime::now());
                    tokens.begin_headers(&http::Method::GET, &uri, h);
                    substitute_headers(black_box(h), &tokens).expect("signed");
                    tokens
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let key = snapshot.config.tokens["dpop_key"].dpop_key().expect("a DPoP key");
    c.bench_function("request_path/dpop_proof/es256", |b| {
        b.iter(|| {
            black_box(key.proof("GET", "https://api.example.com/v1/users", Some(b"access-token"), SystemTime::now()))
        })
    });
}

fn config() -> Criterion {
    Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_request_path, bench_per_request
}
criterion_main!(benches);
