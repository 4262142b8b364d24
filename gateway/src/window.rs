//! Fixed-window aggregation of accepted samples, per machine and channel, in event time.
//!
//! A window `[start, start + window)` is aligned with [`UnixMs::window_start`]. The
//! windows of one machine that share a start form a *group*: they open with the first
//! sample in the interval and close together — when the machine's watermark (the
//! greatest sample `ts` seen from it) passes `end + lateness`, or, so that a machine that
//! went quiet still gets its last window out, when the clock passes
//! `end + lateness + window`. A sample for a group that has already closed is not
//! dropped: it opens a new partial group for the same interval, which is emitted like
//! any other; the server merges windows with the same key by count (and the moments
//! below merge exactly).
//!
//! Each window keeps count, mean, min, max, last and the sum of squared deviations
//! (`m2`, for `std`); windows of *vibration-like* channels also keep the third and
//! fourth central moment sums (`m3`, `m4`), from which RMS and kurtosis follow and which
//! merge exactly across partial windows. A group remembers the log position of its first
//! sample (the spool keeps the log from there while the group is open) and how many
//! samples it holds (for loss accounting).
//!
//! This module is pure: it never reads a clock, `now` is passed in.

use std::collections::{BTreeMap, HashMap};

use wearcast_protocol::{Channel, MachineId, Sample, TenantId, UnixMs, WindowAggregate};

use crate::wal::Lsn;

/// The machine a sample came from, as its topic names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineKey {
    pub tenant: TenantId,
    pub machine: MachineId,
}

/// Which channels get RMS and kurtosis: those whose quantity contains one of the
/// configured words (by default `vibration` and `accel`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VibrationChannels {
    words: Vec<String>,
}

impl VibrationChannels {
    pub fn new(words: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            words: words
                .into_iter()
                .map(|w| w.into().to_ascii_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }

    pub fn matches(&self, channel: &Channel) -> bool {
        let quantity = channel.quantity();
        self.words.iter().any(|w| contains_ignore_case(quantity, w))
    }
}

fn contains_ignore_case(haystack: &str, lower_needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(lower_needle.len().max(1))
        .any(|w| w.eq_ignore_ascii_case(lower_needle.as_bytes()))
}

/// Streaming statistics of one window. Welford's algorithm (and Terriberry's extension
/// to the third and fourth moments), so the results stay accurate for readings with a
/// large offset such as temperatures in kelvin.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Sums of cubed and fourth-power deviations; `None` unless the channel is
    /// vibration-like (they cost a little per reading).
    pub higher: Option<(f64, f64)>,
    pub min: f64,
    pub max: f64,
    /// The reading with the greatest timestamp (the latest arrival wins a tie).
    pub last: f64,
    pub last_ts: UnixMs,
}

impl WindowStats {
    pub fn new(ts: UnixMs, value: f64, higher_moments: bool) -> Self {
        Self {
            count: 1,
            mean: value,
            m2: 0.0,
            higher: higher_moments.then_some((0.0, 0.0)),
            min: value,
            max: value,
            last: value,
            last_ts: ts,
        }
    }

    pub fn add(&mut self, ts: UnixMs, value: f64) {
        let n1 = self.count as f64;
        self.count += 1;
        let n = self.count as f64;
        let delta = value - self.mean;
        let delta_n = delta / n;
        let term1 = delta * delta_n * n1;
        if let Some((m3, m4)) = &mut self.higher {
            let delta_n2 = delta_n * delta_n;
            *m4 += term1 * delta_n2 * (n * n - 3.0 * n + 3.0) + 6.0 * delta_n2 * self.m2
                - 4.0 * delta_n * *m3;
            *m3 += term1 * delta_n * (n - 2.0) - 3.0 * delta_n * self.m2;
        }
        self.mean += delta_n;
        self.m2 += term1;
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

    /// Root mean square of the readings: `sqrt(mean² + m2 / n)`.
    pub fn rms(&self) -> f64 {
        (self.mean * self.mean + self.m2.max(0.0) / self.count as f64).sqrt()
    }

    /// Kurtosis (not excess: a normal distribution gives 3), `n · m4 / m2²`; `None`
    /// without higher moments or when every reading is the same.
    pub fn kurtosis(&self) -> Option<f64> {
        let (_, m4) = self.higher?;
        let k = self.count as f64 * m4 / (self.m2 * self.m2);
        (self.m2 > 0.0 && k.is_finite()).then_some(k.max(0.0))
    }
}

/// The windows of one machine that share a start.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowGroup {
    /// Log position of the record that brought the group's first sample.
    pub first_lsn: Lsn,
    /// Samples that contributed readings.
    pub samples: u64,
    pub channels: BTreeMap<Channel, WindowStats>,
}

/// A group taken out of the aggregator to be emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedGroup {
    pub machine: MachineKey,
    pub start: UnixMs,
    pub group: WindowGroup,
}

impl ClosedGroup {
    /// The group's windows, ordered by channel.
    pub fn windows(&self, window_ms: i64) -> impl Iterator<Item = WindowAggregate> + '_ {
        self.group.channels.iter().map(move |(channel, stats)| {
            aggregate(&self.machine, channel.clone(), self.start, window_ms, stats)
        })
    }
}

/// The open groups of one machine, in start order so closing pops from the front.
#[derive(Debug, Default)]
struct MachineWindows {
    /// Greatest sample `ts` seen from this machine: its event-time progress.
    watermark: Option<UnixMs>,
    groups: BTreeMap<UnixMs, WindowGroup>,
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
    vibration: VibrationChannels,
    machines: HashMap<MachineKey, MachineWindows>,
    /// Open windows (one per channel of each open group).
    open: usize,
}

impl Aggregator {
    /// `window_ms` must be positive (the config check makes sure of it).
    pub fn new(window_ms: i64, lateness_ms: i64, vibration: VibrationChannels) -> Self {
        Self {
            window_ms: window_ms.max(1),
            lateness_ms: lateness_ms.max(0),
            vibration,
            machines: HashMap::new(),
            open: 0,
        }
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Number of open (not yet emitted) windows.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// Adds every reading of an accepted sample, which arrived in the record at `lsn`.
    pub fn add(&mut self, key: &MachineKey, sample: Sample, lsn: Lsn, now: UnixMs) -> Added {
        let (window_ms, lateness_ms) = (self.window_ms, self.lateness_ms);
        let machine = match self.machines.get_mut(key) {
            Some(m) => m,
            None => self.machines.entry(key.clone()).or_default(),
        };
        let start = sample.ts.window_start(window_ms);
        let late = is_closed(start, machine.watermark, now, window_ms, lateness_ms);
        machine.watermark = Some(machine.watermark.map_or(sample.ts, |w| w.max(sample.ts)));
        let group = machine.groups.entry(start).or_insert_with(|| WindowGroup {
            first_lsn: lsn,
            samples: 0,
            channels: BTreeMap::new(),
        });
        group.samples += 1;
        for (channel, value) in sample.readings {
            match group.channels.get_mut(&channel) {
                Some(stats) => stats.add(sample.ts, value),
                None => {
                    let higher = self.vibration.matches(&channel);
                    group
                        .channels
                        .insert(channel, WindowStats::new(sample.ts, value, higher));
                    self.open += 1;
                }
            }
        }
        Added { late }
    }

    /// Removes and returns every group that is closed at `now`, ordered by start, then
    /// machine.
    pub fn close_due(&mut self, now: UnixMs) -> Vec<ClosedGroup> {
        let (window_ms, lateness_ms) = (self.window_ms, self.lateness_ms);
        self.take(|start, watermark, _| is_closed(start, watermark, now, window_ms, lateness_ms))
    }

    /// Removes and returns every open group (at shutdown).
    pub fn close_all(&mut self) -> Vec<ClosedGroup> {
        self.take(|_, _, _| true)
    }

    /// Removes and returns the groups whose first sample arrived before `lsn`, so the
    /// log before `lsn` can go.
    pub fn close_older_than(&mut self, lsn: Lsn) -> Vec<ClosedGroup> {
        self.take(|_, _, group| group.first_lsn < lsn)
    }

    fn take(
        &mut self,
        due: impl Fn(UnixMs, Option<UnixMs>, &WindowGroup) -> bool,
    ) -> Vec<ClosedGroup> {
        let mut out = Vec::new();
        for (key, machine) in &mut self.machines {
            let starts: Vec<UnixMs> = machine
                .groups
                .iter()
                .filter(|(start, group)| due(**start, machine.watermark, group))
                .map(|(start, _)| *start)
                .collect();
            for start in starts {
                if let Some(group) = machine.groups.remove(&start) {
                    self.open -= group.channels.len();
                    out.push(ClosedGroup {
                        machine: key.clone(),
                        start,
                        group,
                    });
                }
            }
        }
        out.sort_by(|a, b| (a.start, &a.machine).cmp(&(b.start, &b.machine)));
        out
    }

    /// Drops a group without emitting it (replaying a batch that emitted it).
    pub fn remove_group(&mut self, key: &MachineKey, start: UnixMs) {
        if let Some(machine) = self.machines.get_mut(key)
            && let Some(group) = machine.groups.remove(&start)
        {
            self.open -= group.channels.len();
        }
    }

    /// Log position of the oldest open group's first sample.
    pub fn oldest_lsn(&self) -> Option<Lsn> {
        self.machines
            .values()
            .flat_map(|m| m.groups.values().map(|g| g.first_lsn))
            .min()
    }

    /// Every machine's watermark, for checkpoints.
    pub fn watermarks(&self) -> Vec<(MachineKey, UnixMs)> {
        let mut out: Vec<_> = self
            .machines
            .iter()
            .filter_map(|(k, m)| m.watermark.map(|w| (k.clone(), w)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Raises a machine's watermark to at least `ts` (restoring a checkpoint).
    pub fn raise_watermark(&mut self, key: &MachineKey, ts: UnixMs) {
        let machine = self.machines.entry(key.clone()).or_default();
        machine.watermark = Some(machine.watermark.map_or(ts, |w| w.max(ts)));
    }
}

/// The closing rule of the module doc. Monotone in `start`.
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

    fn aggregator() -> Aggregator {
        Aggregator::new(W, LATE, VibrationChannels::new(["vibration", "accel"]))
    }

    fn windows(groups: &[ClosedGroup]) -> Vec<WindowAggregate> {
        groups.iter().flat_map(|g| g.windows(W)).collect()
    }

    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        let mut s = seed | 1;
        for i in (1..n).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        order
    }

    fn stats_of(xs: &[f64], order: &[usize], higher: bool) -> WindowStats {
        let mut stats: Option<WindowStats> = None;
        for &i in order {
            let ts = UnixMs(i as i64);
            match &mut stats {
                None => stats = Some(WindowStats::new(ts, xs[i], higher)),
                Some(st) => st.add(ts, xs[i]),
            }
        }
        stats.unwrap()
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
            let order = shuffled(n, shuffle_seed);
            let xs: Vec<f64> = values.iter().map(|v| v + offset).collect();
            let stats = stats_of(&xs, &order, false);
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
            prop_assert_eq!(stats.higher, None);
        }

        #[test]
        fn rms_and_kurtosis_match_a_naive_computation(
            values in proptest::collection::vec(-50f64..50.0, 2..300),
            offset in -100f64..100.0,
            shuffle_seed in any::<u64>(),
        ) {
            let xs: Vec<f64> = values.iter().map(|v| v + offset).collect();
            let n = xs.len() as f64;
            let stats = stats_of(&xs, &shuffled(xs.len(), shuffle_seed), true);
            let rms = (xs.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
            prop_assert!((stats.rms() - rms).abs() <= 1e-9 * (rms + 1.0), "{} vs {rms}", stats.rms());
            let mean = xs.iter().sum::<f64>() / n;
            let m2: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
            let m4: f64 = xs.iter().map(|x| (x - mean).powi(4)).sum();
            if m2 > 1e-6 {
                let kurtosis = n * m4 / (m2 * m2);
                let got = stats.kurtosis().unwrap();
                prop_assert!((got - kurtosis).abs() <= 1e-6 * kurtosis.max(1.0), "{got} vs {kurtosis}");
            }
        }
    }

    #[test]
    fn a_single_reading_has_zero_std_is_its_own_last_and_has_no_kurtosis() {
        let s = WindowStats::new(UnixMs(5), 3.5, true);
        assert_eq!(s.std(), 0.0);
        assert_eq!((s.mean, s.min, s.max, s.last), (3.5, 3.5, 3.5, 3.5));
        assert_eq!(s.rms(), 3.5);
        assert_eq!(s.kurtosis(), None);
    }

    #[test]
    fn a_normal_signal_has_a_kurtosis_near_three_and_spikes_raise_it() {
        // A deterministic, roughly normal signal: sums of uniform steps.
        let mut x = 12345u64;
        let mut next = || {
            let mut s = 0.0;
            for _ in 0..12 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s += (x >> 11) as f64 / (1u64 << 53) as f64;
            }
            s - 6.0
        };
        let mut stats = WindowStats::new(UnixMs(0), next(), true);
        for i in 1..20_000 {
            stats.add(UnixMs(i), next());
        }
        let k = stats.kurtosis().unwrap();
        assert!((2.8..3.2).contains(&k), "{k}");
        // A bearing defect: rare large impacts.
        for i in 0..20 {
            stats.add(UnixMs(20_000 + i), 12.0);
        }
        assert!(stats.kurtosis().unwrap() > 5.0);
    }

    #[test]
    fn vibration_like_channels_are_recognised_by_their_quantity() {
        let v = VibrationChannels::new(["vibration", "Accel"]);
        let c = |s: &str| Channel::parse(s).unwrap();
        assert!(v.matches(&c("spindle_bearing.vibration_rms")));
        assert!(v.matches(&c("main.ACCEL_g")));
        assert!(!v.matches(&c("vibration.temperature_c")));
        assert!(!VibrationChannels::new(Vec::<String>::new()).matches(&c("a.vibration")));
    }

    #[test]
    fn a_group_closes_once_the_watermark_passes_its_end_plus_lateness() {
        let mut agg = aggregator();
        let m = key("m1");
        agg.add(
            &m,
            sample(T0.plus_ms(1_000), &[("a.x", 1.0), ("a.y", 2.0)]),
            10,
            T0,
        );
        agg.add(&m, sample(T0.plus_ms(59_000), &[("a.x", 3.0)]), 20, T0);
        // Next window, but within lateness of the first one's end: still open.
        agg.add(&m, sample(T0.plus_ms(W + LATE), &[("a.x", 9.0)]), 30, T0);
        assert!(agg.close_due(T0).is_empty());
        assert_eq!(agg.open_windows(), 3);
        assert_eq!(agg.oldest_lsn(), Some(10));

        agg.add(
            &m,
            sample(T0.plus_ms(W + LATE + 1), &[("a.x", 9.0)]),
            40,
            T0,
        );
        let closed = agg.close_due(T0);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].group.samples, closed[0].group.first_lsn),
            (2, 10)
        );
        let w = windows(&closed);
        assert_eq!(w.len(), 2, "{w:?}");
        let x = w.iter().find(|w| w.channel.as_str() == "a.x").unwrap();
        assert_eq!((x.start, x.end), (T0, T0.plus_ms(W)));
        assert_eq!((x.count, x.mean, x.last), (2, 2.0, 3.0));
        assert!(x.check().is_ok());
        assert_eq!(agg.open_windows(), 1);
        assert_eq!(agg.oldest_lsn(), Some(30));
    }

    #[test]
    fn a_quiet_machines_window_closes_by_the_clock() {
        let mut agg = aggregator();
        agg.add(
            &key("m1"),
            sample(T0.plus_ms(30_000), &[("a.x", 1.0)]),
            0,
            T0,
        );
        let due = T0.plus_ms(W + LATE + W);
        assert!(agg.close_due(due).is_empty());
        let closed = agg.close_due(due.plus_ms(1));
        assert_eq!(closed.len(), 1);
        assert_eq!(agg.open_windows(), 0);
        assert_eq!(agg.oldest_lsn(), None);
    }

    #[test]
    fn a_sample_for_a_closed_window_lands_in_a_separate_partial_window() {
        let mut agg = aggregator();
        let m = key("m1");
        assert!(
            !agg.add(&m, sample(T0.plus_ms(1_000), &[("a.x", 1.0)]), 0, T0)
                .late
        );
        agg.add(&m, sample(T0.plus_ms(2 * W), &[("a.x", 5.0)]), 1, T0);
        let first = windows(&agg.close_due(T0));
        assert_eq!(first.len(), 1);

        let added = agg.add(&m, sample(T0.plus_ms(2_000), &[("a.x", 3.0)]), 2, T0);
        assert!(added.late);
        let partial = windows(&agg.close_due(T0));
        assert_eq!(partial.len(), 1);
        assert_eq!((partial[0].start, partial[0].count), (T0, 1));
        assert_eq!(partial[0].mean, 3.0);
        // Together the two windows hold every sample of the interval.
        assert_eq!(first[0].count + partial[0].count, 2);
    }

    #[test]
    fn machines_have_their_own_watermark() {
        let mut agg = aggregator();
        agg.add(
            &key("m1"),
            sample(T0.plus_ms(1_000), &[("a.x", 1.0)]),
            0,
            T0,
        );
        agg.add(
            &key("m2"),
            sample(T0.plus_ms(5 * W), &[("a.x", 1.0)]),
            1,
            T0,
        );
        assert!(agg.close_due(T0).is_empty());
        let late = agg.add(
            &key("m1"),
            sample(T0.plus_ms(2_000), &[("a.x", 1.0)]),
            2,
            T0,
        );
        assert!(!late.late);
    }

    #[test]
    fn closing_everything_or_everything_older_than_a_position_empties_what_it_says() {
        let mut agg = aggregator();
        agg.add(&key("m1"), sample(T0, &[("a.x", 1.0), ("b.y", 2.0)]), 5, T0);
        agg.add(&key("m2"), sample(T0.plus_ms(W), &[("a.x", 1.0)]), 9, T0);
        let old = agg.close_older_than(9);
        assert_eq!((old.len(), windows(&old).len()), (1, 2));
        assert_eq!(agg.open_windows(), 1);
        assert_eq!(windows(&agg.close_all()).len(), 1);
        assert_eq!(agg.open_windows(), 0);
        assert!(agg.close_due(T0.plus_ms(100 * W)).is_empty());
    }

    #[test]
    fn a_removed_group_is_gone_and_watermarks_can_be_restored() {
        let mut agg = aggregator();
        agg.add(&key("m1"), sample(T0, &[("a.x", 1.0)]), 5, T0);
        agg.remove_group(&key("m1"), T0);
        assert_eq!(agg.open_windows(), 0);
        assert_eq!(agg.watermarks(), vec![(key("m1"), T0)]);
        let mut restored = aggregator();
        restored.raise_watermark(&key("m1"), T0.plus_ms(2 * W));
        // The restored watermark closes the first window right away.
        restored.add(&key("m1"), sample(T0, &[("a.x", 1.0)]), 6, T0);
        assert_eq!(restored.close_due(T0).len(), 1);
    }
}
