//! Turns [`RawConfig`] into a checked [`Config`], collecting every problem with its location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::diagnostic::{Collector, ConfigErrors};
use super::raw::{RawConfig, RawRoute};
use super::values::{checked, parse_duration, parse_size};
use super::*;
use crate::substitute::is_valid_name;
use crate::tokens;

pub(super) fn validate(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut c = Collector::new(path, text);
    let (raw, repaired) = super::structure::parse(text, &mut c);
    let Some(raw) = raw else { return Err(c.failed()) };
    let structural = c.len();
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut watched_files = vec![path.to_path_buf()];

    let proxy = proxy_settings(&raw, &base_dir, &mut c);
    let admin = AdminSettings {
        listen: raw
            .admin
            .listen
            .as_ref()
            .map_or(AdminSettings::default().listen, |l| socket_addr(l, "admin.listen", &mut c)),
    };
    let tls = raw.tls.as_ref().map(|t| TlsSettings {
        ca_cert: base_dir.join(t.ca_cert.get_ref()),
        ca_key: base_dir.join(t.ca_key.get_ref()),
        leaf_cache_size: t
            .leaf_cache_size
            .as_ref()
            .map_or(1000, |n| positive(n, "tls.leaf_cache_size", &mut c).unwrap_or(1000)),
        generate_if_missing: t.generate_if_missing.as_ref().is_some_and(|b| *b.get_ref()),
    });
    if let (Some(settings), Some(raw_tls)) = (&tls, &raw.tls) {
        let named = !repaired.covers("tls.ca_cert") && !repaired.covers("tls.ca_key");
        if named && !settings.pending_generation() {
            if let Err(e) = crate::tls::load_ca(settings) {
                c.error(raw_tls.ca_cert.span(), "tls", e.to_string());
            }
        }
    }
    let echo = raw.echo.as_ref().map(|e| EchoSettings {
        listen: socket_addr(&e.listen, "echo.listen", &mut c),
        tls_listen: e.tls_listen.as_ref().map(|l| {
            if raw.tls.is_none() {
                c.error(l.span(), "echo.tls_listen", "needs a [tls] section: its CA signs the echo's certificate");
            }
            socket_addr(l, "echo.tls_listen", &mut c)
        }),
    });

    let mut tokens = BTreeMap::new();
    for (name, raw_token) in &raw.tokens {
        let key_path = format!("tokens.{name}");
        if !is_valid_name(name) {
            c.error(
                raw_token.span(),
                &key_path,
                "a token name must be 1 to 64 of A-Z a-z 0-9 _ . - so it can be written as a placeholder {/NAME}",
            );
            continue;
        }
        let ctx = tokens::BuildContext { name, key_path: &key_path, base_dir: &base_dir };
        if let Some(def) = tokens::TokenDefinition::build(&ctx, raw_token, &mut c) {
            watched_files.extend(def.watched_files().map(Path::to_path_buf));
            tokens.insert(name.clone(), def);
        }
    }
    super::dependencies::check(&raw, &mut tokens, &mut c);
    let fleet = super::fleet::settings(&raw, &base_dir, &mut c);
    super::fleet::check_shared(&raw, &tokens, fleet.as_ref(), &mut c);
    let shared_tokens = match &fleet {
        None => Default::default(),
        Some(_) => tokens
            .iter()
            .filter(|(name, def)| {
                def.exchange().is_some()
                    && raw.tokens.get(*name).and_then(|t| t.get_ref().shared.as_ref()).is_none_or(|s| *s.get_ref())
            })
            .map(|(name, _)| name.clone())
            .collect(),
    };
    watched_files.extend(fleet.as_ref().and_then(|f| f.key_file.clone()));

    let cache = super::cache::global(raw.cache.as_ref(), raw.fleet.is_some(), &mut c);
    let routes =
        raw.routes.iter().enumerate().filter_map(|(i, r)| route(i, r, &raw, &cache, &mut c)).collect::<Vec<_>>();
    if c.is_empty() {
        check_route_table(&raw, &routes, &mut c);
    }

    let listeners = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let prefix = format!("listeners[{i}]");
            let listen = socket_addr(&l.get_ref().listen, &format!("{prefix}.listen"), &mut c);
            let upstream = upstream_uri(&l.get_ref().upstream, &format!("{prefix}.upstream"), &mut c);
            ListenerDefinition { listen, upstream }
        })
        .collect();

    let super::policy::Checked { policy, callers, audit } =
        super::policy::check(&raw, &base_dir, &mut c, &mut watched_files);

    // Every file the config names is watched: a rotated CA bundle is a change like a key's.
    watched_files.extend(proxy.extra_ca_file.clone());
    if let Some(tls) = &tls {
        watched_files.extend([tls.ca_cert.clone(), tls.ca_key.clone()]);
    }
    c.forget_after(structural, |d| repaired.covers_diagnostic(&d.key_path, &d.message));
    c.finish()?;
    Ok(Config {
        source: path.to_path_buf(),
        proxy,
        admin,
        tls,
        echo,
        cache,
        tokens,
        routes,
        listeners,
        policy,
        callers,
        audit,
        watched_files,
        fleet,
        shared_tokens,
    })
}

/// A duration setting that must be longer than zero: `default` when it is absent, and when
/// it is invalid (the error is collected, so `check` reports every bad value at once).
pub(super) fn positive_duration(
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    c: &mut Collector<'_>,
) -> Duration {
    let refuse = |d: &Duration| d.is_zero().then_some("must be longer than zero");
    v.as_ref().and_then(|s| checked(s, key, parse_duration, refuse, c)).unwrap_or(default)
}

/// A size setting that must be larger than zero, collected like [`positive_duration`].
pub(super) fn positive_size(v: &Option<Spanned<String>>, key: &str, default: u64, c: &mut Collector<'_>) -> u64 {
    let refuse = |&n: &u64| (n == 0).then_some("must be larger than zero");
    v.as_ref().and_then(|s| checked(s, key, parse_size, refuse, c)).unwrap_or(default)
}

fn proxy_settings(raw: &RawConfig, base_dir: &Path, c: &mut Collector<'_>) -> ProxySettings {
    let p = &raw.proxy;
    let d = ProxySettings::default();
    let count = |v: &Option<Spanned<i64>>, key: &str, default: usize, c: &mut Collector<'_>| {
        v.as_ref().map_or(default, |n| positive(n, key, c).unwrap_or(default))
    };
    ProxySettings {
        max_connections: count(&p.max_connections, "proxy.max_connections", d.max_connections, c),
        max_streams_per_connection: u32::try_from(count(
            &p.max_streams_per_connection,
            "proxy.max_streams_per_connection",
            d.max_streams_per_connection as usize,
            c,
        ))
        .unwrap_or(u32::MAX),
        max_header_bytes: positive_size(&p.max_header_bytes, "proxy.max_header_bytes", d.max_header_bytes, c),
        max_uri_bytes: positive_size(&p.max_uri_bytes, "proxy.max_uri_bytes", d.max_uri_bytes, c),
        max_buffered_total: positive_size(&p.max_buffered_total, "proxy.max_buffered_total", d.max_buffered_total, c),
        handshake_timeout: positive_duration(&p.handshake_timeout, "proxy.handshake_timeout", d.handshake_timeout, c),
        header_timeout: positive_duration(&p.header_timeout, "proxy.header_timeout", d.header_timeout, c),
        body_timeout: positive_duration(&p.body_timeout, "proxy.body_timeout", d.body_timeout, c),
        idle_timeout: positive_duration(&p.idle_timeout, "proxy.idle_timeout", d.idle_timeout, c),
        listen: p.listen.as_ref().map_or(d.listen, |l| socket_addr(l, "proxy.listen", c)),
        unmatched: match &p.unmatched {
            None => Unmatched::Forward,
            Some(s) => match s.get_ref().as_str() {
                "forward" => Unmatched::Forward,
                "deny" => Unmatched::Deny,
                other => {
                    c.error(
                        s.span(),
                        "proxy.unmatched",
                        format!("unknown policy {other:?} (expected \"forward\" or \"deny\")"),
                    );
                    Unmatched::Forward
                }
            },
        },
        max_buffered_body: match &p.max_buffered_body {
            None => d.max_buffered_body,
            Some(s) => parse_size(s.get_ref()).unwrap_or_else(|e| {
                c.error(s.span(), "proxy.max_buffered_body", e);
                d.max_buffered_body
            }),
        },
        connect_timeout: positive_duration(&p.connect_timeout, "proxy.connect_timeout", d.connect_timeout, c),
        request_timeout: positive_duration(&p.request_timeout, "proxy.request_timeout", d.request_timeout, c),
        extra_ca_file: p.extra_ca_file.as_ref().map(|f| base_dir.join(f.get_ref())),
        worker_threads: p
            .worker_threads
            .as_ref()
            .map_or(d.worker_threads, |n| positive(n, "proxy.worker_threads", c).unwrap_or(1)),
        pool_idle_timeout: positive_duration(&p.pool_idle_timeout, "proxy.pool_idle_timeout", d.pool_idle_timeout, c),
        shutdown_grace: positive_duration(&p.shutdown_grace, "proxy.shutdown_grace", d.shutdown_grace, c),
        listen_unix: p.listen_unix.as_ref().map(|f| base_dir.join(f.get_ref())),
        listen_unix_mode: p.listen_unix_mode.as_ref().map_or(d.listen_unix_mode, |m| {
            match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => mode,
                _ => {
                    c.error(m.span(), "proxy.listen_unix_mode", "expected octal permissions such as \"0660\"");
                    d.listen_unix_mode
                }
            }
        }),
    }
}

fn route(
    index: usize,
    spanned: &Spanned<RawRoute>,
    raw: &RawConfig,
    cache: &CacheSettings,
    c: &mut Collector<'_>,
) -> Option<RouteDefinition> {
    let r = spanned.get_ref();
    let prefix = format!("routes[{index}]");
    let before = c.len();
    let name = r.name.as_ref().map_or_else(|| prefix.clone(), |n| n.get_ref().clone());

    let scheme = match &r.scheme {
        None => Scheme::Https,
        Some(s) => match s.get_ref().to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => {
                c.error(
                    s.span(),
                    format!("{prefix}.scheme"),
                    format!("unknown scheme {other:?} (expected \"http\" or \"https\")"),
                );
                Scheme::Https
            }
        },
    };
    let host = HostPattern::parse(r.host.get_ref())
        .map_err(|e| c.error(r.host.span(), format!("{prefix}.host"), e.to_string()))
        .ok();
    let port = r.port.as_ref().and_then(|p| match u16::try_from(*p.get_ref()) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            c.error(p.span(), format!("{prefix}.port"), "must be a port number from 1 to 65535");
            None
        }
    });
    let path_prefix = match &r.path_prefix {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
        Some(p) => {
            c.error(p.span(), format!("{prefix}.path_prefix"), "must start with '/'");
            "/".to_string()
        }
    };
    let methods = r
        .methods
        .iter()
        .filter_map(|m| {
            http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                .map_err(|_| {
                    c.error(m.span(), format!("{prefix}.methods"), format!("invalid HTTP method {:?}", m.get_ref()))
                })
                .ok()
        })
        .collect();

    let mut bindings = BTreeMap::new();
    // A DPoP key has no value to write; the oauth2 token that names it carries its proofs.
    let is_dpop_key = |name: &str| {
        raw.tokens.get(name).and_then(|t| t.get_ref().kind.as_ref()).is_some_and(|k| k.get_ref() == "dpop")
    };
    let dpop_message = "is a kind = \"dpop\" key, which is never written into a request; bind the oauth2 token that names it in `dpop`";
    for t in &r.tokens {
        if is_dpop_key(t.get_ref()) {
            c.error(t.span(), format!("{prefix}.tokens"), format!("{:?} {dpop_message}", t.get_ref()));
        } else if raw.tokens.contains_key(t.get_ref()) {
            bindings.insert(t.get_ref().clone(), t.get_ref().clone());
        } else {
            c.error(t.span(), format!("{prefix}.tokens"), unknown_token(t.get_ref(), raw));
        }
    }
    for (alias, target) in &r.placeholders {
        let key = format!("{prefix}.placeholders.{alias}");
        if !is_valid_name(alias) {
            c.error(target.span(), &key, "a placeholder name must be 1 to 64 of A-Z a-z 0-9 _ . -");
        } else if !raw.tokens.contains_key(target.get_ref()) {
            c.error(target.span(), &key, unknown_token(target.get_ref(), raw));
        } else if is_dpop_key(target.get_ref()) {
            c.error(target.span(), &key, format!("{:?} {dpop_message}", target.get_ref()));
        } else if raw.tokens.contains_key(alias) && alias != target.get_ref() {
            c.error(target.span(), &key, "this alias hides a token of the same name; choose another alias");
        } else {
            bindings.insert(alias.clone(), target.get_ref().clone());
            bindings.insert(target.get_ref().clone(), target.get_ref().clone());
        }
    }
    let set_headers = r
        .set_headers
        .iter()
        .filter_map(|(k, v)| {
            let key = format!("{prefix}.set_headers.{k}");
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| c.error(v.span(), &key, "not a valid HTTP header name"))
                .ok()?;
            http::HeaderValue::from_str(v.get_ref())
                .map_err(|_| c.error(v.span(), &key, "not a valid HTTP header value"))
                .ok()?;
            let check = TemplateCheck {
                bound: bindings.keys().cloned().collect(),
                configured: raw.tokens.keys().cloned().collect(),
            };
            if let Err(refused) = crate::substitute::substitute(v.get_ref().as_bytes(), &check) {
                c.error(
                    v.span(),
                    &key,
                    format!(
                        "uses {{/{}}}, a token this route does not bind; add it to `tokens` or `placeholders`",
                        refused.name
                    ),
                );
                return None;
            }
            Some((name, v.get_ref().clone()))
        })
        .collect();
    let cache = r.cache.as_ref().map(|rc| super::cache::route(&prefix, rc, cache, c));

    let policy = super::policy::route(&prefix, r, &bindings, &raw.callers, c);
    if c.len() != before {
        return None;
    }
    Some(RouteDefinition {
        name,
        scheme,
        host: host?,
        port,
        path_prefix,
        methods,
        bindings,
        set_headers,
        upstream_tls: r.upstream_tls.as_ref().is_some_and(|b| *b.get_ref()),
        redact_responses: r.redact_responses.as_ref().is_some_and(|b| *b.get_ref()),
        retry_on_401: r.retry_on_401.as_ref().is_none_or(|b| *b.get_ref()),
        upstream_http2: r.upstream_http2.as_ref().is_some_and(|b| *b.get_ref()),
        policy,
        cache,
    })
}

/// Builds the route table once so conflicts (two identical routes) are config errors.
fn check_route_table(raw: &RawConfig, routes: &[RouteDefinition], c: &mut Collector<'_>) {
    if let Err(e) = crate::routes::RouteTable::new(routes.iter().map(|r| r.spec(())).collect()) {
        let span = raw.routes.first().map_or(0..0, Spanned::span);
        c.error(span, "routes", e.to_string());
    }
}

/// Checks a `set_headers` template: every configured token it names must be bound.
struct TemplateCheck {
    bound: std::collections::BTreeSet<String>,
    configured: std::collections::BTreeSet<String>,
}

impl crate::substitute::Resolve for TemplateCheck {
    fn resolve(&self, name: &str) -> crate::substitute::Resolution {
        use crate::substitute::Resolution;
        // `{/NAME.field}` is an exposed field of NAME, under NAME's binding.
        let token = match name.rsplit_once('.') {
            Some((token, _)) if !self.bound.contains(name) && !self.configured.contains(name) => token,
            _ => name,
        };
        if self.bound.contains(token) {
            Resolution::Value(bytes::Bytes::new())
        } else if self.configured.contains(token) {
            Resolution::Forbidden
        } else {
            Resolution::Unknown
        }
    }
}

fn unknown_token(name: &str, raw: &RawConfig) -> String {
    let known: Vec<&str> = raw.tokens.keys().map(String::as_str).collect();
    format!("no token named {name:?} (defined: {})", if known.is_empty() { "none".into() } else { known.join(", ") })
}

fn socket_addr(s: &Spanned<String>, key: &str, c: &mut Collector<'_>) -> SocketAddr {
    s.get_ref().parse().unwrap_or_else(|_| {
        c.error(
            s.span(),
            key,
            format!("invalid address {:?} (expected IP:PORT, such as \"127.0.0.1:8080\")", s.get_ref()),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn positive(n: &Spanned<i64>, key: &str, c: &mut Collector<'_>) -> Option<usize> {
    match usize::try_from(*n.get_ref()) {
        Ok(v) if v > 0 => Some(v),
        _ => {
            c.error(n.span(), key, "must be a whole number above zero");
            None
        }
    }
}

fn upstream_uri(s: &Spanned<String>, key: &str, c: &mut Collector<'_>) -> http::Uri {
    match s.get_ref().parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() && uri.query().is_none() =>
        {
            uri
        }
        _ => {
            c.error(
                s.span(),
                key,
                format!(
                    "invalid upstream {:?} (expected a base URL such as \"https://api.example.com/v2\")",
                    s.get_ref()
                ),
            );
            http::Uri::default()
        }
    }
}

impl RouteDefinition {
    /// The matching part of this route, for the route table, carrying `value`.
    pub fn spec<T>(&self, value: T) -> crate::routes::RouteSpec<T> {
        crate::routes::RouteSpec {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port,
            path_prefix: self.path_prefix.clone(),
            methods: self.methods.clone(),
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// One misspelled key must not hide the problems behind it (issue 10, item 4).
    #[test]
    fn a_misspelled_key_does_not_hide_missing_files_or_unknown_tokens() {
        let text = r#"
[proxy]
request_timout = "5s"

[tokens.acme]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "/nonexistent/acme.pem"
ttl = "5m"

[[routes]]
host = "api.example.com"
tokens = ["acme", "nope"]
"#;
        let errors = Config::from_text(Path::new("/tmp/sidecar.toml"), text).expect_err("three problems");
        let keys: Vec<&str> = errors.0.iter().map(|d| d.key_path.as_str()).collect();
        assert_eq!(keys, ["proxy.request_timout", "tokens.acme.key_file", "routes[0].tokens"], "{errors}");
        assert!(errors.0[2].message.contains("\"nope\""), "{errors}");
    }

    /// Zero sizes and durations are refused alike in every section that has them, each with
    /// its own key, and all in one pass.
    #[test]
    fn zero_sizes_and_durations_are_refused_in_every_section() {
        let text = r#"
[proxy]
max_uri_bytes = "0"
body_timeout = "0s"

[cache]
max_bytes = "0KiB"

[[routes]]
host = "api.example.com"

[routes.cache]
ttl = "60s"
max_body = "lots"
"#;
        let errors = Config::from_text(Path::new("/tmp/sidecar.toml"), text).expect_err("four problems");
        let found: Vec<(&str, &str)> = errors.0.iter().map(|d| (d.key_path.as_str(), d.message.as_str())).collect();
        let zero = |key: &str, message: &str| found.contains(&(key, message));
        assert!(zero("proxy.max_uri_bytes", "must be larger than zero"), "{errors}");
        assert!(zero("proxy.body_timeout", "must be longer than zero"), "{errors}");
        assert!(zero("cache.max_bytes", "must be larger than zero"), "{errors}");
        assert!(found.iter().any(|(key, _)| key.ends_with("cache.max_body")), "{errors}");
        assert_eq!(errors.0.len(), 4, "{errors}");
    }

    #[test]
    fn a_required_key_of_the_wrong_type_is_not_reported_again_as_invalid() {
        let text = "[tls]\nca_cert = 1\nca_key = \"k.pem\"\n[echo]\nlisten = \"127.0.0.1:0\"\n";
        let errors = Config::from_text(Path::new("/tmp/sidecar.toml"), text).expect_err("one problem");
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key_path, "tls.ca_cert");
    }
}
