//! Stopping the gateway is not a failure, however the shutdown races with its tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wearcast_gateway::{GatewayConfig, run};
use wearcast_protocol::clock::SystemClock;

use crate::support::FakeServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_shutdown_always_ends_in_a_clean_report() {
    let server = FakeServer::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // No broker needed: the tasks run (and reconnect) all the same.
    for round in 0..25 {
        let config = GatewayConfig {
            mqtt_url: "mqtt://127.0.0.1:9".into(),
            client_id: format!("gw-shutdown-{round}"),
            server_url: server.url.clone(),
            flush_interval: Duration::from_millis(5),
            data_dir: dir.path().to_owned(),
            ..GatewayConfig::default()
        };
        let shutdown = CancellationToken::new();
        let gateway = tokio::spawn(run(config, Arc::new(SystemClock), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(20), gateway)
            .await
            .expect("stops promptly")
            .unwrap();
        assert!(outcome.is_ok(), "round {round}: {outcome:?}");
    }
}
