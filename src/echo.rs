//! A built-in echo upstream (`[echo] listen`): answers every request with a JSON description
//! of what it received, so the quick start and route experiments need nothing else running.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Bodies larger than this are summarised by length only.
const MAX_ECHOED_BODY: usize = 64 * 1024;

/// Serves the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), service_fn(echo)).await;
        });
    }
}

/// Serves the echo over TLS with certificates from the interception CA, so the HTTPS_PROXY
/// demo needs no outside server either.
pub async fn serve_tls(listener: TcpListener, interceptor: std::sync::Arc<crate::tls::Interceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let interceptor = std::sync::Arc::clone(&interceptor);
        tokio::spawn(async move {
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let Ok(start) = acceptor.await else { return };
            let name = start.client_hello().server_name().unwrap_or("localhost").to_string();
            let Ok(config) = interceptor.server_config(&name) else { return };
            let Ok(tls) = start.into_stream(config).await else { return };
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tls), service_fn(echo)).await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = match Limited::new(body, MAX_ECHOED_BODY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => format!("(body larger than {MAX_ECHOED_BODY} bytes)"),
    };
    let reply = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": body,
    });
    let mut text = serde_json::to_string_pretty(&reply).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
