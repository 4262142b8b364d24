//! What a fleet's run-to-failure history teaches, put together: the healthy baseline
//! per operating regime, which channels carry wear, their fusion into one health index,
//! a library of past trajectories for similarity matching, and the life distribution.
//! [`FleetWearModel::predict`] turns a unit's history so far into a remaining-life
//! distribution. Pure: runs in, model out; model and run in, distribution out.

use serde::{Deserialize, Serialize};
use wearcast_protocol::registry::WeibullLife;

use super::fusion::HealthIndexFusion;
use super::mixture::KernelMixture;
use super::normalise::RegimeBaseline;
use super::relevance::{ChannelScore, score_channels};
use super::runs::{Run, median};
use super::similarity::SimilarityLibrary;
use super::weibull::{ObservedLife, fit_weibull, weibull_conditional_quantile};

/// The settings of the learning method. Lengths are shares of the fleet's median life,
/// so the same settings serve lives counted in cycles or in hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnSettings {
    /// Early share of every run taken as healthy for the baseline.
    pub healthy_share: f64,
    /// Channels whose relevance (trendability × prognosability) is below this are not
    /// fused.
    pub min_relevance: f64,
    /// The wear target starts rising when this share of the median life remains.
    pub knee_share: f64,
    /// Rows of recent history matched against past runs, as a share of the median life.
    pub window_share: f64,
    /// Past runs that vote on the remaining life, as a share of the library (≥ 3).
    pub neighbour_share: f64,
    /// Ridge penalty of the fusion regression.
    pub ridge: f64,
    /// Kernel width of each vote, in units of the votes' spread (calibrated).
    pub bandwidth_factor: f64,
    /// Floor of that spread, as a share of the median life.
    pub min_spread_share: f64,
}

impl Default for LearnSettings {
    fn default() -> Self {
        Self {
            healthy_share: 0.3,
            min_relevance: 0.0,
            knee_share: 0.65,
            window_share: 0.4,
            neighbour_share: 0.1,
            ridge: 1e-4,
            bandwidth_factor: 1.0,
            min_spread_share: 0.03,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    #[error("need at least {need} runs to failure to learn from, got {got}")]
    TooFewRuns { need: usize, got: usize },
    #[error("no channel varies: there is no signal to learn wear from")]
    NoSignal,
}

/// Fewest runs a model is learned from.
pub const MIN_RUNS: usize = 3;

/// A remaining-life prediction for one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub distribution: KernelMixture,
    /// Health index at the last row.
    pub health_index: f64,
    /// How many past runs voted.
    pub neighbours: usize,
}

#[derive(Clone, Debug)]
pub struct FleetWearModel {
    pub settings: LearnSettings,
    pub baseline: RegimeBaseline,
    pub scores: Vec<ChannelScore>,
    pub fusion: HealthIndexFusion,
    library: SimilarityLibrary,
    /// Weibull fit of the run lengths (time units of the history), the sanity bound.
    pub life: Option<WeibullLife>,
    pub median_life: f64,
    pub median_rows: f64,
}

/// Length of a run to failure in its time unit, counting the step before its first
/// row (a run observed at times 1..=L lived L).
pub fn life_length(run: &Run) -> f64 {
    run.span() + time_step(run)
}

/// The run's typical time between rows (1 if it cannot tell).
pub fn time_step(run: &Run) -> f64 {
    let steps: Vec<f64> = run.time.windows(2).map(|w| w[1] - w[0]).collect();
    let s = median(&steps);
    if s > 0.0 { s } else { 1.0 }
}

impl FleetWearModel {
    /// Learns everything from runs to failure.
    pub fn learn(runs: &[Run], settings: &LearnSettings) -> Result<Self, LearnError> {
        if runs.len() < MIN_RUNS {
            return Err(LearnError::TooFewRuns {
                need: MIN_RUNS,
                got: runs.len(),
            });
        }
        let baseline = RegimeBaseline::learn(runs, settings.healthy_share);
        let z: Vec<Vec<Vec<f64>>> = runs.iter().map(|r| baseline.normalise(r)).collect();
        Self::learn_normalised(runs, &z, baseline, settings)
    }

    /// Learns from runs already normalised by `baseline` (`z[run][row][channel]`), so
    /// cross-validation normalises once.
    pub fn learn_normalised(
        runs: &[Run],
        z: &[Vec<Vec<f64>>],
        baseline: RegimeBaseline,
        settings: &LearnSettings,
    ) -> Result<Self, LearnError> {
        if runs.len() < MIN_RUNS {
            return Err(LearnError::TooFewRuns {
                need: MIN_RUNS,
                got: runs.len(),
            });
        }
        let channels = runs[0].channels();
        let scores = score_channels(z, channels);
        let varying: Vec<usize> = (0..channels).filter(|c| baseline.varies(*c)).collect();
        let mut chosen: Vec<usize> = varying
            .iter()
            .copied()
            .filter(|c| scores[*c].relevance >= settings.min_relevance)
            .collect();
        if chosen.is_empty() {
            // Too strict a bar for this fleet: keep the single most relevant channel.
            chosen = varying
                .iter()
                .copied()
                .max_by(|a, b| scores[*a].relevance.total_cmp(&scores[*b].relevance))
                .into_iter()
                .collect();
        }
        if chosen.is_empty() {
            return Err(LearnError::NoSignal);
        }
        let lives: Vec<f64> = runs.iter().map(life_length).collect();
        let median_life = median(&lives);
        let median_rows = median(&runs.iter().map(|r| r.len() as f64).collect::<Vec<_>>());
        let remaining: Vec<Vec<f64>> = runs
            .iter()
            .map(|r| (0..r.len()).map(|i| r.remaining_after(i)).collect())
            .collect();
        let knee = settings.knee_share * median_life;
        let fusion = HealthIndexFusion::learn(z, &remaining, &chosen, knee, settings.ridge)
            .ok_or(LearnError::NoSignal)?;
        let library = SimilarityLibrary::new(
            &z.iter()
                .zip(&remaining)
                .map(|(rows, rem)| (rows.iter().map(|r| fusion.apply(r)).collect(), rem.clone()))
                .collect::<Vec<_>>(),
        );
        let life = fit_weibull(
            &lives
                .iter()
                .map(|h| ObservedLife::failure(*h))
                .collect::<Vec<_>>(),
        );
        Ok(Self {
            settings: settings.clone(),
            baseline,
            scores,
            fusion,
            library,
            life,
            median_life,
            median_rows,
        })
    }

    /// The health index of every row of `run`.
    pub fn health_index(&self, run: &Run) -> Vec<f64> {
        self.baseline
            .normalise(run)
            .iter()
            .map(|z| self.fusion.apply(z))
            .collect()
    }

    /// The remaining life after the last row of `run` (its history so far).
    pub fn predict(&self, run: &Run) -> Option<Prediction> {
        let z = self.baseline.normalise(run);
        self.predict_normalised(run, &z)
    }

    /// As [`Self::predict`], for a run already normalised by this model's baseline.
    pub fn predict_normalised(&self, run: &Run, z: &[Vec<f64>]) -> Option<Prediction> {
        let hi: Vec<f64> = z.iter().map(|r| self.fusion.apply(r)).collect();
        let window = (self.settings.window_share * self.median_rows)
            .round()
            .max(2.0) as usize;
        let neighbours =
            ((self.settings.neighbour_share * self.library.len() as f64).round() as usize).max(3);
        let votes = self.library.matches(&hi, window, neighbours);
        let atoms: Vec<(f64, f64)> = votes.iter().map(|m| (m.remaining, m.weight)).collect();
        let age = life_length(run);
        let cap = self
            .life
            .map(|w| weibull_conditional_quantile(w.shape, w.scale_hours, age, 0.999));
        let raw = KernelMixture::new(&atoms, 1.0, cap)?;
        let (_, spread) = raw.atom_moments();
        let spread = spread.max(self.settings.min_spread_share * self.median_life);
        Some(Prediction {
            distribution: raw.with_bandwidth(self.settings.bandwidth_factor * spread),
            health_index: hi.last().copied().unwrap_or(0.0),
            neighbours: votes.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::calibration::{
        CrossValidation, Prepared, calibrate_bandwidth, coverage, cross_validate, rmse,
    };
    use crate::model::runs::synthetic::fleet;

    #[test]
    fn learning_finds_the_regimes_and_the_wear_channels() {
        let runs = fleet(50, 1);
        let m = FleetWearModel::learn(&runs, &LearnSettings::default()).unwrap();
        assert_eq!(m.baseline.regimes.count(), 2);
        assert!(
            !m.baseline.varies(0),
            "the constant channel carries nothing"
        );
        assert!(!m.fusion.channels.contains(&0));
        let s = &m.scores;
        assert!(s[1].relevance > 0.5 && s[2].relevance > 0.5, "{s:?}");
        assert!(s[3].relevance < 0.1, "{s:?}");
        // Both wear channels pull the index towards failure: rising with channel 1,
        // falling with channel 2.
        let w =
            |c: usize| m.fusion.weights[m.fusion.channels.iter().position(|x| *x == c).unwrap()];
        assert!(w(1) > 0.0 && w(2) < 0.0, "{:?}", m.fusion);
        // The life prior is the fleet's Weibull(4, 200).
        let life = m.life.unwrap();
        assert!(
            (life.shape - 4.0).abs() < 1.0 && (life.scale_hours - 200.0).abs() < 20.0,
            "{life:?}"
        );
    }

    #[test]
    fn held_back_units_are_predicted_close_to_their_truth_with_calibrated_intervals() {
        let runs = fleet(40, 2);
        let settings = LearnSettings::default();
        let prepared = Prepared::new(&runs, &settings);
        let cv = CrossValidation {
            folds: 4,
            cuts: 5,
            ..CrossValidation::default()
        };
        let held = cross_validate(&prepared, &settings, &cv, &mut || {}).unwrap();
        assert_eq!(held.len(), 40 * 5);
        // Remaining life beyond 60% of the life is not visible in the signal (the
        // wear starts at 40%): capped there, the medians are within a few percent of a
        // ~180-cycle life.
        let e = rmse(&held, 1.0, Some(100.0));
        assert!(e < 15.0, "RMSE {e}");
        let factor = calibrate_bandwidth(&held, 0.8);
        let c = coverage(&held, factor, 0.8);
        assert!((c - 0.8).abs() < 0.03, "coverage {c} at factor {factor}");
    }

    #[test]
    fn too_few_runs_or_no_signal_are_errors() {
        let runs = fleet(2, 3);
        assert_eq!(
            FleetWearModel::learn(&runs, &LearnSettings::default()).unwrap_err(),
            LearnError::TooFewRuns { need: 3, got: 2 }
        );
        let mut flat = fleet(5, 4);
        for r in &mut flat {
            for row in &mut r.signals {
                row.iter_mut().for_each(|v| *v = 1.0);
            }
        }
        assert_eq!(
            FleetWearModel::learn(&flat, &LearnSettings::default()).unwrap_err(),
            LearnError::NoSignal
        );
    }
}
