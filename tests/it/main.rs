//! The integration test target: one binary, so keys generated with openssl are shared.

mod support;

mod config_errors;
mod jwt_matrix;
mod key_errors;
mod keygen_cli;
