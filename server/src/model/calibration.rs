//! Calibration on held-back history: the settings of the learning method and the width
//! of its intervals are chosen by cross-validation over the training runs themselves —
//! each fold's runs are cut at random points, as histories that stop early, and
//! predicted by a model learned from the other folds. Nothing from the data being
//! predicted is looked at.

use super::learner::{FleetWearModel, LearnError, LearnSettings};
use super::linalg::SplitMix64;
use super::mixture::KernelMixture;
use super::normalise::RegimeBaseline;
use super::runs::Run;

/// One held-back prediction: the truth and the distribution, before calibration of the
/// width (bandwidth factor 1).
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOut {
    pub truth: f64,
    pub distribution: KernelMixture,
    /// The spread the bandwidth factor multiplies.
    pub spread: f64,
}

/// How the runs are cut for cross-validation.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossValidation {
    pub folds: usize,
    /// Cut points per held-back run.
    pub cuts: usize,
    /// Cuts fall uniformly between this share of the run and its last row.
    pub min_share: f64,
    pub seed: u64,
}

impl Default for CrossValidation {
    fn default() -> Self {
        Self {
            folds: 5,
            cuts: 5,
            min_share: 0.1,
            seed: 0xC0FFEE,
        }
    }
}

/// The runs normalised once (the baseline learns no remaining-life information, only
/// healthy levels and operating regimes, so it is shared by the folds).
pub struct Prepared<'a> {
    pub runs: &'a [Run],
    pub baseline: RegimeBaseline,
    pub z: Vec<Vec<Vec<f64>>>,
}

impl<'a> Prepared<'a> {
    pub fn new(runs: &'a [Run], settings: &LearnSettings) -> Self {
        let baseline = RegimeBaseline::learn(runs, settings.healthy_share);
        let z = runs.iter().map(|r| baseline.normalise(r)).collect();
        Self { runs, baseline, z }
    }
}

/// Held-back predictions for `settings`; `on_fold` is called after each fold.
pub fn cross_validate(
    prepared: &Prepared<'_>,
    settings: &LearnSettings,
    cv: &CrossValidation,
    on_fold: &mut dyn FnMut(),
) -> Result<Vec<HeldOut>, LearnError> {
    let n = prepared.runs.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(cv.seed);
    for i in (1..n).rev() {
        order.swap(i, rng.range(0, i + 1));
    }
    let settings = LearnSettings {
        bandwidth_factor: 1.0,
        ..settings.clone()
    };
    let mut out = Vec::new();
    let folds = cv.folds.clamp(2, n.max(2));
    for f in 0..folds {
        let held: Vec<usize> = order.iter().copied().skip(f).step_by(folds).collect();
        let train: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| !held.contains(i))
            .collect();
        let runs: Vec<Run> = train.iter().map(|i| prepared.runs[*i].clone()).collect();
        let z: Vec<Vec<Vec<f64>>> = train.iter().map(|i| prepared.z[*i].clone()).collect();
        let model =
            FleetWearModel::learn_normalised(&runs, &z, prepared.baseline.clone(), &settings)?;
        let mut cut_rng = SplitMix64::new(cv.seed ^ (0x9E37 + f as u64));
        for i in held {
            let run = &prepared.runs[i];
            let len = run.len();
            if len < 3 {
                continue;
            }
            let lo = ((cv.min_share * len as f64).ceil() as usize).clamp(2, len - 1);
            for _ in 0..cv.cuts {
                let cut = cut_rng.range(lo, len);
                let prefix = run.prefix(cut);
                if let Some(p) = model.predict_normalised(&prefix, &prepared.z[i][..cut]) {
                    out.push(HeldOut {
                        truth: run.remaining_after(cut - 1),
                        spread: p.distribution.bandwidth,
                        distribution: p.distribution,
                    });
                }
            }
        }
        on_fold();
    }
    Ok(out)
}

/// Share of held-back truths inside the central `level` interval at `factor`.
pub fn coverage(held: &[HeldOut], factor: f64, level: f64) -> f64 {
    if held.is_empty() {
        return 0.0;
    }
    let lo_q = 0.5 - level / 2.0;
    let hi_q = 0.5 + level / 2.0;
    let inside = held
        .iter()
        .filter(|h| {
            let d = h.distribution.with_bandwidth(factor * h.spread);
            d.quantile(lo_q) <= h.truth && h.truth <= d.quantile(hi_q)
        })
        .count();
    inside as f64 / held.len() as f64
}

/// The bandwidth factor whose central `level` interval covers that share of the
/// held-back truths (coverage rises with the factor, so bisection on its logarithm).
pub fn calibrate_bandwidth(held: &[HeldOut], level: f64) -> f64 {
    let (mut lo, mut hi) = (0.05f64, 20.0f64);
    if coverage(held, lo, level) >= level {
        return lo;
    }
    if coverage(held, hi, level) < level {
        return hi;
    }
    for _ in 0..20 {
        let mid = (lo * hi).sqrt();
        if coverage(held, mid, level) < level {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Root mean squared error of the medians, both medians and truths capped at `cap` if
/// given (remaining life beyond the cap counts as the cap, as in published work).
pub fn rmse(held: &[HeldOut], factor: f64, cap: Option<f64>) -> f64 {
    let c = |v: f64| cap.map_or(v, |c| v.min(c));
    let se: f64 = held
        .iter()
        .map(|h| {
            let p50 = h
                .distribution
                .with_bandwidth(factor * h.spread)
                .quantile(0.5);
            (c(p50) - c(h.truth)).powi(2)
        })
        .sum();
    (se / held.len().max(1) as f64).sqrt()
}
