//! The warning interval of a part type: how long parts of this type live on after
//! their degradation is first detected (the P-F interval as this platform sees it:
//! from the onset alarm to the failure). Log-normal, learned from the fleet's observed
//! failures, with a default from the life prior until there are some.
//!
//! It answers two questions honestly: a component whose signal is still healthy has at
//! least one warning interval left (it has not even started to wear measurably), and
//! one that has just started has about one warning interval, less what has passed.

use serde::{Deserialize, Serialize};
use statrs::function::erf::{erfc, erfc_inv};

use super::weibull::weibull_conditional_quantile;
use wearcast_protocol::registry::WeibullLife;

/// Default warning interval, as a share of the part's median life.
pub const DEFAULT_SHARE_OF_LIFE: f64 = 0.1;
/// Default spread (standard deviation of the log).
pub const DEFAULT_LOG_SD: f64 = 0.6;
/// Pseudo-observations the default counts for when observed intervals update it.
const PRIOR_WEIGHT: f64 = 4.0;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarningInterval {
    pub median_h: f64,
    pub log_sd: f64,
}

impl WarningInterval {
    /// The default for a part type without observed failures.
    pub fn default_for(life: WeibullLife) -> Self {
        let median_life = weibull_conditional_quantile(life.shape, life.scale_hours, 0.0, 0.5);
        Self {
            median_h: (DEFAULT_SHARE_OF_LIFE * median_life).max(1.0),
            log_sd: DEFAULT_LOG_SD,
        }
    }

    /// Updated with observed intervals (hours from onset alarm to failure): the
    /// conjugate normal update of the log-mean and variance, the prior counting as
    /// [`PRIOR_WEIGHT`] observations.
    pub fn updated(self, observed_h: &[f64]) -> Self {
        let logs: Vec<f64> = observed_h
            .iter()
            .filter(|h| h.is_finite() && **h > 0.0)
            .map(|h| h.ln())
            .collect();
        if logs.is_empty() {
            return self;
        }
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let ss: f64 = logs.iter().map(|l| (l - mean).powi(2)).sum();
        let m0 = self.median_h.ln();
        let k = PRIOR_WEIGHT + n;
        let post_mean = (PRIOR_WEIGHT * m0 + n * mean) / k;
        let post_var =
            (PRIOR_WEIGHT * self.log_sd.powi(2) + ss + PRIOR_WEIGHT * n / k * (mean - m0).powi(2))
                / k;
        Self {
            median_h: post_mean.exp(),
            log_sd: post_var.sqrt().max(0.05),
        }
    }

    /// P(interval ≤ t).
    pub fn cdf(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let z = (t / self.median_h).ln() / self.log_sd;
        0.5 * erfc(-z / std::f64::consts::SQRT_2)
    }

    pub fn quantile(&self, q: f64) -> f64 {
        let q = q.clamp(1e-12, 1.0 - 1e-12);
        let z = -std::f64::consts::SQRT_2 * erfc_inv(2.0 * q);
        self.median_h * (self.log_sd * z).exp()
    }

    /// P(the part fails within `t` more hours | `elapsed` hours of it have passed without
    /// failure).
    pub fn conditional_cdf(&self, elapsed: f64, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let survive = 1.0 - self.cdf(elapsed);
        if survive <= 1e-12 {
            return 1.0;
        }
        ((self.cdf(elapsed + t) - self.cdf(elapsed)) / survive).clamp(0.0, 1.0)
    }

    /// The `q` quantile of what is left after `elapsed` hours.
    pub fn conditional_quantile(&self, elapsed: f64, q: f64) -> f64 {
        let base = self.cdf(elapsed.max(0.0));
        let target = base + q.clamp(0.0, 1.0) * (1.0 - base);
        (self.quantile(target) - elapsed.max(0.0)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_and_cdf_invert_each_other_also_conditionally() {
        let w = WarningInterval {
            median_h: 300.0,
            log_sd: 0.5,
        };
        assert!((w.quantile(0.5) - 300.0).abs() < 1e-6);
        for q in [0.1, 0.5, 0.9] {
            assert!((w.cdf(w.quantile(q)) - q).abs() < 1e-9);
            let r = w.conditional_quantile(200.0, q);
            assert!((w.conditional_cdf(200.0, r) - q).abs() < 1e-9, "{q}");
        }
        assert!(w.conditional_quantile(200.0, 0.5) < w.quantile(0.5));
    }

    #[test]
    fn observed_intervals_pull_the_default_towards_them() {
        let prior = WarningInterval {
            median_h: 100.0,
            log_sd: 0.6,
        };
        let obs = vec![400.0; 40];
        let post = prior.updated(&obs);
        assert!(post.median_h > 350.0 && post.median_h < 400.0, "{post:?}");
        assert_eq!(prior.updated(&[]), prior);
    }
}
