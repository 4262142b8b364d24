//! The embedded MQTT broker (rumqttd) of `wearcast up`: one process, no broker to
//! install. Real deployments point the gateway at Mosquitto, EMQX or HiveMQ instead.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the broker on `listen` (port 0 picks a free port) and returns the address it
/// serves once it completes an MQTT handshake.
pub async fn start_embedded(listen: &str, max_payload_bytes: usize) -> anyhow::Result<SocketAddr> {
    let requested: SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address like 127.0.0.1:1883"))?;
    // Bind first so a taken port is a clear error here rather than a log line from the
    // broker's thread; port 0 resolves to a free port.
    let probe = TcpListener::bind(requested).map_err(|e| {
        anyhow::anyhow!(
            "the embedded MQTT broker cannot listen on {requested}: {e}. Another broker \
             (Mosquitto?) may be running there: pass --mqtt-listen ADDR to run the embedded \
             broker elsewhere, or --mqtt-url mqtt://HOST:PORT to use that broker instead"
        )
    })?;
    let addr = probe.local_addr()?;
    drop(probe);

    let mut v4 = HashMap::new();
    v4.insert(
        "1".to_string(),
        ServerSettings {
            name: "wearcast-mqtt".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: max_payload_bytes,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // The router's in-memory log per filter: room for a demo backfill that a
            // slow subscriber has not caught up with yet.
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("cannot start the broker thread")?;

    // A real CONNECT: a bare TCP probe makes the broker log a failed handshake.
    let mut options = MqttOptions::new("wearcast-up-probe", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 4);
    let handshake = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .is_err()
    {
        bail!("the embedded MQTT broker did not accept connections on {addr} within 10 s");
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !matches!(
            events.poll().await,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    Ok(addr)
}
