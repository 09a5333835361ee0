//! token-sidecar: an outbound HTTP proxy that injects freshly signed tokens into requests,
//! so agent functions never hold signing keys or live tokens.
//!
//! The request path: [`proxy`] takes a [`snapshot`] of the running state, matches one of
//! the [`routes`], fills placeholders ([`substitute`]) with tokens from the [`store`], and
//! sends the request upstream. [`tokens`] defines what is minted ([`exchange`] fetches
//! tokens from token endpoints), [`config`] reads
//! `sidecar.toml`, [`reload`] swaps in new configs, [`tls`] intercepts CONNECT tunnels, and
//! [`admin`] reports on all of it. [`policy`] decides where traffic may go, who may send it
//! and where a token may be written, and keeps the audit log.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod echo;
pub mod error;
pub mod exchange;
pub mod files;
pub mod fleet;
pub mod keygen;
pub mod logging;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod substitute;
pub mod tls;
pub mod tokens;
