//! How predictions are scored, as published work on run-to-failure data reports it.

use serde::Serialize;

use super::UnitPrediction;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// RMSE of the P50 against the truth, both capped at the cap.
    pub rmse: f64,
    /// RMSE of the uncapped P50 against the uncapped truth.
    pub rmse_uncapped: f64,
    pub mae: f64,
    /// PHM08 score, P50 and truth capped like the RMSE: Σ e^(−d/13) − 1 for early
    /// predictions (d = predicted − true < 0), e^(d/10) − 1 for late ones (lower is
    /// better).
    pub phm08: f64,
    /// The same with the true, uncapped remaining life: a unit with more life than the
    /// cap left counts as predicted early.
    pub phm08_true_rul: f64,
    /// Share of units whose truth lies in [P10, P90].
    pub coverage: f64,
    /// Share of units whose truth lies below P10 (predicted too late) and above P90.
    pub below_p10: f64,
    pub above_p90: f64,
    /// Median width of the interval.
    pub median_interval_width: f64,
}

/// PHM08's asymmetric score of one prediction error d = predicted − true.
pub fn phm08(d: f64) -> f64 {
    if d < 0.0 {
        (-d / 13.0).exp() - 1.0
    } else {
        (d / 10.0).exp() - 1.0
    }
}

pub fn score(predictions: &[UnitPrediction], cap: f64) -> Scores {
    let n = predictions.len().max(1) as f64;
    let c = |v: f64| v.min(cap);
    let mut widths: Vec<f64> = predictions.iter().map(|p| p.rul_p90 - p.rul_p10).collect();
    widths.sort_by(f64::total_cmp);
    Scores {
        rmse: (predictions
            .iter()
            .map(|p| (c(p.rul_p50) - c(p.truth)).powi(2))
            .sum::<f64>()
            / n)
            .sqrt(),
        rmse_uncapped: (predictions
            .iter()
            .map(|p| (p.rul_p50 - p.truth).powi(2))
            .sum::<f64>()
            / n)
            .sqrt(),
        mae: predictions
            .iter()
            .map(|p| (c(p.rul_p50) - c(p.truth)).abs())
            .sum::<f64>()
            / n,
        phm08: predictions
            .iter()
            .map(|p| phm08(c(p.rul_p50) - c(p.truth)))
            .sum(),
        phm08_true_rul: predictions
            .iter()
            .map(|p| phm08(c(p.rul_p50) - p.truth))
            .sum(),
        coverage: predictions
            .iter()
            .filter(|p| p.rul_p10 <= p.truth && p.truth <= p.rul_p90)
            .count() as f64
            / n,
        below_p10: predictions.iter().filter(|p| p.truth < p.rul_p10).count() as f64 / n,
        above_p90: predictions.iter().filter(|p| p.truth > p.rul_p90).count() as f64 / n,
        median_interval_width: widths.get(widths.len() / 2).copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(p10: f64, p50: f64, p90: f64, truth: f64) -> UnitPrediction {
        UnitPrediction {
            unit: "u".into(),
            rul_p10: p10,
            rul_p50: p50,
            rul_p90: p90,
            truth,
            health_index: 0.0,
        }
    }

    #[test]
    fn scores_match_hand_computed_values() {
        let preds = [
            p(80.0, 100.0, 120.0, 110.0),
            p(10.0, 30.0, 40.0, 50.0),
            p(100.0, 200.0, 300.0, 150.0),
        ];
        let s = score(&preds, 125.0);
        // Capped errors: -10, -20, 0 (both capped at 125).
        assert!((s.rmse - (500.0f64 / 3.0).sqrt()).abs() < 1e-9, "{s:?}");
        assert!((s.coverage - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.above_p90 - 1.0 / 3.0).abs() < 1e-12);
        let want = phm08(-10.0) + phm08(-20.0) + phm08(0.0);
        assert!((s.phm08 - want).abs() < 1e-9);
        let want = phm08(-10.0) + phm08(-20.0) + phm08(125.0 - 150.0);
        assert!((s.phm08_true_rul - want).abs() < 1e-9);
        // Late costs more than early by the same amount.
        assert!(phm08(10.0) > phm08(-10.0));
        assert!((phm08(10.0) - (1f64.exp() - 1.0)).abs() < 1e-12);
    }
}
