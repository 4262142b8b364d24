//! The Wearcast edge gateway: MQTT telemetry in, validated and aggregated windows out to
//! the server over HTTP — losing nothing it acknowledged, across `kill -9`, power loss,
//! broker restarts and server outages.
//!
//! ```text
//! broker ─▶ mqtt (poll task) ─▶ ingest task ───────────────▶ spool ─▶ forward ─▶ server
//!      ◀── PUBACK once durable ─┘ validate: topic, registry,  (write-ahead log,
//!                                 payload, time;              windows, batches,
//!                                 dedup; windows              disk budget)
//! ```
//!
//! - [`config`]: the `[gateway]` config section and its start-up checks.
//! - `mqtt`: the broker connection (persistent session, manual acks, reconnect forever)
//!   and the gate that keeps acknowledgements from crossing reconnects.
//! - `ingest`: the task that runs each message through the pipeline into the spool and
//!   acknowledges it once it is durable (group commit).
//! - `validate`: the message pipeline — topic, registry check, payload parsing
//!   (`wearcast_protocol::telemetry`), timestamp checks against the injected clock.
//! - [`dedup`]: drops samples delivered twice, by their per-machine `seq`.
//! - [`window`]: fixed event-time windows per machine and channel (count, mean, std,
//!   min, max, last; RMS and kurtosis for vibration-like channels).
//! - [`spool`]: the durable, event-sourced store of everything accepted and not yet
//!   confirmed by the server, on the write-ahead log of [`wal`]; batches with stable ids;
//!   disk budget and overflow policy.
//! - [`forward`]: `POST /api/v1/ingest` with retries; refused batches are dead-lettered.
//! - [`registry`]: the cache of registered machines (`GET /api/v1/ingest/machines`).
//! - [`deadletter`]: `dead-letter.jsonl` (refused batches) and `rejected.jsonl`
//!   (rejected input), in `data_dir`.
//! - [`stats`]: metric names and registration, run totals; [`backoff`]: retry schedules.
//!
//! All window, lateness and age logic runs on the injected [`SharedClock`] (the demo runs
//! it ~1800× faster than real time); only real-time concerns — flush interval, HTTP
//! timeouts, backoff, registry refresh — use tokio time.
//!
//! # Delivery contract
//!
//! **Broker → gateway: at least once, durable before acknowledged.** A message is
//! acknowledged (QoS 1 PUBACK) only after the records it produced are synced to the
//! spool's log; anything not acknowledged is redelivered by the broker (persistent
//! session). A redelivered sample with a `seq` is dropped by [`dedup`]; one without is
//! counted again (and in `wearcast_gateway_redelivered_without_seq_total`): devices
//! SHOULD send `seq`.
//!
//! **Gateway → server: at least once, stored exactly once.** Closed windows, events and
//! statuses are cut into batches whose record in the log holds the exact body sent and
//! whose id derives from the record's position; a batch leaves the spool only after a
//! 2xx (or, refused with a 4xx, after it was written to the dead-letter file). Retries,
//! in this process or after any crash, resend the same bytes under the same id, and the
//! server stores a batch id once.
//!
//! **Losses are counted.** Only the `drop_oldest` overflow policy, or a damaged disk,
//! loses accepted data; every such sample, event and status is counted in
//! `wearcast_gateway_dropped_total{reason}` and logged at ERROR.
//!
//! # Failures
//!
//! A spool write failure (disk full, I/O error) stops the pipeline: the gateway drops its
//! MQTT session, recovers the spool from its files after a backoff, and starts over —
//! the broker redelivers whatever was not acknowledged. Start-up refuses a spool
//! directory another gateway process holds.

pub mod backoff;
pub mod config;
pub mod deadletter;
pub mod dedup;
pub mod forward;
mod ingest;
mod mqtt;
pub mod registry;
pub mod spool;
pub mod stats;
pub mod tls;
mod validate;
pub mod wal;
pub mod window;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wearcast_protocol::clock::SharedClock;

pub use config::{GatewayConfig, OverflowPolicy};

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::deadletter::{DeadLetterFile, REJECT_LOG_MAX_BYTES, RejectLog};
use crate::forward::Forwarder;
use crate::ingest::Ingest;
use crate::registry::{RegistryHandle, RegistryRefresher};
use crate::spool::{DurableSpool, SpoolError};
use crate::stats::{Totals, names};
use crate::validate::Pipeline;

/// Real time a shutdown spends forwarding what is left; the rest stays in the spool.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Why the gateway could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway config `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot use the gateway data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("gateway task `{task}` failed: {reason}")]
    Task { task: &'static str, reason: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Totals of one `run`, or so far ([`GatewayMonitor::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReport {
    /// MQTT messages handled (accepted or rejected).
    pub messages: u64,
    /// Samples that went into windows.
    pub samples_accepted: u64,
    /// Rejections of messages, samples and readings.
    pub rejected: u64,
    /// Samples dropped as duplicates.
    pub duplicates: u64,
    /// Windows in batches the server accepted.
    pub windows_forwarded: u64,
    /// Messages acknowledged to the broker, each after it was durable.
    pub messages_acked: u64,
    /// Accepted samples without `seq` (their redeliveries cannot be recognised).
    pub samples_without_seq: u64,
    /// Windows written into spooled batches.
    pub windows_emitted: u64,
    pub batches_forwarded: u64,
    /// Accepted data dropped (disk budget under `drop_oldest`, or disk damage).
    pub samples_dropped: u64,
    pub events_dropped: u64,
    pub statuses_dropped: u64,
    pub batches_dropped: u64,
    /// The spool right now (or at the end): bytes on disk, batches waiting, and whether
    /// its budget is used up.
    pub spool_bytes: u64,
    pub spool_batches: u64,
    pub spool_full: bool,
    /// Torn tails cut and damaged segments quarantined at start-ups.
    pub torn_tails: u64,
    pub corrupt_segments: u64,
    /// Spool write failures, each followed by a restart of the pipeline.
    pub spool_failures: u64,
}

/// Whether the gateway is doing its job, for a health endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayHealth {
    /// Connected and subscribed, and the spool takes messages.
    pub healthy: bool,
    pub broker_connected: bool,
    pub spool_full: bool,
    pub spool_bytes: u64,
    pub spool_batches: u64,
}

/// A live view of a running gateway: its totals so far and its health. Cheap to clone;
/// create one, hand a clone to [`run_monitored`], read it from anywhere.
#[derive(Clone, Debug, Default)]
pub struct GatewayMonitor {
    totals: Arc<Totals>,
}

impl GatewayMonitor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> GatewayReport {
        self.totals.report()
    }

    pub fn health(&self) -> GatewayHealth {
        let r = self.totals.report();
        let broker_connected = Totals::get(&self.totals.subscribed) == 1;
        GatewayHealth {
            healthy: broker_connected && !r.spool_full,
            broker_connected,
            spool_full: r.spool_full,
            spool_bytes: r.spool_bytes,
            spool_batches: r.spool_batches,
        }
    }
}

fn task_failed(task: &'static str, e: tokio::task::JoinError) -> GatewayError {
    GatewayError::Task {
        task,
        reason: e.to_string(),
    }
}

/// Runs the gateway until `shutdown` is cancelled, then closes every window, forwards
/// for up to [`SHUTDOWN_DRAIN`] (what is left stays in the spool for the next start),
/// disconnects from the broker and reports.
pub async fn run(
    config: GatewayConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<GatewayReport, GatewayError> {
    run_with_readiness(config, clock, shutdown, watch::channel(false).0).await
}

/// [`run`], also reporting through `subscribed` whether the gateway's subscription is
/// in place on a connected broker (true from the SUBACK, or a CONNACK that resumes the
/// session, until the connection drops). MQTT delivers a message only to the
/// subscriptions that exist when it is published, so whoever starts publishers next to
/// a fresh broker (as `wearcast up` does) waits for this first.
pub async fn run_with_readiness(
    config: GatewayConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
    subscribed: watch::Sender<bool>,
) -> Result<GatewayReport, GatewayError> {
    run_inner(config, clock, shutdown, subscribed, GatewayMonitor::new()).await
}

/// [`run`], with `monitor` showing the totals and health while it runs.
pub async fn run_monitored(
    config: GatewayConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
    monitor: GatewayMonitor,
) -> Result<GatewayReport, GatewayError> {
    run_inner(config, clock, shutdown, watch::channel(false).0, monitor).await
}

/// What every session of one run shares.
struct RunContext {
    settings: Settings,
    clock: SharedClock,
    http: reqwest::Client,
    registry: RegistryHandle,
    totals: Arc<Totals>,
    subscribed: Arc<watch::Sender<bool>>,
    rejects: Option<RejectLog>,
}

async fn run_inner(
    config: GatewayConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
    subscribed: watch::Sender<bool>,
    monitor: GatewayMonitor,
) -> Result<GatewayReport, GatewayError> {
    let settings = config.settings()?;
    let data_dir = settings.data_dir.clone();
    let dir_err = |source| GatewayError::DataDir {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&data_dir).map_err(dir_err)?;
    let rejects = RejectLog::open(&data_dir, REJECT_LOG_MAX_BYTES).map_err(dir_err)?;
    stats::register_metrics();
    metrics::gauge!(names::SPOOL_BUDGET_BYTES).set(settings.spool.max_bytes as f64);
    let http = forward::http_client(
        settings.forward_timeout,
        settings.server_token.as_ref(),
        settings.server_tls.as_deref(),
    )
    .map_err(GatewayError::HttpClient)?;

    // Load the registry before subscribing, so a reachable server is consulted from the
    // first message on rather than machines being accepted provisionally.
    let refresher = RegistryRefresher::new(
        http.clone(),
        &settings.server_url,
        settings.registry_refresh,
    );
    let registry = refresher.handle();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = refresher.load_once() => {}
    }
    let registry_stop = shutdown.child_token();
    let registry_task = tokio::spawn(refresher.run(registry_stop.clone()));

    let mut ctx = RunContext {
        settings,
        clock,
        http,
        registry,
        totals: monitor.totals.clone(),
        subscribed: Arc::new(subscribed),
        rejects: Some(rejects),
    };
    let mut backoff = Backoff::reconnect();
    let outcome = loop {
        match session(&mut ctx, &shutdown).await {
            Ok(()) => break Ok(()),
            Err(GatewayError::Spool(e @ SpoolError::Locked { .. })) => break Err(e.into()),
            Err(GatewayError::Spool(e)) if !shutdown.is_cancelled() => {
                Totals::add(&ctx.totals.spool_failures, 1);
                metrics::counter!(names::SPOOL_FAILURES).increment(1);
                let retry_in = backoff.next_delay();
                error!(error = %e, retry_in = ?retry_in,
                    "the spool failed; nothing more is acknowledged. Restarting the pipeline from the spool's files (the broker redelivers what was not acknowledged)");
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(retry_in) => {}
                }
            }
            Err(e) => break Err(e),
        }
    };
    registry_stop.cancel();
    if let Err(e) = registry_task.await {
        warn!(error = %e, "registry task failed");
    }
    outcome?;
    let report = ctx.totals.report();
    info!(
        messages = report.messages,
        samples_accepted = report.samples_accepted,
        rejected = report.rejected,
        duplicates = report.duplicates,
        windows_forwarded = report.windows_forwarded,
        samples_dropped = report.samples_dropped,
        batches_left = report.spool_batches,
        "gateway stopped"
    );
    Ok(report)
}

/// One life of the pipeline: a recovered spool, an MQTT connection, the tasks. Ends at
/// shutdown (Ok) or when the spool fails (Err, and the caller starts another).
async fn session(ctx: &mut RunContext, shutdown: &CancellationToken) -> Result<(), GatewayError> {
    let settings = &ctx.settings;
    let open = {
        let (spool_settings, totals, now) =
            (settings.spool.clone(), ctx.totals.clone(), ctx.clock.now());
        tokio::task::spawn_blocking(move || DurableSpool::open(spool_settings, totals, now))
            .await
            .map_err(|e| task_failed("spool recovery", e))?
    };
    let (spool, recovered) = open?;
    info!(
        dir = %spool.dir().display(),
        segments = recovered.segments,
        records = recovered.records,
        batches_waiting = recovered.batches,
        open_windows = recovered.open_windows,
        torn_tails = recovered.torn_tails,
        corrupt_segments = recovered.corrupt_segments,
        "spool opened"
    );
    let rejects = match ctx.rejects.take() {
        Some(r) => r,
        None => RejectLog::open(&settings.data_dir, REJECT_LOG_MAX_BYTES).map_err(|source| {
            GatewayError::DataDir {
                path: settings.data_dir.clone(),
                source,
            }
        })?,
    };
    let mut pipeline = Pipeline::new(
        settings.limits.clone(),
        ctx.registry.clone(),
        rejects,
        ctx.totals.clone(),
    );
    if let Some((per_second, burst)) = settings.device_budget {
        pipeline.set_device_budget(per_second, burst);
    }

    // Cancelled with `shutdown`, or by us when a task ends on its own.
    let stop = shutdown.child_token();
    let disconnect = CancellationToken::new();
    let forwarder_wake = Arc::new(Notify::new());
    let confirmed = Arc::new(Notify::new());
    let outbox = spool.outbox();

    let (client, eventloop) = mqtt::connect(settings);
    let gate = mqtt::AckGate::new(client.clone());
    let (to_ingest, mut messages) = mpsc::unbounded_channel();
    info!(broker = %format_args!("{}:{}", settings.broker.host, settings.broker.port), filter = %settings.subscription,
        server = %settings.server_url, gateway = %settings.gateway, "gateway starting");
    let mut poll_task: JoinHandle<()> = tokio::spawn(mqtt::poll(
        eventloop,
        client,
        gate.clone(),
        settings.subscription.clone(),
        to_ingest,
        stop.clone(),
        disconnect.clone(),
        ctx.subscribed.clone(),
        ctx.totals.clone(),
    ));
    let mut ingest = Ingest::new(
        spool,
        pipeline,
        gate,
        ctx.clock.clone(),
        settings.flush_interval,
        forwarder_wake.clone(),
        confirmed.clone(),
        ctx.totals.clone(),
    );
    let mut ingest_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let result = ingest.run(&mut messages, &stop).await;
            (ingest, result)
        })
    };
    let mut forwarder = Forwarder::new(
        ctx.http.clone(),
        &settings.server_url,
        DeadLetterFile::new(&settings.data_dir),
        ctx.clock.clone(),
        ctx.totals.clone(),
        confirmed,
    )
    .with_max_backoff(settings.forward_max_backoff);
    let forward_task = {
        let (outbox, wake, stop) = (outbox.clone(), forwarder_wake.clone(), stop.clone());
        let idle_poll = settings.flush_interval;
        tokio::spawn(async move {
            forwarder.run(&outbox, &wake, idle_poll, &stop).await;
            forwarder
        })
    };

    // A task that ends before shutdown is a bug or a spool failure; stop the rest.
    let mut failure: Option<GatewayError> = None;
    let mut poll_done = false;
    let mut ingest_result = None;
    tokio::select! {
        // First: on shutdown the tasks end too, and that is not a failure.
        biased;
        _ = stop.cancelled() => {}
        r = &mut poll_task => {
            poll_done = true;
            failure = Some(match r {
                Ok(()) => GatewayError::Task { task: "mqtt", reason: "ended before shutdown".into() },
                Err(e) => task_failed("mqtt", e),
            });
        }
        r = &mut ingest_task => {
            ingest_result = Some(r);
        }
    }
    stop.cancel();
    let (mut ingest, spool_result) = match ingest_result {
        Some(r) => r,
        None => ingest_task.await,
    }
    .map_err(|e| task_failed("ingest", e))?;
    if let Err(e) = spool_result {
        failure.get_or_insert(GatewayError::Spool(e));
    }
    if let Some(e) = &failure {
        if !matches!(e, GatewayError::Spool(_)) {
            error!(error = %e, "gateway task ended unexpectedly; shutting down");
        }
    } else {
        info!("gateway stopping: windows closed into the spool; forwarding what is left");
    }

    let mut forwarder = match forward_task.await {
        Ok(forwarder) => Some(forwarder),
        Err(e) => {
            failure.get_or_insert(task_failed("forward", e));
            None
        }
    };
    if failure.is_none()
        && let Some(forwarder) = &mut forwarder
    {
        // The ingest task logs the confirmations of this last round as they come.
        let drained = CancellationToken::new();
        let logging = {
            let drained = drained.clone();
            async move {
                let r = ingest.log_confirmations_until(&drained).await;
                (ingest, r)
            }
        };
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        let draining = async {
            let left = forwarder.drain(&outbox, deadline).await;
            drained.cancel();
            left
        };
        let (left, (back, logged)) = tokio::join!(draining, logging);
        ingest = back;
        if let Err(e) = logged {
            failure.get_or_insert(GatewayError::Spool(e));
        } else if left > 0 {
            info!(
                batches = left,
                "not everything was forwarded before shutdown; it stays in the spool and is sent at the next start"
            );
        }
    }
    let unacked = ingest.unacknowledged();
    if unacked > 0 {
        info!(
            messages = unacked,
            "messages not acknowledged at shutdown; the broker delivers them again"
        );
    }
    // Closes the spool (the writer finishes what was queued) before the connection
    // goes, so the acks queued so far leave ahead of the DISCONNECT.
    drop(ingest);

    disconnect.cancel();
    if !poll_done && let Err(e) = poll_task.await {
        failure.get_or_insert(task_failed("mqtt", e));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
