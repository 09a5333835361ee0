//! End-to-end tests of the proxy: real sockets, a recording upstream, real tokens.
//!
//! Each module covers one thing a user relies on.

mod binding;
mod check_cli;
mod clients;
mod compressed;
mod connect_timeout;
mod demo;
mod forwarding;
mod h2c;
mod large_body;
mod malformed;
mod refresh;
mod reverse;
mod signing;
mod substitution;
mod upstream_errors;
