//! A real server on port 0 with a manual clock and three customers — `steady`
//! (contract, keeps reporting), `fading` (contract, three presses) and `loner` (no
//! contract, two presses) — a webhook receiver that checks signatures, and helpers to
//! feed telemetry, get offers, complete work orders and answer surveys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::Clock;
use wearcast_protocol::clock::ManualClock;
use wearcast_protocol::registry::*;
use wearcast_protocol::{
    BatchId, Channel, GatewayId, IngestBatch, MachineId, TenantId, UnixMs, WindowAggregate,
};
use wearcast_server::analysis::{AnalysisSettings, run_cycle};
use wearcast_server::analytics::AnalyticsConfig;
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::config::{NotificationsConfig, ServiceConfig, WebhookConfig};
use wearcast_server::notify::signature;
use wearcast_server::planning::{PlanReport, plan_all};
use wearcast_server::store::Store;
use wearcast_server::{Server, ServerConfig, ServerDeps, planning_settings};

/// Monday 2026-11-23 00:00 UTC.
pub const START: UnixMs = UnixMs(1_795_392_000_000);
pub const DAY: i64 = UnixMs::DAY;
pub const PUBLIC_URL: &str = "https://service.example.test";
const SECRET: &str = "a-long-shared-secret-for-tests";

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub fn ts(v: &Value) -> UnixMs {
    UnixMs::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

pub fn manifest() -> FleetManifest {
    let site = |sid: &str, customer: &str| Site {
        id: id(sid),
        customer: id(customer),
        name: format!("Site {sid}"),
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
    };
    let machine = |mid: &str, customer: &str, site: &str| Machine {
        id: id(mid),
        customer: id(customer),
        site: id(site),
        model: id("press"),
        serial: format!("SN-{mid}"),
        commissioned_at: START.plus_ms(-700 * DAY),
        components: vec![],
    };
    let contract = |kid: &str, customer: &str, start_days: i64, renewal_days: i64| Contract {
        id: id(kid),
        customer: id(customer),
        tier: ContractTier::Standard,
        parts_coverage: 0.5,
        labour_coverage: 1.0,
        risk_tolerance: 0.1,
        annual_fee_cents: 1_000_000,
        start: START.plus_ms(start_days * DAY),
        renewal: START.plus_ms(renewal_days * DAY),
    };
    let customer = |cid: &str, name: &str| Customer {
        id: id(cid),
        name: name.into(),
        contact_email: Some(format!("maintenance@{cid}.example")),
    };
    FleetManifest {
        tenant: Tenant {
            id: id("acme"),
            name: "ACME".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 10_000,
        },
        customers: vec![
            customer("steady", "Steady Steel"),
            customer("fading", "Fading Fabrication"),
            customer("loner", "Loner Logistics"),
        ],
        sites: vec![
            site("steady-1", "steady"),
            site("fading-1", "fading"),
            site("loner-1", "loner"),
        ],
        parts: vec![Part {
            id: id("brg"),
            name: "Main bearing".into(),
            price_cents: 50_000,
            lead_time_days: 2.0,
            labour_hours: 3.0,
            life: WeibullLife {
                shape: 3.0,
                scale_hours: 6_000.0,
            },
        }],
        machine_models: vec![MachineModel {
            id: id("press"),
            name: "Press P1".into(),
            components: vec![ComponentSpec {
                key: id("main_bearing"),
                name: "Main bearing".into(),
                part: id("brg"),
                wear_channels: vec![WearChannelSpec {
                    quantity: "vibration_rms".into(),
                    unit: "mm/s".into(),
                    healthy: 1.0,
                    failure: 8.0,
                }],
            }],
            downtime_cost_cents_per_hour: 40_000,
            unplanned_downtime_hours: 24.0,
        }],
        machines: vec![
            machine("s-1", "steady", "steady-1"),
            machine("f-1", "fading", "fading-1"),
            machine("f-2", "fading", "fading-1"),
            machine("f-3", "fading", "fading-1"),
            machine("l-1", "loner", "loner-1"),
            machine("l-2", "loner", "loner-1"),
        ],
        contracts: vec![
            contract("k-steady", "steady", -100, 265),
            contract("k-fading", "fading", -200, 165),
        ],
    }
}

fn technicians() -> ServiceOrganisation {
    let tech = |tid: &str| Technician {
        id: id(tid),
        name: tid.into(),
        email: None,
        home_region: "eu-central".into(),
        skills: vec![id("press")],
    };
    ServiceOrganisation {
        technicians: vec![tech("ana"), tech("ben")],
        stock: vec![],
    }
}

/// One webhook delivery: event, body, whether its signature checked out.
pub type Delivery = (String, Value, bool);
type Received = Arc<Mutex<BTreeMap<String, Delivery>>>;

async fn receive(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body = String::from_utf8_lossy(&body).to_string();
    let valid = h("x-wearcast-signature") == signature(SECRET, &h("x-wearcast-timestamp"), &body);
    let value = serde_json::from_str(&body).unwrap_or_default();
    received
        .lock()
        .unwrap()
        .entry(h("x-wearcast-delivery"))
        .or_insert((h("x-wearcast-event"), value, valid));
    StatusCode::OK
}

pub struct TestServer {
    pub url: String,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub config: ServerConfig,
    pub http: reqwest::Client,
    received: Received,
    _dir: tempfile::TempDir,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
    receiver: JoinHandle<()>,
}

impl TestServer {
    /// A server with the default analytics settings and a weekly contact cap of `cap`.
    pub async fn start(cap: u32) -> Self {
        Self::with(cap, AnalyticsConfig::default()).await
    }

    pub async fn with(cap: u32, analytics: AnalyticsConfig) -> Self {
        let received: Received = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hooks", post(receive))
            .with_state(received.clone());
        let receiver = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });

        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let config = ServerConfig {
            http_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            // The test drives the cycles itself.
            analysis_interval: Duration::from_secs(3600),
            service: ServiceConfig {
                contact_cap_per_week: cap,
                ..ServiceConfig::default()
            },
            notifications: NotificationsConfig {
                webhooks: vec![WebhookConfig {
                    url: hook_url,
                    secret: SECRET.into(),
                    events: vec![],
                }],
                poll_interval: Duration::from_millis(50),
                ..NotificationsConfig::default()
            },
            analytics: AnalyticsConfig {
                public_url: PUBLIC_URL.into(),
                ..analytics
            },
            // The authorization matrix calls every route with every token, and reads
            // the whole state around each call, far faster than any tenant would; the
            // limit itself is tested in `server/tests/service/limits.rs`.
            rate_limit: wearcast_server::api::limits::RateLimitConfig {
                requests_per_second: 0,
                burst: 0,
            },
            ..ServerConfig::default()
        };
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
        server.import_service(&technicians()).await.unwrap();
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
        // The server runs one analysis cycle as it starts (its interval fires at once).
        // The tests drive every later cycle themselves, and two planning steps at the
        // same time can both propose the same component: let that first one finish on
        // the empty fleet before any telemetry arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            url,
            store,
            clock,
            config,
            http: bearer_client(&admin.secret),
            received,
            _dir: dir,
            token,
            task: Some(task),
            receiver,
        }
    }

    pub fn now(&self) -> UnixMs {
        self.clock.now()
    }

    /// One model step and one planning step at the clock's now.
    pub async fn cycle(&self) -> PlanReport {
        let now = self.clock.now();
        run_cycle(&self.store, now, &AnalysisSettings::default())
            .await
            .unwrap();
        plan_all(&self.store, now, &planning_settings(&self.config))
            .await
            .unwrap()
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

    /// GET returning the status, content type and text.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    /// Posts a form body, returning the status and text.
    pub async fn post_form(&self, path: &str, form: &str) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn ingest(&self, batch: IngestBatch) {
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/ingest",
                Some(serde_json::to_value(&batch).unwrap()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let rejected = body["rejected"].as_array().unwrap();
        assert!(
            rejected.is_empty(),
            "{} rejected, first: {}",
            rejected.len(),
            rejected[0]
        );
    }

    /// Hourly windows of `channel` on `machine` over `[from, to)` with `value(t)`.
    pub async fn feed(
        &self,
        machine: &str,
        channel: &str,
        (from, to): (UnixMs, UnixMs),
        value: impl Fn(UnixMs) -> f64,
    ) {
        let mut windows = Vec::new();
        let mut t = from;
        while t < to {
            let v = value(t);
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
        }
        for (i, chunk) in windows.chunks(2_000).enumerate() {
            self.ingest(IngestBatch {
                batch_id: BatchId::parse(format!(
                    "b-{machine}-{}-{}-{i}",
                    channel.replace('.', "-"),
                    from.0
                ))
                .unwrap(),
                gateway: GatewayId::parse("gw-test").unwrap(),
                created_at: to,
                windows: chunk.to_vec(),
                events: vec![],
                statuses: vec![],
            })
            .await;
        }
    }

    /// A constant 50 % load on `machine` over `[from, to)`.
    pub async fn feed_load(&self, machine: &str, from: UnixMs, to: UnixMs) {
        self.feed(machine, "op.load_pct", (from, to), |_| 50.0)
            .await;
    }

    /// 14 days of main-bearing wear up to now that reaches failure in 6 days.
    pub async fn feed_wear(&self, machine: &str) {
        let now = self.now();
        let (onset, fails) = (now.plus_hours(-240.0), now.plus_hours(144.0));
        let mut i = 0u64;
        let values: Vec<f64> = (0..14 * 24)
            .map(|h| {
                let t = now.plus_hours(-14.0 * 24.0 + f64::from(h));
                let x = (t.0 - onset.0) as f64 / (fails.0 - onset.0) as f64;
                let w = if x <= 0.0 {
                    0.0
                } else {
                    (3.0 * x).exp_m1() / 3.0f64.exp_m1()
                };
                i += 1;
                1.0 + 7.0 * w + 0.07 * ((i as f64) * 1.3).sin()
            })
            .collect();
        let from = now.plus_hours(-14.0 * 24.0);
        self.feed(machine, "main_bearing.vibration_rms", (from, now), |t| {
            values[((t.0 - from.0) / UnixMs::HOUR) as usize]
        })
        .await;
    }

    /// Posts one machine event.
    pub async fn event(&self, machine: &str, kind: &str, component: &str, at: UnixMs) {
        let batch = json!({
            "batch_id": format!("ev-{machine}-{kind}-{}", at.0),
            "gateway": "gw-test",
            "created_at": self.now().0,
            "events": [{"tenant": "acme", "machine": machine, "ts": at.0, "kind": kind, "component": component}],
        });
        let (status, body) = self.send("POST", "/api/v1/ingest", Some(batch)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The one proposed offer of `machine`.
    pub async fn offer_of(&self, machine: &str) -> Value {
        let offers = self
            .get(&format!("/api/v1/offers?status=proposed&machine={machine}"))
            .await;
        let offers = offers.as_array().unwrap();
        assert_eq!(offers.len(), 1, "{machine}: {offers:#?}");
        offers[0].clone()
    }

    /// Accepts `offer`; returns the work order.
    pub async fn accept(&self, offer: &Value) -> Value {
        let (status, body) = self
            .send(
                "POST",
                &format!("/api/v1/offers/{}/accept", offer["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["work_order"].clone()
    }

    /// Completes `work_order` (the bearing found worn) at the clock's now.
    pub async fn complete(&self, work_order: &Value) -> Value {
        let (status, body) = self
            .send(
                "POST",
                &format!(
                    "/api/v1/work-orders/{}/complete",
                    work_order["id"].as_str().unwrap()
                ),
                Some(json!({"components": [{"component": "main_bearing", "as_found": "worn"}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn decline(&self, offer: &Value, reason: &str) {
        let (status, body) = self
            .send(
                "POST",
                &format!("/api/v1/offers/{}/decline", offer["id"].as_str().unwrap()),
                Some(json!({ "reason": reason })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Webhook deliveries of `event` received so far.
    pub fn deliveries(&self, event: &str) -> Vec<Delivery> {
        self.received
            .lock()
            .unwrap()
            .values()
            .filter(|(e, _, _)| e == event)
            .cloned()
            .collect()
    }

    /// Waits until `n` deliveries of `event` arrived.
    pub async fn wait_for(&self, event: &str, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.deliveries(event);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} `{event}` webhook(s); got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The token of the survey of `work_order`, from its `survey.requested` webhook.
    pub async fn survey_token(&self, work_order: &Value) -> String {
        let wo = work_order["id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, body, valid)) = self
                .deliveries("survey.requested")
                .into_iter()
                .find(|(_, b, _)| b["data"]["work_order"] == wo)
            {
                assert!(valid, "the survey webhook is signed");
                let link = body["data"]["link"].as_str().unwrap();
                let prefix = format!("{PUBLIC_URL}/survey/");
                assert!(link.starts_with(&prefix), "{link}");
                return link[prefix.len()..].to_string();
            }
            assert!(Instant::now() < deadline, "no survey for {wo}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An offer for `machine`'s bearing, accepted and completed at its booked end;
    /// returns the completed work order. Leaves the clock at the booked end.
    pub async fn repair(&self, machine: &str) -> Value {
        self.feed_wear(machine).await;
        self.cycle().await;
        let offer = self.offer_of(machine).await;
        let wo = self.accept(&offer).await;
        self.clock.set(ts(&wo["booked_end"]));
        self.complete(&wo).await
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.receiver.abort();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
        self.receiver.abort();
    }
}
