//! Fault injection: the ways real devices and links misbehave, on purpose, so the
//! gateway's defences can be exercised end to end — malformed payloads (one kind for
//! each rejection reason a device can cause), duplicated and reordered messages, clock
//! skew, bursts, and dropped connections.
//!
//! Configured by the `[sim.faults]` section, everything off by default. Each fault is a
//! probability per telemetry message, drawn from the machine's own seeded generator,
//! so a run is repeatable. Injected malformed messages come *in addition* to the real
//! telemetry, which therefore still arrives; skew changes real samples' timestamps.
//!
//! This module decides what goes on the wire; the publisher only hands the messages it
//! returns to the MQTT client, and drops the connection when asked. Nothing here does
//! I/O.

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wearcast_protocol::telemetry::encode_samples;
use wearcast_protocol::{MachineId, RejectReason, Sample, TenantId, UnixMs};

use crate::error::SimError;

/// Size of the padding of a `too_large` message: over the gateway's default limit
/// (256 KiB), under [`MAX_INJECTED_BYTES`].
const TOO_LARGE_BYTES: usize = 257 * 1024;
/// Largest message fault injection sends; the publisher's client must allow it.
pub(crate) const MAX_INJECTED_BYTES: usize = 260 * 1024;

/// Config section `[sim.faults]`: the probability of each fault per telemetry message
/// (0 = never, 1 = every message).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Send an extra malformed message; the kinds take turns, so every rejection reason
    /// a device can cause comes up (see [`MalformedKind`]).
    pub malformed: f64,
    /// Send the message twice (a device that retries after a lost PUBACK).
    pub duplicate: f64,
    /// Hold the message back and send it after the next one.
    pub reorder: f64,
    /// Shift the message's timestamps by `clock_skew_by`, ahead and behind in turns (a
    /// device whose clock drifted).
    pub clock_skew: f64,
    /// How far a skewed message's clock is off.
    #[serde(with = "humantime_serde")]
    pub clock_skew_by: Duration,
    /// Send the message as one message per sample, back to back (a device flushing its
    /// buffer after an outage).
    pub burst: f64,
    /// Drop the connection after the message, without a DISCONNECT (the broker fires
    /// the last will); the publisher reconnects and sends again what was unacknowledged.
    pub disconnect: f64,
}

impl FaultConfig {
    /// True when no fault is switched on.
    pub fn is_off(&self) -> bool {
        self.probabilities().iter().all(|(_, p)| *p == 0.0)
    }

    fn probabilities(&self) -> [(&'static str, f64); 6] {
        [
            ("faults.malformed", self.malformed),
            ("faults.duplicate", self.duplicate),
            ("faults.reorder", self.reorder),
            ("faults.clock_skew", self.clock_skew),
            ("faults.burst", self.burst),
            ("faults.disconnect", self.disconnect),
        ]
    }

    /// Each probability must be within 0..=1, and skew needs an amount.
    pub fn validate(&self) -> Result<(), SimError> {
        for (field, p) in self.probabilities() {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::config(
                    field,
                    format!("{p} is not a probability between 0 and 1"),
                ));
            }
        }
        if self.clock_skew > 0.0 && self.clock_skew_by.is_zero() {
            return Err(SimError::config(
                "faults.clock_skew_by",
                "must be more than 0 when faults.clock_skew is on",
            ));
        }
        Ok(())
    }
}

/// The malformed messages the simulator sends, one per rejection reason a device can
/// cause at the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedKind {
    NotJson,
    TooLarge,
    BadTopic,
    UnknownMachine,
    WrongTenant,
    MissingTs,
    BadTs,
    TsFuture,
    TsPast,
    BadChannel,
    BadValue,
    NoReadings,
    TooMany,
    BadEvent,
}

impl MalformedKind {
    pub const ALL: [Self; 14] = [
        Self::NotJson,
        Self::TooLarge,
        Self::BadTopic,
        Self::UnknownMachine,
        Self::WrongTenant,
        Self::MissingTs,
        Self::BadTs,
        Self::TsFuture,
        Self::TsPast,
        Self::BadChannel,
        Self::BadValue,
        Self::NoReadings,
        Self::TooMany,
        Self::BadEvent,
    ];

    /// The reason the gateway must reject it with (exactly once per message).
    pub fn reason(self) -> RejectReason {
        match self {
            Self::NotJson => RejectReason::Malformed,
            Self::TooLarge => RejectReason::TooLarge,
            Self::BadTopic => RejectReason::BadTopic,
            Self::UnknownMachine => RejectReason::UnknownMachine,
            Self::WrongTenant => RejectReason::WrongTenant,
            Self::MissingTs => RejectReason::MissingTs,
            Self::BadTs => RejectReason::BadTs,
            Self::TsFuture => RejectReason::TsFuture,
            Self::TsPast => RejectReason::TsPast,
            Self::BadChannel => RejectReason::BadChannel,
            Self::BadValue => RejectReason::BadValue,
            Self::NoReadings => RejectReason::NoReadings,
            Self::TooMany => RejectReason::TooMany,
            Self::BadEvent => RejectReason::BadEvent,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// What was injected, per machine and summed over the fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Malformed messages sent, by kind (indexed like [`MalformedKind::ALL`]).
    pub malformed: [u64; MalformedKind::ALL.len()],
    /// Messages sent a second time.
    pub duplicated: u64,
    /// Messages held back and sent after their successor.
    pub reordered: u64,
    /// Messages whose timestamps were shifted, ahead and behind.
    pub skewed_ahead: u64,
    pub skewed_behind: u64,
    /// Messages split into a burst of one message per sample.
    pub bursts: u64,
    /// Connections dropped.
    pub disconnects: u64,
}

impl FaultReport {
    pub fn malformed(&self, kind: MalformedKind) -> u64 {
        self.malformed[kind.index()]
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.malformed.iter_mut().zip(other.malformed) {
            *a += b;
        }
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.skewed_ahead += other.skewed_ahead;
        self.skewed_behind += other.skewed_behind;
        self.bursts += other.bursts;
        self.disconnects += other.disconnects;
    }
}

/// One MQTT message to publish (QoS 1, not retained).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WireMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What to do with one telemetry message.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    /// Publish these, in this order.
    pub messages: Vec<WireMessage>,
    /// Then drop the connection.
    pub disconnect: bool,
}

/// `wearcast_sim_faults_injected_total{fault, reason}`: what the gateway should have
/// seen, to compare with its counters.
fn count(fault: &'static str, reason: &'static str) {
    metrics::counter!("wearcast_sim_faults_injected_total", "fault" => fault, "reason" => reason)
        .increment(1);
}

/// One machine's fault injector.
pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: ChaCha8Rng,
    tenant: TenantId,
    machine: MachineId,
    /// A message held back by `reorder`, sent after the next one.
    held: Option<WireMessage>,
    next_malformed: usize,
    next_skew_ahead: bool,
    report: FaultReport,
}

impl FaultInjector {
    /// `None` when every fault is off, so a normal run pays nothing.
    pub(crate) fn new(
        config: &FaultConfig,
        seed: u64,
        tenant: TenantId,
        machine: MachineId,
    ) -> Option<Self> {
        if config.is_off() {
            return None;
        }
        Some(Self {
            config: config.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            tenant,
            machine,
            held: None,
            next_malformed: 0,
            next_skew_ahead: true,
            report: FaultReport::default(),
        })
    }

    pub(crate) fn report(&self) -> FaultReport {
        self.report
    }

    fn happens(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn topic(&self, tenant: &str, machine: &str, kind: &str) -> String {
        format!("wearcast/v1/{tenant}/{machine}/{kind}")
    }

    /// Shifts the timestamps of `samples` (one flush of a machine) if clock skew
    /// strikes.
    pub(crate) fn skew(&mut self, samples: &mut [Sample]) {
        if samples.is_empty() || !self.happens(self.config.clock_skew) {
            return;
        }
        let by = i64::try_from(self.config.clock_skew_by.as_millis()).unwrap_or(i64::MAX);
        let shift = if self.next_skew_ahead {
            self.report.skewed_ahead += 1;
            by
        } else {
            self.report.skewed_behind += 1;
            -by
        };
        self.next_skew_ahead = !self.next_skew_ahead;
        count("clock_skew", "");
        for s in samples {
            s.ts = s.ts.plus_ms(shift);
        }
    }

    /// Decides how one telemetry message (`payload`, encoding `samples`) goes out.
    pub(crate) fn telemetry(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        samples: &[Sample],
        now: UnixMs,
    ) -> Injected {
        let mut out = Injected::default();
        if self.happens(self.config.malformed) {
            let kind = MalformedKind::ALL[self.next_malformed % MalformedKind::ALL.len()];
            self.next_malformed += 1;
            self.report.malformed[kind.index()] += 1;
            count("malformed", kind.reason().label());
            out.messages.push(self.malformed(kind, now));
        }
        let mut these = if samples.len() > 1 && self.happens(self.config.burst) {
            self.report.bursts += 1;
            count("burst", "");
            samples
                .iter()
                .map(|s| WireMessage {
                    topic: topic.to_owned(),
                    payload: encode_samples(std::slice::from_ref(s)),
                })
                .collect()
        } else {
            vec![WireMessage {
                topic: topic.to_owned(),
                payload,
            }]
        };
        if self.happens(self.config.duplicate) {
            self.report.duplicated += 1;
            count("duplicate", "");
            let again = these.clone();
            these.extend(again);
        }
        if let Some(held) = self.held.take() {
            // The held-back message goes out after this one.
            these.push(held);
        } else if self.happens(self.config.reorder) {
            self.report.reordered += 1;
            count("reorder", "");
            self.held = these.pop();
        }
        out.messages.extend(these);
        if self.happens(self.config.disconnect) {
            self.report.disconnects += 1;
            count("disconnect", "");
            out.disconnect = true;
        }
        out
    }

    /// A message the gateway must reject for `kind`'s reason, exactly once.
    pub(crate) fn malformed(&self, kind: MalformedKind, now: UnixMs) -> WireMessage {
        let (tenant, machine) = (self.tenant.as_str(), self.machine.as_str());
        let telemetry = self.topic(tenant, machine, "telemetry");
        let sample = |ts: i64, readings: &str| format!(r#"{{"ts":{ts},"readings":{readings}}}"#);
        let good = sample(now.0, r#"{"fault.injected":1.0}"#);
        let (topic, payload) = match kind {
            MalformedKind::NotJson => (telemetry, "{\"ts\": 17, \"readings\": ".to_owned()),
            // Just over the gateway's default limit of 256 KiB, and valid otherwise.
            MalformedKind::TooLarge => {
                let pad = "x".repeat(TOO_LARGE_BYTES);
                (
                    telemetry,
                    format!(
                        r#"{{"ts":{},"readings":{{"fault.injected":1.0}},"pad":"{pad}"}}"#,
                        now.0
                    ),
                )
            }
            MalformedKind::BadTopic => (self.topic(tenant, machine, "telemetrics"), good),
            MalformedKind::UnknownMachine => (
                self.topic(tenant, &format!("{machine}-unregistered"), "telemetry"),
                good,
            ),
            MalformedKind::WrongTenant => (
                self.topic(&format!("{tenant}-other"), machine, "telemetry"),
                good,
            ),
            MalformedKind::MissingTs => {
                (telemetry, r#"{"readings":{"fault.injected":1.0}}"#.into())
            }
            MalformedKind::BadTs => (
                telemetry,
                r#"{"ts":"yesterday at noon","readings":{"fault.injected":1.0}}"#.into(),
            ),
            MalformedKind::TsFuture => (
                telemetry,
                sample(now.plus_ms(UnixMs::DAY).0, r#"{"fault.injected":1.0}"#),
            ),
            MalformedKind::TsPast => (
                telemetry,
                sample(
                    now.plus_ms(-400 * UnixMs::DAY).0,
                    r#"{"fault.injected":1.0}"#,
                ),
            ),
            MalformedKind::BadChannel => {
                (telemetry, sample(now.0, r#"{"Spindle Temperature!":1.0}"#))
            }
            MalformedKind::BadValue => (
                telemetry,
                sample(now.0, r#"{"fault.injected":"very high"}"#),
            ),
            MalformedKind::NoReadings => (telemetry, sample(now.0, "{}")),
            MalformedKind::TooMany => {
                let readings: Vec<String> =
                    (0..600).map(|i| format!(r#""fault.r{i}":1.0"#)).collect();
                (
                    telemetry,
                    sample(now.0, &format!("{{{}}}", readings.join(","))),
                )
            }
            MalformedKind::BadEvent => (
                self.topic(tenant, machine, "events"),
                r#"{"kind":"exploded","ts":"soon"}"#.into(),
            ),
        };
        WireMessage {
            topic,
            payload: payload.into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::telemetry::{TelemetryLimits, check_time, parse_telemetry};
    use wearcast_protocol::{Channel, Topic, TopicKind};

    const NOW: UnixMs = UnixMs(1_795_352_355_524);

    fn injector(config: FaultConfig) -> FaultInjector {
        FaultInjector::new(&config, 7, "acme".parse().unwrap(), "m-1".parse().unwrap())
            .expect("some fault is on")
    }

    fn samples(n: usize) -> Vec<Sample> {
        let channel = Channel::parse("spindle.vibration_rms").unwrap();
        (0..n)
            .map(|i| Sample {
                ts: NOW.plus_ms(i as i64 * 1000),
                seq: Some(i as u64 + 1),
                readings: vec![(channel.clone(), 1.0)],
            })
            .collect()
    }

    /// What a gateway with default limits, registry `acme/m-1`, does with a message:
    /// the reasons it rejects it for.
    fn rejections(m: &WireMessage) -> Vec<RejectReason> {
        let limits = TelemetryLimits::default();
        let topic = match Topic::parse(&m.topic) {
            Ok(t) => t,
            Err(_) => return vec![RejectReason::BadTopic],
        };
        if topic.machine.as_str() != "m-1" {
            return vec![RejectReason::UnknownMachine];
        }
        if topic.tenant.as_str() != "acme" {
            return vec![RejectReason::WrongTenant];
        }
        if topic.kind == TopicKind::Events {
            return match serde_json::from_slice::<wearcast_protocol::event::EventPayload>(
                &m.payload,
            ) {
                Ok(_) => vec![],
                Err(_) => vec![RejectReason::BadEvent],
            };
        }
        match parse_telemetry(&m.payload, &limits) {
            Err(r) => vec![r.reason],
            Ok(parsed) => {
                let mut out: Vec<_> = parsed.rejected.iter().map(|r| r.reason).collect();
                for s in &parsed.samples {
                    if let Err(r) = check_time(s.ts, NOW, &limits) {
                        out.push(r.reason);
                    }
                }
                out
            }
        }
    }

    #[test]
    fn every_fault_is_off_by_default_and_a_typo_in_the_section_is_an_error() {
        let config: FaultConfig = serde_json::from_str("{}").unwrap();
        assert!(config.is_off());
        assert!(
            FaultInjector::new(&config, 1, "a".parse().unwrap(), "m".parse().unwrap()).is_none()
        );
        let err = serde_json::from_str::<FaultConfig>(r#"{"duplicates": 0.1}"#).unwrap_err();
        assert!(err.to_string().contains("duplicates"), "{err}");
    }

    #[test]
    fn a_probability_outside_zero_to_one_or_skew_without_an_amount_is_refused_by_name() {
        let bad = FaultConfig {
            reorder: 1.5,
            ..FaultConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("faults.reorder")
        );
        let bad = FaultConfig {
            clock_skew: 0.1,
            ..FaultConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("faults.clock_skew_by")
        );
    }

    #[test]
    fn each_malformed_kind_is_rejected_for_its_own_reason_exactly_once() {
        let f = injector(FaultConfig {
            malformed: 1.0,
            ..FaultConfig::default()
        });
        for kind in MalformedKind::ALL {
            let m = f.malformed(kind, NOW);
            assert!(m.payload.len() <= MAX_INJECTED_BYTES, "{kind:?}");
            assert_eq!(rejections(&m), vec![kind.reason()], "{kind:?}: {m:?}");
        }
        // Every reason a malformed message can cause is covered (`bad_window` is the
        // server's; `rate_limited` comes from too many messages, not a bad one).
        let covered: Vec<_> = MalformedKind::ALL.iter().map(|k| k.reason()).collect();
        for reason in RejectReason::ALL {
            assert!(
                covered.contains(&reason)
                    || matches!(reason, RejectReason::BadWindow | RejectReason::RateLimited),
                "{reason:?} has no malformed kind"
            );
        }
    }

    #[test]
    fn malformed_messages_come_on_top_of_the_real_one_and_take_turns_by_kind() {
        let mut f = injector(FaultConfig {
            malformed: 1.0,
            ..FaultConfig::default()
        });
        let s = samples(3);
        for _ in 0..2 * MalformedKind::ALL.len() {
            let out = f.telemetry("t", encode_samples(&s), &s, NOW);
            assert_eq!(out.messages.len(), 2);
            assert_eq!(out.messages[1].payload, encode_samples(&s));
        }
        let report = f.report();
        assert!(MalformedKind::ALL.iter().all(|k| report.malformed(*k) == 2));
        assert_eq!(report.malformed_total(), 28);
    }

    #[test]
    fn duplicates_bursts_and_reordering_change_the_order_but_keep_every_sample() {
        let mut f = injector(FaultConfig {
            duplicate: 0.3,
            reorder: 0.3,
            burst: 0.3,
            ..FaultConfig::default()
        });
        let limits = TelemetryLimits::default();
        let all = samples(400);
        let mut seen = Vec::new();
        for chunk in all.chunks(4) {
            for m in f.telemetry("t", encode_samples(chunk), chunk, NOW).messages {
                let parsed = parse_telemetry(&m.payload, &limits).unwrap();
                seen.extend(parsed.samples.iter().filter_map(|s| s.seq));
            }
        }
        if let Some(m) = f.held.take() {
            let parsed = parse_telemetry(&m.payload, &limits).unwrap();
            seen.extend(parsed.samples.iter().filter_map(|s| s.seq));
        }
        let report = f.report();
        assert!(
            report.duplicated > 5 && report.reordered > 5 && report.bursts > 5,
            "{report:?}"
        );
        assert!(
            seen.windows(2).any(|w| w[1] < w[0]),
            "nothing arrived out of order"
        );
        assert!(seen.len() > all.len(), "no duplicates on the wire");
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique,
            (1..=400).collect::<Vec<u64>>(),
            "a sample went missing"
        );
    }

    #[test]
    fn clock_skew_shifts_whole_messages_ahead_and_behind_in_turns() {
        let mut f = injector(FaultConfig {
            clock_skew: 1.0,
            clock_skew_by: Duration::from_secs(3600),
            ..FaultConfig::default()
        });
        let mut a = samples(2);
        f.skew(&mut a);
        assert_eq!(a[0].ts, NOW.plus_ms(UnixMs::HOUR));
        let mut b = samples(2);
        f.skew(&mut b);
        assert_eq!(b[1].ts, NOW.plus_ms(1000 - UnixMs::HOUR));
        assert_eq!((f.report().skewed_ahead, f.report().skewed_behind), (1, 1));
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let config = FaultConfig {
            duplicate: 0.5,
            disconnect: 0.2,
            ..FaultConfig::default()
        };
        let run = || {
            let mut f = injector(config.clone());
            let s = samples(2);
            (0..50)
                .map(|_| {
                    let out = f.telemetry("t", encode_samples(&s), &s, NOW);
                    (out.messages.len(), out.disconnect)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
