//! The message pipeline: one MQTT message in, accepted samples into windows (and events
//! and status changes into the pending list), every rejection counted and logged.
//!
//! Order of checks: topic → registry → payload → per-sample time → seq de-duplication →
//! aggregation. Nothing here panics or gives up on bad input; nothing here does network
//! I/O (the registry is a cached view), so the MQTT side can call it inline.

use std::sync::Arc;

use metrics::{counter, gauge};
use tracing::{debug, info, warn};
use wearcast_protocol::event::{EventPayload, StatusMessage, StatusUpdate};
use wearcast_protocol::reject::{RejectUnit, Rejection};
use wearcast_protocol::telemetry::{TelemetryLimits, check_time, parse_telemetry};
use wearcast_protocol::{MachineEvent, RejectReason, Topic, TopicKind, UnixMs};

use crate::deadletter::RejectLog;
use crate::dedup::{Deduplicator, SeqVerdict};
use crate::registry::{RegistryHandle, RegistryVerdict};
use crate::spool::SpoolItem;
use crate::stats::{KIND_INVALID, Totals, names};
use crate::window::{Aggregator, MachineKey};

/// What one message produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub samples_accepted: u64,
    pub duplicates: u64,
    pub rejections: u64,
}

/// Validation, de-duplication and aggregation state of the gateway.
#[derive(Debug)]
pub struct Pipeline {
    limits: TelemetryLimits,
    registry: RegistryHandle,
    dedup: Deduplicator,
    windows: Aggregator,
    /// Events and status changes waiting for the next sweep.
    pending: Vec<SpoolItem>,
    rejects: RejectLog,
    totals: Arc<Totals>,
    /// Provisional acceptance is announced once, not per message.
    warned_provisional: bool,
}

impl Pipeline {
    pub(crate) fn new(
        limits: TelemetryLimits,
        window_ms: i64,
        lateness_ms: i64,
        registry: RegistryHandle,
        rejects: RejectLog,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            limits,
            registry,
            dedup: Deduplicator::new(),
            windows: Aggregator::new(window_ms, lateness_ms),
            pending: Vec::new(),
            rejects,
            totals,
            warned_provisional: false,
        }
    }

    /// Handles one message completely; afterwards it may be acknowledged.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: UnixMs) -> Handled {
        Totals::add(&self.totals.messages, 1);
        let mut out = Handled::default();
        let parsed = match Topic::parse(topic) {
            Ok(parsed) => parsed,
            Err(e) => {
                counter!(names::MESSAGES_RECEIVED, "kind" => KIND_INVALID).increment(1);
                let r = Rejection::new(RejectReason::BadTopic, RejectUnit::Message, e.to_string());
                self.reject(&mut out, topic, payload, now, &r);
                return out;
            }
        };
        counter!(names::MESSAGES_RECEIVED, "kind" => parsed.kind.as_str()).increment(1);
        if let Some(r) = self.check_registry(&parsed) {
            self.reject(&mut out, topic, payload, now, &r);
            return out;
        }
        let key = MachineKey {
            tenant: parsed.tenant,
            machine: parsed.machine,
        };
        let result = match parsed.kind {
            TopicKind::Telemetry => {
                self.telemetry(&key, topic, payload, now, &mut out);
                Ok(())
            }
            TopicKind::Events => self.event(key, payload, now),
            TopicKind::Status => self.status(key, payload, now),
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
        topic: &str,
        payload: &[u8],
        now: UnixMs,
        out: &mut Handled,
    ) {
        let parsed = match parse_telemetry(payload, &self.limits) {
            Ok(parsed) => parsed,
            Err(r) => return self.reject(out, topic, payload, now, &r),
        };
        for r in &parsed.rejected {
            self.reject(out, topic, payload, now, r);
        }
        for sample in parsed.samples {
            if let Err(r) = check_time(sample.ts, now, &self.limits) {
                self.reject(out, topic, payload, now, &r);
                continue;
            }
            match self.dedup.check(key, sample.seq) {
                SeqVerdict::New => {}
                SeqVerdict::Duplicate => {
                    out.duplicates += 1;
                    counter!(names::DUPLICATES).increment(1);
                    debug!(machine = %key.machine, seq = sample.seq, "duplicate sample dropped");
                    continue;
                }
                SeqVerdict::Restart => {
                    counter!(names::SEQ_RESETS).increment(1);
                    info!(machine = %key.machine, seq = sample.seq, "device seq counter restarted; de-duplication state reset");
                }
                SeqVerdict::Unchecked => {
                    debug!(machine = %key.machine, seq = sample.seq, "seq older than the de-duplication range; kept unchecked");
                }
            }
            if self.windows.add(key, sample, now).late {
                counter!(names::LATE_SAMPLES).increment(1);
            }
            out.samples_accepted += 1;
        }
        counter!(names::SAMPLES_ACCEPTED).increment(out.samples_accepted);
        Totals::add(&self.totals.samples_accepted, out.samples_accepted);
        Totals::add(&self.totals.duplicates, out.duplicates);
    }

    fn event(&mut self, key: MachineKey, payload: &[u8], now: UnixMs) -> Result<(), Rejection> {
        self.too_large(payload)?;
        let event = EventPayload::parse(payload)?;
        check_time(event.ts, now, &self.limits).map_err(as_message)?;
        self.pending.push(SpoolItem::Event(MachineEvent {
            tenant: key.tenant,
            machine: key.machine,
            event,
        }));
        Ok(())
    }

    fn status(&mut self, key: MachineKey, payload: &[u8], now: UnixMs) -> Result<(), Rejection> {
        self.too_large(payload)?;
        let status = StatusMessage::parse(payload)?;
        if let Some(ts) = status.ts {
            check_time(ts, now, &self.limits).map_err(as_message)?;
        }
        self.pending.push(SpoolItem::Status(StatusUpdate {
            tenant: key.tenant,
            machine: key.machine,
            state: status.state,
            // A last will has no ts: the broker sends it when the loss is noticed.
            at: status.ts.unwrap_or(now),
        }));
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
        counter!(names::REJECTED, "reason" => r.reason.label(), "unit" => r.unit.label())
            .increment(1);
        debug!(topic, reason = r.reason.label(), unit = r.unit.label(), detail = %r.detail, "input rejected");
        self.rejects.record(now, topic, r, payload);
    }

    /// Closed windows plus pending events and statuses, for the spool.
    pub fn sweep(&mut self, now: UnixMs) -> Vec<SpoolItem> {
        let closed = self.windows.close_due(now);
        self.collect(closed)
    }

    /// Everything, open windows included (at shutdown).
    pub fn close_all(&mut self) -> Vec<SpoolItem> {
        let closed = self.windows.close_all();
        self.collect(closed)
    }

    fn collect(&mut self, closed: Vec<wearcast_protocol::WindowAggregate>) -> Vec<SpoolItem> {
        counter!(names::WINDOWS_EMITTED).increment(closed.len() as u64);
        gauge!(names::OPEN_WINDOWS).set(self.windows.open_windows() as f64);
        self.rejects.flush();
        let mut items: Vec<SpoolItem> = closed.into_iter().map(SpoolItem::Window).collect();
        items.append(&mut self.pending);
        items
    }

    pub fn open_windows(&self) -> usize {
        self.windows.open_windows()
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
    use std::path::Path;
    use wearcast_protocol::event::MachineState;
    use wearcast_protocol::{MachineId, TenantId};

    use crate::registry::MachineDirectory;

    const NOW: UnixMs = UnixMs(1_800_000_000_000);

    fn pipeline(dir: &Path, registry: RegistryHandle) -> Pipeline {
        Pipeline::new(
            TelemetryLimits::default(),
            60_000,
            10_000,
            registry,
            RejectLog::open(dir, 1 << 20).unwrap(),
            Arc::new(Totals::default()),
        )
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

    fn rejected_reasons(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("rejected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string())
            .collect()
    }

    #[test]
    fn telemetry_from_a_known_machine_is_aggregated_and_duplicates_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), registry());
        let topic = "wearcast/v1/acme/m1/telemetry";
        for (seq, value) in [(1, 1.0), (3, 3.0), (2, 2.0)] {
            let h = p.handle(topic, &telemetry(seq, NOW.plus_ms(seq as i64), value), NOW);
            assert_eq!(h.samples_accepted, 1);
        }
        let dup = p.handle(topic, &telemetry(2, NOW.plus_ms(2), 2.0), NOW);
        assert_eq!((dup.samples_accepted, dup.duplicates), (0, 1));

        let items = p.sweep(NOW.plus_ms(200_000));
        let [SpoolItem::Window(w)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!((w.count, w.mean, w.last), (3, 2.0, 3.0));
    }

    #[test]
    fn messages_from_unknown_machines_and_wrong_tenants_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), registry());
        let sample = telemetry(1, NOW, 1.0);
        let h = p.handle("wearcast/v1/acme/m9/telemetry", &sample, NOW);
        assert_eq!((h.samples_accepted, h.rejections), (0, 1));
        let h = p.handle("wearcast/v1/globex/m1/telemetry", &sample, NOW);
        assert_eq!(h.rejections, 1);
        let h = p.handle("wearcast/v1/acme/m1/status", br#"{"state":"online"}"#, NOW);
        assert_eq!(h.rejections, 0);
        p.sweep(NOW);
        assert_eq!(
            rejected_reasons(dir.path()),
            ["\"unknown_machine\"", "\"wrong_tenant\""]
        );
    }

    #[test]
    fn before_the_registry_loads_any_machine_is_accepted_provisionally() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), RegistryHandle::fixed(None));
        let h = p.handle(
            "wearcast/v1/anyone/m9/telemetry",
            &telemetry(1, NOW, 1.0),
            NOW,
        );
        assert_eq!(h.samples_accepted, 1);
    }

    #[test]
    fn bad_topics_payloads_and_timestamps_are_rejected_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), registry());
        let topic = "wearcast/v1/acme/m1/telemetry";
        p.handle("wearcast/v1/acme/m1/logs", b"{}", NOW);
        p.handle(topic, b"{not json", NOW);
        let year = 365 * UnixMs::DAY;
        p.handle(topic, &telemetry(1, NOW.plus_ms(year), 1.0), NOW);
        p.handle(
            topic,
            &telemetry(2, UnixMs(NOW.0 - 40 * UnixMs::DAY), 1.0),
            NOW,
        );
        p.handle(
            "wearcast/v1/acme/m1/events",
            br#"{"ts":1,"kind":"fault"}"#,
            NOW,
        );
        p.handle("wearcast/v1/acme/m1/status", b"offline", NOW);
        let h = p.handle(
            topic,
            br#"{"ts":1800000000000,"readings":{"a.x":1,"bad":2}}"#,
            NOW,
        );
        assert_eq!((h.samples_accepted, h.rejections), (1, 1));
        p.sweep(NOW);
        assert_eq!(
            rejected_reasons(dir.path()),
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
        assert_eq!(Totals::get(&p.totals.rejected), 7);
        assert_eq!(Totals::get(&p.totals.messages), 7);
    }

    #[test]
    fn events_and_statuses_go_into_the_next_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), registry());
        let event = format!(r#"{{"ts":{},"kind":"fault","code":"E7"}}"#, NOW.0);
        p.handle("wearcast/v1/acme/m1/events", event.as_bytes(), NOW);
        // A last will carries no ts: the gateway's clock stamps it.
        p.handle("wearcast/v1/acme/m1/status", br#"{"state":"offline"}"#, NOW);
        let items = p.sweep(NOW);
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(matches!(&items[0], SpoolItem::Event(e) if e.event.code.as_deref() == Some("E7")));
        assert!(matches!(&items[1],
            SpoolItem::Status(s) if s.state == MachineState::Offline && s.at == NOW));
        assert!(p.sweep(NOW).is_empty());
    }

    #[test]
    fn closing_all_flushes_windows_that_are_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path(), registry());
        p.handle(
            "wearcast/v1/acme/m1/telemetry",
            &telemetry(1, NOW, 1.0),
            NOW,
        );
        assert!(p.sweep(NOW).is_empty());
        assert_eq!(p.open_windows(), 1);
        assert_eq!(p.close_all().len(), 1);
        assert_eq!(p.open_windows(), 0);
    }
}
