//! The floor of the stack the sidecar is built on: the least a hyper 1.x + tokio forward
//! proxy can do per request, measured beside the sidecar and nginx by `benches/load.sh`
//! (peer `floor`, MODE=throughput). It is not a criterion bench and not a product.
//!
//! One current-thread runtime; per client connection one hyper HTTP/1.1 server connection
//! and, opened on its first request, one upstream connection of its own (no pool to look
//! anything up in); every request goes to `--upstream`, with hop-by-hop headers left as
//! they are and one header set (`Authorization`, as the nginx peer does). No routing, no
//! substitution, no timeouts, no limits, no metrics: whatever the sidecar costs beyond this
//! is what its features cost.
//!
//! ```sh
//! cargo bench --bench floor_proxy -- --listen 127.0.0.1:8081 --upstream 127.0.0.1:8080 --authorization 'Bearer x'
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, AUTHORIZATION, HOST};
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// The Authorization header set on every request.
    #[arg(long, default_value = "Bearer floor")]
    authorization: String,
    /// Arguments cargo passes to benches (`--bench`); ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (Some(listen), Some(upstream)) = (args.listen, args.upstream) else {
        eprintln!("floor_proxy: no --listen/--upstream; a peer for benches/load.sh (see its module docs)");
        return std::process::ExitCode::SUCCESS;
    };
    let Ok(authorization) = HeaderValue::from_str(&args.authorization) else {
        eprintln!("floor_proxy: --authorization is not a header value");
        return std::process::ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floor_proxy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(listen, upstream, authorization));
    std::process::ExitCode::SUCCESS
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, authorization: HeaderValue) {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return eprintln!("floor_proxy: cannot listen on {listen}: {e}"),
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let authorization = authorization.clone();
        tokio::spawn(async move {
            // This client connection's own upstream connection, opened on first use.
            let sender: Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>> = Arc::default();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (sender, authorization) = (Arc::clone(&sender), authorization.clone());
                async move { Ok::<_, Infallible>(forward(req, upstream, &sender, authorization).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
    sender: &Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>,
    authorization: HeaderValue,
) -> Response<Body> {
    let mut sender = sender.lock().await;
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = open(upstream).await;
    }
    let Some(upstream_sender) = sender.as_mut() else { return bad_gateway() };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    req.headers_mut().insert(AUTHORIZATION, authorization);
    if let Ok(host) = HeaderValue::from_str(&upstream.to_string()) {
        req.headers_mut().insert(HOST, host);
    }
    if upstream_sender.ready().await.is_err() {
        return bad_gateway();
    }
    match upstream_sender.send_request(req).await {
        Ok(response) => response.map(BodyExt::boxed_unsync),
        Err(_) => bad_gateway(),
    }
}

async fn open(upstream: SocketAddr) -> Option<hyper::client::conn::http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}
