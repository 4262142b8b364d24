//! De-duplication of samples by their per-machine `seq`.
//!
//! QoS 1 is at-least-once: the broker re-delivers whatever it did not see acknowledged,
//! and devices retry publishes, so the same sample can arrive twice. Counting it twice
//! would bias a window's mean and count, so every machine keeps its highest `seq` and
//! which of the [`SEQ_WINDOW`] seqs below it were seen. Samples may arrive reordered
//! within that range. A `seq` far below the highest means the device restarted its
//! counter, so the state starts over. Samples without `seq` cannot be de-duplicated.

use std::collections::HashMap;

use crate::window::MachineKey;

/// How many recent seqs per machine are remembered.
pub const SEQ_WINDOW: u64 = 4096;
/// A seq this far below the highest is a device restart, not a duplicate or straggler.
pub const RESTART_GAP: u64 = 100_000;

const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// What to do with a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First time seen (or no seq at all): keep it.
    New,
    /// Seen before: drop it.
    Duplicate,
    /// Far below the highest: the device restarted; the state was reset and the sample kept.
    Restart,
    /// Below the remembered range but not far enough to be a restart: it cannot be
    /// checked, and is kept rather than risk dropping real data.
    Unchecked,
}

/// The seqs seen from one machine: the highest, plus a ring bitset of the
/// [`SEQ_WINDOW`] seqs ending at it (bit `seq % SEQ_WINDOW`).
#[derive(Clone, Debug)]
pub struct SeqTracker {
    highest: u64,
    seen: [u64; WORDS],
}

impl SeqTracker {
    fn starting_at(seq: u64) -> Self {
        let mut tracker = Self {
            highest: seq,
            seen: [0; WORDS],
        };
        tracker.set(seq);
        tracker
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % SEQ_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] |= mask;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.seen[word] & mask != 0
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] &= !mask;
    }

    /// Records `seq` and says whether it is new.
    pub fn observe(&mut self, seq: u64) -> SeqVerdict {
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= SEQ_WINDOW {
                self.seen = [0; WORDS];
            } else {
                // The ring slots of the seqs now entering the range still hold seqs
                // that fell out of it.
                for s in self.highest + 1..=seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.set(seq);
            return SeqVerdict::New;
        }
        let below = self.highest - seq;
        if below < SEQ_WINDOW {
            if self.is_set(seq) {
                SeqVerdict::Duplicate
            } else {
                self.set(seq);
                SeqVerdict::New
            }
        } else if below > RESTART_GAP {
            *self = Self::starting_at(seq);
            SeqVerdict::Restart
        } else {
            SeqVerdict::Unchecked
        }
    }
}

/// Seq state of every machine.
#[derive(Debug, Default)]
pub struct Deduplicator {
    machines: HashMap<MachineKey, SeqTracker>,
}

impl Deduplicator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, key: &MachineKey, seq: Option<u64>) -> SeqVerdict {
        let Some(seq) = seq else {
            return SeqVerdict::New;
        };
        match self.machines.get_mut(key) {
            Some(tracker) => tracker.observe(seq),
            None => {
                self.machines
                    .insert(key.clone(), SeqTracker::starting_at(seq));
                SeqVerdict::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::{MachineId, TenantId};

    fn key(m: &str) -> MachineKey {
        MachineKey {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse(m).unwrap(),
        }
    }

    #[test]
    fn a_repeated_seq_is_a_duplicate_and_a_new_one_is_not() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(1)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(2)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(2)), SeqVerdict::Duplicate);
        assert_eq!(d.check(&m, Some(1)), SeqVerdict::Duplicate);
        assert_eq!(d.check(&m, Some(3)), SeqVerdict::New);
    }

    #[test]
    fn reordered_seqs_within_the_window_are_accepted_once() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        for seq in [10, 14, 11, 13, 12] {
            assert_eq!(d.check(&m, Some(seq)), SeqVerdict::New, "seq {seq}");
        }
        for seq in 10..=14 {
            assert_eq!(d.check(&m, Some(seq)), SeqVerdict::Duplicate, "seq {seq}");
        }
        // Far behind, but still within the remembered range.
        assert_eq!(d.check(&m, Some(5000)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(5000 - SEQ_WINDOW + 1)), SeqVerdict::New);
        assert_eq!(
            d.check(&m, Some(5000 - SEQ_WINDOW + 1)),
            SeqVerdict::Duplicate
        );
    }

    #[test]
    fn seqs_that_wrap_around_the_ring_are_not_mistaken_for_duplicates() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(2)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(100)), SeqVerdict::New);
        // Same ring slot as 2, one lap later, reached by a step smaller than the ring.
        assert_eq!(d.check(&m, Some(2 + SEQ_WINDOW)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(2 + SEQ_WINDOW)), SeqVerdict::Duplicate);
        // Same slot again, reached by a jump larger than the ring.
        assert_eq!(d.check(&m, Some(2 + 3 * SEQ_WINDOW)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(100 + 2 * SEQ_WINDOW)), SeqVerdict::New);
    }

    #[test]
    fn a_seq_far_below_the_highest_is_a_device_restart() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(500_000)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(0)), SeqVerdict::Restart);
        assert_eq!(d.check(&m, Some(1)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(0)), SeqVerdict::Duplicate);
        // Between the window and the restart gap: cannot be checked, kept.
        assert_eq!(d.check(&m, Some(50_000)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(40_000)), SeqVerdict::Unchecked);
    }

    #[test]
    fn samples_without_seq_and_other_machines_are_independent() {
        let mut d = Deduplicator::new();
        assert_eq!(d.check(&key("m1"), None), SeqVerdict::New);
        assert_eq!(d.check(&key("m1"), None), SeqVerdict::New);
        assert_eq!(d.check(&key("m1"), Some(7)), SeqVerdict::New);
        assert_eq!(d.check(&key("m2"), Some(7)), SeqVerdict::New);
    }
}
