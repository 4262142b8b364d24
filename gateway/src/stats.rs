//! What the gateway counts: Prometheus metrics through the `metrics` facade (the binary
//! installs the recorder), and the totals `run` returns in its report.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use wearcast_protocol::RejectReason;
use wearcast_protocol::reject::RejectUnit;

/// Metric names, in one place so dashboards and tests agree with the code.
pub mod names {
    pub const MESSAGES_RECEIVED: &str = "wearcast_gateway_messages_received_total";
    pub const SAMPLES_ACCEPTED: &str = "wearcast_gateway_samples_accepted_total";
    pub const REJECTED: &str = "wearcast_gateway_rejected_total";
    pub const DUPLICATES: &str = "wearcast_gateway_duplicates_total";
    pub const SEQ_RESETS: &str = "wearcast_gateway_seq_resets_total";
    pub const LATE_SAMPLES: &str = "wearcast_gateway_late_samples_total";
    pub const WINDOWS_EMITTED: &str = "wearcast_gateway_windows_emitted_total";
    pub const BATCHES_FORWARDED: &str = "wearcast_gateway_batches_forwarded_total";
    pub const FORWARD_RETRIES: &str = "wearcast_gateway_forward_retries_total";
    pub const FORWARD_LATENCY: &str = "wearcast_gateway_forward_latency_seconds";
    pub const SPOOL_BATCHES: &str = "wearcast_gateway_spool_batches";
    pub const OPEN_WINDOWS: &str = "wearcast_gateway_open_windows";
    pub const REGISTRY_MACHINES: &str = "wearcast_gateway_registry_machines";
}

/// The `kind` label of messages whose topic did not parse.
pub const KIND_INVALID: &str = "invalid";
const KINDS: [&str; 4] = ["telemetry", "status", "events", KIND_INVALID];
const UNITS: [RejectUnit; 3] = [RejectUnit::Message, RejectUnit::Sample, RejectUnit::Reading];

/// Describes every metric and registers the counters at zero, so `/metrics` shows each
/// rejection reason before the first one happens (an alert on `rate()` needs a series).
pub fn register_metrics() {
    use names::*;
    describe_counter!(MESSAGES_RECEIVED, "MQTT messages received, by topic kind");
    describe_counter!(SAMPLES_ACCEPTED, "Telemetry samples accepted into windows");
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
    describe_counter!(WINDOWS_EMITTED, "Closed windows put into the spool");
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
    describe_gauge!(SPOOL_BATCHES, "Batches waiting in the spool");
    describe_gauge!(OPEN_WINDOWS, "Windows being aggregated");
    describe_gauge!(REGISTRY_MACHINES, "Machines in the registry cache");

    for kind in KINDS {
        counter!(MESSAGES_RECEIVED, "kind" => kind).absolute(0);
    }
    for reason in RejectReason::ALL {
        for unit in UNITS {
            counter!(REJECTED, "reason" => reason.label(), "unit" => unit.label()).absolute(0);
        }
    }
    for name in [
        SAMPLES_ACCEPTED,
        DUPLICATES,
        SEQ_RESETS,
        LATE_SAMPLES,
        WINDOWS_EMITTED,
        BATCHES_FORWARDED,
        FORWARD_RETRIES,
    ] {
        counter!(name).absolute(0);
    }
    for name in [SPOOL_BATCHES, OPEN_WINDOWS, REGISTRY_MACHINES] {
        gauge!(name).set(0.0);
    }
}

/// Totals for the report `run` returns; shared by the tasks.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub messages: AtomicU64,
    pub samples_accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
}

impl Totals {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
