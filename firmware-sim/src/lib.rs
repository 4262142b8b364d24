//! The Wearcast firmware simulator: a seeded, deterministic fleet of machines whose
//! components wear out along realistic curves and publish telemetry over MQTT, the
//! fleet manifest that describes them to the server, and the ground truth (true
//! failure times) that predictions are scored against.
//!
//! Layout, from the physics outwards:
//!
//! - [`wear`]: one component life — Weibull life, onset, the degradation curve of each
//!   failure mechanism, and what a wear channel reads under a given load and ambient.
//!   Pure functions.
//! - `machine`: one machine through time — operating regimes, noise and sensor
//!   dropouts, breakdowns, downtime and replacements — as a time-ordered stream of
//!   samples, events and truth records. No I/O.
//! - [`fleet`]: the demo catalogue (tenant, customers, sites, parts, machine models) and
//!   [`demo_fleet`], which draws machines and lives from the seed and positions them so
//!   a given instant is "now".
//! - `publisher`: one MQTT connection per machine (birth, last will, QoS 1 telemetry
//!   and events, reconnection, goodbye on shutdown).
//! - [`faults`]: fault injection (malformed payloads, duplicates, reordering, clock
//!   skew, bursts, dropped connections), off unless `[sim.faults]` switches it on.
//! - [`truth`]: the ground-truth JSON lines.
//! - [`config`]: the `[sim]` config section.
//!
//! [`run`] ties them together: it publishes the backfill, then goes live until its
//! shutdown token is cancelled. The simulator depends on the `protocol` crate only and
//! never on the gateway or the server: it talks to them through the broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wearcast_firmware_sim::SimError> {
//! use std::sync::Arc;
//! use wearcast_firmware_sim::{SimConfig, demo_fleet, run};
//! use wearcast_protocol::{Clock, ScaledClock, SystemClock};
//!
//! let config = SimConfig::default();
//! let clock = Arc::new(ScaledClock::new(SystemClock.now(), 1800.0));
//! let fleet = demo_fleet(&config, clock.now())?;
//! let mut backfill = fleet.backfill_done();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let sim = tokio::spawn(run(config, fleet, clock, shutdown.clone()));
//! if backfill.wait().await {
//!     tracing::info!("backfill published");
//! }
//! shutdown.cancel();
//! let report = sim.await.expect("the simulator task panicked")?;
//! # let _ = report;
//! # Ok(())
//! # }
//! ```

pub mod config;
mod control;
mod error;
pub mod faults;
pub mod fleet;
mod machine;
mod publisher;
pub mod truth;
pub mod wear;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wearcast_protocol::{SharedClock, UnixMs};

pub use config::{BrokerAddress, SimConfig};
pub use control::SimControl;
pub use error::SimError;
pub use faults::{FaultConfig, FaultReport, MalformedKind};
pub use fleet::{BackfillDone, Fleet, demo_fleet};
pub use publisher::{FIRMWARE, MAX_BATCH_SPAN_MS, MAX_MESSAGE_BYTES};
pub use truth::{FailureRecord, LifeRecord, TruthRecord};

use publisher::{BackfillBarrier, RunContext, run_machine};

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Telemetry and event messages handed to the MQTT clients (status messages not
    /// counted).
    pub messages_published: u64,
    /// Samples in those telemetry messages.
    pub samples_published: u64,
    /// Components that broke down, during the backfill and live.
    pub failures: u64,
    /// Faults injected (all zero unless `[sim.faults]` is on). Injected messages are
    /// counted in `messages_published` too.
    pub faults: FaultReport,
}

/// Publishes the backfill (clock time `now − config.backfill` up to `now`, with `now`
/// read from `clock` at start), then, every `config.publish_every` of real time, every
/// sample due up to `clock.now()`, until `shutdown` is cancelled. Then each machine
/// publishes its retained `offline` status and disconnects.
///
/// The fleet's machines, tenant and lives come from `fleet`; `config` supplies the
/// broker, client ids, sampling and backfill. A broker that is down is retried for as
/// long as the run lasts; only configuration and ground-truth I/O errors end it.
pub async fn run(
    config: SimConfig,
    fleet: Fleet,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<SimReport, SimError> {
    config.validate()?;
    let broker = config.broker()?;
    let truth = match &config.truth_path {
        Some(path) => Some(Arc::new(truth::TruthLog::open(path)?)),
        None => None,
    };
    let gateway_max_age_ms = wearcast_protocol::TelemetryLimits::default().max_age_ms;
    if config.backfill_ms() > gateway_max_age_ms {
        warn!(
            backfill = %wearcast_protocol::telemetry::human_duration(config.backfill_ms()),
            "the backfill reaches further back than a gateway with default limits accepts; its oldest samples will be rejected"
        );
    }

    let Fleet {
        manifest,
        machines,
        backfill_done,
        control,
        passwords,
        ..
    } = fleet;
    let now = clock.now();
    let interval_ms = config.sample_interval_ms();
    let backfill_from = backfill_start(&config, now);
    let stop = shutdown.child_token();
    let ctx = Arc::new(RunContext {
        tenant: manifest.tenant.id.clone(),
        broker,
        client_prefix: config.client_prefix.clone(),
        clock,
        stop: stop.clone(),
        truth,
        interval_ms,
        backfill_from,
        backfill_until: now,
        publish_every: config.publish_every,
        backfill: BackfillBarrier::new(machines.len(), backfill_done),
        control,
        faults: config.faults.clone(),
        seed: config.seed,
        passwords,
    });
    info!(
        tenant = %ctx.tenant,
        machines = machines.len(),
        broker = %ctx.broker,
        backfill_from = %backfill_from,
        backfill_until = %now,
        "simulator starting"
    );

    let mut tasks = JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for sim in machines {
        let machine = sim.id.to_string();
        let handle = tasks.spawn(run_machine(sim, ctx.clone()));
        names.insert(handle.id(), machine);
    }
    let mut report = SimReport::default();
    let mut failure = None;
    while let Some(joined) = tasks.join_next_with_id().await {
        let outcome = match joined {
            Ok((_, outcome)) => outcome,
            Err(e) => Err(SimError::Task {
                machine: names.get(&e.id()).cloned().unwrap_or_default(),
                reason: e.to_string(),
            }),
        };
        match outcome {
            Ok(r) => {
                report.messages_published += r.messages;
                report.samples_published += r.samples;
                report.failures += r.failures;
                report.faults.add(&r.faults);
            }
            Err(e) => {
                error!(error = %e, "stopping the simulator");
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    info!(
        messages = report.messages_published,
        samples = report.samples_published,
        failures = report.failures,
        "simulator stopped"
    );
    Ok(report)
}

/// Clock time of the first backfill sample of a run that starts at `now`: `backfill`
/// earlier, floored to a multiple of the sample interval, because samples on round
/// times (…:00, …:05) read better downstream.
pub fn backfill_start(config: &SimConfig, now: UnixMs) -> UnixMs {
    now.plus_ms(-config.backfill_ms())
        .window_start(config.sample_interval_ms().max(1))
}
