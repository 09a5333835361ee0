//! Connections (TCP, CONNECT, TLS) and the three ways of loading them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::stats::{Outcome, Tally};
use super::{Args, Mode};

/// Everything a worker needs to open connections and build requests.
pub struct Plan {
    proxy: Option<std::net::SocketAddr>,
    /// Where TCP goes without a proxy.
    connect: String,
    target: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Plan {
    pub fn new(args: &Args, target: &str) -> Result<Plan, String> {
        let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
        let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &args.ca {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                roots.add(cert.map_err(|e| format!("{}: {e}", ca.display()))?).map_err(|e| e.to_string())?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![if args.mode == Mode::H2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        if !args.resume {
            // Every new connection a full handshake, as a process that keeps no session does.
            tls.resumption = Resumption::disabled();
        }
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(target).map_err(|e| e.to_string())?);
        for header in &args.headers {
            let (name, value) = header.split_once(':').ok_or_else(|| format!("header {header:?} has no ':'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("{name}: {e}"))?;
            headers.append(name, HeaderValue::from_str(value.trim()).map_err(|e| format!("{value}: {e}"))?);
        }
        if args.mode == Mode::H2 {
            // h2 names the host in :authority, which the request's absolute URI gives.
            headers.remove(HOST);
        }
        Ok(Plan {
            proxy: args.proxy,
            connect: args.connect.map_or_else(|| target.to_string(), |a| a.to_string()),
            target: target.to_string(),
            server_name,
            tls: Arc::new(tls),
            method: Method::from_bytes(args.method.as_bytes()).map_err(|e| e.to_string())?,
            path: args.path.clone(),
            headers,
            body: Bytes::from(args.body.clone()),
        })
    }

    fn request(&self, absolute: bool) -> Request<Full<Bytes>> {
        let uri = if absolute { format!("https://{}{}", self.target, self.path) } else { self.path.clone() };
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri.parse().unwrap_or_default();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// A TLS connection to the target: through the proxy's CONNECT, or directly.
    async fn open(&self) -> Result<TlsStream<TcpStream>, String> {
        let stream = match self.proxy {
            Some(proxy) => {
                let mut stream = TcpStream::connect(proxy).await.map_err(|e| format!("connect {proxy}: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", self.target);
                stream.write_all(connect.as_bytes()).await.map_err(|e| format!("CONNECT: {e}"))?;
                read_connect_answer(&mut stream).await?;
                stream
            }
            None => {
                let stream =
                    TcpStream::connect(&self.connect).await.map_err(|e| format!("connect {}: {e}", self.connect))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                stream
            }
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
        connector.connect(self.server_name.clone(), stream).await.map_err(|e| format!("TLS: {e}"))
    }

    /// One request on a new connection: the TLS 1.3 suite negotiated, then the answer's
    /// status and body, for the sanity check before a run (what the upstream saw, when it
    /// echoes it).
    pub async fn check(&self) -> Result<String, String> {
        let tls = self.open().await?;
        let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        let answer = if self.tls.alpn_protocols == [b"h2".to_vec()] {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(self.request(true)).await.map_err(|e| e.to_string())?
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP/1.1: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(self.request(false)).await.map_err(|e| e.to_string())?
        };
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(format!("{suite} {} {}", parts.status.as_u16(), String::from_utf8_lossy(&body).trim_end()))
    }

    /// One connection and one request, so a run against a target that does not answer fails
    /// at once.
    pub async fn probe(&self) -> Result<(), String> {
        let mut tally = Tally::default();
        if self.tls.alpn_protocols == [b"h2".to_vec()] {
            let mut sender = h2_connection(self).await?;
            send_h2(self, &mut sender, &mut tally).await?;
        } else {
            let (mut sender, _) = h1_connection(self).await?;
            send_h1(self, &mut sender, &mut tally).await?;
        }
        match tally.statuses.first() {
            Some(200..=299) => Ok(()),
            Some(status) => Err(format!("the first request was answered {status}")),
            None => Err("the first request got no answer".into()),
        }
    }
}

/// Reads the proxy's answer to CONNECT up to its blank line; only a 200 opens the tunnel.
async fn read_connect_answer(stream: &mut TcpStream) -> Result<(), String> {
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the blank line may be taken from the TLS stream.
    while !head.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).await.map_err(|e| format!("CONNECT answer: {e}"))?;
        if read == 0 || head.len() > 8192 {
            return Err("the proxy closed the connection instead of answering CONNECT".into());
        }
        head.push(byte[0]);
    }
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or_default()))
    }
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h1_connection(plan: &Plan) -> Result<(H1, HandshakeKind), String> {
    let tls = plan.open().await?;
    let kind = tls.get_ref().1.handshake_kind().unwrap_or(HandshakeKind::Full);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP/1.1: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, kind))
}

async fn h2_connection(plan: &Plan) -> Result<H2, String> {
    let tls = plan.open().await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not choose h2".into());
    }
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send_h1(plan: &Plan, sender: &mut H1, tally: &mut Tally) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = sender.send_request(plan.request(false)).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    tally.record(started.elapsed(), status);
    Ok(())
}

async fn send_h2(plan: &Plan, sender: &mut H2, tally: &mut Tally) -> Result<(), String> {
    let started = Instant::now();
    let response = sender.send_request(plan.request(true)).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    tally.record(started.elapsed(), status);
    Ok(())
}

/// Runs `workers` (already connected) until `deadline`, and adds up what they saw.
async fn gather(workers: Vec<tokio::task::JoinHandle<Tally>>, started: Instant) -> Outcome {
    let mut tally = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            tally.merge(t);
        }
    }
    Outcome { tally, elapsed: started.elapsed() }
}

/// `conns` keep-alive connections, opened first, then loaded for `duration`.
pub async fn keepalive(plan: Arc<Plan>, conns: usize, duration: Duration) -> Outcome {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(h1_connection(&plan).await);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let workers = senders
        .into_iter()
        .map(|opened| {
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut sender = opened.ok().map(|(s, _)| s);
                while Instant::now() < deadline {
                    let Some(s) = sender.as_mut() else {
                        tally.errors += 1;
                        sender = h1_connection(&plan).await.ok().map(|(s, _)| s);
                        continue;
                    };
                    if send_h1(&plan, s, &mut tally).await.is_err() {
                        tally.errors += 1;
                        sender = None;
                    }
                }
                tally
            })
        })
        .collect();
    gather(workers, started).await
}

/// `workers` each opening a new connection per request for `duration`; a request's latency
/// includes its connection (TCP, CONNECT, TLS).
pub async fn new_connections(plan: Arc<Plan>, workers: usize, duration: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..workers)
        .map(|_| {
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let (mut sender, kind) = match h1_connection(&plan).await {
                        Ok(opened) => opened,
                        Err(_) => {
                            tally.errors += 1;
                            continue;
                        }
                    };
                    tally.handshakes += 1;
                    tally.resumed += u64::from(kind == HandshakeKind::Resumed);
                    let mut one = Tally::default();
                    if send_h1(&plan, &mut sender, &mut one).await.is_err() {
                        tally.errors += 1;
                        continue;
                    }
                    // The whole exchange, connection included.
                    tally.non2xx += one.non2xx;
                    tally.latencies_us.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                tally
            })
        })
        .collect();
    gather(workers, started).await
}

/// `conns` h2 connections, each with `streams` requests in flight for `duration`.
pub async fn h2(plan: Arc<Plan>, conns: usize, streams: usize, duration: Duration) -> Outcome {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(h2_connection(&plan).await);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(conns * streams);
    for opened in senders {
        let Ok(sender) = opened else {
            workers.push(tokio::spawn(async { Tally { errors: 1, ..Tally::default() } }));
            continue;
        };
        for _ in 0..streams {
            let (plan, mut sender) = (Arc::clone(&plan), sender.clone());
            workers.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    if send_h2(&plan, &mut sender, &mut tally).await.is_err() {
                        tally.errors += 1;
                        if sender.is_closed() {
                            break;
                        }
                    }
                }
                tally
            }));
        }
    }
    gather(workers, started).await
}
