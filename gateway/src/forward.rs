//! Delivery of spooled batches to the server (`POST {server}/api/v1/ingest`).
//!
//! A batch leaves the spool only when the server has answered for it:
//!
//! - 2xx: stored (the server is idempotent per batch id, so a re-send after a lost
//!   answer is harmless). Items it refused individually are counted and logged.
//! - 4xx (except 408 and 429): the server refuses the batch itself; re-sending it would
//!   fail forever and block everything behind it, so it goes to `dead-letter.jsonl`
//!   and leaves the spool.
//! - anything else (5xx, 408, 429, connection error, timeout): retried with
//!   [`Backoff::forward`], forever, with the same batch id.
//!
//! [`Forwarder::forward_once`] is one attempt; tests drive it directly, the loop only
//! adds waiting.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use reqwest::StatusCode;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use wearcast_protocol::batch::ItemKind;
use wearcast_protocol::clock::SharedClock;
use wearcast_protocol::{BatchId, IngestBatch, IngestResponse};

use crate::backoff::Backoff;
use crate::deadletter::{DeadLetter, DeadLetterFile};
use crate::spool::{self, SharedSpool, SpoolDepth};
use crate::stats::names;

/// Most per-item rejections logged one by one for a batch; the rest are summarised.
const MAX_ITEM_LOGS: usize = 20;
/// Most of a refusal's response body kept in logs and the dead-letter file.
const MAX_RESPONSE_EXCERPT: usize = 4096;

/// Per-item rejections the server reported in 2xx answers, by item kind and reason.
pub const SERVER_REJECTED_ITEMS: &str = "wearcast_gateway_server_rejected_items_total";

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardStep {
    /// Nothing to send.
    Idle,
    /// The server stored the batch (minus `items_rejected` items) and it left the spool.
    Delivered {
        batch_id: BatchId,
        windows: usize,
        items_rejected: usize,
        duplicate: bool,
    },
    /// The server refused the batch; it is in the dead-letter file and left the spool.
    DeadLettered { batch_id: BatchId, status: u16 },
    /// Not delivered; the batch stays in the spool for a retry.
    Failed { batch_id: BatchId, reason: String },
}

/// Builds the HTTP client every request of the gateway goes through.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("wearcast-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends batches from the spool to the server.
#[derive(Debug)]
pub struct Forwarder {
    http: reqwest::Client,
    ingest_url: String,
    dead_letter: DeadLetterFile,
    clock: SharedClock,
    max_windows: usize,
    /// Windows in batches the server accepted, for the run report.
    windows_forwarded: u64,
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(MAX_RESPONSE_EXCERPT)]).into_owned()
}

fn kind_label(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Window => "window",
        ItemKind::Event => "event",
        ItemKind::Status => "status",
    }
}

/// 4xx answers that say "not now" rather than "never".
fn is_transient_client_error(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

impl Forwarder {
    /// `server_url` without a trailing slash; batches carry at most `max_windows` windows.
    pub fn new(
        http: reqwest::Client,
        server_url: &str,
        dead_letter: DeadLetterFile,
        clock: SharedClock,
        max_windows: usize,
    ) -> Self {
        Self {
            http,
            ingest_url: format!("{}/api/v1/ingest", server_url.trim_end_matches('/')),
            dead_letter,
            clock,
            max_windows: max_windows.max(1),
            windows_forwarded: 0,
        }
    }

    pub fn windows_forwarded(&self) -> u64 {
        self.windows_forwarded
    }

    fn update_gauge(&self, spool: &SharedSpool) {
        let depth = spool::lock(spool).depth();
        gauge!(names::SPOOL_BATCHES).set(depth.batches(self.max_windows) as f64);
    }

    /// Tries to deliver the oldest batch once.
    pub async fn forward_once(&mut self, spool: &SharedSpool) -> ForwardStep {
        let peeked = spool::lock(spool).peek_batch(self.max_windows);
        let batch = match peeked {
            Ok(Some(batch)) => batch,
            Ok(None) => return ForwardStep::Idle,
            Err(e) => {
                error!(error = %e, "cannot read the spool; nothing is forwarded");
                return ForwardStep::Idle;
            }
        };
        let started = Instant::now();
        let sent = self.http.post(&self.ingest_url).json(&batch).send().await;
        let step = match sent {
            Err(e) => self.failed(&batch, format!("POST {} failed: {e}", self.ingest_url)),
            Ok(response) => {
                let status = response.status();
                // The server commits before it answers 2xx, so a body that cannot be
                // read does not undo the delivery.
                let body = response.bytes().await.unwrap_or_default();
                if status.is_success() {
                    self.delivered(spool, &batch, &body)
                } else if status.is_client_error() && !is_transient_client_error(status) {
                    self.dead_letter(spool, batch, status, &body).await
                } else {
                    let detail = excerpt(&body);
                    self.failed(&batch, format!("server answered {status}: {detail}"))
                }
            }
        };
        histogram!(names::FORWARD_LATENCY).record(started.elapsed().as_secs_f64());
        self.update_gauge(spool);
        step
    }

    fn failed(&self, batch: &IngestBatch, reason: String) -> ForwardStep {
        counter!(names::FORWARD_RETRIES).increment(1);
        warn!(batch_id = %batch.batch_id, %reason, "batch not delivered; will retry");
        ForwardStep::Failed {
            batch_id: batch.batch_id.clone(),
            reason,
        }
    }

    fn confirm(&self, spool: &SharedSpool, batch_id: &BatchId) {
        match spool::lock(spool).confirm(batch_id) {
            Ok(true) => {}
            Ok(false) => warn!(%batch_id, "confirmed batch was no longer in flight"),
            Err(e) => {
                error!(%batch_id, error = %e, "cannot remove a delivered batch from the spool; it will be sent again")
            }
        }
    }

    fn delivered(&mut self, spool: &SharedSpool, batch: &IngestBatch, body: &[u8]) -> ForwardStep {
        let batch_id = &batch.batch_id;
        let (items_rejected, duplicate) = match serde_json::from_slice::<IngestResponse>(body) {
            Ok(answer) => {
                for (i, r) in answer.rejected.iter().enumerate() {
                    counter!(SERVER_REJECTED_ITEMS, "kind" => kind_label(r.kind), "reason" => r.reason.label())
                        .increment(1);
                    if i < MAX_ITEM_LOGS {
                        warn!(%batch_id, kind = kind_label(r.kind), index = r.index,
                            reason = r.reason.label(), detail = %r.detail,
                            "server rejected an item of the batch");
                    }
                }
                if answer.rejected.len() > MAX_ITEM_LOGS {
                    warn!(%batch_id, rejected = answer.rejected.len(), "server rejected more items of the batch than logged");
                }
                (answer.rejected.len(), answer.duplicate)
            }
            Err(e) => {
                warn!(%batch_id, error = %e, body = %excerpt(body), "server accepted the batch but its answer is not an ingest response");
                (0, false)
            }
        };
        self.confirm(spool, batch_id);
        self.windows_forwarded += batch.windows.len() as u64;
        counter!(names::BATCHES_FORWARDED).increment(1);
        debug!(%batch_id, windows = batch.windows.len(), events = batch.events.len(),
            statuses = batch.statuses.len(), duplicate, "batch delivered");
        ForwardStep::Delivered {
            batch_id: batch_id.clone(),
            windows: batch.windows.len(),
            items_rejected,
            duplicate,
        }
    }

    async fn dead_letter(
        &mut self,
        spool: &SharedSpool,
        batch: IngestBatch,
        status: StatusCode,
        body: &[u8],
    ) -> ForwardStep {
        let batch_id = batch.batch_id.clone();
        let response = excerpt(body);
        error!(%batch_id, status = status.as_u16(), %response, windows = batch.windows.len(),
            path = %self.dead_letter.path().display(),
            "server refused the batch; moved to the dead-letter file");
        let entry = DeadLetter {
            at: self.clock.now(),
            status: status.as_u16(),
            response,
            batch,
        };
        if let Err(e) = self.dead_letter.append(&entry).await {
            error!(%batch_id, error = %e, path = %self.dead_letter.path().display(),
                "cannot write the dead-letter file; the batch stays in the spool");
            return self.failed(&entry.batch, format!("dead-letter write failed: {e}"));
        }
        self.confirm(spool, &batch_id);
        ForwardStep::DeadLettered {
            batch_id,
            status: status.as_u16(),
        }
    }

    /// Forwards until `shutdown`: right away while there is work, on `wake` or every
    /// `idle_poll` when idle, after a backoff when the server is unavailable.
    pub async fn run(
        &mut self,
        spool: &SharedSpool,
        wake: &Notify,
        idle_poll: Duration,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::forward();
        while !shutdown.is_cancelled() {
            let pause = match self.forward_once(spool).await {
                ForwardStep::Delivered { .. } | ForwardStep::DeadLettered { .. } => {
                    backoff.reset();
                    continue;
                }
                ForwardStep::Idle => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = wake.notified() => continue,
                        _ = tokio::time::sleep(idle_poll) => continue,
                    }
                }
                ForwardStep::Failed { .. } => backoff.next_delay(),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// At shutdown: sends what the spool holds until it is empty or `deadline` passes,
    /// and returns what is left.
    pub async fn drain(&mut self, spool: &SharedSpool, deadline: Instant) -> SpoolDepth {
        let mut backoff = Backoff::forward();
        while Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.forward_once(spool)).await {
                Err(_) | Ok(ForwardStep::Idle) => break,
                Ok(ForwardStep::Delivered { .. } | ForwardStep::DeadLettered { .. }) => {
                    backoff.reset();
                }
                Ok(ForwardStep::Failed { .. }) => {
                    let retry_at = (Instant::now() + backoff.next_delay()).min(deadline);
                    tokio::time::sleep_until(retry_at).await;
                }
            }
        }
        spool::lock(spool).depth()
    }
}
