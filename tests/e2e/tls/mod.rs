//! HTTPS_PROXY: CONNECT interception for routed hosts, blind tunnels for the rest, and the
//! interception CA's CLI.

mod interception;
