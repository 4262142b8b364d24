//! Fusing the relevant channels into one health index (HI): 0 while healthy, rising to
//! 1 at failure. The weights are a ridge regression of the channels' z-scores onto a
//! piecewise-linear wear target learned from run-to-failure histories: 0 while more
//! than `knee` of life remains (wear is not yet visible), then linear to 1 at failure.

use serde::{Deserialize, Serialize};

use super::linalg::NormalEquations;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthIndexFusion {
    /// Indices of the fused channels.
    pub channels: Vec<usize>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Remaining life beyond which the target is 0 (the time unit of the history).
    pub knee: f64,
}

/// The wear target at `remaining` life: 0 beyond the knee, 1 at failure.
pub fn wear_target(remaining: f64, knee: f64) -> f64 {
    (1.0 - remaining / knee).clamp(0.0, 1.0)
}

impl HealthIndexFusion {
    /// Learns the weights from runs to failure: `z[run][row][channel]` z-scores and
    /// `remaining[run][row]` remaining life. `None` without usable rows.
    pub fn learn(
        z: &[Vec<Vec<f64>>],
        remaining: &[Vec<f64>],
        channels: &[usize],
        knee: f64,
        ridge: f64,
    ) -> Option<Self> {
        let mut ne = NormalEquations::new(channels.len() + 1);
        let mut x = vec![0.0; channels.len() + 1];
        x[0] = 1.0;
        for (run, rem) in z.iter().zip(remaining) {
            for (row, r) in run.iter().zip(rem) {
                for (xi, c) in x[1..].iter_mut().zip(channels) {
                    *xi = row[*c];
                }
                if x.iter().all(|v| v.is_finite()) {
                    ne.add(&x, wear_target(*r, knee), 1.0);
                }
            }
        }
        if ne.rows() < (channels.len() + 2) as f64 {
            return None;
        }
        let beta = ne.solve(ridge, &[0])?;
        Some(Self {
            channels: channels.to_vec(),
            weights: beta[1..].to_vec(),
            intercept: beta[0],
            knee,
        })
    }

    /// HI of one row of z-scores (missing channels count as healthy, z = 0).
    pub fn apply(&self, z: &[f64]) -> f64 {
        self.intercept
            + self
                .channels
                .iter()
                .zip(&self.weights)
                .map(|(c, w)| {
                    let v = z[*c];
                    if v.is_finite() { w * v } else { 0.0 }
                })
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_index_follows_the_wear_target_and_ignores_a_useless_channel() {
        // Channel 0 is the wear target itself, scaled by 2; channel 1 is a constant 5.
        let remaining: Vec<Vec<f64>> = (0..5)
            .map(|u| (0..100 + u).rev().map(|r| r as f64).collect())
            .collect();
        let z: Vec<Vec<Vec<f64>>> = remaining
            .iter()
            .map(|rem| {
                rem.iter()
                    .map(|r| vec![2.0 * wear_target(*r, 40.0), 5.0])
                    .collect()
            })
            .collect();
        let f = HealthIndexFusion::learn(&z, &remaining, &[0, 1], 40.0, 1e-9).unwrap();
        for (r, want) in [(80.0, 0.0), (20.0, 0.5), (0.0, 1.0)] {
            let hi = f.apply(&[2.0 * wear_target(r, 40.0), 5.0]);
            assert!((hi - want).abs() < 1e-3, "at {r}: {hi}");
        }
    }
}
