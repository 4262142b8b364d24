//! A remaining-life distribution made of weighted candidate lives (e.g. what similar
//! past runs had left), each blurred by a normal kernel whose width is calibrated on
//! held-back history. Remaining life is never negative (mass below 0 means "due now")
//! and never beyond `cap_h` when the fleet's life distribution bounds it.

use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc;

/// Candidate remaining lives and how much each counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelMixture {
    /// `[remaining life, weight]`, weights summing to 1.
    pub atoms: Vec<[f64; 2]>,
    /// Standard deviation of each atom's kernel.
    pub bandwidth: f64,
    /// Upper bound of the remaining life, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
}

fn std_normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

impl KernelMixture {
    /// A mixture of `(value, weight)` atoms (weights need not be normalised; atoms with
    /// non-finite values or non-positive weight are dropped). `None` if nothing is left.
    pub fn new(atoms: &[(f64, f64)], bandwidth: f64, cap: Option<f64>) -> Option<Self> {
        let kept: Vec<(f64, f64)> = atoms
            .iter()
            .copied()
            .filter(|(v, w)| v.is_finite() && w.is_finite() && *w > 0.0)
            .collect();
        let total: f64 = kept.iter().map(|a| a.1).sum();
        (total > 0.0).then(|| Self {
            atoms: kept.iter().map(|(v, w)| [*v, w / total]).collect(),
            bandwidth: bandwidth.max(1e-9),
            cap: cap.filter(|c| c.is_finite() && *c > 0.0),
        })
    }

    /// P(remaining life ≤ t).
    pub fn cdf(&self, t: f64) -> f64 {
        if t < 0.0 {
            return 0.0;
        }
        if self.cap.is_some_and(|c| t >= c) {
            return 1.0;
        }
        self.atoms
            .iter()
            .map(|[v, w]| w * std_normal_cdf((t - v) / self.bandwidth))
            .sum::<f64>()
            .clamp(0.0, 1.0)
    }

    /// The `q` quantile (bisection on the CDF, to a thousandth of the bandwidth).
    pub fn quantile(&self, q: f64) -> f64 {
        let q = q.clamp(0.0, 1.0);
        if self.cdf(0.0) >= q {
            return 0.0;
        }
        let top = self.atoms.iter().map(|a| a[0]).fold(0.0, f64::max) + 10.0 * self.bandwidth;
        let mut hi = self.cap.map_or(top, |c| c.min(top));
        if self.cdf(hi) < q {
            return hi;
        }
        let mut lo = 0.0;
        while hi - lo > 1e-3 * self.bandwidth.clamp(1e-6, 1.0) {
            let mid = 0.5 * (lo + hi);
            if self.cdf(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Weighted mean and standard deviation of the atoms (the spread before blurring).
    pub fn atom_moments(&self) -> (f64, f64) {
        let mean: f64 = self.atoms.iter().map(|[v, w]| v * w).sum();
        let var: f64 = self.atoms.iter().map(|[v, w]| w * (v - mean).powi(2)).sum();
        (mean, var.sqrt())
    }

    /// The same atoms with another bandwidth.
    pub fn with_bandwidth(&self, bandwidth: f64) -> Self {
        Self {
            bandwidth: bandwidth.max(1e-9),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_atom_is_a_normal_distribution_truncated_at_zero() {
        let m = KernelMixture::new(&[(100.0, 1.0)], 10.0, None).unwrap();
        assert!((m.quantile(0.5) - 100.0).abs() < 0.01);
        assert!(
            (m.quantile(0.9) - 112.8155).abs() < 0.01,
            "{}",
            m.quantile(0.9)
        );
        assert!((m.cdf(90.0) - 0.158655).abs() < 1e-5);
        assert_eq!(m.cdf(-1.0), 0.0);
        let due = KernelMixture::new(&[(-5.0, 1.0)], 1.0, None).unwrap();
        assert_eq!(due.quantile(0.5), 0.0, "mass below zero is due now");
    }

    #[test]
    fn quantiles_invert_the_cdf_and_respect_the_cap() {
        let m = KernelMixture::new(&[(50.0, 1.0), (150.0, 3.0)], 20.0, Some(160.0)).unwrap();
        for q in [0.1, 0.3, 0.5] {
            let t = m.quantile(q);
            assert!((m.cdf(t) - q).abs() < 1e-4, "q {q}: t {t} cdf {}", m.cdf(t));
        }
        assert_eq!(m.quantile(0.95), 160.0);
        assert_eq!(m.cdf(160.0), 1.0);
        let (mean, sd) = m.atom_moments();
        assert!((mean - 125.0).abs() < 1e-9 && (sd - 43.30127).abs() < 1e-4);
    }
}
