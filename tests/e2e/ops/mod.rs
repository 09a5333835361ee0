//! Operations tests: hot reload (under load, Kubernetes ConfigMap swaps, broken configs,
//! SIGHUP), the admin endpoints (metrics, health, JWKS), secrecy, and graceful shutdown.
//! In-process sidecars where possible; the real binary where logs and signals matter.

mod broken_config;
mod health;
mod jwks;
mod kubernetes_symlink_swap;
mod metrics;
mod reload_keeps_tokens;
mod reload_under_load;
mod restart_warning;
mod secrets;
mod shutdown;
mod sighup;
mod static_secrets;
mod unchanged_after_new_files;
mod worker_threads;
