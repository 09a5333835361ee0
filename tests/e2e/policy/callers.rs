//! Caller identity: `Proxy-Authorization` (Basic and Bearer) from real clients, Unix-socket
//! peers by uid, source addresses on reverse listeners; 407 without credentials, 403 on a
//! route the caller may not use, and `Proxy-Authorization` never forwarded.

use std::os::unix::fs::MetadataExt;

use tokio::net::{TcpSocket, UnixStream};

use crate::support::ca::TestCa;
use crate::support::client::{curl, get, python, run_command, stderr, stdout};
use crate::support::config::{config, listener, rs256_token, toml_str, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::metrics::scrape;
use crate::support::raw::{get_bytes, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::open_tunnel;
use crate::support::upstream::Upstream;

const SECRET_A: &str = "fn-a-secret-0123456789abcdef";
const SECRET_B: &str = "fn-b-secret-0123456789abcdef";

/// Callers fn-a (secret inline) and fn-b (secret in a file); route `a-only` (path /a) for
/// fn-a, route `shared` (path /shared) for every caller; both bind `tok`.
fn two_callers(upstream: &Upstream, secret_b_file: &std::path::Path) -> String {
    let port = upstream.port();
    config(
        "",
        &format!(
            "{token}\n[[callers]]\nname = \"fn-a\"\nkey = \"{SECRET_A}\"\n\n[[callers]]\nname = \"fn-b\"\nkey_file = {file}\n\n\
             [[routes]]\nname = \"a-only\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\npath_prefix = \"/a\"\n\
             tokens = [\"tok\"]\ncallers = [\"fn-a\"]\n\n\
             [[routes]]\nname = \"shared\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\npath_prefix = \"/shared\"\n\
             tokens = [\"tok\"]\n",
            token = rs256_token("tok", "10m"),
            file = toml_str(&secret_b_file.to_string_lossy()),
        ),
    )
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_name_the_caller_and_routes_admit_only_their_callers() {
    let upstream = Upstream::start().await;
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret_b_file = secrets.path().join("fn-b.secret");
    std::fs::write(&secret_b_file, format!("{SECRET_B}\n")).expect("write secret");
    let run = Running::start(&two_callers(&upstream, &secret_b_file)).await;
    let proxy = format!("http://{}", run.proxy());

    // curl, Basic: fn-a on its own route gets the token; the proxy credentials stay here.
    let mut c = curl();
    c.args(["-s", "-x", &proxy, "--proxy-user", &format!("fn-a:{SECRET_A}")]).args([
        "-H",
        "Authorization: Bearer {/tok}",
        &upstream.url("/a/curl"),
    ]);
    assert_eq!(stdout(&run_command(c).await), "upstream ok");
    let seen = upstream.single();
    verify_demo(seen.token());
    assert_eq!(seen.header("proxy-authorization"), None, "Proxy-Authorization was forwarded");

    // Python requests, Basic from the proxy URL's userinfo (the secret came from a file):
    // fn-b may use the shared route and not fn-a's.
    let script = format!(
        "import requests\np = {{'http': 'http://fn-b:{SECRET_B}@{}'}}\nh = {{'Authorization': 'Bearer {{/tok}}'}}\n\
         for path in ['/shared/py', '/a/py']:\n    r = requests.get('{}' + path, headers=h, proxies=p)\n    \
         print(r.status_code, r.headers.get('x-token-sidecar-error'))\n",
        run.proxy(),
        upstream.url(""),
    );
    let mut py = python();
    py.args(["-c", &script]);
    let out = run_command(py).await;
    assert_eq!(stdout(&out), "200 None\n403 policy_denied\n", "python: {}", stderr(&out));

    // Bearer carries the secret alone.
    get(run.proxy(), &upstream.url("/shared/bearer"), &[("proxy-authorization", &bearer(SECRET_A))])
        .await
        .assert_upstream_ok();
    let refused = get(run.proxy(), &upstream.url("/a/bearer"), &[("proxy-authorization", &bearer(SECRET_B))]).await;
    refused.assert_error(403, "policy_denied");
    assert!(refused.text().contains("caller fn-b may not use route a-only (its callers: fn-a)"), "{}", refused.text());

    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/a/curl", "/shared/py", "/shared/bearer"], "refused requests reached the upstream");
    assert!(upstream.requests().iter().all(|r| r.header("proxy-authorization").is_none()));

    let metrics = scrape(run.admin()).await;
    for (caller, route, status) in [("fn-a", "a-only", "200"), ("fn-b", "shared", "200"), ("fn-b", "a-only", "403")] {
        let n = metrics.count("caller_requests_total", &[("caller", caller), ("route", route), ("status", status)]);
        assert!(n >= 1.0, "caller_requests_total{{caller={caller},route={route},status={status}}}");
    }
    assert_eq!(metrics.count("policy_denials_total", &[("reason", "policy_denied"), ("caller", "fn-b")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_valid_credentials_the_answer_is_407_with_the_schemes() {
    let upstream = Upstream::start().await;
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret_b_file = secrets.path().join("fn-b.secret");
    std::fs::write(&secret_b_file, SECRET_B).expect("write secret");
    let run = Running::start(&two_callers(&upstream, &secret_b_file)).await;
    let basic = |user: &str, secret: &str| {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        ("a wrong secret", vec![("proxy-authorization", bearer("fn-a-secret-0123456789abcdeX"))]),
        ("fn-b's secret under fn-a's name", vec![("proxy-authorization", basic("fn-a", SECRET_B))]),
        ("an unknown scheme", vec![("proxy-authorization", format!("Digest {SECRET_A}"))]),
    ];
    for (case, headers) in &cases {
        let mut headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("authorization", "Bearer {/tok}"));
        let reply = get(run.proxy(), &upstream.url("/shared/x"), &headers).await;
        reply.assert_error(407, "proxy_auth_required");
        let challenges: Vec<&str> =
            reply.headers.get_all("proxy-authenticate").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(challenges, ["Basic realm=\"token-sidecar\"", "Bearer realm=\"token-sidecar\""], "{case}");
    }
    let tunnel = open_tunnel(run.proxy(), &format!("127.0.0.1:{}", upstream.port())).await.expect_err("CONNECT");
    tunnel.assert_error(407, "proxy_auth_required", "CONNECT without credentials");
    assert_eq!(tunnel.header_all("proxy-authenticate").len(), 2);

    // curl answers the challenge when given credentials.
    let mut c = curl();
    c.args(["-s", "-x", &format!("http://{}", run.proxy()), "--proxy-user", &format!("fn-b:{SECRET_B}")])
        .args(["--proxy-anyauth", &upstream.url("/shared/anyauth")]);
    assert_eq!(stdout(&run_command(c).await), "upstream ok");
    assert_eq!(upstream.count(), 1, "only the identified request reached the upstream");
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("policy_denials_total", &[("reason", "proxy_auth_required")]), 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_its_callers_for_every_request_inside() {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let port = upstream.port();
    let toml = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{}\n[[callers]]\nname = \"fn-a\"\nkey = \"{SECRET_A}\"\n\n[[callers]]\nname = \"fn-b\"\nkey = \"{SECRET_B}\"\n\n\
             [[routes]]\nname = \"tls-a\"\nhost = \"localhost\"\nport = {port}\ntokens = [\"tok\"]\ncallers = [\"fn-a\"]\n",
            rs256_token("tok", "10m")
        ),
    );
    let run = Running::start_with(&toml, Some(&ca), "info").await;
    let ca_file = run.dir.path("ca/ca.pem");
    let https = |user: &str, secret: &str| {
        let mut c = curl();
        c.args(["-s", "-w", " %{http_code}", "--cacert"])
            .arg(&ca_file)
            .args(["-x", &format!("http://{}", run.proxy()), "--proxy-user", &format!("{user}:{secret}")])
            .args(["-H", "Authorization: Bearer {/tok}", &format!("https://localhost:{port}/inside")]);
        c
    };
    assert_eq!(stdout(&run_command(https("fn-a", SECRET_A)).await), "upstream ok 200");
    verify_demo(upstream.single().token());
    let refused = stdout(&run_command(https("fn-b", SECRET_B)).await);
    assert!(refused.starts_with("{\"error\":\"policy_denied\"") && refused.ends_with(" 403"), "{refused}");
    assert_eq!(upstream.count(), 1);
    let metrics = scrape(run.admin()).await;
    assert_eq!(
        metrics.count("caller_requests_total", &[("caller", "fn-a"), ("route", "tls-a"), ("status", "200")]),
        1.0
    );
    assert_eq!(metrics.count("caller_requests_total", &[("caller", "fn-b"), ("route", "intercept")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_peers_are_identified_by_uid() {
    let upstream = Upstream::start().await;
    let socket_dir = tempfile::tempdir().expect("temp dir");
    let socket = socket_dir.path().join("proxy.sock");
    // This process's uid, as the kernel reports it for a file it creates.
    let uid = std::fs::metadata(socket_dir.path()).expect("stat").uid();
    let toml = config(
        &format!("listen_unix = {}", toml_str(&socket.to_string_lossy())),
        &format!(
            "{}\n[[callers]]\nname = \"me\"\nuid = {uid}\n\n[[callers]]\nname = \"someone-else\"\nuid = {}\n\n{}",
            rs256_token("tok", "10m"),
            uid.wrapping_add(1),
            format_args!(
                "[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\ntokens = [\"tok\"]\ncallers = [\"me\"]\n",
                upstream.port()
            ),
        ),
    );
    let run = Running::start(&toml).await;

    // curl speaks HTTP over the socket in origin form; the Host names the target.
    let mut c = curl();
    c.args(["-s", "--unix-socket"]).arg(&socket).args(["-H", "Authorization: Bearer {/tok}", &upstream.url("/curl")]);
    assert_eq!(stdout(&run_command(c).await), "upstream ok");
    verify_demo(upstream.single().token());
    // An absolute-form request over the socket works too.
    let host = format!("127.0.0.1:{}", upstream.port());
    let stream = UnixStream::connect(&socket).await.expect("connect to the socket");
    let reply = RawConn::new(stream)
        .request(&get_bytes(&upstream.url("/raw"), &host, &[("Authorization", "Bearer {/tok}")]))
        .await
        .expect("a response over the socket");
    assert_eq!(reply.status, 200, "{}", reply.summary());
    // The same request over TCP has no peer credentials: 407.
    get(run.proxy(), &upstream.url("/tcp"), &[("authorization", "Bearer {/tok}")])
        .await
        .assert_error(407, "proxy_auth_required");
    assert_eq!(upstream.count(), 2);
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("caller_requests_total", &[("caller", "me"), ("status", "200")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_listeners_know_their_callers_by_source_address() {
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{}\n[[callers]]\nname = \"local-app\"\nsources = [\"127.0.0.1\"]\n\n{}",
            rs256_token("tok", "10m"),
            listener(&upstream.url("/base"))
        ),
    );
    let run = Running::start(&toml).await;
    get(run.listener(), "/from-127.0.0.1", &[("host", "x")]).await.assert_upstream_ok();

    // From 127.0.0.2 (still loopback, another source): no caller.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().unwrap()).expect("bind 127.0.0.2");
    let stream = socket.connect(run.listener()).await.expect("connect from 127.0.0.2");
    let reply = RawConn::new(stream).request(&get_bytes("/from-127.0.0.2", "x", &[])).await.expect("a response");
    reply.assert_error(407, "proxy_auth_required", "a source address no caller has");
    assert!(reply.text().contains("no caller is configured for source address 127.0.0.2"), "{}", reply.text());
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/base/from-127.0.0.1"]);
}
