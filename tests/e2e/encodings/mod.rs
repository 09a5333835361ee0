//! Issue 12, part A: every placeholder spelling in every position, the value escaped for where
//! it lands, refusals in every spelling, and `Authorization: Basic` credentials. Through the
//! real binary to a recording upstream, with real clients (curl, Python `requests`, git).
//!
//! The spellings table these tests hold the sidecar to is in the README ("Using it from an
//! agent function"); `src/substitute/grammar.rs` implements it.

mod basic;
mod escaping;
mod git;
mod python_requests;
mod refusals;
mod spellings;
mod streamed;

use bytes::Bytes;

use crate::support::client::Reply;
use crate::support::config::{config, route, rs256_token, toml_str};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::Running;
use crate::support::upstream::{Recorded, Upstream};

/// A static secret holding every byte that means something in a URI, a form, JSON or a
/// header value, and non-ASCII text.
pub const HOSTILE: &str = "a\"b\\c&d=e+f%g h/ü?#;'<>";

/// Bodies above this size stream (chunked) instead of being rewritten whole.
pub const MAX_BUFFERED: usize = 512;

/// A recording upstream and the sidecar binary routing to it.
///
/// The route binds `tok` (an RS256 JWT, also as `auth_token`) and `hostile` (a static secret,
/// [`HOSTILE`]); `elsewhere` is a token bound only to a route to another upstream, so naming
/// it here must be refused; `later` is an exchanged token whose endpoint is down, bound here,
/// so it is never available.
pub struct World {
    pub upstream: Upstream,
    pub run: Running,
}

impl World {
    pub async fn start() -> World {
        let upstream = Upstream::start().await;
        let other = Upstream::start().await;
        let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to leave closed");
        let down_url = format!("http://{}/token", down.local_addr().expect("addr"));
        drop(down);
        let text = config(
            &format!("max_buffered_body = \"{MAX_BUFFERED}\""),
            &format!(
                "{tok}{elsewhere}\n[tokens.hostile]\nkind = \"secret\"\nkey = {hostile}\n\n\
                 [tokens.later]\nkind = \"oauth2\"\ntoken_url = {down_url}\ngrant = \"client_credentials\"\n\n\
                 {here}{there}",
                tok = rs256_token("tok", "15m"),
                elsewhere = rs256_token("elsewhere", "15m"),
                hostile = toml_str(HOSTILE),
                down_url = toml_str(&down_url),
                here = route(
                    upstream.port(),
                    &["tok", "hostile", "later"],
                    "[routes.placeholders]\nauth_token = \"tok\"\n",
                ),
                there = route(other.port(), &["elsewhere"], ""),
            ),
        );
        let run = Running::start(&text).await;
        World { upstream, run }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        self.upstream.url(path_and_query)
    }

    /// The only request the upstream received.
    pub fn received(&self) -> Recorded {
        self.upstream.last().expect("the upstream received no request")
    }
}

/// The bearer JWT a request carried, checked to be the demo-signed `tok`.
pub fn bearer_jwt(seen: &Recorded) -> String {
    let token = seen.token().to_string();
    assert_eq!(verify_demo(&token)["sub"], "tok", "not the route's token: {token}");
    token
}

/// Asserts the upstream's 200 and returns the request it recorded last.
pub fn relayed(world: &World, reply: &Reply) -> Recorded {
    reply.assert_upstream_ok();
    world.received()
}

/// Decodes `%XX` (and, in forms, `+` as a space): what a server makes of what it received.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape %{hex} in {text}")));
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The fields of a form body (or a query), decoded, in order.
pub fn form_fields(body: &[u8]) -> Vec<(String, Bytes)> {
    std::str::from_utf8(body)
        .expect("a form body is ASCII")
        .split('&')
        .filter(|f| !f.is_empty())
        .map(|field| {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            (String::from_utf8(percent_decode(k, true)).expect("UTF-8 key"), Bytes::from(percent_decode(v, true)))
        })
        .collect()
}
