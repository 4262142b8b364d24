//! TLS where Wearcast serves a network: `[broker.tls]` makes the embedded broker speak
//! MQTT over TLS only, and `[server.tls]` makes the HTTP API and dashboards HTTPS only.
//! Plaintext clients are refused (and counted); TLS clients that trust the certificate
//! get through, a `wearcast gateway` on `mqtts://` among them; and with HTTPS the
//! gateway inside `wearcast up` still delivers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wearcast_protocol::UnixMs;

use crate::common::{BIN, Platform, eventually, metric};
use crate::processes::{GatewayProcess, GatewaySettings, mosquitto_available};

/// A self-signed certificate for localhost and 127.0.0.1, written as `cert.pem` and
/// `key.pem` in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, rcgen::CertifiedKey) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    (cert_file, key_file, cert)
}

/// A `wearcast gateway` process named `name` for `p`'s fleet, with a gateway token of
/// its own, on `mqtt_url` and `server_url`, and one environment setting (the CA file).
fn own_gateway(
    p: &Platform,
    dir: &Path,
    name: &str,
    mqtt_url: String,
    server_url: String,
    env: (&str, &str),
) -> GatewayProcess {
    let token = dir.join(format!("{name}.token"));
    let out = Command::new(BIN)
        .args(["token", "create", "--role", "gateway", "--data-dir"])
        .arg(p.data_dir())
        .arg("--output")
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = GatewaySettings {
        mqtt_url,
        server_url,
        client_id: name.into(),
        data_dir: dir.join(name),
        share_group: None,
        spool_max_bytes: None,
        spool_segment_bytes: None,
        spool_overflow: None,
        server_token_file: token,
    };
    GatewayProcess::start_with_env(name, &settings, dir, &[env])
}

/// `mosquitto_pub` over TLS, trusting `ca`; whether it published.
fn publish_tls(port: u16, ca: &std::path::Path, topic: &str, message: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .arg("--cafile")
        .arg(ca)
        .args(["-t", topic, "-m", message])
        .status()
        .unwrap()
        .success()
}

/// `[broker.tls]`: a plaintext client is refused (and counted); a TLS client that
/// trusts the certificate publishes; a `wearcast gateway` on `mqtts://` with
/// `mqtt_ca_file` receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_embedded_broker_refuses_plaintext_and_a_gateway_reads_over_tls() {
    let test = "tls::with_tls_the_embedded_broker_refuses_plaintext";
    if !mosquitto_available(test) {
        return;
    }
    let _serial = crate::processes::exclusive().await;
    let keys = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (keys.path().join("cert.pem"), keys.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let (cert_path, key_path) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    // The demo clock runs at 1 here: the gateway of its own keeps the system clock, and
    // at the demo's usual 1800x every live sample (and the probe below, stamped with
    // the platform's `now`) would be minutes to hours in its future and rejected.
    let p = Platform::up(
        &["--demo", "--demo-seed", "6", "--demo-speed", "1"],
        &[
            ("WEARCAST_BROKER__TLS__CERT_FILE", &cert_path),
            ("WEARCAST_BROKER__TLS__KEY_FILE", &key_path),
        ],
    );
    let port = p.mqtt_port;
    let machines = p.get("/api/v1/machines").await;
    let machine = &machines[0];
    let topic = format!(
        "wearcast/v1/{}/{}/telemetry",
        machine["tenant"].as_str().unwrap(),
        machine["id"].as_str().unwrap()
    );

    // A gateway of its own, on mqtts:// with the broker's certificate as its CA.
    let mut gateway = own_gateway(
        &p,
        keys.path(),
        "gw-tls",
        format!("mqtts://127.0.0.1:{port}"),
        p.http.clone(),
        ("WEARCAST_GATEWAY__MQTT_CA_FILE", &cert_path),
    );
    gateway.wait_subscribed(Duration::from_secs(30)).await;

    let before = p.metrics().await;
    let failures = |m: &str| {
        metric(
            m,
            "wearcast_tls_handshake_failures_total",
            &[("listener", "mqtt")],
        )
    };
    let now = UnixMs::parse_rfc3339(p.get("/api/v1/info").await["now"].as_str().unwrap()).unwrap();
    let reading = format!(r#"{{"ts": {}, "readings": {{"probe.tls_c": 3.5}}}}"#, now.0);
    let plain = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &topic, "-m", &reading])
        .status()
        .unwrap();
    assert!(!plain.success(), "a plaintext client published");
    eventually(
        "the plaintext handshake counted",
        Duration::from_secs(10),
        || async { (failures(&p.metrics().await) > failures(&before)).then_some(()) },
    )
    .await;

    assert!(publish_tls(port, &cert_file, &topic, &reading));
    assert!(
        gateway
            .wait_stats(Duration::from_secs(30), |s| s.samples_accepted >= 1)
            .await,
        "the TLS gateway did not take the reading:\n{}",
        gateway.log_tail()
    );
    // The probe itself reached the server, forwarded by the TLS gateway: its windows
    // are a second long, while the in-process gateway holds the probe in an hour-long
    // demo window.
    let probe = format!(
        "/api/v1/machines/{}/telemetry?channel=probe.tls_c",
        machine["id"].as_str().unwrap()
    );
    let stored = eventually("the TLS probe stored", Duration::from_secs(30), || async {
        let (status, body) = p.get_status(&probe).await;
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    })
    .await;
    assert_eq!(stored["windows"][0]["mean"], 3.5, "{stored}");
    gateway.stop().await;
}

/// `GET path` over TLS to `addr`, trusting `cert`; the whole answer.
async fn https_get(addr: &str, path: &str, cert: &rcgen::CertifiedKey) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `[server.tls]` on `wearcast up --demo`: the banner gives an https:// dashboard, a
/// plaintext HTTP client gets no answer, a TLS client gets the API, the gateway and
/// demo people inside the process keep working (telemetry is ingested), and a
/// `wearcast gateway` of its own forwards over HTTPS with `server_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_up_serves_https_only_and_its_own_gateway_still_delivers() {
    let _serial = crate::processes::exclusive().await;
    let keys = tempfile::tempdir().unwrap();
    let (cert_file, key_file, cert) = certificate(keys.path());
    let (cert_path, key_path) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    // At demo speed 1, as above: the gateway of its own runs on the system clock.
    let p = Platform::up(
        &["--demo", "--demo-seed", "8", "--demo-speed", "1"],
        &[
            ("WEARCAST_SERVER__TLS__CERT_FILE", &cert_path),
            ("WEARCAST_SERVER__TLS__KEY_FILE", &key_path),
        ],
    );
    let addr = p
        .http
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the dashboard is not https: {}", p.http))
        .to_string();

    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plaintext client got an answer: {}",
        String::from_utf8_lossy(&answer)
    );

    let health = https_get(&addr, "/healthz", &cert).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // A gateway of its own on the plant side, to https://localhost with the server's
    // certificate as its CA.
    let port = addr.rsplit_once(':').unwrap().1;
    let mut gateway = own_gateway(
        &p,
        keys.path(),
        "gw-https",
        format!("mqtt://127.0.0.1:{}", p.mqtt_port),
        format!("https://localhost:{port}"),
        ("WEARCAST_GATEWAY__SERVER_CA_FILE", &cert_path),
    );
    gateway.wait_subscribed(Duration::from_secs(30)).await;
    assert!(
        gateway
            .wait_stats(Duration::from_secs(60), |s| s.batches_forwarded >= 1)
            .await,
        "the gateway forwarded nothing over HTTPS:\n{}",
        gateway.log_tail()
    );
    gateway.stop().await;
    eventually(
        "telemetry ingested through the in-process gateway",
        Duration::from_secs(60),
        || async {
            let metrics = https_get(&addr, "/metrics", &cert).await;
            (metric(&metrics, "wearcast_ingest_windows_total", &[]) > 0.0
                && metric(
                    &metrics,
                    "wearcast_tls_handshake_failures_total",
                    &[("listener", "http")],
                ) >= 1.0)
                .then_some(())
        },
    )
    .await;
}
