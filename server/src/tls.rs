//! TLS for what Wearcast serves on a network: the HTTP API and dashboards
//! (`[server.tls]`) and the embedded MQTT broker (`[broker.tls]`, in `src/broker.rs`).
//!
//! rustls with the ring provider (no OpenSSL, no C build beyond ring's own). A
//! certificate chain and its private key come from PEM files, read once at start: a
//! missing or unreadable file, a file with no certificate or no key, or a key that does
//! not match the certificate is an error at start that names the file. With TLS on, the
//! listener speaks only TLS: a plaintext client fails the handshake and is dropped, and
//! each failed handshake is counted in `wearcast_tls_handshake_failures_total{listener}`.
//! A handshake must finish within 10 s, and runs beside the accept loop, so a slow
//! client holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain and its key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

/// The certificates in the PEM file `path`, in order; an error when it holds none.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Makes ring the process's rustls provider, once (later calls do nothing). Every
/// HTTP client needs one: reqwest is built without a provider of its own, so that
/// only ring's crypto is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls provider every Wearcast TLS endpoint uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from `config`, offering `alpn` protocols (e.g. `http/1.1`).
pub fn server_config(config: &TlsConfig, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
    let certs = load_certificates(&config.cert_file)?;
    let key_pem = read(&config.key_file, "key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no private key (expected -----BEGIN PRIVATE KEY-----): {e}",
            config.key_file.display()
        )
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate and key: {e}",
                config.cert_file.display(),
                config.key_file.display()
            )
        })?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(server)
}

/// An acceptor for `config`, offering `alpn`.
pub fn acceptor(config: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
    Ok(TlsAcceptor::from(Arc::new(server_config(config, alpn)?)))
}

/// Completes the server side of a handshake on `stream` within [`HANDSHAKE_TIMEOUT`];
/// `None` (logged and counted for `listener`) when the client does not speak TLS or
/// is too slow.
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    peer: SocketAddr,
    listener: &'static str,
) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            debug!(%peer, listener, error = %why, "TLS handshake failed; connection dropped");
            metrics::counter!("wearcast_tls_handshake_failures_total", "listener" => listener)
                .increment(1);
            None
        }
    }
}

/// A TCP listener that hands out only connections that completed a TLS handshake,
/// for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        name: &'static str,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accept_loop = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            if let Some(tls) = handshake(&acceptor, stream, peer, name).await {
                                let _ = tx.send((tls, peer)).await;
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, typically: wait rather than spin.
                        warn!(error = %e, listener = name, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            ready,
            local,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop never ends on its own; if it is gone, so is serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
        let good = TlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        };
        assert!(server_config(&good, &[b"http/1.1"]).is_ok());

        let missing = TlsConfig {
            cert_file: dir.path().join("nope.pem"),
            ..good.clone()
        };
        let err = server_config(&missing, &[]).unwrap_err();
        assert!(
            err.contains("nope.pem") && err.contains("certificate"),
            "{err}"
        );

        let swapped = TlsConfig {
            cert_file: key_file.clone(),
            key_file: cert_file.clone(),
        };
        let err = server_config(&swapped, &[]).unwrap_err();
        assert!(
            err.contains("key.pem") && err.contains("no certificate"),
            "{err}"
        );

        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&other_key, other.key_pair.serialize_pem()).unwrap();
        let mismatched = TlsConfig {
            key_file: other_key,
            ..good
        };
        let err = server_config(&mismatched, &[]).unwrap_err();
        assert!(err.contains("do not make a usable"), "{err}");
    }
}
