//! git over HTTPS through HTTPS_PROXY, the way agents clone and push: the token is in the URL's
//! userinfo (`https://x-access-token:%7B%2Fgithub_token%7D@host/repo.git`; a raw `/` would end
//! the host part, so the placeholder is percent-encoded there and git decodes it), git sends it
//! as Basic credentials inside the intercepted tunnel, and the sidecar fills the live token in.
//! The server is `git http-backend` behind TLS, and it accepts only the live token.

use std::sync::{Arc, Mutex};

use crate::support::ca::TestCa;
use crate::support::client::{get, run_command};
use crate::support::config::{config, route, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::git_server::{git, git_command, GitServer};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_and_push_with_the_token_in_the_url_userinfo() {
    let mut probe = git_command(std::path::Path::new("/"));
    probe.arg("--version");
    let probe = run_command(probe).await;
    assert!(probe.status.success(), "git is not installed; .ci/test installs it (apt-get install git)");

    let ca = TestCa::new();
    // The token the sidecar holds right now; the server accepts nothing else.
    let live: Arc<Mutex<Option<String>>> = Arc::default();
    let expected = Arc::clone(&live);
    let server = GitServer::start(&ca, move |user, password| {
        user == "x-access-token" && expected.lock().unwrap().as_deref() == Some(password)
    })
    .await;
    server.create_repo("org/repo.git", "hello\n");

    // One recording upstream binds the same token, to learn its live value.
    let probe_upstream = Upstream::start().await;
    let text = config(
        &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
        &format!(
            "{TLS_SECTION}{token}\n[[routes]]\nscheme = \"https\"\nhost = \"localhost\"\nport = {port}\n\
             tokens = [\"github_token\"]\n{probe}",
            token = rs256_token("github_token", "15m"),
            port = server.addr.port(),
            probe = route(probe_upstream.port(), &["github_token"], ""),
        ),
    );
    let run = Running::start_with(&text, Some(&ca), "info").await;
    get(run.proxy(), &probe_upstream.url("/"), &[("authorization", "Bearer {/github_token}")])
        .await
        .assert_upstream_ok();
    let token = probe_upstream.single().token().to_string();
    *live.lock().unwrap() = Some(token.clone());

    let work = tempfile::tempdir().expect("work dir");
    let url = server.url("x-access-token:%7B%2Fgithub_token%7D@", "org/repo.git");
    let proxy = format!("http://{}", run.proxy());
    let sidecar_ca = run.dir.path("ca/ca.pem");
    let through_sidecar = |args: &[&str]| {
        let mut c = git_command(work.path());
        c.args(args).env("HTTPS_PROXY", &proxy).env("https_proxy", &proxy).env("GIT_SSL_CAINFO", &sidecar_ca);
        c
    };

    let clone = run_command(through_sidecar(&["clone", "-q", &url, "repo"])).await;
    assert!(clone.status.success(), "git clone failed: {}", String::from_utf8_lossy(&clone.stderr));
    let checkout = work.path().join("repo");
    assert_eq!(std::fs::read_to_string(checkout.join("README")).expect("README"), "hello\n");

    std::fs::write(checkout.join("CHANGES"), "pushed through the sidecar\n").expect("write");
    git(&checkout, &["add", "CHANGES"]);
    git(&checkout, &["commit", "-q", "-m", "second"]);
    let mut push = through_sidecar(&["push", "-q", "origin", "main"]);
    push.current_dir(&checkout);
    let push = run_command(push).await;
    assert!(push.status.success(), "git push failed: {}", String::from_utf8_lossy(&push.stderr));
    let log = git(&server.repo("org/repo.git"), &["log", "--format=%s", "main"]);
    assert_eq!(log, "second\nfirst\n", "the push reached the server");

    let credentials = server.credentials();
    // At least ref discovery and upload-pack (clone), ref discovery and receive-pack (push).
    assert!(credentials.len() >= 4, "{credentials:?}");
    for c in &credentials {
        assert_eq!(c, &format!("x-access-token:{token}"), "the server got something other than the live token");
    }
    // The placeholder never left the sidecar, and the token did not reach git's config.
    let config = std::fs::read_to_string(checkout.join(".git/config")).expect("config");
    assert!(!config.contains(&token), "the token was written into the clone's config");
}
