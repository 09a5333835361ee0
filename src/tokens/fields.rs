//! Which fields of a `[tokens.NAME]` table each kind of token takes.
//!
//! One table answers it for every kind, so a field added to the format is placed once and
//! every kind that does not take it refuses it (with the kind's own explanation), rather than
//! each kind keeping its own list of the others' fields.

use std::ops::Range;

use toml::Spanned;

use crate::config::raw::RawToken;

/// A set of token kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kinds(u8);

impl Kinds {
    /// `kind = "jwt"` (the default): a token the sidecar signs, per request or refreshed.
    pub(super) const JWT: Kinds = Kinds(1);
    /// `kind = "secret"`: a static value read from a key source.
    pub(super) const SECRET: Kinds = Kinds(2);
    /// `kind = "oauth2"`: a token exchanged at a token endpoint.
    pub(super) const OAUTH2: Kinds = Kinds(4);
    /// `kind = "dpop"`: a DPoP key that signs a proof per request.
    pub(super) const DPOP: Kinds = Kinds(8);

    const fn and(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    fn contains(self, kind: Kinds) -> bool {
        self.0 & kind.0 == kind.0
    }
}

/// Where a field is written in the table, when it is.
type SpanOf = fn(&RawToken) -> Option<Range<usize>>;

const SIGNED: Kinds = Kinds::JWT.and(Kinds::DPOP);
const KEYED: Kinds = SIGNED.and(Kinds::SECRET);

/// Every field a kind may refuse, the kinds that take it, and where it is written. `kind`
/// itself and `shared` (checked against `[fleet]`) are not here.
const FIELDS: &[(&str, Kinds, SpanOf)] = &[
    ("algorithm", SIGNED, |r| span(&r.algorithm)),
    ("key_type", SIGNED, |r| span(&r.key_type)),
    ("key", KEYED, |r| span(&r.key)),
    ("key_file", KEYED, |r| span(&r.key_file)),
    ("key_env", KEYED, |r| span(&r.key_env)),
    ("ttl", Kinds::JWT, |r| span(&r.ttl)),
    ("refresh_before", Kinds::JWT.and(Kinds::OAUTH2), |r| span(&r.refresh_before)),
    ("iat_skew", Kinds::JWT, |r| span(&r.iat_skew)),
    ("kid", Kinds::JWT, |r| span(&r.kid)),
    ("typ", Kinds::JWT, |r| span(&r.typ)),
    ("auto_claims", Kinds::JWT, |r| span(&r.auto_claims)),
    ("claims", Kinds::JWT, |r| r.claims.values().next().map(Spanned::span)),
    ("header", Kinds::JWT, |r| r.header.values().next().map(Spanned::span)),
    ("allow_slow_signing", SIGNED, |r| span(&r.allow_slow_signing)),
    ("per_request", Kinds::JWT, |r| span(&r.per_request)),
    ("request_claims", Kinds::JWT, |r| r.request_claims.values().next().map(Spanned::span)),
    ("request_header", Kinds::JWT, |r| r.request_header.values().next().map(Spanned::span)),
    ("context_path", Kinds::JWT, |r| span(&r.context_path)),
    ("encrypt", Kinds::JWT, |r| span(&r.encrypt)),
    ("dpop", Kinds::OAUTH2, |r| span(&r.dpop)),
    ("token_url", Kinds::OAUTH2, |r| span(&r.token_url)),
    ("grant", Kinds::OAUTH2, |r| span(&r.grant)),
    ("grant_type", Kinds::OAUTH2, |r| span(&r.grant_type)),
    ("assertion", Kinds::OAUTH2, |r| span(&r.assertion)),
    ("scope", Kinds::OAUTH2, |r| span(&r.scope)),
    ("client_id", Kinds::OAUTH2, |r| span(&r.client_id)),
    ("client_auth", Kinds::OAUTH2, |r| span(&r.client_auth)),
    ("client_secret", Kinds::OAUTH2, |r| span(&r.client_secret)),
    ("client_assertion", Kinds::OAUTH2, |r| span(&r.client_assertion)),
    ("form", Kinds::OAUTH2, |r| r.form.values().next().map(Spanned::span)),
    ("request", Kinds::OAUTH2, |r| span(&r.request)),
    ("response", Kinds::OAUTH2, |r| span(&r.response)),
    ("expose", Kinds::OAUTH2, |r| r.expose.values().next().map(Spanned::span)),
];

fn span<T>(field: &Option<Spanned<T>>) -> Option<Range<usize>> {
    field.as_ref().map(Spanned::span)
}

/// The fields written in `raw` that a token of `kind` does not take, with where they are
/// written, for that kind to refuse.
pub(super) fn not_taken_by(raw: &RawToken, kind: Kinds) -> impl Iterator<Item = (&'static str, Range<usize>)> + '_ {
    FIELDS
        .iter()
        .filter(move |(_, takers, _)| !takers.contains(kind))
        .filter_map(move |(name, _, span_of)| Some((*name, span_of(raw)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table that sets only `field`, as a user would write it.
    fn only(field: &str) -> RawToken {
        let text = match field {
            "claims" | "header" | "request_claims" | "request_header" | "form" | "expose" => {
                format!("[{field}]\nsome = \"value\"\n")
            }
            "encrypt" => "[encrypt]\nalg = \"dir\"\n".to_string(),
            "request" | "response" => format!("[{field}]\n"),
            "auto_claims" => "auto_claims = [\"iat\"]\n".to_string(),
            "allow_slow_signing" | "per_request" => format!("{field} = true\n"),
            _ => format!("{field} = \"value\"\n"),
        };
        toml::from_str(&text).unwrap_or_else(|e| panic!("{field}: {e}"))
    }

    fn refused(kind: Kinds) -> Vec<&'static str> {
        FIELDS.iter().map(|f| f.0).filter(|&field| not_taken_by(&only(field), kind).next().is_some()).collect()
    }

    #[test]
    fn each_field_is_found_where_it_is_written_and_nowhere_else() {
        for (field, _, _) in FIELDS {
            let raw = only(field);
            let found: Vec<&str> =
                FIELDS.iter().filter(|(_, _, span_of)| span_of(&raw).is_some()).map(|f| f.0).collect();
            assert_eq!(found, [*field]);
        }
    }

    #[test]
    fn each_kind_refuses_the_fields_of_the_others() {
        let key = ["key", "key_file", "key_env"];
        let signing = ["algorithm", "key_type", "allow_slow_signing"];
        let jwt_only = [
            "ttl",
            "iat_skew",
            "kid",
            "typ",
            "auto_claims",
            "claims",
            "header",
            "per_request",
            "request_claims",
            "request_header",
            "context_path",
            "encrypt",
        ];
        let exchange = [
            "dpop",
            "token_url",
            "grant",
            "grant_type",
            "assertion",
            "scope",
            "client_id",
            "client_auth",
            "client_secret",
            "client_assertion",
            "form",
            "request",
            "response",
            "expose",
        ];
        let sorted = |fields: Vec<&'static str>| {
            let mut fields = fields;
            fields.sort_unstable();
            fields
        };
        let all = |groups: &[&[&'static str]]| sorted(groups.concat());
        assert_eq!(sorted(refused(Kinds::JWT)), all(&[&exchange]));
        assert_eq!(sorted(refused(Kinds::OAUTH2)), all(&[&key, &signing, &jwt_only]));
        assert_eq!(sorted(refused(Kinds::DPOP)), all(&[&jwt_only, &exchange, &["refresh_before"]]));
        assert_eq!(sorted(refused(Kinds::SECRET)), all(&[&signing, &jwt_only, &exchange, &["refresh_before"]]));
    }
}
