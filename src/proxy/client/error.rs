//! Why an upstream request failed, split the way the proxy answers: the connection could not
//! be made (502 `upstream_unreachable`, or the policy's refusal), or the request failed on
//! an open connection (502 `upstream_failed`).

use super::super::BoxError;

/// Where an upstream request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Resolving, checking the address, connecting, or the TLS handshake.
    Connect,
    /// Speaking HTTP on an open connection (including the HTTP/2 handshake).
    Send,
    /// The request names no `http` or `https` target to connect to.
    Target,
}

/// An upstream request that failed, with the error that made it fail as its source.
#[derive(Debug)]
pub struct ClientError {
    stage: Stage,
    source: BoxError,
}

impl ClientError {
    pub(super) fn connect(source: impl Into<BoxError>) -> ClientError {
        ClientError { stage: Stage::Connect, source: source.into() }
    }

    pub(super) fn send(source: impl Into<BoxError>) -> ClientError {
        ClientError { stage: Stage::Send, source: source.into() }
    }

    pub(super) fn target(why: &'static str) -> ClientError {
        ClientError { stage: Stage::Target, source: why.into() }
    }

    /// Whether no connection to the upstream could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        self.stage == Stage::Connect
    }

    /// Where it failed.
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.stage {
            Stage::Connect => "connecting to the upstream failed",
            Stage::Send => "the upstream request failed",
            Stage::Target => "the request has no upstream target",
        })
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
