//! `[server.tls]`: the server speaks HTTPS only. A TLS client that trusts the
//! certificate gets answers; a plaintext HTTP client gets no HTTP answer at all, and
//! the failed handshake is counted.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::SystemClock;
use wearcast_server::config::ServerConfig;
use wearcast_server::tls::{TlsConfig, provider};
use wearcast_server::{Server, ServerDeps};

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

async fn read_all(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn with_tls_the_server_answers_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let config = ServerConfig {
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        tls: Some(TlsConfig {
            cert_file,
            key_file,
        }),
        ..ServerConfig::default()
    };
    let server = Server::start(
        config,
        ServerDeps {
            clock: Arc::new(SystemClock),
            metrics: None,
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    assert_eq!(server.url(), format!("https://{addr}"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));

    // Plaintext: no HTTP answer, whatever the client waits for.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(REQUEST).await.unwrap();
    let answer = read_all(&mut plain).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plaintext client got an HTTP answer: {}",
        String::from_utf8_lossy(&answer)
    );

    // TLS, trusting the certificate: the real answer.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(REQUEST).await.unwrap();
    let answer = String::from_utf8(read_all(&mut tls).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that does not trust it refuses the server, as it should.
    let untrusting = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(untrusting))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());

    stop.cancel();
    task.await.unwrap().unwrap();
}
