//! Caller identity: which agent function sent a request.
//!
//! With `[[callers]]` configured, every request must name its caller, in one of three ways:
//! `Proxy-Authorization` (Basic with the caller's name and secret, or Bearer with the
//! secret) on any listener; the peer process's uid/gid (`SO_PEERCRED`) on the Unix-socket
//! listener; or the source address on a reverse listener. Requests inside an intercepted
//! tunnel are the caller that opened it. Only a SHA-256 digest of each secret is kept, and a
//! presented secret is found by its digest, so no comparison leaks how much of it matched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;

use super::networks::Cidr;
use super::rate::Bucket;
use crate::config::CallerDefinition;

/// SHA-256 of a secret.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Who is at the other end of a client connection.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A TCP client, by its address.
    Tcp(SocketAddr),
    /// A process on the Unix-socket listener, by its credentials.
    Unix { uid: u32, gid: u32 },
    /// Inside an intercepted tunnel: the caller the CONNECT was identified as (`None` when no
    /// callers were configured then).
    Tunnel(Option<Arc<str>>),
    /// A Unix-socket peer whose credentials could not be read.
    Unknown,
}

impl Peer {
    /// The peer of requests inside a tunnel opened by `caller`.
    pub fn tunnel(caller: Option<&Caller>) -> Peer {
        Peer::Tunnel(caller.map(|c| Arc::clone(&c.name)))
    }
}

/// An identified caller, as the request path needs it.
#[derive(Debug)]
pub struct Caller {
    pub name: Arc<str>,
    /// Its own rate limit, across every route.
    pub rate: Option<Arc<Bucket>>,
}

/// Why a request could not be tied to a caller (answered with 407).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unidentified(pub String);

/// The callers of one snapshot, indexed by each way of recognising them.
#[derive(Debug, Default)]
pub struct Callers {
    list: Vec<Arc<Caller>>,
    by_secret: HashMap<[u8; 32], usize>,
    peers: Vec<(Option<u32>, Option<u32>, usize)>,
    sources: Vec<(Cidr, usize)>,
}

/// Which kind of listener a request came through, as far as identification cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Proxy,
    Reverse,
    Tunnel,
}

impl Callers {
    /// Indexes `defs`; `bucket` gives each caller's rate-limit bucket (kept across reloads).
    pub fn new(defs: &[CallerDefinition], mut bucket: impl FnMut(&CallerDefinition) -> Option<Arc<Bucket>>) -> Callers {
        let mut callers = Callers::default();
        for (i, def) in defs.iter().enumerate() {
            callers.list.push(Arc::new(Caller { name: Arc::from(def.name.as_str()), rate: bucket(def) }));
            if let Some(d) = def.secret_digest {
                callers.by_secret.insert(d, i);
            }
            if def.uid.is_some() || def.gid.is_some() {
                callers.peers.push((def.uid, def.gid, i));
            }
            callers.sources.extend(def.sources.iter().map(|s| (*s, i)));
        }
        callers
    }

    /// Whether callers are configured at all (if not, nobody is asked who they are).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The caller named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Caller>> {
        self.list.iter().find(|c| &*c.name == name)
    }

    /// Who sent a request: `Ok(None)` when no callers are configured.
    pub fn identify(
        &self,
        listener: Listener,
        peer: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Caller>>, Unidentified> {
        if self.is_empty() {
            return Ok(None);
        }
        if let Peer::Tunnel(name) = peer {
            return match name.as_deref().map(|n| self.by_name(n)) {
                Some(Some(caller)) => Ok(Some(Arc::clone(caller))),
                Some(None) => Err(Unidentified(
                    "the caller that opened this tunnel is not configured any more; open a new one".into(),
                )),
                None => Err(Unidentified(
                    "this tunnel was opened before callers were configured; open a new one with Proxy-Authorization"
                        .into(),
                )),
            };
        }
        let mut credentials = headers.get_all(http::header::PROXY_AUTHORIZATION).iter();
        if let Some(value) = credentials.next() {
            if credentials.next().is_some() {
                return Err(Unidentified("more than one Proxy-Authorization header".into()));
            }
            return self.by_credentials(value.as_bytes()).map(|c| Some(Arc::clone(c)));
        }
        let found = match (peer, listener) {
            (Peer::Unix { uid, gid }, _) => self
                .peers
                .iter()
                .find(|(u, g, _)| u.is_none_or(|u| u == *uid) && g.is_none_or(|g| g == *gid))
                .map(|(_, _, i)| *i)
                .ok_or_else(|| format!("no caller is configured for uid {uid} gid {gid}")),
            (Peer::Tcp(addr), Listener::Reverse) => {
                let ip = match addr.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                self.sources.iter().find(|(cidr, _)| cidr.contains(ip)).map(|(_, i)| *i).ok_or_else(|| {
                    format!("no caller is configured for source address {ip}; or send Proxy-Authorization")
                })
            }
            (Peer::Unknown, _) => Err("the peer's credentials could not be read; send Proxy-Authorization".into()),
            _ => Err("send Proxy-Authorization: Basic (the caller's name and secret) or Bearer (its secret)".into()),
        };
        found.map(|i| Some(Arc::clone(&self.list[i]))).map_err(Unidentified)
    }

    /// The caller whose secret a `Proxy-Authorization` value carries.
    fn by_credentials(&self, value: &[u8]) -> Result<&Arc<Caller>, Unidentified> {
        let refused = || Unidentified("the proxy credentials are not accepted".into());
        let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => return Err(refused()),
        };
        if scheme.eq_ignore_ascii_case(b"bearer") {
            return self.by_secret.get(&digest(rest)).map(|i| &self.list[*i]).ok_or_else(refused);
        }
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return Err(Unidentified("use the Basic or Bearer scheme in Proxy-Authorization".into()));
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| refused())?;
        let colon = decoded.iter().position(|b| *b == b':').ok_or_else(refused)?;
        let (user, secret) = (&decoded[..colon], &decoded[colon + 1..]);
        let caller = self.by_secret.get(&digest(secret)).map(|i| &self.list[*i]).ok_or_else(refused)?;
        // The name must agree too, so a secret cannot be used under another caller's name.
        if caller.name.as_bytes() != user {
            return Err(refused());
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, secret: Option<&str>, uid: Option<u32>, gid: Option<u32>, sources: &[&str]) -> CallerDefinition {
        CallerDefinition {
            name: name.into(),
            secret_digest: secret.map(|s| digest(s.as_bytes())),
            uid,
            gid,
            sources: sources.iter().map(|s| Cidr::parse(s).unwrap()).collect(),
            rate_limit: None,
        }
    }

    fn callers() -> Callers {
        Callers::new(
            &[
                def("fn-a", Some("secret-a-0123456789"), None, None, &[]),
                def("fn-b", Some("secret-b-0123456789"), Some(1000), None, &["10.0.0.0/8"]),
                def("fn-c", None, Some(1001), Some(50), &[]),
            ],
            |_| None,
        )
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::PROXY_AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn basic(user: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
    }

    fn name(r: Result<Option<Arc<Caller>>, Unidentified>) -> Result<String, String> {
        r.map(|c| c.map_or_else(|| "-".to_string(), |c| c.name.to_string())).map_err(|e| e.0)
    }

    #[test]
    fn proxy_authorization_names_the_caller() {
        let c = callers();
        let tcp = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        let id = |value: &str| name(c.identify(Listener::Proxy, &tcp, &headers(value)));
        assert_eq!(id(&basic("fn-a", "secret-a-0123456789")), Ok("fn-a".into()));
        assert_eq!(id("Bearer secret-b-0123456789"), Ok("fn-b".into()));
        assert_eq!(id("bearer   secret-b-0123456789 "), Ok("fn-b".into()));
        assert!(id(&basic("fn-b", "secret-a-0123456789")).is_err(), "a secret under another name");
        assert!(id(&basic("fn-a", "secret-a-012345678")).is_err());
        assert!(id("Bearer secret-a-01234567890").is_err());
        assert!(id("Digest secret-a-0123456789").unwrap_err().contains("Basic or Bearer"));
        assert!(id("Basic !!!").is_err());
        assert!(id("Basic").is_err());
        assert!(name(c.identify(Listener::Proxy, &tcp, &HeaderMap::new()))
            .unwrap_err()
            .contains("send Proxy-Authorization"));
        let mut two = headers("Bearer secret-b-0123456789");
        two.append(http::header::PROXY_AUTHORIZATION, "Bearer secret-a-0123456789".parse().unwrap());
        assert!(name(c.identify(Listener::Proxy, &tcp, &two)).unwrap_err().contains("more than one"));
    }

    #[test]
    fn unix_peers_sources_and_tunnels() {
        let c = callers();
        let none = HeaderMap::new();
        let unix = |uid, gid| name(c.identify(Listener::Proxy, &Peer::Unix { uid, gid }, &none));
        assert_eq!(unix(1000, 7), Ok("fn-b".into()));
        assert_eq!(unix(1001, 50), Ok("fn-c".into()));
        assert!(unix(1001, 51).unwrap_err().contains("uid 1001 gid 51"));
        let from = |addr: &str, listener| name(c.identify(listener, &Peer::Tcp(addr.parse().unwrap()), &none));
        assert_eq!(from("10.1.2.3:9", Listener::Reverse), Ok("fn-b".into()));
        assert_eq!(from("[::ffff:10.1.2.3]:9", Listener::Reverse), Ok("fn-b".into()));
        assert!(from("11.1.2.3:9", Listener::Reverse).is_err());
        assert!(from("10.1.2.3:9", Listener::Proxy).is_err(), "sources identify only on reverse listeners");
        let tunnel = Peer::Tunnel(Some(Arc::from("fn-c")));
        assert_eq!(name(c.identify(Listener::Tunnel, &tunnel, &none)), Ok("fn-c".into()));
        assert!(name(c.identify(Listener::Tunnel, &Peer::Tunnel(Some(Arc::from("gone"))), &none)).is_err());
        assert_eq!(name(Callers::default().identify(Listener::Proxy, &Peer::Tunnel(None), &none)), Ok("-".into()));
    }
}
