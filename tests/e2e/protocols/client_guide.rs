//! What the README's client guide says about curl and wget, measured: curl ignores an
//! uppercase `HTTP_PROXY` (httpoxy) and needs `-g` for `{` in a URL (without it the braces
//! are a glob and vanish); wget reads only the
//! lowercase variables and trusts a CA with `--ca-certificate`. So the guide sets both cases.

use crate::protocols::ClientSetup;
use crate::support::client::{command, curl, run_command, stdout};
use crate::support::jwt::verify_demo;

#[tokio::test]
async fn curl_and_wget_read_the_variables_the_guide_says() {
    let ClientSetup { plain, tls, running } = ClientSetup::start().await;
    let proxy = format!("http://{}", running.proxy());
    let header = "Authorization: Bearer {/auth_token}";

    // curl: uppercase HTTP_PROXY is ignored (the request goes direct, placeholder and all);
    // lowercase http_proxy is used.
    for (variable, proxied) in [("HTTP_PROXY", false), ("http_proxy", true)] {
        let mut c = curl();
        c.args(["-s", "-g", "-H", header, &plain.url(&format!("/curl-{variable}?t={{/auth_token}}"))]);
        c.env(variable, &proxy);
        assert_eq!(stdout(&run_command(c).await), "upstream ok");
        let seen = plain.last().expect("request");
        assert_eq!(seen.jwt().is_some(), proxied, "curl with {variable}: {:?}", seen.header("authorization"));
    }
    // Without -g, curl reads {...} as a URL glob: the braces silently vanish.
    let mut c = curl();
    c.args(["-s", &plain.url("/no-g?t={/auth_token}")]).env("http_proxy", &proxy);
    assert_eq!(stdout(&run_command(c).await), "upstream ok");
    assert_eq!(plain.last().expect("request").uri, "/no-g?t=/auth_token");

    // wget: only the lowercase variables.
    for (variable, proxied) in [("HTTP_PROXY", false), ("http_proxy", true)] {
        let mut w = command("wget");
        w.args(["-q", "-O", "-", "--header", header, &plain.url(&format!("/wget-{variable}"))]);
        w.env(variable, &proxy);
        assert_eq!(stdout(&run_command(w).await), "upstream ok");
        let seen = plain.last().expect("request");
        assert_eq!(seen.jwt().is_some(), proxied, "wget with {variable}: {:?}", seen.header("authorization"));
    }
    // wget through interception, trusting the sidecar's CA with --ca-certificate.
    let mut w = command("wget");
    w.args(["-q", "-O", "-", "--header", header])
        .arg(format!("--ca-certificate={}", running.dir.path("ca/ca.pem").display()));
    w.arg(format!("https://localhost:{}/wget-https", tls.port())).env("https_proxy", &proxy);
    let out = run_command(w).await;
    assert_eq!(stdout(&out), "upstream ok", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(verify_demo(tls.single().token())["sub"], "tok");
}
