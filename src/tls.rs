//! TLS interception of CONNECT tunnels to routed hosts (stub: interception arrives next).

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::ProxyError;
use crate::proxy::{Proxy, ProxyBody};
use crate::snapshot::Snapshot;

/// Intercepts a CONNECT to a routed host.
pub async fn intercept(
    _proxy: &Proxy,
    _snapshot: &Snapshot,
    _req: Request<Incoming>,
    authority: Authority,
    _host: String,
    _port: u16,
) -> Response<ProxyBody> {
    ProxyError::InterceptionDisabled(authority.to_string()).into_response()
}
