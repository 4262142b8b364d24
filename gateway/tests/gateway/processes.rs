//! Real processes for the fault tests: a private Mosquitto per test (so a test can
//! restart it and set its limits), gateway processes (`wearcast-gateway-harness`, built
//! with this package) that can be `kill -9`ed, and a publisher that streams numbered
//! samples and knows which ones the broker acknowledged.
//!
//! Every process started here is stopped by its own pid when its handle drops.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use wearcast_gateway::{GatewayConfig, GatewayReport};
use wearcast_protocol::{Clock, IngestBatch, SystemClock, UnixMs};

pub const HARNESS: &str = env!("CARGO_BIN_EXE_wearcast-gateway-harness");

/// The fault tests start processes, brokers and a lot of traffic: one at a time.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<AsyncMutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| AsyncMutex::new(())).lock().await
}

/// True if Mosquitto can be started here; otherwise says why the test is skipped (or
/// fails under `CI=true`).
pub fn mosquitto_available(test: &str) -> bool {
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: the `mosquitto` binary is not installed and CI=true"
        );
        eprintln!("SKIPPED {test}: needs the `mosquitto` binary (apt-get install mosquitto)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A Mosquitto of our own, with persistence and limits suited to a gateway.
pub struct OwnBroker {
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Started as root, Mosquitto drops to its own user: it must still be able to
        // write its persistence file and log here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("open up the broker's directory");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 max_inflight_messages 100\n\
                 max_queued_messages 1000000\n\
                 log_dest file {}\n",
                dir.path().display(),
                log.display()
            ),
        )
        .expect("write the broker config");
        let mut broker = Self {
            port,
            config,
            log,
            child: None,
            _dir: dir,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(self.port) {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A clean restart: SIGTERM (Mosquitto saves its sessions and queues), then start
    /// again on the same port with the same files.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
        self.spawn();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal to one process we started, by its pid.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A gateway process.
pub struct GatewayProcess {
    pub name: String,
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts the harness with `config`; its log goes to `dir/{name}.log` (appended, so
    /// one file tells the story of every life of one gateway).
    pub fn start(name: &str, config: &GatewayConfig, dir: &Path) -> Self {
        Self::start_with_env(name, config, dir, &[])
    }

    pub fn start_with_env(
        name: &str,
        config: &GatewayConfig,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let config_path = dir.join(format!("{name}.json"));
        std::fs::write(
            &config_path,
            serde_json::to_vec(config).expect("config json"),
        )
        .expect("write the gateway config");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(HARNESS)
            .arg(&config_path)
            .args(["--stats-every-ms", "50"])
            .env(
                "HARNESS_LOG",
                std::env::var("HARNESS_LOG").unwrap_or("info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start the gateway harness");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        {
            let events = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        events.lock().unwrap().push(v);
                    }
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            events,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn has_event(&self, kind: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == kind)
    }

    /// The latest totals it printed.
    pub fn stats(&self) -> Option<GatewayReport> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .rev()
            .find(|e| e["event"] == "stats" || e["event"] == "stopped")
            .and_then(|e| serde_json::from_value(e["report"].clone()).ok())
    }

    pub async fn wait_subscribed(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has_event("subscribed") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before subscribing: {}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not subscribe within {timeout:?}: {}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until its totals satisfy `done`; false after `timeout`.
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        done: impl Fn(&GatewayReport) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stats().is_some_and(|s| done(&s)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the final report of a clean stop.
    pub async fn stop(mut self) -> GatewayReport {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "{} failed: {}",
                    self.name,
                    self.log_tail()
                );
                break;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The reader thread may still be at the last line.
        for _ in 0..100 {
            if self.has_event("stopped") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = self.events.lock().unwrap();
        let stopped = events
            .iter()
            .find(|e| e["event"] == "stopped")
            .unwrap_or_else(|| panic!("{} printed no final report", self.name));
        serde_json::from_value(stopped["report"].clone()).expect("a report")
    }

    /// Resident memory now, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway config for the fault tests: 1 s windows closed as soon as they can be,
/// short sweeps, everything else as shipped.
pub fn gateway_config(
    broker: &OwnBroker,
    server_url: &str,
    client_id: &str,
    data_dir: &Path,
) -> GatewayConfig {
    GatewayConfig {
        mqtt_url: broker.url(),
        client_id: client_id.to_owned(),
        server_url: server_url.to_owned(),
        gateway_id: client_id.to_owned(),
        window: Duration::from_secs(1),
        lateness: Duration::ZERO,
        flush_interval: Duration::from_millis(50),
        forward_timeout: Duration::from_secs(5),
        registry_refresh: Duration::from_secs(5),
        data_dir: data_dir.to_owned(),
        ..GatewayConfig::default()
    }
}

/// Where sample `seq` goes: its own one-second window, two days back (well inside the
/// accepted age), so each stored window holds exactly one sample.
pub fn sample_ts(base: UnixMs, seq: u64) -> UnixMs {
    base.plus_ms(seq as i64 * 1000)
}

/// A second-aligned instant two days ago.
pub fn base_time() -> UnixMs {
    SystemClock
        .now()
        .plus_ms(-2 * UnixMs::DAY)
        .window_start(1000)
}

/// A sample carrying its seq as the value of every reading: `readings` channels.
pub fn payload(base: UnixMs, seq: u64, readings: usize) -> String {
    let mut r = String::from("\"spindle.vibration_rms\":");
    r.push_str(&seq.to_string());
    for i in 1..readings {
        r.push_str(&format!(",\"axis{i}.temperature_c\":{seq}"));
    }
    format!(
        r#"{{"ts":{},"seq":{seq},"readings":{{{r}}}}}"#,
        sample_ts(base, seq).0
    )
}

/// Publishes numbered samples of one machine and counts the broker's PUBACKs.
pub struct Publisher {
    client: AsyncClient,
    topic: String,
    base: UnixMs,
    readings: usize,
    next_seq: u64,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Publisher {
    /// A publisher with a persistent session, so what the broker has not acknowledged
    /// is sent again after a broker restart.
    pub async fn connect(broker: &OwnBroker, id: &str, topic: String, readings: usize) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        _ = stop.cancelled() => return,
                        e = eventloop.poll() => e,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        }
        Self {
            client,
            topic,
            base: base_time(),
            readings,
            next_seq: 1,
            acked,
            stop,
        }
    }

    pub fn base(&self) -> UnixMs {
        self.base
    }

    /// Publishes the next `n` samples.
    pub async fn publish(&mut self, n: u64) {
        for _ in 0..n {
            let payload = payload(self.base, self.next_seq, self.readings);
            self.client
                .publish(&self.topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue a publish");
            self.next_seq += 1;
        }
    }

    /// Publishes at about `rate` messages per second for `duration`.
    pub async fn stream(&mut self, rate: u64, duration: Duration) {
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if due > sent {
                self.publish(due - sent).await;
                sent = due;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn published(&self) -> u64 {
        self.next_seq - 1
    }

    /// Waits until the broker has acknowledged everything published.
    pub async fn wait_acked(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < self.published() {
            assert!(
                Instant::now() < deadline,
                "the broker acknowledged {} of {} publishes",
                self.acked.load(Ordering::Relaxed),
                self.published()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Per sample seq, how many times and with which value the server stored it (each
/// sample has its own window; `channel` picks one of its readings).
pub fn stored_by_seq(
    batches: &[IngestBatch],
    machine: &str,
    channel: &str,
    base: UnixMs,
) -> BTreeMap<u64, (u64, f64)> {
    let mut out: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
    for w in batches.iter().flat_map(|b| &b.windows) {
        if w.machine.as_str() != machine || w.channel.as_str() != channel {
            continue;
        }
        let seq = ((w.start.0 - base.0) / 1000) as u64;
        let e = out.entry(seq).or_default();
        e.1 = (e.1 * e.0 as f64 + w.mean * w.count as f64) / (e.0 + w.count) as f64;
        e.0 += w.count;
    }
    out
}

/// Checks that seqs `1..=n` were each stored exactly once with their own value, and
/// nothing else; returns the problems, at most 20 of them.
pub fn exactly_once(stored: &BTreeMap<u64, (u64, f64)>, n: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for seq in 1..=n {
        match stored.get(&seq) {
            Some((1, v)) if *v == seq as f64 => {}
            Some(other) => problems.push(format!("seq {seq}: stored as {other:?}")),
            None => problems.push(format!("seq {seq}: missing")),
        }
    }
    for seq in stored.keys().filter(|s| **s == 0 || **s > n) {
        problems.push(format!("seq {seq}: never published"));
    }
    problems.truncate(20);
    problems
}
