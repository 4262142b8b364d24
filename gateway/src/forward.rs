//! Delivery of spooled batches to the server (`POST {server}/api/v1/ingest`).
//!
//! Batches are sent one at a time, oldest first, and only once their record is durable.
//! The body is read back from the spool's log, exactly the bytes written when the batch
//! was cut, so a retry (in this process or after a crash) sends the same batch under
//! the same id. A batch leaves the spool only when the server has answered for it:
//!
//! - 2xx: stored (the server is idempotent per batch id, so a re-send after a lost
//!   answer is harmless). Items it refused individually are counted and logged.
//! - 4xx (except 408 and 429): the server refuses the batch itself; re-sending it would
//!   fail forever and block everything behind it, so it goes to `dead-letter.jsonl`
//!   and leaves the spool.
//! - anything else (5xx, 408, 429, connection error, timeout): retried with
//!   [`Backoff::forward`] (0.5 s doubling to at most 5 min), forever, with the same
//!   batch id.
//! - a record that no longer reads back (disk corruption): it cannot be sent; it leaves
//!   the spool, counted as dropped (`spool_corrupt`) and logged at ERROR.
//!
//! [`Forwarder::forward_once`] is one attempt; tests drive it directly, the loop only
//! adds waiting.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, histogram};
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
use crate::spool::outbox::{self, BatchRef, SendOutcome, SharedOutbox};
use crate::stats::{DropReason, Totals, names};

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
    /// The batch's record is damaged and cannot be sent; it left the spool, counted.
    Unreadable { lsn: u64 },
    /// The batch could not be read from the spool now (I/O); it is tried again.
    ReadFailed { lsn: u64, reason: String },
    /// Not delivered; the batch stays in the spool for a retry.
    Failed { batch_id: BatchId, reason: String },
}

/// Builds the HTTP client every request of the gateway goes through; with a token,
/// every request carries it as `Authorization: Bearer` (a header marked sensitive).
pub fn http_client(
    timeout: Duration,
    token: Option<&crate::config::Secret>,
    tls: Option<&rustls::ClientConfig>,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::tls::install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("wearcast-gateway/", env!("CARGO_PKG_VERSION")));
    match tls {
        Some(tls) => builder.tls_backend_preconfigured(tls.clone()),
        None => builder,
    }
    .build()
}

/// Sends batches from the spool to the server.
#[derive(Debug)]
pub struct Forwarder {
    http: reqwest::Client,
    ingest_url: String,
    dead_letter: DeadLetterFile,
    clock: SharedClock,
    totals: Arc<Totals>,
    /// Woken when a batch is done, so its confirmation gets logged.
    confirmed: Arc<Notify>,
    /// Cap of the retry backoff while the server is unavailable.
    max_backoff: Duration,
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

/// 4xx answers that say "not now" rather than "never". A refused token (401, 403)
/// is the gateway's configuration, not the batch's fault: the batch waits in the spool
/// until an operator fixes the token, rather than being dead-lettered.
fn is_transient_client_error(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
    )
}

impl Forwarder {
    /// `server_url` without a trailing slash. `totals` receives what was delivered or
    /// dropped; `confirmed` is woken whenever a batch leaves the spool.
    pub fn new(
        http: reqwest::Client,
        server_url: &str,
        dead_letter: DeadLetterFile,
        clock: SharedClock,
        totals: Arc<Totals>,
        confirmed: Arc<Notify>,
    ) -> Self {
        Self {
            http,
            ingest_url: format!("{}/api/v1/ingest", server_url.trim_end_matches('/')),
            dead_letter,
            clock,
            totals,
            confirmed,
            max_backoff: crate::config::MAX_FORWARD_BACKOFF,
        }
    }

    /// Caps the retry backoff at `max` instead of 5 min (`forward_max_backoff`).
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Tries to deliver the oldest durable batch once.
    pub async fn forward_once(&mut self, outbox: &SharedOutbox) -> ForwardStep {
        let (batch, reader, batch_id) = {
            let mut o = outbox::lock(outbox);
            let batch = o.start_sending();
            let batch_id = batch.as_ref().map(|b| o.batch_id(b.lsn));
            (batch, o.reader(), batch_id)
        };
        let (Some(batch), Some(batch_id)) = (batch, batch_id) else {
            return ForwardStep::Idle;
        };
        let read = {
            let (batch, reader) = (batch.clone(), reader.clone());
            tokio::task::spawn_blocking(move || reader.read(&batch)).await
        };
        let body = match read {
            Ok(Ok(Ok(body))) => body,
            Ok(Ok(Err(damage))) => return self.unreadable(outbox, &batch, &damage),
            Ok(Err(io)) => {
                return self.read_failed(outbox, &batch, format!("cannot read the batch: {io}"));
            }
            Err(join) => {
                return self.read_failed(outbox, &batch, format!("the read task failed: {join}"));
            }
        };
        let started = Instant::now();
        // The body is sent as written: the batch is only parsed if it is refused.
        let sent = self
            .http
            .post(&self.ingest_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let step = match sent {
            Err(e) => self.failed(
                outbox,
                &batch,
                &batch_id,
                format!("POST {} failed: {e}", self.ingest_url),
            ),
            Ok(response) => {
                let status = response.status();
                // The server commits before it answers 2xx, so a body that cannot be
                // read does not undo the delivery.
                let answer = response.bytes().await.unwrap_or_default();
                if status.is_success() {
                    self.delivered(outbox, &batch, &batch_id, &answer)
                } else if status.is_client_error() && !is_transient_client_error(status) {
                    // Rare: read it again rather than keep a copy of every body sent.
                    let again = {
                        let (batch, reader) = (batch.clone(), reader.clone());
                        tokio::task::spawn_blocking(move || reader.read(&batch)).await
                    };
                    let body = match again {
                        Ok(Ok(Ok(body))) => body,
                        _ => Vec::new(),
                    };
                    match serde_json::from_slice::<IngestBatch>(&body) {
                        Ok(parsed) => {
                            self.dead_letter(outbox, &batch, parsed, status, &answer)
                                .await
                        }
                        Err(e) => self.unreadable(
                            outbox,
                            &batch,
                            &format!("refused ({status}) and not an ingest batch: {e}"),
                        ),
                    }
                } else {
                    let detail = excerpt(&answer);
                    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                        error!(%status, %detail, "the server refused the gateway's API token; batches wait in the spool (set gateway.server_token_file to a valid gateway token)");
                    }
                    self.failed(
                        outbox,
                        &batch,
                        &batch_id,
                        format!("server answered {status}: {detail}"),
                    )
                }
            }
        };
        histogram!(names::FORWARD_LATENCY).record(started.elapsed().as_secs_f64());
        step
    }

    /// Ends the attempt in the outbox, wakes the confirmation logger when the batch
    /// left, and returns `step`.
    fn finish(
        &self,
        outbox: &SharedOutbox,
        batch: &BatchRef,
        outcome: SendOutcome,
        step: impl FnOnce(&BatchRef) -> ForwardStep,
    ) -> ForwardStep {
        outbox::lock(outbox).finish_sending(batch.lsn, outcome);
        if outcome == SendOutcome::Done {
            histogram!(names::DELIVERY_DELAY).record(batch.queued.elapsed().as_secs_f64());
            self.confirmed.notify_one();
        }
        step(batch)
    }

    fn read_failed(&self, outbox: &SharedOutbox, batch: &BatchRef, reason: String) -> ForwardStep {
        error!(lsn = batch.lsn, %reason, "a spooled batch could not be read; will retry");
        self.finish(outbox, batch, SendOutcome::Retry, |b| {
            ForwardStep::ReadFailed { lsn: b.lsn, reason }
        })
    }

    fn unreadable(&self, outbox: &SharedOutbox, batch: &BatchRef, damage: &str) -> ForwardStep {
        error!(lsn = batch.lsn, samples = batch.samples, windows = batch.windows, %damage,
            "a spooled batch is damaged and cannot be sent; it is dropped");
        self.totals.count_dropped(
            DropReason::SpoolCorrupt,
            1,
            batch.samples,
            batch.events as u64,
            batch.statuses as u64,
        );
        self.finish(outbox, batch, SendOutcome::Done, |b| {
            ForwardStep::Unreadable { lsn: b.lsn }
        })
    }

    fn failed(
        &self,
        outbox: &SharedOutbox,
        batch: &BatchRef,
        batch_id: &BatchId,
        reason: String,
    ) -> ForwardStep {
        counter!(names::FORWARD_RETRIES).increment(1);
        warn!(%batch_id, %reason, "batch not delivered; will retry");
        self.finish(outbox, batch, SendOutcome::Retry, |_| ForwardStep::Failed {
            batch_id: batch_id.clone(),
            reason,
        })
    }

    fn delivered(
        &mut self,
        outbox: &SharedOutbox,
        batch: &BatchRef,
        batch_id: &BatchId,
        body: &[u8],
    ) -> ForwardStep {
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
        Totals::add(&self.totals.windows_forwarded, batch.windows as u64);
        Totals::add(&self.totals.batches_forwarded, 1);
        counter!(names::BATCHES_FORWARDED).increment(1);
        debug!(%batch_id, windows = batch.windows, events = batch.events,
            statuses = batch.statuses, duplicate, "batch delivered");
        let windows = batch.windows as usize;
        self.finish(outbox, batch, SendOutcome::Done, |_| {
            ForwardStep::Delivered {
                batch_id: batch_id.clone(),
                windows,
                items_rejected,
                duplicate,
            }
        })
    }

    async fn dead_letter(
        &mut self,
        outbox: &SharedOutbox,
        batch: &BatchRef,
        parsed: IngestBatch,
        status: StatusCode,
        body: &[u8],
    ) -> ForwardStep {
        let batch_id = parsed.batch_id.clone();
        let response = excerpt(body);
        error!(%batch_id, status = status.as_u16(), %response, windows = parsed.windows.len(),
            path = %self.dead_letter.path().display(),
            "server refused the batch; moved to the dead-letter file");
        let entry = DeadLetter {
            at: self.clock.now(),
            status: status.as_u16(),
            response,
            batch: parsed,
        };
        if let Err(e) = self.dead_letter.append(&entry).await {
            error!(%batch_id, error = %e, path = %self.dead_letter.path().display(),
                "cannot write the dead-letter file; the batch stays in the spool");
            return self.failed(
                outbox,
                batch,
                &entry.batch.batch_id,
                format!("dead-letter write failed: {e}"),
            );
        }
        let status = status.as_u16();
        counter!(names::BATCHES_DEAD_LETTERED, "status" => status.to_string()).increment(1);
        self.finish(outbox, batch, SendOutcome::Done, |_| {
            ForwardStep::DeadLettered { batch_id, status }
        })
    }

    /// Forwards until `shutdown`: right away while there is work, on `wake` or every
    /// `idle_poll` when idle, after a backoff when the server is unavailable.
    pub async fn run(
        &mut self,
        outbox: &SharedOutbox,
        wake: &Notify,
        idle_poll: Duration,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::forward(self.max_backoff);
        while !shutdown.is_cancelled() {
            let pause = match self.forward_once(outbox).await {
                ForwardStep::Delivered { .. }
                | ForwardStep::DeadLettered { .. }
                | ForwardStep::Unreadable { .. } => {
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
                ForwardStep::Failed { .. } | ForwardStep::ReadFailed { .. } => backoff.next_delay(),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// At shutdown: sends what the spool holds until it is empty or `deadline` passes,
    /// and returns how many batches are left (they stay in the spool for the next start).
    pub async fn drain(&mut self, outbox: &SharedOutbox, deadline: Instant) -> usize {
        let mut backoff = Backoff::forward(self.max_backoff);
        while Instant::now() < deadline {
            // A batch cut off by the deadline stays in flight in the outbox; the spool
            // keeps it, which is all that matters at shutdown.
            match tokio::time::timeout_at(deadline, self.forward_once(outbox)).await {
                Err(_) | Ok(ForwardStep::Idle) => break,
                Ok(
                    ForwardStep::Delivered { .. }
                    | ForwardStep::DeadLettered { .. }
                    | ForwardStep::Unreadable { .. },
                ) => {
                    backoff.reset();
                }
                Ok(ForwardStep::Failed { .. } | ForwardStep::ReadFailed { .. }) => {
                    let retry_at = (Instant::now() + backoff.next_delay()).min(deadline);
                    tokio::time::sleep_until(retry_at).await;
                }
            }
        }
        outbox::lock(outbox).len()
    }
}
