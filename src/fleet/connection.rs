//! One connection to Redis: TCP (or TLS for `rediss://`), `AUTH`, `SELECT`, then one command
//! at a time.
//!
//! TLS uses the same settings as upstream requests: the aws-lc-rs provider, named explicitly,
//! and the public roots plus `[proxy] extra_ca_file`, with the certificate checked against the
//! URL's host.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::resp::{self, Reply};
use super::target::RedisTarget;
use super::FleetError;

/// A byte stream to Redis, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An open, authenticated connection.
pub struct Connection {
    stream: BufReader<Box<dyn Stream>>,
}

/// Builds the TLS client settings for `rediss://`: as for upstreams.
pub fn tls_config(extra_ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = crate::proxy::upstream::root_store(extra_ca_file)?;
    let config = rustls::ClientConfig::builder_with_provider(crate::proxy::upstream::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Connection {
    /// Connects and authenticates. The caller bounds the time it may take.
    pub async fn open(target: &RedisTarget, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Connection, FleetError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| FleetError::Unavailable(format!("cannot connect to {target}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match (target.tls, tls) {
            (true, Some(config)) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|_| FleetError::Unavailable(format!("{:?} is not a TLS server name", target.host)))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| FleetError::Unavailable(format!("TLS with {target} failed: {e}")))?;
                Box::new(tls)
            }
            (true, None) => return Err(FleetError::Unavailable("rediss:// without TLS settings".into())),
            (false, _) => Box::new(tcp),
        };
        let mut connection = Connection { stream: BufReader::new(stream) };
        if let Some(password) = target.password() {
            let reply = match &target.username {
                Some(user) => connection.call(&[b"AUTH", user.as_bytes(), password.as_bytes()], 0).await?,
                None => connection.call(&[b"AUTH", password.as_bytes()], 0).await?,
            };
            expect_ok(reply, "AUTH")?;
        }
        if target.db != 0 {
            let reply = connection.call(&[b"SELECT", target.db.to_string().as_bytes()], 0).await?;
            expect_ok(reply, "SELECT")?;
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply (bulk values up to `max_bulk` bytes).
    pub async fn call(&mut self, args: &[&[u8]], max_bulk: usize) -> Result<Reply, FleetError> {
        let lost = |e: std::io::Error| FleetError::Unavailable(format!("connection to Redis lost: {e}"));
        let stream = self.stream.get_mut();
        stream.write_all(&resp::encode(args)).await.map_err(lost)?;
        stream.flush().await.map_err(lost)?;
        resp::read(&mut self.stream, max_bulk).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => FleetError::Protocol(e.to_string()),
            _ => lost(e),
        })
    }
}

/// `AUTH` and `SELECT` answer `+OK`; anything else means this connection cannot be used.
fn expect_ok(reply: Reply, command: &str) -> Result<(), FleetError> {
    match reply {
        Reply::Status(s) if s == "OK" => Ok(()),
        // Redis's own words (`WRONGPASS invalid username-password pair`), never the password.
        Reply::Error(e) => Err(FleetError::Unavailable(format!("{command} refused: {e}"))),
        _ => Err(FleetError::Protocol(format!("unexpected answer to {command}"))),
    }
}
