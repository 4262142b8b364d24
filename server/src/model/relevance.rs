//! Which channels carry wear: scores learned from run-to-failure histories.
//!
//! For each (regime-normalised) channel, over the training runs:
//! - **monotonicity**: how consistently the smoothed signal moves one way,
//!   |#rises − #falls| / steps, averaged over runs;
//! - **trendability**: |correlation with time|, averaged over runs;
//! - **prognosability**: how alike the runs end relative to how far they travel,
//!   exp(−sd(end levels) / mean |end − start|).
//!
//! Each lies in [0, 1]. A channel's relevance is trendability × prognosability: both
//! must hold for a signal to tell remaining life (a channel that drifts in every run but
//! ends anywhere cannot say when the end comes). Monotonicity is reported as evidence;
//! on quantised sensors it is noisy, so it does not gate.

use serde::{Deserialize, Serialize};

/// Smoothing of the signal before monotonicity and end levels are read.
const SMOOTHING: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelScore {
    pub monotonicity: f64,
    pub trendability: f64,
    pub prognosability: f64,
    /// trendability × prognosability.
    pub relevance: f64,
}

/// Scores every channel of `runs` (each a run to failure: rows × channels z-scores).
pub fn score_channels(runs: &[Vec<Vec<f64>>], channels: usize) -> Vec<ChannelScore> {
    (0..channels)
        .map(|c| {
            let (mut mono, mut trend, mut used) = (0.0, 0.0, 0.0);
            let (mut ends, mut travel) = (Vec::new(), Vec::new());
            for run in runs {
                let x: Vec<f64> = run.iter().map(|r| r[c]).collect();
                if x.len() < 3 {
                    continue;
                }
                let s = ema(&x, SMOOTHING);
                let (mut up, mut down) = (0.0f64, 0.0f64);
                for w in s.windows(2) {
                    if w[1] > w[0] {
                        up += 1.0;
                    } else if w[1] < w[0] {
                        down += 1.0;
                    }
                }
                mono += (up - down).abs() / (s.len() - 1) as f64;
                trend += correlation_with_index(&x).abs();
                used += 1.0;
                let edge = (s.len() / 20).max(1);
                let start = s[..edge].iter().sum::<f64>() / edge as f64;
                let end = s[s.len() - edge..].iter().sum::<f64>() / edge as f64;
                ends.push(end);
                travel.push((end - start).abs());
            }
            if used == 0.0 {
                return ChannelScore {
                    monotonicity: 0.0,
                    trendability: 0.0,
                    prognosability: 0.0,
                    relevance: 0.0,
                };
            }
            let mean_travel = travel.iter().sum::<f64>() / travel.len() as f64;
            let mean_end = ends.iter().sum::<f64>() / ends.len() as f64;
            let sd_end = (ends.iter().map(|e| (e - mean_end).powi(2)).sum::<f64>()
                / ends.len() as f64)
                .sqrt();
            let prognosability = if mean_travel > 0.0 {
                (-sd_end / mean_travel).exp()
            } else {
                0.0
            };
            let trendability = trend / used;
            ChannelScore {
                monotonicity: mono / used,
                trendability,
                prognosability,
                relevance: trendability * prognosability,
            }
        })
        .collect()
}

/// Causal exponential smoothing.
pub fn ema(x: &[f64], alpha: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    let mut acc = None;
    for v in x {
        let next = match acc {
            None => *v,
            Some(a) => alpha * v + (1.0 - alpha) * a,
        };
        acc = Some(next);
        out.push(next);
    }
    out
}

/// Pearson correlation of `x` with its index (0 if either does not vary).
fn correlation_with_index(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mt = (n - 1.0) / 2.0;
    let mx = x.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut stt) = (0.0, 0.0, 0.0);
    for (i, v) in x.iter().enumerate() {
        let dt = i as f64 - mt;
        let dx = v - mx;
        sxy += dt * dx;
        sxx += dx * dx;
        stt += dt * dt;
    }
    if sxx > 0.0 && stt > 0.0 {
        sxy / (sxx * stt).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linalg::SplitMix64;

    #[test]
    fn a_wear_channel_outscores_noise_and_a_channel_that_ends_anywhere() {
        let mut rng = SplitMix64::new(7);
        let runs: Vec<Vec<Vec<f64>>> = (0..20)
            .map(|u| {
                let life = 150 + 7 * u;
                let drift_end = if u % 2 == 0 { 4.0 } else { -4.0 };
                (0..life)
                    .map(|i| {
                        let x = i as f64 / life as f64;
                        vec![
                            // Wear: rises to the same level at failure in every run.
                            3.0 * x * x + 0.3 * (rng.next_f64() - 0.5),
                            // Noise.
                            rng.next_f64() - 0.5,
                            // Drifts, but to a different end in each run.
                            drift_end * x + 0.3 * (rng.next_f64() - 0.5),
                        ]
                    })
                    .collect()
            })
            .collect();
        let s = score_channels(&runs, 3);
        assert!(s[0].relevance > 0.5, "{s:?}");
        assert!(s[1].relevance < 0.1, "{s:?}");
        assert!(
            s[2].trendability > 0.8 && s[2].prognosability < 0.5,
            "{s:?}"
        );
        assert!(s[2].relevance < 0.5 * s[0].relevance, "{s:?}");
        assert!(s[0].monotonicity > s[1].monotonicity);
    }
}
