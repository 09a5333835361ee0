//! The `token-sidecar` binary: parse flags, run the chosen command, map errors to exit codes.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use token_sidecar::cli::{CaCommand, Cli, Command};
use token_sidecar::config::Config;
use token_sidecar::tokens::algorithm::{algorithm_names, parse_algorithm};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Run => {
            token_sidecar::logging::init(&cli.log, cli.log_format);
            token_sidecar::server::run_blocking(&cli.config)
        }
        Command::Check => check(&cli),
        Command::Sign { name, request } => sign(&cli, name, request.as_deref()),
        Command::Keygen { alg, bits, crv, out, name, kid } => {
            keygen(alg, *bits, crv.as_deref(), out, name, kid.as_deref())
        }
        Command::Ca(CaCommand::Init { out }) => ca_init(out),
        Command::Ca(CaCommand::Export) => ca_export(&cli),
    }
}

fn ca_init(out: &std::path::Path) -> ExitCode {
    match token_sidecar::tls::generate_ca(out) {
        Ok((cert, key)) => {
            eprintln!("wrote {} and {} (keep the key private)", cert.display(), key.display());
            println!("[tls]\nca_cert = \"{}\"\nca_key = \"{}\"", cert.display(), key.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn ca_export(cli: &Cli) -> ExitCode {
    let Some(config) = load_or_report(cli) else {
        return ExitCode::FAILURE;
    };
    let Some(tls) = &config.tls else {
        eprintln!("{} has no [tls] section; create a CA with `token-sidecar ca init` first", cli.config.display());
        return ExitCode::FAILURE;
    };
    match std::fs::read_to_string(&tls.ca_cert) {
        Ok(pem) => {
            print!("{pem}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read {}: {e}", tls.ca_cert.display());
            ExitCode::FAILURE
        }
    }
}

fn check(cli: &Cli) -> ExitCode {
    match Config::load(&cli.config) {
        Ok(config) => {
            println!(
                "{}: ok ({} tokens, {} routes, {} listeners)",
                cli.config.display(),
                config.tokens.len(),
                config.routes.len(),
                config.listeners.len()
            );
            println!("\n{}", token_sidecar::policy::report::effective_policy(&config).trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn sign(cli: &Cli, name: &str, request: Option<&str>) -> ExitCode {
    let Some(config) = load_or_report(cli) else {
        return ExitCode::FAILURE;
    };
    let Some(token) = config.tokens.get(name) else {
        let known: Vec<&str> = config.tokens.keys().map(String::as_str).collect();
        eprintln!("no token named {name:?} in {} (defined: {})", cli.config.display(), known.join(", "));
        return ExitCode::FAILURE;
    };
    let minted = match (token.exchange(), token.is_per_request(), token.dpop_key()) {
        (Some(_), _, _) => exchange_once(config, name),
        (_, true, _) => sign_per_request(token, request),
        (_, _, Some(_)) => Err("it is a DPoP key: its proofs are signed for each request that carries the \
                                oauth2 token naming it"
            .into()),
        _ => token.mint(SystemTime::now()).map_err(|e| e.to_string()),
    };
    match minted {
        Ok(minted) => {
            println!("{}", String::from_utf8_lossy(&minted.value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot sign {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Signs a per_request token for the request given as "METHOD URL".
fn sign_per_request(
    token: &token_sidecar::tokens::TokenDefinition,
    request: Option<&str>,
) -> Result<token_sidecar::tokens::MintedToken, String> {
    use token_sidecar::tokens::per_request::RequestFacts;
    let request = request.ok_or("it is signed per request: give the request with --request \"METHOD URL\"")?;
    let (method, url) = request.trim().split_once(' ').ok_or("--request must be \"METHOD URL\"")?;
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| format!("not an HTTP method: {method:?}"))?;
    let uri: http::Uri = url.trim().parse().map_err(|e| format!("not a URL ({e}): {url:?}"))?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(format!("the URL must be absolute (https://host/path): {url:?}"));
    }
    let empty_body = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"");
    let mut body_sha256 = [0u8; 32];
    body_sha256.copy_from_slice(empty_body.as_ref());
    let facts = RequestFacts {
        method,
        uri,
        authorization: Some(b"Bearer access-token".to_vec()),
        body_sha256: Some(body_sha256),
    };
    token.sign_request(&facts, SystemTime::now()).map_err(|e| e.to_string())
}

fn keygen(
    alg: &str,
    bits: Option<usize>,
    crv: Option<&str>,
    out: &std::path::Path,
    name: &str,
    kid: Option<&str>,
) -> ExitCode {
    use token_sidecar::tokens::jwe::key_management::{EcdhCurve, KeyAlgorithm, KEY_ALGORITHMS};
    let generated = match (parse_algorithm(alg), KeyAlgorithm::parse(alg)) {
        (Some(alg), _) if crv.is_none() => token_sidecar::keygen::generate(alg, bits, out, name, kid),
        (Some(_), _) => Err(token_sidecar::keygen::KeygenError::Curve),
        (None, Some(alg)) => {
            let curve = match crv.map(|c| EcdhCurve::from_name(c).ok_or(c)) {
                Some(Err(c)) => {
                    eprintln!("unknown curve {c:?} (expected P-256, P-384, P-521 or X25519)");
                    return ExitCode::FAILURE;
                }
                Some(Ok(c)) => Some(c),
                None => None,
            };
            token_sidecar::keygen::generate_recipient(alg, curve, bits, out, name, kid)
        }
        (None, None) => {
            let encryption: Vec<&str> = KEY_ALGORITHMS.iter().map(|(n, _)| *n).filter(|n| *n != "dir").collect();
            eprintln!(
                "unknown algorithm {alg:?} (expected one of {}; for encrypted tokens {})",
                algorithm_names(),
                encryption.join(", ")
            );
            return ExitCode::FAILURE;
        }
    };
    match generated {
        Ok(generated) => {
            for f in &generated.files {
                eprintln!("wrote {}", f.display());
            }
            println!("{}", generated.config_snippet);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the exchange of `name` (and of the exchanged tokens it uses) once, as the sidecar
/// would at start-up, without starting any listener.
fn exchange_once(mut config: Config, name: &str) -> Result<token_sidecar::tokens::MintedToken, String> {
    use token_sidecar::config::dependencies::direct_dependencies;
    let mut needed = vec![name.to_string()];
    let mut i = 0;
    while let Some(next) = needed.get(i).cloned() {
        if let Some(def) = config.tokens.get(&next) {
            for dep in direct_dependencies(def, &config.tokens) {
                if !needed.contains(&dep) {
                    needed.push(dep);
                }
            }
        }
        i += 1;
    }
    config.tokens.retain(|n, _| needed.contains(n));
    config.tls = None;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let snapshot = token_sidecar::snapshot::Snapshot::build(config, None).await.map_err(|e| e.to_string())?;
        let cell = snapshot.cells.get(name).ok_or("the token did not start")?;
        match cell.current(SystemTime::now()) {
            Some(token) => Ok((*token).clone()),
            None => Err(cell.status().last_error.unwrap_or_else(|| "the exchange gave no token".into())),
        }
    })
}

/// Loads the config, printing every error to stderr when it cannot be used.
fn load_or_report(cli: &Cli) -> Option<Config> {
    Config::load(&cli.config).map_err(|e| eprintln!("{e}")).ok()
}
