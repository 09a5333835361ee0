// Shared by fuzz/fuzz_targets/route_match.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// A route table built from fuzz-derived routes:
// - `RouteTable::new` fails exactly where a naive check says it must (port 0, a bad path
//   prefix, a duplicate of an earlier route), with that route's index;
// - a host pattern that `HostPattern::parse` accepts is accepted by the table too, and its
//   `Display` form parses back to the same pattern;
// - `find` and `has_host` agree with a naive reference (a linear scan ranking matches by
//   exact host, wildcard suffix length, path prefix length, method list, earlier route).
//
// Input: text, one item per line, fields separated by spaces or tabs; other lines are ignored.
//   route SCHEME HOST PORT PREFIX METHODS   e.g. `route https *.Example.com - /v1/ GET,POST`
//   req SCHEME HOST PORT PATH METHOD        e.g. `req https API.example.com. 443 /v1/x?y GET`
// SCHEME is http or https; PORT is a number or `-` (the scheme's default); METHODS is a comma
// list or `-` (any). In a request, PATH `~` stands for the empty path.

use std::cmp::Reverse;

use http::Method;
use token_sidecar::routes::{HostPattern, RouteError, RouteSpec, RouteTable, Scheme};

const MAX_ROUTES: usize = 200;
const MAX_REQUESTS: usize = 200;

#[derive(Debug)]
struct Req {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
    method: Method,
}

fn scheme(s: &str) -> Option<Scheme> {
    match s {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => None,
    }
}

fn parse_route(fields: &[&str], value: u32) -> Option<RouteSpec<u32>> {
    let [scheme_text, host, port, prefix, methods] = fields else { return None };
    let host = match HostPattern::parse(host) {
        Ok(pattern) => pattern,
        Err(_) => return None,
    };
    // Display and parse agree, so a pattern survives being written back into a config.
    let shown = host.to_string();
    let reparsed = HostPattern::parse(&shown).unwrap_or_else(|e| panic!("{shown:?} does not parse back: {e}"));
    assert_eq!(reparsed, host, "{shown:?}");
    let port = match *port {
        "-" => None,
        p => Some(p.parse::<u16>().ok()?),
    };
    let methods = match *methods {
        "-" => Vec::new(),
        list => list.split(',').map(|m| Method::from_bytes(m.as_bytes()).ok()).collect::<Option<Vec<_>>>()?,
    };
    Some(RouteSpec { scheme: scheme(scheme_text)?, host, port, path_prefix: (*prefix).to_owned(), methods, value })
}

fn parse_req(fields: &[&str]) -> Option<Req> {
    let [scheme_text, host, port, path, method] = fields else { return None };
    Some(Req {
        scheme: scheme(scheme_text)?,
        host: (*host).to_owned(),
        port: port.parse().ok()?,
        path: if *path == "~" { String::new() } else { (*path).to_owned() },
        method: Method::from_bytes(method.as_bytes()).ok()?,
    })
}

fn parse(text: &str) -> (Vec<RouteSpec<u32>>, Vec<Req>) {
    let mut specs = Vec::new();
    let mut requests = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
        match fields.split_first() {
            Some((&"route", rest)) if specs.len() < MAX_ROUTES => {
                let value = u32::try_from(specs.len()).unwrap_or(u32::MAX);
                specs.extend(parse_route(rest, value));
            }
            Some((&"req", rest)) if requests.len() < MAX_REQUESTS => requests.extend(parse_req(rest)),
            _ => {}
        }
    }
    (specs, requests)
}

fn port_of(s: &RouteSpec<u32>) -> u16 {
    s.port.unwrap_or(s.scheme.default_port())
}

fn prefix_is_valid(prefix: &str) -> bool {
    prefix.starts_with('/')
        && !prefix.contains(['?', '#'])
        && !prefix.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

/// The error `RouteTable::new` must report: the first route that is invalid or repeats an
/// earlier one (same scheme, host, port, prefix and method set).
fn naive_error(specs: &[RouteSpec<u32>]) -> Option<(usize, &'static str, Option<usize>)> {
    let key = |s: &RouteSpec<u32>| {
        let mut methods: Vec<&str> = s.methods.iter().map(Method::as_str).collect();
        methods.sort_unstable();
        methods.dedup();
        let host = match &s.host {
            HostPattern::Exact(h) => format!("={}", h.to_ascii_lowercase()),
            HostPattern::Suffix(h) => format!("*{}", h.to_ascii_lowercase()),
        };
        (s.scheme, port_of(s), host, s.path_prefix.clone(), methods.join(","))
    };
    for (i, s) in specs.iter().enumerate() {
        if s.port == Some(0) {
            return Some((i, "port", None));
        }
        if !prefix_is_valid(&s.path_prefix) {
            return Some((i, "prefix", None));
        }
        if let Some(j) = (0..i).find(|&j| key(&specs[j]) == key(s)) {
            return Some((i, "duplicate", Some(j)));
        }
    }
    None
}

fn naive_host_rank(pattern: &HostPattern, host: &str) -> Option<usize> {
    match pattern {
        HostPattern::Exact(h) => (h.to_ascii_lowercase() == host).then_some(usize::MAX),
        HostPattern::Suffix(s) => {
            let s = s.to_ascii_lowercase();
            host.ends_with(&format!(".{s}")).then_some(s.len())
        }
    }
}

fn naive_path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    path == prefix || (path.starts_with(prefix) && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
}

fn naive_find<'a>(specs: &'a [RouteSpec<u32>], r: &Req) -> Option<&'a u32> {
    let host = r.host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.scheme == r.scheme && port_of(s) == r.port)
        .filter(|(_, s)| s.methods.is_empty() || s.methods.contains(&r.method))
        .filter(|(_, s)| naive_path_matches(&s.path_prefix, &r.path))
        .filter_map(|(i, s)| {
            let rank = naive_host_rank(&s.host, host)?;
            Some(((rank, s.path_prefix.len(), !s.methods.is_empty(), Reverse(i)), s))
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, s)| &s.value)
}

fn naive_has_host(specs: &[RouteSpec<u32>], r: &Req) -> bool {
    let host = r.host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    specs.iter().any(|s| s.scheme == r.scheme && port_of(s) == r.port && naive_host_rank(&s.host, host).is_some())
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (specs, requests) = parse(text);
    let expected = naive_error(&specs);
    let table = match (RouteTable::new(specs.clone()), expected) {
        (Ok(table), None) => table,
        (Ok(_), Some(e)) => panic!("table accepted routes; expected error {e:?}"),
        (Err(RouteError::InvalidPort { index }), Some((i, "port", None))) if index == i => return,
        (Err(RouteError::InvalidPathPrefix { index, .. }), Some((i, "prefix", None))) if index == i => return,
        (Err(RouteError::DuplicateRoute { index, previous, .. }), Some((i, "duplicate", Some(j))))
            if index == i && previous == j =>
        {
            return
        }
        (Err(e), expected) => panic!("table error {e}; expected {expected:?}"),
    };
    assert_eq!(table.len(), specs.len());
    for r in &requests {
        let got = table.find(r.scheme, &r.host, r.port, &r.path, &r.method);
        assert_eq!(got, naive_find(&specs, r), "find {r:?}");
        assert_eq!(table.has_host(r.scheme, &r.host, r.port), naive_has_host(&specs, r), "has_host {r:?}");
    }
}
