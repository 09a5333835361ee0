//! The egress-policy parts of `sidecar.toml`: `[policy]`, `[[callers]]`, `[audit]`, and the
//! policy keys of a route (`callers`, `allow_networks`, `substitute_in`, `rate_limit`).
//!
//! Plain checked data; [`crate::policy`] compiles it for the request path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diagnostic::Collector;
use super::raw::{RawCaller, RawConfig, RawRateLimit, RawRoute};
use super::values::parse_size;
use crate::policy::networks::{Cidr, NetSpec, NetworkRules};
use crate::routes::HostPattern;
use crate::substitute::is_valid_name;

/// `[policy]` after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySettings {
    /// Denied besides the always-denied `metadata` and `link_local`.
    pub deny_networks: Vec<NetSpec>,
    /// Exceptions to the denials.
    pub allow_networks: Vec<NetSpec>,
    /// Unrouted traffic may only go to these hosts (when any are listed).
    pub allow_hosts: Vec<HostPattern>,
    /// Unrouted traffic never goes to these hosts.
    pub deny_hosts: Vec<HostPattern>,
}

impl PolicySettings {
    /// The address rules every upstream connection is checked against.
    pub fn network_rules(&self) -> NetworkRules {
        NetworkRules::new(&self.deny_networks, &self.allow_networks)
    }
}

/// A token bucket: `per_second` requests on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s burst {}", self.per_second, self.burst)
    }
}

/// One `[[callers]]` entry. Only a digest of its secret is kept.
#[derive(Clone, PartialEq)]
pub struct CallerDefinition {
    pub name: String,
    /// SHA-256 of the `Proxy-Authorization` secret.
    pub secret_digest: Option<[u8; 32]>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Source networks on the reverse listeners.
    pub sources: Vec<Cidr>,
    pub rate_limit: Option<RateLimit>,
}

impl std::fmt::Debug for CallerDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerDefinition")
            .field("name", &self.name)
            .field("secret", &self.secret_digest.map(|_| "<redacted>"))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("sources", &self.sources)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// `[audit]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The JSON-lines file; standard output when `None`.
    pub file: Option<PathBuf>,
    /// The file is rotated before it would grow beyond this.
    pub max_size: u64,
    /// Rotated files kept (`FILE.1` newest ... `FILE.N`).
    pub max_files: u32,
    /// Lines queued for the writer; beyond it lines are dropped and counted.
    pub buffer: usize,
}

/// A place in a request a token may be written (`substitute_in`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// Any request header.
    Headers,
    /// One header, by lowercase name.
    Header(http::HeaderName),
    Query,
    Path,
    /// Anywhere in the body, and its trailers.
    Body,
    /// The string at this JSON Pointer of a JSON body.
    Json(String),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Headers => f.write_str("headers"),
            Position::Header(name) => write!(f, "header:{name}"),
            Position::Query => f.write_str("query"),
            Position::Path => f.write_str("path"),
            Position::Body => f.write_str("body"),
            Position::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

impl Position {
    /// Parses one `substitute_in` entry.
    pub fn parse(text: &str) -> Result<Position, String> {
        match text {
            "headers" => return Ok(Position::Headers),
            "query" => return Ok(Position::Query),
            "path" => return Ok(Position::Path),
            "body" => return Ok(Position::Body),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .map(Position::Header)
                .map_err(|_| format!("{name:?} is not a valid header name"));
        }
        if let Some(pointer) = text.strip_prefix("json:") {
            return check_pointer(pointer).map(|()| Position::Json(pointer.to_string()));
        }
        Err(format!("unknown place {text:?} (expected headers, header:NAME, query, path, body or json:/POINTER)"))
    }
}

/// RFC 6901: empty (the whole document), or `/`-separated tokens where `~` is only `~0`/`~1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!("JSON Pointer {pointer:?} must start with '/' (RFC 6901), e.g. json:/token"));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("JSON Pointer {pointer:?}: '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')"));
        }
    }
    Ok(())
}

/// The policy keys of one route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePolicySettings {
    /// Callers that may use the route; `None`: every caller.
    pub callers: Option<Vec<String>>,
    pub allow_networks: Vec<NetSpec>,
    /// Token name -> where it may be written; a token not listed may be written anywhere.
    pub substitute_in: BTreeMap<String, Vec<Position>>,
    pub rate_limit: Option<RateLimit>,
}

/// Everything `[policy]`, `[[callers]]` and `[audit]` hold.
pub(super) struct Checked {
    pub policy: PolicySettings,
    pub callers: Vec<CallerDefinition>,
    pub audit: Option<AuditSettings>,
}

/// Checks `[policy]`, `[[callers]]` and `[audit]`, adding caller key files to `watched`.
pub(super) fn check(raw: &RawConfig, base_dir: &Path, c: &mut Collector<'_>, watched: &mut Vec<PathBuf>) -> Checked {
    let p = &raw.policy;
    let policy = PolicySettings {
        deny_networks: networks(&p.deny_networks, "policy.deny_networks", c),
        allow_networks: networks(&p.allow_networks, "policy.allow_networks", c),
        allow_hosts: hosts(&p.allow_hosts, "policy.allow_hosts", c),
        deny_hosts: hosts(&p.deny_hosts, "policy.deny_hosts", c),
    };
    let callers = callers(raw, base_dir, c, watched);
    let audit = raw.audit.as_ref().map(|a| audit(a, base_dir, c));
    Checked { policy, callers, audit }
}

/// Parses a list of network classes and CIDRs.
pub(super) fn networks(list: &[Spanned<String>], key: &str, c: &mut Collector<'_>) -> Vec<NetSpec> {
    list.iter().filter_map(|s| NetSpec::parse(s.get_ref()).map_err(|e| c.error(s.span(), key, e)).ok()).collect()
}

fn hosts(list: &[Spanned<String>], key: &str, c: &mut Collector<'_>) -> Vec<HostPattern> {
    list.iter()
        .filter_map(|s| HostPattern::parse(s.get_ref()).map_err(|e| c.error(s.span(), key, e.to_string())).ok())
        .collect()
}

fn callers(
    raw: &RawConfig,
    base_dir: &Path,
    c: &mut Collector<'_>,
    watched: &mut Vec<PathBuf>,
) -> Vec<CallerDefinition> {
    let mut out: Vec<CallerDefinition> = Vec::new();
    for (i, spanned) in raw.callers.iter().enumerate() {
        let r = spanned.get_ref();
        let prefix = format!("callers[{i}]");
        let name = r.name.get_ref();
        if !is_valid_name(name) {
            c.error(r.name.span(), format!("{prefix}.name"), "a caller name must be 1 to 64 of A-Z a-z 0-9 _ . -");
        } else if out.iter().any(|o| &o.name == name) {
            c.error(r.name.span(), format!("{prefix}.name"), format!("a second caller named {name:?}"));
        }
        let secret_digest = caller_secret(r, &prefix, base_dir, c, watched);
        let id = |v: &Option<Spanned<i64>>, key: &str, c: &mut Collector<'_>| {
            v.as_ref().and_then(|n| {
                u32::try_from(*n.get_ref())
                    .map_err(|_| c.error(n.span(), format!("{prefix}.{key}"), "must be a number from 0 to 4294967295"))
                    .ok()
            })
        };
        let uid = id(&r.uid, "uid", c);
        let gid = id(&r.gid, "gid", c);
        let sources: Vec<Cidr> = r
            .sources
            .iter()
            .filter_map(|s| {
                Cidr::parse(s.get_ref()).map_err(|e| c.error(s.span(), format!("{prefix}.sources"), e)).ok()
            })
            .collect();
        let identified = r.key.is_some() || r.key_file.is_some() || r.key_env.is_some();
        if !identified && r.uid.is_none() && r.gid.is_none() && r.sources.is_empty() {
            c.error(
                spanned.span(),
                &prefix,
                "a caller needs a way to be recognised: a secret (key_file, key_env or key) for Proxy-Authorization, uid/gid for the Unix-socket listener, or sources for the reverse listeners",
            );
        }
        let rate_limit = r.rate_limit.as_ref().and_then(|l| rate_limit(l, &format!("{prefix}.rate_limit"), c));
        let caller = CallerDefinition { name: name.clone(), secret_digest, uid, gid, sources, rate_limit };
        report_overlaps(&caller, &out, spanned, &prefix, c);
        out.push(caller);
    }
    out
}

/// Two callers must never match the same request: the secret, the peer and the source
/// address each name at most one caller.
fn report_overlaps(
    caller: &CallerDefinition,
    earlier: &[CallerDefinition],
    spanned: &Spanned<RawCaller>,
    prefix: &str,
    c: &mut Collector<'_>,
) {
    let r = spanned.get_ref();
    for other in earlier {
        if caller.secret_digest.is_some() && caller.secret_digest == other.secret_digest {
            let span =
                [&r.key, &r.key_file, &r.key_env].into_iter().flatten().next().map_or(spanned.span(), Spanned::span);
            c.error(
                span,
                prefix,
                format!("has the same secret as caller {:?}; every caller needs its own", other.name),
            );
        }
        let same = |a: Option<u32>, b: Option<u32>| a.is_none() || b.is_none() || a == b;
        let has_peer = |d: &CallerDefinition| d.uid.is_some() || d.gid.is_some();
        if has_peer(caller) && has_peer(other) && same(caller.uid, other.uid) && same(caller.gid, other.gid) {
            c.error(spanned.span(), prefix, format!("matches the same Unix-socket peers as caller {:?}", other.name));
        }
        for mine in &caller.sources {
            if let Some(theirs) = other.sources.iter().find(|t| overlap(mine, t)) {
                c.error(
                    spanned.span(),
                    format!("{prefix}.sources"),
                    format!("{mine} overlaps {theirs} of caller {:?}", other.name),
                );
            }
        }
    }
}

/// Whether two ranges share an address: one holds the other's first address.
fn overlap(a: &Cidr, b: &Cidr) -> bool {
    a.contains(b.first()) || b.contains(a.first())
}

/// The digest of the caller's secret, read from exactly one of `key`, `key_file`, `key_env`.
fn caller_secret(
    r: &RawCaller,
    prefix: &str,
    base_dir: &Path,
    c: &mut Collector<'_>,
    watched: &mut Vec<PathBuf>,
) -> Option<[u8; 32]> {
    let given: Vec<&Spanned<String>> = [&r.key, &r.key_file, &r.key_env].into_iter().flatten().collect();
    let source = match given.as_slice() {
        [] => return None,
        [one] => *one,
        [_, second, ..] => {
            c.error(second.span(), prefix, "more than one of key, key_file, key_env is set; keep exactly one");
            return None;
        }
    };
    let (bytes, key) = if let Some(k) = &r.key {
        (Some(k.get_ref().as_bytes().to_vec()), "key")
    } else if let Some(f) = &r.key_file {
        let path = base_dir.join(f.get_ref());
        watched.push(path.clone());
        let read = std::fs::read(&path).map(|mut bytes| {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            bytes
        });
        match read {
            Ok(bytes) => (Some(bytes), "key_file"),
            Err(e) => {
                c.error(f.span(), format!("{prefix}.key_file"), format!("cannot read {}: {e}", path.display()));
                (None, "key_file")
            }
        }
    } else {
        let var = source.get_ref();
        match std::env::var_os(var) {
            Some(v) if !v.is_empty() => (Some(v.into_encoded_bytes()), "key_env"),
            _ => {
                c.error(
                    source.span(),
                    format!("{prefix}.key_env"),
                    format!("environment variable {var} is not set or empty"),
                );
                (None, "key_env")
            }
        }
    };
    let bytes = bytes?;
    if bytes.len() < MIN_SECRET || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        c.error(
            source.span(),
            format!("{prefix}.{key}"),
            format!(
                "a caller secret must be at least {MIN_SECRET} printable ASCII characters without spaces (try: openssl rand -hex 32)"
            ),
        );
        return None;
    }
    Some(crate::policy::callers::digest(&bytes))
}

/// The shortest caller secret accepted: guessing one must be hopeless.
pub const MIN_SECRET: usize = 16;

fn audit(spanned: &Spanned<super::raw::RawAudit>, base_dir: &Path, c: &mut Collector<'_>) -> AuditSettings {
    let a = spanned.get_ref();
    let max_size = match &a.max_size {
        None => 100 << 20,
        Some(s) => match parse_size(s.get_ref()) {
            Ok(n) if n >= 4096 => n,
            Ok(_) => {
                c.error(s.span(), "audit.max_size", "must be at least 4KiB");
                100 << 20
            }
            Err(e) => {
                c.error(s.span(), "audit.max_size", e);
                100 << 20
            }
        },
    };
    let max_files = a.max_files.as_ref().map_or(5, |n| match u32::try_from(*n.get_ref()) {
        Ok(v) if v <= 100 => v,
        _ => {
            c.error(n.span(), "audit.max_files", "must be a number from 0 to 100");
            5
        }
    });
    let buffer = a.buffer.as_ref().map_or(10_000, |n| match usize::try_from(*n.get_ref()) {
        Ok(v) if (1..=1_000_000).contains(&v) => v,
        _ => {
            c.error(n.span(), "audit.buffer", "must be a number from 1 to 1000000");
            10_000
        }
    });
    let file = a.file.as_ref().map(|f| base_dir.join(f.get_ref()));
    AuditSettings { file, max_size, max_files, buffer }
}

fn rate_limit(spanned: &Spanned<RawRateLimit>, key: &str, c: &mut Collector<'_>) -> Option<RateLimit> {
    let r = spanned.get_ref();
    let per_second = *r.per_second.get_ref();
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1e9) {
        c.error(
            r.per_second.span(),
            format!("{key}.per_second"),
            "must be a number above zero (0.5 is one request every two seconds)",
        );
        return None;
    }
    let burst = match &r.burst {
        None => per_second.ceil().max(1.0) as u32,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                c.error(b.span(), format!("{key}.burst"), "must be a whole number above zero");
                return None;
            }
        },
    };
    Some(RateLimit { per_second, burst })
}

/// Checks the policy keys of route `prefix`; `bindings` maps its placeholder names to tokens.
pub(super) fn route(
    prefix: &str,
    r: &RawRoute,
    bindings: &BTreeMap<String, String>,
    callers: &[Spanned<RawCaller>],
    c: &mut Collector<'_>,
) -> RoutePolicySettings {
    let allowed_callers = r.callers.as_ref().map(|list| {
        let key = format!("{prefix}.callers");
        if list.get_ref().is_empty() {
            c.error(list.span(), &key, "an empty list lets no caller use the route; remove the route instead");
        }
        let known: BTreeSet<&str> = callers.iter().map(|c| c.get_ref().name.get_ref().as_str()).collect();
        for name in list.get_ref() {
            if !known.contains(name.get_ref().as_str()) {
                let defined = if known.is_empty() {
                    "no [[callers]] are defined".to_string()
                } else {
                    format!("defined: {}", known.iter().copied().collect::<Vec<_>>().join(", "))
                };
                c.error(name.span(), &key, format!("no caller named {:?} ({defined})", name.get_ref()));
            }
        }
        list.get_ref().iter().map(|n| n.get_ref().clone()).collect()
    });
    RoutePolicySettings {
        callers: allowed_callers,
        allow_networks: networks(&r.allow_networks, &format!("{prefix}.allow_networks"), c),
        substitute_in: r.substitute_in.as_ref().map(|s| substitute_in(prefix, s, bindings, c)).unwrap_or_default(),
        rate_limit: r.rate_limit.as_ref().and_then(|l| rate_limit(l, &format!("{prefix}.rate_limit"), c)),
    }
}

/// `substitute_in = ["header:Authorization"]` (every token of the route) or
/// `substitute_in = { auth_token = ["json:/token"] }` (by placeholder name).
fn substitute_in(
    prefix: &str,
    spanned: &Spanned<toml::Value>,
    bindings: &BTreeMap<String, String>,
    c: &mut Collector<'_>,
) -> BTreeMap<String, Vec<Position>> {
    let key = format!("{prefix}.substitute_in");
    let mut out: BTreeMap<String, Vec<Position>> = BTreeMap::new();
    match spanned.get_ref() {
        toml::Value::Array(list) => {
            if let Some(positions) = positions(list, &key, spanned.span(), c) {
                for token in bindings.values() {
                    out.insert(token.clone(), positions.clone());
                }
            }
        }
        toml::Value::Table(table) => {
            for (placeholder, list) in table {
                let entry = format!("{key}.{placeholder}");
                let Some(token) = bindings.get(placeholder) else {
                    c.error(
                        spanned.span(),
                        &entry,
                        format!("{placeholder:?} is not a token or alias this route binds"),
                    );
                    continue;
                };
                let Some(list) = list.as_array() else {
                    c.error(spanned.span(), &entry, "expected a list such as [\"header:Authorization\"]");
                    continue;
                };
                let Some(positions) = positions(list, &entry, spanned.span(), c) else { continue };
                if out.insert(token.clone(), positions).is_some() {
                    c.error(spanned.span(), &entry, format!("token {token:?} is already listed under another name"));
                }
            }
        }
        _ => c.error(
            spanned.span(),
            &key,
            "expected a list such as [\"header:Authorization\"] or a table of lists by placeholder name",
        ),
    }
    out
}

fn positions(
    list: &[toml::Value],
    key: &str,
    span: std::ops::Range<usize>,
    c: &mut Collector<'_>,
) -> Option<Vec<Position>> {
    if list.is_empty() {
        c.error(span, key, "an empty list means the token can never be written; unbind it instead");
        return None;
    }
    let mut out = Vec::new();
    let mut valid = true;
    for value in list {
        match value.as_str().map(Position::parse) {
            Some(Ok(p)) => {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            Some(Err(e)) => {
                valid = false;
                c.error(span.clone(), key, e);
            }
            None => {
                valid = false;
                c.error(span.clone(), key, format!("expected a string, found {value}"));
            }
        }
    }
    valid.then_some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(Position::parse("headers"), Ok(Position::Headers));
        assert_eq!(Position::parse("header:Authorization"), Ok(Position::Header(http::header::AUTHORIZATION)));
        assert_eq!(Position::parse("json:/a/b~1c"), Ok(Position::Json("/a/b~1c".into())));
        assert_eq!(Position::parse("json:"), Ok(Position::Json(String::new())));
        assert!(Position::parse("json:token").unwrap_err().contains("must start with '/'"));
        assert!(Position::parse("json:/a~2").unwrap_err().contains("'~' must be followed by 0 or 1"));
        assert!(Position::parse("header:bad name").is_err());
        assert!(Position::parse("cookies").unwrap_err().contains("expected headers, header:NAME"));
        assert_eq!(Position::Header(http::header::AUTHORIZATION).to_string(), "header:authorization");
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::config::Config::from_text(Path::new("/tmp/sidecar.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|d| format!("{}: {}", d.key_path, d.message)).collect(),
        }
    }

    #[test]
    fn substitute_in_by_placeholder_is_keyed_by_token() {
        let base = "[tokens.t]\nkind = \"secret\"\nkey = \"v\"\n[[routes]]\nhost = \"a.example\"\nplaceholders = { auth = \"t\" }\n";
        let ok = format!("{base}substitute_in = {{ auth = [\"header:Authorization\"] }}\n");
        let config = crate::config::Config::from_text(Path::new("/tmp/sidecar.toml"), &ok).expect("valid");
        // The alias restricts the token itself, under every name it is written as.
        assert_eq!(config.routes[0].policy.substitute_in["t"], [Position::Header(http::header::AUTHORIZATION)]);
        let twice = format!("{base}substitute_in = {{ auth = [\"query\"], t = [\"path\"] }}\n");
        assert_eq!(errors(&twice), ["routes[0].substitute_in.t: token \"t\" is already listed under another name"]);
        let unbound = format!("{base}substitute_in = {{ other = [\"query\"] }}\n");
        assert_eq!(
            errors(&unbound),
            ["routes[0].substitute_in.other: \"other\" is not a token or alias this route binds"]
        );
        let empty = format!("{base}substitute_in = []\n");
        assert!(errors(&empty)[0].contains("an empty list means the token can never be written"));
        let shape = format!("{base}substitute_in = \"headers\"\n");
        assert!(errors(&shape)[0].contains("expected a list such as"));
    }

    #[test]
    fn callers_need_distinct_secrets_and_sources() {
        let text = "[[callers]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nsources = [\"10.0.0.0/8\"]\n\
                    [[callers]]\nname = \"b\"\nkey = \"0123456789abcdef\"\nsources = [\"10.1.0.0/16\"]\n\
                    [[callers]]\nname = \"a\"\ngid = 5\n";
        let found = errors(text);
        assert!(found.iter().any(|e| e.contains("has the same secret as caller \"a\"")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("10.1.0.0/16 overlaps 10.0.0.0/8 of caller \"a\"")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("a second caller named \"a\"")), "{found:?}");
        assert!(!found.iter().any(|e| e.contains("0123456789abcdef")), "a secret in a message: {found:?}");
    }

    #[test]
    fn overlapping_sources_are_found() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert!(overlap(&c("10.0.0.0/8"), &c("10.1.2.3")));
        assert!(overlap(&c("10.1.2.3"), &c("10.0.0.0/8")));
        assert!(!overlap(&c("10.0.0.0/8"), &c("11.0.0.0/8")));
        assert!(!overlap(&c("::1"), &c("127.0.0.1")));
    }
}
