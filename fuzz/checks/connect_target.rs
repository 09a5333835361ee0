// Shared by fuzz/fuzz_targets/connect_target.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// CONNECT targets and request hosts (`token_sidecar::proxy::target`):
// - `parse_connect_target` never panics; what it accepts is canonical (lowercase, no trailing
//   dot, port 1..=65535, host passes `routes::canonical_host` unchanged), holds nothing but
//   host and port (no userinfo, path or whitespace), reparses to itself from `host:port`, agrees
//   with `http::uri::Authority` about host and port, and yields an authority that parses back
//   to the same host and port;
// - inside a tunnel opened to that target, `target_of` accepts a request only if its Host
//   header and URI authority (where present) both name the tunnel's host and port, and the
//   target it returns is the tunnel's;
// - on the proxy port, `target_of` for an absolute URI returns the URI's host in canonical
//   form with its port, and an authority without userinfo.
//
// Input: three lines: the CONNECT target, the Host header of a request (empty: none), and the
// request URI (empty: `/`). Each line must be UTF-8.

use http::uri::Authority;
use token_sidecar::proxy::target::{parse_connect_target, target_of, HostPort};
use token_sidecar::proxy::{Entry, TunnelTarget};
use token_sidecar::routes::{canonical_host, Scheme};

/// Host and port as `http` parses an authority, canonicalised independently of the sidecar:
/// lowercase, one trailing dot dropped, the default port when none is given.
fn reference_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    let authority: Authority = text.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    Some((host, authority.port_u16().unwrap_or(default_port)))
}

fn check_host_port(target: &str, hp: &HostPort) {
    assert!(hp.port > 0, "{target:?}: port 0");
    assert!(!hp.host.is_empty() && !hp.host.ends_with('.'), "{target:?}: host {:?}", hp.host);
    assert_eq!(hp.host, hp.host.to_ascii_lowercase(), "{target:?}: host not lowercase");
    assert_eq!(canonical_host(&hp.host).as_deref(), Ok(hp.host.as_str()), "{target:?}: host not canonical");
    assert!(
        !target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'@' | b'/' | b'?' | b'#')),
        "{target:?} was accepted as a CONNECT target"
    );
    let again = parse_connect_target(&format!("{}:{}", hp.host, hp.port));
    assert_eq!(again.as_ref().ok(), Some(hp), "{target:?}: host:port does not reparse");
    assert_eq!(
        reference_host_port(target, 0),
        Some((hp.host.clone(), hp.port)),
        "{target:?}: http::uri::Authority reads it differently"
    );
    for scheme in [Scheme::Http, Scheme::Https] {
        let authority = hp.authority(scheme).unwrap_or_else(|e| panic!("{target:?}: no authority: {e}"));
        assert_eq!(
            reference_host_port(authority.as_str(), scheme.default_port()),
            Some((hp.host.clone(), hp.port)),
            "{target:?}: authority {authority} reads differently"
        );
    }
}

fn request(host_header: &str, uri: &str) -> Option<http::request::Parts> {
    let mut builder = http::Request::builder().uri(if uri.is_empty() { "/" } else { uri });
    if !host_header.is_empty() {
        builder = builder.header(http::header::HOST, host_header);
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let target = lines.next().unwrap_or_default();
    let host_header = lines.next().unwrap_or_default();
    let uri = lines.next().unwrap_or_default();

    let tunnel = match parse_connect_target(target) {
        Ok(hp) => {
            check_host_port(target, &hp);
            Some(hp)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    };

    let Some(parts) = request(host_header, uri) else { return };

    if let Some(hp) = tunnel {
        let authority = hp.authority(Scheme::Https).expect("checked above");
        let entry = Entry::Tunnel(std::sync::Arc::new(TunnelTarget {
            scheme: Scheme::Https,
            authority: authority.clone(),
            host: hp.host.clone(),
            port: hp.port,
        }));
        if let Ok(t) = target_of(&entry, &parts) {
            assert_eq!((t.host.as_str(), t.port, t.scheme), (hp.host.as_str(), hp.port, Scheme::Https));
            assert_eq!(t.authority, authority);
            let named = [
                parts.uri.authority().map(|a| a.as_str().to_owned()),
                (!host_header.is_empty()).then(|| host_header.to_owned()),
            ];
            assert!(named.iter().any(Option::is_some), "a request naming no host was accepted in a tunnel");
            for name in named.into_iter().flatten() {
                assert!(!name.contains('@'), "{name:?} (with userinfo) was accepted for tunnel {target:?}");
                assert_eq!(
                    reference_host_port(&name, hp.port),
                    Some((hp.host.clone(), hp.port)),
                    "{name:?} was accepted inside a tunnel to {target:?}"
                );
            }
        }
    }

    let entry = Entry::Proxy(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    if let Ok(t) = target_of(&entry, &parts) {
        let authority = parts.uri.authority().expect("an accepted proxy request has an absolute URI");
        let default_port = t.scheme.default_port();
        let host = authority.host().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        assert_eq!((t.host.as_str(), t.port), (host, authority.port_u16().unwrap_or(default_port)), "{uri:?}");
        assert!(!t.authority.as_str().contains('@'), "{uri:?}: userinfo kept in {}", t.authority);
        assert_eq!(
            reference_host_port(t.authority.as_str(), default_port),
            Some((t.host.clone(), t.port)),
            "{uri:?}: authority {} reads differently",
            t.authority
        );
    }
}
