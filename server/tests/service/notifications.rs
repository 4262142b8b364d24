//! Notifications leave through the outbox and survive receivers that are down.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use wearcast_server::config::{NotificationsConfig, SmtpConfig, WebhookConfig};
use wearcast_server::notify::signature;

use crate::support::TestServer;

const SECRET: &str = "a-long-shared-secret-for-tests";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deliveries received, by delivery id (a retried notice keeps its id).
type Received = Arc<Mutex<BTreeMap<String, (String, serde_json::Value, bool)>>>;

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
    let mut r = received.lock().unwrap();
    let first = !r.contains_key(&h("x-wearcast-delivery"));
    r.entry(h("x-wearcast-delivery"))
        .or_insert((h("x-wearcast-event"), value, valid && first));
    StatusCode::OK
}

#[tokio::test]
async fn webhooks_are_delivered_once_the_receiver_is_back_and_are_signed() {
    let port = free_port();
    let s = TestServer::start(NotificationsConfig {
        webhooks: vec![WebhookConfig {
            url: format!("http://127.0.0.1:{port}/hooks/wearcast"),
            secret: SECRET.into(),
            events: vec![],
        }],
        ..NotificationsConfig::default()
    })
    .await;
    // The receiver is down while the offer is proposed and accepted.
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let offer = &s.proposed("press-1").await[0];
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{}/accept", offer["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pending = s.store.outbox_pending().await.unwrap();
    assert!(pending >= 2, "notices wait in the outbox: {pending}");

    // The receiver comes back.
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route("/hooks/wearcast", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let events = eventually("the backlog to arrive", Duration::from_secs(30), || {
        let r = received.lock().unwrap();
        let events: Vec<String> = r.values().map(|(e, _, _)| e.clone()).collect();
        (events.contains(&"offer.proposed".to_string())
            && events.contains(&"offer.accepted".to_string()))
        .then_some(events)
    })
    .await;
    let r = received.lock().unwrap().clone();
    assert!(
        r.values().all(|(_, _, valid)| *valid),
        "every signature checks out: {r:#?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "offer.accepted").count(),
        1,
        "{events:?}"
    );
    let accepted = r.values().find(|(e, _, _)| e == "offer.accepted").unwrap();
    assert_eq!(accepted.1["data"]["offer"], offer["id"]);
    assert_eq!(accepted.1["data"]["machine"], "press-1");
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.store.outbox_pending().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

struct SmtpServer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SmtpServer {
    /// Python's aiosmtpd, printing every message it receives.
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut me = Self {
            child,
            lines: Arc::default(),
        };
        let stdout = me.child.stdout.take()?;
        let lines = me.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || me.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_reaches_the_customer_and_the_service_desk_through_a_real_smtp_server() {
    let port = free_port();
    let Some(smtp) = SmtpServer::start(port) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "aiosmtpd is required in CI (pip install aiosmtpd)"
        );
        eprintln!("SKIP: python3 -m aiosmtpd is not available; pip install aiosmtpd");
        return;
    };
    let s = TestServer::start(NotificationsConfig {
        smtp: Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "Wearcast <service@acme.example>".into(),
            service_desk: Some("desk@acme.example".into()),
        }),
        ..NotificationsConfig::default()
    })
    .await;
    s.feed_wear("press-1", "main_bearing.vibration_rms", 1.0, 8.0, 144.0)
        .await;
    s.cycle().await;
    let offer = &s.proposed("press-1").await[0];
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/v1/offers/{}/accept", offer["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let text = eventually("the e-mails", Duration::from_secs(20), || {
        let all = smtp.lines.lock().unwrap().join("\n");
        (all.matches("Subject: Replacement on press-1 booked")
            .count()
            >= 2
            && all.contains("Subject: Planned replacement proposed for press-1"))
        .then_some(all)
    })
    .await;
    assert!(
        text.contains("maintenance@plant.example"),
        "the customer contact: {text}"
    );
    assert!(
        text.contains("desk@acme.example"),
        "the service desk: {text}"
    );
    assert!(
        text.contains("At this rate the main bearing of press-1"),
        "{text}"
    );
    s.stop().await;
}
