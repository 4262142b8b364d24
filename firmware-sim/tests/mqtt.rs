//! Runs the simulator against a real broker: Mosquitto on 127.0.0.1:1883. Without one
//! the tests say so and pass, unless `CI=true`, where a missing broker is a failure.
//! Each run uses its own tenant and client ids, so runs never see each other's messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wearcast_firmware_sim::{SimConfig, TruthRecord, demo_fleet, run};
use wearcast_protocol::event::EventPayload;
use wearcast_protocol::telemetry::{TelemetryLimits, parse_telemetry};
use wearcast_protocol::{
    Clock, EventKind, MachineState, ScaledClock, SharedClock, StatusMessage, SystemClock, Topic,
    TopicKind,
};

const BROKER_HOST: &str = "127.0.0.1";
const BROKER_PORT: u16 = 1883;

/// True if the broker answers; otherwise explains the skip, or fails under CI.
async fn broker_available(test: &str) -> bool {
    let connect = tokio::net::TcpStream::connect((BROKER_HOST, BROKER_PORT));
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    );
    if !reachable {
        let message = format!(
            "no MQTT broker at {BROKER_HOST}:{BROKER_PORT}; start Mosquitto to run `{test}`"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message} (CI=true, so this is a failure)"
        );
        eprintln!("SKIPPED: {message}");
    }
    reachable
}

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// A message as a subscriber saw it.
#[derive(Debug, Clone)]
struct Received {
    topic: Topic,
    retain: bool,
    payload: Vec<u8>,
}

/// A subscriber whose messages arrive on a channel. Returns once the broker has
/// confirmed the subscription, so nothing published afterwards is missed.
async fn subscribe(
    client_id: String,
    filter: String,
    stop: CancellationToken,
) -> (AsyncClient, mpsc::UnboundedReceiver<Received>) {
    let mut options = MqttOptions::new(client_id, BROKER_HOST, BROKER_PORT);
    options
        .set_max_packet_size(512 * 1024, 64 * 1024)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue the SUBSCRIBE");
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // Clearing retained messages at the end echoes empty payloads back.
                    if p.payload.is_empty() {
                        continue;
                    }
                    let topic = Topic::parse(&p.topic).expect("a Wearcast topic");
                    let _ = tx.send(Received {
                        topic,
                        retain: p.retain,
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(_) => {}
                Err(e) => panic!("test subscriber lost the broker: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
        .await
        .expect("no SUBACK within 5 s")
        .expect("the subscriber task ended before the SUBACK");
    (client, rx)
}

/// The retained status of every machine of `tenant`, as a new subscriber gets it.
async fn retained_statuses(
    tenant: &str,
    machines: usize,
) -> HashMap<String, (bool, StatusMessage)> {
    let stop = CancellationToken::new();
    let (_client, mut rx) = subscribe(
        unique_name("status-reader"),
        format!("wearcast/v1/{tenant}/+/status"),
        stop.clone(),
    )
    .await;
    let mut statuses = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while statuses.len() < machines {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let status = StatusMessage::parse(&m.payload).expect("a status message");
        statuses.insert(m.topic.machine.to_string(), (m.retain, status));
    }
    stop.cancel();
    statuses
}

/// Removes the retained status messages a test left on the broker.
async fn clear_retained(tenant: &str, machines: &[String]) {
    let options = MqttOptions::new(unique_name("cleaner"), BROKER_HOST, BROKER_PORT);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    for m in machines {
        client
            .publish(
                format!("wearcast/v1/{tenant}/{m}/status"),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await
            .expect("queue the clearing message");
    }
    client.disconnect().await.expect("queue the DISCONNECT");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_fleet_publishes_increasing_seq_per_machine_and_retains_its_birth() {
    if !broker_available("a_running_fleet_publishes_increasing_seq_per_machine").await {
        return;
    }
    let tenant = unique_name("t");
    let truth_dir = tempfile::tempdir().unwrap();
    let truth_path = truth_dir.path().join("truth.jsonl");
    let config = SimConfig {
        tenant: tenant.clone(),
        client_prefix: unique_name("sim"),
        machines: 3,
        backfill: Duration::from_secs(2 * 3600),
        publish_every: Duration::from_millis(100),
        truth_path: Some(truth_path.clone()),
        ..SimConfig::default()
    };
    let clock: SharedClock = Arc::new(ScaledClock::new(SystemClock.now(), 1800.0));
    let fleet = demo_fleet(&config, clock.now()).unwrap();
    let machines: Vec<String> = fleet.machines().map(|m| m.id.to_string()).collect();
    assert_eq!(fleet.tenant().as_str(), tenant);
    let mut backfill = fleet.backfill_done();

    let collector_stop = CancellationToken::new();
    let (_subscriber, mut received) = subscribe(
        unique_name("watcher"),
        format!("wearcast/v1/{tenant}/+/+"),
        collector_stop.clone(),
    )
    .await;

    let shutdown = CancellationToken::new();
    let sim = tokio::spawn(run(config, fleet, clock, shutdown.clone()));
    let done = tokio::time::timeout(Duration::from_secs(20), backfill.wait()).await;
    assert_eq!(done, Ok(true), "the backfill was not published within 20 s");

    // Meanwhile the birth is retained: a subscriber that comes later still gets it.
    let births = retained_statuses(&tenant, machines.len()).await;
    for m in &machines {
        let (retained, status) = births.get(m).unwrap_or_else(|| panic!("no status for {m}"));
        assert!(retained, "{m}: status not retained");
        assert_eq!(status.state, MachineState::Online, "{m}");
        assert_eq!(status.firmware.as_deref(), Some("sim-1.0"));
        assert!(status.ts.is_some());
    }

    // Live for a little while: every 100 ms real is 3 min of clock time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(15), sim)
        .await
        .expect("the simulator did not stop within 15 s")
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector_stop.cancel();

    let limits = TelemetryLimits::default();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut statuses: BTreeMap<String, Vec<MachineState>> = BTreeMap::new();
    let (mut messages, mut samples, mut failure_events) = (0u64, 0u64, 0u64);
    while let Ok(m) = received.try_recv() {
        let machine = m.topic.machine.to_string();
        match m.topic.kind {
            TopicKind::Telemetry => {
                messages += 1;
                let parsed = parse_telemetry(&m.payload, &limits).unwrap();
                assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
                samples += parsed.samples.len() as u64;
                let seq = seqs.entry(machine).or_default();
                seq.extend(parsed.samples.iter().map(|s| s.seq.unwrap()));
            }
            TopicKind::Events => {
                messages += 1;
                let event = EventPayload::parse(&m.payload).unwrap();
                failure_events += u64::from(event.kind == EventKind::Failure);
            }
            TopicKind::Status => statuses
                .entry(machine)
                .or_default()
                .push(StatusMessage::parse(&m.payload).unwrap().state),
        }
    }
    assert_eq!(messages, report.messages_published);
    assert_eq!(samples, report.samples_published);
    assert_eq!(seqs.len(), machines.len());
    for (machine, seq) in &seqs {
        // Two hours of 5-minute backfill plus some live samples.
        assert!(seq.len() > 25, "{machine}: only {} samples", seq.len());
        let expected: Vec<u64> = (1..=seq.len() as u64).collect();
        assert_eq!(
            seq, &expected,
            "{machine}: seq must count up from 1 without gaps"
        );
    }
    for m in &machines {
        assert_eq!(
            statuses.get(m).map(Vec::as_slice),
            Some([MachineState::Online, MachineState::Offline].as_slice()),
            "{m}"
        );
    }

    // After a clean shutdown the retained status says offline.
    let after = retained_statuses(&tenant, machines.len()).await;
    for m in &machines {
        assert_eq!(
            after.get(m).map(|(_, s)| s.state),
            Some(MachineState::Offline),
            "{m}"
        );
    }
    clear_retained(&tenant, &machines).await;

    // The ground truth names every component's life in progress.
    let truth = std::fs::read_to_string(&truth_path).unwrap();
    let lives = truth
        .lines()
        .map(|l| serde_json::from_str::<TruthRecord>(l).unwrap())
        .filter(|r| matches!(r, TruthRecord::Life(_)))
        .count();
    assert!(lives >= 3 * 3, "{lives} life records");
    let failures = truth
        .lines()
        .filter(|l| l.contains(r#""record":"failure""#))
        .count();
    assert_eq!(failures as u64, report.failures);
    assert_eq!(failure_events, report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_retried_without_failing_and_shutdown_still_returns_promptly() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = SimConfig {
        mqtt_url: format!("mqtt://127.0.0.1:{port}"),
        tenant: unique_name("t"),
        client_prefix: unique_name("sim"),
        machines: 2,
        backfill: Duration::from_secs(3600),
        publish_every: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let clock: SharedClock = Arc::new(ScaledClock::new(SystemClock.now(), 1800.0));
    let fleet = demo_fleet(&config, clock.now()).unwrap();
    let mut backfill = fleet.backfill_done();
    let shutdown = CancellationToken::new();
    let sim = tokio::spawn(run(config, fleet, clock, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!sim.is_finished(), "the simulator gave up on the broker");
    assert!(!backfill.is_done());
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(3), sim)
        .await
        .expect("shutdown hung on the unreachable broker")
        .unwrap()
        .unwrap();
    assert!(!backfill.wait().await);
    // Nothing was acknowledged, but what fit in the client's queue was handed over.
    assert!(report.messages_published <= 2 * 16, "{report:?}");
}

#[tokio::test]
async fn a_bad_broker_url_is_a_configuration_error() {
    let config = SimConfig {
        mqtt_url: "mqtts://127.0.0.1:8883".into(),
        ..SimConfig::default()
    };
    let fleet = demo_fleet(
        &SimConfig::default(),
        wearcast_protocol::UnixMs(1_795_352_355_524),
    )
    .unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let e = run(config, fleet, clock, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sim.mqtt_url"), "{e}");
}
