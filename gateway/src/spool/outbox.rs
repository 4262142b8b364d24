//! The batches waiting for the server: where each one is in the log, not its content,
//! so a backlog of any size costs a few dozen bytes of memory per batch while the
//! batches themselves stay on disk.
//!
//! The spool adds batches as it writes them; the forwarder takes the oldest durable one,
//! reads it from its segment, sends it, and reports the outcome here. Confirmed batches
//! wait in `confirmed` until the spool has logged their confirmation.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::wal::record::{self, WalRecord};
use crate::wal::{HEADER_LEN, Lsn, segment_path};

/// Where one unconfirmed batch is, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRef {
    pub lsn: Lsn,
    /// Base of the segment holding it.
    pub segment: Lsn,
    /// Length of its record frame.
    pub len: u32,
    pub samples: u64,
    pub windows: u32,
    pub events: u32,
    pub statuses: u32,
    /// The oldest record whose content the batch carries (first sample of its oldest
    /// window group, or its first event): until the batch is durable, the log must be
    /// kept from there.
    pub sources_from: Lsn,
    /// When it entered the outbox (in this process), for the delivery delay metric.
    pub queued: Instant,
}

impl BatchRef {
    pub fn end(&self) -> Lsn {
        self.lsn + self.len as u64
    }
}

/// How a send attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server has it (or it went to the dead-letter file): it leaves the spool.
    Done,
    /// Not delivered; it is sent again later.
    Retry,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// The spool id in hex, the first half of every batch id.
    id_hex: String,
    batches: VecDeque<BatchRef>,
    /// Everything before this position is on disk; only such batches are sent, so a
    /// batch id the server has seen is never reused after a crash.
    durable: Lsn,
    /// The batch the forwarder is sending right now; the spool does not drop it.
    in_flight: Option<Lsn>,
    /// Done batches whose confirmation is not logged yet.
    confirmed: Vec<Lsn>,
}

pub type SharedOutbox = Arc<Mutex<Outbox>>;

/// Locks the outbox, even after a panic elsewhere (every update is a single step).
pub fn lock(outbox: &SharedOutbox) -> MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    pub fn new(dir: PathBuf, id_hex: String) -> Self {
        Self {
            dir,
            id_hex,
            batches: VecDeque::new(),
            durable: 0,
            in_flight: None,
            confirmed: Vec::new(),
        }
    }

    pub fn shared(self) -> SharedOutbox {
        Arc::new(Mutex::new(self))
    }

    pub fn push(&mut self, batch: BatchRef) {
        self.batches.push_back(batch);
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The waiting batches, oldest first.
    pub fn batches(&self) -> &VecDeque<BatchRef> {
        &self.batches
    }

    pub fn oldest_lsn(&self) -> Option<Lsn> {
        self.batches.front().map(|b| b.lsn)
    }

    pub fn set_durable(&mut self, durable: Lsn) {
        self.durable = self.durable.max(durable);
    }

    /// True when the oldest batch is durable and not being sent: the forwarder has work.
    pub fn ready(&self) -> bool {
        self.in_flight.is_none()
            && self
                .batches
                .front()
                .is_some_and(|b| b.end() <= self.durable)
    }

    /// The oldest batch, if it is durable and nothing is in flight; marks it in flight.
    pub fn start_sending(&mut self) -> Option<BatchRef> {
        if !self.ready() {
            return None;
        }
        let batch = self.batches.front()?.clone();
        self.in_flight = Some(batch.lsn);
        Some(batch)
    }

    /// Records how sending `lsn` ended.
    pub fn finish_sending(&mut self, lsn: Lsn, outcome: SendOutcome) {
        if self.in_flight == Some(lsn) {
            self.in_flight = None;
        }
        if outcome == SendOutcome::Done && self.remove(lsn) {
            self.confirmed.push(lsn);
        }
    }

    /// Forgets a batch (its confirmation was replayed). Returns whether it was here.
    pub fn remove(&mut self, lsn: Lsn) -> bool {
        match self.batches.iter().position(|b| b.lsn == lsn) {
            Some(i) => {
                self.batches.remove(i);
                true
            }
            None => false,
        }
    }

    /// True if the batch being sent lies in `[start, end)`.
    pub fn in_flight_within(&self, start: Lsn, end: Lsn) -> bool {
        self.in_flight.is_some_and(|l| l >= start && l < end)
    }

    /// Removes and returns the batches in `[start, end)` (a segment being dropped).
    pub fn drop_range(&mut self, start: Lsn, end: Lsn) -> Vec<BatchRef> {
        let (dropped, kept): (Vec<_>, Vec<_>) = self
            .batches
            .drain(..)
            .partition(|b| b.lsn >= start && b.lsn < end);
        self.batches = kept.into();
        dropped
    }

    pub fn take_confirmed(&mut self) -> Vec<Lsn> {
        std::mem::take(&mut self.confirmed)
    }

    /// Totals over the waiting batches: (samples, windows, events, statuses).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.batches.iter().fold((0, 0, 0, 0), |t, b| {
            (
                t.0 + b.samples,
                t.1 + b.windows as u64,
                t.2 + b.events as u64,
                t.3 + b.statuses as u64,
            )
        })
    }

    /// The id of the batch recorded at `lsn` (it is in the batch's body too).
    pub fn batch_id(&self, lsn: Lsn) -> wearcast_protocol::BatchId {
        super::batch_id(&self.id_hex, lsn)
    }

    /// Where the forwarder reads a batch from.
    pub fn reader(&self) -> BatchReader {
        BatchReader {
            dir: self.dir.clone(),
        }
    }
}

/// Reads batch bodies back from the log. Cheap to clone into a blocking task.
#[derive(Clone, Debug)]
pub struct BatchReader {
    dir: PathBuf,
}

impl BatchReader {
    /// The JSON body of a batch, checked against its CRC. The outer error is I/O, the
    /// inner one a record that is no longer what was written (disk corruption).
    pub fn read(&self, batch: &BatchRef) -> io::Result<Result<Vec<u8>, String>> {
        let path = segment_path(&self.dir, batch.segment);
        let file = File::open(&path)?;
        let mut frame = vec![0; batch.len as usize];
        file.read_exact_at(&mut frame, HEADER_LEN + (batch.lsn - batch.segment))?;
        Ok(match record::decode(&frame) {
            Ok((WalRecord::Batch(b), _)) => Ok(b.body),
            Ok((other, _)) => Err(format!(
                "{} at {} holds a {other:?} record, not a batch",
                path.display(),
                batch.lsn
            )),
            Err(e) => Err(format!("{} at {}: {e}", path.display(), batch.lsn)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lsn: Lsn, len: u32) -> BatchRef {
        BatchRef {
            lsn,
            segment: 0,
            len,
            samples: 1,
            windows: 1,
            events: 0,
            statuses: 0,
            sources_from: lsn,
            queued: Instant::now(),
        }
    }

    #[test]
    fn only_durable_batches_are_sent_one_at_a_time_oldest_first() {
        let mut o = Outbox::new(PathBuf::new(), "00".into());
        o.push(batch(0, 10));
        o.push(batch(10, 10));
        assert_eq!(o.start_sending(), None, "nothing durable yet");
        o.set_durable(15);
        let first = o.start_sending().unwrap();
        assert_eq!(first.lsn, 0);
        assert_eq!(o.start_sending(), None, "one in flight at a time");
        assert!(o.in_flight_within(0, 10));
        o.finish_sending(0, SendOutcome::Retry);
        assert_eq!(
            o.start_sending().unwrap().lsn,
            0,
            "a retry resends the same"
        );
        o.finish_sending(0, SendOutcome::Done);
        assert_eq!(o.take_confirmed(), vec![0]);
        assert_eq!(o.start_sending(), None, "the second is not durable yet");
        o.set_durable(20);
        assert_eq!(o.start_sending().unwrap().lsn, 10);
    }

    #[test]
    fn dropping_a_range_returns_exactly_the_batches_in_it() {
        let mut o = Outbox::new(PathBuf::new(), "00".into());
        for lsn in [0, 10, 20, 30] {
            o.push(batch(lsn, 10));
        }
        let dropped: Vec<Lsn> = o.drop_range(10, 30).iter().map(|b| b.lsn).collect();
        assert_eq!(dropped, [10, 20]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.oldest_lsn(), Some(0));
        assert!(o.remove(30));
        assert!(!o.remove(30));
    }
}
