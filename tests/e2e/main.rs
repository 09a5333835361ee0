//! The end-to-end suite, one test binary: real sockets, real clients, the real `token-sidecar`
//! binary (or an in-process sidecar where a test injects minters or inspects state).
//!
//! One module per topic; `support` holds everything the topics share. Run a subset with
//! `cargo test --test e2e proxy::` (or any part of a test's path).

mod support;

mod cache;
mod config;
mod encodings;
mod exchange;
mod fleet;
mod jose;
mod ops;
mod performance;
mod policy;
mod protocols;
mod proxy;
mod security;
mod tls;
