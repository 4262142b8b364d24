//! Fixed-window aggregation of accepted samples, per machine and channel, in event time.
//!
//! A window `[start, start + window)` is aligned with [`UnixMs::window_start`]. It closes
//! when the machine's watermark (the greatest sample `ts` seen from it) passes
//! `end + lateness`, or — so that a machine that went quiet still gets its last window
//! out — when the clock passes `end + lateness + window`. A sample for a window that has
//! already closed is not dropped: it opens a new partial window for the same interval,
//! which is emitted like any other; the server merges windows with the same key by
//! count. This module is pure: it never reads a clock, `now` is passed in.

use std::collections::{BTreeMap, HashMap};

use wearcast_protocol::{Channel, MachineId, Sample, TenantId, UnixMs, WindowAggregate};

/// The machine a sample came from, as its topic names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineKey {
    pub tenant: TenantId,
    pub machine: MachineId,
}

/// Streaming statistics of one window (Welford's algorithm, so the variance stays
/// accurate for readings with a large offset such as temperatures in kelvin).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    /// The reading with the greatest timestamp (the latest arrival wins a tie).
    pub last: f64,
    pub last_ts: UnixMs,
}

impl WindowStats {
    pub fn new(ts: UnixMs, value: f64) -> Self {
        Self {
            count: 1,
            mean: value,
            m2: 0.0,
            min: value,
            max: value,
            last: value,
            last_ts: ts,
        }
    }

    pub fn add(&mut self, ts: UnixMs, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
    }

    /// Sample standard deviation (n − 1); 0 for a single reading.
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2.max(0.0) / (self.count - 1) as f64).sqrt()
        }
    }
}

/// The open windows of one machine, in start order so closing pops from the front.
#[derive(Debug, Default)]
struct MachineWindows {
    /// Greatest sample `ts` seen from this machine: its event-time progress.
    watermark: Option<UnixMs>,
    windows: BTreeMap<(UnixMs, Channel), WindowStats>,
}

/// What adding a sample did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// The sample's window had already closed; it went into a new partial window.
    pub late: bool,
}

/// Open windows of every machine.
#[derive(Debug)]
pub struct Aggregator {
    window_ms: i64,
    lateness_ms: i64,
    machines: HashMap<MachineKey, MachineWindows>,
    open: usize,
}

impl Aggregator {
    /// `window_ms` must be positive (the config check makes sure of it).
    pub fn new(window_ms: i64, lateness_ms: i64) -> Self {
        Self {
            window_ms: window_ms.max(1),
            lateness_ms: lateness_ms.max(0),
            machines: HashMap::new(),
            open: 0,
        }
    }

    /// Number of open (not yet emitted) windows.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// Adds every reading of an accepted sample to its window.
    pub fn add(&mut self, key: &MachineKey, sample: Sample, now: UnixMs) -> Added {
        let (window_ms, lateness_ms) = (self.window_ms, self.lateness_ms);
        let machine = match self.machines.get_mut(key) {
            Some(m) => m,
            None => self.machines.entry(key.clone()).or_default(),
        };
        let start = sample.ts.window_start(window_ms);
        let late = is_closed(start, machine.watermark, now, window_ms, lateness_ms);
        machine.watermark = Some(machine.watermark.map_or(sample.ts, |w| w.max(sample.ts)));
        for (channel, value) in sample.readings {
            match machine.windows.get_mut(&(start, channel.clone())) {
                Some(stats) => stats.add(sample.ts, value),
                None => {
                    machine
                        .windows
                        .insert((start, channel), WindowStats::new(sample.ts, value));
                    self.open += 1;
                }
            }
        }
        Added { late }
    }

    /// Removes and returns every window that is closed at `now`.
    pub fn close_due(&mut self, now: UnixMs) -> Vec<WindowAggregate> {
        let (window_ms, lateness_ms) = (self.window_ms, self.lateness_ms);
        let mut out = Vec::new();
        for (key, machine) in &mut self.machines {
            while let Some(entry) = machine.windows.first_entry() {
                let start = entry.key().0;
                if !is_closed(start, machine.watermark, now, window_ms, lateness_ms) {
                    break;
                }
                let ((start, channel), stats) = entry.remove_entry();
                out.push(aggregate(key, channel, start, window_ms, &stats));
            }
        }
        self.open -= out.len();
        out.sort_by(|a, b| {
            (a.start, &a.machine, &a.channel).cmp(&(b.start, &b.machine, &b.channel))
        });
        out
    }

    /// Removes and returns every open window, closed or not (at shutdown).
    pub fn close_all(&mut self) -> Vec<WindowAggregate> {
        let window_ms = self.window_ms;
        let mut out = Vec::with_capacity(self.open);
        for (key, machine) in &mut self.machines {
            for ((start, channel), stats) in std::mem::take(&mut machine.windows) {
                out.push(aggregate(key, channel, start, window_ms, &stats));
            }
        }
        self.open = 0;
        out
    }
}

/// The closing rule of the module doc. Monotone in `start`, which `close_due` relies on.
fn is_closed(
    start: UnixMs,
    watermark: Option<UnixMs>,
    now: UnixMs,
    window_ms: i64,
    lateness_ms: i64,
) -> bool {
    let end = start.0.saturating_add(window_ms);
    let by_watermark = watermark.is_some_and(|w| w.0 > end.saturating_add(lateness_ms));
    let by_clock = now.0 > end.saturating_add(lateness_ms).saturating_add(window_ms);
    by_watermark || by_clock
}

fn aggregate(
    key: &MachineKey,
    channel: Channel,
    start: UnixMs,
    window_ms: i64,
    stats: &WindowStats,
) -> WindowAggregate {
    WindowAggregate {
        tenant: key.tenant.clone(),
        machine: key.machine.clone(),
        channel,
        start,
        end: start.plus_ms(window_ms),
        count: stats.count,
        mean: stats.mean,
        min: stats.min,
        max: stats.max,
        std: stats.std(),
        last: stats.last,
        last_ts: stats.last_ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: i64 = 60_000;
    const LATE: i64 = 10_000;
    /// A window-aligned instant.
    const T0: UnixMs = UnixMs(1_800_000_000_000);

    fn key(machine: &str) -> MachineKey {
        MachineKey {
            tenant: TenantId::parse("acme").unwrap(),
            machine: MachineId::parse(machine).unwrap(),
        }
    }

    fn sample(ts: UnixMs, readings: &[(&str, f64)]) -> Sample {
        Sample {
            ts,
            seq: None,
            readings: readings
                .iter()
                .map(|(c, v)| (Channel::parse(*c).unwrap(), *v))
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn window_statistics_match_a_naive_computation(
            values in proptest::collection::vec(-1e6f64..1e6, 1..200),
            offset in -1e9f64..1e9,
            shuffle_seed in any::<u64>(),
        ) {
            // Timestamps in a shuffled order, so `last` must be found by ts, not arrival.
            let n = values.len();
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = shuffle_seed | 1;
            for i in (1..n).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let xs: Vec<f64> = values.iter().map(|v| v + offset).collect();
            let mut stats: Option<WindowStats> = None;
            for &i in &order {
                let ts = UnixMs(i as i64);
                match &mut stats {
                    None => stats = Some(WindowStats::new(ts, xs[i])),
                    Some(st) => st.add(ts, xs[i]),
                }
            }
            let stats = stats.unwrap();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = if n > 1 {
                xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
            } else {
                0.0
            };
            let scale = offset.abs() + 1e6;
            prop_assert_eq!(stats.count, n as u64);
            prop_assert!((stats.mean - mean).abs() <= 1e-9 * scale, "{} vs {}", stats.mean, mean);
            prop_assert!((stats.std() - var.sqrt()).abs() <= 1e-6 * (var.sqrt() + 1.0),
                "{} vs {}", stats.std(), var.sqrt());
            prop_assert_eq!(stats.min, xs.iter().cloned().fold(f64::INFINITY, f64::min));
            prop_assert_eq!(stats.max, xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            prop_assert_eq!(stats.last, xs[n - 1]);
            prop_assert_eq!(stats.last_ts, UnixMs(n as i64 - 1));
        }
    }

    #[test]
    fn a_single_reading_has_zero_std_and_is_its_own_last() {
        let s = WindowStats::new(UnixMs(5), 3.5);
        assert_eq!(s.std(), 0.0);
        assert_eq!((s.mean, s.min, s.max, s.last), (3.5, 3.5, 3.5, 3.5));
    }

    #[test]
    fn a_window_closes_once_the_watermark_passes_its_end_plus_lateness() {
        let mut agg = Aggregator::new(W, LATE);
        let m = key("m1");
        agg.add(
            &m,
            sample(T0.plus_ms(1_000), &[("a.x", 1.0), ("a.y", 2.0)]),
            T0,
        );
        agg.add(&m, sample(T0.plus_ms(59_000), &[("a.x", 3.0)]), T0);
        // Next window, but within lateness of the first one's end: still open.
        agg.add(&m, sample(T0.plus_ms(W + LATE), &[("a.x", 9.0)]), T0);
        assert!(agg.close_due(T0).is_empty());
        assert_eq!(agg.open_windows(), 3);

        agg.add(&m, sample(T0.plus_ms(W + LATE + 1), &[("a.x", 9.0)]), T0);
        let closed = agg.close_due(T0);
        assert_eq!(closed.len(), 2, "{closed:?}");
        let x = closed.iter().find(|w| w.channel.as_str() == "a.x").unwrap();
        assert_eq!((x.start, x.end), (T0, T0.plus_ms(W)));
        assert_eq!((x.count, x.mean, x.last), (2, 2.0, 3.0));
        assert!(x.check().is_ok());
        assert_eq!(agg.open_windows(), 1);
    }

    #[test]
    fn a_quiet_machines_window_closes_by_the_clock() {
        let mut agg = Aggregator::new(W, LATE);
        agg.add(&key("m1"), sample(T0.plus_ms(30_000), &[("a.x", 1.0)]), T0);
        let due = T0.plus_ms(W + LATE + W);
        assert!(agg.close_due(due).is_empty());
        let closed = agg.close_due(due.plus_ms(1));
        assert_eq!(closed.len(), 1);
        assert_eq!(agg.open_windows(), 0);
    }

    #[test]
    fn a_sample_for_a_closed_window_lands_in_a_separate_partial_window() {
        let mut agg = Aggregator::new(W, LATE);
        let m = key("m1");
        assert!(
            !agg.add(&m, sample(T0.plus_ms(1_000), &[("a.x", 1.0)]), T0)
                .late
        );
        agg.add(&m, sample(T0.plus_ms(2 * W), &[("a.x", 5.0)]), T0);
        let first = agg.close_due(T0);
        assert_eq!(first.len(), 1);

        let added = agg.add(&m, sample(T0.plus_ms(2_000), &[("a.x", 3.0)]), T0);
        assert!(added.late);
        let partial = agg.close_due(T0);
        assert_eq!(partial.len(), 1);
        assert_eq!((partial[0].start, partial[0].count), (T0, 1));
        assert_eq!(partial[0].mean, 3.0);
        // Together the two windows hold every sample of the interval.
        assert_eq!(first[0].count + partial[0].count, 2);
    }

    #[test]
    fn machines_have_their_own_watermark() {
        let mut agg = Aggregator::new(W, LATE);
        agg.add(&key("m1"), sample(T0.plus_ms(1_000), &[("a.x", 1.0)]), T0);
        agg.add(&key("m2"), sample(T0.plus_ms(5 * W), &[("a.x", 1.0)]), T0);
        assert!(agg.close_due(T0).is_empty());
        let late = agg.add(&key("m1"), sample(T0.plus_ms(2_000), &[("a.x", 1.0)]), T0);
        assert!(!late.late);
    }

    #[test]
    fn closing_everything_empties_the_aggregator() {
        let mut agg = Aggregator::new(W, LATE);
        agg.add(&key("m1"), sample(T0, &[("a.x", 1.0), ("b.y", 2.0)]), T0);
        agg.add(&key("m2"), sample(T0.plus_ms(W), &[("a.x", 1.0)]), T0);
        assert_eq!(agg.close_all().len(), 3);
        assert_eq!(agg.open_windows(), 0);
        assert!(agg.close_due(T0.plus_ms(100 * W)).is_empty());
    }
}
