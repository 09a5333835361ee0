//! `[proxy] worker_threads = N` (N > 1) runs the proxy on a multi-threaded runtime with exactly
//! N worker threads (named `sidecar-worker`; the blocking pool's are `sidecar-blocking`).

use crate::support::client::get;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

/// The names (`comm`) of every thread of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_runs_that_many_workers() {
    let upstream = Upstream::start().await;
    let running = Running::start(&format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
worker_threads = 3

[admin]
listen = "127.0.0.1:0"

[tokens.threads_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/demo-rsa.key.pem"
ttl = "10m"

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {port}
tokens = ["threads_api"]
"#,
        port = upstream.port()
    ))
    .await;

    // It serves, from several connections at once.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (proxy, url) = (running.proxy(), upstream.url("/threads"));
        requests.spawn(async move { get(proxy, &url, &[("authorization", "Bearer {/threads_api}")]).await });
    }
    while let Some(reply) = requests.join_next().await {
        let reply = reply.expect("request task");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(upstream.requests().len(), 6);

    let names = thread_names(running.sidecar.pid);
    let workers = names.iter().filter(|n| *n == "sidecar-worker").count();
    assert_eq!(workers, 3, "expected 3 worker threads; the threads are {names:?}");
}
