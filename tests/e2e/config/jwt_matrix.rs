//! Every algorithm with every key type it accepts, keys in each real-world form and from each
//! source, built through `Config::from_text`, minted, and verified independently with the
//! public key from openssl. Then the claims and header a token carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{json, Value};

use crate::support::config::{mint, mint_at, render, single, toml_str, ConfigDir};
use crate::support::jwt::{algorithm, decoding_key, parts, validation, verify};
use crate::support::keys::{
    hmac_secret_b64, hmac_secret_b64url, keys, openssl, KeyForms, Keys, HMAC_SECRET, PLAIN_SECRET,
};

/// Where the key material comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// `key = "..."` in the config.
    Inline,
    /// `key_file = "..."`, a path relative to the config file.
    File,
    /// `key_file = "/abs/path"`.
    AbsFile,
    /// `key_env = "VAR"`.
    Env,
}

/// One encoding of one key.
#[derive(Clone, Copy, Debug)]
enum Form {
    PlainSecret,
    Base64Secret,
    UrlSafeBase64Secret,
    RsaPkcs1Pem,
    RsaPkcs8Pem,
    RsaPkcs1Der,
    RsaPkcs8Der,
    Ec256Sec1Pem,
    Ec256Pkcs8Pem,
    Ec256Sec1Der,
    Ec256Pkcs8Der,
    Ec384Sec1Pem,
    Ec384Pkcs8Pem,
    Ec384Sec1Der,
    Ec384Pkcs8Der,
    EdPem,
    EdDer,
    GoogleServiceAccount,
}

impl Form {
    fn key_type(self) -> &'static str {
        match self {
            Form::PlainSecret => "Secret",
            Form::Base64Secret => "Base64Secret",
            Form::UrlSafeBase64Secret => "UrlSafeBase64Secret",
            Form::RsaPkcs1Pem | Form::RsaPkcs8Pem => "RsaPem",
            Form::RsaPkcs1Der | Form::RsaPkcs8Der => "RsaDer",
            Form::Ec256Sec1Pem | Form::Ec256Pkcs8Pem | Form::Ec384Sec1Pem | Form::Ec384Pkcs8Pem => "EcPem",
            Form::Ec256Sec1Der | Form::Ec256Pkcs8Der | Form::Ec384Sec1Der | Form::Ec384Pkcs8Der => "EcDer",
            Form::EdPem => "EdPem",
            Form::EdDer => "EdDer",
            Form::GoogleServiceAccount => "GoogleServiceAccountJson",
        }
    }

    fn pair(self, k: &Keys) -> Option<&KeyForms> {
        match self {
            Form::PlainSecret | Form::Base64Secret | Form::UrlSafeBase64Secret => None,
            Form::RsaPkcs1Pem
            | Form::RsaPkcs8Pem
            | Form::RsaPkcs1Der
            | Form::RsaPkcs8Der
            | Form::GoogleServiceAccount => Some(&k.rsa),
            Form::Ec256Sec1Pem | Form::Ec256Pkcs8Pem | Form::Ec256Sec1Der | Form::Ec256Pkcs8Der => Some(&k.ec256),
            Form::Ec384Sec1Pem | Form::Ec384Pkcs8Pem | Form::Ec384Sec1Der | Form::Ec384Pkcs8Der => Some(&k.ec384),
            Form::EdPem | Form::EdDer => Some(&k.ed),
        }
    }

    fn material(self, k: &Keys) -> String {
        let traditional = |f: &KeyForms, der: bool| {
            if der { f.traditional_der_b64.clone() } else { f.traditional_pem.clone() }.expect("traditional form")
        };
        match self {
            Form::PlainSecret => PLAIN_SECRET.to_string(),
            Form::Base64Secret => hmac_secret_b64(),
            Form::UrlSafeBase64Secret => hmac_secret_b64url(),
            Form::RsaPkcs1Pem => traditional(&k.rsa, false),
            Form::RsaPkcs1Der => traditional(&k.rsa, true),
            Form::Ec256Sec1Pem => traditional(&k.ec256, false),
            Form::Ec256Sec1Der => traditional(&k.ec256, true),
            Form::Ec384Sec1Pem => traditional(&k.ec384, false),
            Form::Ec384Sec1Der => traditional(&k.ec384, true),
            Form::RsaPkcs8Pem | Form::Ec256Pkcs8Pem | Form::Ec384Pkcs8Pem | Form::EdPem => {
                self.pair(k).expect("pair").pkcs8_pem.clone()
            }
            Form::RsaPkcs8Der | Form::Ec256Pkcs8Der | Form::Ec384Pkcs8Der | Form::EdDer => {
                self.pair(k).expect("pair").pkcs8_der_b64.clone()
            }
            // As Google's console downloads it: the PKCS#8 PEM inside JSON.
            Form::GoogleServiceAccount => serde_json::json!({
                "type": "service_account",
                "private_key_id": "matrix-key-id",
                "private_key": k.rsa.pkcs8_pem,
                "client_email": "matrix@example.iam.gserviceaccount.com",
            })
            .to_string(),
        }
    }

    /// The verification key, derived from openssl's output, never from the sidecar.
    fn decoding_key(self, alg: Algorithm, k: &Keys) -> DecodingKey {
        match self {
            Form::PlainSecret => DecodingKey::from_secret(PLAIN_SECRET.as_bytes()),
            Form::Base64Secret | Form::UrlSafeBase64Secret => DecodingKey::from_secret(&HMAC_SECRET),
            _ => decoding_key(alg, &self.pair(k).expect("pair").public_pem),
        }
    }
}

/// Builds `[tokens.t]` with the key from `source`, mints, and verifies.
fn run_case(test: &str, alg_name: &str, form: Form, source: Source) {
    let k = keys();
    let alg = algorithm(alg_name);
    let dir = ConfigDir::empty();
    let material = form.material(k);
    let key_line = match source {
        Source::Inline => format!("key = {}", toml_str(&material)),
        Source::File => {
            // Files end with a newline, as editors and `echo` write them.
            dir.write("signing.key", format!("{material}\n"));
            "key_file = \"signing.key\"".to_string()
        }
        Source::AbsFile => {
            let path = dir.write("abs.key", &material);
            format!("key_file = {}", toml_str(path.to_str().expect("utf-8 path")))
        }
        Source::Env => {
            let var = format!("TSIT_MATRIX_{}", test.to_uppercase());
            std::env::set_var(&var, &material);
            format!("key_env = \"{var}\"")
        }
    };
    let kid = format!("kid-{test}");
    let config = dir.config(&format!(
        r#"
[tokens.t]
kind = "jwt"
algorithm = "{alg_name}"
key_type = "{}"
{key_line}
ttl = "10m"
kid = "{kid}"

[tokens.t.claims]
iss = "matrix"
aud = "matrix-aud"
case = "{test}"
"#,
        form.key_type()
    ));
    let def = &config.tokens["t"];
    assert_eq!(def.algorithm_name(), Some(alg_name));
    assert_eq!(def.kid(), Some(kid.as_str()));

    let token = mint(&config, "t");
    let claims = verify(&token, &form.decoding_key(alg, k), &validation(alg, Some("matrix-aud")));
    assert_eq!(claims["iss"], "matrix");
    assert_eq!(claims["case"], test);
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 600);
    let (header, _) = parts(&token);
    assert_eq!(header["alg"], alg_name);
    assert_eq!(header["kid"], kid.as_str());
    assert_eq!(header["typ"], "JWT");

    // The published JWK verifies the same token (asymmetric only; a secret is never published).
    match form.pair(k) {
        None => assert!(def.public_jwk().is_none(), "an HMAC secret must not be exposed as a JWK"),
        Some(_) => {
            let json = serde_json::Value::Object(def.public_jwk().expect("asymmetric tokens have a public JWK"));
            assert_eq!(json["kid"].as_str(), Some(kid.as_str()));
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(json.clone()).expect("a JWK jsonwebtoken reads");
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(json.get(private).is_none(), "public JWK must not contain `{private}`: {json}");
            }
            let from_jwk = DecodingKey::from_jwk(&jwk).expect("decoding key from JWK");
            verify(&token, &from_jwk, &validation(alg, Some("matrix-aud")));
        }
    }
}

macro_rules! matrix {
    ($($test:ident: $alg:literal, $form:ident, $source:ident;)*) => {
        $(
            #[test]
            fn $test() {
                run_case(stringify!($test), $alg, Form::$form, Source::$source);
            }
        )*
        /// The matrix above must cover every compatible (algorithm, key type) pair.
        #[test]
        fn matrix_covers_every_compatible_pair() {
            use token_sidecar::tokens::algorithm::{compatible_key_types, ALGORITHMS};
            let covered: Vec<(&str, &str)> = vec![$(($alg, Form::$form.key_type())),*];
            // ES512 (which jsonwebtoken cannot verify) and JWK keys are covered by
            // tests/e2e/jose, with openssl as the verifier.
            for (name, alg) in ALGORITHMS.into_iter().filter(|(name, _)| *name != "ES512") {
                for kt in compatible_key_types(alg).filter(|kt| kt.name() != "Jwk") {
                    assert!(covered.contains(&(name, kt.name())), "no matrix case for {name} with {}", kt.name());
                }
            }
            for source in ["Inline", "File", "AbsFile", "Env"] {
                assert!([$(stringify!($source)),*].contains(&source), "no matrix case reads its key from {source}");
            }
        }
    };
}

matrix! {
    hs256_secret_inline: "HS256", PlainSecret, Inline;
    hs256_base64_file: "HS256", Base64Secret, File;
    hs256_urlsafe_env: "HS256", UrlSafeBase64Secret, Env;
    hs384_secret_file: "HS384", PlainSecret, File;
    hs384_base64_env: "HS384", Base64Secret, Env;
    hs384_urlsafe_inline: "HS384", UrlSafeBase64Secret, Inline;
    hs512_secret_env: "HS512", PlainSecret, Env;
    hs512_base64_inline: "HS512", Base64Secret, Inline;
    hs512_urlsafe_file: "HS512", UrlSafeBase64Secret, AbsFile;

    rs256_pkcs1_pem_file: "RS256", RsaPkcs1Pem, File;
    rs256_pkcs8_pem_inline: "RS256", RsaPkcs8Pem, Inline;
    rs256_pkcs1_der_env: "RS256", RsaPkcs1Der, Env;
    rs256_pkcs8_der_inline: "RS256", RsaPkcs8Der, Inline;
    rs384_pkcs1_pem_env: "RS384", RsaPkcs1Pem, Env;
    rs384_pkcs8_pem_file: "RS384", RsaPkcs8Pem, File;
    rs384_pkcs1_der_inline: "RS384", RsaPkcs1Der, Inline;
    rs384_pkcs8_der_env: "RS384", RsaPkcs8Der, Env;
    rs512_pkcs1_pem_inline: "RS512", RsaPkcs1Pem, Inline;
    rs512_pkcs8_pem_env: "RS512", RsaPkcs8Pem, Env;
    rs512_pkcs1_der_file: "RS512", RsaPkcs1Der, File;
    rs512_pkcs8_der_file: "RS512", RsaPkcs8Der, AbsFile;
    ps256_pkcs1_pem_env: "PS256", RsaPkcs1Pem, Env;
    ps256_pkcs8_pem_file: "PS256", RsaPkcs8Pem, File;
    ps256_pkcs1_der_inline: "PS256", RsaPkcs1Der, Inline;
    ps256_pkcs8_der_env: "PS256", RsaPkcs8Der, Env;
    ps384_pkcs1_pem_file: "PS384", RsaPkcs1Pem, File;
    ps384_pkcs8_pem_inline: "PS384", RsaPkcs8Pem, Inline;
    ps384_pkcs1_der_env: "PS384", RsaPkcs1Der, Env;
    ps384_pkcs8_der_file: "PS384", RsaPkcs8Der, File;
    ps512_pkcs1_pem_inline: "PS512", RsaPkcs1Pem, Inline;
    ps512_pkcs8_pem_env: "PS512", RsaPkcs8Pem, Env;
    ps512_pkcs1_der_file: "PS512", RsaPkcs1Der, File;
    ps512_pkcs8_der_inline: "PS512", RsaPkcs8Der, Inline;
    rs256_google_json_file: "RS256", GoogleServiceAccount, File;
    rs384_google_json_env: "RS384", GoogleServiceAccount, Env;
    rs512_google_json_inline: "RS512", GoogleServiceAccount, Inline;
    ps256_google_json_file: "PS256", GoogleServiceAccount, AbsFile;
    ps384_google_json_env: "PS384", GoogleServiceAccount, Env;
    ps512_google_json_file: "PS512", GoogleServiceAccount, File;

    es256_sec1_pem_file: "ES256", Ec256Sec1Pem, File;
    es256_pkcs8_pem_env: "ES256", Ec256Pkcs8Pem, Env;
    es256_sec1_der_inline: "ES256", Ec256Sec1Der, Inline;
    es256_pkcs8_der_file: "ES256", Ec256Pkcs8Der, File;
    es384_sec1_pem_inline: "ES384", Ec384Sec1Pem, Inline;
    es384_pkcs8_pem_file: "ES384", Ec384Pkcs8Pem, File;
    es384_sec1_der_env: "ES384", Ec384Sec1Der, Env;
    es384_pkcs8_der_inline: "ES384", Ec384Pkcs8Der, Inline;

    eddsa_pem_file: "EdDSA", EdPem, File;
    eddsa_pem_inline: "EdDSA", EdPem, Inline;
    eddsa_der_env: "EdDSA", EdDer, Env;
    eddsa_der_file: "EdDSA", EdDer, AbsFile;
}

// ---------------------------------------------------------------------------------------------
// Claims and header. HS256 keeps these fast; verification uses the secret independently.

fn hs256_token(dir: &ConfigDir, body: &str) -> (Value, Value) {
    hs256_token_at(dir, body, SystemTime::now())
}

fn hs256_token_at(dir: &ConfigDir, body: &str, now: SystemTime) -> (Value, Value) {
    let config = dir.config(&hs256_config(body));
    let token = mint_at(&config, "t", now);
    let (header, claims) = parts(&token);
    // The signature must hold whatever the claims are.
    let mut v = validation(Algorithm::HS256, None);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    v.validate_aud = false;
    assert_eq!(verify(&token, &DecodingKey::from_secret(PLAIN_SECRET.as_bytes()), &v), claims);
    (header, claims)
}

fn hs256_config(body: &str) -> String {
    format!(
        "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = {}\nttl = \"10m\"\n{body}",
        toml_str(PLAIN_SECRET)
    )
}

fn without_auto(mut claims: Value) -> Value {
    let map = claims.as_object_mut().expect("claims object");
    for k in ["iat", "exp", "nbf", "jti"] {
        map.remove(k);
    }
    claims
}

#[test]
fn claims_keep_their_toml_types() {
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(
        &dir,
        r#"
[tokens.t.claims]
iss = "https://agents.example.com"
tenant_id = 4711
negative = -3
ratio = 0.25
whole_float = 250.0
live = false
admin = true
roles = ["reader", "exporter"]
mixed = [1, "two", 3.5, true, [4], { five = 5 }]
empty = []
since = 1979-05-27T07:32:00Z

[tokens.t.claims.ctx]
region = "eu-west-1"
tier = 2

[tokens.t.claims.ctx.limits]
rps = 10.5
"#,
    );
    assert_eq!(
        without_auto(claims.clone()),
        json!({
            "iss": "https://agents.example.com",
            "tenant_id": 4711,
            "negative": -3,
            "ratio": 0.25,
            "whole_float": 250.0,
            "live": false,
            "admin": true,
            "roles": ["reader", "exporter"],
            "mixed": [1, "two", 3.5, true, [4], {"five": 5}],
            "empty": [],
            "since": "1979-05-27T07:32:00Z",
            "ctx": {"region": "eu-west-1", "tier": 2, "limits": {"rps": 10.5}},
        })
    );
    assert!(claims["tenant_id"].is_i64(), "integers stay integers: {claims}");
    assert!(claims["whole_float"].is_f64(), "250.0 stays a float: {claims}");
}

#[test]
fn scope_is_kept_as_written() {
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(&dir, "[tokens.t.claims]\nscope = \"read write  admin\"\n");
    assert_eq!(claims["scope"], json!("read write  admin"), "a space-separated scope is not split or normalised");

    let (_, claims) = hs256_token(&dir, "[tokens.t.claims]\nscope = [\"tasks:read\", \"tasks:update\"]\n");
    assert_eq!(claims["scope"], json!(["tasks:read", "tasks:update"]));
}

#[test]
fn iat_and_exp_follow_the_mint_time_and_ttl() {
    let dir = ConfigDir::empty();
    let config = dir.config(
        "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Base64Secret\"\nkey = \"c2VjcmV0\"\nttl = \"1h 30m\"\n",
    );
    let at = UNIX_EPOCH + Duration::from_millis(2_000_000_000_250);
    let minted = config.tokens["t"].mint(at).expect("mint");
    // The cell's times are the claims' whole seconds, so expiry is exactly the `exp` claim.
    let whole = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    assert_eq!(minted.issued_at, whole);
    assert_eq!(minted.expires_at, whole + Duration::from_secs(5400));
    let (_, claims) = parts(std::str::from_utf8(&minted.value).expect("ASCII"));
    assert_eq!(claims, json!({"iat": 2_000_000_000u64, "exp": 2_000_005_400u64}));
    assert_eq!(config.tokens["t"].ttl, Duration::from_secs(5400));

    // Minted now, it passes an independent exp check.
    let token = mint(&config, "t");
    let claims = verify(&token, &DecodingKey::from_secret(b"secret"), &validation(Algorithm::HS256, None));
    let iat = claims["iat"].as_u64().expect("iat");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    assert!(iat <= now && now - iat < 60, "iat {iat} is the mint time (now {now})");
    assert_eq!(claims["exp"].as_u64().expect("exp") - iat, 5400);
}

#[test]
fn nbf_and_jti_only_when_requested() {
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(&dir, "");
    let keys: Vec<&String> = claims.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["exp", "iat"], "default auto claims are iat and exp only");

    let body = "auto_claims = [\"iat\", \"exp\", \"nbf\", \"jti\"]\n";
    let (_, claims) = hs256_token(&dir, body);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 600);
    let jti = claims["jti"].as_str().expect("jti is a string");
    assert_eq!(jti.len(), 36, "UUID-shaped jti: {jti}");

    let config = dir.config(&hs256_config(body));
    let a = parts(&mint(&config, "t")).1;
    let b = parts(&mint(&config, "t")).1;
    assert_ne!(a["jti"], b["jti"], "every signed token gets its own jti");

    // nbf passes an independent nbf check when minted now.
    let mut v = validation(Algorithm::HS256, None);
    v.validate_nbf = true;
    verify(&mint(&config, "t"), &DecodingKey::from_secret(PLAIN_SECRET.as_bytes()), &v);

    let (_, claims) = hs256_token(&dir, "auto_claims = [\"jti\"]\n");
    let keys: Vec<&String> = claims.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["jti"]);
}

#[test]
fn auto_claims_can_be_switched_off() {
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(&dir, "auto_claims = []\n\n[tokens.t.claims]\nsub = \"svc\"\n");
    assert_eq!(claims, json!({"sub": "svc"}), "auto_claims = [] adds nothing");

    // With exp switched off, a fixed exp may be written by hand and is kept.
    let (_, claims) = hs256_token(&dir, "auto_claims = [\"iat\"]\n\n[tokens.t.claims]\nexp = 4102444800\n");
    assert_eq!(claims["exp"], json!(4_102_444_800u64));
    assert!(claims.get("iat").is_some());

    // Writing a claim that is also added automatically is a located error.
    let errors = dir.errors(&hs256_config("[tokens.t.claims]\nexp = 4102444800\n"));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t.claims.exp");
    assert_eq!((e.line, e.column), (7, 7));
    assert!(e.message.contains("added automatically"), "{e}");

    let errors = dir.errors(&hs256_config("auto_claims = [\"iat\", \"iss\"]\n"));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t.auto_claims");
    assert_eq!(e.message, "unknown automatic claim \"iss\" (expected some of iat, exp, nbf, jti)");
}

#[test]
fn env_references_in_claims_are_expanded() {
    std::env::set_var("TSIT_CLAIMS_TEAM", "infra");
    std::env::set_var("TSIT_CLAIMS_TASK", "task-42");
    std::env::remove_var("TSIT_CLAIMS_UNSET");
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(
        &dir,
        r#"
[tokens.t.claims]
sub = "workflow-task:${TSIT_CLAIMS_TASK}"
team = "${TSIT_CLAIMS_TEAM}"
two = "${TSIT_CLAIMS_TEAM}/${TSIT_CLAIMS_TASK}"
fallback = "${TSIT_CLAIMS_UNSET:-local}"
empty_fallback = "${TSIT_CLAIMS_UNSET:-}"
set_wins = "${TSIT_CLAIMS_TEAM:-local}"
literal = "$${TSIT_CLAIMS_TEAM}"
price = "$5"
list = ["${TSIT_CLAIMS_TEAM}", 7]
nested = { team = "${TSIT_CLAIMS_TEAM}" }
"#,
    );
    assert_eq!(
        without_auto(claims),
        json!({
            "sub": "workflow-task:task-42",
            "team": "infra",
            "two": "infra/task-42",
            "fallback": "local",
            "empty_fallback": "",
            "set_wins": "infra",
            "literal": "${TSIT_CLAIMS_TEAM}",
            "price": "$5",
            "list": ["infra", 7],
            "nested": {"team": "infra"},
        })
    );
}

#[test]
fn unset_env_reference_without_default_is_a_located_error() {
    std::env::remove_var("TSIT_CLAIMS_MISSING");
    let dir = ConfigDir::empty();
    let errors = dir.errors(&hs256_config("\n[tokens.t.claims]\nsub = \"id-${TSIT_CLAIMS_MISSING}\"\n"));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t.claims.sub");
    assert_eq!((e.line, e.column), (8, 7));
    assert_eq!(
        e.message,
        "environment variable TSIT_CLAIMS_MISSING is not set (write ${TSIT_CLAIMS_MISSING:-default} to fall back)"
    );
}

/// `${VAR:-default}` comes from the shell (and docker compose, systemd-style templates), where
/// `:-` means "unset *or empty*"; `${VAR-default}` is the form for "unset only".
#[test]
fn env_default_applies_to_an_empty_variable() {
    std::env::set_var("TSIT_CLAIMS_EMPTY", "");
    let dir = ConfigDir::empty();
    let (_, claims) = hs256_token(&dir, "[tokens.t.claims]\nsub = \"${TSIT_CLAIMS_EMPTY:-local}\"\n");
    assert_eq!(claims["sub"], "local");
}

#[test]
fn header_has_kid_typ_and_extra_fields() {
    let dir = ConfigDir::empty();
    let (header, _) = hs256_token(
        &dir,
        r#"kid = "key-2026-01"
typ = "at+jwt"

[tokens.t.header]
x-client = "token-sidecar"
ver = 3
flags = ["a", "b"]
"#,
    );
    assert_eq!(
        header,
        json!({
            "alg": "HS256",
            "kid": "key-2026-01",
            "typ": "at+jwt",
            "x-client": "token-sidecar",
            "ver": 3,
            "flags": ["a", "b"],
        })
    );

    // jsonwebtoken's own header parser sees the same fields.
    let config = dir.config(&hs256_config("kid = \"k\"\n[tokens.t.header]\nx-client = \"sidecar\"\n"));
    let decoded = jsonwebtoken::decode_header(mint(&config, "t")).expect("header");
    assert_eq!(decoded.kid.as_deref(), Some("k"));
    assert_eq!(decoded.typ.as_deref(), Some("JWT"));
    assert_eq!(decoded.extras.inner().get("x-client"), Some(&json!("sidecar")));

    // Without kid or typ settings: typ defaults to JWT, no kid.
    let (header, _) = hs256_token(&dir, "");
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    // An empty typ leaves it out.
    let (header, _) = hs256_token(&dir, "typ = \"\"\n");
    assert_eq!(header, json!({"alg": "HS256"}));
}

#[test]
fn reserved_header_fields_must_use_their_own_settings() {
    let dir = ConfigDir::empty();
    let errors = dir.errors(&hs256_config("[tokens.t.header]\nalg = \"none\"\nkid = \"x\"\n"));
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    assert_eq!(errors[0].key_path, "tokens.t.header.alg");
    assert_eq!(errors[0].message, "set `alg` with its own field on the token, not in [header]");
    assert_eq!(errors[1].key_path, "tokens.t.header.kid");
}

#[test]
fn asymmetric_header_and_claims_verify_with_openssl_key() {
    // The claims/header features are not HS-only: one RS256 and one EdDSA token carry them.
    let k = keys();
    for (alg, key_type, pem, public) in [
        ("RS256", "RsaPem", &k.rsa.pkcs8_pem, &k.rsa.public_pem),
        ("EdDSA", "EdPem", &k.ed.pkcs8_pem, &k.ed.public_pem),
    ] {
        let dir = ConfigDir::empty();
        dir.write("k.pem", pem);
        let config = dir.config(&format!(
            r#"[tokens.t]
algorithm = "{alg}"
key_type = "{key_type}"
key_file = "k.pem"
ttl = "2m"
kid = "kid-{alg}"
typ = "at+jwt"
auto_claims = ["iat", "exp", "nbf", "jti"]

[tokens.t.header]
x-tenant = "acme"

[tokens.t.claims]
aud = "https://api.example.com"
scope = "read write"
n = 1
"#
        ));
        let token = mint(&config, "t");
        let alg = algorithm(alg);
        let mut v = validation(alg, Some("https://api.example.com"));
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "aud"]);
        let claims = verify(&token, &decoding_key(alg, public), &v);
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["n"], 1);
        assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 120);
        let (header, _) = parts(&token);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"], format!("kid-{}", config.tokens["t"].algorithm_name().unwrap_or_default()));
        assert_eq!(header["x-tenant"], "acme");
    }
}

/// `same_definition` lets a reload keep the current token of a table that did not change.
/// Moving a table (a comment added above it, another token edited) does not change it.
#[test]
fn same_definition_ignores_where_the_table_sits_in_the_file() {
    let dir = ConfigDir::empty();
    let text = hs256_config("[tokens.t.claims]\nsub = \"svc\"\n");
    let a = dir.config(&text);
    let b = dir.config(&format!("# a comment added above the token\n{text}"));
    assert!(a.tokens["t"].same_definition(&b.tokens["t"]), "only the position changed");
}

#[test]
fn same_definition_sees_changed_settings() {
    let dir = ConfigDir::empty();
    let a = dir.config(&hs256_config("[tokens.t.claims]\nsub = \"svc\"\n"));
    let a2 = dir.config(&hs256_config("[tokens.t.claims]\nsub = \"svc\"\n"));
    let b = dir.config(&hs256_config("[tokens.t.claims]\nsub = \"other\"\n"));
    assert!(a.tokens["t"].same_definition(&a2.tokens["t"]), "identical text is the same definition");
    assert!(!a.tokens["t"].same_definition(&b.tokens["t"]), "a changed claim is a different definition");

    // The same settings with a rotated key file are a different definition.
    dir.write("s.txt", "one");
    let text = "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey_file = \"s.txt\"\nttl = \"1m\"\n";
    let before = dir.config(text);
    dir.write("s.txt", "two");
    let after = dir.config(text);
    assert!(!before.tokens["t"].same_definition(&after.tokens["t"]), "a rotated key is a different definition");
    assert_eq!(after.tokens["t"].key_file(), Some(dir.path("s.txt").as_path()));
    assert!(after.watched_files.contains(&dir.path("s.txt")), "key files are watched for rotation");
}

// ---------------------------------------------------------------------------------------------
// Key files as they turn up in practice.

fn mint_and_verify_file(alg_name: &str, key_type: &str, contents: &str, public_pem: &str) {
    let dir = ConfigDir::empty();
    dir.write("key", contents);
    let config = dir.config(&format!(
        "[tokens.t]\nalgorithm = \"{alg_name}\"\nkey_type = \"{key_type}\"\nkey_file = \"key\"\nttl = \"1m\"\n"
    ));
    let alg = algorithm(alg_name);
    verify(&mint(&config, "t"), &decoding_key(alg, public_pem), &validation(alg, None));
}

#[test]
fn pem_with_crlf_line_endings() {
    let k = keys();
    let crlf = |s: &str| s.replace('\n', "\r\n");
    mint_and_verify_file("RS256", "RsaPem", &crlf(k.rsa.traditional_pem.as_ref().expect("PKCS#1")), &k.rsa.public_pem);
    mint_and_verify_file("ES256", "EcPem", &crlf(&k.ec256.pkcs8_pem), &k.ec256.public_pem);
    mint_and_verify_file("EdDSA", "EdPem", &crlf(&k.ed.pkcs8_pem), &k.ed.public_pem);
}

#[test]
fn sec1_pem_with_ec_parameters_block() {
    // `openssl ecparam -genkey` without -noout writes an EC PARAMETERS block before the key.
    let k = keys();
    let params = String::from_utf8(openssl(&["ecparam", "-name", "secp384r1"], b"")).expect("PEM");
    assert!(params.starts_with("-----BEGIN EC PARAMETERS-----"));
    let sec1 = k.ec384.traditional_pem.as_ref().expect("SEC1");
    mint_and_verify_file("ES384", "EcPem", &format!("{params}{sec1}"), &k.ec384.public_pem);
}

#[test]
fn pem_bundle_with_certificate_and_key() {
    // A certificate followed by its key, as some tools write a combined PEM.
    let k = keys();
    mint_and_verify_file("PS256", "RsaPem", &format!("{}{}", k.rsa_cert_pem, k.rsa.pkcs8_pem), &k.rsa.public_pem);
}

#[test]
fn base64_der_may_be_wrapped_like_base64_output() {
    // `base64` wraps at 76 columns, `openssl base64` at 64.
    let k = keys();
    let wrap = |s: &str, width: usize| {
        s.as_bytes().chunks(width).map(|c| std::str::from_utf8(c).expect("ASCII")).collect::<Vec<_>>().join("\n")
    };
    mint_and_verify_file("RS384", "RsaDer", &wrap(&k.rsa.pkcs8_der_b64, 76), &k.rsa.public_pem);
    mint_and_verify_file("ES256", "EcDer", &wrap(&k.ec256.pkcs8_der_b64, 64), &k.ec256.public_pem);
    mint_and_verify_file("EdDSA", "EdDer", &wrap(&k.ed.pkcs8_der_b64, 20), &k.ed.public_pem);
}

#[test]
fn rsa_pss_labelled_pkcs8_signs_and_openssl_verifies() {
    // NetSuite's recipe makes the key with `openssl genpkey -algorithm RSA-PSS`: PKCS#8 whose
    // algorithm is rsassaPss rather than rsaEncryption. openssl itself checks the signature.
    let dir = ConfigDir::empty();
    let key = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-pkeyopt",
            "rsa_pss_keygen_md:sha256",
            "-pkeyopt",
            "rsa_pss_keygen_mgf1_md:sha256",
        ],
        b"",
    );
    let key_path = dir.write("pss.pem", &key);
    let public = openssl(&["pkey", "-pubout", "-in", key_path.to_str().expect("utf-8 path")], b"");
    let public_path = dir.write("pss.pub", &public);
    let config =
        dir.config("[tokens.t]\nalgorithm = \"PS256\"\nkey_type = \"RsaPem\"\nkey_file = \"pss.pem\"\nttl = \"1m\"\n");
    let token = mint(&config, "t");
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let signature_path = dir.write("sig", &signature);
    let message_path = dir.write("msg", signing_input);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    let verified = openssl(
        &[
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
            &path(&public_path),
            "-signature",
            &path(&signature_path),
            &path(&message_path),
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&verified).trim(), "Verified OK");
}
