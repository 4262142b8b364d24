//! The Wearcast edge gateway: MQTT telemetry in, validated and aggregated windows out to
//! the server over HTTP.
//!
//! ```text
//! broker ──▶ mqtt (poll task) ──▶ mqtt (processing task) ──▶ spool ──▶ forward ──▶ server
//!                                  validate: topic, registry,
//!                                  payload, time, dedup, window
//! ```
//!
//! - [`config`]: the `[gateway]` config section and its start-up checks.
//! - `mqtt`: the broker connection (persistent session, manual acks, reconnect forever)
//!   and the task that runs each message through the pipeline and acks it.
//! - `validate`: the message pipeline — topic, registry check, payload parsing
//!   (`wearcast_protocol::telemetry`), timestamp checks against the injected clock.
//! - [`dedup`]: drops samples delivered twice, by their per-machine `seq`.
//! - [`window`]: fixed event-time windows per machine and channel (count, mean, std,
//!   min, max, last), closed by watermark or by clock.
//! - [`spool`]: closed windows, events and statuses waiting for delivery, cut into
//!   batches with stable ids.
//! - [`forward`]: `POST /api/v1/ingest` with retries; refused batches are dead-lettered.
//! - [`registry`]: the cache of registered machines (`GET /api/v1/machines`).
//! - [`deadletter`]: `dead-letter.jsonl` (refused batches) and `rejected.jsonl`
//!   (rejected input), in `data_dir`.
//! - [`stats`]: metric names and registration; [`backoff`]: retry schedules.
//!
//! All window, lateness and age logic runs on the injected [`SharedClock`] (the demo runs
//! it ~1800× faster than real time); only real-time concerns — flush interval, HTTP
//! timeouts, backoff, registry refresh — use tokio time.
//!
//! # Delivery contract (this release)
//!
//! At least once from the broker to the gateway's memory: a message is acknowledged to
//! the broker only after it was fully handled — accepted into an open window or the
//! pending list, or rejected and counted. A message not yet handled when the gateway
//! stops or loses the connection is redelivered by the broker (persistent session);
//! a redelivered sample is dropped by [`dedup`] if it carries a `seq`.
//!
//! From the gateway to the server, at least once while the process lives: a batch leaves
//! the spool only after a 2xx (or, refused with a 4xx, after it was written to the
//! dead-letter file); the server de-duplicates by batch id.
//!
//! The gap: the spool is in memory, so acknowledged data that is still in an open window
//! or in the spool is lost if the process dies (a clean shutdown tries for 10 s to send
//! it and logs at error what it could not). The durable spool (next issue) closes that
//! gap by acknowledging only what is on disk.

pub mod backoff;
pub mod config;
pub mod deadletter;
pub mod dedup;
pub mod forward;
mod mqtt;
pub mod registry;
pub mod spool;
pub mod stats;
mod validate;
pub mod window;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wearcast_protocol::clock::SharedClock;

pub use config::GatewayConfig;

use crate::deadletter::{DeadLetterFile, REJECT_LOG_MAX_BYTES, RejectLog};
use crate::forward::Forwarder;
use crate::registry::RegistryRefresher;
use crate::spool::MemorySpool;
use crate::stats::Totals;
use crate::validate::Pipeline;

/// Real time a shutdown spends forwarding what is left.
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
}

/// Totals of one `run`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
}

fn task_failed(task: &'static str, e: tokio::task::JoinError) -> GatewayError {
    GatewayError::Task {
        task,
        reason: e.to_string(),
    }
}

/// Runs the gateway until `shutdown` is cancelled, then closes every window, forwards
/// for up to [`SHUTDOWN_DRAIN`], disconnects from the broker and reports.
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
    let settings = config.settings()?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| GatewayError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let rejects = RejectLog::open(&data_dir, REJECT_LOG_MAX_BYTES).map_err(|source| {
        GatewayError::DataDir {
            path: data_dir.clone(),
            source,
        }
    })?;
    stats::register_metrics();
    let http = forward::http_client(settings.forward_timeout).map_err(GatewayError::HttpClient)?;
    let totals = Arc::new(Totals::default());

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

    // Cancelled with `shutdown`, or by us when a task ends on its own.
    let stop = shutdown.child_token();
    let disconnect = CancellationToken::new();
    let spool = MemorySpool::new(settings.gateway.clone(), clock.clone()).shared();
    let forwarder_wake = Arc::new(Notify::new());
    let pipeline = Pipeline::new(
        settings.limits.clone(),
        settings.window_ms,
        settings.lateness_ms,
        registry,
        rejects,
        totals.clone(),
    );

    let (client, eventloop) = mqtt::connect(&settings);
    let (to_pipeline, messages) = mpsc::unbounded_channel();
    info!(broker = %format_args!("{}:{}", settings.broker.host, settings.broker.port), filter = %settings.subscription,
        server = %settings.server_url, gateway = %settings.gateway, "gateway starting");
    let mut poll_task: JoinHandle<()> = tokio::spawn(mqtt::poll(
        eventloop,
        client.clone(),
        settings.subscription.clone(),
        to_pipeline,
        stop.clone(),
        disconnect.clone(),
        subscribed,
    ));
    let processing = mqtt::Processing {
        client,
        spool: spool.clone(),
        forwarder_wake: forwarder_wake.clone(),
        clock: clock.clone(),
        flush_interval: settings.flush_interval,
    };
    let mut pipeline_task = tokio::spawn(processing.run(pipeline, messages, stop.clone()));
    let registry_task = tokio::spawn(refresher.run(stop.clone()));
    let mut forwarder = Forwarder::new(
        http,
        &settings.server_url,
        DeadLetterFile::new(&data_dir),
        clock.clone(),
        settings.batch_max_windows,
    );
    let forward_task = {
        let (spool, wake, stop) = (spool.clone(), forwarder_wake.clone(), stop.clone());
        let idle_poll = settings.flush_interval;
        tokio::spawn(async move {
            forwarder.run(&spool, &wake, idle_poll, &stop).await;
            forwarder
        })
    };

    // A task that ends before shutdown is a bug; stop the rest and report it.
    let mut failure: Option<GatewayError> = None;
    let mut poll_done = false;
    let mut pipeline_result = None;
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
        r = &mut pipeline_task => {
            pipeline_result = Some(r);
            failure = Some(GatewayError::Task { task: "pipeline", reason: "ended before shutdown".into() });
        }
    }
    if let Some(e) = &failure {
        error!(error = %e, "gateway task ended unexpectedly; shutting down");
    }
    stop.cancel();
    info!("gateway stopping: closing windows and forwarding what is left");

    let pipeline_result = match pipeline_result {
        Some(r) => r,
        None => pipeline_task.await,
    };
    if let Err(e) = pipeline_result {
        failure.get_or_insert(task_failed("pipeline", e));
    }
    let mut forwarder = match forward_task.await {
        Ok(forwarder) => Some(forwarder),
        Err(e) => {
            failure.get_or_insert(task_failed("forward", e));
            None
        }
    };
    if let Some(forwarder) = &mut forwarder {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        let left = forwarder.drain(&spool, deadline).await;
        if !left.is_empty() {
            error!(
                windows = left.windows,
                events = left.events,
                statuses = left.statuses,
                "could not forward everything before shutdown; this data is lost (the spool is in memory)"
            );
        }
    }

    disconnect.cancel();
    if !poll_done && let Err(e) = poll_task.await {
        failure.get_or_insert(task_failed("mqtt", e));
    }
    if let Err(e) = registry_task.await {
        warn!(error = %e, "registry task failed");
    }
    if let Some(e) = failure {
        return Err(e);
    }

    let report = GatewayReport {
        messages: Totals::get(&totals.messages),
        samples_accepted: Totals::get(&totals.samples_accepted),
        rejected: Totals::get(&totals.rejected),
        duplicates: Totals::get(&totals.duplicates),
        windows_forwarded: forwarder.map_or(0, |f| f.windows_forwarded()),
    };
    info!(
        messages = report.messages,
        samples_accepted = report.samples_accepted,
        rejected = report.rejected,
        duplicates = report.duplicates,
        windows_forwarded = report.windows_forwarded,
        "gateway stopped"
    );
    Ok(report)
}
