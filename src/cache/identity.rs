//! What makes a cached route the same route, in this process across reloads and on every
//! sidecar of a fleet: its [`RouteId`].
//!
//! Entries are keyed under their route's identity, so a reload that changes a route (its
//! upstream, bindings, `set_headers`, cache settings, policy) or a token it binds (a rotated
//! key, another client id) gives it a new identity and its older entries are simply never
//! reached again: the local store drops them, and in Redis their TTLs clean them up. The same
//! definition gives the same identity in every process, which is what lets sidecars of a fleet
//! find each other's entries (issue 16).
//!
//! The identity is a SHA-256 over the sidecar's version, the route's whole definition, and
//! for each token the route binds that token's fleet identity (an exchanged token:
//! [`crate::fleet::identity`]) or its definition's fingerprint (a digest over its settings and
//! key material). Only digests of secrets enter it, never a secret, and the identity itself
//! never leaves the process as is: Redis keys are HMACs of it under the fleet key.

use std::collections::BTreeMap;

use crate::config::RouteDefinition;
use crate::tokens::TokenDefinition;

/// The identity of a cached route's definition (with its tokens').
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(pub [u8; 32]);

impl std::fmt::Debug for RouteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteId({self})")
    }
}

impl std::fmt::Display for RouteId {
    /// The first 8 bytes in hex: enough to tell routes apart in a debug line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The identity of route `route`, whose tokens are defined in `tokens`.
pub fn route_identity(route: &RouteDefinition, tokens: &BTreeMap<String, TokenDefinition>) -> RouteId {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        hash.update(&(bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(b"token-sidecar route identity v1");
    // Another version may encode entries or read definitions differently: its entries are
    // its own (a rolling upgrade costs one fetch per key, never a misread entry).
    field(env!("CARGO_PKG_VERSION").as_bytes());
    // The definition's Debug text: every field, maps in sorted order, no secret in it (token
    // names, templates with placeholders, hosts, settings). Deterministic within a version.
    field(format!("{route:?}").as_bytes());
    let bound: std::collections::BTreeSet<&String> = route.bindings.values().collect();
    for name in bound {
        field(name.as_bytes());
        match tokens.get(name) {
            Some(def) => match crate::fleet::identity::token_identity(name, tokens) {
                Some(exchange) => field(&exchange),
                None => field(&def.fingerprint()),
            },
            None => field(b"\0undefined"),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.finish().as_ref());
    RouteId(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[tokens.api]\nkind = \"secret\"\nkey = \"s3cret-value-1\"\n\
        [tokens.other]\nkind = \"secret\"\nkey = \"s3cret-value-2\"\n\
        [[routes]]\nname = \"lookup\"\nhost = \"api.example.com\"\ntokens = [\"api\"]\n\
        [routes.cache]\nttl = \"60s\"\n";

    fn id(text: &str) -> RouteId {
        let config = Config::from_text(Path::new("/tmp/identity.toml"), text).expect("valid config");
        route_identity(&config.routes[0], &config.tokens)
    }

    #[test]
    fn the_same_definition_is_the_same_route_in_every_process() {
        assert_eq!(id(BASE), id(BASE));
        assert_eq!(id(BASE), id(&format!("# a comment\n\n{BASE}")), "layout does not matter");
        assert_eq!(
            id(BASE),
            id(&BASE.replace("s3cret-value-2", "s3cret-value-3")),
            "a token the route does not bind does not matter"
        );
    }

    #[test]
    fn anything_that_can_change_an_answer_makes_another_route() {
        let base = id(BASE);
        for changed in [
            BASE.replace("s3cret-value-1", "s3cret-value-9"),
            BASE.replace("api.example.com", "api2.example.com"),
            BASE.replace("\"60s\"", "\"61s\""),
            BASE.replace("name = \"lookup\"", "name = \"lookup2\""),
            BASE.replace("tokens = [\"api\"]", "tokens = [\"api\"]\nset_headers = { X-Key = \"{/api}\" }"),
            BASE.replace("tokens = [\"api\"]", "tokens = [\"other\"]"),
            BASE.replace("ttl = \"60s\"", "ttl = \"60s\"\nvary = [\"accept\"]"),
        ] {
            assert_ne!(base, id(&changed), "{changed}");
        }
    }

    #[test]
    fn the_identity_holds_no_secret() {
        let text = format!("{:?}", id(BASE));
        assert_eq!(text.len(), "RouteId()".len() + 16, "{text}");
        assert!(!text.contains("s3cret"));
    }
}
