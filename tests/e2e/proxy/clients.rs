//! Real clients (curl, Python requests) send placeholders through the proxy.

use crate::support::client::{curl, python, run_command};
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

fn aliased(upstream: &Upstream) -> String {
    config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\"")
        ),
    )
}

fn assert_success(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {stdout:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn curl_with_proxy_flag_and_with_http_proxy_env() {
    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream)).await;
    let proxy = format!("http://{}", sidecar.proxy_addr);

    let mut flag = curl();
    flag.args(["-s", "-g", "-x", &proxy, &upstream.url("/curl-x?t={/auth_token}")]);
    flag.args(["-H", "Authorization: Bearer {/auth_token}"]);
    let out = assert_success(&run_command(flag).await, "curl -x");
    assert_eq!(out, "upstream ok");

    let mut env = curl();
    env.args(["-s", "-g", &upstream.url("/curl-env"), "-H", "Authorization: Bearer {/auth_token}"]);
    env.env("http_proxy", &proxy);
    let out = assert_success(&run_command(env).await, "curl with http_proxy");
    assert_eq!(out, "upstream ok");

    let received = upstream.requests();
    assert_eq!(received.len(), 2, "both curl requests should reach the upstream through the proxy");
    let t = received[0].token();
    assert_eq!(verify_demo(t)["sub"], "tok");
    assert_eq!(received[0].uri, format!("/curl-x?t={t}"));
    assert_eq!(received[1].path(), "/curl-env");
    verify_demo(received[1].token());
    sidecar.shutdown().await;
}

const PYTHON_CLIENT: &str = r#"
import sys, requests
url, proxy = sys.argv[1], sys.argv[2]
proxies = {"http": proxy}
r = requests.get(url + "/py-get", headers={"Authorization": "Bearer {/auth_token}"}, proxies=proxies, timeout=10)
print(r.status_code, r.text)
r = requests.post(url + "/py-json", json={"token": "{/auth_token}"}, proxies=proxies, timeout=10)
print(r.status_code, r.text)
"#;

#[tokio::test]
async fn python_requests_with_proxies() {
    let mut probe = python();
    probe.args(["-c", "import requests"]);
    let probe = run_command(probe).await;
    assert!(
        probe.status.success(),
        "python3 cannot import requests ({}); .ci/run installs it (python3 -m pip install requests): \
         install it the same way to run this test",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    let upstream = Upstream::start().await;
    let sidecar = start(&aliased(&upstream)).await;
    let mut python = python();
    python.args(["-c", PYTHON_CLIENT, &upstream.url(""), &format!("http://{}", sidecar.proxy_addr)]);
    let out = assert_success(&run_command(python).await, "python requests");
    assert_eq!(out, "200 upstream ok\n200 upstream ok\n");

    let received = upstream.requests();
    assert_eq!(received.len(), 2);
    let t = received[0].token();
    assert_eq!(verify_demo(t)["sub"], "tok");
    let json: serde_json::Value = serde_json::from_slice(&received[1].body()).expect("JSON body");
    verify_demo(json["token"].as_str().expect("token string"));
    let length: usize = received[1].header("content-length").expect("content-length").parse().expect("number");
    assert_eq!(length, received[1].body().len());
    sidecar.shutdown().await;
}
