//! Signing cost per algorithm: `TokenDefinition::mint` for all 13 algorithms, plus RS256 and
//! PS256 with a 4096-bit RSA key.
//!
//! This is what a refresher spends on the blocking pool once per token lifetime, never on the
//! request path. Demo keys from `examples/keys` are used where they exist (RSA-2048, P-256,
//! Ed25519, a 32-byte HMAC secret); the rest (P-384, P-521, RSA-4096, 48- and 64-byte HMAC secrets)
//! are generated at start with `token_sidecar::keygen::generate` into a temporary folder.
//! Every token carries the same four claims plus `iat` and `exp`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use token_sidecar::config::Config;
use token_sidecar::keygen::generate;
use token_sidecar::tokens::algorithm::Algorithm;

/// (bench name, algorithm, key type, key file).
type Case = (&'static str, &'static str, &'static str, String);

fn cases(demo: &Path, generated: &Path) -> Vec<Case> {
    let gen = |alg: Algorithm, bits: Option<usize>, name: &str| -> String {
        let g = generate(alg, bits, generated, name, Some(name)).unwrap_or_else(|e| panic!("keygen {name}: {e}"));
        g.files[0].display().to_string()
    };
    let demo_file = |f: &str| demo.join(f).display().to_string();
    let rsa = demo_file("demo-rsa.key.pem");
    let rsa4096 = gen(Algorithm::RS256, Some(4096), "rsa4096");
    vec![
        ("HS256", "HS256", "Base64Secret", demo_file("demo-hs.secret.b64")),
        ("HS384", "HS384", "Base64Secret", gen(Algorithm::HS384, None, "hs384")),
        ("HS512", "HS512", "Base64Secret", gen(Algorithm::HS512, None, "hs512")),
        ("ES256", "ES256", "EcPem", demo_file("demo-ec.key.pem")),
        ("ES384", "ES384", "EcPem", gen(Algorithm::ES384, None, "ec384")),
        ("ES512", "ES512", "EcPem", gen(Algorithm::ES512, None, "ec521")),
        ("RS256", "RS256", "RsaPem", rsa.clone()),
        ("RS384", "RS384", "RsaPem", rsa.clone()),
        ("RS512", "RS512", "RsaPem", rsa.clone()),
        ("PS256", "PS256", "RsaPem", rsa.clone()),
        ("PS384", "PS384", "RsaPem", rsa.clone()),
        ("PS512", "PS512", "RsaPem", rsa),
        ("EdDSA", "EdDSA", "EdPem", demo_file("demo-ed.key.pem")),
        ("RS256_4096", "RS256", "RsaPem", rsa4096.clone()),
        ("PS256_4096", "PS256", "RsaPem", rsa4096),
    ]
}

fn config(cases: &[Case], dir: &Path) -> Config {
    let mut text = String::new();
    for (name, alg, key_type, key_file) in cases {
        text.push_str(&format!(
            "[tokens.{name}]\nalgorithm = \"{alg}\"\nkey_type = \"{key_type}\"\nkey_file = {key_file:?}\nkid = \"bench\"\n\
             ttl = \"15m\"\n\n[tokens.{name}.claims]\niss = \"token-sidecar-bench\"\nsub = \"agent-function\"\n\
             aud = \"api.example.com\"\nscope = \"read write\"\n\n"
        ));
    }
    Config::from_text(&dir.join("sidecar.toml"), &text).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{text}"))
}

fn bench_signing(c: &mut Criterion) {
    let generated = tempfile::tempdir().expect("temp dir");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keys");
    let cases = cases(&demo, generated.path());
    let config = config(&cases, generated.path());

    let mut group = c.benchmark_group("signing/mint");
    for (name, ..) in &cases {
        let def = &config.tokens[*name];
        assert_eq!(def.mint(SystemTime::now()).expect("mint").value.split(|&b| b == b'.').count(), 3);
        group.bench_function(*name, |b| b.iter(|| black_box(def.mint(black_box(SystemTime::now())))));
    }
    group.finish();
}

fn criterion() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = bench_signing
}
criterion_main!(benches);
