//! A git smart-HTTP server over TLS, as GitHub serves repositories: `git http-backend` run as a
//! CGI program behind a hyper server with a certificate for `localhost` from a [`TestCa`]. It
//! asks for Basic credentials (401 with `WWW-Authenticate: Basic`) until a request carries
//! credentials that `authorize(user, password)` accepts, and records every credential it got.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::ca::TestCa;
use super::client::command;

/// Decides whether `user` and `password` may use the repositories.
pub type Authorize = dyn Fn(&str, &str) -> bool + Send + Sync;

/// The largest request body the server reads (a push of a small repository is a few KiB).
const MAX_BODY: usize = 16 << 20;

/// A git server on 127.0.0.1 serving the bare repositories in a temp folder; stops when dropped.
pub struct GitServer {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    /// Every Basic credential received (`user:password`), accepted or not.
    credentials: Arc<Mutex<Vec<String>>>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    root: PathBuf,
    authorize: Box<Authorize>,
    credentials: Arc<Mutex<Vec<String>>>,
}

impl GitServer {
    pub async fn start(ca: &TestCa, authorize: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> GitServer {
        let root = tempfile::tempdir().expect("git root");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind git server");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost", "127.0.0.1"]));
        let credentials = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            root: root.path().to_path_buf(),
            authorize: Box::new(authorize),
            credentials: Arc::clone(&credentials),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(serve(shared, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        })
        .abort_handle();
        GitServer { addr, root, credentials, task }
    }

    /// `https://localhost:PORT/NAME` with `userinfo@` (such as `user:password@`) in front of the host.
    pub fn url(&self, userinfo: &str, name: &str) -> String {
        format!("https://{userinfo}localhost:{}/{name}", self.addr.port())
    }

    /// The folder of the bare repository `name`.
    pub fn repo(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Creates the bare repository `name` (pushes allowed) with one commit on `main` holding
    /// `README` with `text`.
    pub fn create_repo(&self, name: &str, text: &str) {
        let bare = self.repo(name);
        git(self.root.path(), &["init", "-q", "--bare", "-b", "main", &bare.to_string_lossy()]);
        git(&bare, &["config", "http.receivepack", "true"]);
        let work = tempfile::tempdir().expect("work tree");
        git(work.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(work.path().join("README"), text).expect("write README");
        git(work.path(), &["add", "README"]);
        git(work.path(), &["commit", "-q", "-m", "first"]);
        git(work.path(), &["push", "-q", &bare.to_string_lossy(), "main"]);
    }

    /// Every Basic credential received so far, decoded.
    pub fn credentials(&self) -> Vec<String> {
        self.credentials.lock().unwrap().clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `git ARGS` in `dir` with a fixed identity and no user or system config; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `git` command in `dir` that reads no user or system config and never prompts.
pub fn git_command(dir: &Path) -> std::process::Command {
    let mut c = command("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.test")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.test");
    c
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let credentials = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let user = match &credentials {
        Some(c) => {
            shared.credentials.lock().unwrap().push(c.clone());
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            (shared.authorize)(user, password).then(|| user.to_string())
        }
        None => None,
    };
    let Some(user) = user else {
        let mut response = plain(StatusCode::UNAUTHORIZED, "credentials required\n");
        response.headers_mut().insert("www-authenticate", "Basic realm=\"git\"".parse().expect("header"));
        return response;
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body\n");
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut cgi = git_command(&shared.root);
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let output = tokio::task::spawn_blocking(move || run_cgi(cgi, &body)).await.expect("CGI task");
    match output {
        Some(response) => response,
        None => plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed\n"),
    }
}

/// Runs the CGI program with `body` on its stdin (from another thread, so neither pipe can
/// fill up and stall it) and turns its output into a response.
fn run_cgi(mut cgi: std::process::Command, body: &[u8]) -> Option<Response<Full<Bytes>>> {
    let mut child = cgi.spawn().ok()?;
    let mut stdin = child.stdin.take()?;
    let mut stdout = child.stdout.take()?;
    let mut out = Vec::new();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(body);
        });
        let _ = stdout.read_to_end(&mut out);
    });
    child.wait().ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    let (end, sep) = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))?;
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(&out[end + sep..])));
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.split(' ').next()?.parse().ok()?;
            *response.status_mut() = StatusCode::from_u16(code).ok()?;
        } else {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(value).ok()?,
            );
        }
    }
    Some(response)
}
