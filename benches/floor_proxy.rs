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
//! With `--tls-cert`/`--tls-key` it terminates TLS (rustls, as the sidecar's interception
//! does) and with `--upstream-ca`/`--upstream-name` it speaks TLS to the upstream: the floor
//! of the HTTPS keep-alive case (MODE=https, peer `floor`), beside nginx terminating TLS.
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
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};

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
    /// Terminate TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
    /// Speak TLS to the upstream, trusting this CA bundle (PEM); needs --upstream-name.
    #[arg(long)]
    upstream_ca: Option<std::path::PathBuf>,
    /// The name the upstream's certificate is checked against (and sent as SNI).
    #[arg(long)]
    upstream_name: Option<String>,
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
    let tls = match Tls::from_args(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("floor_proxy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(listen, Upstream { addr: upstream, tls: tls.upstream }, authorization, tls.acceptor));
    std::process::ExitCode::SUCCESS
}

/// What TLS the floor speaks on each side, if any.
struct Tls {
    acceptor: Option<TlsAcceptor>,
    upstream: Option<(TlsConnector, ServerName<'static>)>,
}

impl Tls {
    fn from_args(args: &Args) -> Result<Tls, String> {
        // The same provider as the sidecar (aws-lc-rs), so both sides do the same crypto.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let acceptor = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| format!("--tls-cert: {e}"))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key: {e}"))?;
                // The sidecar's interception order (AES-128-GCM first, its own order over the
                // client's), so the floor does the same crypto work per record.
                let mut server_provider = (*provider).clone();
                server_provider
                    .cipher_suites
                    .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
                let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(server_provider))
                    .with_safe_default_protocol_versions()
                    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
                    .map_err(|e| format!("server TLS: {e}"))?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                config.ignore_client_order = true;
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let upstream = match (&args.upstream_ca, &args.upstream_name) {
            (Some(ca), Some(name)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--upstream-ca: {e}"))? {
                    roots
                        .add(cert.map_err(|e| format!("--upstream-ca: {e}"))?)
                        .map_err(|e| format!("--upstream-ca: {e}"))?;
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("client TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(name.clone()).map_err(|e| format!("--upstream-name: {e}"))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            (None, None) => None,
            _ => return Err("--upstream-ca and --upstream-name go together".into()),
        };
        Ok(Tls { acceptor, upstream })
    }
}

/// Where requests go, and how to speak to it.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

async fn serve(listen: SocketAddr, upstream: Upstream, authorization: HeaderValue, acceptor: Option<TlsAcceptor>) {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return eprintln!("floor_proxy: cannot listen on {listen}: {e}"),
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (upstream, authorization, acceptor) = (upstream.clone(), authorization.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, upstream, authorization).await,
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve_connection(tls, upstream, authorization).await;
                    }
                }
            }
        });
    }
}

/// Serves one client connection, with its own upstream connection opened on first use.
async fn serve_connection<I>(io: I, upstream: Upstream, authorization: HeaderValue)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sender: Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>> = Arc::default();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (sender, authorization, upstream) = (Arc::clone(&sender), authorization.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(forward(req, &upstream, &sender, authorization).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

async fn forward(
    mut req: Request<Incoming>,
    upstream: &Upstream,
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
    let host = match &upstream.tls {
        Some((_, name)) => format!("{}:{}", name.to_str(), upstream.addr.port()),
        None => upstream.addr.to_string(),
    };
    if let Ok(host) = HeaderValue::from_str(&host) {
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

async fn open(upstream: &Upstream) -> Option<hyper::client::conn::http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream.addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    match &upstream.tls {
        None => handshake(stream).await,
        Some((connector, name)) => handshake(connector.connect(name.clone(), stream).await.ok()?).await,
    }
}

async fn handshake<I>(io: I) -> Option<hyper::client::conn::http1::SendRequest<Incoming>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}
