//! Real processes for the fault tests: a private Mosquitto per test (so a test can
//! restart it and set its limits), the real server (`wearcast server` on SQLite in a
//! temp dir, restartable on the same port), gateways (`wearcast gateway`) that can be
//! `kill -9`ed and are watched through their `/metrics`, and a publisher that streams
//! numbered samples and knows which ones the broker acknowledged.
//!
//! Every process started here is stopped by its own pid when its handle drops.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Mutex as AsyncMutex;
use wearcast_protocol::registry::*;
use wearcast_protocol::{Clock, SystemClock, UnixMs};

use crate::common::{BIN, in_ci, metric, write_json};

/// The fault tests start processes, brokers and a lot of traffic: one at a time.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<AsyncMutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| AsyncMutex::new(())).lock().await
}

/// True if Mosquitto can be started here; otherwise says why the test is skipped, or
/// fails under `CI=true`.
pub fn mosquitto_available(test: &str) -> bool {
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !in_ci(),
            "{test}: the `mosquitto` binary is not installed and CI=true"
        );
        eprintln!("SKIPPED {test}: needs the `mosquitto` binary (apt-get install mosquitto)");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Sends a signal to one process we started, by its pid.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for `child` to exit after SIGTERM and checks it exited cleanly.
async fn terminate(child: &mut Child, name: &str, log: &Path) {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "{name} failed ({status}):\n{}",
                tail(log, 40)
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not stop:\n{}",
            tail(log, 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- broker ------------------------------------------------------------------------

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
        Self::start_with("allow_anonymous true\n")
    }

    /// A broker whose access settings are `access` (e.g. a password and an ACL file).
    pub fn start_with(access: &str) -> Self {
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
                 {access}\
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
        self.stop();
        self.spawn();
    }

    /// A clean stop (SIGTERM); [`OwnBroker::start_again`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    pub fn start_again(&mut self) {
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

// ---- server ------------------------------------------------------------------------

/// A fleet manifest with one tenant and these machines, each with a `spindle`
/// component: enough for the server to take their telemetry.
pub fn manifest(tenant: &str, machines: &[String]) -> FleetManifest {
    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect("a valid id")
    }
    let now = SystemClock.now();
    FleetManifest {
        tenant: Tenant {
            id: id(tenant),
            name: "Fault Test Machines".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 9_000,
        },
        customers: vec![Customer {
            id: id("plant-co"),
            name: "Plant Co".into(),
            contact_email: None,
        }],
        sites: vec![Site {
            id: id("plant-1"),
            customer: id("plant-co"),
            name: "Plant 1".into(),
            timezone: "UTC".into(),
            region: "eu".into(),
            travel_cost_cents: 20_000,
            maintenance_windows: vec![RecurringWindow {
                weekday: Weekday::Sun,
                start: "02:00".into(),
                duration_hours: 4.0,
            }],
        }],
        parts: vec![Part {
            id: id("brg-6205"),
            name: "Bearing 6205".into(),
            price_cents: 45_000,
            lead_time_days: 1.0,
            labour_hours: 2.0,
            life: WeibullLife {
                shape: 3.0,
                scale_hours: 4_000.0,
            },
        }],
        machine_models: vec![MachineModel {
            id: id("lathe-l1"),
            name: "Lathe L1".into(),
            components: vec![ComponentSpec {
                key: id("spindle"),
                name: "Spindle".into(),
                part: id("brg-6205"),
                wear_channels: vec![WearChannelSpec {
                    quantity: "vibration_rms".into(),
                    unit: "mm/s".into(),
                    healthy: 1.0,
                    failure: 8.0,
                }],
            }],
            downtime_cost_cents_per_hour: 50_000,
            unplanned_downtime_hours: 16.0,
        }],
        machines: machines
            .iter()
            .enumerate()
            .map(|(i, m)| Machine {
                id: id(m),
                customer: id("plant-co"),
                site: id("plant-1"),
                model: id("lathe-l1"),
                serial: format!("L1-{i:04}"),
                commissioned_at: now.plus_hours(-24.0 * 400.0),
                components: vec![InstalledComponent {
                    key: id("spindle"),
                    installed_at: now.plus_hours(-24.0 * 30.0),
                }],
            })
            .collect(),
        contracts: vec![],
    }
}

/// The real server, `wearcast server`, on SQLite in a directory of its own. It can be
/// stopped and started again on the same port with the same database.
pub struct ServerProcess {
    pub url: String,
    listen: String,
    data: PathBuf,
    registry: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn start(dir: &Path, manifest: &FleetManifest) -> Self {
        let registry = dir.join("fleet.json");
        write_json(&registry, manifest);
        let mut server = Self {
            url: String::new(),
            listen: "127.0.0.1:0".into(),
            data: dir.join("server"),
            registry,
            log: dir.join("server.log"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let mut child = Command::new(BIN)
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--http-listen", &self.listen])
            .arg("--registry")
            .arg(&self.registry)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start wearcast server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("Wearcast server on http://") {
                        break rest.trim_end_matches('/').to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "wearcast server did not start within 60 s:\n{}",
                        tail(&self.log, 40)
                    );
                }
            }
        };
        self.url = format!("http://{addr}");
        // Comes back on the same port after a stop.
        self.listen = addr;
        self.child = Some(child);
    }

    /// Stops it (SIGTERM, a clean exit); the port refuses connections until
    /// [`Self::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "wearcast server", &self.log).await;
        }
    }

    /// Starts it again on the same port with the same database.
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // The old socket may linger for a moment.
        while std::net::TcpListener::bind(&self.listen).is_err() {
            assert!(Instant::now() < deadline, "{} stays busy", self.listen);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spawn();
    }

    /// Per sample seq, how many samples and with which mean the server stored for
    /// `machine`'s `channel` (each sample has its own one-second window starting at
    /// `base + seq s`).
    pub async fn stored_by_seq(
        &self,
        machine: &str,
        channel: &str,
        base: UnixMs,
    ) -> BTreeMap<u64, (u64, f64)> {
        let url = format!(
            "{}/api/v1/machines/{machine}/telemetry?channel={channel}&limit=100000",
            self.url
        );
        let Ok(resp) = self.client().get(&url).send().await else {
            return BTreeMap::new();
        };
        // 404 until the first window of the channel is in.
        if !resp.status().is_success() {
            return BTreeMap::new();
        }
        let body: serde_json::Value = resp.json().await.expect("telemetry JSON");
        assert_eq!(
            body["truncated"], false,
            "more windows than one request returns"
        );
        let mut out = BTreeMap::new();
        for w in body["windows"].as_array().into_iter().flatten() {
            let start = w["start"]
                .as_str()
                .and_then(|s| UnixMs::parse_rfc3339(s).ok())
                .expect("window start");
            let seq = ((start.0 - base.0) / 1000) as u64;
            let count = w["count"].as_u64().expect("count");
            let mean = w["mean"].as_f64().expect("mean");
            out.insert(seq, (count, mean));
        }
        out
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// A client with the admin token the server wrote at its first start.
    pub fn client(&self) -> reqwest::Client {
        let token = std::fs::read_to_string(self.data.join("tokens").join("admin.token"))
            .expect("the server's admin token");
        crate::common::bearer(token.trim())
    }

    /// Issues a gateway token with `wearcast token create` into `file`.
    pub fn gateway_token(&self, file: &Path) {
        let out = Command::new(BIN)
            .args(["token", "create", "--role", "gateway", "--data-dir"])
            .arg(&self.data)
            .arg("--output")
            .arg(file)
            .output()
            .expect("wearcast token create");
        assert!(
            out.status.success(),
            "wearcast token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- gateway -----------------------------------------------------------------------

/// What the fault tests set in a gateway's `[gateway]` section; the rest stays as
/// shipped, except 1 s windows closed as soon as they can be and short sweeps.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub mqtt_url: String,
    pub server_url: String,
    pub client_id: String,
    pub data_dir: PathBuf,
    pub share_group: Option<String>,
    pub spool_max_bytes: Option<u64>,
    pub spool_segment_bytes: Option<u64>,
    /// `block` or `drop_oldest`.
    pub spool_overflow: Option<&'static str>,
    /// The gateway token file (`gateway.server_token_file`).
    pub server_token_file: PathBuf,
}

impl GatewaySettings {
    pub fn new(broker: &OwnBroker, server: &ServerProcess, client_id: &str, data: &Path) -> Self {
        let server_token_file = server.data.with_extension(format!("{client_id}.token"));
        if !server_token_file.exists() {
            server.gateway_token(&server_token_file);
        }
        Self {
            server_token_file,
            mqtt_url: broker.url(),
            server_url: server.url.clone(),
            client_id: client_id.to_owned(),
            data_dir: data.to_owned(),
            share_group: None,
            spool_max_bytes: None,
            spool_segment_bytes: None,
            spool_overflow: None,
        }
    }

    fn toml(&self) -> String {
        let mut t = format!(
            "[gateway]\n\
             mqtt_url = {:?}\n\
             server_url = {:?}\n\
             client_id = {:?}\n\
             gateway_id = {:?}\n\
             data_dir = {:?}\n\
             window = \"1s\"\n\
             lateness = \"0s\"\n\
             flush_interval = \"50ms\"\n\
             forward_timeout = \"5s\"\n\
             forward_max_backoff = \"2s\"\n\
             registry_refresh = \"5s\"\n\
             server_token_file = {:?}\n",
            self.mqtt_url,
            self.server_url,
            self.client_id,
            self.client_id,
            self.data_dir.display().to_string(),
            self.server_token_file.display().to_string(),
        );
        if let Some(g) = &self.share_group {
            t.push_str(&format!("share_group = {g:?}\n"));
        }
        if let Some(b) = self.spool_max_bytes {
            t.push_str(&format!("spool_max_bytes = {b}\n"));
        }
        if let Some(b) = self.spool_segment_bytes {
            t.push_str(&format!("spool_segment_bytes = {b}\n"));
        }
        if let Some(p) = self.spool_overflow {
            t.push_str(&format!("spool_overflow = {p:?}\n"));
        }
        t
    }
}

/// The gateway's counters and gauges, read from its `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct GatewayStats {
    pub subscribed: bool,
    pub messages_acked: u64,
    pub samples_accepted: u64,
    pub batches_forwarded: u64,
    pub samples_dropped: u64,
    pub batches_dropped: u64,
    pub spool_bytes: u64,
    pub spool_batches: u64,
    pub spool_full: bool,
    pub corrupt_segments: u64,
}

impl GatewayStats {
    fn parse(text: &str) -> Self {
        let m = |name: &str, labels: &[(&str, &str)]| metric(text, name, labels) as u64;
        Self {
            subscribed: m("wearcast_gateway_broker_connected", &[]) == 1,
            messages_acked: m("wearcast_gateway_messages_acked_total", &[]),
            samples_accepted: m("wearcast_gateway_samples_accepted_total", &[]),
            batches_forwarded: m("wearcast_gateway_batches_forwarded_total", &[]),
            samples_dropped: m("wearcast_gateway_dropped_total", &[("unit", "sample")]),
            batches_dropped: m("wearcast_gateway_dropped_total", &[("unit", "batch")]),
            spool_bytes: m("wearcast_gateway_spool_bytes", &[]),
            spool_batches: m("wearcast_gateway_spool_batches", &[]),
            spool_full: m("wearcast_gateway_spool_full", &[]) == 1,
            corrupt_segments: m("wearcast_gateway_spool_corrupt_segments_total", &[]),
        }
    }
}

/// A `wearcast gateway` process with its `/metrics` on a port of its own.
pub struct GatewayProcess {
    pub name: String,
    child: Child,
    metrics_url: String,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts `wearcast gateway` with `settings`; its log goes to `dir/{name}.log`
    /// (appended, so one file tells the story of every life of one gateway).
    pub fn start(name: &str, settings: &GatewaySettings, dir: &Path) -> Self {
        Self::start_with_env(name, settings, dir, &[])
    }

    pub fn start_with_env(
        name: &str,
        settings: &GatewaySettings,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, settings.toml()).expect("write the gateway config");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let metrics_listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("gateway")
            .args(["--metrics-listen", &metrics_listen])
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start wearcast gateway");
        Self {
            name: name.to_owned(),
            child,
            metrics_url: format!("http://{metrics_listen}/metrics"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` on its ops listener: the status and the JSON body; `None` while it
    /// does not answer.
    pub async fn ops_get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let url = self.metrics_url.replace("/metrics", path);
        let resp = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?
            .get(&url)
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }

    /// Its metrics now; `None` while it is not serving them (starting, or gone).
    pub async fn stats(&self) -> Option<GatewayStats> {
        wearcast_server::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client.get(&self.metrics_url).send().await.ok()?;
        let text = resp.text().await.ok()?;
        Some(GatewayStats::parse(&text))
    }

    pub async fn wait_subscribed(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stats().await.is_some_and(|s| s.subscribed) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before subscribing:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not subscribe within {timeout:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until its metrics satisfy `done`; false after `timeout`.
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        done: impl Fn(&GatewayStats) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stats().await.is_some_and(|s| done(&s)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; it must flush and exit cleanly.
    pub async fn stop(mut self) {
        let (name, log) = (self.name.clone(), self.log.clone());
        terminate(&mut self.child, &name, &log).await;
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
        tail(&self.log, 40)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- publisher ---------------------------------------------------------------------

/// Where sample `seq` goes: its own one-second window after `base`.
pub fn sample_ts(base: UnixMs, seq: u64) -> UnixMs {
    base.plus_ms(seq as i64 * 1000)
}

/// A second-aligned instant two days ago (well inside the accepted age).
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
    poller: tokio::task::JoinHandle<()>,
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
        let poller = {
            let acked = acked.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        };
        Self {
            client,
            topic,
            base: base_time(),
            readings,
            next_seq: 1,
            acked,
            poller,
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
        self.poller.abort();
    }
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
