//! h2c: clients speaking HTTP/2 with prior knowledge to the proxy port.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

#[tokio::test]
async fn h2_prior_knowledge_requests_are_proxied_with_tokens() {
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\"")
        ),
    );
    let sidecar = start(&toml).await;
    let stream = tokio::net::TcpStream::connect(sidecar.proxy_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    // Two requests on one h2 connection; each carries :scheme and :authority (absolute form).
    for path in ["/one", "/two"] {
        let req = http::Request::get(upstream.url(path))
            .header("authorization", "Bearer {/auth_token}")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.expect("h2 response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let _ = response.into_body().collect().await.unwrap();
    }
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(verify_demo(r.token())["sub"], "tok");
    }
    sidecar.shutdown().await;
}
