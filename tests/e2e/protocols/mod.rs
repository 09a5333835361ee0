//! Every protocol agent functions speak, through the real binary with real clients: gRPC
//! (grpcio), WebSocket (`websockets`, raw sockets), Server-Sent Events, plain HTTP inside
//! CONNECT (Node's undici), Java's HttpClient, wget and curl as the README's client guide
//! describes them, and HTTP/1.1 edge cases.

mod client_guide;
mod edge_cases;
mod grpc;
mod java;
mod node;
mod plain_in_connect;
mod sse;
mod websocket;

use crate::support::ca::TestCa;
use crate::support::client::{python, run_command};
use crate::support::config::{config, route, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

/// What a client test talks to: a plain and a TLS upstream, each routed with the token `tok`
/// under the alias `auth_token` (the plain one by port on 127.0.0.1, the TLS one as
/// `localhost`, intercepted), and the sidecar, whose CA is `ca/ca.pem` in its folder.
pub struct ClientSetup {
    pub plain: Upstream,
    pub tls: Upstream,
    pub running: Running,
}

impl ClientSetup {
    pub async fn start() -> ClientSetup {
        let ca = TestCa::new();
        let plain = Upstream::start().await;
        let tls = Upstream::tls(&ca).await;
        let text = config(
            &format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""),
            &format!(
                "{TLS_SECTION}{}{}\n[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n\
                 [routes.placeholders]\nauth_token = \"tok\"\n",
                rs256_token("tok", "15m"),
                route(plain.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\""),
                tls.port()
            ),
        );
        let running = Running::start_with(&text, Some(&ca), "info").await;
        ClientSetup { plain, tls, running }
    }
}

/// Panics with how to install `package` when Python cannot run `check` (an import, or a
/// version check): `.ci/test` installs it, and a machine without it must say so rather than
/// skip a client the README promises.
pub async fn require_python_module(check: &str, package: &str) {
    let mut probe = python();
    probe.args(["-c", check]);
    let probe = run_command(probe).await;
    assert!(
        probe.status.success(),
        "python3 cannot run {check:?} ({}); .ci/test installs it (python3 -m pip install {package}): \
         install it the same way to run this test",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

/// The JSON lines a client script printed, each parsed.
pub fn json_lines(out: &std::process::Output, what: &str) -> Vec<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what} printed bad JSON ({e}): {l}")))
        .collect()
}

/// The line of step `step`.
pub fn step<'a>(lines: &'a [serde_json::Value], step: &str) -> &'a serde_json::Value {
    lines.iter().find(|l| l["step"] == step).unwrap_or_else(|| panic!("no step {step:?} in {lines:?}"))
}

/// A route named `name` to `scheme://host:port` binding the RS256 token `tok`, with the alias
/// `auth_token`.
pub fn tok_route(name: &str, scheme: &str, host: &str, port: u16) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nscheme = \"{scheme}\"\nhost = \"{host}\"\nport = {port}\ntokens = [\"tok\"]\n\
         [routes.placeholders]\nauth_token = \"tok\"\n"
    )
}
