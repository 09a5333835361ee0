//! Test world for HTTPS_PROXY: a TLS upstream with its own CA, a sidecar with a local CA,
//! a raw CONNECT client and a rustls client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;
use token_sidecar::tls::Interceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A throwaway CA for test upstreams.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "upstream test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    pub uri: String,
    pub headers: http::HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn bearer(&self) -> &str {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("a bearer token")
    }
}

/// An HTTPS upstream on 127.0.0.1 (certificate for localhost and 127.0.0.1), h2 and HTTP/1.1.
pub struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TlsUpstream {
    pub async fn start(_dir: &Path, ca: &TestCa) -> TlsUpstream {
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            record.lock().unwrap().push(Seen {
                                version: req.version(),
                                uri: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                headers: req.headers().clone(),
                            });
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                                "upstream ok",
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

#[derive(Default)]
pub struct Options {
    pub extra_proxy: &'static str,
    pub no_tls: bool,
    pub route_port: Option<u16>,
}

/// A TLS upstream and a sidecar configured to intercept it.
pub struct World {
    pub dir: tempfile::TempDir,
    pub upstream: TlsUpstream,
    pub upstream_ca_issuer: TestCa,
    pub upstream_ca: String,
    pub sidecar_ca: PathBuf,
    pub sidecar: Sidecar,
}

impl World {
    pub async fn new() -> World {
        World::build(Options::default()).await
    }

    pub async fn with_extra(extra_proxy: &'static str) -> World {
        World::build(Options { extra_proxy, ..Options::default() }).await
    }

    pub async fn without_tls() -> World {
        World::build(Options { no_tls: true, ..Options::default() }).await
    }

    pub async fn build(opts: Options) -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let upstream_ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca_path, &ca.pem).unwrap();
        let upstream = TlsUpstream::start(dir.path(), &ca).await;
        let (sidecar_ca, sidecar_key) = token_sidecar::tls::generate_ca(&dir.path().join("ca")).unwrap();
        let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keys/demo-rsa.key.pem");
        let tls = if opts.no_tls {
            String::new()
        } else {
            format!("[tls]\nca_cert = {sidecar_ca:?}\nca_key = {sidecar_key:?}\nleaf_cache_size = 4\n")
        };
        let text = format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
extra_ca_file = {upstream_ca_path:?}
{extra}

[admin]
listen = "127.0.0.1:0"

{tls}

[tokens.api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = {key:?}
ttl = "5m"

[tokens.api.claims]
iss = "tls-test"

[[routes]]
host = "localhost"
port = {port}
tokens = ["api"]

[routes.placeholders]
auth_token = "api"

[[routes]]
host = "*.cache.test"
tokens = ["api"]
"#,
            extra = opts.extra_proxy,
            port = opts.route_port.unwrap_or(upstream.port()),
        );
        let config = Config::from_text(&dir.path().join("sidecar.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let sidecar = Sidecar::start(config).await.unwrap();
        World { upstream_ca: ca.pem.clone(), upstream_ca_issuer: ca, dir, upstream, sidecar_ca, sidecar }
    }

    pub fn sidecar_ca_pem(&self) -> String {
        std::fs::read_to_string(&self.sidecar_ca).unwrap()
    }

    pub fn interceptor(&self) -> Arc<Interceptor> {
        self.sidecar.state().load().interceptor.clone().expect("interception configured")
    }
}

/// Opens a CONNECT tunnel; on a non-200 answer returns the whole response as text.
pub async fn connect(proxy: SocketAddr, target: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    if text.starts_with("HTTP/1.1 200") {
        return Ok(stream);
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    Err(format!("{text}{}", String::from_utf8_lossy(&rest)))
}

/// A TLS client over `stream` trusting only `roots` (PEM), offering HTTP/1.1.
pub async fn tls_client(stream: TcpStream, roots: &[&str], name: &str) -> std::io::Result<TlsStream<TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), stream).await
}

pub fn peer_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends one GET over an established TLS stream; returns status and body text.
pub async fn get_over(tls: TlsStream<TcpStream>, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Checks a token was signed by the demo RSA key and has not expired.
pub fn verify_demo_token(token: &str) {
    let pem = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keys/demo-rsa.pub.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).expect("token verifies");
    assert_eq!(data.claims["iss"], "tls-test");
}
