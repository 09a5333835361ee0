//! Which requests the cache may answer, and the binding check every answer passes.
//!
//! A request bypasses the cache (it goes upstream as if the route had no cache, marked
//! `x-token-sidecar-cache: bypass`) when its answer could depend on something the key does
//! not hold, or when it asks for that itself:
//! - a method not in the route's `methods`;
//! - `Upgrade` (a protocol switch is not a response), `Range` and conditional headers
//!   (`If-None-Match`, `If-Modified-Since`, `If-Match`, `If-Unmodified-Since`, `If-Range`:
//!   their answers are partial or depend on what the client holds);
//! - `Cache-Control: no-store`;
//! - `Authorization` or `Cookie` holding a literal credential rather than a placeholder of
//!   the route's tokens: the cache would otherwise hand one caller's answer to another
//!   caller with different (or no) credentials (unless the route's `set_headers` replaces
//!   that header, when what the client wrote is never sent);
//! - a body that is not read whole: larger than `max_buffered_body`, encoded
//!   (`Content-Encoding`), or with trailers.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

use super::policy::RequestDirectives;
use super::RouteCache;
use crate::error::ProxyError;
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::substitute::{placeholder_names, substitute, substitute_uri, Resolution, Resolve};

/// Why a request was not answered from (or stored into) the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    Method,
    Upgrade,
    Range,
    Conditional,
    NoStore,
    Credential,
    Body,
}

const CONDITIONAL: [HeaderName; 5] =
    [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE, header::IF_RANGE];

/// Why `parts` must bypass the cache, if it must (the body is judged once it is read).
pub fn bypass(route: &RouteCache, compiled: &CompiledRoute, parts: &Parts, asks: &RequestDirectives) -> Option<Bypass> {
    let headers = &parts.headers;
    if !route.settings.methods.contains(&parts.method) {
        Some(Bypass::Method)
    } else if headers.contains_key(header::UPGRADE) {
        Some(Bypass::Upgrade)
    } else if headers.contains_key(header::RANGE) {
        Some(Bypass::Range)
    } else if CONDITIONAL.iter().any(|h| headers.contains_key(h)) {
        Some(Bypass::Conditional)
    } else if asks.no_store {
        Some(Bypass::NoStore)
    } else if literal_credential(headers, compiled, &route.replaced) {
        Some(Bypass::Credential)
    } else {
        None
    }
}

/// Whether `Authorization` or `Cookie` (when sent as written) carries something other than
/// a placeholder the route binds.
fn literal_credential(headers: &HeaderMap, compiled: &CompiledRoute, replaced: &[HeaderName]) -> bool {
    [header::AUTHORIZATION, header::COOKIE].iter().filter(|name| !replaced.contains(name)).any(|name| {
        headers.get_all(name).iter().any(|value| !placeholder_names(value.as_bytes()).any(|n| is_bound(compiled, n)))
    })
}

/// Whether the route binds placeholder `name` (or the token of an exposed field `NAME.field`).
fn is_bound(compiled: &CompiledRoute, name: &str) -> bool {
    let bound = |n: &str| compiled.bindings.iter().any(|(b, _, _)| &**b == n);
    bound(name) || name.rsplit_once('.').is_some_and(|(token, _)| bound(token))
}

/// Refuses (403, as the request path would) a request that names a configured token its
/// route does not bind, before any stored answer is given to it (invariant 1 holds for
/// answers from the cache too). Only text that could hold a placeholder is scanned.
pub fn check_binding(
    snapshot: &std::sync::Arc<Snapshot>,
    route: usize,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), ProxyError> {
    let check = BindingCheck { snapshot: std::sync::Arc::clone(snapshot), route };
    substitute_uri(path_and_query, &check)?;
    for value in headers.values() {
        substitute(value.as_bytes(), &check)?;
    }
    substitute(body, &check)?;
    Ok(())
}

/// Resolves names as [`crate::snapshot::RequestTokens`] does, without loading a token.
struct BindingCheck {
    snapshot: std::sync::Arc<Snapshot>,
    route: usize,
}

impl Resolve for BindingCheck {
    fn resolve(&self, name: &str) -> Resolution {
        let Some(compiled) = self.snapshot.compiled.get(self.route) else { return Resolution::Unknown };
        if is_bound(compiled, name) {
            return Resolution::Value(Bytes::new());
        }
        let cells = &self.snapshot.cells;
        let token = name.rsplit_once('.').filter(|_| !cells.contains_key(name)).map_or(name, |(t, _)| t);
        if cells.contains_key(token) {
            Resolution::Forbidden
        } else {
            Resolution::Unknown
        }
    }
}
