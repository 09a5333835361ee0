//! The sidecar under test: the real binary as a child process ([`SidecarProcess`], and
//! [`Running`], a config folder with the binary started on it), the CLI run to completion
//! ([`run_cli`]), and in-process sidecars ([`start`] and friends) for tests that inject minters
//! or inspect state.
//!
//! Listeners are configured on port 0; the child reports what it bound in its
//! `token-sidecar ready` log line, which [`SidecarProcess::start`] waits for and reads.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;
use token_sidecar::store::{Mint, MintFuture};
use token_sidecar::tokens::{MintError, MintedToken, TokenDefinition};

use super::ca::TestCa;
use super::client::{command, run_command};
use super::config::{ConfigDir, UPSTREAM_CA_FILE};
use super::wait::wait_until;

// ---------------------------------------------------------------------------------------------
// The binary

/// The `token-sidecar` binary, with no config, log or proxy settings from the environment the
/// tests run in.
pub fn binary() -> Command {
    let mut c = command(env!("CARGO_BIN_EXE_token-sidecar"));
    c.env_remove("TOKEN_SIDECAR_CONFIG").env_remove("RUST_LOG");
    c
}

/// Runs `token-sidecar ARGS` in `cwd` to completion (for CLI commands in synchronous tests).
pub fn run_cli(cwd: &Path, args: &[&str]) -> Output {
    binary().args(args).current_dir(cwd).output().expect("run token-sidecar")
}

/// Where a child's stderr (its log) goes.
enum LogSink {
    /// Piped and collected line by line.
    Lines(Arc<Mutex<Vec<String>>>, Option<std::thread::JoinHandle<()>>),
    /// Written to a file.
    File(PathBuf),
}

/// `token-sidecar run --config F --log-format json --log LEVEL` as a child. Killed when dropped.
pub struct SidecarProcess {
    child: Child,
    pub pid: u32,
    log: LogSink,
    /// The bound addresses, from the ready line.
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Reverse listeners, in config order.
    pub listeners: Vec<SocketAddr>,
}

const SIGHUP: u32 = 1;
const SIGTERM: u32 = 15;

impl SidecarProcess {
    /// Starts the binary with `--log LOG` (which must let INFO through: the ready line is
    /// INFO) and waits until it is ready and its SIGHUP and SIGTERM handlers are installed (so
    /// a signal sent afterwards is never fatal by default).
    pub async fn start(config: &Path, log: &str) -> SidecarProcess {
        SidecarProcess::spawn(config, log, None, None).await
    }

    /// Like [`SidecarProcess::start`], with the log written to `file` instead of collected.
    pub async fn start_logging_to(config: &Path, log: &str, file: &Path) -> SidecarProcess {
        SidecarProcess::spawn(config, log, Some(file), None).await
    }

    /// Like [`SidecarProcess::start`], with the child's standard output written to `stdout`
    /// (the audit log can go there).
    pub async fn start_with_stdout(config: &Path, log: &str, stdout: &Path) -> SidecarProcess {
        SidecarProcess::spawn(config, log, None, Some(stdout)).await
    }

    async fn spawn(config: &Path, log: &str, file: Option<&Path>, stdout: Option<&Path>) -> SidecarProcess {
        let mut cmd = binary();
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "--log", log])
            .current_dir(config.parent().expect("config folder"))
            .stdin(Stdio::null());
        match stdout {
            Some(path) => cmd.stdout(std::fs::File::create(path).expect("create the stdout file")),
            None => cmd.stdout(Stdio::null()),
        };
        match file {
            Some(file) => cmd.stderr(std::fs::File::create(file).expect("create the log file")),
            None => cmd.stderr(Stdio::piped()),
        };
        let mut child = cmd.spawn().expect("start token-sidecar");
        let pid = child.id();
        let log = match file {
            Some(file) => LogSink::File(file.to_path_buf()),
            None => {
                let stderr = child.stderr.take().expect("stderr");
                let lines = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&lines);
                let reader = std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        sink.lock().unwrap().push(line);
                    }
                });
                LogSink::Lines(lines, Some(reader))
            }
        };
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut process = SidecarProcess { child, pid, log, proxy: unbound, admin: unbound, listeners: Vec::new() };
        let mut ready = None;
        let found = wait_until(Duration::from_secs(20), async || {
            ready = process.find_log("token-sidecar ready");
            ready.is_some() || !process.running()
        })
        .await;
        let Some(line) = ready.filter(|_| found) else {
            panic!("token-sidecar did not become ready; log:\n{}", process.log_text());
        };
        let field = |name: &str| line["fields"][name].as_str().unwrap_or_else(|| panic!("no {name} in {line}"));
        let addr = |text: &str| -> SocketAddr { text.parse().unwrap_or_else(|e| panic!("{text:?}: {e} in {line}")) };
        process.proxy = addr(field("proxy_addr"));
        process.admin = addr(field("admin_addr"));
        process.listeners = field("listener_addrs")
            .trim_matches(['[', ']'])
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(addr)
            .collect();
        let handlers =
            wait_until(Duration::from_secs(10), async || process.catches(SIGHUP) && process.catches(SIGTERM)).await;
        assert!(handlers, "token-sidecar did not install its SIGHUP/SIGTERM handlers");
        process
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        match &self.log {
            LogSink::Lines(lines, _) => lines.lock().unwrap().clone(),
            LogSink::File(path) => {
                std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// Every log line, parsed (each must be one JSON object).
    fn json_log(&self) -> Vec<Value> {
        self.log()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The first JSON log line whose message contains `text`.
    pub fn find_log(&self, text: &str) -> Option<Value> {
        self.json_log().into_iter().find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(text)))
    }

    /// Messages of every log line at `level` ("ERROR", "WARN", ...).
    pub fn messages(&self, level: &str) -> Vec<String> {
        self.json_log()
            .iter()
            .filter(|l| l["level"] == level)
            .filter_map(|l| l["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// How many log lines so far contain `text`.
    pub fn count_log(&self, text: &str) -> usize {
        self.log().iter().filter(|l| l.contains(text)).count()
    }

    /// Sends SIGHUP and waits until the sidecar logs it. Signals and file events are handled
    /// one at a time, so once a SIGHUP is logged, every reload started before it has finished.
    pub async fn hup(&self) {
        let before = self.count_log("SIGHUP: reloading");
        self.signal("HUP").await;
        let seen = wait_until(Duration::from_secs(5), async || self.count_log("SIGHUP: reloading") > before).await;
        assert!(seen, "SIGHUP was not logged; log:\n{}", self.log_text());
    }

    /// Sends a signal with the `kill` command (`kill -HUP PID`), off the async runtime.
    pub async fn signal(&self, name: &str) {
        let mut kill = command("kill");
        kill.arg(format!("-{name}")).arg(self.pid.to_string());
        let out = run_command(kill).await;
        assert!(out.status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Whether the process has a handler installed for signal `signo` (from /proc).
    fn catches(&self, signo: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else { return false };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(deadline, async || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        })
        .await;
        status
    }

    /// Resident set size (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        vm_rss(self.pid).expect("VmRSS in /proc/PID/status")
    }

    /// Peak resident set size (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:").expect("VmHWM in /proc/PID/status") << 10
    }

    /// Stops the process and returns everything it logged.
    pub fn stop(mut self) -> String {
        self.kill();
        self.log_text()
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let LogSink::Lines(_, reader) = &mut self.log {
            if let Some(reader) = reader.take() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key))?.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The resident set size (VmRSS) of process `pid` in bytes, if it is still there.
pub fn vm_rss(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:").map(|kib| kib << 10)
}

/// A config folder (demo keys in `keys/`) and the real binary running on it.
pub struct Running {
    pub dir: ConfigDir,
    pub sidecar: SidecarProcess,
}

impl Running {
    /// Writes `config` into a fresh config folder and starts the binary with `--log info`,
    /// waiting until it is ready.
    pub async fn start(config: &str) -> Running {
        Running::start_with(config, None, "info").await
    }

    /// Like [`Running::start`], writing `upstream_ca` (if any) as [`UPSTREAM_CA_FILE`] and
    /// logging at `log`.
    pub async fn start_with(config: &str, upstream_ca: Option<&TestCa>, log: &str) -> Running {
        let dir = ConfigDir::with_demo_keys();
        if let Some(ca) = upstream_ca {
            dir.write(UPSTREAM_CA_FILE, &ca.pem);
        }
        let path = dir.write_config(config);
        let sidecar = SidecarProcess::start(&path, log).await;
        Running { dir, sidecar }
    }

    pub fn proxy(&self) -> SocketAddr {
        self.sidecar.proxy
    }

    pub fn admin(&self) -> SocketAddr {
        self.sidecar.admin
    }

    /// The only reverse listener.
    pub fn listener(&self) -> SocketAddr {
        assert_eq!(self.sidecar.listeners.len(), 1, "expected one reverse listener");
        self.sidecar.listeners[0]
    }

    /// The sidecar's interception CA certificate (PEM), created at start-up.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path("ca/ca.pem")).expect("the sidecar created its CA in ca/ca.pem")
    }

    /// Every private-key file the sidecar was given (demo keys and its CA key).
    pub fn key_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path("keys"))
            .expect("keys dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| !p.to_string_lossy().contains(".pub.") && !p.to_string_lossy().ends_with(".jwk.json"))
            .collect();
        let ca_key = self.dir.path("ca/ca.key");
        if ca_key.exists() {
            files.push(ca_key);
        }
        files.sort();
        files
    }
}

// ---------------------------------------------------------------------------------------------
// In-process sidecars

/// Parses config text as a file in the repository's `tests/e2e/` (the suite's configs name
/// their files by absolute path).
pub fn parse_config(text: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/generated.toml");
    Config::from_text(&path, text).unwrap_or_else(|e| panic!("config rejected:\n{e}\n--- config ---\n{text}"))
}

/// Starts an in-process sidecar from a checked config.
pub async fn start_config(config: Config) -> Sidecar {
    Sidecar::start(config).await.unwrap_or_else(|e| panic!("sidecar did not start: {e}"))
}

/// Starts an in-process sidecar from config text (see [`parse_config`]).
pub async fn start(text: &str) -> Sidecar {
    start_config(parse_config(text)).await
}

/// Starts an in-process sidecar with some tokens minted by test minters.
pub async fn start_with(text: &str, minters: &HashMap<String, Arc<dyn Mint>>) -> Sidecar {
    Sidecar::start_with(parse_config(text), minters).await.unwrap_or_else(|e| panic!("sidecar did not start: {e}"))
}

/// Loads a config file that must be valid and starts an in-process sidecar from it.
pub async fn start_file(path: &Path) -> Sidecar {
    start_config(Config::load(path).unwrap_or_else(|e| panic!("config should load: {e}"))).await
}

/// Runs `body` while the sidecar watches `path` for changes. The watcher is polled first, so
/// its folder watches are in place before `body` makes its first change.
pub async fn with_watcher<T>(sidecar: &Sidecar, path: &Path, body: impl std::future::Future<Output = T>) -> T {
    tokio::select! {
        biased;
        _ = sidecar.watch_config(path) => panic!("watch_config returned"),
        out = body => out,
    }
}

/// A minter that signs its first token with a real definition and fails every time after,
/// so the token expires (after the definition's ttl) and is never replaced.
pub struct FailAfterFirst {
    pub inner: TokenDefinition,
    pub attempts: AtomicU32,
}

impl FailAfterFirst {
    pub fn new(inner: TokenDefinition) -> Arc<FailAfterFirst> {
        Arc::new(FailAfterFirst { inner, attempts: AtomicU32::new(0) })
    }
}

impl Mint for FailAfterFirst {
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
        let result = if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            self.inner.mint(now)
        } else {
            Err(MintError::Sign("injected test failure".into()))
        };
        Box::pin(std::future::ready(result))
    }

    fn refresh_before(&self, _token: &MintedToken) -> Duration {
        self.inner.refresh_before
    }
}
