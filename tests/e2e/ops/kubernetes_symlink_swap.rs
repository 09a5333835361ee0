//! A ConfigMap volume as the kubelet lays it out and updates it: the files are symlinks through
//! `..data`, and an update swaps `..data` to a new timestamped folder with one rename.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::jwt::claims;
use crate::support::keys::demo_key;
use crate::support::sidecar::{start_file, with_watcher};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, rev: u32) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.k8s_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "signing.key.pem"
ttl = "10m"

[tokens.k8s_api.claims]
iss = "ops-k8s"
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["k8s_api"]
set_headers = {{ Authorization = "Bearer {{/k8s_api}}" }}
"#
    )
}

/// Writes one ConfigMap generation into `root/NAME/`.
fn generation(root: &Path, name: &str, config: &str) {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("sidecar.toml"), config).unwrap();
    std::fs::write(dir.join("signing.key.pem"), demo_key("demo-rsa.key.pem")).unwrap();
}

/// What the kubelet does on an update: new generation, `..data_tmp` -> it, rename over
/// `..data`, remove the old generation.
fn swap(root: &Path, old: &str, new: &str, config: &str) {
    generation(root, new, config);
    symlink(new, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join(old)).unwrap();
}

async fn current_rev(sidecar: &token_sidecar::server::Sidecar, upstream: &Upstream) -> serde_json::Value {
    let reply = get(sidecar.proxy_addr, &upstream.url("/k8s"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.last().expect("request reached the upstream");
    claims(seen.jwt().expect("a token"))["rev"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_symlink_swap() {
    let upstream = Upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let first = "..2026_01_01_00_00_00.1";
    generation(root, first, &config_text(upstream.port(), 1));
    symlink(first, root.join("..data")).unwrap();
    symlink("..data/sidecar.toml", root.join("sidecar.toml")).unwrap();
    symlink("..data/signing.key.pem", root.join("signing.key.pem")).unwrap();

    let path = root.join("sidecar.toml");
    let sidecar = start_file(&path).await;
    assert_eq!(current_rev(&sidecar, &upstream).await, 1);

    with_watcher(&sidecar, &path, async {
        let generations = [first, "..2026_01_01_00_05_00.2", "..2026_01_01_00_10_00.3"];
        for (i, pair) in generations.windows(2).enumerate() {
            let rev = i as u32 + 2;
            let written = Instant::now();
            swap(root, pair[0], pair[1], &config_text(upstream.port(), rev));
            let shown =
                wait_until(Duration::from_secs(2), async || current_rev(&sidecar, &upstream).await == rev).await;
            assert!(shown, "rev {rev} from the ..data swap was not served within 2s of the swap");
            eprintln!("kubernetes_symlink_swap: rev {rev} served {:?} after the swap", written.elapsed());
        }
    })
    .await;
    sidecar.shutdown().await;
}
