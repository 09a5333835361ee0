//! HTTPS: CONNECT interception for routed hosts, blind tunnels for the rest, the interception
//! CA's CLI and TLS counters; and `upstream_tls` routes, which send plain-HTTP requests on to
//! the upstream over HTTPS.

mod interception;
mod metrics;
mod upstream_tls;
