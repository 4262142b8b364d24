//! The ingest task: MQTT messages in, through the pipeline into the spool, and acks out
//! once what they brought is durable.
//!
//! It is the only owner of the spool's state, so the log's order is the order in which
//! the state changed. Group commit falls out of the loop: while the writer thread syncs
//! one group of records, messages keep being handled into the next group, and every
//! message is acknowledged when the sync that covers it completes. Every
//! `flush_interval` a sweep closes due windows into batches, logs the forwarder's
//! confirmations and frees what is no longer needed.
//!
//! When the MQTT client's request queue is full, the acks that did not fit are handed
//! over again every [`ACK_RETRY`], in order (never dropped).
//!
//! When the spool's disk budget is used up, the task stops taking messages (they wait,
//! unacknowledged, in the channel and with the broker) until space is freed; the poll
//! task keeps the connection alive meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use wearcast_protocol::clock::SharedClock;

use crate::mqtt::{AckGate, Incoming};
use crate::spool::{DurableSpool, Intake, SpoolError, outbox};
use crate::stats::{HotMetrics, Totals};
use crate::validate::{Message, Pipeline};
use crate::wal::Lsn;

/// Messages handled in one go before the loop looks at its other duties.
const BURST: usize = 512;
/// How soon acks that did not fit into the MQTT client's request queue are tried again.
pub(crate) const ACK_RETRY: Duration = Duration::from_millis(2);
/// How long shutdown waits for the client to take the last acks.
const ACK_DRAIN: Duration = Duration::from_secs(2);

pub(crate) struct Ingest {
    pub spool: DurableSpool,
    pub pipeline: Pipeline,
    pub gate: Arc<AckGate>,
    pub clock: SharedClock,
    pub flush_interval: Duration,
    /// Woken when batches become durable: the forwarder has work.
    pub forwarder_wake: Arc<Notify>,
    /// Woken by the forwarder when batches left the outbox.
    pub confirmed: Arc<Notify>,
    pub totals: Arc<Totals>,
    pub metrics: HotMetrics,
    /// Handled messages waiting for their records to be durable, with the position
    /// that must be durable first.
    awaiting: VecDeque<(Lsn, Incoming)>,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spool: DurableSpool,
        pipeline: Pipeline,
        gate: Arc<AckGate>,
        clock: SharedClock,
        flush_interval: Duration,
        forwarder_wake: Arc<Notify>,
        confirmed: Arc<Notify>,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            spool,
            pipeline,
            gate,
            clock,
            flush_interval,
            forwarder_wake,
            confirmed,
            totals,
            metrics: HotMetrics::register(),
            awaiting: VecDeque::new(),
        }
    }

    /// Handles messages until `stop`, then closes every window into batches, makes
    /// everything durable and acknowledges it. Messages still in the channel stay
    /// unacknowledged: the broker delivers them again next time.
    pub async fn run(
        &mut self,
        messages: &mut mpsc::UnboundedReceiver<Incoming>,
        stop: &CancellationToken,
    ) -> Result<(), SpoolError> {
        let mut writer = self.spool.writer_watch();
        let mut sweep = tokio::time::interval(self.flush_interval);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.spool.flush()?;
            let open = self.spool.intake() == Intake::Open;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                changed = writer.changed() => {
                    if changed.is_err() {
                        return Err(SpoolError::WriteFailed("the writer thread is gone".into()));
                    }
                    self.after_write()?;
                }
                _ = sweep.tick() => self.sweep(),
                _ = self.confirmed.notified() => {
                    self.spool.log_confirmations();
                    self.spool.maintain(self.clock.now());
                }
                _ = tokio::time::sleep(ACK_RETRY), if self.acks_waiting() => self.ack_durable(),
                message = messages.recv(), if open => {
                    let Some(message) = message else { break };
                    self.handle(message);
                    for _ in 1..BURST {
                        match messages.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                        if self.spool.intake() != Intake::Open {
                            break;
                        }
                    }
                    self.spool.flush()?;
                    // Messages that added nothing may already be covered.
                    self.ack_durable();
                }
            }
        }
        self.finish().await
    }

    fn handle(&mut self, mut incoming: Incoming) {
        let now = self.clock.now();
        let message = Message {
            topic: &incoming.publish.topic,
            payload: &incoming.publish.payload,
            redelivered: incoming.publish.dup,
        };
        self.pipeline.handle(message, now, &mut self.spool);
        // Only the packet id is needed for the ack; free the payload while waiting.
        incoming.publish.payload = Default::default();
        self.awaiting.push_back((self.spool.next_lsn(), incoming));
        self.spool.check_budget(now);
    }

    /// The writer made progress: acknowledge what it covers, wake the forwarder.
    fn after_write(&mut self) -> Result<(), SpoolError> {
        self.spool.on_writer_progress()?;
        if outbox::lock(&self.spool.outbox()).ready() {
            self.forwarder_wake.notify_one();
        }
        self.ack_durable();
        Ok(())
    }

    /// Acknowledges the messages that are durable, oldest first, as far as the MQTT
    /// client's request queue takes them; the rest stay at the front of `awaiting`.
    fn ack_durable(&mut self) {
        let durable = self.spool.durable();
        let (done, sent) = self.gate.ack(
            self.awaiting
                .iter()
                .take_while(|(lsn, _)| *lsn <= durable)
                .map(|(_, m)| m),
        );
        if done > 0 {
            self.awaiting.drain(..done);
        }
        Totals::add(&self.totals.messages_acked, sent);
        self.metrics.acked.increment(sent);
    }

    /// True when durable messages wait for room in the client's request queue.
    fn acks_waiting(&self) -> bool {
        self.awaiting
            .front()
            .is_some_and(|(lsn, _)| *lsn <= self.spool.durable())
    }

    /// Hands the last acks to the client before shutdown, waiting at most
    /// [`ACK_DRAIN`] for room in its queue; what is left the broker redelivers.
    async fn drain_acks(&mut self) {
        let deadline = tokio::time::Instant::now() + ACK_DRAIN;
        self.ack_durable();
        while self.acks_waiting() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ACK_RETRY).await;
            self.ack_durable();
        }
    }

    fn sweep(&mut self) {
        let now = self.clock.now();
        let batches = self.spool.sweep(now);
        if batches > 0 {
            debug!(batches, "windows closed into batches");
        }
        self.pipeline.flush_rejects();
        self.spool.log_confirmations();
        self.spool.maintain(now);
    }

    /// Waits until everything appended is durable.
    async fn sync(&mut self) -> Result<(), SpoolError> {
        let mut writer = self.spool.writer_watch();
        loop {
            self.spool.flush()?;
            self.after_write()?;
            if self.spool.durable() >= self.spool.next_lsn() {
                self.drain_acks().await;
                return Ok(());
            }
            if writer.changed().await.is_err() {
                return Err(SpoolError::WriteFailed("the writer thread is gone".into()));
            }
        }
    }

    async fn finish(&mut self) -> Result<(), SpoolError> {
        let now = self.clock.now();
        self.spool.close_all(now);
        self.pipeline.flush_rejects();
        self.sync().await?;
        self.forwarder_wake.notify_one();
        Ok(())
    }

    /// After [`Self::run`]: logs the confirmations of the forwarder's last deliveries
    /// until `done`, then makes them durable, so the next start does not resend them.
    pub async fn log_confirmations_until(
        &mut self,
        done: &CancellationToken,
    ) -> Result<(), SpoolError> {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = self.confirmed.notified() => {
                    self.spool.log_confirmations();
                    self.spool.flush()?;
                }
            }
        }
        self.spool.log_confirmations();
        self.spool.maintain(self.clock.now());
        self.sync().await
    }

    /// Messages handled but not acknowledged yet (their records are not durable, or
    /// the MQTT client has not taken their ack).
    pub fn unacknowledged(&self) -> usize {
        self.awaiting.len()
    }
}
