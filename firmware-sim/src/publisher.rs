//! MQTT publishing: one connection per machine, as real machines would have.
//!
//! Each machine runs two tasks. The *poller* drives the rumqttc event loop (which
//! must be polled continuously for anything to move) and owns the connection: it
//! reconnects after a short, growing pause, and puts the retained `online` birth at the
//! head of the queue after every connect. The *publisher* steps the machine's
//! simulation and hands its telemetry and events to the client, which waits whenever
//! QoS 1 flow control (100 messages in flight) or the request queue is full, so a slow
//! broker slows the simulator down instead of piling up memory.
//!
//! Sessions are clean (the broker keeps nothing for a publisher), so rumqttc would drop
//! whatever was unacknowledged or still queued when a connection breaks. The poller
//! keeps those messages instead and sends them again after the next connect:
//! at-least-once across reconnects, and the gateway drops the duplicates by `seq`.
//!
//! The backfill counts as published once the broker has acknowledged all of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS, Request,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wearcast_protocol::event::EventPayload;
use wearcast_protocol::telemetry::{encode_sample, encode_samples};
use wearcast_protocol::{
    EventKind, MachineId, MachineState, Sample, SharedClock, StatusMessage, TenantId, Topic,
    TopicKind, UnixMs,
};

use crate::config::BrokerAddress;
use crate::control::{Command, SimControl};
use crate::error::SimError;
use crate::faults::{FaultConfig, FaultInjector, FaultReport, MAX_INJECTED_BYTES};
use crate::machine::{Emission, MachineSim};
use crate::truth::TruthLog;

/// Longest stretch of clock time one telemetry message covers.
pub const MAX_BATCH_SPAN_MS: i64 = UnixMs::HOUR;
/// Largest telemetry payload sent; the gateway's limit is 256 KiB.
pub const MAX_MESSAGE_BYTES: usize = 200 * 1024;
/// `firmware` of the birth message.
pub const FIRMWARE: &str = "sim-1.0";

const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Requests the client queues before `publish` waits; small, so memory stays bounded
/// and the goodbye at shutdown is not stuck behind a long queue.
const REQUEST_CAPACITY: usize = 16;
/// Incoming packets are only acknowledgements, but leave room for broker surprises.
const MAX_INCOMING_BYTES: usize = 64 * 1024;
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// While a broker stays unreachable, repeat the warning this often, not on every try.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// How long shutdown waits for the offline status and the DISCONNECT to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every machine task shares.
pub(crate) struct RunContext {
    pub tenant: TenantId,
    pub broker: BrokerAddress,
    pub client_prefix: String,
    pub clock: SharedClock,
    /// Cancelled on shutdown, or when one machine hits a fatal error.
    pub stop: CancellationToken,
    pub truth: Option<Arc<TruthLog>>,
    pub interval_ms: i64,
    /// First sample time of the backfill (aligned to the interval).
    pub backfill_from: UnixMs,
    /// End of the backfill: the clock's time when the run started.
    pub backfill_until: UnixMs,
    pub publish_every: Duration,
    pub backfill: BackfillBarrier,
    pub control: SimControl,
    /// Faults to inject (all off by default), and the run's seed they are drawn from.
    pub faults: FaultConfig,
    pub seed: u64,
    /// MQTT passwords per machine (user name: the machine id).
    pub passwords: crate::fleet::Passwords,
}

/// Counts machines down to the end of the backfill and then tells the fleet's
/// [`crate::BackfillDone`] handles.
pub(crate) struct BackfillBarrier {
    remaining: AtomicUsize,
    done: watch::Sender<bool>,
}

impl BackfillBarrier {
    pub(crate) fn new(machines: usize, done: watch::Sender<bool>) -> Self {
        if machines == 0 {
            done.send_replace(true);
        }
        Self {
            remaining: AtomicUsize::new(machines),
            done,
        }
    }

    /// Returns true for the last machine, which completes the backfill.
    fn machine_done(&self) -> bool {
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            self.done.send_replace(true);
        }
        last
    }
}

/// What one machine task did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MachineReport {
    pub messages: u64,
    pub samples: u64,
    pub failures: u64,
    pub faults: FaultReport,
}

/// An encoded telemetry message and how many samples it carries.
#[derive(Debug)]
pub(crate) struct TelemetryMessage {
    pub payload: Vec<u8>,
    pub samples: usize,
}

/// Splits time-ordered samples into `{"samples": [...]}` payloads that each cover at
/// most [`MAX_BATCH_SPAN_MS`] and weigh at most [`MAX_MESSAGE_BYTES`].
pub(crate) fn telemetry_messages(samples: &[Sample]) -> Vec<TelemetryMessage> {
    const ENVELOPE: usize = r#"{"samples":[]}"#.len();
    let message = |batch: &[Sample]| TelemetryMessage {
        payload: encode_samples(batch),
        samples: batch.len(),
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = ENVELOPE;
    for (i, sample) in samples.iter().enumerate() {
        let size = encode_sample(sample).len();
        let too_long = sample.ts.0 - samples[start].ts.0 > MAX_BATCH_SPAN_MS;
        // `+ 1` for the comma between two samples.
        let too_big = bytes + size + 1 > MAX_MESSAGE_BYTES;
        if i > start && (too_long || too_big) {
            out.push(message(&samples[start..i]));
            start = i;
            bytes = ENVELOPE + size;
        } else {
            bytes += size + usize::from(i > start);
        }
    }
    if start < samples.len() {
        out.push(message(&samples[start..]));
    }
    out
}

fn status_payload(state: MachineState, ts: Option<UnixMs>) -> Vec<u8> {
    let status = StatusMessage {
        state,
        ts,
        firmware: (state == MachineState::Online).then(|| FIRMWARE.to_owned()),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

struct MachineTopics {
    telemetry: String,
    status: String,
    events: String,
}

impl MachineTopics {
    fn new(tenant: &TenantId, machine: &MachineId) -> Self {
        let topic = |kind| Topic::new(tenant.clone(), machine.clone(), kind).to_string();
        Self {
            telemetry: topic(TopicKind::Telemetry),
            status: topic(TopicKind::Status),
            events: topic(TopicKind::Events),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stopped,
}

/// Simulates and publishes one machine until `ctx.stop`, then says goodbye to the
/// broker. Only a ground-truth write error ends it early.
pub(crate) async fn run_machine(
    mut sim: MachineSim,
    ctx: Arc<RunContext>,
) -> Result<MachineReport, SimError> {
    let machine = sim.id.clone();
    let topics = MachineTopics::new(&ctx.tenant, &machine);
    let mut options = MqttOptions::new(
        format!("{}-{machine}", ctx.client_prefix),
        ctx.broker.host.clone(),
        ctx.broker.port,
    );
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_BYTES, MAX_MESSAGE_BYTES + 1024)
        .set_last_will(LastWill::new(
            topics.status.clone(),
            status_payload(MachineState::Offline, None),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = ctx.passwords.login(&machine) {
        options.set_credentials(user, password);
    }
    let faults = FaultInjector::new(
        &ctx.faults,
        fault_seed(ctx.seed, &machine),
        ctx.tenant.clone(),
        machine.clone(),
    );
    if faults.is_some() {
        // Room for the oversized messages the gateway must refuse.
        options.set_max_packet_size(MAX_INCOMING_BYTES, MAX_INJECTED_BYTES + 1024);
    }
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let link = Arc::new(LinkState::default());
    let poll_stop = CancellationToken::new();
    let poller = tokio::spawn(poll_connection(
        eventloop,
        machine.clone(),
        topics.status.clone(),
        ctx.clock.clone(),
        link.clone(),
        poll_stop.clone(),
    ));
    let mut publisher = Publisher {
        ctx: &ctx,
        machine,
        client,
        topics,
        link,
        live: false,
        report: MachineReport::default(),
        faults,
    };
    let outcome = publisher.simulate(&mut sim).await;
    if let Some(faults) = &publisher.faults {
        publisher.report.faults = faults.report();
    }
    if outcome.is_err() {
        // A fatal error stops the other machines now rather than after this goodbye.
        ctx.stop.cancel();
    }
    // Whatever ended the simulation, leave the broker tidy.
    publisher.say_goodbye(poller, poll_stop).await?;
    outcome.map(|()| publisher.report)
}

/// A machine's own fault seed: the run's seed mixed with its id (FNV-1a).
fn fault_seed(seed: u64, machine: &MachineId) -> u64 {
    machine
        .as_str()
        .bytes()
        .fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// What the poller tells the publisher about the connection.
#[derive(Debug)]
struct LinkState {
    connected: AtomicBool,
    /// Telemetry and event messages the broker has acknowledged.
    acked: watch::Sender<u64>,
    /// Fault injection: drop the connection now.
    drop_connection: Notify,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            acked: watch::Sender::new(0),
            drop_connection: Notify::new(),
        }
    }
}

struct Publisher<'a> {
    ctx: &'a RunContext,
    machine: MachineId,
    client: AsyncClient,
    topics: MachineTopics,
    link: Arc<LinkState>,
    /// False while publishing history, which is logged more quietly.
    live: bool,
    report: MachineReport,
    /// Fault injection, when any is configured.
    faults: Option<FaultInjector>,
}

impl Publisher<'_> {
    async fn simulate(&mut self, sim: &mut MachineSim) -> Result<(), SimError> {
        let ctx = self.ctx;
        let mut emissions = Vec::new();
        sim.start(ctx.backfill_from, ctx.interval_ms, &mut emissions);
        let mut cursor = ctx.backfill_from;
        // Hour by hour: a batch is at most an hour anyway, and memory stays small.
        loop {
            if self.emit(&mut emissions).await? == Flow::Stopped {
                return Ok(());
            }
            if cursor >= ctx.backfill_until {
                break;
            }
            cursor = cursor.plus_ms(MAX_BATCH_SPAN_MS).min(ctx.backfill_until);
            sim.advance_to(cursor, &mut emissions);
        }
        // Published means acknowledged: wait until the broker has taken all of it.
        let handed_over = self.report.messages;
        let mut acked = self.link.acked.subscribe();
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return Ok(()),
            _ = acked.wait_for(|n| *n >= handed_over) => {}
        }
        debug!(
            machine = %self.machine,
            samples = self.report.samples,
            messages = handed_over,
            "backfill acknowledged by the broker"
        );
        if ctx.backfill.machine_done() {
            debug!("every machine's backfill is acknowledged");
        }

        self.live = true;
        let mut ticker = tokio::time::interval(ctx.publish_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = ctx.stop.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            for command in ctx.control.take(&sim.id) {
                match command {
                    Command::Replace { component, at } => {
                        if !sim.plan_replacement(&component, at, cursor) {
                            debug!(machine = %sim.id, %component, "replacement not applied (unknown component, or failed and awaiting its replacement)");
                        }
                    }
                }
            }
            let now = ctx.clock.now();
            while cursor < now {
                cursor = cursor.plus_ms(MAX_BATCH_SPAN_MS).min(now);
                sim.advance_to(cursor, &mut emissions);
                if self.emit(&mut emissions).await? == Flow::Stopped {
                    return Ok(());
                }
            }
        }
    }

    /// Publishes emissions in order: samples are batched, and an event first flushes the
    /// samples taken before it, so the broker sees them in time order.
    async fn emit(&mut self, emissions: &mut Vec<Emission>) -> Result<Flow, SimError> {
        let mut samples = Vec::new();
        for emission in emissions.drain(..) {
            match emission {
                Emission::Sample(sample) => samples.push(sample),
                Emission::Event(event) => {
                    if self.flush(&mut samples).await == Flow::Stopped {
                        return Ok(Flow::Stopped);
                    }
                    if self.publish_event(&event).await == Flow::Stopped {
                        return Ok(Flow::Stopped);
                    }
                }
                Emission::Truth(record) => {
                    if let Some(truth) = &self.ctx.truth {
                        truth.write(&record)?;
                    }
                }
            }
        }
        Ok(self.flush(&mut samples).await)
    }

    async fn flush(&mut self, samples: &mut Vec<Sample>) -> Flow {
        if let Some(faults) = &mut self.faults {
            faults.skew(samples);
        }
        let mut offset = 0;
        for message in telemetry_messages(samples) {
            if let Some(faults) = &mut self.faults {
                let these = &samples[offset..offset + message.samples];
                let injected = faults.telemetry(
                    &self.topics.telemetry,
                    message.payload,
                    these,
                    self.ctx.clock.now(),
                );
                for m in injected.messages {
                    if self.publish(&m.topic, m.payload).await == Flow::Stopped {
                        return Flow::Stopped;
                    }
                    self.report.messages += 1;
                }
                if injected.disconnect {
                    self.link.drop_connection.notify_one();
                }
            } else {
                if self.publish(&self.topics.telemetry, message.payload).await == Flow::Stopped {
                    return Flow::Stopped;
                }
                self.report.messages += 1;
            }
            offset += message.samples;
            self.report.samples += message.samples as u64;
            metrics::counter!("wearcast_sim_messages_published_total").increment(1);
            metrics::counter!("wearcast_sim_samples_published_total")
                .increment(message.samples as u64);
        }
        samples.clear();
        Flow::Continue
    }

    async fn publish_event(&mut self, event: &EventPayload) -> Flow {
        let component = event.component.as_ref().map(|c| c.as_str()).unwrap_or("-");
        match (event.kind, self.live) {
            (EventKind::Failure, true) => {
                info!(machine = %self.machine, component, at = %event.ts, "component failed")
            }
            (EventKind::PartReplaced, true) => {
                info!(machine = %self.machine, component, at = %event.ts, "part replaced (a repair or a planned visit)")
            }
            (kind, _) => {
                debug!(machine = %self.machine, component, at = %event.ts, kind = kind.as_str(), "event")
            }
        }
        if event.kind == EventKind::Failure {
            self.report.failures += 1;
            metrics::counter!("wearcast_sim_failures_total").increment(1);
        }
        let payload = serde_json::to_vec(event).unwrap_or_default();
        if self.publish(&self.topics.events, payload).await == Flow::Stopped {
            return Flow::Stopped;
        }
        self.report.messages += 1;
        metrics::counter!("wearcast_sim_messages_published_total").increment(1);
        Flow::Continue
    }

    /// Hands one QoS 1 message to the client, waiting for room, unless the run stops first.
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Flow {
        tokio::select! {
            biased;
            () = self.ctx.stop.cancelled() => Flow::Stopped,
            sent = self.client.publish(topic, QoS::AtLeastOnce, false, payload) => match sent {
                Ok(()) => Flow::Continue,
                Err(error) => {
                    // Only happens once the event loop is gone, which shutdown reports.
                    debug!(machine = %self.machine, %error, "the MQTT client no longer takes messages");
                    Flow::Stopped
                }
            },
        }
    }

    /// Publishes the retained `offline` status (a clean disconnect does not fire the
    /// last will) and disconnects, within [`SHUTDOWN_GRACE`]; then ends the poller.
    async fn say_goodbye(
        &self,
        mut poller: JoinHandle<()>,
        poll_stop: CancellationToken,
    ) -> Result<(), SimError> {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut finished = None;
        if self.link.connected.load(Ordering::Acquire) {
            let goodbye = async {
                let offline = status_payload(MachineState::Offline, Some(self.ctx.clock.now()));
                self.client
                    .publish(&self.topics.status, QoS::AtLeastOnce, true, offline)
                    .await?;
                self.client.disconnect().await
            };
            match tokio::time::timeout_at(deadline, goodbye).await {
                // The poller ends by itself once the DISCONNECT is on the wire.
                Ok(Ok(())) => match tokio::time::timeout_at(deadline, &mut poller).await {
                    Ok(joined) => finished = Some(joined),
                    Err(_) => warn!(
                        machine = %self.machine,
                        "the broker did not take the offline status and DISCONNECT in time"
                    ),
                },
                Ok(Err(error)) => {
                    debug!(machine = %self.machine, %error, "could not queue the offline status")
                }
                Err(_) => warn!(
                    machine = %self.machine,
                    "the broker did not take the offline status in time; the last will reports the machine offline instead"
                ),
            }
        }
        let joined = match finished {
            Some(joined) => joined,
            None => {
                poll_stop.cancel();
                poller.await
            }
        };
        joined.map_err(|e| SimError::Task {
            machine: self.machine.to_string(),
            reason: format!("MQTT connection task: {e}"),
        })
    }
}

/// Drives one machine's MQTT event loop until it has sent a DISCONNECT or `stop` is
/// cancelled. Connection errors are logged and retried, never fatal.
async fn poll_connection(
    mut eventloop: EventLoop,
    machine: MachineId,
    status_topic: String,
    clock: SharedClock,
    link: Arc<LinkState>,
    stop: CancellationToken,
) {
    let mut backoff = RECONNECT_MIN;
    let mut last_warning: Option<Instant> = None;
    let mut ever_connected = false;
    // Messages of a broken connection, sent again after the next connect.
    let mut resend: VecDeque<Request> = VecDeque::new();
    // The birth is the first publish of each connection; its acknowledgement is not
    // one of the data messages the publisher counts on.
    let mut birth_unsent = false;
    let mut birth_pkid: Option<u16> = None;
    loop {
        let polled = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = link.drop_connection.notified() => None,
            polled = eventloop.poll() => Some(polled),
        };
        let polled = match polled {
            Some(polled) => polled,
            None => {
                // Fault injection: the TCP connection goes without a DISCONNECT, and
                // what was in flight is handled like after any other broken connection.
                eventloop.clean();
                Err(rumqttc::ConnectionError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "connection dropped by fault injection",
                )))
            }
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if ever_connected {
                    info!(machine = %machine, resending = resend.len(), "reconnected to the broker");
                } else {
                    debug!(machine = %machine, "connected to the broker");
                }
                ever_connected = true;
                link.connected.store(true, Ordering::Release);
                backoff = RECONNECT_MIN;
                last_warning = None;
                let online = status_payload(MachineState::Online, Some(clock.now()));
                let mut birth = Publish::new(status_topic.as_str(), QoS::AtLeastOnce, online);
                birth.retain = true;
                // Pending requests go out before the request channel, which only this
                // task drains, so the birth never waits behind queued telemetry.
                eventloop.pending.push_front(Request::Publish(birth));
                eventloop.pending.extend(resend.drain(..));
                birth_unsent = true;
                birth_pkid = None;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if birth_unsent => {
                birth_unsent = false;
                birth_pkid = Some(pkid);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if birth_pkid == Some(ack.pkid) {
                    birth_pkid = None;
                } else {
                    link.acked.send_modify(|n| *n += 1);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.connected.store(false, Ordering::Release);
                return;
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(error) => {
                link.connected.store(false, Ordering::Release);
                // rumqttc moved what was unacknowledged or queued into `pending`, and a
                // clean session would discard it on reconnect: keep it instead, minus
                // stale status messages (the next connect publishes a fresh birth).
                for request in eventloop.pending.drain(..) {
                    match request {
                        Request::Publish(mut publish) if publish.topic != status_topic => {
                            publish.pkid = 0;
                            publish.dup = false;
                            resend.push_back(Request::Publish(publish));
                        }
                        Request::Disconnect(d) => resend.push_back(Request::Disconnect(d)),
                        _ => {}
                    }
                }
                birth_unsent = false;
                birth_pkid = None;
                let now = Instant::now();
                if last_warning.is_none_or(|at| now - at >= WARN_EVERY) {
                    warn!(
                        machine = %machine,
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "MQTT connection failed; retrying"
                    );
                    last_warning = Some(now);
                } else {
                    debug!(machine = %machine, %error, "MQTT connection still failing");
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::fleet::demo_fleet;
    use wearcast_protocol::telemetry::{TelemetryLimits, parse_telemetry};

    const NOW: UnixMs = UnixMs(1_795_352_355_524);

    fn backfill_samples(interval_ms: i64, days: i64) -> Vec<Sample> {
        let mut sim = demo_fleet(&SimConfig::default(), NOW)
            .unwrap()
            .machines
            .remove(0);
        let mut out = Vec::new();
        sim.start(NOW.plus_ms(-days * UnixMs::DAY), interval_ms, &mut out);
        sim.advance_to(NOW, &mut out);
        out.into_iter()
            .filter_map(|e| match e {
                Emission::Sample(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn check_messages(samples: &[Sample]) -> Vec<TelemetryMessage> {
        let messages = telemetry_messages(samples);
        let limits = TelemetryLimits::default();
        let mut parsed_back = Vec::new();
        for m in &messages {
            assert!(m.payload.len() <= MAX_MESSAGE_BYTES, "{}", m.payload.len());
            assert!(m.payload.len() <= limits.max_payload_bytes);
            let parsed = parse_telemetry(&m.payload, &limits).unwrap();
            assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
            assert_eq!(parsed.samples.len(), m.samples);
            let span = parsed.samples.last().unwrap().ts.0 - parsed.samples[0].ts.0;
            assert!(span <= MAX_BATCH_SPAN_MS);
            parsed_back.extend(parsed.samples);
        }
        assert_eq!(parsed_back.len(), samples.len());
        for (a, b) in parsed_back.iter().zip(samples) {
            assert_eq!((a.ts, a.seq), (b.ts, b.seq));
            assert_eq!(a.readings, b.readings);
        }
        messages
    }

    #[test]
    fn backfill_payloads_parse_without_rejections_and_stay_under_the_size_limit() {
        let samples = backfill_samples(300_000, 21);
        assert!(samples.len() > 4000, "{}", samples.len());
        let messages = check_messages(&samples);
        // An hour of 5-minute samples is 13 at most (both ends included).
        assert!(messages.iter().all(|m| m.samples <= 13));
        assert!(messages.len() >= samples.len() / 13);
    }

    #[test]
    fn second_by_second_samples_are_split_by_size_before_the_hour_is_full() {
        let samples = {
            let mut sim = demo_fleet(&SimConfig::default(), NOW)
                .unwrap()
                .machines
                .remove(0);
            let mut out = Vec::new();
            sim.start(NOW.plus_ms(-2 * UnixMs::HOUR), 1_000, &mut out);
            sim.advance_to(NOW, &mut out);
            out.into_iter()
                .filter_map(|e| match e {
                    Emission::Sample(s) => Some(s),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let messages = check_messages(&samples);
        assert!(messages.len() > 2, "{}", messages.len());
        assert!(
            messages
                .iter()
                .any(|m| m.payload.len() > MAX_MESSAGE_BYTES / 2)
        );
    }

    #[test]
    fn birth_and_last_will_follow_the_status_contract() {
        let birth =
            StatusMessage::parse(&status_payload(MachineState::Online, Some(UnixMs(5)))).unwrap();
        assert_eq!(birth.state, MachineState::Online);
        assert_eq!(birth.firmware.as_deref(), Some(FIRMWARE));
        assert_eq!(
            status_payload(MachineState::Offline, None),
            br#"{"state":"offline"}"#
        );
    }

    #[test]
    fn the_backfill_barrier_opens_when_the_last_machine_is_done() {
        let (tx, rx) = watch::channel(false);
        let barrier = BackfillBarrier::new(2, tx);
        assert!(!barrier.machine_done());
        assert!(!*rx.borrow());
        assert!(barrier.machine_done());
        assert!(*rx.borrow());
    }
}
