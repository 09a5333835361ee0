//! `kind = "oauth2"`: what a token endpoint exchange sends and how its answer is read,
//! checked when the config loads. The exchange itself runs in [`crate::exchange`].
//!
//! Every value that comes from another token (an assertion, a client secret, `{/other}` in a
//! template) is kept as a template and resolved at exchange time, so a signed assertion is
//! fresh for each attempt and a rotated secret is used by the next one.

use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use toml::Spanned;

use super::jwt::{expand_env, expand_env_str, toml_to_json};
use super::BuildContext;
use crate::config::raw::{RawExchangeResponse, RawToken};
use crate::config::values::parse_duration;
use crate::config::Collector;

/// `client_assertion_type` of RFC 7523 §2.2, sent with every `private_key_jwt` assertion.
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of RFC 7523 §2.1.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One checked oauth2 token: the request to make and how to read the answer.
#[derive(Debug, Clone)]
pub struct ExchangeDefinition {
    pub token_url: Uri,
    pub method: Method,
    /// Header templates (`{/other}` resolved per exchange).
    pub headers: Vec<(HeaderName, String)>,
    /// `client_secret_basic`: client id and the secret's template, sent as Basic credentials.
    pub basic: Option<(String, String)>,
    pub body: ExchangeBody,
    pub response: ResponseSpec,
    /// `[expose]`: answer fields written as `{/NAME.field}`.
    pub expose: Vec<(Box<str>, String)>,
    /// Configured `refresh_before`; used only when shorter than an issued token's lifetime.
    pub refresh_before: Option<Duration>,
    /// Every other token this one needs, for the dependency check and the exchange.
    pub references: Vec<Reference>,
    /// `dpop`: the `kind = "dpop"` key that proves possession of this token (RFC 9449).
    pub dpop: Option<String>,
}

/// The body of the token endpoint request.
#[derive(Debug, Clone)]
pub enum ExchangeBody {
    /// `application/x-www-form-urlencoded` fields, in order.
    Form(Vec<FormField>),
    /// A JSON document whose strings are templates.
    Json(serde_json::Value),
    /// A text template sent as is.
    Text(String),
    Empty,
}

/// One form field; `template` says whether `{/other}` in the value is resolved.
#[derive(Debug, Clone)]
pub struct FormField {
    pub name: String,
    pub value: String,
    pub template: bool,
}

/// Where the answer holds the token and its lifetime.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub token: String,
    pub expires_in: String,
    pub expires_at: Option<String>,
    pub expiry_from_jwt: bool,
    pub default_ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub token_type: Option<String>,
}

/// A use of another token, with where it was written (for config errors).
#[derive(Debug, Clone)]
pub struct Reference {
    /// The name as written: a token, or `TOKEN.field` for an exposed field.
    pub name: String,
    /// The kind the reference needs (`client_secret` must name a secret), if restricted.
    pub kind: Option<&'static str>,
    pub key_path: String,
    pub span: Range<usize>,
}

/// Checks one `kind = "oauth2"` table. Problems go to `c`.
pub(super) fn build(
    ctx: &BuildContext<'_>,
    raw: &Spanned<RawToken>,
    c: &mut Collector<'_>,
) -> Option<ExchangeDefinition> {
    let before = c.len();
    let r = raw.get_ref();
    let at = |field: &str| format!("{}.{field}", ctx.key_path);
    let lookup = |k: &str| std::env::var(k).ok();
    let env = |s: &Spanned<String>, key: &str, c: &mut Collector<'_>| {
        expand_env_str(s.get_ref(), &lookup).map_err(|e| c.error(s.span(), key, e)).ok()
    };

    for (field, span) in super::fields::not_taken_by(r, super::fields::Kinds::OAUTH2) {
        c.error(
            span,
            at(field),
            "does not apply to kind = \"oauth2\" (the token comes from token_url; sign an assertion with a \
             separate kind = \"jwt\" token and name it in `assertion` or `client_assertion`)",
        );
    }

    let token_url = match &r.token_url {
        None => {
            c.error(
                raw.span(),
                ctx.key_path,
                "missing `token_url` (the token endpoint, such as \"https://idp.example/oauth2/token\")",
            );
            None
        }
        Some(u) => env(u, &at("token_url"), c)
            .and_then(|text| token_endpoint(&text).map_err(|e| c.error(u.span(), at("token_url"), e)).ok()),
    };

    let grant = match &r.grant {
        None => {
            c.error(raw.span(), ctx.key_path, "missing `grant` (\"jwt_bearer\", \"client_credentials\" or \"custom\")");
            None
        }
        Some(g) => match g.get_ref().as_str() {
            "jwt_bearer" | "client_credentials" | "custom" => Some(g.get_ref().as_str()),
            other => {
                c.error(
                    g.span(),
                    at("grant"),
                    format!("unknown grant {other:?} (expected \"jwt_bearer\", \"client_credentials\" or \"custom\")"),
                );
                None
            }
        },
    };

    let mut references = Vec::new();
    let mut headers = Vec::new();
    let mut basic = None;
    let mut method = Method::POST;
    let body = match grant {
        Some("custom") => {
            let only_standard = [
                ("grant_type", r.grant_type.as_ref().map(Spanned::span)),
                ("assertion", r.assertion.as_ref().map(Spanned::span)),
                ("scope", r.scope.as_ref().map(Spanned::span)),
                ("client_id", r.client_id.as_ref().map(Spanned::span)),
                ("client_auth", r.client_auth.as_ref().map(Spanned::span)),
                ("client_secret", r.client_secret.as_ref().map(Spanned::span)),
                ("client_assertion", r.client_assertion.as_ref().map(Spanned::span)),
                ("form", r.form.values().next().map(Spanned::span)),
            ];
            for (field, span) in only_standard {
                if let Some(span) = span {
                    c.error(
                        span,
                        at(field),
                        "does not apply to grant = \"custom\" (write the request in [request]; other tokens go in as {/NAME})",
                    );
                }
            }
            match &r.request {
                None => {
                    c.error(
                        raw.span(),
                        ctx.key_path,
                        "grant = \"custom\" needs a [request] table (method, headers, json or body)",
                    );
                    ExchangeBody::Empty
                }
                Some(req) => {
                    let q = req.get_ref();
                    if let Some(m) = &q.method {
                        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                            Ok(m) => method = m,
                            Err(_) => c.error(
                                m.span(),
                                at("request.method"),
                                format!("not an HTTP method: {:?}", m.get_ref()),
                            ),
                        }
                    }
                    for (name, value) in &q.headers {
                        let key = at(&format!("request.headers.{name}"));
                        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                            c.error(value.span(), &key, format!("not a valid header name: {name:?}"));
                            continue;
                        };
                        let Some(text) = env(value, &key, c) else { continue };
                        if HeaderValue::from_str(&text).is_err() {
                            c.error(value.span(), &key, "a header value must be printable text");
                            continue;
                        }
                        collect_references(&text, None, &key, value.span(), &mut references);
                        headers.push((header, text));
                    }
                    match (&q.json, &q.body) {
                        (Some(_), Some(b)) => {
                            c.error(b.span(), at("request.body"), "set `json` or `body`, not both");
                            ExchangeBody::Empty
                        }
                        (Some(j), None) => {
                            let key = at("request.json");
                            match toml_to_json(j.get_ref()).and_then(|mut v| expand_env(&mut v, &lookup).map(|()| v)) {
                                Ok(v) => {
                                    json_references(&v, &key, j.span(), &mut references);
                                    ExchangeBody::Json(v)
                                }
                                Err(e) => {
                                    c.error(j.span(), key, e);
                                    ExchangeBody::Empty
                                }
                            }
                        }
                        (None, Some(b)) => {
                            let key = at("request.body");
                            match env(b, &key, c) {
                                Some(text) => {
                                    collect_references(&text, None, &key, b.span(), &mut references);
                                    ExchangeBody::Text(text)
                                }
                                None => ExchangeBody::Empty,
                            }
                        }
                        (None, None) => ExchangeBody::Empty,
                    }
                }
            }
        }
        Some(grant) => {
            if let Some(req) = &r.request {
                c.error(req.span(), at("request"), "[request] is only for grant = \"custom\"");
            }
            let fields = standard_form(ctx, raw, grant, &mut basic, &mut references, c);
            ExchangeBody::Form(fields)
        }
        None => ExchangeBody::Empty,
    };

    let response = response_spec(ctx, r.response.as_ref(), c);
    let mut expose = Vec::new();
    for (field, pointer) in &r.expose {
        let key = at(&format!("expose.{field}"));
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            c.error(
                pointer.span(),
                &key,
                "an exposed field name must be A-Z a-z 0-9 _ - (it is written {/NAME.field})",
            );
            continue;
        }
        if ctx.name.len() + 1 + field.len() > 64 {
            c.error(
                pointer.span(),
                &key,
                format!("{{/{}.{field}}} is longer than the 64 bytes a placeholder may be", ctx.name),
            );
            continue;
        }
        if let Err(e) = check_pointer(pointer.get_ref()) {
            c.error(pointer.span(), &key, e);
            continue;
        }
        expose.push((Box::from(field.as_str()), pointer.get_ref().clone()));
    }
    let refresh_before = r.refresh_before.as_ref().and_then(|d| match parse_duration(d.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            c.error(d.span(), at("refresh_before"), "must be more than 0s");
            None
        }
        Err(e) => {
            c.error(d.span(), at("refresh_before"), e);
            None
        }
    });

    let dpop = r.dpop.as_ref().map(|d| {
        references.push(Reference {
            name: d.get_ref().clone(),
            kind: Some("dpop"),
            key_path: at("dpop"),
            span: d.span(),
        });
        d.get_ref().clone()
    });

    if c.len() != before {
        return None;
    }
    Some(ExchangeDefinition {
        dpop,
        token_url: token_url?,
        method,
        headers,
        basic,
        body,
        response,
        expose,
        refresh_before,
        references,
    })
}

/// The form of `jwt_bearer` and `client_credentials`: the grant, its assertion, the client's
/// authentication and `[form]`, in the order RFC 6749 and RFC 7523 list them.
fn standard_form(
    ctx: &BuildContext<'_>,
    raw: &Spanned<RawToken>,
    grant: &str,
    basic: &mut Option<(String, String)>,
    references: &mut Vec<Reference>,
    c: &mut Collector<'_>,
) -> Vec<FormField> {
    let r = raw.get_ref();
    let at = |field: &str| format!("{}.{field}", ctx.key_path);
    let lookup = |k: &str| std::env::var(k).ok();
    let literal = |name: &str, value: String| FormField { name: name.into(), value, template: false };
    let token_ref = |name: &str, token: &Spanned<String>, kind: &'static str, refs: &mut Vec<Reference>| {
        refs.push(Reference {
            name: token.get_ref().clone(),
            kind: Some(kind),
            key_path: at(name),
            span: token.span(),
        });
        FormField { name: name.into(), value: format!("{{/{}}}", token.get_ref()), template: true }
    };

    let grant_type = match &r.grant_type {
        Some(g) => expand_env_str(g.get_ref(), &lookup).unwrap_or_else(|e| {
            c.error(g.span(), at("grant_type"), e);
            String::new()
        }),
        None if grant == "jwt_bearer" => JWT_BEARER_GRANT.into(),
        None => "client_credentials".into(),
    };
    let mut form = vec![literal("grant_type", grant_type)];
    match (&r.assertion, grant) {
        (Some(a), "jwt_bearer") => form.push(token_ref("assertion", a, "jwt", references)),
        (None, "jwt_bearer") => c.error(
            raw.span(),
            ctx.key_path,
            "grant = \"jwt_bearer\" needs `assertion`: the name of a kind = \"jwt\" token to exchange",
        ),
        (Some(a), _) => c.error(a.span(), at("assertion"), "only grant = \"jwt_bearer\" sends an assertion"),
        (None, _) => {}
    }
    if let Some(scope) = &r.scope {
        match scope_text(scope.get_ref()) {
            Ok(text) if !text.is_empty() => form.push(literal("scope", text)),
            Ok(_) => {}
            Err(e) => c.error(scope.span(), at("scope"), e),
        }
    }
    let client_id = r
        .client_id
        .as_ref()
        .and_then(|id| expand_env_str(id.get_ref(), &lookup).map_err(|e| c.error(id.span(), at("client_id"), e)).ok());
    let auth = match &r.client_auth {
        Some(a) => match a.get_ref().as_str() {
            m @ ("none" | "client_secret_basic" | "client_secret_post" | "private_key_jwt") => m,
            other => {
                c.error(
                    a.span(),
                    at("client_auth"),
                    format!(
                        "unknown client_auth {other:?} (expected \"none\", \"client_secret_basic\", \
                         \"client_secret_post\" or \"private_key_jwt\")"
                    ),
                );
                "none"
            }
        },
        None if r.client_assertion.is_some() => "private_key_jwt",
        None if r.client_secret.is_some() => "client_secret_basic",
        None => "none",
    };
    let auth_span = r.client_auth.as_ref().map_or_else(|| raw.span(), Spanned::span);
    let needs_secret = matches!(auth, "client_secret_basic" | "client_secret_post");
    match (&r.client_secret, needs_secret) {
        (Some(s), false) => {
            c.error(s.span(), at("client_secret"), format!("client_auth = \"{auth}\" sends no client secret"));
        }
        (None, true) => c.error(
            auth_span.clone(),
            at("client_auth"),
            format!("client_auth = \"{auth}\" needs `client_secret`: the name of a kind = \"secret\" token"),
        ),
        _ => {}
    }
    match (&r.client_assertion, auth == "private_key_jwt") {
        (Some(a), false) => {
            c.error(a.span(), at("client_assertion"), format!("client_auth = \"{auth}\" sends no client assertion"));
        }
        (None, true) => c.error(
            auth_span.clone(),
            at("client_auth"),
            "client_auth = \"private_key_jwt\" needs `client_assertion`: the name of a kind = \"jwt\" token",
        ),
        _ => {}
    }
    if needs_secret && client_id.is_none() {
        c.error(auth_span, at("client_auth"), format!("client_auth = \"{auth}\" needs `client_id`"));
    }
    match auth {
        "client_secret_basic" => {
            if let (Some(id), Some(secret)) = (&client_id, &r.client_secret) {
                let field = token_ref("client_secret", secret, "secret", references);
                *basic = Some((id.clone(), field.value));
            }
        }
        _ => {
            if let Some(id) = &client_id {
                form.push(literal("client_id", id.clone()));
            }
            if let (Some(secret), "client_secret_post") = (&r.client_secret, auth) {
                form.push(token_ref("client_secret", secret, "secret", references));
            }
            if let (Some(assertion), "private_key_jwt") = (&r.client_assertion, auth) {
                form.push(token_ref("client_assertion", assertion, "jwt", references));
                form.push(literal("client_assertion_type", CLIENT_ASSERTION_TYPE.into()));
            }
        }
    }
    for (name, value) in &r.form {
        let key = at(&format!("form.{name}"));
        if form.iter().any(|f| f.name == *name) || matches!(name.as_str(), "client_secret" | "client_assertion_type") {
            c.error(value.span(), &key, format!("`{name}` is set by the sidecar; use the token's own field for it"));
            continue;
        }
        match expand_env_str(value.get_ref(), &lookup) {
            Ok(text) => {
                collect_references(&text, None, &key, value.span(), references);
                form.push(FormField { name: name.clone(), value: text, template: true });
            }
            Err(e) => c.error(value.span(), key, e),
        }
    }
    form
}

fn response_spec(
    ctx: &BuildContext<'_>,
    raw: Option<&Spanned<RawExchangeResponse>>,
    c: &mut Collector<'_>,
) -> ResponseSpec {
    let empty = RawExchangeResponse::default();
    let r = raw.map_or(&empty, Spanned::get_ref);
    let at = |field: &str| format!("{}.response.{field}", ctx.key_path);
    let pointer = |value: &Option<Spanned<String>>, field: &str, c: &mut Collector<'_>| {
        let v = value.as_ref()?;
        check_pointer(v.get_ref()).map_err(|e| c.error(v.span(), at(field), e)).ok()?;
        Some(v.get_ref().clone())
    };
    let token = pointer(&r.token, "token", c).unwrap_or_else(|| "/access_token".into());
    let expires_in = pointer(&r.expires_in, "expires_in", c).unwrap_or_else(|| "/expires_in".into());
    let expires_at = pointer(&r.expires_at, "expires_at", c);
    let expiry_from_jwt = match &r.expiry_from {
        None => false,
        Some(v) if v.get_ref() == "jwt" => true,
        Some(v) => {
            c.error(v.span(), at("expiry_from"), "the only value is \"jwt\" (the issued token's own exp claim)");
            false
        }
    };
    let duration = |value: &Option<Spanned<String>>, field: &str, c: &mut Collector<'_>| {
        let v = value.as_ref()?;
        match parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                c.error(v.span(), at(field), "must be more than 0s");
                None
            }
            Err(e) => {
                c.error(v.span(), at(field), e);
                None
            }
        }
    };
    let default_ttl = duration(&r.default_ttl, "default_ttl", c);
    let max_ttl = duration(&r.max_ttl, "max_ttl", c);
    ResponseSpec {
        token,
        expires_in,
        expires_at,
        expiry_from_jwt,
        default_ttl,
        max_ttl,
        token_type: r.token_type.as_ref().map(|t| t.get_ref().clone()),
    }
}

/// A token endpoint URL: https, or http to this machine only (a token endpoint is where a
/// secret or a signed assertion goes; over plain HTTP anyone on the path would read it).
fn token_endpoint(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("needs a host, such as https://idp.example/oauth2/token")?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not hold credentials; use client_auth and client_secret".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if matches!(host, "127.0.0.1" | "[::1]" | "::1" | "localhost") => Ok(uri),
        Some("http") => Err(format!("must be https (plain http is only allowed to this machine, not {host:?})")),
        _ => Err("must start with https://".into()),
    }
}

fn scope_text(value: &toml::Value) -> Result<String, String> {
    let lookup = |k: &str| std::env::var(k).ok();
    match value {
        toml::Value::String(s) => expand_env_str(s, &lookup),
        toml::Value::Array(items) => {
            let parts = items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or("every scope must be a string")
                        .map_err(String::from)
                        .and_then(|s| expand_env_str(s, &lookup))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(parts.join(" "))
        }
        _ => Err("must be a string or an array of strings".into()),
    }
}

/// An RFC 6901 JSON Pointer: empty, or `/`-separated with `~0`/`~1` escapes only.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!("{p:?} is not a JSON Pointer (it starts with /, such as \"/access_token\")"));
    }
    let bytes = p.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!("{p:?}: `~` must be followed by 0 or 1 in a JSON Pointer"));
        }
    }
    Ok(())
}

/// Records every `{/NAME}` in a template as a reference.
fn collect_references(
    text: &str,
    kind: Option<&'static str>,
    key_path: &str,
    span: Range<usize>,
    out: &mut Vec<Reference>,
) {
    for name in crate::substitute::placeholder_names(text.as_bytes()) {
        out.push(Reference { name: name.to_string(), kind, key_path: key_path.to_string(), span: span.clone() });
    }
}

fn json_references(v: &serde_json::Value, key_path: &str, span: Range<usize>, out: &mut Vec<Reference>) {
    match v {
        serde_json::Value::String(s) => collect_references(s, None, key_path, span, out),
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_references(i, key_path, span.clone(), out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| json_references(i, key_path, span.clone(), out)),
        _ => {}
    }
}
