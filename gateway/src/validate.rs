//! The message pipeline: one MQTT message in; accepted samples, events and status
//! changes into the spool; every rejection counted and logged.
//!
//! Order of checks: topic → registry → payload → per-sample time → (in the spool) seq
//! de-duplication → aggregation. Nothing here panics or gives up on bad input; nothing
//! here does network I/O (the registry is a cached view), so the ingest task can call it
//! inline.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use tracing::{debug, info, warn};
use wearcast_protocol::event::{EventPayload, StatusMessage, StatusUpdate};
use wearcast_protocol::reject::{RejectUnit, Rejection};
use wearcast_protocol::telemetry::{TelemetryLimits, check_time, parse_telemetry};
use wearcast_protocol::{MachineEvent, RejectReason, Topic, TopicKind, UnixMs};

use crate::deadletter::RejectLog;
use crate::registry::{RegistryHandle, RegistryVerdict};
use crate::spool::DurableSpool;
use crate::stats::{HotMetrics, KIND_INVALID, Totals};
use crate::window::MachineKey;

/// What one message produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub samples_accepted: u64,
    pub duplicates: u64,
    pub rejections: u64,
}

/// One MQTT message as the pipeline sees it.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// The broker marked it as a redelivery (MQTT DUP flag).
    pub redelivered: bool,
}

/// Validation of the gateway's input. Stateless but for the registry view and the
/// counters: all state that must survive a crash lives in the spool.
#[derive(Debug)]
pub struct Pipeline {
    limits: TelemetryLimits,
    registry: RegistryHandle,
    rejects: RejectLog,
    totals: Arc<Totals>,
    metrics: HotMetrics,
    /// Provisional acceptance is announced once, not per message.
    warned_provisional: bool,
    /// Each machine's message budget (`device_messages_per_second`), if any.
    device_budget: Option<DefaultKeyedRateLimiter<MachineKey>>,
}

impl Pipeline {
    pub(crate) fn new(
        limits: TelemetryLimits,
        registry: RegistryHandle,
        rejects: RejectLog,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            limits,
            registry,
            rejects,
            totals,
            metrics: HotMetrics::register(),
            warned_provisional: false,
            device_budget: None,
        }
    }

    /// Gives every machine a budget of `per_second` messages sustained, `burst` at once;
    /// beyond it a message is rejected as `rate_limited` (and acknowledged, like any
    /// rejection: a flooding device must not hold up the shared subscription).
    pub(crate) fn set_device_budget(&mut self, per_second: NonZeroU32, burst: NonZeroU32) {
        self.device_budget = Some(RateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ));
    }

    fn over_budget(&self, key: &MachineKey) -> Option<Rejection> {
        let budget = self.device_budget.as_ref()?;
        if budget.check_key(key).is_ok() {
            return None;
        }
        if budget.len() > 100_000 {
            budget.retain_recent();
        }
        Some(Rejection::new(
            RejectReason::RateLimited,
            RejectUnit::Message,
            format!(
                "machine `{}` sent more messages than its budget (device_messages_per_second)",
                key.machine
            ),
        ))
    }

    /// Handles one message completely; once the spool has made what it appended
    /// durable, the message may be acknowledged.
    pub fn handle(
        &mut self,
        message: Message<'_>,
        now: UnixMs,
        spool: &mut DurableSpool,
    ) -> Handled {
        let Message { topic, payload, .. } = message;
        Totals::add(&self.totals.messages, 1);
        let mut out = Handled::default();
        let parsed = match Topic::parse(topic) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.metrics.received(KIND_INVALID).increment(1);
                let r = Rejection::new(RejectReason::BadTopic, RejectUnit::Message, e.to_string());
                self.reject(&mut out, topic, payload, now, &r);
                return out;
            }
        };
        self.metrics.received(parsed.kind.as_str()).increment(1);
        if let Some(r) = self.check_registry(&parsed) {
            self.reject(&mut out, topic, payload, now, &r);
            return out;
        }
        let key = MachineKey {
            tenant: parsed.tenant,
            machine: parsed.machine,
        };
        if let Some(r) = self.over_budget(&key) {
            self.reject(&mut out, topic, payload, now, &r);
            return out;
        }
        let result = match parsed.kind {
            TopicKind::Telemetry => {
                self.telemetry(&key, message, now, spool, &mut out);
                Ok(())
            }
            TopicKind::Events => self.event(key, payload, now, spool),
            TopicKind::Status => self.status(key, payload, now, spool),
        };
        if let Err(r) = result {
            self.reject(&mut out, topic, payload, now, &r);
        }
        out
    }

    fn check_registry(&mut self, topic: &Topic) -> Option<Rejection> {
        let (tenant, machine) = (&topic.tenant, &topic.machine);
        let (reason, detail) = match self.registry.check(tenant, machine) {
            RegistryVerdict::Known => return None,
            RegistryVerdict::Provisional => {
                if !self.warned_provisional {
                    warn!(%machine, %tenant, "machine registry not loaded yet; accepting messages provisionally (the server validates them again)");
                    self.warned_provisional = true;
                }
                return None;
            }
            RegistryVerdict::UnknownMachine => {
                // It may have been registered since the last reload.
                self.registry.request_refresh();
                (
                    RejectReason::UnknownMachine,
                    format!("machine `{machine}` is not registered"),
                )
            }
            RegistryVerdict::WrongTenant { registered } => (
                RejectReason::WrongTenant,
                format!(
                    "machine `{machine}` belongs to tenant `{registered}`, not `{tenant}` as the topic says"
                ),
            ),
        };
        Some(Rejection::new(reason, RejectUnit::Message, detail))
    }

    fn too_large(&self, payload: &[u8]) -> Result<(), Rejection> {
        if payload.len() > self.limits.max_payload_bytes {
            Err(Rejection::new(
                RejectReason::TooLarge,
                RejectUnit::Message,
                format!(
                    "payload is {} bytes; the limit is {}",
                    payload.len(),
                    self.limits.max_payload_bytes
                ),
            ))
        } else {
            Ok(())
        }
    }

    fn telemetry(
        &mut self,
        key: &MachineKey,
        message: Message<'_>,
        now: UnixMs,
        spool: &mut DurableSpool,
        out: &mut Handled,
    ) {
        let Message {
            topic,
            payload,
            redelivered,
        } = message;
        let parsed = match parse_telemetry(payload, &self.limits) {
            Ok(parsed) => parsed,
            Err(r) => return self.reject(out, topic, payload, now, &r),
        };
        for r in &parsed.rejected {
            self.reject(out, topic, payload, now, r);
        }
        let mut timely = Vec::with_capacity(parsed.samples.len());
        for sample in parsed.samples {
            match check_time(sample.ts, now, &self.limits) {
                Ok(()) => timely.push(sample),
                Err(r) => self.reject(out, topic, payload, now, &r),
            }
        }
        let without_seq = timely.iter().filter(|s| s.seq.is_none()).count() as u64;
        if timely.is_empty() {
            return;
        }
        let accepted = spool.accept_samples(key, timely, now);
        if accepted.duplicates > 0 {
            self.metrics.duplicates.increment(accepted.duplicates);
            debug!(machine = %key.machine, duplicates = accepted.duplicates, "duplicate samples dropped");
        }
        if accepted.restarts > 0 {
            self.metrics.seq_resets.increment(accepted.restarts);
            info!(machine = %key.machine, "device seq counter restarted; de-duplication state reset");
        }
        if without_seq > 0 {
            // Devices SHOULD send seq: without it a redelivery is counted again.
            self.metrics.samples_without_seq.increment(without_seq);
            Totals::add(&self.totals.samples_without_seq, without_seq);
            if redelivered {
                self.metrics.redelivered_without_seq.increment(without_seq);
            }
        }
        self.metrics.late_samples.increment(accepted.late);
        self.metrics.samples_accepted.increment(accepted.accepted);
        out.samples_accepted += accepted.accepted;
        out.duplicates += accepted.duplicates;
        Totals::add(&self.totals.samples_accepted, accepted.accepted);
        Totals::add(&self.totals.duplicates, accepted.duplicates);
    }

    fn event(
        &mut self,
        key: MachineKey,
        payload: &[u8],
        now: UnixMs,
        spool: &mut DurableSpool,
    ) -> Result<(), Rejection> {
        self.too_large(payload)?;
        let event = EventPayload::parse(payload)?;
        check_time(event.ts, now, &self.limits).map_err(as_message)?;
        spool.accept_event(MachineEvent {
            tenant: key.tenant,
            machine: key.machine,
            event,
        });
        Ok(())
    }

    fn status(
        &mut self,
        key: MachineKey,
        payload: &[u8],
        now: UnixMs,
        spool: &mut DurableSpool,
    ) -> Result<(), Rejection> {
        self.too_large(payload)?;
        let status = StatusMessage::parse(payload)?;
        if let Some(ts) = status.ts {
            check_time(ts, now, &self.limits).map_err(as_message)?;
        }
        spool.accept_status(StatusUpdate {
            tenant: key.tenant,
            machine: key.machine,
            state: status.state,
            // A last will has no ts: the broker sends it when the loss is noticed.
            at: status.ts.unwrap_or(now),
        });
        Ok(())
    }

    fn reject(
        &mut self,
        out: &mut Handled,
        topic: &str,
        payload: &[u8],
        now: UnixMs,
        r: &Rejection,
    ) {
        out.rejections += 1;
        Totals::add(&self.totals.rejected, 1);
        self.metrics.rejected(r.reason, r.unit).increment(1);
        debug!(topic, reason = r.reason.label(), unit = r.unit.label(), detail = %r.detail, "input rejected");
        self.rejects.record(now, topic, r, payload);
    }

    /// Pushes buffered rejection log lines out (called on every sweep).
    pub fn flush_rejects(&mut self) {
        self.rejects.flush();
    }
}

/// A time check of an event or status loses the whole message.
fn as_message(r: Rejection) -> Rejection {
    Rejection {
        unit: RejectUnit::Message,
        ..r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::event::MachineState;
    use wearcast_protocol::{IngestBatch, MachineId, TenantId};

    use crate::config::OverflowPolicy;
    use crate::registry::MachineDirectory;
    use crate::spool::{SendOutcome, SpoolSettings, outbox};
    use crate::stats::MemoryRecorder;
    use crate::window::VibrationChannels;

    const NOW: UnixMs = UnixMs(1_800_000_000_000);
    const TOPIC: &str = "wearcast/v1/acme/m1/telemetry";

    struct Fixture {
        dir: tempfile::TempDir,
        pipeline: Pipeline,
        spool: DurableSpool,
        totals: Arc<Totals>,
    }

    fn fixture_with(registry: RegistryHandle, limits: TelemetryLimits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let totals = Arc::new(Totals::default());
        let settings = SpoolSettings {
            dir: dir.path().join("spool"),
            gateway: wearcast_protocol::GatewayId::parse("gw").unwrap(),
            segment_bytes: 1 << 20,
            max_bytes: 8 << 20,
            overflow: OverflowPolicy::Block,
            batch_max_windows: 100,
            window_ms: 60_000,
            lateness_ms: 10_000,
            vibration: VibrationChannels::default(),
        };
        let (spool, _) = DurableSpool::open(settings, totals.clone(), NOW).unwrap();
        let pipeline = Pipeline::new(
            limits,
            registry,
            RejectLog::open(dir.path(), 1 << 20).unwrap(),
            totals.clone(),
        );
        Fixture {
            dir,
            pipeline,
            spool,
            totals,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(registry(), TelemetryLimits::default())
    }

    impl Fixture {
        fn handle(&mut self, topic: &str, payload: &[u8]) -> Handled {
            self.handle_at(topic, payload, NOW, false)
        }

        fn handle_at(&mut self, topic: &str, payload: &[u8], now: UnixMs, dup: bool) -> Handled {
            let message = Message {
                topic,
                payload,
                redelivered: dup,
            };
            self.pipeline.handle(message, now, &mut self.spool)
        }

        /// Closes everything and returns the batches the spool would send.
        fn batches(&mut self) -> Vec<IngestBatch> {
            self.spool.close_all(NOW);
            self.spool.sync_blocking().unwrap();
            let outbox = self.spool.outbox();
            let mut out = Vec::new();
            loop {
                let (next, reader) = {
                    let mut o = outbox::lock(&outbox);
                    (o.start_sending(), o.reader())
                };
                let Some(b) = next else { break };
                out.push(serde_json::from_slice(&reader.read(&b).unwrap().unwrap()).unwrap());
                outbox::lock(&outbox).finish_sending(b.lsn, SendOutcome::Done);
            }
            out
        }

        fn rejected_reasons(&mut self) -> Vec<String> {
            self.pipeline.flush_rejects();
            std::fs::read_to_string(self.dir.path().join("rejected.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string()
                })
                .collect()
        }
    }

    fn registry() -> RegistryHandle {
        RegistryHandle::fixed(Some(Arc::new(MachineDirectory::from_pairs([(
            MachineId::parse("m1").unwrap(),
            TenantId::parse("acme").unwrap(),
        )]))))
    }

    fn telemetry(seq: u64, ts: UnixMs, value: f64) -> Vec<u8> {
        format!(
            r#"{{"ts":{},"seq":{seq},"readings":{{"a.x":{value}}}}}"#,
            ts.0
        )
        .into_bytes()
    }

    #[test]
    fn telemetry_from_a_known_machine_is_aggregated_and_duplicates_are_dropped() {
        let mut f = fixture();
        for (seq, value) in [(1, 1.0), (3, 3.0), (2, 2.0)] {
            let h = f.handle(TOPIC, &telemetry(seq, NOW.plus_ms(seq as i64), value));
            assert_eq!(h.samples_accepted, 1);
        }
        let dup = f.handle(TOPIC, &telemetry(2, NOW.plus_ms(2), 2.0));
        assert_eq!((dup.samples_accepted, dup.duplicates), (0, 1));

        let batches = f.batches();
        let windows: Vec<_> = batches.iter().flat_map(|b| &b.windows).collect();
        let [w] = windows.as_slice() else {
            panic!("{windows:?}")
        };
        assert_eq!((w.count, w.mean, w.last), (3, 2.0, 3.0));
        assert_eq!(Totals::get(&f.totals.duplicates), 1);
    }

    #[test]
    fn messages_from_unknown_machines_and_wrong_tenants_are_rejected() {
        let mut f = fixture();
        let sample = telemetry(1, NOW, 1.0);
        let h = f.handle("wearcast/v1/acme/m9/telemetry", &sample);
        assert_eq!((h.samples_accepted, h.rejections), (0, 1));
        let h = f.handle("wearcast/v1/globex/m1/telemetry", &sample);
        assert_eq!(h.rejections, 1);
        let h = f.handle("wearcast/v1/acme/m1/status", br#"{"state":"online"}"#);
        assert_eq!(h.rejections, 0);
        assert_eq!(
            f.rejected_reasons(),
            ["\"unknown_machine\"", "\"wrong_tenant\""]
        );
    }

    #[test]
    fn before_the_registry_loads_any_machine_is_accepted_provisionally() {
        let mut f = fixture_with(RegistryHandle::fixed(None), TelemetryLimits::default());
        let h = f.handle("wearcast/v1/anyone/m9/telemetry", &telemetry(1, NOW, 1.0));
        assert_eq!(h.samples_accepted, 1);
    }

    #[test]
    fn bad_topics_payloads_and_timestamps_are_rejected_with_their_reason() {
        let mut f = fixture();
        f.handle("wearcast/v1/acme/m1/logs", b"{}");
        f.handle(TOPIC, b"{not json");
        let year = 365 * UnixMs::DAY;
        f.handle(TOPIC, &telemetry(1, NOW.plus_ms(year), 1.0));
        f.handle(TOPIC, &telemetry(2, UnixMs(NOW.0 - 40 * UnixMs::DAY), 1.0));
        f.handle("wearcast/v1/acme/m1/events", br#"{"ts":1,"kind":"fault"}"#);
        f.handle("wearcast/v1/acme/m1/status", b"offline");
        let h = f.handle(
            TOPIC,
            br#"{"ts":1800000000000,"readings":{"a.x":1,"bad":2}}"#,
        );
        assert_eq!((h.samples_accepted, h.rejections), (1, 1));
        assert_eq!(
            f.rejected_reasons(),
            [
                "\"bad_topic\"",
                "\"malformed\"",
                "\"ts_future\"",
                "\"ts_past\"",
                "\"bad_event\"",
                "\"bad_event\"",
                "\"bad_channel\""
            ]
        );
        assert_eq!(Totals::get(&f.totals.rejected), 7);
        assert_eq!(Totals::get(&f.totals.messages), 7);
    }

    #[test]
    fn a_machine_over_its_budget_is_rejected_and_counted_while_others_go_on() {
        let two = RegistryHandle::fixed(Some(Arc::new(MachineDirectory::from_pairs(
            ["m1", "m2"].map(|m| {
                (
                    MachineId::parse(m).unwrap(),
                    TenantId::parse("acme").unwrap(),
                )
            }),
        ))));
        let mut f = fixture_with(two, TelemetryLimits::default());
        let (one, three) = (NonZeroU32::MIN, NonZeroU32::new(3).unwrap());
        f.pipeline.set_device_budget(one, three);
        let accepted: Vec<u64> = (1..=5)
            .map(|seq| f.handle(TOPIC, &telemetry(seq, NOW, 1.0)).samples_accepted)
            .collect();
        assert_eq!(accepted, [1, 1, 1, 0, 0], "a burst of 3, then refused");
        assert_eq!(
            f.rejected_reasons(),
            ["\"rate_limited\"", "\"rate_limited\""]
        );
        assert_eq!(Totals::get(&f.totals.rejected), 2);
        let other = f.handle("wearcast/v1/acme/m2/telemetry", &telemetry(1, NOW, 1.0));
        assert_eq!(
            other.samples_accepted, 1,
            "another machine has its own budget"
        );
    }

    #[test]
    fn events_and_statuses_go_into_the_next_batch() {
        let mut f = fixture();
        let event = format!(r#"{{"ts":{},"kind":"fault","code":"E7"}}"#, NOW.0);
        f.handle("wearcast/v1/acme/m1/events", event.as_bytes());
        // A last will carries no ts: the gateway's clock stamps it.
        f.handle("wearcast/v1/acme/m1/status", br#"{"state":"offline"}"#);
        assert_eq!(f.spool.pending_items(), 2);
        let batches = f.batches();
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert_eq!(batches[0].events[0].event.code.as_deref(), Some("E7"));
        let s = &batches[0].statuses[0];
        assert_eq!((s.state, s.at), (MachineState::Offline, NOW));
        assert_eq!(f.spool.pending_items(), 0);
    }

    #[test]
    fn samples_without_seq_are_accepted_every_time_and_counted() {
        let mut f = fixture();
        let payload = format!(r#"{{"ts":{},"readings":{{"a.x":1}}}}"#, NOW.0);
        assert_eq!(f.handle(TOPIC, payload.as_bytes()).samples_accepted, 1);
        // A broker redelivery of the same message cannot be recognised.
        let again = f.handle_at(TOPIC, payload.as_bytes(), NOW, true);
        assert_eq!(again.samples_accepted, 1);
        assert_eq!(Totals::get(&f.totals.samples_without_seq), 2);
    }

    /// One input per rejection reason the gateway can meet.
    fn inputs_for_every_reason() -> Vec<(RejectReason, &'static str, String)> {
        let ok_ts = NOW.0;
        vec![
            (
                RejectReason::TooLarge,
                TOPIC,
                format!(
                    "{{\"ts\":{ok_ts},\"readings\":{{\"a.x\":1}},\"pad\":\"{}\"}}",
                    "x".repeat(300)
                ),
            ),
            (RejectReason::Malformed, TOPIC, "[1,2".into()),
            (RejectReason::BadTopic, "not/a/wearcast/topic", "{}".into()),
            (
                RejectReason::UnknownMachine,
                "wearcast/v1/acme/m404/telemetry",
                "{}".into(),
            ),
            (
                RejectReason::WrongTenant,
                "wearcast/v1/globex/m1/telemetry",
                "{}".into(),
            ),
            (
                RejectReason::MissingTs,
                TOPIC,
                r#"{"readings":{"a.x":1}}"#.into(),
            ),
            (
                RejectReason::BadTs,
                TOPIC,
                r#"{"ts":"noon","readings":{"a.x":1}}"#.into(),
            ),
            (
                RejectReason::TsFuture,
                TOPIC,
                format!(
                    "{{\"ts\":{},\"readings\":{{\"a.x\":1}}}}",
                    ok_ts + 86_400_000
                ),
            ),
            (
                RejectReason::TsPast,
                TOPIC,
                r#"{"ts":1000,"readings":{"a.x":1}}"#.into(),
            ),
            (
                RejectReason::BadChannel,
                TOPIC,
                format!("{{\"ts\":{ok_ts},\"readings\":{{\"nodot\":1,\"a.x\":1}}}}"),
            ),
            (
                RejectReason::BadValue,
                TOPIC,
                format!("{{\"ts\":{ok_ts},\"readings\":{{\"a.x\":\"hot\",\"a.y\":1}}}}"),
            ),
            (
                RejectReason::NoReadings,
                TOPIC,
                format!("{{\"ts\":{ok_ts},\"readings\":{{}}}}"),
            ),
            (
                RejectReason::TooMany,
                TOPIC,
                format!(
                    "{{\"samples\":[{0},{0},{0},{0}]}}",
                    format!("{{\"ts\":{ok_ts},\"readings\":{{\"a.x\":1}}}}")
                ),
            ),
            (
                RejectReason::BadEvent,
                "wearcast/v1/acme/m1/events",
                r#"{"ts":1,"kind":"explosion"}"#.into(),
            ),
        ]
    }

    #[test]
    fn every_rejection_reason_shows_up_in_the_metrics_under_its_label() {
        let recorder = MemoryRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let limits = TelemetryLimits {
                max_payload_bytes: 256,
                max_samples: 3,
                ..TelemetryLimits::default()
            };
            let mut f = fixture_with(registry(), limits);
            for (reason, topic, payload) in inputs_for_every_reason() {
                let before: u64 = recorder
                    .snapshot()
                    .iter()
                    .filter(|(k, _)| k.contains(&format!("reason=\"{}\"", reason.label())))
                    .map(|(_, v)| *v as u64)
                    .sum();
                let h = f.handle(topic, payload.as_bytes());
                assert!(h.rejections >= 1, "{reason:?} not rejected");
                let after: u64 = recorder
                    .snapshot()
                    .iter()
                    .filter(|(k, _)| {
                        k.starts_with(crate::stats::names::REJECTED)
                            && k.contains(&format!("reason=\"{}\"", reason.label()))
                    })
                    .map(|(_, v)| *v as u64)
                    .sum();
                assert_eq!(after, before + 1, "{reason:?}: {:?}", recorder.snapshot());
            }
        });
    }
}
