//! A load client for the HTTPS paths, where wrk cannot go: through an HTTP proxy's `CONNECT`
//! (as `HTTPS_PROXY` clients do), then TLS inside the tunnel, then HTTP/1.1 or h2. Without
//! `--proxy` it speaks TLS to the target directly (for a TLS-terminating reverse proxy, or the
//! upstream itself). `benches/load.sh` (MODE=https) drives it; it is not a criterion bench.
//!
//! Modes:
//! - `keepalive`: `--conns` connections, each sending requests back to back for `--duration`.
//! - `new-conn`: `--conns` workers, each opening a new connection (TCP, CONNECT, TLS) for every
//!   request and closing it after the answer, as Python `requests` without a Session does.
//!   With `--resume`, the workers share one client session store, so handshakes after the
//!   first resume a session (TLS 1.3 tickets) when the server allows it.
//! - `h2`: `--conns` h2 connections with `--streams` requests in flight on each.
//!
//! It prints one line, `TLSLOAD {json}`: requests, duration, errors, non-2xx answers,
//! latency percentiles, and (new-conn) how many handshakes were resumed. With `--check` it
//! sends one request and prints `CHECK <TLS 1.3 suite> <status> <body>` instead.
//!
//! To try it by hand (the sidecar with `[tls]` on 127.0.0.1:8080, an HTTPS route to
//! localhost:8443):
//!
//! ```sh
//! cargo bench --bench tls_load -- --proxy 127.0.0.1:8080 --target localhost:8443 \
//!     --ca ca/ca.pem --mode keepalive --conns 16 --duration 4 -H 'Authorization: Bearer {/auth_token}'
//! ```

mod client;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Load over HTTPS, through a CONNECT proxy or directly.
#[derive(Parser, Debug, Clone)]
#[command(name = "tls_load")]
struct Args {
    /// The HTTP proxy to send CONNECT to; without it, TLS goes straight to `--connect`.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// `host:port` of the HTTPS server: the CONNECT target, the TLS server name (host) and
    /// the `Host` header.
    #[arg(long)]
    target: Option<String>,
    /// Where to open TCP connections without `--proxy` (default: `--target`).
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// PEM file with the certificates to trust (the proxy's CA for interception).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "keepalive")]
    mode: Mode,
    /// Connections (keepalive, h2) or workers (new-conn).
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in flight per h2 connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Seconds to run (after the connections are open, for keepalive and h2).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    #[arg(long, default_value = "POST")]
    method: String,
    #[arg(long, default_value = "/bench")]
    path: String,
    /// Request body (sent with Content-Length).
    #[arg(long, default_value = "")]
    body: String,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// new-conn: share one session store between connections, so they can resume.
    #[arg(long)]
    resume: bool,
    /// Send one request and print `CHECK <suite> <status> <body>` instead of loading.
    #[arg(long)]
    check: bool,
    /// Runtime threads (1, like `wrk -t1`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Arguments cargo passes to benches (`--bench`); ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keepalive,
    NewConn,
    H2,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // `cargo bench` runs every bench target with `--bench` and nothing else: nothing to do.
    let Some(target) = args.target.clone() else {
        eprintln!("tls_load: no --target; a load client for benches/load.sh (see its module docs)");
        return std::process::ExitCode::SUCCESS;
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tls_load: cannot start a runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run(args, target)) {
        Ok(line) if line.starts_with("CHECK ") => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Ok(line) => {
            println!("TLSLOAD {line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tls_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, target: String) -> Result<String, String> {
    let plan = Arc::new(client::Plan::new(&args, &target)?);
    if args.check {
        return plan.check().await.map(|answer| format!("CHECK {answer}"));
    }
    // One connection first, so a target that does not answer fails the run at once.
    plan.probe().await?;
    let duration = Duration::from_secs_f64(args.duration);
    let result = match args.mode {
        Mode::Keepalive => client::keepalive(plan, args.conns, duration).await,
        Mode::NewConn => client::new_connections(plan, args.conns, duration).await,
        Mode::H2 => client::h2(plan, args.conns, args.streams, duration).await,
    };
    Ok(result.json())
}
