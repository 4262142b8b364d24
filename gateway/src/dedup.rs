//! De-duplication of samples by their per-machine `seq`.
//!
//! QoS 1 is at-least-once: the broker re-delivers whatever it did not see acknowledged,
//! and devices retry publishes, so the same sample can arrive twice. Counting it twice
//! would bias a window's mean and count, so every machine keeps its highest `seq`, the
//! newest `ts` it sent, and which of the [`SEQ_WINDOW`] seqs below the highest were seen.
//! Samples may arrive reordered within that range.
//!
//! # The contract with devices
//!
//! - A device SHOULD send `seq`, counting up by one per sample. A sample without `seq`
//!   cannot be told apart from its own redelivery: it is accepted every time it arrives
//!   (and counted in `wearcast_gateway_samples_without_seq_total`; when the broker marks
//!   the message as a redelivery, also in `..._redelivered_without_seq_total`).
//! - A device that restarts its counter (reboot without persisted state) is recognised
//!   by its timestamps: a `seq` at or below the highest seen, carrying a `ts` newer than
//!   anything the machine sent before, cannot be a redelivery (a redelivery repeats an
//!   old sample), so the state starts over at that `seq` ([`SeqVerdict::Restart`]). A
//!   `seq` more than [`RESTART_GAP`] below the highest is a restart whatever its `ts`.
//!   No boot id is needed on the wire. The limit: a device whose clock also went
//!   backwards when its counter restarted is not recognised, and up to [`SEQ_WINDOW`] of
//!   its new samples can be taken for duplicates — devices SHOULD persist `seq` or keep
//!   their clock.
//!
//! Only accepted samples change the state (a duplicate leaves it as it was), so replaying
//! the accepted samples of the spool rebuilds exactly the state the live run had.

use std::collections::HashMap;

use wearcast_protocol::UnixMs;

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
    /// The device restarted its counter; the state was reset and the sample kept.
    Restart,
    /// Below the remembered range but not far enough to be a restart: it cannot be
    /// checked, and is kept rather than risk dropping real data.
    Unchecked,
}

impl SeqVerdict {
    pub fn keep(self) -> bool {
        self != Self::Duplicate
    }
}

/// The seqs seen from one machine: the highest, the newest `ts`, plus a ring bitset of
/// the [`SEQ_WINDOW`] seqs ending at the highest (bit `seq % SEQ_WINDOW`).
#[derive(Clone, Debug)]
pub struct SeqTracker {
    highest: u64,
    newest_ts: UnixMs,
    seen: [u64; WORDS],
}

/// A tracker as the spool's checkpoints store it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqSnapshot {
    pub highest: u64,
    pub newest_ts: UnixMs,
    pub seen: Vec<u64>,
}

impl SeqTracker {
    fn starting_at(seq: u64, ts: UnixMs) -> Self {
        let mut tracker = Self {
            highest: seq,
            newest_ts: ts,
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

    /// Records `seq` (sent at `ts`) and says whether the sample is new.
    pub fn observe(&mut self, seq: u64, ts: UnixMs) -> SeqVerdict {
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
            self.newest_ts = self.newest_ts.max(ts);
            self.set(seq);
            return SeqVerdict::New;
        }
        let below = self.highest - seq;
        if ts > self.newest_ts || below > RESTART_GAP {
            *self = Self::starting_at(seq, ts);
            return SeqVerdict::Restart;
        }
        if below < SEQ_WINDOW {
            if self.is_set(seq) {
                SeqVerdict::Duplicate
            } else {
                self.set(seq);
                SeqVerdict::New
            }
        } else {
            SeqVerdict::Unchecked
        }
    }

    pub fn snapshot(&self) -> SeqSnapshot {
        SeqSnapshot {
            highest: self.highest,
            newest_ts: self.newest_ts,
            seen: self.seen.to_vec(),
        }
    }

    /// The tracker a snapshot describes; `None` if the snapshot is not one of ours.
    pub fn restore(snapshot: &SeqSnapshot) -> Option<Self> {
        let seen: [u64; WORDS] = snapshot.seen.as_slice().try_into().ok()?;
        Some(Self {
            highest: snapshot.highest,
            newest_ts: snapshot.newest_ts,
            seen,
        })
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

    pub fn check(&mut self, key: &MachineKey, seq: Option<u64>, ts: UnixMs) -> SeqVerdict {
        let Some(seq) = seq else {
            return SeqVerdict::New;
        };
        match self.machines.get_mut(key) {
            Some(tracker) => tracker.observe(seq, ts),
            None => {
                self.machines
                    .insert(key.clone(), SeqTracker::starting_at(seq, ts));
                SeqVerdict::New
            }
        }
    }

    pub fn snapshot(&self) -> Vec<(MachineKey, SeqSnapshot)> {
        let mut out: Vec<_> = self
            .machines
            .iter()
            .map(|(k, t)| (k.clone(), t.snapshot()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Replaces the whole state with a checkpoint's; returns how many entries were not
    /// understood (and skipped).
    pub fn restore(&mut self, trackers: &[(MachineKey, SeqSnapshot)]) -> usize {
        self.machines.clear();
        let mut skipped = 0;
        for (key, snap) in trackers {
            match SeqTracker::restore(snap) {
                Some(t) => {
                    self.machines.insert(key.clone(), t);
                }
                None => skipped += 1,
            }
        }
        skipped
    }

    pub fn machines(&self) -> usize {
        self.machines.len()
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

    /// Samples one second apart, seq and ts counting up together.
    fn at(seq: u64) -> UnixMs {
        UnixMs(1_800_000_000_000 + seq as i64 * 1000)
    }

    #[test]
    fn a_repeated_seq_is_a_duplicate_and_a_new_one_is_not() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(1), at(1)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(2), at(2)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(2), at(2)), SeqVerdict::Duplicate);
        assert_eq!(d.check(&m, Some(1), at(1)), SeqVerdict::Duplicate);
        assert_eq!(d.check(&m, Some(3), at(3)), SeqVerdict::New);
    }

    #[test]
    fn reordered_seqs_within_the_window_are_accepted_once() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        for seq in [10, 14, 11, 13, 12] {
            assert_eq!(
                d.check(&m, Some(seq), at(seq)),
                SeqVerdict::New,
                "seq {seq}"
            );
        }
        for seq in 10..=14 {
            assert_eq!(
                d.check(&m, Some(seq), at(seq)),
                SeqVerdict::Duplicate,
                "seq {seq}"
            );
        }
        // Far behind, but still within the remembered range.
        assert_eq!(d.check(&m, Some(5000), at(5000)), SeqVerdict::New);
        let old = 5000 - SEQ_WINDOW + 1;
        assert_eq!(d.check(&m, Some(old), at(old)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(old), at(old)), SeqVerdict::Duplicate);
    }

    #[test]
    fn seqs_that_wrap_around_the_ring_are_not_mistaken_for_duplicates() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(2), at(2)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(100), at(100)), SeqVerdict::New);
        // Same ring slot as 2, one lap later, reached by a step smaller than the ring.
        let lap = 2 + SEQ_WINDOW;
        assert_eq!(d.check(&m, Some(lap), at(lap)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(lap), at(lap)), SeqVerdict::Duplicate);
        // Same slot again, reached by a jump larger than the ring.
        let jump = 2 + 3 * SEQ_WINDOW;
        assert_eq!(d.check(&m, Some(jump), at(jump)), SeqVerdict::New);
        let back = 100 + 2 * SEQ_WINDOW;
        assert_eq!(d.check(&m, Some(back), at(back)), SeqVerdict::New);
    }

    #[test]
    fn a_device_that_restarts_its_counter_is_recognised_by_its_newer_timestamps() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        for seq in 1..=500 {
            assert_eq!(d.check(&m, Some(seq), at(seq)), SeqVerdict::New);
        }
        // Rebooted: seq starts over, time goes on. Without the timestamp these would
        // all be "duplicates" of the first run and lost.
        let t = at(1000);
        assert_eq!(d.check(&m, Some(1), t), SeqVerdict::Restart);
        for seq in 2..=500 {
            assert_eq!(
                d.check(&m, Some(seq), t.plus_ms(seq as i64)),
                SeqVerdict::New,
                "seq {seq}"
            );
        }
        // A late redelivery from before the reboot repeats an old timestamp: duplicate.
        assert_eq!(d.check(&m, Some(3), t.plus_ms(3)), SeqVerdict::Duplicate);
    }

    #[test]
    fn a_seq_far_below_the_highest_is_a_restart_and_in_between_is_unchecked() {
        let mut d = Deduplicator::new();
        let m = key("m1");
        assert_eq!(d.check(&m, Some(500_000), at(500_000)), SeqVerdict::New);
        // Same or older time, far below: a restart by the gap rule alone.
        assert_eq!(d.check(&m, Some(0), at(0)), SeqVerdict::Restart);
        assert_eq!(d.check(&m, Some(1), at(1)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(0), at(0)), SeqVerdict::Duplicate);
        // Between the window and the restart gap, not newer: cannot be checked, kept.
        assert_eq!(d.check(&m, Some(50_000), at(50_000)), SeqVerdict::New);
        assert_eq!(d.check(&m, Some(40_000), at(40_000)), SeqVerdict::Unchecked);
    }

    #[test]
    fn samples_without_seq_and_other_machines_are_independent() {
        let mut d = Deduplicator::new();
        assert_eq!(d.check(&key("m1"), None, at(1)), SeqVerdict::New);
        assert_eq!(d.check(&key("m1"), None, at(1)), SeqVerdict::New);
        assert_eq!(d.check(&key("m1"), Some(7), at(7)), SeqVerdict::New);
        assert_eq!(d.check(&key("m2"), Some(7), at(7)), SeqVerdict::New);
    }

    #[test]
    fn a_restored_snapshot_judges_exactly_like_the_original() {
        let mut d = Deduplicator::new();
        for seq in [3u64, 9, 5000, 4990, 7] {
            d.check(&key("m1"), Some(seq), at(seq));
        }
        d.check(&key("m2"), Some(1), at(1));
        let mut copy = Deduplicator::new();
        assert_eq!(copy.restore(&d.snapshot()), 0);
        for seq in [3u64, 9, 5000, 4990, 4991, 7, 6000, 1] {
            assert_eq!(
                copy.check(&key("m1"), Some(seq), at(seq)),
                d.check(&key("m1"), Some(seq), at(seq)),
                "seq {seq}"
            );
        }
        let bad = vec![(
            key("m3"),
            SeqSnapshot {
                highest: 1,
                newest_ts: at(1),
                seen: vec![0; 3],
            },
        )];
        assert_eq!(copy.restore(&bad), 1);
    }
}
