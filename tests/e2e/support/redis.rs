//! A real `redis-server` on 127.0.0.1 for fleet tests: started on a free port with its own
//! temp dir (no persistence), killed (SIGKILL) and restarted on the same port, paused
//! (SIGSTOP) to play a hung server, and stopped when dropped.
//!
//! [`RedisServer::cmd`] speaks RESP itself over a plain socket (independent of the sidecar's
//! client), so tests can SCAN, GET raw bytes and write hand-made entries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::client::command;
use super::wait::wait_until;

/// A reply, as the test client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

impl Resp {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// TLS settings for [`RedisServer::start_tls`]: certificate and key files.
pub struct RedisTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A `redis-server` child process. Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: Option<(PathBuf, PathBuf)>,
}

/// Whether `redis-server` is installed (`.ci/test` installs it).
pub fn available() -> bool {
    command("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("addr").port()
}

impl RedisServer {
    /// Starts a plain `redis://` server and waits until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::launch(None).await
    }

    /// Starts a `rediss://` server (TLS only, no plain port) with the given certificate.
    pub async fn start_tls(tls: RedisTls) -> RedisServer {
        RedisServer::launch(Some((tls.cert_file, tls.key_file))).await
    }

    async fn launch(tls: Option<(PathBuf, PathBuf)>) -> RedisServer {
        assert!(available(), "redis-server is not installed (.ci/test installs it with apt)");
        let dir = tempfile::tempdir().expect("redis temp dir");
        let mut server = RedisServer { port: free_port(), dir, child: None, tls };
        server.spawn().await;
        server
    }

    fn spawn_child(&self) -> Child {
        let mut cmd = command("redis-server");
        let port = self.port.to_string();
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.tls {
            None => {
                cmd.args(["--port", &port]);
            }
            Some((cert, key)) => {
                cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key);
            }
        }
        cmd.spawn().expect("start redis-server")
    }

    async fn spawn(&mut self) {
        self.child = Some(self.spawn_child());
        let port = self.port;
        let listening =
            wait_until(Duration::from_secs(10), async || TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
        assert!(listening, "redis-server did not listen on {port}");
        if self.tls.is_none() {
            assert_eq!(self.cmd(&[b"PING"]), Resp::Status("PONG".into()));
        }
    }

    /// `redis://127.0.0.1:PORT` (`rediss://localhost:PORT` for TLS).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL: the server and everything in it is gone at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Sends a signal (`STOP`, `CONT`) to the server.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let ok = command("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
        assert!(ok.success(), "kill -{name} {pid}");
    }

    /// Runs one command on a fresh plain connection and returns the reply.
    pub fn cmd(&self, args: &[&[u8]]) -> Resp {
        let mut stream = TcpStream::connect(self.addr()).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        stream.write_all(&out).expect("send to redis-server");
        read_reply(&mut BufReader::new(stream))
    }

    /// Every key, by SCAN.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut cursor = b"0".to_vec();
        loop {
            let Resp::Array(parts) = self.cmd(&[b"SCAN", &cursor, b"COUNT", b"1000"]) else { panic!("SCAN reply") };
            cursor = parts[0].bytes().expect("cursor").to_vec();
            if let Resp::Array(found) = &parts[1] {
                keys.extend(found.iter().filter_map(|k| k.bytes().map(<[u8]>::to_vec)));
            }
            if cursor == b"0" {
                return keys;
            }
        }
    }

    /// The value of `key` (a string key), if any.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cmd(&[b"GET", key]).bytes().map(<[u8]>::to_vec)
    }

    /// Sets `key` to `value` with a TTL.
    pub fn set(&self, key: &[u8], value: &[u8], ttl: Duration) {
        let ms = ttl.as_millis().to_string();
        assert_eq!(self.cmd(&[b"SET", key, value, b"PX", ms.as_bytes()]), Resp::Status("OK".into()));
    }

    /// Keys whose name contains `part`.
    pub fn keys_containing(&self, part: &str) -> Vec<Vec<u8>> {
        self.keys().into_iter().filter(|k| k.windows(part.len()).any(|w| w == part.as_bytes())).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server would not die of SIGKILL any later; wake it first.
            let _ = command("kill").arg("-CONT").arg(child.id().to_string()).status();
        }
        self.kill();
    }
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("reply line");
    line.trim_end_matches("\r\n").to_string()
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Resp {
    let line = read_line(r);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Resp::Status(rest.into()),
        "-" => Resp::Error(rest.into()),
        ":" => Resp::Int(rest.parse().expect("integer")),
        "$" => {
            let len: i64 = rest.parse().expect("bulk length");
            if len < 0 {
                return Resp::Bulk(None);
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf).expect("bulk value");
            buf.truncate(len as usize);
            Resp::Bulk(Some(buf))
        }
        "*" => {
            let n: i64 = rest.parse().expect("array length");
            Resp::Array((0..n.max(0)).map(|_| read_reply(r)).collect())
        }
        other => panic!("unknown reply type {other:?}"),
    }
}
