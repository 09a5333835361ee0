//! Issue 9, finding 1: a token bound to `path_prefix = "/v1"` must never reach a path outside
//! `/v1` under any normalisation an upstream may apply (percent-decoded `/`, `\` and `.`,
//! `;` path parameters, double encoding, overlong UTF-8, raw backslashes). Such requests get
//! 400 `path_not_normalised` and nothing reaches the upstream, on the proxy port, on a reverse
//! listener and inside an intercepted HTTPS tunnel. Legitimate paths keep their token.

use crate::support::ca::TestCa;
use crate::support::config::{config, listener, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::claims;
use crate::support::raw::{exchange, get_bytes, RawResponse};
use crate::support::sidecar::Running;
use crate::support::tunnel::intercepted_raw;
use crate::support::upstream::Upstream;

/// Paths that leave `/v1` once an upstream decodes or normalises them, all sendable as a
/// valid request target.
const ENCODED_ESCAPES: &[&str] = &[
    "/v1/..%2Fadmin",
    "/v1/..%2fadmin",
    "/v1/%2e%2e%2fadmin",
    "/v1/.%2E%2Fadmin",
    "/v1/x/..%2F..%2Fadmin",
    "/v1/..%5Cadmin",
    "/v1/..;/admin",
    "/v1/%2e%2e;x/admin",
    "/v1/%252e%252e%252fadmin",
    "/v1/%c0%ae%c0%ae%c0%afadmin",
];

/// Raw backslashes (Node's WHATWG URL parser reads `\` as `/`). The proxy's HTTP parser may
/// reject these itself; either way the answer is 400 and nothing is forwarded.
const BACKSLASH_ESCAPES: &[&str] = &["/v1/..\\admin", "/v1/x\\..\\..\\admin"];

const AUTH: (&str, &str) = ("Authorization", "Bearer {/tok}");

fn plain_config(upstream_port: u16, with_listener: bool) -> String {
    let listener = if with_listener { listener(&format!("http://127.0.0.1:{upstream_port}")) } else { String::new() };
    format!(
        "{}{}[[routes]]\nname = \"v1\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {upstream_port}\n\
         path_prefix = \"/v1\"\ntokens = [\"tok\"]\n\n{listener}",
        config("", ""),
        rs256_token("tok", "10m"),
    )
}

/// Checks one refused attempt; returns a description of what went wrong, if anything.
/// `parser_may_refuse`: the HTTP parser's refusal (the sidecar's 400 `bad_request`) is accepted.
fn check_refused(
    what: &str,
    response: &RawResponse,
    forwarded_before: usize,
    forwarded_after: usize,
    parser_may_refuse: bool,
) -> Option<String> {
    let forwarded = forwarded_after > forwarded_before;
    let right_answer =
        response.is_error(400, "path_not_normalised") || (parser_may_refuse && response.is_error(400, "bad_request"));
    if right_answer && !forwarded {
        return None;
    }
    Some(format!(
        "{what}: got {}{}",
        response.summary(),
        if forwarded { ", and the upstream received the request" } else { "" }
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_out_of_the_prefix_is_refused_on_the_proxy_port() {
    let upstream = Upstream::start().await;
    let run = Running::start(&plain_config(upstream.port(), false)).await;
    let authority = format!("127.0.0.1:{}", upstream.port());
    let mut failures = Vec::new();
    for path in ENCODED_ESCAPES.iter().chain(BACKSLASH_ESCAPES) {
        let backslash = path.contains('\\');
        let before = upstream.count();
        let request = get_bytes(&format!("http://{authority}{path}"), &authority, &[AUTH]);
        let response = exchange(run.proxy(), &request).await;
        failures.extend(check_refused(path, &response, before, upstream.count(), backslash));
        if response.sidecar_error().is_some() {
            response.assert_no_jwt(path);
        }
    }
    assert!(
        failures.is_empty(),
        "paths escaping /v1 must get 400 path_not_normalised with nothing forwarded:\n{}\nupstream received: {:?}",
        failures.join("\n"),
        upstream.requests().iter().map(|s| s.uri.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_out_of_the_prefix_is_refused_on_a_reverse_listener() {
    let upstream = Upstream::start().await;
    let run = Running::start(&plain_config(upstream.port(), true)).await;
    let listener = run.listener();
    let mut failures = Vec::new();
    for path in ENCODED_ESCAPES.iter().chain(BACKSLASH_ESCAPES) {
        let backslash = path.contains('\\');
        let before = upstream.count();
        let response = exchange(listener, &get_bytes(path, &listener.to_string(), &[AUTH])).await;
        failures.extend(check_refused(path, &response, before, upstream.count(), backslash));
    }
    drop(run);
    assert!(
        failures.is_empty(),
        "reverse listener: paths escaping /v1 must get 400 path_not_normalised:\n{}\nupstream received: {:?}",
        failures.join("\n"),
        upstream.requests().iter().map(|s| s.uri.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_out_of_the_prefix_is_refused_inside_an_intercepted_tunnel() {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let port = upstream.port();
    let config = format!(
        "{}{TLS_SECTION}{}[[routes]]\nname = \"v1-tls\"\nhost = \"localhost\"\nport = {port}\npath_prefix = \"/v1\"\n\
         tokens = [\"tok\"]\n\n",
        config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), ""),
        rs256_token("tok", "10m"),
    );
    let run = Running::start_with(&config, Some(&ca), "info").await;
    let ca_pem = run.ca_pem();
    let authority = format!("localhost:{port}");
    let mut failures = Vec::new();
    for path in ENCODED_ESCAPES.iter().chain(BACKSLASH_ESCAPES) {
        let backslash = path.contains('\\');
        let before = upstream.count();
        let mut conn = intercepted_raw(run.proxy(), &authority, &ca_pem, "localhost").await;
        let response = conn
            .request(&get_bytes(path, &authority, &[AUTH]))
            .await
            .unwrap_or_else(|e| panic!("{path} inside the tunnel: {e}"));
        failures.extend(check_refused(path, &response, before, upstream.count(), backslash));
    }
    // Control: the same tunnel set-up does forward a path inside the prefix, with the token.
    let mut conn = intercepted_raw(run.proxy(), &authority, &ca_pem, "localhost").await;
    let ok = conn.request(&get_bytes("/v1/items", &authority, &[AUTH])).await.expect("control request");
    assert_eq!(ok.status, 200, "control request inside the tunnel: {}", ok.text());
    let seen = upstream.last().expect("the control request reached the upstream");
    assert_eq!(seen.uri, "/v1/items");
    assert!(seen.bearer().is_some_and(|t| t.starts_with("eyJ")), "token injected: {:?}", seen.bearer());
    assert!(
        failures.is_empty(),
        "inside a tunnel: paths escaping /v1 must get 400 path_not_normalised:\n{}\nupstream received: {:?}",
        failures.join("\n"),
        upstream.requests().iter().map(|s| s.uri.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_paths_inside_the_prefix_keep_their_token() {
    let upstream = Upstream::start().await;
    let run = Running::start(&plain_config(upstream.port(), true)).await;
    let authority = format!("127.0.0.1:{}", upstream.port());
    let listener = run.listener();
    // GitLab-style encoded slash inside one segment, a dot inside a segment, dots in the query.
    for path in ["/v1/group%2Fproject", "/v1/a.b/c", "/v1/x?next=/../admin", "/v1"] {
        for (via, addr, target) in
            [("proxy port", run.proxy(), format!("http://{authority}{path}")), ("listener", listener, path.to_string())]
        {
            let host = if via == "listener" { listener.to_string() } else { authority.clone() };
            let response = exchange(addr, &get_bytes(&target, &host, &[AUTH])).await;
            assert_eq!(response.status, 200, "{path} via {via}: {}", response.summary());
            assert_eq!(response.text(), "upstream ok", "{path} via {via}");
            let seen = upstream.last().expect("the upstream received the request");
            assert_eq!(seen.uri, path, "{path} via {via}: the target reaches the upstream unchanged");
            let jwt = seen.jwt().unwrap_or_else(|| panic!("{path} via {via}: no token injected: {:?}", seen.bearer()));
            assert_eq!(claims(jwt)["sub"], "tok");
        }
    }
}
