//! `token-sidecar check`: the effective policy as a table.
