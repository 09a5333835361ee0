//! Config files and keys: every error a user can make is reported with its location, every
//! algorithm signs with every key form it accepts, and the CLI's `check`, `keygen` and `sign`.
//! Keys generated with openssl are shared by the whole binary.

mod config_errors;
mod jwt_matrix;
mod key_errors;
mod keygen_cli;
mod provider_examples;
