//! A scripted origin: each request is answered by a closure the test supplies (status,
//! headers, body, optionally streamed in two parts), so tests can script what HTTP caches
//! care about (`Cache-Control`, `Set-Cookie`, `Vary`, `Age`, statuses, echoes) and count
//! what reaches the upstream. Answers can be held until the test releases them ([`Origin::hold`])
//! and a streamed body's second part until [`Origin::release_stream`].
//!
//! Plain HTTP/1.1 on 127.0.0.1:0; stops when dropped, open connections included (so a
//! dropped origin is unreachable, not merely no longer accepting).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::client::channel_body;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the origin answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Sent after `body` once [`Origin::release_stream`] is called (chunked, no length).
    pub rest: Option<Bytes>,
}

impl Answer {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Answer {
        Answer { status: 200, headers: Vec::new(), body: body.into(), rest: None }
    }

    pub fn status(mut self, status: u16) -> Answer {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Streams `body` first and `rest` only after the test releases it.
    pub fn then(mut self, rest: impl Into<Bytes>) -> Answer {
        self.rest = Some(rest.into());
        self
    }
}

/// Answers request `n` (1-based, counting every request the origin received).
type Script = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

struct State {
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
    seen: Mutex<Vec<Seen>>,
    script: Mutex<Arc<Script>>,
    held: AtomicBool,
    answers: Semaphore,
    streams: Semaphore,
}

/// The scripted origin.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::AbortHandle,
}

impl Origin {
    /// Starts an origin answering with `script`.
    pub async fn start(script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State {
            connections: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(script)),
            held: AtomicBool::new(false),
            answers: Semaphore::new(0),
            streams: Semaphore::new(0),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&shared);
                let connections = Arc::clone(&shared);
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                connections.connections.lock().unwrap().push(connection.abort_handle());
            }
        })
        .abort_handle();
        Origin { addr, state, task }
    }

    /// An origin whose every answer is `200` with the number of the request as its body
    /// (`"1"`, `"2"`, ...), so a test can tell a stored answer from a new one.
    pub async fn counting() -> Origin {
        Origin::start(|_, n| Answer::ok(n.to_string())).await
    }

    /// Replaces the script.
    pub fn script(&self, script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) {
        *self.state.script.lock().unwrap() = Arc::new(script);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.lock().unwrap().len()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the origin received a request")
    }

    /// From now on, each answer waits for [`Origin::release`].
    pub fn hold(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Lets `n` held answers go.
    pub fn release(&self, n: usize) {
        self.state.answers.add_permits(n);
    }

    /// Lets `n` streamed answers send their second part.
    pub fn release_stream(&self, n: usize) {
        self.state.streams.add_permits(n);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

type OriginBody = BoxBody<Bytes, Infallible>;

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<OriginBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let uri = parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), ToString::to_string);
    let seen = Seen { method: parts.method, uri, headers: parts.headers, body };
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len()
    };
    if state.held.load(Ordering::SeqCst) {
        state.answers.acquire().await.expect("open").forget();
    }
    let script = Arc::clone(&state.script.lock().unwrap());
    let answer = script(&seen, n);
    let body: OriginBody = match answer.rest {
        None => Full::new(answer.body).boxed(),
        Some(rest) => {
            let (tx, body) = channel_body(2);
            let first = answer.body;
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                if tx.send(first).await.is_err() {
                    return;
                }
                state.streams.acquire().await.expect("open").forget();
                let _ = tx.send(rest).await;
            });
            body.boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("status");
    for (name, value) in answer.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
