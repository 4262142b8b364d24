//! A real server on port 0 with a two-machine fleet of two customers, and helpers to
//! post windows through the real ingest API.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::registry::*;
use wearcast_protocol::{Clock, SharedClock};
use wearcast_protocol::{
    GatewayId, IngestBatch, IngestResponse, SystemClock, UnixMs, WindowAggregate,
};
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::sink::influx::{InfluxConfig, InfluxSink, InfluxToken, SinkStats};
use wearcast_server::{Server, ServerConfig, ServerDeps};

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// The real clock's current hour: VictoriaMetrics keeps samples near its own clock.
pub fn this_hour() -> UnixMs {
    SystemClock.now().window_start(UnixMs::HOUR)
}

/// Press `press-1` of customer `plant-co` and lathe `lathe-1` of `mill-co`.
pub fn manifest(now: UnixMs) -> FleetManifest {
    let part = |pid: &str| Part {
        id: id(pid),
        name: format!("Part {pid}"),
        price_cents: 10_000,
        lead_time_days: 1.0,
        labour_hours: 1.0,
        life: WeibullLife {
            shape: 3.0,
            scale_hours: 6_000.0,
        },
    };
    let component = |key: &str, part: &str, quantity: &str| ComponentSpec {
        key: id(key),
        name: key.into(),
        part: id(part),
        wear_channels: vec![WearChannelSpec {
            quantity: quantity.into(),
            unit: "u".into(),
            healthy: 1.0,
            failure: 8.0,
        }],
    };
    let customer = |cid: &str| Customer {
        id: id(cid),
        name: cid.into(),
        contact_email: None,
    };
    let site = |sid: &str, cid: &str| Site {
        id: id(sid),
        customer: id(cid),
        name: sid.into(),
        timezone: "UTC".into(),
        region: "eu".into(),
        travel_cost_cents: 0,
        maintenance_windows: vec![RecurringWindow {
            weekday: Weekday::Sun,
            start: "02:00".into(),
            duration_hours: 8.0,
        }],
    };
    let machine = |mid: &str, cid: &str, sid: &str, model: &str| Machine {
        id: id(mid),
        customer: id(cid),
        site: id(sid),
        model: id(model),
        serial: mid.into(),
        commissioned_at: now.plus_hours(-24.0 * 100.0),
        components: vec![],
    };
    FleetManifest {
        tenant: Tenant {
            id: id("acme"),
            name: "ACME".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 10_000,
        },
        customers: vec![customer("plant-co"), customer("mill-co")],
        sites: vec![site("plant-1", "plant-co"), site("mill-1", "mill-co")],
        parts: vec![part("brg"), part("belt"), part("spindle")],
        machine_models: vec![
            MachineModel {
                id: id("press"),
                name: "Press".into(),
                components: vec![
                    component("main_bearing", "brg", "vibration_rms"),
                    component("belt", "belt", "slip_pct"),
                ],
                downtime_cost_cents_per_hour: 1_000,
                unplanned_downtime_hours: 8.0,
            },
            MachineModel {
                id: id("lathe"),
                name: "Lathe".into(),
                components: vec![component("spindle", "spindle", "vibration_rms")],
                downtime_cost_cents_per_hour: 1_000,
                unplanned_downtime_hours: 8.0,
            },
        ],
        machines: vec![
            machine("press-1", "plant-co", "plant-1", "press"),
            machine("lathe-1", "mill-co", "mill-1", "lathe"),
        ],
        contracts: vec![],
    }
}

/// (machine, channel) pairs the fleet has: its customer is the other part of the tag.
pub const CHANNELS: &[(&str, &str, &str)] = &[
    ("press-1", "plant-co", "main_bearing.vibration_rms"),
    ("press-1", "plant-co", "belt.slip_pct"),
    ("press-1", "plant-co", "op.load_pct"),
    ("lathe-1", "mill-co", "spindle.vibration_rms"),
];

/// Components in the fleet (one health point each per refresh).
pub const COMPONENTS: usize = 3;

/// A one-minute window with distinct, checkable statistics.
pub fn window(machine: &str, channel: &str, start: UnixMs, seed: f64) -> WindowAggregate {
    WindowAggregate {
        tenant: id("acme"),
        machine: id(machine),
        channel: id(channel),
        start,
        end: start.plus_ms(60_000),
        count: 10 + seed as u64,
        mean: 2.0 + seed / 100.0,
        min: 1.0 + seed / 100.0,
        max: 3.0 + seed / 100.0,
        std: 0.25 + seed / 1000.0,
        last: 2.5 + seed / 100.0,
        last_ts: start.plus_ms(59_000),
    }
}

static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn influx_config(url: &str) -> InfluxConfig {
    InfluxConfig {
        url: Some(url.into()),
        org: "acme".into(),
        bucket: "wearcast".into(),
        token: Some(InfluxToken::new("test-token")),
        ..InfluxConfig::default()
    }
}

pub struct TestServer {
    pub url: String,
    pub sink: InfluxSink,
    pub http: reqwest::Client,
    pub now: UnixMs,
    _dir: tempfile::TempDir,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on the real clock with `influx`,
    /// running its analysis cycle every `analysis_interval`.
    pub async fn start(influx: InfluxConfig, analysis_interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The real clock: each analysis cycle stamps its estimates with a later instant.
        let clock: SharedClock = Arc::new(SystemClock);
        let now = clock.now();
        let config = ServerConfig {
            http_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            analysis_interval,
            influx,
            ..ServerConfig::default()
        };
        let server = Server::start(
            config,
            ServerDeps {
                clock,
                metrics: None,
            },
        )
        .await
        .unwrap();
        server.import(&manifest(now)).await.unwrap();
        let sink = server.influx().expect("the sink is configured").clone();
        // The test ingests and reads as the manufacturer's admin.
        let admin = server
            .store()
            .issue_token_now(&TokenRequest::new(Role::Admin))
            .await
            .unwrap();
        let url = format!("http://{}", server.local_addr());
        let token = CancellationToken::new();
        let run_token = token.clone();
        let task = tokio::spawn(async move { server.run(run_token).await.unwrap() });
        Self {
            url,
            sink,
            http: bearer_client(&admin.secret),
            now,
            _dir: dir,
            token,
            task: Some(task),
        }
    }

    /// Posts one batch through the real ingest API; every window must be stored.
    pub async fn ingest(&self, windows: Vec<WindowAggregate>) -> IngestResponse {
        let n = windows.len() as u64;
        let batch = IngestBatch {
            batch_id: id(&format!(
                "batch-{}",
                BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            gateway: id::<GatewayId>("gw-test"),
            created_at: self.now,
            windows,
            events: vec![],
            statuses: vec![],
        };
        let r = self
            .http
            .post(format!("{}/api/v1/ingest", self.url))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r: IngestResponse = r.json().await.unwrap();
        assert_eq!(r.windows_stored, n, "{:?}", r.rejected);
        r
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// Waits (bounded) until `done` holds for the sink's counts, and returns them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&SinkStats) -> bool) -> SinkStats {
        for _ in 0..600 {
            let s = self.sink.stats();
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}: {:?}", self.sink.stats());
    }

    /// Shuts the server down (the sink flushes on the way out) and returns the sink's
    /// final counts.
    pub async fn stop(mut self) -> SinkStats {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.sink.stats()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
