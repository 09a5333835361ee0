//! Start-up, the running sidecar, and shutdown.
//!
//! [`Sidecar::start`] binds every listener, mints every token, and only then accepts
//! connections, so the first request already finds current tokens. Tests start it
//! in-process on port 0; the binary runs it through [`run_blocking`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::proxy::{Entry, Proxy, ReverseTarget};
use crate::snapshot::{BuildError, Snapshot};
use crate::store::Mint;

/// A running sidecar.
pub struct Sidecar {
    state: Arc<ArcSwap<Snapshot>>,
    shutdown: watch::Sender<bool>,
    /// Listeners that stop on shutdown and drain their connections.
    tasks: JoinSet<()>,
    /// The echo servers, which have nothing to drain and are aborted.
    background: JoinSet<()>,
    /// The bound proxy address (useful when the config asked for port 0).
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub echo_addr: Option<SocketAddr>,
    /// The echo upstream's TLS address, when `[echo] tls_listen` is set.
    pub echo_tls_addr: Option<SocketAddr>,
    /// Bound addresses of the reverse listeners, in config order.
    pub listener_addrs: Vec<SocketAddr>,
    /// The Unix-socket proxy listener's path, removed at shutdown.
    pub unix_path: Option<std::path::PathBuf>,
    /// The listener settings the sockets were bound with; a reload cannot change them.
    bound: BoundSettings,
}

/// Settings that only take effect at start-up.
#[derive(Debug, Clone, PartialEq)]
struct BoundSettings {
    proxy: SocketAddr,
    admin: SocketAddr,
    echo: Option<crate::config::EchoSettings>,
    listeners: Vec<(SocketAddr, http::Uri)>,
    listen_unix: Option<std::path::PathBuf>,
    worker_threads: usize,
    max_connections: usize,
}

impl BoundSettings {
    fn of(config: &Config) -> BoundSettings {
        BoundSettings {
            proxy: config.proxy.listen,
            admin: config.admin.listen,
            echo: config.echo,
            listeners: config.listeners.iter().map(|l| (l.listen, l.upstream.clone())).collect(),
            listen_unix: config.proxy.listen_unix.clone(),
            worker_threads: config.proxy.worker_threads,
            max_connections: config.proxy.max_connections,
        }
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on the Unix socket {}: {reason}", path.display())]
    BindUnix { path: std::path::PathBuf, reason: String },
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("{0}")]
    Ca(#[from] crate::tls::CaError),
}

impl Sidecar {
    /// Starts the sidecar for a checked config.
    pub async fn start(config: Config) -> Result<Sidecar, StartError> {
        Sidecar::start_with(config, &HashMap::new()).await
    }

    /// Starts with some tokens minted by the given minters (tests inject failures this way).
    pub async fn start_with(config: Config, minters: &HashMap<String, Arc<dyn Mint>>) -> Result<Sidecar, StartError> {
        crate::admin::metrics_handle();
        let proxy_listener = bind(config.proxy.listen, "proxy").await?;
        let admin_listener = bind(config.admin.listen, "admin").await?;
        if !config.admin.listen.ip().is_loopback() {
            tracing::warn!(addr = %config.admin.listen, "admin listener is not on loopback; /tokens and /metrics are reachable from the network");
        }
        if let Some(tls) = config.tls.as_ref().filter(|t| t.pending_generation()) {
            crate::tls::generate_ca_files(&tls.ca_cert, &tls.ca_key)?;
            tracing::info!(ca_cert = %tls.ca_cert.display(), "created a new interception CA (generate_if_missing)");
        }
        let echo_listener = match config.echo {
            Some(echo) => Some(bind(echo.listen, "echo").await?),
            None => None,
        };
        let echo_tls_listener = match config.echo.and_then(|e| e.tls_listen) {
            Some(addr) => Some(bind(addr, "echo TLS").await?),
            None => None,
        };
        let mut reverse = Vec::new();
        for l in &config.listeners {
            let target = ReverseTarget::from_uri(&l.upstream);
            reverse.push((bind(l.listen, "reverse listener").await?, target));
        }
        let unix_listener = match &config.proxy.listen_unix {
            Some(path) => Some(bind_unix(path, config.proxy.listen_unix_mode)?),
            None => None,
        };
        let unix_path = config.proxy.listen_unix.clone();
        let connections = Arc::new(tokio::sync::Semaphore::new(config.proxy.max_connections));
        let bound = BoundSettings::of(&config);

        let snapshot = Snapshot::build_with(config, None, minters).await?;
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let proxy = Proxy::new(Arc::clone(&state));
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut background = JoinSet::new();

        let addr = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let proxy_addr = addr(&proxy_listener);
        let admin_addr = addr(&admin_listener);
        let echo_addr = echo_listener.as_ref().map(addr);
        let echo_tls_addr = echo_tls_listener.as_ref().map(addr);
        let listener_addrs: Vec<SocketAddr> = reverse.iter().map(|(l, _)| addr(l)).collect();

        background.spawn(crate::admin::metrics_upkeep());
        if let Some(listener) = echo_listener {
            background.spawn(crate::echo::serve(listener));
        }
        if let (Some(listener), Some(interceptor)) = (echo_tls_listener, state.load().interceptor.clone()) {
            background.spawn(crate::echo::serve_tls(listener, interceptor));
        }
        tasks.spawn(crate::admin::serve(admin_listener, Arc::clone(&state), watcher.clone()));
        for (listener, target) in reverse {
            let Some(target) = target else { continue };
            let entry = Entry::Reverse(Arc::new(target));
            let serve =
                crate::proxy::listen::serve(listener, proxy.clone(), entry, watcher.clone(), Arc::clone(&connections));
            tasks.spawn(serve);
        }
        if let Some(listener) = unix_listener {
            // A proxy port like the TCP one, whose peers are identified by uid/gid.
            let serve = crate::proxy::listen::serve(
                listener,
                proxy.clone(),
                Entry::Unix(proxy_addr),
                watcher.clone(),
                Arc::clone(&connections),
            );
            tasks.spawn(serve);
        }
        tasks.spawn(crate::proxy::listen::serve(proxy_listener, proxy, Entry::Proxy(proxy_addr), watcher, connections));
        tracing::info!(%proxy_addr, %admin_addr, listener_addrs = ?listener_addrs, "token-sidecar ready");
        Ok(Sidecar {
            state,
            shutdown,
            tasks,
            background,
            proxy_addr,
            admin_addr,
            echo_addr,
            echo_tls_addr,
            listener_addrs,
            unix_path,
            bound,
        })
    }

    /// The shared state cell, for reloads and inspection.
    pub fn state(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.state
    }

    /// Start-up-only settings that differ in `config`, named for a log line.
    pub fn listener_changes(&self, config: &Config) -> Vec<&'static str> {
        let new = BoundSettings::of(config);
        let mut changes = Vec::new();
        if new.proxy != self.bound.proxy {
            changes.push("[proxy] listen");
        }
        if new.admin != self.bound.admin {
            changes.push("[admin] listen");
        }
        if new.echo != self.bound.echo {
            changes.push("[echo] listen");
        }
        if new.listeners != self.bound.listeners {
            changes.push("[[listeners]]");
        }
        if new.listen_unix != self.bound.listen_unix {
            changes.push("[proxy] listen_unix");
        }
        if new.worker_threads != self.bound.worker_threads {
            changes.push("[proxy] worker_threads");
        }
        if new.max_connections != self.bound.max_connections {
            changes.push("[proxy] max_connections");
        }
        changes
    }

    /// Watches the config file and key files and reloads on change (and on SIGHUP), until
    /// the returned task is aborted. The binary does this; tests call it directly.
    pub async fn watch_config(&self, path: &Path) {
        crate::reload::watch(path, self).await;
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let grace = self.state.load().config.proxy.shutdown_grace;
        // Each listener returns once its connections are drained or its grace period is over.
        let drained = tokio::time::timeout(grace + std::time::Duration::from_secs(1), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
        self.background.abort_all();
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the Unix-socket listener at `path` with permissions `mode`. A socket file left by
/// an earlier run is replaced; any other file there is an error, never removed.
fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |reason: String| StartError::BindUnix { path: path.to_path_buf(), reason };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| fail(e.to_string()))?,
        Ok(_) => return Err(fail("a file that is not a socket is in the way".into())),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| fail(e.to_string()))?;
    Ok(listener)
}

/// How many connections the kernel queues for a listener before the sidecar accepts them
/// (capped by `net.core.somaxconn`). The standard library's 128 is too few for a burst of a
/// few hundred clients connecting at once: the rest of their SYNs are dropped and retried a
/// second later.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    let fail = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.map_err(fail)?;
    // As the standard library's bind does: a restarted sidecar can bind while connections of
    // the previous one are in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

/// Runs the sidecar from a config file until SIGTERM or SIGINT.
pub fn run_blocking(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match build_runtime(config.proxy.worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = crate::reload::Signals::install();
        let sidecar = match Sidecar::start(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        crate::reload::run_until_stopped(path, &sidecar, signals).await;
        tracing::info!("shutting down: draining in-flight requests");
        sidecar.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// A current-thread runtime for `worker_threads <= 1`, else a multi-threaded one with that many
/// workers. Tokio gives worker and blocking-pool threads the same name; building the runtime
/// starts its workers and nothing else, so threads started during `build` are named
/// `sidecar-worker` and every later one (the blocking pool) `sidecar-blocking`, as `ps -L` and
/// /proc/PID/task/*/comm show them.
fn build_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads <= 1 {
        return tokio::runtime::Builder::new_current_thread().thread_name("sidecar-blocking").enable_all().build();
    }
    let building = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let during_build = Arc::clone(&building);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .thread_name_fn(move || {
            let worker = during_build.load(std::sync::atomic::Ordering::SeqCst);
            if worker { "sidecar-worker" } else { "sidecar-blocking" }.to_string()
        })
        .enable_all()
        .build();
    building.store(false, std::sync::atomic::Ordering::SeqCst);
    runtime
}
