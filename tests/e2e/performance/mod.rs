//! Issue 17: what the performance work must not change, and what it adds.
//!
//! - [`pool`]: the sidecar's own upstream connection pool (reuse after a response was read,
//!   one shared h2 connection, the idle timeout, upstreams that close, abandoned bodies);
//! - [`listener`]: the listen backlog that absorbs a burst of connecting clients;
//! - [`resumption`]: TLS session resumption for clients of an intercepted tunnel.
//!
//! No test here asserts a speed: `benches/` measures (see BENCHMARKS.md).

mod listener;
mod pool;
mod resumption;
