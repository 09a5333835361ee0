//! token-sidecar: an outbound HTTP proxy that injects freshly signed tokens into requests,
//! so agent functions never hold signing keys or live tokens.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod keygen;
pub mod logging;
pub mod routes;
pub mod server;
pub mod substitute;
pub mod tokens;
