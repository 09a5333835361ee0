//! TLS interception for CONNECT tunnels to routed hosts (`HTTPS_PROXY`).
//!
//! A client that sends `CONNECT api.example.com:443` then speaks TLS, so nothing can be
//! substituted unless the sidecar terminates that TLS. For routed hosts it does, with a leaf
//! certificate minted for the host by a local CA the client trusts; requests inside the
//! tunnel then take exactly the same path as plain-HTTP ones, and the upstream connection is
//! a fresh TLS connection verified against the real roots. Unrouted hosts are never
//! intercepted (see `proxy::tunnel`).

mod ca;
mod intercept;
mod leaf;

pub use ca::{generate_ca, generate_ca_files, load_ca, CaError, LoadedCa};
pub use intercept::{handshake_failed, intercept, serve_tls, Tunnel};
pub use leaf::Interceptor;
