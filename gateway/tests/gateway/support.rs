//! A fake Wearcast server for the gateway's tests: serves the machine list, records
//! ingest attempts, answers them from a script of status codes, and stores each batch
//! id once (as the real server does).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use wearcast_protocol::{BatchId, IngestBatch, IngestResponse};

#[derive(Debug, Default)]
pub struct Recorded {
    /// Batch id of every ingest request, in arrival order (retries included).
    pub attempts: Vec<BatchId>,
    /// Batches stored, once per batch id.
    pub stored: Vec<IngestBatch>,
    pub machine_list_requests: usize,
}

#[derive(Default)]
struct Inner {
    machines: serde_json::Value,
    /// Status codes for the next ingest requests; empty means "store and answer 200".
    script: VecDeque<u16>,
    recorded: Recorded,
}

#[derive(Clone)]
pub struct FakeServer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    /// Stops the listener (`None` while down).
    running: Arc<Mutex<Option<CancellationToken>>>,
}

impl FakeServer {
    /// Starts on 127.0.0.1:0 with `(tenant, machine)` registered.
    pub async fn start(machines: &[(&str, &str)]) -> Self {
        let machines = machines
            .iter()
            .map(|(tenant, id)| serde_json::json!({"id": id, "tenant": tenant, "model": "lathe"}))
            .collect();
        let inner = Arc::new(Mutex::new(Inner {
            machines: serde_json::Value::Array(machines),
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = Self {
            url: format!("http://{addr}"),
            inner,
            running: Arc::new(Mutex::new(None)),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/api/v1/ingest/machines", get(machine_list))
            .route("/api/v1/ingest", post(ingest))
            .with_state(self.inner.clone());
        let token = CancellationToken::new();
        *self.running.lock().unwrap() = Some(token.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap()
        });
    }

    /// Answers the next ingest requests with these status codes (without storing).
    pub fn answer_next(&self, codes: &[u16]) {
        self.inner.lock().unwrap().script.extend(codes);
    }

    pub fn with<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        f(&self.inner.lock().unwrap().recorded)
    }

    /// Waits until `done` holds for what was recorded; false after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&Recorded) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.with(&done) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.with(&done)
    }
}

async fn machine_list(State(inner): State<Arc<Mutex<Inner>>>) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.recorded.machine_list_requests += 1;
    axum::Json(inner.machines.clone()).into_response()
}

async fn ingest(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    // Parsing with the protocol types checks the gateway speaks the wire contract.
    let batch: IngestBatch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    };
    let mut inner = inner.lock().unwrap();
    inner.recorded.attempts.push(batch.batch_id.clone());
    if let Some(code) = inner.script.pop_front() {
        let status = StatusCode::from_u16(code).unwrap();
        return (status, format!("scripted {code}")).into_response();
    }
    let duplicate = inner
        .recorded
        .stored
        .iter()
        .any(|b| b.batch_id == batch.batch_id);
    let answer = IngestResponse {
        batch_id: batch.batch_id.clone(),
        duplicate,
        windows_stored: if duplicate {
            0
        } else {
            batch.windows.len() as u64
        },
        events_stored: if duplicate {
            0
        } else {
            batch.events.len() as u64
        },
        statuses_stored: if duplicate {
            0
        } else {
            batch.statuses.len() as u64
        },
        rejected: Vec::new(),
    };
    if !duplicate {
        inner.recorded.stored.push(batch);
    }
    axum::Json(answer).into_response()
}
