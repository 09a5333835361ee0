//! The per-request part of a request's tokens: values signed for this one request
//! (`per_request` tokens) and DPoP proofs for the exchanged tokens it carries.
//!
//! It lives beside the token values a request loads when it starts ([`crate::snapshot`]'s
//! `RequestTokens`) and follows the request through three phases: the target (no request
//! facts yet, so a per-request token there is refused), the headers (facts known: each
//! per-request token is signed the first time it is written, then reused), and after the
//! headers (a per-request token in the body is refused; DPoP proofs have been attached).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Uri};

use super::dpop::{asks_for_nonce, DpopKey, Server};
use super::per_request::{DeriveError, RequestFacts};
use super::{MintedToken, RequestSignError, TokenDefinition};
use crate::substitute::{RefusalKind, Resolution};

/// What one binding of a route signs per request.
#[derive(Debug, Clone)]
pub enum Bound {
    /// A `per_request` jwt token, signed for each request that writes it.
    PerRequest(Arc<TokenDefinition>),
    /// An exchanged token with `dpop`: requests that carry it carry a proof too.
    Dpop(Arc<DpopKey>),
}

impl Bound {
    /// What a binding of `token` signs per request, if anything.
    pub fn of(token: &TokenDefinition, tokens: &std::collections::BTreeMap<String, TokenDefinition>) -> Option<Bound> {
        if token.is_per_request() {
            return Some(Bound::PerRequest(Arc::new(token.clone())));
        }
        let key = token.exchange()?.dpop.as_ref().and_then(|n| tokens.get(n))?.dpop_key()?;
        Some(Bound::Dpop(Arc::clone(key)))
    }

    fn needs_body(&self) -> bool {
        match self {
            Bound::PerRequest(def) => def.jwt().and_then(|j| j.per_request.as_ref()).is_some_and(|p| p.needs_body()),
            Bound::Dpop(_) => false,
        }
    }

    fn needs_authorization(&self) -> bool {
        match self {
            Bound::PerRequest(def) => def
                .jwt()
                .and_then(|j| j.per_request.as_ref())
                .is_some_and(|p| p.claims.iter().chain(&p.header).any(|(_, d)| *d == super::per_request::Derived::Ath)),
            Bound::Dpop(_) => false,
        }
    }
}

const BEFORE_HEADERS: u8 = 0;
const IN_HEADERS: u8 = 1;
const AFTER_HEADERS: u8 = 2;

/// One request's per-request signing state.
pub struct RequestBound {
    bound: Vec<Option<Bound>>,
    phase: AtomicU8,
    facts: OnceLock<RequestFacts>,
    body_sha256: OnceLock<[u8; 32]>,
    /// Per binding: the value signed for this request, or why it could not be.
    signed: Vec<OnceLock<Result<Arc<MintedToken>, RefusalKind>>>,
}

impl RequestBound {
    /// State for a route whose bindings sign as `bound` says; `None` when none does, so a
    /// route without per-request tokens pays nothing.
    pub fn new(bound: &[Option<Bound>]) -> Option<RequestBound> {
        bound.iter().any(Option::is_some).then(|| RequestBound {
            bound: bound.to_vec(),
            phase: AtomicU8::new(BEFORE_HEADERS),
            facts: OnceLock::new(),
            body_sha256: OnceLock::new(),
            signed: bound.iter().map(|_| OnceLock::new()).collect(),
        })
    }

    /// Whether binding `i` is a per-request token (its value comes from [`Self::resolve`]).
    pub fn is_per_request(&self, i: usize) -> bool {
        matches!(self.bound.get(i), Some(Some(Bound::PerRequest(_))))
    }

    /// Whether the headers write a per-request token that signs the body's hash, given the
    /// binding names: the body must then be read whole before the headers.
    pub fn needs_body(&self, names: &[&str], headers: &HeaderMap) -> bool {
        let signs_body: Vec<&str> = self
            .bound
            .iter()
            .zip(names)
            .filter(|(b, _)| b.as_ref().is_some_and(Bound::needs_body))
            .map(|(_, n)| *n)
            .collect();
        !signs_body.is_empty()
            && headers
                .values()
                .any(|v| crate::substitute::placeholder_names(v.as_bytes()).any(|n| signs_body.contains(&n)))
    }

    /// Whether some binding needs the `Authorization` header's access token (`ath`).
    pub fn needs_authorization(&self) -> bool {
        self.bound.iter().flatten().any(Bound::needs_authorization)
    }

    pub fn set_body_sha256(&self, digest: [u8; 32]) {
        let _ = self.body_sha256.set(digest);
    }

    /// The request is about to have its headers filled in: from here per-request tokens are
    /// signed over `method`, `uri` (the upstream URI) and `authorization` (the header with
    /// other tokens filled in).
    pub fn begin_headers(&self, method: &Method, uri: &Uri, authorization: Option<Vec<u8>>) {
        let _ = self.facts.set(RequestFacts {
            method: method.clone(),
            uri: uri.clone(),
            authorization,
            body_sha256: self.body_sha256.get().copied(),
        });
        self.phase.store(IN_HEADERS, Ordering::Release);
    }

    /// The value of per-request binding `i` for this request, signed the first time.
    pub fn resolve(&self, i: usize, now: SystemTime) -> Result<Arc<MintedToken>, Resolution> {
        let Some(Some(Bound::PerRequest(def))) = self.bound.get(i) else {
            return Err(Resolution::Unknown);
        };
        if self.phase.load(Ordering::Acquire) != IN_HEADERS {
            return Err(Resolution::Refused(RefusalKind::Misplaced));
        }
        let Some(facts) = self.facts.get() else { return Err(Resolution::Refused(RefusalKind::Misplaced)) };
        let slot = self.signed.get(i).ok_or(Resolution::Unknown)?;
        let signed = slot.get_or_init(|| match def.sign_request(facts, now) {
            Ok(token) => Ok(Arc::new(token)),
            Err(RequestSignError::Derive(DeriveError::NoAccessToken | DeriveError::BodyNotBuffered)) => {
                Err(RefusalKind::Unsignable)
            }
            Err(RequestSignError::Sign(e)) => {
                tracing::warn!(token = %def.name, error = %e, "per-request signing failed");
                Err(RefusalKind::Unavailable)
            }
        });
        signed.clone().map_err(Resolution::Refused)
    }

    /// The value signed for binding `i`, if one was.
    pub fn signed(&self, i: usize) -> Option<Arc<MintedToken>> {
        self.signed.get(i)?.get()?.as_ref().ok().cloned()
    }

    /// The headers are filled in: attaches a DPoP proof for the first DPoP-bound token the
    /// request carries (`used` says which bindings were written, `value` gives their values),
    /// and closes the header phase.
    pub fn finish_headers(
        &self,
        headers: &mut HeaderMap,
        used: impl Fn(usize) -> Option<bytes::Bytes>,
        now: SystemTime,
    ) -> Result<(), crate::tokens::MintError> {
        self.phase.store(AFTER_HEADERS, Ordering::Release);
        let Some(facts) = self.facts.get() else { return Ok(()) };
        for (i, bound) in self.bound.iter().enumerate() {
            let (Some(Bound::Dpop(key)), Some(token)) = (bound, used(i)) else { continue };
            let proof = key.proof(facts.method.as_str(), &facts.url_without_query(), Some(&token), now)?;
            if let Ok(value) = HeaderValue::from_str(&proof) {
                headers.insert("dpop", value);
            }
            break;
        }
        Ok(())
    }

    /// Reads an upstream answer: keeps a `DPoP-Nonce` for the DPoP keys the request used,
    /// and says whether the answer asks to retry with one (401 `use_dpop_nonce`, RFC 9449 §9).
    pub fn observe_response(
        &self,
        status: http::StatusCode,
        headers: &HeaderMap,
        used: impl Fn(usize) -> bool,
    ) -> bool {
        let (Some(facts), Some(nonce)) = (self.facts.get(), headers.get("dpop-nonce")) else { return false };
        let server = Server::resource(&facts.url_without_query());
        let mut kept = false;
        for (i, bound) in self.bound.iter().enumerate() {
            if let (Some(Bound::Dpop(key)), true) = (bound, used(i)) {
                kept |= key.remember_nonce(server.clone(), nonce.as_bytes());
            }
        }
        kept && status == http::StatusCode::UNAUTHORIZED
            && asks_for_nonce(headers.get(WWW_AUTHENTICATE).map(HeaderValue::as_bytes), None)
    }

    /// Whether a binding carries DPoP proofs (its requests may be retried for a nonce).
    pub fn has_dpop(&self) -> bool {
        self.bound.iter().flatten().any(|b| matches!(b, Bound::Dpop(_)))
    }
}

/// The `Authorization` header of `headers`, for `ath`.
pub fn authorization(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(AUTHORIZATION)
}
