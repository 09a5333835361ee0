//! Basic credentials: placeholders hidden inside `Authorization: Basic base64(user:password)`.
//!
//! git, `curl -u`, `requests(auth=...)` and every API that takes a key as the Basic user or
//! password (Stripe, Twilio, Jira) put the credentials in base64, where `{/NAME}` is invisible
//! to a scan of the header text. So an `Authorization: Basic` value is decoded, the user and the
//! password are substituted like any header value (same refusals), and the result is encoded
//! again. A value that is not valid base64 is left for the ordinary header scan (which fills
//! `Basic {/prebuilt_credentials}`).
//!
//! A URL's userinfo (`https://user:{/token}@host/`) becomes such a header in the client
//! (curl, git, requests). A client that instead sends it in an absolute-form request target
//! through `HTTP_PROXY` gets it turned into the header here, [`basic_from_userinfo`], since
//! the target sent upstream never carries userinfo.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::HeaderValue;

use crate::substitute::{substitute_as, Bounded, Resolve, Syntax};

/// Standard base64 (RFC 7617), reading credentials with or without padding, writing them
/// padded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The credentials of a `Basic` header value, if it is one: the scheme as written and the
/// decoded `user:password` bytes.
fn decode(value: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return None;
    }
    Some((scheme, BASE64.decode(token).ok()?))
}

/// Fills placeholders in the user and password of a `Basic` header value and encodes the
/// result again. `Ok(None)` when the value is not Basic credentials, nothing was filled in, or
/// the filled-in user would hold a `:` (which would move the user/password boundary): the
/// value is then left as written.
///
/// # Errors
///
/// [`Bounded::Refused`] for a placeholder the request may not use; [`Bounded::TooLong`] when
/// the new value would exceed `max_len` bytes.
pub(crate) fn substitute_basic(
    value: &[u8],
    resolver: &dyn Resolve,
    max_len: usize,
) -> Result<Option<Vec<u8>>, Bounded> {
    let Some((scheme, credentials)) = decode(value) else { return Ok(None) };
    if !credentials.contains(&b'{') {
        return Ok(None);
    }
    // RFC 7617: the user-id cannot contain a colon, so the first one ends it.
    let (user, password) = match credentials.iter().position(|&b| b == b':') {
        Some(colon) => (&credentials[..colon], Some(&credentials[colon + 1..])),
        None => (&credentials[..], None),
    };
    let new_user = substitute_as(user, Syntax::Plain, resolver, max_len)?;
    let new_password = password.map(|p| substitute_as(p, Syntax::Plain, resolver, max_len)).transpose()?;
    let changed = matches!(new_user, Cow::Owned(_)) || matches!(new_password, Some(Cow::Owned(_)));
    if !changed || (matches!(new_user, Cow::Owned(_)) && new_user.contains(&b':')) {
        return Ok(None);
    }
    let mut plain = new_user.into_owned();
    if let Some(password) = new_password {
        plain.push(b':');
        plain.extend_from_slice(&password);
    }
    let encoded_len = scheme.len() + 1 + plain.len().div_ceil(3) * 4;
    if encoded_len > max_len {
        return Err(Bounded::TooLong);
    }
    let mut out = Vec::with_capacity(encoded_len);
    out.extend_from_slice(scheme);
    out.push(b' ');
    out.extend_from_slice(BASE64.encode(&plain).as_bytes());
    Ok(Some(out))
}

/// `Authorization: Basic` for the userinfo of an absolute URI (`user:password@host`), with
/// user and password percent-decoded as clients do before encoding them; `None` when the
/// URI has no userinfo or its decoded user holds a `:`.
#[must_use]
pub fn basic_from_userinfo(uri: &http::Uri) -> Option<HeaderValue> {
    let (userinfo, _) = uri.authority()?.as_str().rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let user = percent_decode(user.as_bytes());
    if user.contains(&b':') {
        return None;
    }
    let mut plain = user;
    plain.push(b':');
    plain.extend_from_slice(&percent_decode(password.as_bytes()));
    HeaderValue::from_str(&format!("Basic {}", BASE64.encode(&plain))).ok()
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            if let (Some(hi), Some(lo)) = (text.get(i + 1).and_then(|&b| hex(b)), text.get(i + 2).and_then(|&b| hex(b)))
            {
                // Two hex digits make at most 0xFF.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::tests::MapResolver;
    use crate::substitute::{RefusalKind, Refused};

    fn resolver() -> MapResolver {
        MapResolver::default().value("tok", b"ghs_T0KEN").value("colon", b"a:b").forbidden("other")
    }

    fn basic(plain: &str) -> String {
        format!("Basic {}", BASE64.encode(plain))
    }

    fn filled(value: &str) -> Result<Option<String>, Bounded> {
        substitute_basic(value.as_bytes(), &resolver(), 1000).map(|o| o.map(|v| String::from_utf8(v).unwrap()))
    }

    #[test]
    fn fills_user_and_password() {
        assert_eq!(filled(&basic("x-access-token:{/tok}")).unwrap(), Some(basic("x-access-token:ghs_T0KEN")));
        assert_eq!(filled(&basic("{/tok}:")).unwrap(), Some(basic("ghs_T0KEN:")));
        assert_eq!(filled(&basic("{/tok}:{/tok}")).unwrap(), Some(basic("ghs_T0KEN:ghs_T0KEN")));
        // A password may hold a colon; the scheme keeps its spelling.
        assert_eq!(filled(&basic("u:{/colon}")).unwrap(), Some(basic("u:a:b")));
        let lower = format!("basic  {}", BASE64.encode("u:{/tok}"));
        assert_eq!(filled(&lower).unwrap(), Some(format!("basic {}", BASE64.encode("u:ghs_T0KEN"))));
        // Unpadded base64 is read too.
        let unpadded = format!("Basic {}", BASE64.encode("u:{/tok}").trim_end_matches('='));
        assert_eq!(filled(&unpadded).unwrap(), Some(basic("u:ghs_T0KEN")));
    }

    #[test]
    fn leaves_what_it_cannot_or_need_not_change() {
        for value in [
            basic("user:pass"),
            basic("user:{/unknown}"),
            basic("{/colon}:pass"),
            "Basic".to_string(),
            "Basic ".to_string(),
            "Basic !!notbase64{/tok}".to_string(),
            "Basic {/tok}".to_string(),
            format!("Bearer {}", BASE64.encode("u:{/tok}")),
            format!("Basicx {}", BASE64.encode("u:{/tok}")),
        ] {
            assert_eq!(filled(&value).unwrap(), None, "{value}");
        }
    }

    #[test]
    fn refuses_unbound_tokens_inside_the_base64() {
        let refused = Bounded::Refused(Refused { name: "other".into(), kind: RefusalKind::NotBound });
        assert_eq!(filled(&basic("u:{/other}")), Err(refused.clone()));
        assert_eq!(filled(&basic("{/other}:{/tok}")), Err(refused));
    }

    #[test]
    fn the_encoded_result_is_bounded() {
        let value = basic("u:{/tok}");
        let want = basic("u:ghs_T0KEN").len();
        assert_eq!(substitute_basic(value.as_bytes(), &resolver(), want - 1), Err(Bounded::TooLong));
        assert!(substitute_basic(value.as_bytes(), &resolver(), want).unwrap().is_some());
    }

    #[test]
    fn userinfo_becomes_basic_credentials() {
        let header = |uri: &str| basic_from_userinfo(&uri.parse().unwrap()).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header("http://x-access-token:%7B%2Ftok%7D@h/p"), Some(basic("x-access-token:{/tok}")));
        assert_eq!(header("http://u%40corp:p%3Aw%25@h:8080/"), Some(basic("u@corp:p:w%")));
        assert_eq!(header("http://user@h/"), Some(basic("user:")));
        assert_eq!(header("http://%7B%2Ftok%7D@h/"), Some(basic("{/tok}:")));
        assert_eq!(header("http://a%3Ab:c@h/"), None, "a colon in the user would move the boundary");
        assert_eq!(header("http://h/"), None);
        assert_eq!(header("/origin-form"), None);
    }
}
