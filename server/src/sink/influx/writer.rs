//! The queue between the server and InfluxDB, and the task that empties it.
//!
//! [`InfluxSink`] is the cheap, cloneable handle the ingest path and the analysis cycle
//! hold: [`InfluxSink::offer`] is a `try_send` into a bounded channel and never waits;
//! when the channel is full the new point is dropped and counted. [`InfluxWriter`] is
//! the one task that takes points out in batches, encodes them as line protocol with
//! the influxdb2 crate and writes them, retrying with exponential backoff for as long
//! as the server keeps failing (the channel keeps the rest meanwhile, bounded). A batch
//! the server refuses as malformed (HTTP 400, 413, 422) is not retried. On shutdown the
//! writer keeps writing what is queued for at most `shutdown_timeout` and counts what
//! it could not write.
//!
//! Every point offered ends up counted exactly once: written, or dropped with a reason
//! (`queue_full`, `rejected`, `shutdown`); [`SinkStats::pending`] is the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::WriteDataPoint;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use wearcast_protocol::WindowAggregate;

use super::config::InfluxConfig;
use super::schema::{HealthFields, Owner, SinkPoint};
use crate::model::RulEstimate;
use crate::store::MachineRegistry;

/// The first wait after a failed write; it doubles up to `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("invalid InfluxDB sink configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot build the InfluxDB client: {0}")]
    Client(String),
}

/// Why points were dropped (the `reason` label of `wearcast_influx_points_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (InfluxDB down or slow for longer than the queue holds).
    QueueFull,
    /// InfluxDB refused the batch as malformed; retrying would not help.
    Rejected,
    /// Still queued when the shutdown's flush time ran out.
    Shutdown,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Counts since the sink started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Points offered to the sink.
    pub produced: u64,
    /// Points InfluxDB acknowledged.
    pub written: u64,
    pub dropped_queue_full: u64,
    pub dropped_rejected: u64,
    pub dropped_shutdown: u64,
    /// Write requests that failed (each retry counts).
    pub write_errors: u64,
}

impl SinkStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_rejected + self.dropped_shutdown
    }

    /// Points queued or being written.
    pub fn pending(&self) -> u64 {
        self.produced
            .saturating_sub(self.written)
            .saturating_sub(self.dropped())
    }
}

#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_shutdown: AtomicU64,
    write_errors: AtomicU64,
    /// Set while points are being dropped for a full queue, so that is logged once per
    /// episode rather than once per point.
    overflowing: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> SinkStats {
        // `produced` last: a point counted elsewhere was produced before.
        let written = self.written.load(Ordering::Acquire);
        let dropped_queue_full = self.dropped_queue_full.load(Ordering::Acquire);
        let dropped_rejected = self.dropped_rejected.load(Ordering::Acquire);
        let dropped_shutdown = self.dropped_shutdown.load(Ordering::Acquire);
        SinkStats {
            produced: self.produced.load(Ordering::Acquire),
            written,
            dropped_queue_full,
            dropped_rejected,
            dropped_shutdown,
            write_errors: self.write_errors.load(Ordering::Acquire),
        }
    }

    fn dropped(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let counter = match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::Rejected => &self.dropped_rejected,
            DropReason::Shutdown => &self.dropped_shutdown,
        };
        counter.fetch_add(n, Ordering::AcqRel);
        metrics::counter!("wearcast_influx_points_dropped_total", "reason" => reason.label())
            .increment(n);
    }

    fn publish_pending(&self) {
        metrics::gauge!("wearcast_influx_queue_points").set(self.snapshot().pending() as f64);
    }
}

/// The handle: offer points, read the counts. Cloning is cheap.
#[derive(Clone)]
pub struct InfluxSink {
    tx: mpsc::Sender<SinkPoint>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for InfluxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxSink")
            .field("stats", &self.stats())
            .finish()
    }
}

impl InfluxSink {
    /// The handle and the writer task of a sink configured by `config` (which must be
    /// enabled). Nothing is sent until the writer runs.
    pub fn new(config: &InfluxConfig) -> Result<(Self, InfluxWriter), InfluxError> {
        let problems = config.problems();
        let (Some(url), Some(token), true) = (&config.url, &config.token, problems.is_empty())
        else {
            let mut problems = problems;
            if problems.is_empty() {
                problems.push("server.influx.url is not set".into());
            }
            return Err(InfluxError::Config(problems));
        };
        let mut builder =
            influxdb2::ClientBuilder::new(url.as_str(), config.org.as_str(), token.expose());
        if config.gzip {
            builder = builder.gzip(true);
        }
        let client = builder
            .build()
            .map_err(|e| InfluxError::Client(e.to_string()))?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let writer = InfluxWriter {
            rx,
            client,
            bucket: config.bucket.clone(),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            max_backoff: config.max_backoff.max(MIN_BACKOFF),
            timeout: config.timeout,
            shutdown_timeout: config.shutdown_timeout,
            counters: counters.clone(),
            drain_deadline: None,
        };
        Ok((Self { tx, counters }, writer))
    }

    /// Queues one point, or drops and counts it when the queue is full. Never waits.
    pub fn offer(&self, point: SinkPoint) {
        let c = &self.counters;
        c.produced.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("wearcast_influx_points_produced_total").increment(1);
        match self.tx.try_send(point) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                c.dropped(DropReason::QueueFull, 1);
                if !c.overflowing.swap(true, Ordering::AcqRel) {
                    warn!(
                        capacity = self.tx.max_capacity(),
                        "InfluxDB sink queue is full; dropping new points until it drains"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => c.dropped(DropReason::Shutdown, 1),
        }
    }

    /// Queues the stored windows, tagged with their machines' customers.
    pub fn offer_windows(&self, registry: &MachineRegistry, windows: &[WindowAggregate]) {
        for w in windows {
            let customer = registry
                .get(w.machine.as_str())
                .map(|m| m.customer.clone())
                .unwrap_or_default();
            self.offer(SinkPoint::Window {
                customer,
                window: w.clone(),
            });
        }
    }

    /// Queues one machine's new estimates.
    pub fn offer_estimates(
        &self,
        owner: &Owner,
        machine: &str,
        estimates: &[(String, RulEstimate)],
    ) {
        for (component, e) in estimates {
            self.offer(SinkPoint::Health {
                owner: owner.clone(),
                machine: machine.to_owned(),
                component: component.clone(),
                estimate: HealthFields::from(e),
            });
        }
    }

    pub fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }
}

/// A batch rendered as line protocol, handed to the influxdb2 client as one "point" so
/// a retry re-sends the same bytes without encoding again.
#[derive(Clone)]
struct Encoded(Arc<Vec<u8>>);

impl WriteDataPoint for Encoded {
    fn write_data_point_to<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        w.write_all(&self.0)
    }
}

/// The batch as line protocol, the points in it, and the points that could not be
/// encoded.
fn encode(batch: &[SinkPoint]) -> (Vec<u8>, u64, u64) {
    let mut body = Vec::with_capacity(batch.len() * 160);
    let (mut points, mut unencodable) = (0, 0);
    for p in batch {
        match p.to_data_point() {
            Some(dp) if dp.write_data_point_to(&mut body).is_ok() => points += 1,
            _ => unencodable += 1,
        }
    }
    (body, points, unencodable)
}

/// What became of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Written,
    /// Refused by InfluxDB (or not encodable): counted as rejected.
    Dropped,
    /// Still failing when the shutdown's flush time ran out: counted as dropped.
    OutOfTime,
}

/// Why one write request failed.
#[derive(Debug)]
enum WriteFailure {
    Timeout,
    Transport(String),
    Status { status: u16, text: String },
}

impl WriteFailure {
    /// Malformed or oversized data stays so however often it is sent; an outage, an
    /// overload or a wrong token or bucket (which an operator can fix) does not.
    fn retryable(&self) -> bool {
        !matches!(
            self,
            Self::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }

    fn kind(&self) -> String {
        match self {
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::Status { status, .. } => format!("http_{status}"),
        }
    }
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within the timeout"),
            Self::Transport(e) => f.write_str(e),
            Self::Status { status, text } => write!(f, "HTTP {status}: {text}"),
        }
    }
}

/// The task that writes what the sink queued; run it with [`InfluxWriter::run`].
pub struct InfluxWriter {
    rx: mpsc::Receiver<SinkPoint>,
    client: influxdb2::Client,
    bucket: String,
    batch_size: usize,
    flush_interval: Duration,
    max_backoff: Duration,
    timeout: Duration,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
    /// Set once shutdown is requested: the writer then takes only what is already
    /// queued and stops trying at this instant.
    drain_deadline: Option<Instant>,
}

impl InfluxWriter {
    /// Writes batches until `shutdown` is cancelled (or every handle is gone), then
    /// flushes what is queued within `shutdown_timeout`. Returns the final counts.
    pub async fn run(mut self, shutdown: CancellationToken) -> SinkStats {
        let mut batch: Vec<SinkPoint> = Vec::with_capacity(self.batch_size);
        loop {
            if self.drain_deadline.is_none() {
                self.gather(&mut batch, &shutdown).await;
            }
            if self.drain_deadline.is_some() {
                while batch.len() < self.batch_size {
                    match self.rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let capacity = self.batch_size;
            let delivery = self
                .deliver(
                    std::mem::replace(&mut batch, Vec::with_capacity(capacity)),
                    &shutdown,
                )
                .await;
            self.counters.publish_pending();
            if delivery == Delivery::OutOfTime {
                // Out of time: what is still queued will not be written.
                let mut rest = 0;
                while self.rx.try_recv().is_ok() {
                    rest += 1;
                }
                self.counters.dropped(DropReason::Shutdown, rest);
                break;
            }
        }
        let stats = self.counters.snapshot();
        self.counters.publish_pending();
        if stats.dropped_shutdown > 0 {
            error!(
                dropped = stats.dropped_shutdown,
                "InfluxDB sink stopped with points it could not write"
            );
        }
        info!(
            written = stats.written,
            dropped = stats.dropped(),
            write_errors = stats.write_errors,
            "InfluxDB sink stopped"
        );
        stats
    }

    fn begin_drain(&mut self) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(Instant::now() + self.shutdown_timeout);
            // Later offers are counted as dropped for shutdown instead of queued.
            self.rx.close();
            debug!("InfluxDB sink flushing its queue before shutdown");
        }
    }

    /// Waits for a first point, then for more until the batch is full or
    /// `flush_interval` has passed.
    async fn gather(&mut self, batch: &mut Vec<SinkPoint>, shutdown: &CancellationToken) {
        let size = self.batch_size;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                self.begin_drain();
                return;
            }
            n = self.rx.recv_many(batch, size) => if n == 0 {
                // Every handle is gone: nothing more can come.
                self.begin_drain();
                return;
            },
        }
        let linger = tokio::time::sleep(self.flush_interval);
        tokio::pin!(linger);
        while batch.len() < size {
            let room = size - batch.len();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.begin_drain();
                    return;
                }
                _ = &mut linger => return,
                n = self.rx.recv_many(batch, room) => if n == 0 {
                    self.begin_drain();
                    return;
                },
            }
        }
    }

    /// Writes one batch, retrying with backoff while the failure is retryable and the
    /// drain deadline (if any) allows. Counts the batch as written or dropped.
    async fn deliver(&mut self, batch: Vec<SinkPoint>, shutdown: &CancellationToken) -> Delivery {
        // Encoding a batch takes milliseconds: off the async workers that serve ingest.
        let (body, points, unencodable) = tokio::task::spawn_blocking(move || encode(&batch))
            .await
            .unwrap_or_else(|e| {
                error!(error = %e, "encoding an InfluxDB batch panicked");
                (Vec::new(), 0, 0)
            });
        self.counters.dropped(DropReason::Rejected, unencodable);
        if points == 0 {
            return Delivery::Dropped;
        }
        let body = Encoded(Arc::new(body));
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u64;
        loop {
            // While draining, no attempt may outlast the deadline.
            let limit = match self.drain_deadline {
                Some(d) => self
                    .timeout
                    .min(d.saturating_duration_since(Instant::now())),
                None => self.timeout,
            };
            if limit.is_zero() {
                self.counters.dropped(DropReason::Shutdown, points);
                return Delivery::OutOfTime;
            }
            let failure = match self.write_once(body.clone(), limit).await {
                Ok(()) => {
                    self.counters.written.fetch_add(points, Ordering::AcqRel);
                    self.counters.overflowing.store(false, Ordering::Release);
                    metrics::counter!("wearcast_influx_points_written_total").increment(points);
                    metrics::counter!("wearcast_influx_batches_written_total").increment(1);
                    if failures > 0 {
                        info!(
                            points,
                            failed_attempts = failures,
                            "InfluxDB write succeeded after failures; catching up"
                        );
                    } else {
                        debug!(points, "InfluxDB batch written");
                    }
                    return Delivery::Written;
                }
                Err(f) => f,
            };
            failures += 1;
            self.counters.write_errors.fetch_add(1, Ordering::AcqRel);
            metrics::counter!("wearcast_influx_write_errors_total", "kind" => failure.kind())
                .increment(1);
            if !failure.retryable() {
                error!(points, error = %failure, "InfluxDB refused a batch; dropping it");
                self.counters.dropped(DropReason::Rejected, points);
                return Delivery::Dropped;
            }
            if failures == 1 {
                warn!(points, error = %failure, retry_in_ms = backoff.as_millis() as u64, "InfluxDB write failed; retrying with backoff");
            } else {
                debug!(points, attempt = failures, error = %failure, retry_in_ms = backoff.as_millis() as u64, "InfluxDB write failed again");
            }
            let mut wake = Instant::now() + backoff;
            if let Some(deadline) = self.drain_deadline {
                if wake >= deadline {
                    self.counters.dropped(DropReason::Shutdown, points);
                    return Delivery::OutOfTime;
                }
                wake = wake.min(deadline);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if self.drain_deadline.is_none() => self.begin_drain(),
                _ = tokio::time::sleep_until(wake) => {}
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    async fn write_once(&self, body: Encoded, limit: Duration) -> Result<(), WriteFailure> {
        let request = self.client.write_with_precision(
            &self.bucket,
            futures_util::stream::iter([body]),
            TimestampPrecision::Milliseconds,
        );
        match tokio::time::timeout(limit, request).await {
            Err(_) => Err(WriteFailure::Timeout),
            Ok(Ok(())) => Ok(()),
            Ok(Err(influxdb2::RequestError::Http { status, text })) => Err(WriteFailure::Status {
                status: status.as_u16(),
                text: text.chars().take(300).collect(),
            }),
            Ok(Err(e)) => Err(WriteFailure::Transport(e.to_string())),
        }
    }
}
