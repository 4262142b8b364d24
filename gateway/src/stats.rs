//! What the gateway counts: Prometheus metrics through the `metrics` facade (the binary
//! installs the recorder), and the totals `run` returns in its report and
//! [`crate::GatewayMonitor`] shows while it runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
};
use wearcast_protocol::RejectReason;
use wearcast_protocol::reject::RejectUnit;

use crate::GatewayReport;

/// Metric names, in one place so dashboards and tests agree with the code.
pub mod names {
    pub const MESSAGES_RECEIVED: &str = "wearcast_gateway_messages_received_total";
    pub const MESSAGES_ACKED: &str = "wearcast_gateway_messages_acked_total";
    pub const SAMPLES_ACCEPTED: &str = "wearcast_gateway_samples_accepted_total";
    pub const SAMPLES_WITHOUT_SEQ: &str = "wearcast_gateway_samples_without_seq_total";
    pub const REDELIVERED_WITHOUT_SEQ: &str = "wearcast_gateway_redelivered_without_seq_total";
    pub const REJECTED: &str = "wearcast_gateway_rejected_total";
    pub const DUPLICATES: &str = "wearcast_gateway_duplicates_total";
    pub const SEQ_RESETS: &str = "wearcast_gateway_seq_resets_total";
    pub const LATE_SAMPLES: &str = "wearcast_gateway_late_samples_total";
    pub const WINDOWS_EMITTED: &str = "wearcast_gateway_windows_emitted_total";
    pub const BATCHES_FORWARDED: &str = "wearcast_gateway_batches_forwarded_total";
    pub const FORWARD_RETRIES: &str = "wearcast_gateway_forward_retries_total";
    pub const FORWARD_LATENCY: &str = "wearcast_gateway_forward_latency_seconds";
    pub const DELIVERY_DELAY: &str = "wearcast_gateway_delivery_delay_seconds";
    pub const DROPPED: &str = "wearcast_gateway_dropped_total";
    /// Batches the server refused for good (4xx), moved to `dead-letter.jsonl`.
    pub const BATCHES_DEAD_LETTERED: &str = "wearcast_gateway_batches_dead_lettered_total";
    pub const SPOOL_BATCHES: &str = "wearcast_gateway_spool_batches";
    pub const SPOOL_BYTES: &str = "wearcast_gateway_spool_bytes";
    pub const SPOOL_BUDGET_BYTES: &str = "wearcast_gateway_spool_budget_bytes";
    pub const SPOOL_SEGMENTS: &str = "wearcast_gateway_spool_segments";
    pub const SPOOL_FULL: &str = "wearcast_gateway_spool_full";
    pub const SPOOL_TORN_TAILS: &str = "wearcast_gateway_spool_torn_tails_total";
    pub const SPOOL_CORRUPT_SEGMENTS: &str = "wearcast_gateway_spool_corrupt_segments_total";
    pub const SPOOL_FAILURES: &str = "wearcast_gateway_spool_failures_total";
    pub const WAL_SYNC_SECONDS: &str = "wearcast_gateway_spool_sync_seconds";
    pub const OPEN_WINDOWS: &str = "wearcast_gateway_open_windows";
    pub const REGISTRY_MACHINES: &str = "wearcast_gateway_registry_machines";
    pub const BROKER_CONNECTED: &str = "wearcast_gateway_broker_connected";
}

/// The `kind` label of messages whose topic did not parse.
pub const KIND_INVALID: &str = "invalid";
const KINDS: [&str; 4] = ["telemetry", "status", "events", KIND_INVALID];
const UNITS: [RejectUnit; 3] = [RejectUnit::Message, RejectUnit::Sample, RejectUnit::Reading];

/// Why the gateway dropped something it had accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The disk budget was used up under the `drop_oldest` policy.
    SpoolFull,
    /// The spool's record of a batch no longer reads back (disk corruption).
    SpoolCorrupt,
}

impl DropReason {
    pub const ALL: [Self; 2] = [Self::SpoolFull, Self::SpoolCorrupt];

    pub fn label(self) -> &'static str {
        match self {
            Self::SpoolFull => "spool_full",
            Self::SpoolCorrupt => "spool_corrupt",
        }
    }
}

const DROP_UNITS: [&str; 4] = ["batch", "sample", "event", "status"];

/// Describes every metric and registers the counters at zero, so `/metrics` shows each
/// rejection and drop reason before the first one happens (an alert on `rate()` needs a
/// series).
pub fn register_metrics() {
    use names::*;
    describe_counter!(MESSAGES_RECEIVED, "MQTT messages received, by topic kind");
    describe_counter!(
        MESSAGES_ACKED,
        "MQTT messages acknowledged to the broker (after what they carried was durable)"
    );
    describe_counter!(SAMPLES_ACCEPTED, "Telemetry samples accepted into windows");
    describe_counter!(
        SAMPLES_WITHOUT_SEQ,
        "Accepted samples without seq: a redelivery of one cannot be recognised"
    );
    describe_counter!(
        REDELIVERED_WITHOUT_SEQ,
        "Samples without seq in messages the broker marked as redelivered (possibly counted twice)"
    );
    describe_counter!(
        REJECTED,
        "Rejected input, by reason and by what was lost (message, sample, reading)"
    );
    describe_counter!(DUPLICATES, "Samples dropped as duplicates by seq");
    describe_counter!(
        SEQ_RESETS,
        "Device seq counters that restarted (state reset)"
    );
    describe_counter!(
        LATE_SAMPLES,
        "Samples that arrived after their window closed (emitted in a partial window)"
    );
    describe_counter!(
        WINDOWS_EMITTED,
        "Closed windows written into spooled batches"
    );
    describe_counter!(BATCHES_FORWARDED, "Batches the server accepted (2xx)");
    describe_counter!(
        FORWARD_RETRIES,
        "Failed forward attempts that will be retried"
    );
    describe_histogram!(
        FORWARD_LATENCY,
        Unit::Seconds,
        "Duration of one ingest request"
    );
    describe_histogram!(
        DELIVERY_DELAY,
        Unit::Seconds,
        "Time from a batch entering the spool to the server confirming it"
    );
    describe_counter!(
        DROPPED,
        "Accepted data dropped, by reason (spool_full, spool_corrupt) and unit (batch, sample, event, status)"
    );
    describe_counter!(
        BATCHES_DEAD_LETTERED,
        "Batches the server refused for good (4xx), moved to dead-letter.jsonl, by status"
    );
    describe_gauge!(SPOOL_BATCHES, "Batches in the spool waiting for the server");
    describe_gauge!(SPOOL_BYTES, "Bytes of the spool's log segments on disk");
    describe_gauge!(SPOOL_BUDGET_BYTES, "The spool's disk budget");
    describe_gauge!(SPOOL_SEGMENTS, "Log segment files of the spool");
    describe_gauge!(
        SPOOL_FULL,
        "1 while the spool's disk budget is used up and no new messages are taken"
    );
    describe_counter!(
        SPOOL_TORN_TAILS,
        "Torn tails cut off the spool at start-up (writes cut short by a crash)"
    );
    describe_counter!(
        SPOOL_CORRUPT_SEGMENTS,
        "Damaged spool segments (or parts) moved to quarantine at start-up"
    );
    describe_counter!(
        SPOOL_FAILURES,
        "Spool write failures; each restarts the gateway's pipeline from the files"
    );
    describe_histogram!(
        WAL_SYNC_SECONDS,
        Unit::Seconds,
        "Duration of one group commit (write and fdatasync)"
    );
    describe_gauge!(OPEN_WINDOWS, "Windows being aggregated");
    describe_gauge!(REGISTRY_MACHINES, "Machines in the registry cache");
    describe_gauge!(BROKER_CONNECTED, "1 while connected to the MQTT broker");

    for kind in KINDS {
        counter!(MESSAGES_RECEIVED, "kind" => kind).absolute(0);
    }
    for reason in RejectReason::ALL {
        for unit in UNITS {
            counter!(REJECTED, "reason" => reason.label(), "unit" => unit.label()).absolute(0);
        }
    }
    for reason in DropReason::ALL {
        for unit in DROP_UNITS {
            counter!(DROPPED, "reason" => reason.label(), "unit" => unit).absolute(0);
        }
    }
    for name in [
        MESSAGES_ACKED,
        SAMPLES_ACCEPTED,
        SAMPLES_WITHOUT_SEQ,
        REDELIVERED_WITHOUT_SEQ,
        DUPLICATES,
        SEQ_RESETS,
        LATE_SAMPLES,
        WINDOWS_EMITTED,
        BATCHES_FORWARDED,
        FORWARD_RETRIES,
        SPOOL_TORN_TAILS,
        SPOOL_CORRUPT_SEGMENTS,
        SPOOL_FAILURES,
    ] {
        counter!(name).absolute(0);
    }
    for name in [
        SPOOL_BATCHES,
        SPOOL_BYTES,
        SPOOL_SEGMENTS,
        SPOOL_FULL,
        OPEN_WINDOWS,
        REGISTRY_MACHINES,
        BROKER_CONNECTED,
    ] {
        gauge!(name).set(0.0);
    }
}

/// Totals of one gateway run, shared by its tasks; the report and the monitor read
/// them.
#[derive(Debug, Default)]
pub struct Totals {
    pub messages: AtomicU64,
    pub messages_acked: AtomicU64,
    pub samples_accepted: AtomicU64,
    pub samples_without_seq: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    pub windows_emitted: AtomicU64,
    pub windows_forwarded: AtomicU64,
    pub batches_forwarded: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_samples: AtomicU64,
    pub dropped_events: AtomicU64,
    pub dropped_statuses: AtomicU64,
    pub torn_tails: AtomicU64,
    pub corrupt_segments: AtomicU64,
    pub spool_failures: AtomicU64,
    /// Gauges: the spool's bytes and batches, and whether it is full (0/1).
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
    pub spool_full: AtomicU64,
    /// 1 while connected to the broker with the subscription in place.
    pub subscribed: AtomicU64,
}

impl Totals {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn set_spool(&self, bytes: u64, batches: u64, full: bool) {
        Self::set(&self.spool_bytes, bytes);
        Self::set(&self.spool_batches, batches);
        Self::set(&self.spool_full, u64::from(full));
    }

    /// Counts accepted data that is gone, in the totals and the metrics.
    pub fn count_dropped(
        &self,
        reason: DropReason,
        batches: u64,
        samples: u64,
        events: u64,
        statuses: u64,
    ) {
        Self::add(&self.dropped_batches, batches);
        Self::add(&self.dropped_samples, samples);
        Self::add(&self.dropped_events, events);
        Self::add(&self.dropped_statuses, statuses);
        for (unit, n) in DROP_UNITS
            .into_iter()
            .zip([batches, samples, events, statuses])
        {
            counter!(names::DROPPED, "reason" => reason.label(), "unit" => unit).increment(n);
        }
    }

    pub fn report(&self) -> GatewayReport {
        let g = Self::get;
        GatewayReport {
            messages: g(&self.messages),
            samples_accepted: g(&self.samples_accepted),
            rejected: g(&self.rejected),
            duplicates: g(&self.duplicates),
            windows_forwarded: g(&self.windows_forwarded),
            messages_acked: g(&self.messages_acked),
            samples_without_seq: g(&self.samples_without_seq),
            windows_emitted: g(&self.windows_emitted),
            batches_forwarded: g(&self.batches_forwarded),
            samples_dropped: g(&self.dropped_samples),
            events_dropped: g(&self.dropped_events),
            statuses_dropped: g(&self.dropped_statuses),
            batches_dropped: g(&self.dropped_batches),
            spool_bytes: g(&self.spool_bytes),
            spool_batches: g(&self.spool_batches),
            spool_full: g(&self.spool_full) == 1,
            torn_tails: g(&self.torn_tails),
            corrupt_segments: g(&self.corrupt_segments),
            spool_failures: g(&self.spool_failures),
        }
    }
}

/// Metric handles of the per-message path, registered once: looking a metric up by
/// name and labels for every message costs more than the rest of the bookkeeping.
#[derive(Clone, Debug)]
pub(crate) struct HotMetrics {
    pub received: [Counter; 4],
    pub samples_accepted: Counter,
    pub samples_without_seq: Counter,
    pub redelivered_without_seq: Counter,
    pub duplicates: Counter,
    pub seq_resets: Counter,
    pub late_samples: Counter,
    pub acked: Counter,
    rejected: Vec<Counter>,
}

impl HotMetrics {
    pub fn register() -> Self {
        use names::*;
        let rejected = RejectReason::ALL
            .iter()
            .flat_map(|r| {
                UNITS
                    .iter()
                    .map(move |u| counter!(REJECTED, "reason" => r.label(), "unit" => u.label()))
            })
            .collect();
        Self {
            received: KINDS.map(|kind| counter!(MESSAGES_RECEIVED, "kind" => kind)),
            samples_accepted: counter!(SAMPLES_ACCEPTED),
            samples_without_seq: counter!(SAMPLES_WITHOUT_SEQ),
            redelivered_without_seq: counter!(REDELIVERED_WITHOUT_SEQ),
            duplicates: counter!(DUPLICATES),
            seq_resets: counter!(SEQ_RESETS),
            late_samples: counter!(LATE_SAMPLES),
            acked: counter!(MESSAGES_ACKED),
            rejected,
        }
    }

    /// The `messages_received` counter of a topic kind (`KINDS` order).
    pub fn received(&self, kind: &str) -> &Counter {
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(3);
        &self.received[i]
    }

    pub fn rejected(&self, reason: RejectReason, unit: RejectUnit) -> &Counter {
        let r = RejectReason::ALL
            .iter()
            .position(|x| *x == reason)
            .unwrap_or(0);
        let u = UNITS.iter().position(|x| *x == unit).unwrap_or(0);
        &self.rejected[r * UNITS.len() + u]
    }
}

/// A small in-process recorder: every counter and gauge as a number, every histogram as
/// count and sum. The harness binary installs it (so the benchmark pays for metrics as
/// production does) and tests read it; production renders Prometheus instead.
#[derive(Clone, Debug, Default)]
pub struct MemoryRecorder {
    metrics: Arc<Mutex<BTreeMap<String, Arc<Cell>>>>,
}

#[derive(Debug, Default)]
struct Cell {
    value: AtomicU64,
    sum_bits: AtomicU64,
    /// Registered as a gauge: `value` holds the bits of an `f64`.
    gauge: std::sync::atomic::AtomicBool,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + value).to_bits())
            });
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.value.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + value).to_bits())
            });
    }
}

/// `name{k="v",...}` with labels in key order, as Prometheus writes them.
fn series(key: &Key) -> String {
    let mut labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
    if labels.is_empty() {
        return key.name().to_owned();
    }
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{}{{{}}}", key.name(), inner.join(","))
}

impl MemoryRecorder {
    fn cell(&self, name: String) -> Arc<Cell> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default()
            .clone()
    }

    /// A counter's value by series (`name` or `name{label="value",...}`); 0 if unknown.
    pub fn counter(&self, series: &str) -> u64 {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(series)
            .map_or(0, |c| c.value.load(Ordering::Relaxed))
    }

    /// Every series with its value (gauges as numbers, histograms as their count).
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, c)| {
                let raw = c.value.load(Ordering::Relaxed);
                let value = if c.gauge.load(Ordering::Relaxed) {
                    f64::from_bits(raw)
                } else {
                    raw as f64
                };
                (name.clone(), value)
            })
            .collect()
    }
}

impl Recorder for MemoryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(series(key)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = self.cell(series(key));
        cell.gauge.store(true, Ordering::Relaxed);
        Gauge::from_arc(cell)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(series(key)))
    }
}
