//! Issue 17: what the performance work must not change, and what it adds.
//!
//! - [`pool`]: the sidecar's own upstream connection pool (reuse after a response was read,
//!   one shared h2 connection, the idle timeout, upstreams that close, abandoned bodies);
//! - [`listener`]: the listen backlog that absorbs a burst of connecting clients;
//! - [`interception_tls`]: the intercepting TLS server: session resumption for every client
//!   that keeps its session, and the TLS 1.3 suite it prefers.
//!
//! No test here asserts a speed: `benches/` measures (see BENCHMARKS.md).

mod interception_tls;
mod listener;
mod pool;
