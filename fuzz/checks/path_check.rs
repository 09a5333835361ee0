// Shared by fuzz/fuzz_targets/path_check.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// The routed-path check (`token_sidecar::proxy::path`):
// - `match_view` and `check_routed` never panic;
// - `match_view` equals a naive reference (one pass, `%XX` of unreserved bytes decoded), and
//   on validly percent-encoded paths it keeps their meaning (decoding both gives the same bytes);
// - the security property: when a route with this prefix matches the view and `check_routed`
//   lets it through, then under every reading a server might apply (no decoding, decoding once,
//   twice or three times, `\` as `/`, `;params` dropped, fullwidth look-alikes and overlong
//   UTF-8 folded to ASCII, in either order), resolving `.` and `..` segments (RFC 3986 5.2.4)
//   leaves the path inside the prefix. More than three rounds of decoding are out of scope by
//   design (see the module docs).
//
// Input: the route prefix, a newline, the request path (UTF-8; the query, if any, is cut off
// as the proxy does).

use token_sidecar::proxy::path::{check_routed, match_view};
use token_sidecar::routes::{HostPattern, RouteSpec, RouteTable, Scheme};

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `%XX` at `at`, as a byte.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    Some(hex(*bytes.get(at + 1)?)? * 16 + hex(*bytes.get(at + 2)?)?)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// One pass of percent-decoding; `only` picks which decoded bytes are kept decoded.
fn decode(bytes: &[u8], only: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(b) if only(b) => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn valid_percent_encoding(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| b != b'%' || escape_at(bytes, i).is_some())
}

fn backslash_as_slash(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect()
}

fn drop_params(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, seg) in bytes.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(seg.split(|&b| b == b';').next().unwrap_or_default());
    }
    out
}

/// Fullwidth `.` `/` `\`, the one-dot leader, and overlong 2- and 3-byte UTF-8 forms of ASCII,
/// as lenient decoders read them.
fn fold_to_ascii(bytes: &[u8]) -> Vec<u8> {
    const FOLDS: [(&[u8], u8); 4] =
        [(b"\xEF\xBC\x8E", b'.'), (b"\xE2\x80\xA4", b'.'), (b"\xEF\xBC\x8F", b'/'), (b"\xEF\xBC\xBC", b'\\')];
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'next: while i < bytes.len() {
        for (from, to) in FOLDS {
            if bytes[i..].starts_with(from) {
                out.push(to);
                i += from.len();
                continue 'next;
            }
        }
        match bytes[i..] {
            [a @ (0xC0 | 0xC1), b, ..] => {
                out.push(((a & 0x1F) << 6) | (b & 0x3F));
                i += 2;
            }
            [0xE0, b @ 0x80..=0x81, c, ..] => {
                out.push(((b & 0x3F) << 6) | (c & 0x3F));
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Segments after RFC 3986 dot-segment removal, empty segments merged away.
fn resolved_segments(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for seg in bytes.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            seg => out.push(seg),
        }
    }
    out
}

type Reading = fn(&[u8]) -> Vec<u8>;

/// How different servers read a path, from none to everything at once.
const READINGS: &[(&str, Reading)] = &[
    ("as is", |p| p.to_vec()),
    ("decoded once", |p| decode(p, |_| true)),
    ("decoded twice", |p| decode(&decode(p, |_| true), |_| true)),
    ("backslash, then decoded", |p| decode(&backslash_as_slash(p), |_| true)),
    ("decoded, then backslash", |p| backslash_as_slash(&decode(p, |_| true))),
    ("params dropped, then decoded", |p| decode(&drop_params(p), |_| true)),
    ("decoded, then params dropped", |p| drop_params(&decode(p, |_| true))),
    ("decoded, folded", |p| fold_to_ascii(&decode(p, |_| true))),
    ("everything", |p| {
        let mut p = p.to_vec();
        for _ in 0..3 {
            p = decode(&p, |_| true);
        }
        drop_params(&backslash_as_slash(&fold_to_ascii(&p)))
    }),
];

/// Whether a route with `prefix` matches `path` in the real route table.
fn routed(prefix: &str, path: &str) -> bool {
    let spec = RouteSpec {
        scheme: Scheme::Http,
        host: HostPattern::Exact("h".into()),
        port: None,
        path_prefix: prefix.to_owned(),
        methods: Vec::new(),
        value: (),
    };
    RouteTable::new(vec![spec]).is_ok_and(|t| t.find(Scheme::Http, "h", 80, path, &http::Method::GET).is_some())
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (prefix, path) = text.split_once('\n').unwrap_or(("/", text));
    let path = path.split(['?', '#']).next().unwrap_or_default();

    let view = match_view(path);
    assert_eq!(view.as_bytes(), decode(path.as_bytes(), unreserved), "match_view({path:?})");
    if valid_percent_encoding(path.as_bytes()) {
        assert_eq!(
            decode(view.as_bytes(), |_| true),
            decode(path.as_bytes(), |_| true),
            "match_view changed what {path:?} means"
        );
    }
    let verdict = check_routed(prefix, &view);
    let _ = check_routed(prefix, path);
    if let Err(why) = verdict {
        assert!(!why.to_string().is_empty());
        return;
    }
    // The property is stated for plain prefixes: segments of ASCII text that no reading changes.
    let plain_prefix = prefix.is_ascii()
        && !prefix.contains(['%', '\\', ';'])
        && prefix.split('/').all(|s| s != "." && s != "..")
        && fold_to_ascii(prefix.as_bytes()) == prefix.as_bytes();
    if !plain_prefix || !routed(prefix, &view) {
        return;
    }
    let want = resolved_segments(prefix.as_bytes());
    for (name, read) in READINGS {
        let read = read(view.as_bytes());
        let have = resolved_segments(&read);
        assert!(
            have.len() >= want.len() && want.iter().zip(&have).all(|(w, h)| w == h),
            "{path:?} (sent as {view:?}) passed the check for prefix {prefix:?}, but read {name} it is {:?}",
            String::from_utf8_lossy(&read)
        );
    }
}
