//! Where closed windows, events and status changes wait until the server has them.
//!
//! Items are pushed as they are produced; the forwarder asks for a batch with
//! [`Spool::peek_batch`], which cuts one (and gives it its [`BatchId`]) the first time and
//! returns that same batch, same id, until [`Spool::confirm`] removes it — so a retry
//! re-sends exactly what the server may already have stored, and the server's per-batch
//! idempotency makes the retry harmless. Cutting at send time rather than at push time
//! means a backlog (server down) goes out in full-size batches, not thousands of small
//! ones.
//!
//! [`MemorySpool`] keeps everything in memory: a crash loses what it holds. The trait is
//! the contract a durable, disk-backed spool will implement.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use wearcast_protocol::clock::SharedClock;
use wearcast_protocol::event::StatusUpdate;
use wearcast_protocol::{BatchId, GatewayId, IngestBatch, MachineEvent, WindowAggregate};

/// One thing to deliver to the server.
#[derive(Clone, Debug, PartialEq)]
pub enum SpoolItem {
    Window(WindowAggregate),
    Event(MachineEvent),
    Status(StatusUpdate),
}

/// Why the spool could not do what was asked (a durable spool can fail on I/O).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// How much the spool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolDepth {
    /// A batch has been cut and not confirmed yet.
    pub in_flight: bool,
    /// Items not in a batch yet (plus those in the batch in flight).
    pub windows: usize,
    pub events: usize,
    pub statuses: usize,
}

impl SpoolDepth {
    pub fn items(&self) -> usize {
        self.windows + self.events + self.statuses
    }

    pub fn is_empty(&self) -> bool {
        self.items() == 0
    }

    /// Batches needed to deliver everything, `max_windows` windows per batch.
    pub fn batches(&self, max_windows: usize) -> usize {
        let max = max_windows.max(1);
        self.windows
            .div_ceil(max)
            .max(self.events.div_ceil(max))
            .max(self.statuses.div_ceil(max))
    }
}

/// Pending deliveries, oldest first.
pub trait Spool: Send + Debug {
    /// Adds one item.
    fn push(&mut self, item: SpoolItem) -> Result<(), SpoolError>;

    /// Adds items in order; a durable spool syncs once for all of them.
    fn push_all(&mut self, items: Vec<SpoolItem>) -> Result<(), SpoolError> {
        items.into_iter().try_for_each(|item| self.push(item))
    }

    /// The oldest unconfirmed batch: the one already cut if there is one, otherwise a new
    /// one of at most `max_windows` windows (and as many events and statuses). `None`
    /// when there is nothing to send.
    fn peek_batch(&mut self, max_windows: usize) -> Result<Option<IngestBatch>, SpoolError>;

    /// Removes the batch the server has accepted (or that was dead-lettered). Returns
    /// false if `batch_id` is not the batch in flight.
    fn confirm(&mut self, batch_id: &BatchId) -> Result<bool, SpoolError>;

    fn depth(&self) -> SpoolDepth;
}

/// A spool shared by the message pipeline (pushes) and the forwarder (peeks, confirms).
/// Every operation is short and never awaits, so a blocking mutex is right.
pub type SharedSpool = Arc<Mutex<dyn Spool>>;

/// Locks the spool, even after a panic elsewhere: its state is a set of queues that a
/// panic cannot leave half-updated in a way worse than losing the panicking push.
pub fn lock(spool: &SharedSpool) -> MutexGuard<'_, dyn Spool + 'static> {
    spool
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh, time-ordered batch id (UUID v7).
pub fn new_batch_id() -> BatchId {
    BatchId::parse(uuid::Uuid::now_v7().to_string()).expect("a hyphenated UUID is a valid batch id")
}

/// The in-memory spool of this release.
#[derive(Debug)]
pub struct MemorySpool {
    gateway: GatewayId,
    clock: SharedClock,
    windows: VecDeque<WindowAggregate>,
    events: VecDeque<MachineEvent>,
    statuses: VecDeque<StatusUpdate>,
    in_flight: Option<IngestBatch>,
}

impl MemorySpool {
    /// `gateway` and `clock` stamp the batches it cuts.
    pub fn new(gateway: GatewayId, clock: SharedClock) -> Self {
        Self {
            gateway,
            clock,
            windows: VecDeque::new(),
            events: VecDeque::new(),
            statuses: VecDeque::new(),
            in_flight: None,
        }
    }

    pub fn shared(self) -> SharedSpool {
        Arc::new(Mutex::new(self))
    }
}

fn take<T>(queue: &mut VecDeque<T>, max: usize) -> Vec<T> {
    let n = queue.len().min(max);
    queue.drain(..n).collect()
}

impl Spool for MemorySpool {
    fn push(&mut self, item: SpoolItem) -> Result<(), SpoolError> {
        match item {
            SpoolItem::Window(w) => self.windows.push_back(w),
            SpoolItem::Event(e) => self.events.push_back(e),
            SpoolItem::Status(s) => self.statuses.push_back(s),
        }
        Ok(())
    }

    fn peek_batch(&mut self, max_windows: usize) -> Result<Option<IngestBatch>, SpoolError> {
        if let Some(batch) = &self.in_flight {
            return Ok(Some(batch.clone()));
        }
        if self.windows.is_empty() && self.events.is_empty() && self.statuses.is_empty() {
            return Ok(None);
        }
        let max = max_windows.max(1);
        let batch = IngestBatch {
            batch_id: new_batch_id(),
            gateway: self.gateway.clone(),
            created_at: self.clock.now(),
            windows: take(&mut self.windows, max),
            events: take(&mut self.events, max),
            statuses: take(&mut self.statuses, max),
        };
        Ok(Some(self.in_flight.insert(batch).clone()))
    }

    fn confirm(&mut self, batch_id: &BatchId) -> Result<bool, SpoolError> {
        match &self.in_flight {
            Some(batch) if batch.batch_id == *batch_id => {
                self.in_flight = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn depth(&self) -> SpoolDepth {
        let flight = self.in_flight.as_ref();
        SpoolDepth {
            in_flight: flight.is_some(),
            windows: self.windows.len() + flight.map_or(0, |b| b.windows.len()),
            events: self.events.len() + flight.map_or(0, |b| b.events.len()),
            statuses: self.statuses.len() + flight.map_or(0, |b| b.statuses.len()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use wearcast_protocol::clock::ManualClock;
    use wearcast_protocol::{Channel, MachineId, TenantId, UnixMs};

    pub(crate) fn window(i: i64) -> WindowAggregate {
        WindowAggregate {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse("m1").unwrap(),
            channel: Channel::parse("a.x").unwrap(),
            start: UnixMs(i * 60_000),
            end: UnixMs((i + 1) * 60_000),
            count: 1,
            mean: 1.0,
            min: 1.0,
            max: 1.0,
            std: 0.0,
            last: 1.0,
            last_ts: UnixMs(i * 60_000),
        }
    }

    fn spool() -> MemorySpool {
        MemorySpool::new(
            GatewayId::parse("gw-1").unwrap(),
            Arc::new(ManualClock::new(UnixMs(42))),
        )
    }

    #[test]
    fn a_batch_keeps_its_id_until_confirmed() {
        let mut s = spool();
        assert_eq!(s.peek_batch(10).unwrap(), None);
        s.push_all((0..3).map(|i| SpoolItem::Window(window(i))).collect())
            .unwrap();
        let first = s.peek_batch(2).unwrap().unwrap();
        assert_eq!(first.windows.len(), 2);
        assert_eq!(first.created_at, UnixMs(42));
        // Items pushed meanwhile do not change the batch in flight.
        s.push(SpoolItem::Window(window(3))).unwrap();
        let again = s.peek_batch(2).unwrap().unwrap();
        assert_eq!(again, first);
        assert_eq!(s.depth().windows, 4);

        assert!(!s.confirm(&new_batch_id()).unwrap());
        assert!(s.confirm(&first.batch_id).unwrap());
        let second = s.peek_batch(2).unwrap().unwrap();
        assert_ne!(second.batch_id, first.batch_id);
        assert_eq!(second.windows, vec![window(2), window(3)]);
        assert!(s.confirm(&second.batch_id).unwrap());
        assert!(s.depth().is_empty());
        assert_eq!(s.peek_batch(2).unwrap(), None);
    }

    #[test]
    fn depth_counts_the_batches_still_needed() {
        let depth = SpoolDepth {
            in_flight: false,
            windows: 5001,
            events: 3,
            statuses: 0,
        };
        assert_eq!(depth.batches(5000), 2);
        assert_eq!(SpoolDepth::default().batches(5000), 0);
    }
}
