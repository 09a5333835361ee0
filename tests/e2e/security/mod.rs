//! Attacks on the running binary, one module per kind of attack (issue 9): a hostile agent
//! function on the proxy port, on reverse listeners and inside tunnels, and a hostile upstream.
//! Every test drives the real `token-sidecar` process over sockets.

mod binding;
mod bodies;
mod connect;
mod drain;
mod expiry;
mod fuzz_replay;
mod limits;
mod logs;
mod metrics_vocabulary;
mod redaction;
mod reload_ca;
mod smaller;
mod soak;
mod timeouts;
