//! Healthy behaviour per operating regime: each signal channel's mean and spread while
//! the part is young, per regime, so a reading becomes a z-score "how far from healthy
//! at these conditions". Learned from the early share of every run of a fleet.

use serde::{Deserialize, Serialize};

use super::linalg::Welford;
use super::regime::RegimeModel;
use super::runs::Run;

/// A channel whose spread (over all its rows) is below this is constant: no signal.
const CONSTANT_SD: f64 = 1e-9;
/// The healthy spread of a channel is floored at this share of its spread over whole
/// lives, so a channel that happens to be still while young does not explode later.
const MIN_SD_SHARE: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeBaseline {
    pub regimes: RegimeModel,
    /// `[regime][channel]`: healthy mean and spread; `None` for a channel that is
    /// constant in that regime.
    stats: Vec<Vec<Option<(f64, f64)>>>,
}

impl RegimeBaseline {
    /// Learns regimes from every row's operating channels, then each channel's healthy
    /// level per regime from the first `healthy_share` of every run.
    pub fn learn(runs: &[Run], healthy_share: f64) -> Self {
        let op_rows: Vec<Vec<f64>> = runs.iter().flat_map(|r| r.op.iter().cloned()).collect();
        let regimes = RegimeModel::learn(&op_rows);
        let k = regimes.count();
        let m = runs.first().map_or(0, |r| r.channels());
        // Healthy and whole-life moments per regime and channel (Welford: a constant
        // channel comes out with exactly zero spread).
        let mut healthy = vec![vec![Welford::default(); m]; k];
        let mut all = healthy.clone();
        for run in runs {
            let young = ((run.len() as f64) * healthy_share).ceil() as usize;
            for (i, (op, sig)) in run.op.iter().zip(&run.signals).enumerate() {
                let r = regimes.assign(op);
                for (c, v) in sig.iter().enumerate() {
                    if !v.is_finite() {
                        continue;
                    }
                    all[r][c].add(*v);
                    if i < young.max(2) {
                        healthy[r][c].add(*v);
                    }
                }
            }
        }
        let stats = healthy
            .iter()
            .zip(&all)
            .map(|(h, a)| {
                h.iter()
                    .zip(a)
                    .map(|(h, a)| {
                        if a.n < 2.0 {
                            return None;
                        }
                        let (mean, sd) = if h.n >= 2.0 {
                            (h.mean, h.sd())
                        } else {
                            (a.mean, a.sd())
                        };
                        let scale = mean.abs().max(1.0);
                        (a.sd() > CONSTANT_SD * scale)
                            .then(|| (mean, sd.max(MIN_SD_SHARE * a.sd())))
                    })
                    .collect()
            })
            .collect();
        Self { regimes, stats }
    }

    /// z-scores of one row's signals (0 where the channel carries nothing, NaN where
    /// the value is missing).
    pub fn normalise_row(&self, op: &[f64], signals: &[f64]) -> Vec<f64> {
        let r = self.regimes.assign(op);
        signals
            .iter()
            .zip(&self.stats[r])
            .map(|(v, s)| match s {
                Some((mean, sd)) => (v - mean) / sd,
                None if v.is_finite() => 0.0,
                None => f64::NAN,
            })
            .collect()
    }

    /// The run's z-scores, missing values carried forward (0 before the first).
    pub fn normalise(&self, run: &Run) -> Vec<Vec<f64>> {
        let m = run.channels();
        let mut last = vec![0.0; m];
        run.op
            .iter()
            .zip(&run.signals)
            .map(|(op, sig)| {
                let mut z = self.normalise_row(op, sig);
                for (v, l) in z.iter_mut().zip(last.iter_mut()) {
                    if v.is_finite() {
                        *l = *v;
                    } else {
                        *v = *l;
                    }
                }
                z
            })
            .collect()
    }

    /// Whether channel `c` varies in any regime (a constant channel carries no wear).
    pub fn varies(&self, c: usize) -> bool {
        self.stats
            .iter()
            .any(|r| r.get(c).is_some_and(Option::is_some))
    }
}
