//! What makes two sidecars' exchanged tokens the same token, so they may share one entry.
//!
//! The identity is a SHA-256 over everything that decides what the token endpoint issues and
//! how its answer is read: the token URL and method, the request's headers, client id and
//! body templates (form fields, JSON, text), the response mapping, the exposed fields, and
//! the identity of every token the exchange uses (a signing key's or secret's fingerprint, a
//! digest, never the secret). It leaves out what does not change the token: the token's name
//! in this config, `refresh_before`, where in the file it was written. The identity itself
//! never reaches Redis: entries are named by an HMAC of it under the fleet key.

use std::collections::BTreeMap;

use crate::exchange::dependency_name;
use crate::tokens::oauth2::{ExchangeBody, ExchangeDefinition};
use crate::tokens::TokenDefinition;

/// Dependencies nest at most this deep (the config refuses cycles; this bounds the walk).
const MAX_DEPTH: usize = 16;

/// The identity of exchanged token `name`, or `None` if it is not an exchange.
pub fn token_identity(name: &str, tokens: &BTreeMap<String, TokenDefinition>) -> Option<[u8; 32]> {
    identity(tokens.get(name)?, tokens, 0)
}

fn identity(def: &TokenDefinition, tokens: &BTreeMap<String, TokenDefinition>, depth: usize) -> Option<[u8; 32]> {
    let exchange = def.exchange()?;
    let mut parts = Parts::default();
    parts.add(b"token-sidecar oauth2 identity v1");
    describe(exchange, &mut parts);
    let mut names: Vec<&str> = exchange.references.iter().filter_map(|r| dependency_name(&r.name, tokens)).collect();
    names.sort_unstable();
    names.dedup();
    for dep_name in names {
        let dep = tokens.get(dep_name)?;
        parts.add(dep_name.as_bytes());
        match dep.exchange() {
            Some(_) if depth < MAX_DEPTH => parts.add(&identity(dep, tokens, depth + 1)?),
            Some(_) => return None,
            None => parts.add(&dep.fingerprint()),
        }
    }
    Some(parts.finish())
}

fn describe(e: &ExchangeDefinition, parts: &mut Parts) {
    parts.add(e.token_url.to_string().as_bytes());
    parts.add(e.method.as_str().as_bytes());
    parts.add(&(e.headers.len() as u64).to_be_bytes());
    for (name, template) in &e.headers {
        parts.add(name.as_str().as_bytes());
        parts.add(template.as_bytes());
    }
    match &e.basic {
        Some((id, secret_template)) => {
            parts.add(b"basic");
            parts.add(id.as_bytes());
            parts.add(secret_template.as_bytes());
        }
        None => parts.add(b"no basic"),
    }
    match &e.body {
        ExchangeBody::Form(fields) => {
            parts.add(b"form");
            parts.add(&(fields.len() as u64).to_be_bytes());
            for f in fields {
                parts.add(f.name.as_bytes());
                parts.add(f.value.as_bytes());
                parts.add(&[u8::from(f.template)]);
            }
        }
        ExchangeBody::Json(v) => {
            parts.add(b"json");
            parts.add(v.to_string().as_bytes());
        }
        ExchangeBody::Text(t) => {
            parts.add(b"text");
            parts.add(t.as_bytes());
        }
        ExchangeBody::Empty => parts.add(b"empty"),
    }
    let r = &e.response;
    parts.add(r.token.as_bytes());
    parts.add(r.expires_in.as_bytes());
    parts.add(r.expires_at.as_deref().unwrap_or("\0none").as_bytes());
    parts.add(&[u8::from(r.expiry_from_jwt)]);
    parts.add(format!("{:?} {:?}", r.default_ttl, r.max_ttl).as_bytes());
    parts.add(r.token_type.as_deref().unwrap_or("\0none").as_bytes());
    parts.add(&(e.expose.len() as u64).to_be_bytes());
    for (field, pointer) in &e.expose {
        parts.add(field.as_bytes());
        parts.add(pointer.as_bytes());
    }
}

/// Length-prefixed parts into one SHA-256, so no two different lists hash alike.
#[derive(Default)]
struct Parts(Vec<u8>);

impl Parts {
    fn add(&mut self, part: &[u8]) {
        self.0.extend_from_slice(&(part.len() as u64).to_be_bytes());
        self.0.extend_from_slice(part);
    }

    fn finish(self) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn identity_of(text: &str) -> [u8; 32] {
        let config = crate::config::Config::from_text(Path::new("identity.toml"), text).expect("valid config");
        token_identity("api", &config.tokens).expect("an exchange")
    }

    const BASE: &str = "[tokens.secret]\nkind = \"secret\"\nkey = \"s3cret-value\"\n\
        [tokens.api]\nkind = \"oauth2\"\ntoken_url = \"https://idp.example/token\"\n\
        grant = \"client_credentials\"\nclient_id = \"agent\"\nclient_secret = \"secret\"\nscope = \"read\"\n";

    #[test]
    fn the_identity_covers_what_makes_the_token_and_nothing_else() {
        let base = identity_of(BASE);
        // Cosmetic differences: the same token.
        assert_eq!(base, identity_of(&format!("# a comment\n\n{BASE}")), "where it is written");
        assert_eq!(base, identity_of(&format!("{BASE}refresh_before = \"5m\"\n")), "refresh_before");
        // Anything the endpoint sees or the answer mapping: another token.
        for changed in [
            BASE.replace("idp.example/token", "idp.example/token2"),
            BASE.replace("\"agent\"", "\"agent2\""),
            BASE.replace("\"read\"", "\"read write\""),
            BASE.replace("s3cret-value", "s3cret-valuf"),
            format!("{BASE}[tokens.api.form]\naudience = \"https://api\"\n"),
            format!("{BASE}[tokens.api.expose]\nurl = \"/instance_url\"\n"),
            format!("{BASE}[tokens.api.response]\nmax_ttl = \"10m\"\n"),
        ] {
            assert_ne!(base, identity_of(&changed), "{changed}");
        }
    }
}
