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
        Command::Sign { name } => sign(&cli, name),
        Command::Keygen { alg, bits, out, name, kid } => keygen(alg, *bits, out, name, kid.as_deref()),
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn sign(cli: &Cli, name: &str) -> ExitCode {
    let Some(config) = load_or_report(cli) else {
        return ExitCode::FAILURE;
    };
    let Some(token) = config.tokens.get(name) else {
        let known: Vec<&str> = config.tokens.keys().map(String::as_str).collect();
        eprintln!("no token named {name:?} in {} (defined: {})", cli.config.display(), known.join(", "));
        return ExitCode::FAILURE;
    };
    match token.mint(SystemTime::now()) {
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

fn keygen(alg: &str, bits: Option<usize>, out: &std::path::Path, name: &str, kid: Option<&str>) -> ExitCode {
    let Some(alg) = parse_algorithm(alg) else {
        eprintln!("unknown algorithm {alg:?} (expected one of {})", algorithm_names());
        return ExitCode::FAILURE;
    };
    match token_sidecar::keygen::generate(alg, bits, out, name, kid) {
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

/// Loads the config, printing every error to stderr when it cannot be used.
fn load_or_report(cli: &Cli) -> Option<Config> {
    Config::load(&cli.config).map_err(|e| eprintln!("{e}")).ok()
}
