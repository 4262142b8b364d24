//! Least-squares degradation trends and the distribution of their threshold crossing.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use wearcast_protocol::UnixMs;

use super::HiPoint;

/// Smallest HI the exponential fit takes the logarithm of.
const HI_FLOOR: f64 = 0.01;
/// Floor on the slope's relative standard error: the trend's form is itself uncertain
/// (wear rarely follows a textbook curve), which the fit's own error cannot see.
const MODEL_FORM_REL_SE: f64 = 0.25;
/// Recent buckets weigh more: wear accelerates, and the current rate is what
/// extrapolates. Weights halve every `RECENCY_SHARE` of the segment's span (at least
/// `MIN_HALF_LIFE_H`).
const RECENCY_SHARE: f64 = 0.25;
const MIN_HALF_LIFE_H: f64 = 24.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendShape {
    /// HI = a + b·t
    Linear,
    /// ln(HI + c) = a + b·t, with the fit's `offset` c ≥ 0: wear that starts flat at
    /// the onset and accelerates, HI = e^a·(e^(b·t) − …) (c = 0: a pure exponential).
    Exponential,
}

/// A fitted trend, in the shape's transformed space (HI or ln HI), with time in hours
/// relative to the fit instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendFit {
    pub shape: TrendShape,
    /// Fitted value at the fit instant.
    pub level: f64,
    /// Distance from `level` to the failure level (1 for HI, ln(1 + offset) for the
    /// exponential shape).
    pub gap: f64,
    pub slope_per_h: f64,
    /// Standard error of the slope (inflated for autocorrelation, floored for model form).
    pub slope_se: f64,
    /// Degrees of freedom of the slope's Student-t distribution.
    pub dof: f64,
    /// Root mean square error of the fit in HI units.
    pub rmse_hi: f64,
    /// The exponential shape's offset c in ln(HI + c) (0 for a pure exponential and for
    /// the linear shape).
    #[serde(default)]
    pub offset: f64,
}

impl TrendFit {
    fn t_dist(&self) -> Option<StudentsT> {
        StudentsT::new(0.0, 1.0, self.dof.max(1.0)).ok()
    }

    /// P(the trend crosses the failure level within `hours`).
    pub fn p_cross_within(&self, hours: f64) -> f64 {
        if self.gap <= 0.0 {
            return 1.0;
        }
        if hours <= 0.0 {
            return 0.0;
        }
        let Some(t) = self.t_dist() else { return 0.0 };
        // Crossing by `hours` needs a slope of at least gap / hours.
        let needed = self.gap / hours;
        1.0 - t.cdf((needed - self.slope_per_h) / self.slope_se)
    }

    /// The `q` quantile of the crossing time in hours; `None` if the slope at that
    /// quantile is not rising (no crossing in sight).
    pub fn crossing_quantile(&self, q: f64) -> Option<f64> {
        if self.gap <= 0.0 {
            return Some(0.0);
        }
        let t = self.t_dist()?;
        let slope = self.slope_per_h + self.slope_se * t.inverse_cdf(1.0 - q);
        (slope > 0.0).then(|| self.gap / slope)
    }

    /// The fitted health index `hours` after the fit instant (negative: before it), for
    /// drawing the trend next to the history it was fitted to.
    pub fn hi_at(&self, hours: f64) -> f64 {
        let v = self.level + self.slope_per_h * hours;
        match self.shape {
            TrendShape::Linear => v,
            TrendShape::Exponential => v.exp() - self.offset,
        }
    }

    /// Current rate of change of the HI itself, per hour.
    pub fn hi_slope_now_per_h(&self) -> f64 {
        match self.shape {
            TrendShape::Linear => self.slope_per_h,
            TrendShape::Exponential => self.slope_per_h * self.level.exp(),
        }
    }
}

struct Ols {
    level: f64,
    slope: f64,
    /// Weighted Σw(x − x̄)².
    sxx: f64,
    /// Σw²(x − x̄)², for the slope's variance under weights.
    sxx_w2: f64,
}

/// Weighted least squares of `y` on `x`.
fn wls(x: &[f64], y: &[f64], w: &[f64]) -> Option<Ols> {
    let sw: f64 = w.iter().sum();
    let mx = x.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() / sw;
    let my = y.iter().zip(w).map(|(y, w)| y * w).sum::<f64>() / sw;
    let (mut sxx, mut sxy, mut sxx_w2) = (0.0, 0.0, 0.0);
    for ((xi, yi), wi) in x.iter().zip(y).zip(w) {
        let dx = xi - mx;
        sxx += wi * dx * dx;
        sxy += wi * dx * (yi - my);
        sxx_w2 += wi * wi * dx * dx;
    }
    (sxx > 0.0).then(|| {
        let slope = sxy / sxx;
        Ols {
            level: my - slope * mx,
            slope,
            sxx,
            sxx_w2,
        }
    })
}

/// Fits both trend shapes to `points` (time relative to `now`) and keeps the one with
/// the smaller squared error in HI units. `None` with fewer than 3 distinct instants.
pub fn fit_trend(points: &[HiPoint], now: UnixMs) -> Option<TrendFit> {
    if points.len() < 3 {
        return None;
    }
    let x: Vec<f64> = points.iter().map(|p| now.hours_until(p.t)).collect();
    let hi: Vec<f64> = points.iter().map(|p| p.hi).collect();
    let ln_hi: Vec<f64> = hi.iter().map(|h| h.max(HI_FLOOR).ln()).collect();
    let latest = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = latest - x.iter().copied().fold(f64::INFINITY, f64::min);
    let half_life = (RECENCY_SHARE * span).max(MIN_HALF_LIFE_H);
    let w: Vec<f64> = x
        .iter()
        .map(|xi| (-(latest - xi) * std::f64::consts::LN_2 / half_life).exp())
        .collect();

    let candidates = [
        (TrendShape::Linear, &hi, wls(&x, &hi, &w)?),
        (TrendShape::Exponential, &ln_hi, wls(&x, &ln_hi, &w)?),
    ];
    let predict = |shape: TrendShape, fit: &Ols, xi: f64| {
        let v = fit.level + fit.slope * xi;
        match shape {
            TrendShape::Linear => v,
            TrendShape::Exponential => v.exp(),
        }
    };
    let sse_hi = |shape, fit: &Ols| -> f64 {
        x.iter()
            .zip(&hi)
            .zip(&w)
            .map(|((xi, yi), wi)| wi * (yi - predict(shape, fit, *xi)).powi(2))
            .sum()
    };
    let (shape, y, fit) = candidates
        .into_iter()
        .min_by(|a, b| sse_hi(a.0, &a.2).total_cmp(&sse_hi(b.0, &b.2)))?;

    let residuals: Vec<f64> = x
        .iter()
        .zip(y.iter())
        .map(|(xi, yi)| yi - (fit.level + fit.slope * xi))
        .collect();
    let sw: f64 = w.iter().sum();
    // Kish's effective sample size of the weights.
    let n_w = sw * sw / w.iter().map(|wi| wi * wi).sum::<f64>();
    let sse: f64 = residuals.iter().map(|e| e * e).sum();
    let wsse: f64 = residuals.iter().zip(&w).map(|(e, wi)| wi * e * e).sum();
    // Residuals of neighbouring buckets are correlated (operating regimes last hours),
    // so there are fewer independent points than buckets.
    let lag1: f64 = residuals.windows(2).map(|w| w[0] * w[1]).sum();
    let rho = if sse > 0.0 {
        (lag1 / sse).clamp(0.0, 0.95)
    } else {
        0.0
    };
    let inflation = ((1.0 + rho) / (1.0 - rho)).sqrt();
    let n_eff = n_w * (1.0 - rho) / (1.0 + rho);
    let s2 = wsse / sw * n_w / (n_w - 2.0).max(1.0);
    let se = (s2 * fit.sxx_w2).sqrt() / fit.sxx * inflation;
    let slope_se = se.max(MODEL_FORM_REL_SE * fit.slope.abs()).max(1e-12);
    let failure_level = match shape {
        TrendShape::Linear => 1.0,
        TrendShape::Exponential => 0.0,
    };
    Some(TrendFit {
        shape,
        level: fit.level,
        gap: failure_level - fit.level,
        slope_per_h: fit.slope,
        slope_se,
        dof: (n_eff - 2.0).max(1.0),
        rmse_hi: (sse_hi(shape, &fit) / sw).sqrt(),
        offset: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(shape: TrendShape, level: f64, slope_per_h: f64) -> TrendFit {
        let failure = match shape {
            TrendShape::Linear => 1.0,
            TrendShape::Exponential => 0.0,
        };
        TrendFit {
            shape,
            level,
            gap: failure - level,
            slope_per_h,
            slope_se: 0.1 * slope_per_h,
            dof: 30.0,
            rmse_hi: 0.01,
            offset: 0.0,
        }
    }

    #[test]
    fn the_drawn_trend_reaches_the_failure_level_where_the_median_crossing_is() {
        // A shifted exponential: ln(HI + 0.1), failing at ln(1.1).
        let shifted = TrendFit {
            level: 0.5f64.ln(),
            gap: 1.1f64.ln() - 0.5f64.ln(),
            offset: 0.1,
            ..fit(TrendShape::Exponential, 0.5f64.ln(), 0.02)
        };
        for f in [
            fit(TrendShape::Linear, 0.4, 0.01),
            fit(TrendShape::Exponential, 0.4f64.ln(), 0.02),
            shifted,
        ] {
            assert!((f.hi_at(0.0) - 0.4).abs() < 1e-12, "{f:?}");
            let p50 = f.crossing_quantile(0.5).unwrap();
            assert!((f.hi_at(p50) - 1.0).abs() < 1e-9, "{f:?}: {}", f.hi_at(p50));
            assert!(f.hi_at(-24.0) < 0.4, "it was lower a day before");
        }
    }
}
