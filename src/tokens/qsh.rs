//! Atlassian Connect's query string hash (`qsh`): SHA-256, in lowercase hex, of the canonical
//! request `METHOD&PATH&QUERY`.
//!
//! Written from Atlassian's "Query string hash" specification:
//! - the method in upper case;
//! - the path relative to the app's base URL (its context path dropped), `/` when empty,
//!   without a trailing `/` unless it is the only character, every `&` written `%26`; the path
//!   is taken as sent (percent-encodings kept as they are);
//! - the query parameters, without `jwt`, each name and value percent-decoded (`+` is a
//!   space) and then percent-encoded again per RFC 3986 (everything but `A-Z a-z 0-9 - . _ ~`,
//!   so a space is `%20` and `*` is `%2A`), sorted by encoded name; the values of a repeated
//!   name are sorted and joined with `,`; pairs joined with `&`.
//!
//! Repeated values are sorted by their decoded text, as Atlassian's own implementation (and
//! the `atlassian-jwt` libraries that must agree with it) do; for values that differ only in
//! characters that are left unencoded the two orders are the same.

use std::collections::BTreeMap;

/// The canonical request Atlassian hashes.
pub fn canonical_request(method: &str, path: &str, query: Option<&str>, context_path: Option<&str>) -> String {
    format!("{}&{}&{}", method.to_ascii_uppercase(), canonical_path(path, context_path), canonical_query(query))
}

/// The `qsh` claim: lowercase hex SHA-256 of the canonical request.
pub fn query_string_hash(method: &str, path: &str, query: Option<&str>, context_path: Option<&str>) -> String {
    let canonical = canonical_request(method, path, query, context_path);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    hex(digest.as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn canonical_path(path: &str, context_path: Option<&str>) -> String {
    let mut path = path;
    if let Some(context) = context_path.map(|c| c.trim_end_matches('/')).filter(|c| !c.is_empty()) {
        if let Some(rest) = path.strip_prefix(context) {
            if rest.is_empty() || rest.starts_with('/') {
                path = rest;
            }
        }
    }
    let trimmed = path.trim_matches('/');
    format!("/{}", trimmed.replace('&', "%26"))
}

fn canonical_query(query: Option<&str>) -> String {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        if name == "jwt" {
            continue;
        }
        params.entry(encode(&name)).or_default().push(form_decode(value));
    }
    let mut out = String::new();
    for (name, mut values) in params {
        values.sort();
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&name);
        out.push('=');
        let encoded: Vec<String> = values.iter().map(|v| encode(v)).collect();
        out.push_str(&encoded.join(","));
    }
    out
}

/// Percent-decodes (with `+` as a space), reading invalid UTF-8 as U+FFFD and a `%` that does
/// not start an escape as itself, as form decoders do.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, upper-case hex.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of Atlassian's specification.
    #[test]
    fn atlassian_examples() {
        assert_eq!(canonical_request("get", "/", Some("param=foo"), None), "GET&/&param=foo");
        assert_eq!(canonical_request("POST", "/user", None, None), "POST&/user&");
        assert_eq!(
            canonical_request(
                "GET",
                "/path/to/service",
                Some("zee_last=param&repeated=parameter%201&first=param&repeated=parameter%202"),
                None
            ),
            "GET&/path/to/service&first=param&repeated=parameter%201,parameter%202&zee_last=param"
        );
        assert_eq!(
            canonical_request("GET", "/jira-connector/issue", None, Some("/jira-connector")),
            "GET&/issue&",
            "the context path is dropped"
        );
        assert_eq!(canonical_request("GET", "/jira-connector", None, Some("/jira-connector/")), "GET&/&");
        assert_eq!(query_string_hash("GET", "/", None, None).len(), 64);
    }

    #[test]
    fn encoding_rules() {
        // `+` is a space, `*` and space are encoded, `~` is not, names sort by their encoding.
        assert_eq!(canonical_query(Some("b=a+b&a=*&c=~x&jwt=ignored&B=1")), "B=1&a=%2A&b=a%20b&c=~x");
        assert_eq!(canonical_query(Some("flag&x=")), "flag=&x=");
        assert_eq!(canonical_query(Some("q=%E2%9C%93&bad=%zz")), "bad=%25zz&q=%E2%9C%93");
        assert_eq!(canonical_path("/a&b/", None), "/a%26b");
        assert_eq!(canonical_path("/files/a%2Fb%20c", None), "/files/a%2Fb%20c", "the path is taken as sent");
        assert_eq!(canonical_path("", None), "/");
    }
}
