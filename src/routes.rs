//! Route matching: deciding which configured route (and so which token) an
//! outbound request belongs to.
//!
//! The table is generic over the route payload `T` so this module knows
//! nothing about tokens; callers store whatever they need to inject.
//!
//! # Why it is built this way
//!
//! The proxy consults the table on every request (and on every `CONNECT`), so
//! all parsing, normalisation and validation happens once in
//! [`RouteTable::new`], and lookups are hash probes plus a scan of a short,
//! pre-sorted list:
//!
//! * routes are grouped by `(scheme, port)`, then by normalised host;
//! * exact hosts are one hash probe;
//! * wildcard suffixes are found by probing each label suffix of the request
//!   host, longest first, so the first bucket that yields a match is already
//!   the most specific wildcard;
//! * inside a bucket routes are sorted most-specific first, so the first match
//!   wins; buckets holding many routes additionally index them in a trie over
//!   path segments, walked once along the request path.
//!
//! Lookups never allocate unless the request host is both longer than 256
//! bytes and contains uppercase letters, so the cost does not grow with the
//! number of routes.
//!
//! Paths are matched as given: no percent-decoding and no dot-segment removal.
//! Callers that need `/v1/../admin` treated as `/admin` must normalise before
//! calling [`RouteTable::find`].

use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::str::FromStr;

use http::Method;

mod prefix_trie;
use prefix_trie::PrefixTrie;

/// Route tables are built once from the config and only looked up afterwards, so a fast
/// non-keyed hash is safe here: requests cannot add keys to collide with.
type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Longest DNS name (without the trailing dot) a route may name.
const MAX_HOST_LEN: usize = 253;
/// Longest single DNS label.
const MAX_LABEL_LEN: usize = 63;
/// Request hosts up to this length are lowercased in a stack buffer.
const HOST_BUF_LEN: usize = 256;
/// Buckets with more routes than this also get a path-prefix trie, so a host
/// with thousands of prefixes is not scanned linearly.
const PREFIX_INDEX_THRESHOLD: usize = 8;

/// The scheme a request uses, as seen by the proxy.
///
/// Routes are scheme-specific so that a token meant for an HTTPS API is never
/// attached to a plaintext request to the same host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plaintext HTTP.
    Http,
    /// HTTP over TLS (intercepted `CONNECT` tunnels).
    Https,
}

impl Scheme {
    /// The port implied when a route does not name one (80 or 443), so routes
    /// can be written without repeating the obvious.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a route names its host.
///
/// Kept as a parsed value rather than a string so that the wildcard form is
/// explicit and validated once; use [`HostPattern::parse`] to build one from
/// configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host, e.g. `api.example.com` (or an IPv6 literal such as
    /// `[::1]`, bracketed as `http::Uri::host` returns it).
    Exact(String),
    /// Any host strictly below this suffix: `Suffix("example.com")`, written
    /// `*.example.com`, matches `a.example.com` and `a.b.example.com` but not
    /// `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.com`.
    ///
    /// The result is lowercased and loses one trailing dot, because hosts are
    /// case-insensitive and `example.com.` names the same host. Rejected:
    /// empty input, a bare `*`, `*` anywhere except a leading `*.`, ports,
    /// non-ASCII (use punycode), empty or over-long labels, and wildcard
    /// suffixes ending in a numeric label (they would match IP addresses).
    pub fn parse(pattern: &str) -> Result<Self, RouteError> {
        Self::parse_inner(pattern)
            .map_err(|reason| RouteError::InvalidHostPattern { pattern: pattern.to_owned(), reason })
    }

    fn parse_inner(pattern: &str) -> Result<Self, &'static str> {
        if pattern == "*" || pattern == "*." {
            return Err("a bare '*' would match every host; name a suffix such as \"*.example.com\"");
        }
        match pattern.strip_prefix("*.") {
            Some(suffix) => normalize_host(suffix, true).map(HostPattern::Suffix),
            None => normalize_host(pattern, false).map(HostPattern::Exact),
        }
    }

    /// Re-validates and normalises a pattern that may have been constructed
    /// directly (the variants are public). Returns `(is_wildcard, host)`.
    fn normalized(&self) -> Result<(bool, String), &'static str> {
        match self {
            HostPattern::Exact(host) => normalize_host(host, false).map(|h| (false, h)),
            HostPattern::Suffix(suffix) => normalize_host(suffix, true).map(|h| (true, h)),
        }
    }
}

impl FromStr for HostPattern {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The canonical form of a host a client asked for (lowercase, without one trailing dot),
/// or why it names nothing a route could match: empty labels (`x..example`, `.example`),
/// characters outside DNS names, malformed IPv6 literals. The same rules as route hosts, so
/// what a request names and what a route binds are compared in one spelling.
pub fn canonical_host(raw: &str) -> Result<String, &'static str> {
    // Every request asks this once; nearly all name their host canonically already.
    if is_canonical_name(raw) {
        return Ok(raw.to_owned());
    }
    normalize_host(raw, false)
}

/// Whether `raw` is a host [`normalize_host`] would accept and return unchanged, judged in
/// one pass over its bytes: lowercase DNS labels (letters, digits, '-', '_') of 1 to 63
/// bytes, no trailing dot, at most 253 bytes. Anything else takes the full validation.
fn is_canonical_name(raw: &str) -> bool {
    if raw.len() > MAX_HOST_LEN {
        return false;
    }
    let mut label = 0usize;
    for &b in raw.as_bytes() {
        match b {
            b'.' if label > 0 => label = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' if label < MAX_LABEL_LEN => label += 1,
            _ => return false,
        }
    }
    label > 0
}

/// Validates a host (or wildcard suffix without its `*.`) and returns its
/// canonical form: lowercase, without one trailing dot.
fn normalize_host(raw: &str, wildcard: bool) -> Result<String, &'static str> {
    if raw.contains('*') {
        return Err("'*' is only allowed as a leading \"*.\" label, e.g. \"*.example.com\"");
    }
    let host = raw.strip_suffix('.').unwrap_or(raw);
    if host.is_empty() {
        return Err("host is empty");
    }
    if !host.is_ascii() {
        return Err("host must be ASCII; write internationalized names in punycode (xn--) form");
    }
    if host.len() > MAX_HOST_LEN {
        return Err("host is longer than 253 bytes");
    }
    let host = host.to_ascii_lowercase();

    if host.starts_with('[') {
        if wildcard {
            return Err("a wildcard cannot cover an IPv6 literal");
        }
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        return match inner {
            Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_ok() => Ok(host),
            _ => Err("malformed IPv6 literal; expected a bracketed address such as \"[::1]\""),
        };
    }
    if host.contains(':') {
        return Err("host must not contain ':'; set the route's port field instead, and write IPv6 literals in brackets (\"[::1]\")");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("host has an empty label (leading or doubled '.')");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("host has a label longer than 63 bytes");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("host may only contain letters, digits, '-', '_' and '.'");
        }
    }
    if wildcard && host.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("a wildcard suffix cannot end in a numeric label; it would match IP addresses");
    }
    Ok(host)
}

/// Checks a route's path prefix; returns why it is unusable.
fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if !prefix.starts_with('/') {
        return Err("must start with '/' (use \"/\" to match every path)");
    }
    if prefix.contains(['?', '#']) {
        return Err("must not contain '?' or '#'; prefixes match the path only, not the query");
    }
    if prefix.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

/// One route as configured: where it applies and the payload it yields.
///
/// Plain data so configuration loaders can build it however they like; all
/// checking happens in [`RouteTable::new`], which reports the route's index.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// The request scheme the route applies to.
    pub scheme: Scheme,
    /// The host, or wildcard host suffix, the route applies to.
    pub host: HostPattern,
    /// The destination port; `None` means the scheme's default port.
    pub port: Option<u16>,
    /// Path prefix matched on segment boundaries: `/v1` matches `/v1` and
    /// `/v1/x` but not `/v10`; a prefix ending in `/` matches anything that
    /// starts with it; `/` matches every path. Must start with `/`.
    pub path_prefix: String,
    /// Methods the route applies to; empty means any method.
    pub methods: Vec<Method>,
    /// What a match yields (e.g. which token to inject).
    pub value: T,
}

/// Why a host pattern or a route table was rejected.
///
/// Variants about a route carry its zero-based index in the list given to
/// [`RouteTable::new`], so configuration errors can be pointed at precisely.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// [`HostPattern::parse`] rejected its input.
    #[error("invalid host pattern {pattern:?}: {reason}")]
    InvalidHostPattern {
        /// The text as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route's [`HostPattern`] (possibly constructed directly) is invalid.
    #[error("route {index}: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// Index of the offending route.
        index: usize,
        /// The pattern as given, in `*.suffix` notation for wildcards.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route's path prefix is unusable.
    #[error("route {index}: invalid path prefix {prefix:?}: {reason}")]
    InvalidPathPrefix {
        /// Index of the offending route.
        index: usize,
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route names port 0, which no request can be sent to.
    #[error("route {index}: port 0 is not a valid destination port")]
    InvalidPort {
        /// Index of the offending route.
        index: usize,
    },
    /// Two routes have the same scheme, host, port, prefix and method set, so
    /// neither is more specific and which one applies would be arbitrary.
    #[error("route {index} duplicates route {previous} ({route}): same scheme, host, port, path prefix and methods")]
    DuplicateRoute {
        /// Index of the later route.
        index: usize,
        /// Index of the earlier route it duplicates.
        previous: usize,
        /// Human-readable description of the shared match criteria.
        route: String,
    },
}

/// A compiled route inside a bucket.
#[derive(Debug, Clone)]
struct Entry {
    prefix: Box<str>,
    /// Sorted and deduplicated; empty means any method.
    methods: Box<[Method]>,
    /// Index into `RouteTable::values` (the route's original index).
    route: usize,
}

impl Entry {
    fn allows(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

/// Whether `prefix` matches `path` on a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.starts_with(prefix)
        && (prefix.ends_with('/') || matches!(path.as_bytes().get(prefix.len()), None | Some(b'/' | b'?' | b'#')))
}

/// All routes for one `(scheme, port, host)` or `(scheme, port, suffix)`.
#[derive(Debug, Clone)]
struct Bucket {
    /// Most specific first: longer prefix, then (grouping equal prefixes
    /// together) method list before none, then earlier route.
    entries: Box<[Entry]>,
    /// For large buckets: the prefixes as a trie over path segments.
    trie: Option<PrefixTrie>,
}

impl Bucket {
    fn new(mut entries: Vec<Entry>, index_threshold: usize) -> Self {
        entries.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                // Different prefixes of equal length never both match a path,
                // so ordering them by text only groups equal prefixes.
                .then_with(|| a.prefix.cmp(&b.prefix))
                .then_with(|| (!b.methods.is_empty()).cmp(&!a.methods.is_empty()))
                .then_with(|| a.route.cmp(&b.route))
        });
        let trie = (entries.len() > index_threshold).then(|| {
            let mut start = 0;
            let groups = entries.chunk_by(|a, b| a.prefix == b.prefix).map(|group| {
                let range = start..start + group.len();
                start = range.end;
                (&*group[0].prefix, range)
            });
            PrefixTrie::new(groups)
        });
        Bucket { entries: entries.into_boxed_slice(), trie }
    }

    /// The most specific route in this bucket matching `path` and `method`.
    fn find(&self, path: &str, method: &Method) -> Option<usize> {
        match &self.trie {
            None => self.entries.iter().find(|e| prefix_matches(&e.prefix, path) && e.allows(method)).map(|e| e.route),
            Some(trie) => {
                trie.find(path, |range| self.entries.get(range)?.iter().find(|e| e.allows(method)).map(|e| e.route))
            }
        }
    }
}

/// All routes for one `(scheme, port)`.
#[derive(Debug, Clone, Default)]
struct Endpoint {
    exact: HashMap<Box<[u8]>, Bucket>,
    wildcard: HashMap<Box<[u8]>, Bucket>,
    /// Longest wildcard suffix, to skip probing suffixes that cannot exist.
    longest_suffix: usize,
}

impl Endpoint {
    /// Wildcard buckets whose suffix covers `host`, most specific first.
    fn wildcard_buckets<'a>(&'a self, host: &'a [u8]) -> impl Iterator<Item = &'a Bucket> + 'a {
        let candidates = if self.wildcard.is_empty() { 0 } else { host.len() };
        host.iter().take(candidates).enumerate().filter(|&(_, &b)| b == b'.').filter_map(move |(dot, _)| {
            let suffix = host.get(dot + 1..)?;
            if suffix.len() > self.longest_suffix {
                return None;
            }
            self.wildcard.get(suffix)
        })
    }

    fn find(&self, host: &[u8], path: &str, method: &Method) -> Option<usize> {
        self.exact.get(host).into_iter().chain(self.wildcard_buckets(host)).find_map(|bucket| bucket.find(path, method))
    }

    fn has_host(&self, host: &[u8]) -> bool {
        self.exact.contains_key(host) || self.wildcard_buckets(host).next().is_some()
    }
}

/// Runs `f` on the request host lowercased and without one trailing dot,
/// allocating only for absurdly long hosts that contain uppercase letters.
fn with_canonical_host<R>(host: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let bytes = host.as_bytes();
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    if !bytes.iter().any(u8::is_ascii_uppercase) {
        return f(bytes);
    }
    let mut buf = [0u8; HOST_BUF_LEN];
    match buf.get_mut(..bytes.len()) {
        Some(lower) => {
            lower.copy_from_slice(bytes);
            lower.make_ascii_lowercase();
            f(lower)
        }
        None => f(&bytes.to_ascii_lowercase()),
    }
}

/// Identity of a route for duplicate detection.
#[derive(PartialEq, Eq, Hash)]
struct RouteKey {
    scheme: Scheme,
    port: u16,
    wildcard: bool,
    host: String,
    prefix: String,
    methods: Vec<Method>,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.methods.is_empty() {
            f.write_str("any method")?;
        } else {
            for (i, m) in self.methods.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(m.as_str())?;
            }
        }
        let star = if self.wildcard { "*." } else { "" };
        write!(f, " {}://{star}{}:{}{}", self.scheme, self.host, self.port, self.prefix)
    }
}

/// Compiled routes, answering "which route does this request belong to?".
///
/// Built once from configuration (rebuild to reload) and then shared
/// read-only; lookups take `&self`, do not allocate, and cost about the same
/// for 10 routes as for 10,000.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    /// Payloads by original route index.
    values: Vec<T>,
    endpoints: HashMap<(Scheme, u16), Endpoint>,
}

impl<T> RouteTable<T> {
    /// Validates and compiles `specs`.
    ///
    /// Fails on the first invalid route (bad host, path prefix or port) or on
    /// a route that duplicates an earlier one, reporting its index; silently
    /// picking one of two identical routes would hide configuration mistakes.
    /// Method lists are treated as sets (order and repeats do not matter), and
    /// `port: None` is the same as the scheme's default port.
    pub fn new(specs: Vec<RouteSpec<T>>) -> Result<Self, RouteError> {
        Self::build(specs, PREFIX_INDEX_THRESHOLD)
    }

    fn build(specs: Vec<RouteSpec<T>>, index_threshold: usize) -> Result<Self, RouteError> {
        type Grouped = HashMap<(Scheme, u16), HashMap<(bool, String), Vec<Entry>>>;
        let mut grouped: Grouped = HashMap::default();
        let mut seen: HashMap<RouteKey, usize> = HashMap::default();
        let mut values = Vec::with_capacity(specs.len());

        for (index, spec) in specs.into_iter().enumerate() {
            let RouteSpec { scheme, host, port, path_prefix, mut methods, value } = spec;
            let (wildcard, host) = host.normalized().map_err(|reason| RouteError::InvalidHost {
                index,
                host: host.to_string(),
                reason,
            })?;
            let port = match port {
                Some(0) => return Err(RouteError::InvalidPort { index }),
                Some(port) => port,
                None => scheme.default_port(),
            };
            if let Err(reason) = validate_prefix(&path_prefix) {
                return Err(RouteError::InvalidPathPrefix { index, prefix: path_prefix, reason });
            }
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            methods.dedup();

            let key = RouteKey { scheme, port, wildcard, host, prefix: path_prefix, methods };
            match seen.entry(key) {
                MapEntry::Occupied(existing) => {
                    return Err(RouteError::DuplicateRoute {
                        index,
                        previous: *existing.get(),
                        route: existing.key().to_string(),
                    });
                }
                MapEntry::Vacant(slot) => {
                    let key = slot.key();
                    let entry = Entry {
                        prefix: key.prefix.as_str().into(),
                        methods: key.methods.clone().into_boxed_slice(),
                        route: index,
                    };
                    grouped
                        .entry((scheme, port))
                        .or_default()
                        .entry((wildcard, key.host.clone()))
                        .or_default()
                        .push(entry);
                    slot.insert(index);
                }
            }
            values.push(value);
        }

        let endpoints = grouped
            .into_iter()
            .map(|(scheme_port, hosts)| {
                let mut endpoint = Endpoint::default();
                for ((wildcard, host), entries) in hosts {
                    let bucket = Bucket::new(entries, index_threshold);
                    let host = host.into_bytes().into_boxed_slice();
                    if wildcard {
                        endpoint.longest_suffix = endpoint.longest_suffix.max(host.len());
                        endpoint.wildcard.insert(host, bucket);
                    } else {
                        endpoint.exact.insert(host, bucket);
                    }
                }
                (scheme_port, endpoint)
            })
            .collect();

        Ok(RouteTable { values, endpoints })
    }

    /// The most specific route for a request, or `None` if no route applies
    /// (the request is then forwarded untouched).
    ///
    /// `host` is compared case-insensitively and may carry one trailing dot;
    /// pass it without a port (IPv6 literals bracketed, as `http::Uri::host`
    /// gives them). `path` should exclude the query, but a trailing `?query`
    /// is tolerated. Specificity: exact host over any wildcard, longer
    /// wildcard suffix, longer path prefix, a method list over none, then the
    /// earlier route.
    pub fn find(&self, scheme: Scheme, host: &str, port: u16, path: &str, method: &Method) -> Option<&T> {
        let endpoint = self.endpoints.get(&(scheme, port))?;
        let route = with_canonical_host(host, |host| endpoint.find(host, path, method))?;
        self.values.get(route)
    }

    /// Whether any route could match some request to this scheme, host and
    /// port, i.e. whether a `CONNECT` tunnel there must be intercepted rather
    /// than passed through blindly.
    pub fn has_host(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.endpoints
            .get(&(scheme, port))
            .is_some_and(|endpoint| with_canonical_host(host, |host| endpoint.has_host(host)))
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table has no routes (so nothing is ever intercepted).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;

    #[test]
    fn the_canonical_name_shortcut_agrees_with_full_validation() {
        let long_label = "a".repeat(64);
        let long_host = ["a"; 127].join(".");
        for host in [
            "api.example",
            "127.0.0.1",
            "a",
            "x-y_z.example",
            "API.example",
            "api.example.",
            ".api",
            "a..b",
            "",
            "[::1]",
            "host:80",
            "*.example",
            "ex*ample",
            "caf\u{e9}.example",
            "a b",
            &long_label,
            &long_host,
            &format!("{long_host}.x"),
        ] {
            if is_canonical_name(host) {
                assert_eq!(normalize_host(host, false).as_deref(), Ok(host), "{host:?}");
            }
            assert_eq!(canonical_host(host), normalize_host(host, false), "{host:?}");
        }
        assert!(is_canonical_name("api.example") && is_canonical_name("10.0.0.1"));
        assert!(!is_canonical_name("Api.example") && !is_canonical_name("api.example."));
    }

    fn spec(scheme: Scheme, host: &str, prefix: &str, methods: &[Method], value: u32) -> RouteSpec<u32> {
        RouteSpec {
            scheme,
            host: HostPattern::parse(host).unwrap(),
            port: None,
            path_prefix: prefix.to_owned(),
            methods: methods.to_vec(),
            value,
        }
    }

    fn https(host: &str, prefix: &str, value: u32) -> RouteSpec<u32> {
        spec(Scheme::Https, host, prefix, &[], value)
    }

    fn table(specs: Vec<RouteSpec<u32>>) -> RouteTable<u32> {
        RouteTable::new(specs).unwrap()
    }

    fn get(t: &RouteTable<u32>, host: &str, path: &str) -> Option<u32> {
        t.find(Scheme::Https, host, 443, path, &Method::GET).copied()
    }

    #[test]
    fn scheme_default_ports() {
        assert_eq!(Scheme::Http.default_port(), 80);
        assert_eq!(Scheme::Https.default_port(), 443);
    }

    #[test]
    fn exact_host_beats_wildcard_even_with_shorter_prefix() {
        let t = table(vec![
            https("*.example.com", "/v1/deep/path", 1),
            https("api.example.com", "/", 2),
            https("*.api.example.com", "/v1", 3),
        ]);
        assert_eq!(get(&t, "api.example.com", "/v1/deep/path/x"), Some(2));
        assert_eq!(get(&t, "other.example.com", "/v1/deep/path/x"), Some(1));
        assert_eq!(get(&t, "other.example.com", "/v2"), None);
    }

    #[test]
    fn exact_host_falls_back_to_wildcard_when_its_routes_do_not_match() {
        let t = table(vec![https("*.example.com", "/", 1), https("api.example.com", "/v1", 2)]);
        assert_eq!(get(&t, "api.example.com", "/v1/x"), Some(2));
        assert_eq!(get(&t, "api.example.com", "/v2"), Some(1));
    }

    #[test]
    fn longer_wildcard_suffix_wins() {
        let t = table(vec![
            https("*.com", "/", 0),
            https("*.example.com", "/long/prefix", 1),
            https("*.api.example.com", "/", 2),
        ]);
        assert_eq!(get(&t, "x.api.example.com", "/long/prefix"), Some(2));
        assert_eq!(get(&t, "a.b.api.example.com", "/"), Some(2));
        assert_eq!(get(&t, "api.example.com", "/long/prefix"), Some(1));
        assert_eq!(get(&t, "api.example.com", "/other"), Some(0));
        assert_eq!(get(&t, "example.com", "/"), Some(0));
    }

    #[test]
    fn longer_path_prefix_wins() {
        let t = table(vec![
            https("api.example.com", "/", 1),
            https("api.example.com", "/v1", 2),
            https("api.example.com", "/v1/admin", 3),
        ]);
        assert_eq!(get(&t, "api.example.com", "/v1/admin/users"), Some(3));
        assert_eq!(get(&t, "api.example.com", "/v1/users"), Some(2));
        assert_eq!(get(&t, "api.example.com", "/v2"), Some(1));
    }

    #[test]
    fn method_list_beats_any_method() {
        let t = table(vec![
            spec(Scheme::Https, "api.example.com", "/v1", &[], 1),
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::POST], 2),
        ]);
        let post = t.find(Scheme::Https, "api.example.com", 443, "/v1", &Method::POST);
        assert_eq!(post, Some(&2));
        let get_ = t.find(Scheme::Https, "api.example.com", 443, "/v1", &Method::GET);
        assert_eq!(get_, Some(&1));
    }

    #[test]
    fn longer_prefix_beats_method_list() {
        let t = table(vec![
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::GET], 1),
            spec(Scheme::Https, "api.example.com", "/v1/x", &[], 2),
        ]);
        assert_eq!(get(&t, "api.example.com", "/v1/x"), Some(2));
    }

    #[test]
    fn earlier_route_wins_remaining_ties() {
        let t = table(vec![
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::GET, Method::POST], 1),
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::GET], 2),
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::PUT], 3),
        ]);
        assert_eq!(get(&t, "api.example.com", "/v1"), Some(1));
        let put = t.find(Scheme::Https, "api.example.com", 443, "/v1", &Method::PUT);
        assert_eq!(put, Some(&3));
        let flipped = table(vec![
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::GET], 2),
            spec(Scheme::Https, "api.example.com", "/v1", &[Method::GET, Method::POST], 1),
        ]);
        assert_eq!(get(&flipped, "api.example.com", "/v1"), Some(2));
    }

    #[test]
    fn host_matching_is_case_insensitive() {
        let t = table(vec![https("API.Example.COM", "/", 1), https("*.Wild.ORG", "/", 2)]);
        assert_eq!(get(&t, "api.example.com", "/"), Some(1));
        assert_eq!(get(&t, "Api.EXAMPLE.com", "/"), Some(1));
        assert_eq!(get(&t, "X.wild.org", "/"), Some(2));
        assert!(t.has_host(Scheme::Https, "API.EXAMPLE.COM", 443));
        // Paths stay case-sensitive.
        let p = table(vec![https("api.example.com", "/V1", 1)]);
        assert_eq!(get(&p, "api.example.com", "/v1"), None);
    }

    #[test]
    fn directly_constructed_patterns_are_normalized() {
        let t = table(vec![RouteSpec {
            scheme: Scheme::Https,
            host: HostPattern::Exact("API.Example.com.".into()),
            port: None,
            path_prefix: "/".into(),
            methods: vec![],
            value: 1,
        }]);
        assert_eq!(get(&t, "api.example.com", "/"), Some(1));
    }

    #[test]
    fn one_trailing_dot_is_ignored() {
        let t = table(vec![https("api.example.com.", "/", 1), https("*.example.org", "/", 2)]);
        assert_eq!(get(&t, "api.example.com", "/"), Some(1));
        assert_eq!(get(&t, "api.example.com.", "/"), Some(1));
        assert_eq!(get(&t, "API.EXAMPLE.COM.", "/"), Some(1));
        assert_eq!(get(&t, "a.example.org.", "/"), Some(2));
        assert_eq!(get(&t, "api.example.com..", "/"), None);
        assert_eq!(HostPattern::parse("api.example.com.").unwrap(), HostPattern::Exact("api.example.com".into()));
        assert_eq!(HostPattern::parse("*.example.com.").unwrap(), HostPattern::Suffix("example.com".into()));
    }

    #[test]
    fn wildcard_does_not_match_apex_or_lookalikes() {
        let t = table(vec![https("*.example.com", "/", 1)]);
        assert_eq!(get(&t, "example.com", "/"), None);
        assert_eq!(get(&t, "example.com.", "/"), None);
        assert_eq!(get(&t, "badexample.com", "/"), None);
        assert_eq!(get(&t, "a.example.com", "/"), Some(1));
        assert_eq!(get(&t, "a.b.example.com", "/"), Some(1));
        assert_eq!(get(&t, "example.com.evil.net", "/"), None);
        assert!(!t.has_host(Scheme::Https, "example.com", 443));
    }

    #[test]
    fn ports_and_schemes() {
        let t = table(vec![
            https("api.example.com", "/", 1),
            spec(Scheme::Http, "api.example.com", "/", &[], 2),
            RouteSpec { port: Some(8443), ..https("api.example.com", "/", 3) },
        ]);
        let f = |scheme, port| t.find(scheme, "api.example.com", port, "/", &Method::GET).copied();
        assert_eq!(f(Scheme::Https, 443), Some(1));
        assert_eq!(f(Scheme::Http, 80), Some(2));
        assert_eq!(f(Scheme::Https, 8443), Some(3));
        assert_eq!(f(Scheme::Http, 443), None);
        assert_eq!(f(Scheme::Https, 80), None);
        assert_eq!(f(Scheme::Http, 8443), None);
        assert_eq!(f(Scheme::Https, 0), None);
    }

    #[test]
    fn path_prefixes_match_on_segment_boundaries() {
        let t = table(vec![https("a.test", "/v1", 1)]);
        for path in ["/v1", "/v1/", "/v1/x", "/v1?q", "/v1?q=/v10", "/v1#frag", "/v1//x"] {
            assert_eq!(get(&t, "a.test", path), Some(1), "{path}");
        }
        for path in ["/v10", "/v1x", "/v", "/", "", "v1", "/V1", "//v1", "/x/v1"] {
            assert_eq!(get(&t, "a.test", path), None, "{path}");
        }

        let slash = table(vec![https("a.test", "/v1/", 1)]);
        assert_eq!(get(&slash, "a.test", "/v1/"), Some(1));
        assert_eq!(get(&slash, "a.test", "/v1/x"), Some(1));
        assert_eq!(get(&slash, "a.test", "/v1"), None);
        assert_eq!(get(&slash, "a.test", "/v1?x/"), None);

        let root = table(vec![https("a.test", "/", 1)]);
        for path in ["/", "/x", "/x/y?z", "", "*", "relative"] {
            assert_eq!(get(&root, "a.test", path), Some(1), "{path}");
        }
    }

    #[test]
    fn methods_restrict_routes() {
        let t = table(vec![spec(Scheme::Https, "a.test", "/", &[Method::GET, Method::HEAD], 1)]);
        let f = |m: Method| t.find(Scheme::Https, "a.test", 443, "/", &m).copied();
        assert_eq!(f(Method::GET), Some(1));
        assert_eq!(f(Method::HEAD), Some(1));
        assert_eq!(f(Method::POST), None);
        assert_eq!(f(Method::from_bytes(b"PURGE").unwrap()), None);

        let custom = table(vec![spec(Scheme::Https, "a.test", "/", &[Method::from_bytes(b"PURGE").unwrap()], 2)]);
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(custom.find(Scheme::Https, "a.test", 443, "/", &purge), Some(&2));
    }

    #[test]
    fn duplicates_are_rejected() {
        let err = RouteTable::new(vec![
            https("a.test", "/", 0),
            spec(Scheme::Https, "a.test", "/v1", &[Method::GET, Method::POST], 1),
            https("b.test", "/v1", 2),
            // Same set, different order and a repeat.
            spec(Scheme::Https, "A.test.", "/v1", &[Method::POST, Method::GET, Method::GET], 3),
        ])
        .unwrap_err();
        assert!(matches!(err, RouteError::DuplicateRoute { index: 3, previous: 1, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("route 3") && msg.contains("route 1"), "{msg}");
        assert!(msg.contains("GET,POST https://a.test:443/v1"), "{msg}");

        // Explicit default port equals an omitted one.
        let err = RouteTable::new(vec![
            https("*.a.test", "/", 0),
            RouteSpec { port: Some(443), ..https("*.a.test", "/", 1) },
        ])
        .unwrap_err();
        assert!(matches!(err, RouteError::DuplicateRoute { index: 1, previous: 0, .. }));
        assert!(err.to_string().contains("*.a.test"), "{err}");

        // These differ in one criterion each, so all are allowed.
        let ok = RouteTable::new(vec![
            https("a.test", "/v1", 0),
            https("a.test", "/v1/", 1),
            https("*.a.test", "/v1", 2),
            spec(Scheme::Http, "a.test", "/v1", &[], 3),
            RouteSpec { port: Some(8443), ..https("a.test", "/v1", 4) },
            spec(Scheme::Https, "a.test", "/v1", &[Method::GET], 5),
            spec(Scheme::Https, "a.test", "/v1", &[Method::GET, Method::PUT], 6),
        ])
        .unwrap();
        assert_eq!(ok.len(), 7);
    }

    #[test]
    fn host_patterns_parse() {
        let cases = [
            ("api.example.com", HostPattern::Exact("api.example.com".into())),
            ("API.Example.Com", HostPattern::Exact("api.example.com".into())),
            ("*.example.com", HostPattern::Suffix("example.com".into())),
            ("*.EXAMPLE.com.", HostPattern::Suffix("example.com".into())),
            ("*.com", HostPattern::Suffix("com".into())),
            ("localhost", HostPattern::Exact("localhost".into())),
            ("10.0.0.1", HostPattern::Exact("10.0.0.1".into())),
            ("[::1]", HostPattern::Exact("[::1]".into())),
            ("[FE80::1]", HostPattern::Exact("[fe80::1]".into())),
            ("xn--bcher-kva.example", HostPattern::Exact("xn--bcher-kva.example".into())),
            ("_srv.example.com", HostPattern::Exact("_srv.example.com".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(HostPattern::parse(input).unwrap(), expected, "{input}");
            assert_eq!(input.parse::<HostPattern>().unwrap(), expected, "{input}");
        }
        assert_eq!(HostPattern::Suffix("example.com".into()).to_string(), "*.example.com");
    }

    #[test]
    fn bad_host_patterns_are_rejected() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_host = format!("{}com", "abcdefghi.".repeat(26));
        let bad = [
            "",
            ".",
            "*",
            "*.",
            "**.example.com",
            "*example.com",
            "a*.example.com",
            "*.*.example.com",
            "api.*.example.com",
            "example.*",
            "a..b",
            ".example.com",
            "example.com..",
            "example.com:443",
            "exa mple.com",
            "exa/mple.com",
            "user@example.com",
            "bücher.example",
            "::1",
            "[::1",
            "[example.com]",
            "*.[::1]",
            "*.1",
            "*.0.0.1",
            long_label.as_str(),
            long_host.as_str(),
        ];
        for input in bad {
            let err = HostPattern::parse(input).unwrap_err();
            assert!(matches!(err, RouteError::InvalidHostPattern { .. }), "{input}: {err:?}");
            assert!(err.to_string().contains("invalid host pattern"), "{err}");
        }
        let bare = HostPattern::parse("*").unwrap_err().to_string();
        assert!(bare.contains("bare '*'"), "{bare}");
    }

    #[test]
    fn bad_routes_are_rejected_with_their_index() {
        let with = |edit: fn(&mut RouteSpec<u32>)| {
            let mut bad = https("b.test", "/", 1);
            edit(&mut bad);
            RouteTable::new(vec![https("a.test", "/", 0), bad]).unwrap_err()
        };
        for prefix in ["", "v1", "*", "/a?b", "/a#b", "/a b", "/a\n"] {
            let mut bad = https("b.test", "/", 1);
            bad.path_prefix = prefix.to_owned();
            let err = RouteTable::new(vec![https("a.test", "/", 0), bad]).unwrap_err();
            assert!(matches!(err, RouteError::InvalidPathPrefix { index: 1, .. }), "{prefix:?}: {err:?}");
            assert!(err.to_string().starts_with("route 1:"), "{err}");
        }
        let err = with(|s| s.port = Some(0));
        assert!(matches!(err, RouteError::InvalidPort { index: 1 }), "{err:?}");

        let err = with(|s| s.host = HostPattern::Exact("bad host".into()));
        assert!(matches!(err, RouteError::InvalidHost { index: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("route 1"), "{err}");

        let err = with(|s| s.host = HostPattern::Suffix("*.example.com".into()));
        assert!(matches!(err, RouteError::InvalidHost { index: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("*.*.example.com"), "{err}");

        let err = with(|s| s.host = HostPattern::Suffix(String::new()));
        assert!(matches!(err, RouteError::InvalidHost { index: 1, .. }), "{err:?}");
    }

    #[test]
    fn has_host_reports_interceptable_destinations() {
        let t = table(vec![
            https("api.example.com", "/v1", 1),
            https("*.example.org", "/", 2),
            spec(Scheme::Http, "plain.test", "/", &[], 3),
        ]);
        assert!(t.has_host(Scheme::Https, "api.example.com", 443));
        assert!(t.has_host(Scheme::Https, "api.example.com.", 443));
        assert!(t.has_host(Scheme::Https, "a.b.example.org", 443));
        assert!(!t.has_host(Scheme::Https, "example.org", 443));
        assert!(!t.has_host(Scheme::Https, "api.example.com", 8443));
        assert!(!t.has_host(Scheme::Http, "api.example.com", 80));
        assert!(!t.has_host(Scheme::Https, "other.example.com", 443));
        assert!(t.has_host(Scheme::Http, "plain.test", 80));
        assert!(!t.has_host(Scheme::Https, "plain.test", 443));
        assert!(!t.has_host(Scheme::Https, "", 443));
    }

    #[test]
    fn len_and_is_empty() {
        let empty: RouteTable<u32> = table(vec![]);
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(get(&empty, "a.test", "/"), None);
        assert!(!empty.has_host(Scheme::Https, "a.test", 443));
        let t = table(vec![https("a.test", "/", 1), https("b.test", "/", 2)]);
        assert!(!t.is_empty());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn many_prefixes_on_one_host_use_the_index() {
        let mut specs: Vec<_> = (0..100u32).map(|i| https("api.test", &format!("/r{i}"), i)).collect();
        specs.push(https("api.test", "/", 1000));
        specs.push(https("api.test", "/r7/sub/", 1001));
        specs.push(spec(Scheme::Https, "api.test", "/r7", &[Method::POST], 1002));
        let t = table(specs);
        let bucket = &t.endpoints[&(Scheme::Https, 443)].exact[&b"api.test"[..]];
        assert!(bucket.trie.is_some());
        assert_eq!(get(&t, "api.test", "/r42"), Some(42));
        assert_eq!(get(&t, "api.test", "/r42/x/y?z=1"), Some(42));
        assert_eq!(get(&t, "api.test", "/r420"), Some(1000));
        assert_eq!(get(&t, "api.test", "/r7/sub/deeper"), Some(1001));
        assert_eq!(get(&t, "api.test", "/r7/sub"), Some(7));
        let post = t.find(Scheme::Https, "api.test", 443, "/r7/x", &Method::POST);
        assert_eq!(post, Some(&1002));
        assert_eq!(get(&t, "api.test", "*"), Some(1000));
    }

    #[test]
    fn very_long_uppercase_hosts_still_match() {
        let suffix = "example.com";
        let long = format!("{}{suffix}", "ABCDEFGHIJ.".repeat(30));
        assert!(long.len() > HOST_BUF_LEN);
        let t = table(vec![https("*.example.com", "/", 1)]);
        assert_eq!(get(&t, &long, "/"), Some(1));
    }

    #[test]
    fn the_trie_matches_on_segment_boundaries_and_empty_segments() {
        let prefixes = ["/", "//", "/a", "/a/", "/a//", "/a/b", "/ab", "/a//b"];
        let mut specs: Vec<_> = prefixes.iter().zip(0..).map(|(p, i)| https("api.test", p, i)).collect();
        specs.extend((0..20u32).map(|i| https("api.test", &format!("/z{i}"), 100 + i)));
        let t = table(specs);
        assert!(t.endpoints[&(Scheme::Https, 443)].exact[&b"api.test"[..]].trie.is_some());
        for (path, want) in [
            ("", 0),
            ("*", 0),
            ("/", 0),
            ("//", 1),
            ("//x", 1),
            ("/a", 2),
            ("/a?q=/a/b", 2),
            ("/a#/b", 2),
            ("/a/", 3),
            ("/a/x", 3),
            ("/a//", 4),
            ("/a//c", 4),
            ("/a//b", 7),
            ("/a//b/c", 7),
            ("/a/b", 5),
            ("/a/b/", 5),
            ("/a/bc", 3),
            ("/ab", 6),
            ("/abc", 0),
            ("/z7/x", 107),
        ] {
            assert_eq!(get(&t, "api.test", path), Some(want), "{path:?}");
        }
    }

    // ---- Property test against a naive reference implementation ----

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

    fn naive_find<'a>(
        specs: &'a [RouteSpec<u32>],
        scheme: Scheme,
        host: &str,
        port: u16,
        path: &str,
        method: &Method,
    ) -> Option<&'a u32> {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.scheme == scheme && s.port.unwrap_or(s.scheme.default_port()) == port)
            .filter(|(_, s)| s.methods.is_empty() || s.methods.contains(method))
            .filter(|(_, s)| naive_path_matches(&s.path_prefix, path))
            .filter_map(|(i, s)| {
                let rank = naive_host_rank(&s.host, host)?;
                Some(((rank, s.path_prefix.len(), !s.methods.is_empty(), Reverse(i)), s))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, s)| &s.value)
    }

    fn naive_has_host(specs: &[RouteSpec<u32>], scheme: Scheme, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        specs.iter().any(|s| {
            s.scheme == scheme
                && s.port.unwrap_or(s.scheme.default_port()) == port
                && naive_host_rank(&s.host, host).is_some()
        })
    }

    /// The first `(later, earlier)` pair of routes that are duplicates.
    fn naive_duplicate(specs: &[RouteSpec<u32>]) -> Option<(usize, usize)> {
        let key = |s: &RouteSpec<u32>| {
            let mut methods: Vec<&str> = s.methods.iter().map(Method::as_str).collect();
            methods.sort_unstable();
            methods.dedup();
            let host = match &s.host {
                HostPattern::Exact(h) => format!("={}", h.to_ascii_lowercase()),
                HostPattern::Suffix(h) => format!("*{}", h.to_ascii_lowercase()),
            };
            (s.scheme, s.port.unwrap_or(s.scheme.default_port()), host, s.path_prefix.clone(), methods.join(","))
        };
        (0..specs.len()).find_map(|i| (0..i).find(|&j| key(&specs[i]) == key(&specs[j])).map(|j| (i, j)))
    }

    fn arb_scheme() -> impl Strategy<Value = Scheme> {
        prop_oneof![Just(Scheme::Http), Just(Scheme::Https)]
    }

    fn arb_name(max_labels: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=max_labels)
            .prop_map(|labels| labels.join("."))
    }

    fn random_case(s: &str, mask: u64) -> String {
        s.chars().enumerate().map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
    }

    fn arb_method() -> impl Strategy<Value = Method> {
        prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE])
    }

    fn arb_spec() -> impl Strategy<Value = RouteSpec<u32>> {
        (
            arb_scheme(),
            any::<bool>(),
            arb_name(3),
            any::<u64>(),
            prop::sample::select(vec![None, Some(80), Some(443), Some(8080)]),
            prop::sample::select(vec!["/", "/a", "/a/", "/a/b", "/a/b/", "/ab", "/b", "/a//", "//", "//a", "/a//b"]),
            prop::collection::vec(arb_method(), 0..=3),
        )
            .prop_map(|(scheme, wildcard, name, mask, port, prefix, methods)| {
                let name = random_case(&name, mask);
                RouteSpec {
                    scheme,
                    host: if wildcard { HostPattern::Suffix(name) } else { HostPattern::Exact(name) },
                    port,
                    path_prefix: prefix.to_owned(),
                    methods,
                    value: 0,
                }
            })
    }

    #[derive(Debug, Clone)]
    struct Request {
        scheme: Scheme,
        host: String,
        port: u16,
        path: &'static str,
        method: Method,
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (
            arb_scheme(),
            arb_name(4),
            any::<u64>(),
            prop::sample::select(vec!["", ".", ".."]),
            prop::sample::select(vec![80u16, 443, 8080]),
            prop::sample::select(vec![
                "/",
                "",
                "/a",
                "/a/",
                "/a/b",
                "/a/b/c",
                "/ab",
                "/abc",
                "/a?x",
                "/a/b?y=/a/b/",
                "/b/a",
                "/a//",
                "/a//b",
                "/b",
                "*",
                "a",
                "/a#f",
                "//",
                "//a",
                "/a//b/",
                "/a/b/c/",
                "/a?/b",
            ]),
            arb_method(),
        )
            .prop_map(|(scheme, name, mask, dots, port, path, method)| Request {
                scheme,
                host: format!("{}{dots}", random_case(&name, mask)),
                port,
                path,
                method,
            })
    }

    fn arb_specs() -> impl Strategy<Value = Vec<RouteSpec<u32>>> {
        prop::collection::vec(arb_spec(), 0..40).prop_map(|mut specs| {
            for (i, s) in specs.iter_mut().enumerate() {
                s.value = u32::try_from(i).unwrap_or(u32::MAX);
            }
            specs
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn find_agrees_with_naive_reference(
            specs in arb_specs(),
            requests in prop::collection::vec(arb_request(), 1..40),
        ) {
            let expected_dup = naive_duplicate(&specs);
            for threshold in [PREFIX_INDEX_THRESHOLD, 0] {
                match RouteTable::build(specs.clone(), threshold) {
                    Err(RouteError::DuplicateRoute { index, previous, .. }) => {
                        prop_assert_eq!(expected_dup, Some((index, previous)));
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                    Ok(table) => {
                        prop_assert_eq!(expected_dup, None);
                        prop_assert_eq!(table.len(), specs.len());
                        for r in &requests {
                            let want = naive_find(&specs, r.scheme, &r.host, r.port, r.path, &r.method);
                            let got = table.find(r.scheme, &r.host, r.port, r.path, &r.method);
                            prop_assert_eq!(got, want, "request {:?}, threshold {}", r, threshold);
                            prop_assert_eq!(
                                table.has_host(r.scheme, &r.host, r.port),
                                naive_has_host(&specs, r.scheme, &r.host, r.port),
                                "request {:?}", r
                            );
                        }
                    }
                }
            }
        }
    }
}
