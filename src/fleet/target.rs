//! Where the fleet's Redis is: `[fleet] redis_url`, parsed once when the config loads.
//!
//! `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` speaks plain TCP; `rediss://` speaks TLS,
//! verified like every upstream (public roots plus `extra_ca_file`). The password is kept out
//! of every `Debug`, log line and error message.

use std::fmt;

/// A parsed `redis_url`. Its `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    password: Option<String>,
    pub db: u32,
}

/// Redis's default port, used when the URL names none.
const DEFAULT_PORT: u16 = 6379;

impl RedisTarget {
    /// Parses a `redis://` or `rediss://` URL. Errors never repeat the password.
    pub fn parse(text: &str) -> Result<RedisTarget, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("rediss://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("redis://") {
            (false, rest)
        } else {
            return Err("must start with redis:// or rediss:// (TLS)".into());
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = percent_decode(user).ok_or("the user name is not valid percent-encoded UTF-8")?;
                let pass = match pass {
                    None => None,
                    Some(p) => Some(percent_decode(p).ok_or(
                        "the password is not valid percent-encoded UTF-8 (encode @ : / % as %40 %3A %2F %25)",
                    )?),
                };
                // `redis://user@host` is a password without a user in redis-cli's reading
                // only when written `:password@`; a bare name is the password's user.
                (Some(user).filter(|u| !u.is_empty()), pass.filter(|p| !p.is_empty()))
            }
        };
        if username.is_some() && password.is_none() {
            return Err("names a user but no password (write redis://USER:PASSWORD@HOST)".into());
        }
        let (host, port) = split_host_port(hostport)?;
        let db = match path.strip_prefix('/') {
            None if path.is_empty() => 0,
            Some("") => 0,
            Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().map_err(|_| format!("database number {n} is too large"))?
            }
            _ => return Err("the path may only be a database number, such as /0".into()),
        };
        Ok(RedisTarget { host, port, tls, username, password, db })
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 address must be closed with ]")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("needs a host, such as redis://redis.fleet.svc:6379".into());
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{p:?} is not a port number")),
        },
    };
    Ok((host.to_string(), port))
}

/// `%XX` decoding; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for RedisTarget {
    /// The URL without credentials, for logs: `rediss://redis.fleet.svc:6380/2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.to_string())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_credentials_tls_and_database() {
        let t = RedisTarget::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls, t.db, t.password()), ("127.0.0.1", 6380, false, 0, None));
        let t = RedisTarget::parse("rediss://:p%40ss%3Aw0rd@redis.fleet.svc/3").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls, t.db), ("redis.fleet.svc", 6379, true, 3));
        assert_eq!((t.username.as_deref(), t.password()), (None, Some("p@ss:w0rd")));
        let t = RedisTarget::parse("redis://sidecar:hunter2@[::1]:7000/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.username.as_deref(), t.password()),
            ("::1", 7000, Some("sidecar"), Some("hunter2"))
        );
        assert_eq!(t.to_string(), "redis://[::1]:7000/0");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        for bad in [
            "http://redis:6379",
            "redis://",
            "redis://host:0",
            "redis://host:99999",
            "redis://host/db",
            "redis://user@host",
            "redis://:bad%zzsecret@host",
            "redis://ho st",
        ] {
            let e = RedisTarget::parse(bad).expect_err(bad);
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
        let t = RedisTarget::parse("redis://admin:topsecret@h").unwrap();
        for shown in [format!("{t:?}"), t.to_string()] {
            assert!(!shown.contains("topsecret"), "{shown}");
        }
    }
}
