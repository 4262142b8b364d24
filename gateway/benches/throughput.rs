//! Sustained QoS 1 throughput of the gateway against a bare subscriber, on the same
//! Mosquitto, in the same run. `scripts/bench` runs it.
//!
//! Method: for each subscriber, a persistent session is created, N telemetry messages
//! are published into it while the subscriber is away (the broker queues them), then
//! the subscriber is started and timed until it has taken all N. So both drain the same
//! broker queue as fast as they can, and the publisher's speed does not count.
//!
//! - **bare**: `mosquitto_sub -q 1 -C N` — acknowledges each message on receipt and
//!   does nothing else.
//! - **gateway**: `wearcast-gateway-harness` — validation, `seq` de-duplication,
//!   aggregation, the durable spool (every message acknowledged only after its group
//!   commit was `fdatasync`ed), forwarding to an HTTP sink that answers like the server.
//!   Timed until it has acknowledged N messages; its CPU time and peak resident memory
//!   come from `/proc`.
//!
//! The broker is a private Mosquitto with the settings a gateway deployment should use
//! (`max_inflight_messages 1000`: Mosquitto's default of 20 unacknowledged messages per
//! client caps how many messages one group commit can cover).
//!
//! ```text
//! cargo bench -p wearcast-gateway --bench throughput -- [--messages N] [--machines M]
//!     [--readings R] [--rounds K] [--inflight I]
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use wearcast_gateway::GatewayConfig;
use wearcast_protocol::{Clock, IngestBatch, IngestResponse, SystemClock, UnixMs};

const HARNESS: &str = env!("CARGO_BIN_EXE_wearcast-gateway-harness");
const FILTER: &str = "wearcast/v1/+/+/+";
const TENANT: &str = "bench";

struct Options {
    messages: u64,
    machines: u64,
    readings: usize,
    rounds: usize,
    inflight: u32,
}

fn options() -> Options {
    let mut o = Options {
        messages: 200_000,
        machines: 50,
        readings: 5,
        rounds: 2,
        inflight: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--messages" => o.messages = value("--messages"),
            "--machines" => o.machines = value("--machines").max(1),
            "--readings" => o.readings = value("--readings").max(1) as usize,
            "--rounds" => o.rounds = value("--rounds").max(1) as usize,
            "--inflight" => o.inflight = value("--inflight") as u32,
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    o
}

/// A private Mosquitto; stopped (by its pid) when dropped.
struct Broker {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(inflight: u32) -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_inflight_messages {inflight}\n\
             max_queued_messages 0\n\
             max_queued_bytes 0\n"
        );
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, &config).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the benchmark needs `mosquitto` (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            Self {
                port,
                child,
                _dir: dir,
            },
            config,
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server stand-in: the machine list, and ingest answered like the real server.
async fn sink(machines: u64) -> String {
    let list: Vec<serde_json::Value> = (0..machines)
        .map(|m| serde_json::json!({"id": machine(m), "tenant": TENANT}))
        .collect();
    let list = Arc::new(serde_json::to_vec(&list).unwrap());
    let app = Router::new()
        .route(
            "/api/v1/machines",
            get(move || {
                let list = list.clone();
                async move { ([("content-type", "application/json")], (*list).clone()) }
            }),
        )
        .route(
            "/api/v1/ingest",
            post(|body: Bytes| async move {
                let batch: IngestBatch = serde_json::from_slice(&body).unwrap();
                axum::Json(IngestResponse {
                    batch_id: batch.batch_id,
                    duplicate: false,
                    windows_stored: batch.windows.len() as u64,
                    events_stored: 0,
                    statuses_stored: 0,
                    rejected: vec![],
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn machine(m: u64) -> String {
    format!("m-{m:04}")
}

/// N telemetry messages, machines round-robin, one sample per second per machine, in
/// the recent past (so they are accepted and fill a realistic number of windows).
fn payloads(o: &Options) -> Vec<(String, Vec<u8>)> {
    let per_machine = o.messages.div_ceil(o.machines) as i64;
    let start = SystemClock.now().plus_ms(-(per_machine + 120) * 1000);
    (0..o.messages)
        .map(|i| {
            let (m, seq) = (i % o.machines, i / o.machines + 1);
            let ts: UnixMs = start.plus_ms(seq as i64 * 1000);
            let mut readings = format!(
                "\"spindle_bearing.vibration_rms\":{:.3}",
                1.0 + (i % 97) as f64 / 100.0
            );
            for r in 1..o.readings {
                readings.push_str(&format!(
                    ",\"axis{r}.temperature_c\":{:.2}",
                    40.0 + (i % 13) as f64
                ));
            }
            let topic = format!("wearcast/v1/{TENANT}/{}/telemetry", machine(m));
            let body = format!(r#"{{"ts":{},"seq":{seq},"readings":{{{readings}}}}}"#, ts.0);
            (topic, body.into_bytes())
        })
        .collect()
}

/// Creates the persistent session `client_id` with the subscription, then leaves.
async fn create_session(port: u16, client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    loop {
        match eventloop.poll().await.unwrap() {
            Event::Incoming(Packet::SubAck(_)) => client.try_disconnect().unwrap(),
            Event::Outgoing(Outgoing::Disconnect) => return,
            _ => {}
        }
    }
}

/// Publishes everything at QoS 1 and returns once the broker acknowledged all of it.
async fn publish_all(port: u16, messages: &[(String, Vec<u8>)]) -> Duration {
    let started = Instant::now();
    let mut options = MqttOptions::new("bench-publisher", "127.0.0.1", port);
    options
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    let total = messages.len();
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < total {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
        let _ = eventloop;
    });
    for (topic, body) in messages {
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
    }
    poller.await.unwrap();
    started.elapsed()
}

/// CPU seconds (user + system) and peak resident bytes of a running process.
fn cpu_and_peak(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / clock_ticks(), peak_kb * 1024)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Measured {
    seconds: f64,
    cpu_seconds: Option<f64>,
    peak_bytes: Option<u64>,
}

fn run_bare(port: u16, client_id: &str, n: u64) -> Measured {
    let started = Instant::now();
    let status = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-c"])
        .args(["-i", client_id, "-t", FILTER, "-C", &n.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("the benchmark needs `mosquitto_sub` (apt-get install mosquitto-clients)");
    assert!(status.success(), "mosquitto_sub failed");
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: None,
        peak_bytes: None,
    }
}

fn run_gateway(config: &GatewayConfig, dir: &Path, n: u64) -> (Measured, serde_json::Value) {
    let config_path = dir.join("gateway.json");
    std::fs::write(&config_path, serde_json::to_vec(config).unwrap()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(HARNESS)
        .arg(&config_path)
        .args(["--report-acked", &n.to_string(), "--stats-every-ms", "1000"])
        .env(
            "HARNESS_LOG",
            std::env::var("HARNESS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seconds = None;
    let mut usage = (0.0, 0);
    // The harness prints its totals every second: a run that stops making progress
    // fails with them instead of hanging.
    let patience = Duration::from_secs(60);
    let mut last_stats = serde_json::Value::Null;
    let mut progress_at = Instant::now();
    for line in lines.by_ref().map_while(Result::ok) {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "stats" && seconds.is_none() {
            if event["report"]["messages_acked"] != last_stats["messages_acked"] {
                progress_at = Instant::now();
            }
            last_stats = event["report"].clone();
            if progress_at.elapsed() > patience {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the gateway acknowledged nothing for {patience:?}; its totals: {last_stats}"
                );
            }
        }
        if event["event"] == "acked" {
            seconds = Some(started.elapsed().as_secs_f64());
            usage = cpu_and_peak(pid);
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if event["event"] == "stopped" {
            let _ = child.wait();
            let seconds = seconds.expect("the gateway stopped before acknowledging everything");
            return (
                Measured {
                    seconds,
                    cpu_seconds: Some(usage.0),
                    peak_bytes: Some(usage.1),
                },
                event["report"].clone(),
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the gateway harness ended without a report");
}

fn row(name: &str, n: u64, m: &Measured) -> String {
    let rate = n as f64 / m.seconds;
    let cpu = m.cpu_seconds.map_or("-".into(), |c| format!("{c:.2}"));
    let per_msg = m
        .cpu_seconds
        .map_or("-".into(), |c| format!("{:.1}", c * 1e6 / n as f64));
    let peak = m.peak_bytes.map_or("-".into(), |b| {
        format!("{:.1}", b as f64 / (1 << 20) as f64)
    });
    format!(
        "| {name:<26} | {n:>9} | {:>8.3} | {rate:>10.0} | {cpu:>6} | {per_msg:>10} | {peak:>11} |",
        m.seconds
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let (broker, broker_config) = Broker::start(o.inflight);
    let server_url = sink(o.machines).await;
    let messages = payloads(&o);
    let bytes: usize = messages.iter().map(|(_, b)| b.len()).sum();
    println!(
        "Wearcast gateway throughput: {} QoS 1 messages ({} machines, {} readings each, {} bytes on average) per run, {} round(s)",
        o.messages,
        o.machines,
        o.readings,
        bytes / messages.len().max(1),
        o.rounds
    );
    println!("Broker: private Mosquitto on 127.0.0.1:{}:", broker.port);
    for line in broker_config.lines() {
        println!("    {line}");
    }
    let work = tempfile::tempdir().unwrap();
    let mut table = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=o.rounds {
        let bare_id = format!("bench-bare-{round}");
        create_session(broker.port, &bare_id).await;
        let published = publish_all(broker.port, &messages).await;
        eprintln!("round {round}: published for the bare subscriber in {published:?}");
        let bare = tokio::task::spawn_blocking({
            let (port, n) = (broker.port, o.messages);
            move || run_bare(port, &bare_id, n)
        })
        .await
        .unwrap();

        let gateway_id = format!("bench-gateway-{round}");
        create_session(broker.port, &gateway_id).await;
        let published = publish_all(broker.port, &messages).await;
        eprintln!("round {round}: published for the gateway in {published:?}");
        let dir: PathBuf = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = GatewayConfig {
            mqtt_url: format!("mqtt://127.0.0.1:{}", broker.port),
            client_id: gateway_id.clone(),
            gateway_id,
            server_url: server_url.clone(),
            data_dir: dir.join("data"),
            ..GatewayConfig::default()
        };
        let (gateway, report) = tokio::task::spawn_blocking({
            let n = o.messages;
            move || run_gateway(&config, &dir, n)
        })
        .await
        .unwrap();
        let accepted = report["samples_accepted"].as_u64().unwrap_or(0);
        let rejected = report["rejected"].as_u64().unwrap_or(0);
        assert_eq!(accepted, o.messages, "every sample accepted: {report}");
        assert_eq!(rejected, 0, "nothing rejected: {report}");

        let ratio = bare.seconds / gateway.seconds;
        ratios.push(ratio);
        table.push(row(
            &format!("round {round}: mosquitto_sub"),
            o.messages,
            &bare,
        ));
        table.push(row(
            &format!("round {round}: gateway"),
            o.messages,
            &gateway,
        ));
        table.push(format!(
            "| round {round}: ratio gateway/bare {:<4} | {:>9} | {:>8} | {ratio:>10.3} | {:>6} | {:>10} | {:>11} |",
            "", "", "", "", "", ""
        ));
    }
    println!();
    println!(
        "| run                        |  messages |  seconds |      msg/s |  CPU s | CPU µs/msg | peak RSS MB |"
    );
    println!(
        "|----------------------------|-----------|----------|------------|--------|------------|-------------|"
    );
    for line in &table {
        println!("{line}");
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!();
    println!(
        "Gateway throughput as a ratio of the bare subscriber's: {} (worst {:.3}, target ≥ 0.8, aim ≥ 0.9)",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[0]
    );
}
