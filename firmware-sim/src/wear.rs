//! Wear physics of one component instance, a *life*: when it was installed, when
//! degradation sets in (onset) and when it fails, and what its wear channels read in
//! between.
//!
//! Pure functions of time and operating conditions; no randomness except where a
//! caller passes its generator in, no I/O.
//!
//! The model: a life `L` is drawn from the part's Weibull distribution and an onset
//! fraction `u0` from [`ONSET_FRACTION`]. Wear is 0 until `installed + u0·L`, then
//! follows `w(x) = (exp(k·x) − 1) / (exp(k) − 1)` over `x ∈ [0, 1]` from onset to
//! failure, with a curvature `k` per failure mechanism. The component fails exactly
//! when `w` reaches 1. A channel's mean reading moves linearly with `w` from its
//! healthy to its failure level, so at the failure time the mean signal sits at the
//! failure level; operating load and ambient temperature move it a little around that.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal, Weibull};
use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;

/// Load at which a channel reads exactly its wear level (the machine's typical duty).
pub const NOMINAL_LOAD_PCT: f64 = 60.0;
/// Ambient temperature at which a channel reads exactly its wear level.
pub const NOMINAL_AMBIENT_C: f64 = 20.0;
/// Range of the share of a life that passes before degradation becomes measurable.
pub const ONSET_FRACTION: (f64, f64) = (0.6, 0.85);
/// Measurement noise (one standard deviation) as a share of `|failure − healthy|`.
pub const NOISE_FRACTION: f64 = 0.035;
/// Shortest life drawn. A part that dies within hours leaves no trend to learn from,
/// and with Weibull shapes ≥ 2 this cuts off well under 1 % of the distribution.
pub const MIN_LIFE_HOURS: f64 = 24.0;

/// How a component breaks down; decides the shape of its degradation curve and is
/// recorded in the ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Rolling-element fatigue: a spall grows slowly, then runs away.
    BearingSpall,
    /// Belt stretch and glazing: slip creeps up, accelerating moderately.
    BeltWear,
    /// Impeller erosion: flow falls and motor current rises, accelerating.
    ImpellerWear,
    /// A filter clogging with particles: pressure drop rises almost linearly.
    FilterClogging,
    /// Seat erosion of a valve: leakage grows, accelerating.
    ValveLeak,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BearingSpall => "bearing_spall",
            Self::BeltWear => "belt_wear",
            Self::ImpellerWear => "impeller_wear",
            Self::FilterClogging => "filter_clogging",
            Self::ValveLeak => "valve_leak",
        }
    }

    /// Curvature `k` of the degradation curve: near 0 is linear, larger values keep
    /// the signal flat for longer and steepen it towards failure.
    pub fn curvature(self) -> f64 {
        match self {
            Self::BearingSpall => 3.5,
            Self::BeltWear => 2.0,
            Self::ImpellerWear | Self::ValveLeak => 2.5,
            Self::FilterClogging => 1.0,
        }
    }
}

/// `(exp(k·x) − 1) / (exp(k) − 1)` for `x` clamped to `[0, 1]`: 0 at onset, 1 at failure.
pub fn wear_curve(x: f64, k: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    if k.abs() < 1e-9 {
        x
    } else {
        (k * x).exp_m1() / k.exp_m1()
    }
}

/// One life of one component instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Life {
    pub installed_at: UnixMs,
    /// Wear starts here; before it every wear channel reads healthy.
    pub onset_at: UnixMs,
    /// Wear reaches 1 and the component breaks down here.
    pub fails_at: UnixMs,
}

impl Life {
    /// A life of `length_ms` from `installed_at` whose onset comes after
    /// `onset_fraction` of it.
    pub fn from_length(installed_at: UnixMs, length_ms: i64, onset_fraction: f64) -> Self {
        let length_ms = length_ms.max(1);
        let onset_ms = (length_ms as f64 * onset_fraction.clamp(0.0, 1.0)).round() as i64;
        Self {
            installed_at,
            onset_at: installed_at.plus_ms(onset_ms.min(length_ms - 1)),
            fails_at: installed_at.plus_ms(length_ms),
        }
    }

    /// Draws a life from `distribution` (hours) starting at `installed_at`.
    pub fn draw<R: Rng + ?Sized>(
        rng: &mut R,
        distribution: &Weibull<f64>,
        installed_at: UnixMs,
    ) -> Self {
        let hours = draw_life_hours(rng, distribution);
        let onset = draw_onset_fraction(rng);
        Self::from_length(installed_at, hours_to_ms(hours), onset)
    }

    pub fn length_ms(&self) -> i64 {
        self.fails_at.0 - self.installed_at.0
    }

    /// Wear in `[0, 1]` at `t`: 0 up to the onset, 1 from the failure time on.
    pub fn wear_at(&self, t: UnixMs, mode: FailureMode) -> f64 {
        if t <= self.onset_at {
            0.0
        } else if t >= self.fails_at {
            1.0
        } else {
            let x = (t.0 - self.onset_at.0) as f64 / (self.fails_at.0 - self.onset_at.0) as f64;
            wear_curve(x, mode.curvature())
        }
    }

    /// True while the component is installed and has not failed.
    pub fn in_progress_at(&self, t: UnixMs) -> bool {
        self.installed_at <= t && t < self.fails_at
    }
}

/// A life length in hours from the part's Weibull distribution, at least [`MIN_LIFE_HOURS`].
pub fn draw_life_hours<R: Rng + ?Sized>(rng: &mut R, distribution: &Weibull<f64>) -> f64 {
    distribution.sample(rng).max(MIN_LIFE_HOURS)
}

pub fn draw_onset_fraction<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.random_range(ONSET_FRACTION.0..=ONSET_FRACTION.1)
}

pub fn hours_to_ms(hours: f64) -> i64 {
    (hours * UnixMs::HOUR as f64).round() as i64
}

/// How operating load moves a wear channel around its wear level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadEffect {
    None,
    /// The reading scales by `1 + per_pct · (load − nominal)`, as vibration does with
    /// cutting or compression force.
    Scale {
        per_pct: f64,
    },
    /// The reading shifts by `per_pct · (load − nominal)` in the channel's unit.
    Offset {
        per_pct: f64,
    },
}

/// The physics of one wear channel of a component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WearChannel {
    pub quantity: &'static str,
    pub unit: &'static str,
    /// Mean reading of a new part at nominal load and ambient.
    pub healthy: f64,
    /// Mean reading at the failure time at nominal load and ambient; may be below
    /// `healthy` (a pump's flow falls as it wears).
    pub failure: f64,
    pub load: LoadEffect,
    /// Shift per °C of ambient above nominal (temperatures follow the room).
    pub ambient_per_c: f64,
}

impl WearChannel {
    /// The reading wear alone explains: `healthy + (failure − healthy) · wear`.
    pub fn level(&self, wear: f64) -> f64 {
        self.healthy + (self.failure - self.healthy) * wear
    }

    /// Noise-free reading at `wear` under the given operating conditions.
    pub fn mean(&self, wear: f64, load_pct: f64, ambient_c: f64) -> f64 {
        let level = self.level(wear);
        let d_load = load_pct - NOMINAL_LOAD_PCT;
        let loaded = match self.load {
            LoadEffect::None => level,
            LoadEffect::Scale { per_pct } => level * (1.0 + per_pct * d_load),
            LoadEffect::Offset { per_pct } => level + per_pct * d_load,
        };
        loaded + self.ambient_per_c * (ambient_c - NOMINAL_AMBIENT_C)
    }

    pub fn noise_sd(&self) -> f64 {
        NOISE_FRACTION * (self.failure - self.healthy).abs()
    }

    /// A noisy reading; never negative, as none of the simulated quantities can be.
    pub fn read<R: Rng + ?Sized>(&self, rng: &mut R, wear: f64, load: f64, ambient: f64) -> f64 {
        let z: f64 = StandardNormal.sample(rng);
        (self.mean(wear, load, ambient) + self.noise_sd() * z).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::catalogue_channels;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const MODES: [FailureMode; 5] = [
        FailureMode::BearingSpall,
        FailureMode::BeltWear,
        FailureMode::ImpellerWear,
        FailureMode::FilterClogging,
        FailureMode::ValveLeak,
    ];

    fn life() -> Life {
        Life::from_length(UnixMs(1_000_000), 1000 * UnixMs::HOUR, 0.5)
    }

    #[test]
    fn wear_is_zero_before_onset_and_exactly_one_at_the_failure_time() {
        let l = life();
        for mode in MODES {
            assert_eq!(l.wear_at(l.installed_at, mode), 0.0);
            assert_eq!(l.wear_at(l.onset_at, mode), 0.0);
            assert_eq!(l.wear_at(l.installed_at.plus_ms(-5), mode), 0.0);
            assert!(l.wear_at(l.onset_at.plus_ms(UnixMs::HOUR), mode) > 0.0);
            assert_eq!(l.wear_at(l.fails_at, mode), 1.0);
            let just_before = l.wear_at(l.fails_at.plus_ms(-1), mode);
            assert!((1.0 - just_before) < 1e-6, "{mode:?}: {just_before}");
        }
    }

    #[test]
    fn wear_rises_monotonically_from_onset_to_failure() {
        let l = life();
        for mode in MODES {
            let mut previous = 0.0;
            let step = l.length_ms() / 500;
            let mut t = l.installed_at;
            while t <= l.fails_at {
                let w = l.wear_at(t, mode);
                assert!(w >= previous, "{mode:?} fell at {t}");
                previous = w;
                t = t.plus_ms(step);
            }
        }
    }

    #[test]
    fn a_bearing_wears_slowly_then_fast_while_a_filter_clogs_nearly_linearly() {
        let bearing = wear_curve(0.5, FailureMode::BearingSpall.curvature());
        let filter = wear_curve(0.5, FailureMode::FilterClogging.curvature());
        assert!(bearing < 0.2, "{bearing}");
        assert!((0.35..0.5).contains(&filter), "{filter}");
        assert_eq!(wear_curve(0.5, 0.0), 0.5);
    }

    #[test]
    fn every_channel_reaches_its_failure_level_at_the_failure_time_and_reads_healthy_before_onset()
    {
        let l = life();
        for (component, mode, channel) in catalogue_channels() {
            let at = |t| channel.mean(l.wear_at(t, mode), NOMINAL_LOAD_PCT, NOMINAL_AMBIENT_C);
            let name = format!("{component}.{}", channel.quantity);
            assert!((at(l.fails_at) - channel.failure).abs() < 1e-9, "{name}");
            assert!(
                (at(l.installed_at) - channel.healthy).abs() < 1e-9,
                "{name}"
            );
            assert!((at(l.onset_at) - channel.healthy).abs() < 1e-9, "{name}");
            // The mean moves towards the failure level all along the way.
            let toward = (channel.failure - channel.healthy).signum();
            let mut previous = at(l.onset_at);
            for i in 1..=100 {
                let t = l.onset_at.plus_ms((l.fails_at.0 - l.onset_at.0) * i / 100);
                assert!((at(t) - previous) * toward >= 0.0);
                previous = at(t);
            }
        }
    }

    #[test]
    fn a_wearing_coolant_pump_delivers_less_flow() {
        let (_, mode, flow) = catalogue_channels()
            .into_iter()
            .find(|(c, _, ch)| *c == "coolant_pump" && ch.quantity == "flow_lpm")
            .unwrap();
        let l = life();
        let early = flow.mean(l.wear_at(l.onset_at, mode), 60.0, 20.0);
        let late = flow.mean(
            l.wear_at(l.fails_at.plus_ms(-UnixMs::DAY), mode),
            60.0,
            20.0,
        );
        assert!(flow.failure < flow.healthy);
        assert!(late < early - 5.0, "{early} → {late}");
    }

    #[test]
    fn load_and_ambient_move_a_healthy_reading_by_only_a_few_percent_of_its_range() {
        for (component, _, channel) in catalogue_channels() {
            let range = (channel.failure - channel.healthy).abs();
            let nominal = channel.mean(0.0, NOMINAL_LOAD_PCT, NOMINAL_AMBIENT_C);
            for (load, ambient) in [(35.0, 20.0), (92.0, 20.0), (60.0, 17.0), (60.0, 29.0)] {
                let shift = (channel.mean(0.0, load, ambient) - nominal).abs();
                assert!(
                    shift <= 0.08 * range,
                    "{component}.{}: {shift} at load {load} ambient {ambient}",
                    channel.quantity
                );
            }
        }
    }

    #[test]
    fn noise_is_a_few_percent_of_the_range_and_readings_average_to_the_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (_, _, channel) in catalogue_channels() {
            let n = 4000;
            let mean = channel.mean(0.5, 60.0, 20.0);
            let avg = (0..n)
                .map(|_| channel.read(&mut rng, 0.5, 60.0, 20.0))
                .sum::<f64>()
                / n as f64;
            assert!((avg - mean).abs() < 3.0 * channel.noise_sd() / (n as f64).sqrt() + 1e-9);
        }
    }

    #[test]
    fn drawn_lives_follow_the_part_weibull() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (scale, shape) = (1600.0, 3.0);
        let weibull = Weibull::new(scale, shape).unwrap();
        let mut hours: Vec<f64> = (0..4001)
            .map(|_| {
                let l = Life::draw(&mut rng, &weibull, UnixMs(0));
                let onset = (l.onset_at.0 - l.installed_at.0) as f64 / l.length_ms() as f64;
                assert!(
                    (ONSET_FRACTION.0 - 1e-3..=ONSET_FRACTION.1 + 1e-3).contains(&onset),
                    "{onset}"
                );
                l.length_ms() as f64 / UnixMs::HOUR as f64
            })
            .collect();
        hours.sort_by(f64::total_cmp);
        let median = hours[2000];
        let expected = scale * std::f64::consts::LN_2.powf(1.0 / shape);
        assert!(
            (median / expected - 1.0).abs() < 0.04,
            "{median} vs {expected}"
        );
    }
}
