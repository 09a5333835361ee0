//! The graph of tokens that use other tokens (an exchange's assertion, client secret, or a
//! `{/other}` in its request), checked when the config loads.
//!
//! Each reference must name a token of a kind that fits where it is written, an exchanged
//! token may not depend on itself through any chain, and each exchange's fingerprint covers
//! everything it depends on: a rotated secret file re-exchanges the tokens that use it.

use std::collections::BTreeMap;

use super::diagnostic::Collector;
use super::raw::RawConfig;
use crate::exchange::dependency_name;
use crate::tokens::TokenDefinition;

/// Checks every reference and cycle, then folds dependencies into fingerprints.
pub(super) fn check(raw: &RawConfig, tokens: &mut BTreeMap<String, TokenDefinition>, c: &mut Collector<'_>) {
    for def in tokens.values() {
        let Some(exchange) = def.exchange() else { continue };
        for reference in &exchange.references {
            let Some(name) = dependency_name(&reference.name, &raw.tokens) else {
                let known: Vec<&str> = raw.tokens.keys().map(String::as_str).collect();
                c.error(
                    reference.span.clone(),
                    &reference.key_path,
                    format!("no token named {:?} (defined: {})", reference.name, known.join(", ")),
                );
                continue;
            };
            // A token that failed its own checks was reported there.
            let Some(target) = tokens.get(name) else { continue };
            if let Some(kind) = reference.kind {
                if target.kind_name() != kind {
                    c.error(
                        reference.span.clone(),
                        &reference.key_path,
                        format!("must name a kind = \"{kind}\" token; {name:?} is kind = \"{}\"", target.kind_name()),
                    );
                }
            }
            if target.is_per_request() {
                c.error(
                    reference.span.clone(),
                    &reference.key_path,
                    format!(
                        "{name:?} is a per_request token, signed for each proxied request; an exchange signs the \
                         tokens it uses afresh anyway, so name a token without per_request"
                    ),
                );
            }
            if let Some(field) = reference.name.strip_prefix(name).and_then(|rest| rest.strip_prefix('.')) {
                let exposes = target.exchange().is_some_and(|e| e.expose.iter().any(|(f, _)| &**f == field));
                if !exposes {
                    c.error(
                        reference.span.clone(),
                        &reference.key_path,
                        format!(
                            "{{/{}}}: token {name:?} exposes no field {field:?} (see its [expose])",
                            reference.name
                        ),
                    );
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(tokens) {
        // Reported where the first token of the cycle names the next one.
        let closing = tokens
            .get(&cycle[0])
            .and_then(|d| d.exchange())
            .and_then(|e| e.references.iter().find(|r| dependency_name(&r.name, tokens) == Some(cycle[1].as_str())));
        let (span, key_path) = match closing {
            Some(r) => (r.span.clone(), r.key_path.clone()),
            None => (raw.tokens.get(&cycle[0]).map_or(0..0, toml::Spanned::span), format!("tokens.{}", cycle[0])),
        };
        c.error(span, key_path, format!("tokens depend on each other in a cycle: {}", cycle.join(" -> ")));
        return;
    }
    let order = exchange_order(tokens);
    for name in order {
        let deps: Vec<[u8; 32]> = direct_dependencies(&tokens[&name], tokens)
            .iter()
            .filter_map(|d| tokens.get(d))
            .map(|d| d.fingerprint())
            .collect();
        if let Some(def) = tokens.get_mut(&name) {
            def.include_dependencies(&deps);
        }
    }
}

/// The tokens `def` uses directly, by name.
pub fn direct_dependencies(def: &TokenDefinition, tokens: &BTreeMap<String, TokenDefinition>) -> Vec<String> {
    let Some(exchange) = def.exchange() else { return Vec::new() };
    let mut out: Vec<String> =
        exchange.references.iter().filter_map(|r| dependency_name(&r.name, tokens)).map(String::from).collect();
    out.sort();
    out.dedup();
    out
}

/// Exchanged tokens, each after every exchanged token it uses (the order cells start in).
/// Tokens in a cycle are left out; the config check refuses them.
pub fn exchange_order(tokens: &BTreeMap<String, TokenDefinition>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut pending: Vec<&String> = tokens.iter().filter(|(_, d)| d.exchange().is_some()).map(|(n, _)| n).collect();
    loop {
        let before = pending.len();
        pending.retain(|name| {
            let ready = direct_dependencies(&tokens[*name], tokens)
                .iter()
                .all(|d| tokens.get(d).is_none_or(|t| t.exchange().is_none()) || order.contains(d));
            if ready {
                order.push((*name).clone());
            }
            !ready
        });
        if pending.is_empty() || pending.len() == before {
            return order;
        }
    }
}

/// A chain of exchanged tokens that leads back to its start, if any.
fn find_cycle(tokens: &BTreeMap<String, TokenDefinition>) -> Option<Vec<String>> {
    fn visit(
        name: &str,
        tokens: &BTreeMap<String, TokenDefinition>,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == name) {
            let mut cycle = path[i..].to_vec();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if done.iter().any(|d| d == name) {
            return None;
        }
        path.push(name.to_string());
        for dep in direct_dependencies(tokens.get(name)?, tokens) {
            if let Some(cycle) = visit(&dep, tokens, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name.to_string());
        None
    }
    let mut done = Vec::new();
    tokens.keys().find_map(|name| visit(name, tokens, &mut Vec::new(), &mut done))
}
