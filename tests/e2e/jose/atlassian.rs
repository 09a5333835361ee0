//! Atlassian Connect: `qsh` is recomputed by Atlassian's own algorithm as the Python
//! `atlassian-jwt` package implements it, for each request the upstream received, including
//! paths with percent-encoded characters and `&`, repeated query keys, `+`, `*`, `~`, empty
//! values, a `jwt` parameter (left out) and a Confluence-style context path.

use serde_json::{json, Value};

use crate::support::client::{python, request, run_command, send};
use crate::support::config::{config, route};
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

const SHARED_SECRET: &str = "an Atlassian sharedSecret from the install callback";

/// What the Atlassian side does: verify the HS256 token with the shared secret, then
/// recompute `qsh` from the request it received (relative to the app's base URL).
const ATLASSIAN_SERVER: &str = r#"
import json, sys
import jwt
from atlassian_jwt.url_utils import hash_url
out = []
for case in json.load(sys.stdin):
    claims = jwt.decode(case["token"], case["secret"], algorithms=["HS256"])
    out.append({"claimed": claims["qsh"], "recomputed": hash_url(case["method"], case["uri"]), "iss": claims["iss"]})
print(json.dumps(out))
"#;

fn atlassian_token(name: &str, context_path: Option<&str>) -> String {
    let context = context_path.map(|p| format!("context_path = \"{p}\"\n")).unwrap_or_default();
    format!(
        "[tokens.{name}]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"{SHARED_SECRET}\"\nttl = \"3m\"\n\
         per_request = true\n{context}claims = {{ iss = \"my-connect-app\" }}\n\n[tokens.{name}.request_claims]\n\
         qsh = \"query_hash_atlassian\"\n\n"
    )
}

#[tokio::test]
async fn qsh_matches_atlassians_computation_for_every_request() {
    let upstream = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}{}",
            atlassian_token("jira", None),
            atlassian_token("confluence", Some("/wiki")),
            route(
                upstream.port(),
                &["jira"],
                "path_prefix = \"/rest\"\n[routes.set_headers]\nAuthorization = \"JWT {/jira}\""
            ),
            route(
                upstream.port(),
                &["confluence"],
                "path_prefix = \"/wiki\"\n[routes.set_headers]\nAuthorization = \"JWT {/confluence}\""
            ),
        ),
    );
    let sidecar = start(&text).await;
    let requests = [
        (
            "GET",
            "/rest/api/3/search?jql=project%20%3D%20TEST%20ORDER%20BY%20key&maxResults=5&fields=summary&fields=status",
        ),
        ("GET", "/rest/api/3/attachment/content/Some+Image+%28dev%29+-+copy.png"),
        ("POST", "/rest/api/3/issue?b=2&a=1&a=0&a=10"),
        ("GET", "/rest/api/3/user/search?query=a+b*c~d&empty=&flag&jwt=ignored-by-qsh"),
        ("DELETE", "/rest/api/3/filter/a%26b/"),
        ("GET", "/rest/api/3/search?q=%E2%9C%93&Z=1&a=2&_=3"),
        ("GET", "/wiki/rest/api/content?spaceKey=DEV&expand=body.storage,version"),
        ("PUT", "/wiki/rest/api/content/123"),
    ];
    for (method, path) in requests {
        let reply = send(sidecar.proxy_addr, request(method, &upstream.url(path), &[], "")).await;
        reply.assert_upstream_ok();
    }
    let received = upstream.requests();
    assert_eq!(received.len(), requests.len());
    let mut cases = Vec::new();
    for r in &received {
        let token = r.header("authorization").and_then(|a| a.strip_prefix("JWT ")).expect("Authorization: JWT <token>");
        // Relative to the app's base URL: Confluence's base URL ends in /wiki.
        let uri = if r.uri.starts_with("/wiki") { r.uri["/wiki".len()..].to_string() } else { r.uri.clone() };
        cases.push(json!({"method": r.method.as_str(), "uri": uri, "token": token, "secret": SHARED_SECRET}));
    }
    let results = run_python(ATLASSIAN_SERVER, &Value::Array(cases)).await;
    for ((r, (_, sent)), result) in received.iter().zip(requests).zip(results.as_array().expect("list")) {
        assert_eq!(result["claimed"], result["recomputed"], "qsh for {} {} (sent as {sent})", r.method, r.uri);
        assert_eq!(result["iss"], "my-connect-app");
    }
    // Every request got its own token: the qsh differs with the request.
    let tokens: std::collections::HashSet<&str> = received.iter().filter_map(|r| r.header("authorization")).collect();
    assert_eq!(tokens.len(), requests.len());
    sidecar.shutdown().await;
}

/// Runs a Python program with `input` as JSON on stdin and returns its JSON output.
pub async fn run_python(program: &str, input: &Value) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let input_path = dir.path().join("input.json");
    std::fs::write(&input_path, input.to_string()).expect("write input");
    let mut cmd = python();
    cmd.args(["-c", program]).stdin(std::fs::File::open(&input_path).expect("open input"));
    let out = run_command(cmd).await;
    assert!(
        out.status.success(),
        "the Python check failed ({}); `.ci/test` installs joserfc and atlassian-jwt: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}
