//! Command-line flags. Raw flags live here; `main.rs` turns them into actions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Outbound HTTP proxy that injects freshly signed tokens into agent functions' requests.
///
/// Agent functions set HTTP_PROXY / HTTPS_PROXY to the sidecar and write placeholders such as
/// `Authorization: Bearer {/auth_token}`; the sidecar replaces them with a current token for
/// the route the request matches. Keys never leave the sidecar.
#[derive(Debug, Parser)]
#[command(name = "token-sidecar", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "TOKEN_SIDECAR_CONFIG", default_value = "sidecar.toml")]
    pub config: PathBuf,

    /// Log format: human-readable lines, or one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `token_sidecar=debug`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default when no command is given).
    ///
    /// Example: token-sidecar run --config /etc/token-sidecar/sidecar.toml
    Run,

    /// Check a configuration: parse it, load every key and make a test signature.
    ///
    /// Makes no network request: token endpoints are not called. Prints every problem as FILE:LINE:COLUMN: KEY: MESSAGE and exits non-zero if there is
    /// any. A valid file is followed by its effective policy: the address rules, unrouted
    /// traffic, callers, and a table of what each caller may reach with which token.
    /// Example: token-sidecar check --config sidecar.toml
    Check,

    /// Print one freshly signed token to stdout, for debugging a target service.
    ///
    /// For a kind = "oauth2" token this performs one real exchange at its token endpoint (and
    /// of the exchanged tokens it uses) and prints the access token.
    /// Example: token-sidecar sign acme_api_jwt | cut -d. -f2 | base64 -d
    Sign {
        /// The token's name, as in [tokens.NAME].
        name: String,
        /// For a per_request token: the request to sign for, as "METHOD URL", e.g.
        /// "GET https://your-site.atlassian.net/rest/api/3/search?jql=x". The token's
        /// body_sha256 is that of an empty body, and ath needs no Authorization header here.
        #[arg(long)]
        request: Option<String>,
    },

    /// Generate a new signing key (PEM private key, PEM public key, public JWK), or a
    /// recipient key pair for encrypted tokens.
    ///
    /// RS*/PS* write an RSA key (--bits 2048, 3072 or 4096), ES256 a P-256 key, ES384 a P-384
    /// key, ES512 a P-521 key, EdDSA an Ed25519 key, and HS* a random base64 secret.
    /// RSA-OAEP and RSA-OAEP-256 write an RSA recipient key pair, ECDH-ES (and ECDH-ES+A128KW,
    /// +A192KW, +A256KW) an EC or X25519 one (--crv), A128KW/A192KW/A256KW a shared key; the
    /// printed [tokens.NAME.encrypt] table names the public key, and the private key is the
    /// recipient's. Private key files are created with mode 0600 and existing files are never
    /// overwritten. Examples: token-sidecar keygen --alg RS256 --kid acme-2026 --out keys/;
    /// token-sidecar keygen --alg ECDH-ES --crv X25519 --name partner --out keys/
    Keygen {
        /// Algorithm the key is for (HS256, HS384, HS512, ES256, ES384, ES512, RS256, RS384,
        /// RS512, PS256, PS384, PS512, EdDSA; for encryption RSA-OAEP, RSA-OAEP-256, ECDH-ES,
        /// ECDH-ES+A128KW, ECDH-ES+A192KW, ECDH-ES+A256KW, A128KW, A192KW, A256KW).
        #[arg(long)]
        alg: String,
        /// RSA modulus size.
        #[arg(long)]
        bits: Option<usize>,
        /// Curve of an ECDH-ES recipient key: P-256 (default), P-384, P-521 or X25519.
        #[arg(long)]
        crv: Option<String>,
        /// Folder to write the files to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Base name of the files, and the token name in the printed config snippet.
        #[arg(long, default_value = "signing")]
        name: String,
        /// Key id to put in the JWK and the printed config snippet.
        #[arg(long)]
        kid: Option<String>,
    },

    /// Manage the local CA that intercepts HTTPS_PROXY tunnels to routed hosts.
    ///
    /// Example: token-sidecar ca init --out /etc/token-sidecar, then in the function's
    /// environment: token-sidecar ca export > sidecar-ca.pem; export SSL_CERT_FILE=sidecar-ca.pem
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (EC P-256, valid ten years) as ca.pem and ca.key (mode 0600).
    ///
    /// Never overwrites an existing CA, since clients already trust it. Prints the [tls]
    /// section to add to sidecar.toml. Example: token-sidecar ca init --out /etc/token-sidecar
    Init {
        /// Folder to write ca.pem and ca.key to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },

    /// Print the CA certificate (PEM) that clients must trust, from the config's [tls].
    ///
    /// Example: token-sidecar ca export > sidecar-ca.pem; export SSL_CERT_FILE=sidecar-ca.pem
    Export,
}
