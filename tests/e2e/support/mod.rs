//! What every end-to-end test shares, one job per module:
//!
//! - [`upstream`]: the recording upstream (plain HTTP and h2c, HTTPS, delayed, gated, echo, raw);
//! - [`origin`]: a scripted origin (each answer from a closure; held, streamed in two parts);
//! - [`sidecar`]: the sidecar under test, as a child process or in process;
//! - [`config`]: config text builders and config folders;
//! - [`client`]: the hyper client and its reply type, and the command builder every process
//!   goes through (it clears the proxy environment);
//! - [`raw`]: raw HTTP/1.1 on a socket; [`tunnel`]: CONNECT and TLS inside it;
//! - [`idp`]: the mock identity provider (a scripted, recording token endpoint);
//! - [`git_server`]: a git smart-HTTP server over TLS (`git http-backend` as CGI) that asks for
//!   Basic credentials;
//! - [`jwt`]: the independent JWT verifier; [`keys`]: key material; [`ca`]: test CAs and TLS
//!   client configs;
//! - [`metrics`]: the `/metrics` parser; [`logs`]: log capture and leak searches;
//! - [`redis`]: a real `redis-server` for fleet tests;
//! - [`wait`]: polling with a deadline.

pub mod ca;
pub mod client;
pub mod config;
pub mod git_server;
pub mod grpc;
pub mod idp;
pub mod jwt;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod origin;
pub mod raw;
pub mod redis;
pub mod serve;
pub mod sidecar;
pub mod sse;
pub mod tunnel;
pub mod upstream;
pub mod wait;
pub mod websocket;
