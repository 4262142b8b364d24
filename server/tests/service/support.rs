//! A real server on port 0 with a manual clock, a small fleet and a service
//! organisation, and helpers to feed it wear and call its API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::Clock;
use wearcast_protocol::clock::ManualClock;
use wearcast_protocol::registry::*;
use wearcast_protocol::{
    BatchId, Channel, GatewayId, IngestBatch, MachineId, TenantId, UnixMs, WindowAggregate,
};
use wearcast_server::analysis::{AnalysisSettings, run_cycle};
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::config::NotificationsConfig;
use wearcast_server::planning::plan_all;
use wearcast_server::store::Store;
use wearcast_server::{Server, ServerConfig, ServerDeps, planning_settings};

/// Monday 2026-11-23 00:00 UTC.
pub const START: UnixMs = UnixMs(1_795_392_000_000);

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub struct TestServer {
    pub url: String,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub config: ServerConfig,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Press P1 (main bearing, belt) and lathe L1 (spindle), a site with a stop every day
/// 02:00–10:00 UTC, a standard contract with 10% risk tolerance.
pub fn manifest() -> FleetManifest {
    let part = |pid: &str, lead: f64, labour: f64, price: i64| Part {
        id: id(pid),
        name: format!("Part {pid}"),
        price_cents: price,
        lead_time_days: lead,
        labour_hours: labour,
        life: WeibullLife {
            shape: 3.0,
            scale_hours: 6_000.0,
        },
    };
    let wear = |q: &str, healthy, failure| WearChannelSpec {
        quantity: q.into(),
        unit: "u".into(),
        healthy,
        failure,
    };
    let machine = |mid: &str, model: &str| Machine {
        id: id(mid),
        customer: id("plant-co"),
        site: id("plant-1"),
        model: id(model),
        serial: format!("SN-{mid}"),
        commissioned_at: START.plus_hours(-24.0 * 700.0),
        components: vec![],
    };
    FleetManifest {
        tenant: Tenant {
            id: id("acme"),
            name: "ACME".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 10_000,
        },
        customers: vec![Customer {
            id: id("plant-co"),
            name: "Plant Co".into(),
            contact_email: Some("maintenance@plant.example".into()),
        }],
        sites: vec![Site {
            id: id("plant-1"),
            customer: id("plant-co"),
            name: "Plant 1".into(),
            timezone: "UTC".into(),
            region: "eu-central".into(),
            travel_cost_cents: 20_000,
            maintenance_windows: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .into_iter()
            .map(|weekday| RecurringWindow {
                weekday,
                start: "02:00".into(),
                duration_hours: 8.0,
            })
            .collect(),
        }],
        parts: vec![
            part("brg", 2.0, 3.0, 50_000),
            part("belt", 1.0, 1.0, 5_000),
            part("spindle", 3.0, 4.0, 90_000),
        ],
        machine_models: vec![
            MachineModel {
                id: id("press"),
                name: "Press P1".into(),
                components: vec![
                    ComponentSpec {
                        key: id("main_bearing"),
                        name: "Main bearing".into(),
                        part: id("brg"),
                        wear_channels: vec![wear("vibration_rms", 1.0, 8.0)],
                    },
                    ComponentSpec {
                        key: id("belt"),
                        name: "Belt".into(),
                        part: id("belt"),
                        wear_channels: vec![wear("slip_pct", 0.5, 4.0)],
                    },
                ],
                downtime_cost_cents_per_hour: 40_000,
                unplanned_downtime_hours: 24.0,
            },
            MachineModel {
                id: id("lathe"),
                name: "Lathe L1".into(),
                components: vec![ComponentSpec {
                    key: id("spindle"),
                    name: "Spindle".into(),
                    part: id("spindle"),
                    wear_channels: vec![wear("vibration_rms", 1.0, 8.0)],
                }],
                downtime_cost_cents_per_hour: 40_000,
                unplanned_downtime_hours: 24.0,
            },
        ],
        machines: vec![
            machine("press-1", "press"),
            machine("press-2", "press"),
            machine("lathe-1", "lathe"),
        ],
        contracts: vec![Contract {
            id: id("k-1"),
            customer: id("plant-co"),
            tier: ContractTier::Standard,
            parts_coverage: 0.5,
            labour_coverage: 1.0,
            risk_tolerance: 0.1,
            annual_fee_cents: 1_000_000,
            start: START.plus_hours(-24.0 * 100.0),
            renewal: START.plus_hours(24.0 * 200.0),
        }],
    }
}

/// Ana can service presses; Bob only lathes.
pub fn service_organisation() -> ServiceOrganisation {
    ServiceOrganisation {
        technicians: vec![
            Technician {
                id: id("ana"),
                name: "Ana".into(),
                email: None,
                home_region: "eu-central".into(),
                skills: vec![id("press")],
            },
            Technician {
                id: id("bob"),
                name: "Bob".into(),
                email: None,
                home_region: "eu-central".into(),
                skills: vec![id("lathe")],
            },
        ],
        stock: vec![],
    }
}

impl TestServer {
    pub async fn start(notifications: NotificationsConfig) -> Self {
        Self::start_with(notifications, |_| {}).await
    }

    /// [`TestServer::start`] with `tweak` applied to the server's configuration.
    pub async fn start_with(
        notifications: NotificationsConfig,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let mut config = ServerConfig {
            http_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            // The test drives the cycles itself.
            analysis_interval: Duration::from_secs(3600),
            notifications: NotificationsConfig {
                poll_interval: Duration::from_millis(100),
                ..notifications
            },
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let server = Server::start(
            config.clone(),
            ServerDeps {
                clock: clock.clone(),
                metrics: None,
            },
        )
        .await
        .unwrap();
        server.import(&manifest()).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let store = server.store().clone();
        // The tests act as the manufacturer's admin unless they say otherwise.
        let admin = store
            .issue_token_now(&TokenRequest::new(Role::Admin))
            .await
            .unwrap();
        let token = CancellationToken::new();
        let run_token = token.clone();
        let task = tokio::spawn(async move {
            server.run(run_token).await.unwrap();
        });
        let me = Self {
            url,
            store,
            clock,
            config,
            http: bearer_client(&admin.secret),
            _dir: dir,
            token,
            task: Some(task),
        };
        let (status, body) = me
            .send(
                "POST",
                "/api/v1/service",
                Some(serde_json::to_value(service_organisation()).unwrap()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        me
    }

    /// One model step and one planning step at the clock's now.
    pub async fn cycle(&self) {
        let now = self.clock.now();
        run_cycle(&self.store, now, &AnalysisSettings::default())
            .await
            .unwrap();
        plan_all(&self.store, now, &planning_settings(&self.config))
            .await
            .unwrap();
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            "DELETE" => self.http.delete(&url),
            other => panic!("method {other}"),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Posts 14 days of hourly windows of `channel` on `machine`: a part whose wear
    /// started 10 days ago and reaches the failure level `fails_in_h` from now.
    pub async fn feed_wear(
        &self,
        machine: &str,
        channel: &str,
        healthy: f64,
        failure: f64,
        fails_in_h: f64,
    ) {
        let now = self.clock.now();
        self.feed_range(
            machine,
            channel,
            (healthy, failure),
            (now.plus_hours(-240.0), now.plus_hours(fails_in_h)),
            (now.plus_hours(-14.0 * 24.0), now),
        )
        .await;
    }

    /// Posts hourly windows from `span.0` to `span.1` of a wear curve that starts at
    /// `curve.0` and reaches the failure level at `curve.1`.
    pub async fn feed_range(
        &self,
        machine: &str,
        channel: &str,
        (healthy, failure): (f64, f64),
        (onset, fails): (UnixMs, UnixMs),
        (from, to): (UnixMs, UnixMs),
    ) {
        let mut windows = Vec::new();
        let mut t = from;
        let mut i = 0u64;
        while t < to {
            let x = (t.0 - onset.0) as f64 / (fails.0 - onset.0) as f64;
            let w = if x <= 0.0 {
                0.0
            } else {
                (3.0 * x).exp_m1() / 3.0f64.exp_m1()
            };
            let v = healthy
                + (failure - healthy) * w
                + 0.01 * (failure - healthy) * ((i as f64) * 1.3).sin();
            windows.push(WindowAggregate {
                tenant: TenantId::parse("acme").unwrap(),
                machine: MachineId::parse(machine).unwrap(),
                channel: Channel::parse(channel).unwrap(),
                start: t,
                end: t.plus_ms(UnixMs::HOUR),
                count: 12,
                mean: v,
                min: v - 0.01,
                max: v + 0.01,
                std: 0.005,
                last: v,
                last_ts: t.plus_ms(55 * 60_000),
            });
            t = t.plus_ms(UnixMs::HOUR);
            i += 1;
        }
        let batch = IngestBatch {
            batch_id: BatchId::parse(format!(
                "b-{machine}-{}-{}",
                channel.replace('.', "-"),
                from.0
            ))
            .unwrap(),
            gateway: GatewayId::parse("gw-test").unwrap(),
            created_at: to,
            windows,
            events: vec![],
            statuses: vec![],
        };
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/ingest",
                Some(serde_json::to_value(&batch).unwrap()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["rejected"].as_array().unwrap().is_empty(), "{body}");
    }

    /// Posts one machine event (as the gateway forwards it).
    pub async fn post_event(&self, machine: &str, kind: &str, component: &str, at: UnixMs) {
        let batch = serde_json::json!({
            "batch_id": format!("ev-{}", uuid_like(&format!("{machine}{kind}{component}{}{}", at.0, self.clock.now().0))),
            "gateway": "gw-test",
            "created_at": self.clock.now().0,
            "events": [{"tenant": "acme", "machine": machine, "ts": at.0, "kind": kind, "component": component}],
        });
        let (status, body) = self.send("POST", "/api/v1/ingest", Some(batch)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["rejected"].as_array().unwrap().is_empty(), "{body}");
    }

    /// The proposed offers of `machine`.
    pub async fn proposed(&self, machine: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/offers?status=proposed&machine={machine}"))
            .await
            .as_array()
            .cloned()
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub fn ts(v: &Value) -> UnixMs {
    UnixMs::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// A short, stable id from `s` (FNV-1a), for batch ids under the 64-character limit.
fn uuid_like(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}
