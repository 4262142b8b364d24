//! The Weibull life distribution of a part type: conditioned on survival to a given age
//! it is the fleet prior for a component with no usable wear signal, and the sanity
//! bound of one with a signal. Fitted by maximum likelihood with right-censoring (parts
//! replaced, or still running, before they failed count as "lived at least this long").

use serde::{Deserialize, Serialize};
use wearcast_protocol::registry::WeibullLife;

/// P(failure within `h` hours | survived `age` hours), for Weibull(shape k, scale λ).
pub fn weibull_conditional_cdf(shape: f64, scale_h: f64, age_h: f64, h: f64) -> f64 {
    if h <= 0.0 {
        return 0.0;
    }
    let cum = |t: f64| (t.max(0.0) / scale_h).powf(shape);
    // 1 - S(age + h) / S(age), with S(t) = exp(-(t/λ)^k).
    -(cum(age_h) - cum(age_h + h)).exp_m1()
}

/// The `q` quantile of the remaining life (hours) given survival to `age_h`.
pub fn weibull_conditional_quantile(shape: f64, scale_h: f64, age_h: f64, q: f64) -> f64 {
    let q = q.clamp(0.0, 1.0 - 1e-12);
    let cum_age = (age_h.max(0.0) / scale_h).powf(shape);
    let t = scale_h * (cum_age - (-q).ln_1p()).powf(1.0 / shape);
    (t - age_h.max(0.0)).max(0.0)
}

/// One observed life of a part: its length, whether it ended in failure (`false`:
/// censored — replaced early or still running), and the age at which it came under
/// observation (left truncation: a part first seen at age 2000 h is known to have
/// survived that long, and parts that died younger were never seen; 0 for parts
/// watched from their install).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedLife {
    pub hours: f64,
    pub failed: bool,
    #[serde(default)]
    pub entered_h: f64,
}

impl ObservedLife {
    pub fn failure(hours: f64) -> Self {
        Self {
            hours,
            failed: true,
            entered_h: 0.0,
        }
    }
}

/// Maximum-likelihood Weibull fit with right-censoring and left truncation. `None`
/// without at least two failures of distinct lengths (the shape is not identifiable
/// otherwise).
///
/// With entry ages eᵢ, the profile likelihood in the shape k has the score
/// g(k) = Σ (tᵢᵏ ln tᵢ − eᵢᵏ ln eᵢ) / Σ (tᵢᵏ − eᵢᵏ) − 1/k − (1/r) Σ_failures ln tᵢ, whose
/// root is found by bisection; then λ = (Σ (tᵢᵏ − eᵢᵏ) / r)^(1/k). Sums run over all
/// lives, the last term over the r failures only.
pub fn fit_weibull(lives: &[ObservedLife]) -> Option<WeibullLife> {
    let lives: Vec<ObservedLife> = lives
        .iter()
        .copied()
        .filter(|l| l.hours.is_finite() && l.hours > 0.0 && l.entered_h.is_finite())
        .map(|l| ObservedLife {
            entered_h: l.entered_h.clamp(0.0, l.hours),
            ..l
        })
        .collect();
    let failures: Vec<f64> = lives.iter().filter(|l| l.failed).map(|l| l.hours).collect();
    let r = failures.len() as f64;
    let (lo_f, hi_f) = failures
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), t| (a.min(*t), b.max(*t)));
    if failures.len() < 2 || hi_f <= lo_f * (1.0 + 1e-9) {
        return None;
    }
    // Work in units of the longest life so tᵏ stays finite for large k.
    let unit = lives.iter().map(|l| l.hours).fold(0.0, f64::max);
    let t: Vec<f64> = lives.iter().map(|l| l.hours / unit).collect();
    let e: Vec<f64> = lives.iter().map(|l| l.entered_h / unit).collect();
    let mean_ln_fail = failures.iter().map(|f| (f / unit).ln()).sum::<f64>() / r;
    // x^k and x^k ln x, with 0^k ln 0 = 0.
    let pow_log = |x: f64, k: f64| {
        if x > 0.0 {
            let p = x.powf(k);
            (p, p * x.ln())
        } else {
            (0.0, 0.0)
        }
    };
    let exposure = |k: f64| -> f64 {
        t.iter()
            .zip(&e)
            .map(|(ti, ei)| pow_log(*ti, k).0 - pow_log(*ei, k).0)
            .sum()
    };
    let score = |k: f64| {
        let (mut s, mut sl) = (0.0, 0.0);
        for (ti, ei) in t.iter().zip(&e) {
            let (pt, lt) = pow_log(*ti, k);
            let (pe, le) = pow_log(*ei, k);
            s += pt - pe;
            sl += lt - le;
        }
        sl / s - 1.0 / k - mean_ln_fail
    };
    let (mut lo, mut hi) = (0.01f64, 100.0f64);
    if score(lo) > 0.0 || score(hi) < 0.0 {
        return None;
    }
    while hi / lo > 1.0 + 1e-10 {
        let mid = (lo * hi).sqrt();
        if score(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let k = (lo * hi).sqrt();
    let s = exposure(k);
    (s > 0.0).then(|| WeibullLife {
        shape: k,
        scale_hours: unit * (s / r).powf(1.0 / k),
    })
}

/// Pseudo-failures that stand for the manifest's (or the previous) life distribution
/// when it is updated with observed lives: with no data the prior comes back, and each
/// observed life moves it about 1 / (n + this) of the way.
pub const PRIOR_PSEUDO_LIVES: usize = 8;

/// The fleet prior updated with observed lives: a censored maximum-likelihood fit of
/// the observed lives together with [`PRIOR_PSEUDO_LIVES`] pseudo-failures placed at
/// evenly spaced quantiles of `prior`.
pub fn update_life_prior(prior: WeibullLife, observed: &[ObservedLife]) -> WeibullLife {
    if observed.is_empty() {
        return prior;
    }
    let n0 = PRIOR_PSEUDO_LIVES;
    let mut lives: Vec<ObservedLife> = (0..n0)
        .map(|i| {
            ObservedLife::failure(weibull_conditional_quantile(
                prior.shape,
                prior.scale_hours,
                0.0,
                (i as f64 + 0.5) / n0 as f64,
            ))
        })
        .collect();
    lives.extend_from_slice(observed);
    fit_weibull(&lives).unwrap_or(prior)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linalg::SplitMix64;

    /// Weibull(shape, scale) draws by inversion.
    fn draws(n: usize, shape: f64, scale: f64, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| scale * (-(1.0 - rng.next_f64()).ln()).powf(1.0 / shape))
            .collect()
    }

    fn failures(hours: Vec<f64>) -> Vec<ObservedLife> {
        hours.into_iter().map(ObservedLife::failure).collect()
    }

    #[test]
    fn the_fit_recovers_shape_and_scale_from_complete_lives() {
        let w = fit_weibull(&failures(draws(2000, 2.5, 1000.0, 1))).unwrap();
        assert!((w.shape - 2.5).abs() < 0.12, "{w:?}");
        assert!((w.scale_hours - 1000.0).abs() < 25.0, "{w:?}");
    }

    #[test]
    fn the_fit_recovers_shape_and_scale_when_most_parts_are_replaced_before_failing() {
        // Every part is also replaced at a random time; a failure is seen only if it
        // came first. Most lives are censored.
        let life = draws(3000, 3.0, 2000.0, 2);
        let replace = draws(3000, 1.5, 1800.0, 3);
        let lives: Vec<ObservedLife> = life
            .iter()
            .zip(&replace)
            .map(|(l, r)| ObservedLife {
                hours: l.min(*r),
                failed: l <= r,
                entered_h: 0.0,
            })
            .collect();
        let censored = lives.iter().filter(|l| !l.failed).count() as f64 / 3000.0;
        assert!(censored > 0.4, "{censored}");
        let w = fit_weibull(&lives).unwrap();
        assert!((w.shape - 3.0).abs() < 0.25, "{w:?}");
        assert!((w.scale_hours - 2000.0).abs() < 80.0, "{w:?}");
        // Treating the replacements as failures is badly biased: the censoring is what
        // makes the difference.
        let naive: Vec<ObservedLife> = lives
            .iter()
            .map(|l| ObservedLife { failed: true, ..*l })
            .collect();
        let n = fit_weibull(&naive).unwrap();
        assert!(n.scale_hours < 1500.0, "{n:?}");
    }

    #[test]
    fn the_fit_recovers_shape_and_scale_from_parts_first_seen_in_mid_life() {
        // A fleet that comes under observation with parts already running: each part
        // is seen from a random age on, and only parts still alive then are seen at
        // all (the survivors are the longer-lived ones). Lives still running at the end
        // of the observation are censored.
        let life = draws(6000, 2.5, 1500.0, 4);
        let mut rng = SplitMix64::new(5);
        let lives: Vec<ObservedLife> = life
            .iter()
            .filter_map(|l| {
                let entered = 2000.0 * rng.next_f64();
                let end = entered + 1000.0;
                (*l > entered).then(|| ObservedLife {
                    hours: l.min(end),
                    failed: *l <= end,
                    entered_h: entered,
                })
            })
            .collect();
        let w = fit_weibull(&lives).unwrap();
        assert!((w.shape - 2.5).abs() < 0.2, "{w:?}");
        assert!((w.scale_hours - 1500.0).abs() < 60.0, "{w:?}");
        // Ignoring the late entry overstates the life.
        let naive: Vec<ObservedLife> = lives
            .iter()
            .map(|l| ObservedLife {
                entered_h: 0.0,
                ..*l
            })
            .collect();
        let n = fit_weibull(&naive).unwrap();
        assert!(n.scale_hours > 1700.0, "{n:?}");
    }

    #[test]
    fn too_few_failures_give_no_fit() {
        let lives = [
            ObservedLife::failure(10.0),
            ObservedLife {
                hours: 20.0,
                failed: false,
                entered_h: 0.0,
            },
        ];
        assert_eq!(fit_weibull(&lives), None);
        assert_eq!(fit_weibull(&[]), None);
    }

    #[test]
    fn the_prior_moves_towards_observed_lives_as_they_accumulate() {
        let prior = WeibullLife {
            shape: 3.0,
            scale_hours: 1000.0,
        };
        assert_eq!(update_life_prior(prior, &[]), prior);
        let few = update_life_prior(prior, &failures(draws(4, 3.0, 500.0, 9)));
        let many = update_life_prior(prior, &failures(draws(400, 3.0, 500.0, 9)));
        assert!(
            few.scale_hours < 950.0 && few.scale_hours > 600.0,
            "{few:?}"
        );
        assert!((many.scale_hours - 500.0).abs() < 40.0, "{many:?}");
    }
    use statrs::distribution::{ContinuousCDF, Weibull};

    #[test]
    fn at_age_zero_it_is_the_plain_weibull() {
        let w = Weibull::new(2.5, 1000.0).unwrap();
        for h in [10.0, 500.0, 1500.0] {
            let ours = weibull_conditional_cdf(2.5, 1000.0, 0.0, h);
            assert!((ours - w.cdf(h)).abs() < 1e-12, "{ours} vs {}", w.cdf(h));
        }
    }

    #[test]
    fn quantile_inverts_the_cdf_for_an_aged_part() {
        for q in [0.1, 0.5, 0.9] {
            let r = weibull_conditional_quantile(3.0, 1000.0, 800.0, q);
            let p = weibull_conditional_cdf(3.0, 1000.0, 800.0, r);
            assert!((p - q).abs() < 1e-9, "q {q}: r {r} gives {p}");
        }
    }

    #[test]
    fn an_older_part_has_less_life_left_when_wear_out_dominates() {
        let young = weibull_conditional_quantile(3.0, 1000.0, 100.0, 0.5);
        let old = weibull_conditional_quantile(3.0, 1000.0, 900.0, 0.5);
        assert!(old < young, "{old} !< {young}");
    }
}
