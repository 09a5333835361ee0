//! `token-sidecar check`: the effective policy as a table.
//!
//! One row per caller and route it may use (and one for the unrouted traffic it may send):
//! where the route reaches, which tokens it writes, where in a request they may go, and the
//! rate limits on the way. Above it, the address rules and how unrouted traffic is treated.
//! An operator reviews this instead of reasoning about the config's parts one by one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::{CallerDefinition, Config, Position, RouteDefinition, Unmatched};
use crate::policy::networks::NetSpec;

/// The effective policy of `config`, as lines of text.
pub fn effective_policy(config: &Config) -> String {
    let mut out = String::new();
    let rules = config.policy.network_rules();
    let list = |specs: &[NetSpec]| {
        if specs.is_empty() {
            "none".to_string()
        } else {
            specs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    let _ = writeln!(out, "Addresses denied: {} (allowed: {})", list(rules.denied()), list(rules.allowed()));
    let _ = writeln!(out, "Unrouted traffic: {}", unrouted(config));
    let _ = writeln!(out, "Callers: {}", callers(&config.callers));
    if let Some(audit) = &config.audit {
        let to = audit.file.as_ref().map_or_else(|| "stdout".to_string(), |f| f.display().to_string());
        let _ = writeln!(out, "Audit log: {to}");
    }
    out.push('\n');

    let mut rows = vec![["CALLER", "ROUTE", "REACHES", "TOKENS", "WRITTEN IN", "RATE LIMIT"].map(String::from)];
    let names: Vec<Option<&CallerDefinition>> =
        if config.callers.is_empty() { vec![None] } else { config.callers.iter().map(Some).collect() };
    for caller in names {
        let who = caller.map_or_else(|| "(anyone)".to_string(), |c| c.name.clone());
        let caller_limit = caller.and_then(|c| c.rate_limit).map(|l| format!("caller {l}"));
        for route in &config.routes {
            let allowed =
                route.policy.callers.as_ref().is_none_or(|list| caller.is_some_and(|c| list.contains(&c.name)));
            if !allowed {
                continue;
            }
            let limits: Vec<String> =
                route.policy.rate_limit.map(|l| format!("route {l}")).into_iter().chain(caller_limit.clone()).collect();
            rows.push([
                who.clone(),
                route.name.clone(),
                reaches(route),
                tokens(route),
                written_in(route),
                if limits.is_empty() { "-".into() } else { limits.join("; ") },
            ]);
        }
        if config.proxy.unmatched == Unmatched::Forward {
            rows.push([
                who.clone(),
                "(unrouted)".into(),
                unrouted_hosts(config),
                "-".into(),
                "-".into(),
                caller_limit.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table(&rows, &mut out);
    out
}

fn unrouted(config: &Config) -> String {
    if config.proxy.unmatched == Unmatched::Deny {
        return "denied ([proxy] unmatched = \"deny\")".into();
    }
    format!("forwarded untouched, to {}", unrouted_hosts(config))
}

fn unrouted_hosts(config: &Config) -> String {
    let join =
        |hosts: &[crate::routes::HostPattern]| hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let p = &config.policy;
    match (p.allow_hosts.is_empty(), p.deny_hosts.is_empty()) {
        (true, true) => "any host".into(),
        (false, true) => join(&p.allow_hosts),
        (true, false) => format!("any host but {}", join(&p.deny_hosts)),
        (false, false) => format!("{} but not {}", join(&p.allow_hosts), join(&p.deny_hosts)),
    }
}

fn callers(list: &[CallerDefinition]) -> String {
    if list.is_empty() {
        return "none configured: every client that can connect may use every route".into();
    }
    let described: Vec<String> = list
        .iter()
        .map(|c| {
            let mut ways = Vec::new();
            if c.secret_digest.is_some() {
                ways.push("Proxy-Authorization".to_string());
            }
            match (c.uid, c.gid) {
                (Some(u), Some(g)) => ways.push(format!("uid {u} gid {g}")),
                (Some(u), None) => ways.push(format!("uid {u}")),
                (None, Some(g)) => ways.push(format!("gid {g}")),
                (None, None) => {}
            }
            if !c.sources.is_empty() {
                let sources: Vec<String> = c.sources.iter().map(ToString::to_string).collect();
                ways.push(format!("from {}", sources.join(", ")));
            }
            format!("{} ({})", c.name, ways.join(", "))
        })
        .collect();
    described.join("; ")
}

fn reaches(route: &RouteDefinition) -> String {
    let port = route.port.filter(|p| *p != route.scheme.default_port()).map(|p| format!(":{p}")).unwrap_or_default();
    let mut text = format!("{}://{}{port}{}", route.scheme, route.host, route.path_prefix);
    if !route.methods.is_empty() {
        let methods: Vec<&str> = route.methods.iter().map(http::Method::as_str).collect();
        let _ = write!(text, " {}", methods.join(","));
    }
    if route.upstream_tls {
        text.push_str(" (upstream TLS)");
    }
    if !route.policy.allow_networks.is_empty() {
        let nets: Vec<String> = route.policy.allow_networks.iter().map(ToString::to_string).collect();
        let _ = write!(text, " (may reach {})", nets.join(", "));
    }
    text
}

/// The route's tokens, each with the aliases it is written as.
fn tokens(route: &RouteDefinition) -> String {
    let mut by_token: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (placeholder, token) in &route.bindings {
        let aliases = by_token.entry(token).or_default();
        if placeholder != token {
            aliases.push(placeholder);
        }
    }
    if by_token.is_empty() {
        return "-".into();
    }
    let listed: Vec<String> = by_token
        .into_iter()
        .map(
            |(token, aliases)| {
                if aliases.is_empty() {
                    token.to_string()
                } else {
                    format!("{token} (as {})", aliases.join(", "))
                }
            },
        )
        .collect();
    listed.join(", ")
}

fn written_in(route: &RouteDefinition) -> String {
    let restricted = &route.policy.substitute_in;
    let all: Vec<&String> = route.bindings.values().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    if all.is_empty() {
        return "-".into();
    }
    let places = |token: &str| match restricted.get(token) {
        None => "anywhere".to_string(),
        Some(list) => list.iter().map(Position::to_string).collect::<Vec<_>>().join(", "),
    };
    let first = places(all[0]);
    if all.iter().all(|t| places(t) == first) {
        return first;
    }
    all.iter().map(|t| format!("{t}: {}", places(t))).collect::<Vec<_>>().join("; ")
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[[String; 6]], out: &mut String) {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn one_row_per_caller_and_route_it_may_use() {
        let text = r#"
[policy]
deny_networks = ["private"]
allow_hosts = ["*.example.com"]

[[callers]]
name = "fn-a"
key = "0123456789abcdef-a"
rate_limit = { per_second = 5 }

[[callers]]
name = "fn-b"
uid = 1000

[tokens.gh]
kind = "secret"
key = "ghp_x"

[tokens.crm]
kind = "secret"
key = "crm_x"

[[routes]]
name = "github"
host = "api.github.com"
tokens = ["gh"]
callers = ["fn-a"]
substitute_in = ["header:Authorization"]
rate_limit = { per_second = 10, burst = 20 }

[[routes]]
name = "crm"
scheme = "http"
host = "crm.internal"
port = 8080
path_prefix = "/api"
placeholders = { auth_token = "crm" }
allow_networks = ["10.1.0.0/16"]
"#;
        let config = Config::from_text(Path::new("/tmp/sidecar.toml"), text).expect("valid");
        let report = effective_policy(&config);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "Addresses denied: metadata, link_local, private (allowed: none)");
        assert_eq!(lines[1], "Unrouted traffic: forwarded untouched, to *.example.com");
        assert_eq!(lines[2], "Callers: fn-a (Proxy-Authorization); fn-b (uid 1000)");
        let rows: Vec<Vec<&str>> =
            lines[4..].iter().map(|l| l.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect()).collect();
        assert_eq!(rows[0], ["CALLER", "ROUTE", "REACHES", "TOKENS", "WRITTEN IN", "RATE LIMIT"]);
        assert_eq!(
            rows[1],
            [
                "fn-a",
                "github",
                "https://api.github.com/",
                "gh",
                "header:authorization",
                "route 10/s burst 20; caller 5/s burst 5"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "fn-a",
                "crm",
                "http://crm.internal:8080/api (may reach 10.1.0.0/16)",
                "crm (as auth_token)",
                "anywhere",
                "caller 5/s burst 5"
            ]
        );
        assert_eq!(rows[3], ["fn-a", "(unrouted)", "*.example.com", "-", "-", "caller 5/s burst 5"]);
        assert_eq!(rows[4][..2], ["fn-b", "crm"], "fn-b may not use github");
        assert_eq!(rows[5][..2], ["fn-b", "(unrouted)"]);
        assert_eq!(rows.len(), 6);
    }
}
