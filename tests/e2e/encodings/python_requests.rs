//! Python `requests`, the way agent functions use it, through HTTP_PROXY: form bodies
//! (`data={...}` encodes `{/NAME}` as `%7B%2FNAME%7D`), placeholders in a URL string (sent as
//! `%7B/NAME%7D`) and in `params=` (`%7B%2FNAME%7D`), `auth=(user, password)` and a URL's
//! userinfo (both Basic credentials).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::encodings::{form_fields, World, HOSTILE};
use crate::support::client::{python, run_command};
use crate::support::jwt::verify_demo;

const CLIENT: &str = r#"
import sys, requests
url, proxy = sys.argv[1], sys.argv[2]
proxies = {"http": proxy}
def show(r):
    print(r.status_code, r.text)
show(requests.post(url + "/form", data={"assertion": "{/auth_token}", "grant_type": "jwt-bearer"}, proxies=proxies, timeout=10))
show(requests.get(url + "/path/{/auth_token}?q={/auth_token}", proxies=proxies, timeout=10))
show(requests.get(url + "/params", params={"t": "{/auth_token}"}, proxies=proxies, timeout=10))
show(requests.get(url + "/auth", auth=("api", "{/auth_token}"), proxies=proxies, timeout=10))
show(requests.post(url + "/hostile", data={"k": "{/hostile}", "after": "1"}, proxies=proxies, timeout=10))
userinfo = url.replace("http://", "http://x-access-token:%7B%2Fauth_token%7D@")
show(requests.get(userinfo + "/userinfo", proxies=proxies, timeout=10))
"#;

#[tokio::test]
async fn requests_forms_urls_params_and_auth_get_their_placeholders_filled() {
    let mut probe = python();
    probe.args(["-c", "import requests"]);
    let probe = run_command(probe).await;
    assert!(
        probe.status.success(),
        "python3 cannot import requests ({}); .ci/test installs it: install it the same way to run this test",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let world = World::start().await;
    let mut cmd = python();
    cmd.args(["-c", CLIENT, &world.url(""), &format!("http://{}", world.run.proxy())]);
    let out = run_command(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "200 upstream ok\n".repeat(6), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    let seen = world.upstream.requests();
    let jwt = |t: &str| -> String {
        assert_eq!(verify_demo(t)["sub"], "tok", "not the route's token: {t}");
        t.to_string()
    };
    let basic = |i: usize| -> String {
        let value = seen[i].header("authorization").expect("authorization");
        String::from_utf8(STANDARD.decode(value.strip_prefix("Basic ").expect("Basic")).expect("base64"))
            .expect("UTF-8")
    };

    let form = form_fields(&seen[0].body());
    assert_eq!(form[0].0, "assertion");
    let t = jwt(std::str::from_utf8(&form[0].1).expect("ASCII"));
    assert_eq!(form[1], ("grant_type".to_string(), "jwt-bearer".into()));
    assert_eq!(seen[0].header("content-length"), Some(seen[0].body().len().to_string().as_str()));

    assert_eq!(seen[1].uri, format!("/path/{t}?q={t}"), "requests sends %7B/NAME%7D for a URL string");
    assert_eq!(seen[2].uri, format!("/params?t={t}"), "params= is sent as %7B%2FNAME%7D");
    assert_eq!(basic(3), format!("api:{t}"));
    assert_eq!(form_fields(&seen[4].body()), [("k".to_string(), HOSTILE.into()), ("after".to_string(), "1".into())]);
    assert_eq!(basic(5), format!("x-access-token:{t}"));
}
