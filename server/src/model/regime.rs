//! Operating regimes: clusters of the operating-condition channels (`op.*`), so wear
//! signals are compared with healthy behaviour at like conditions.
//!
//! The number of regimes is learned, not configured: k-means (k-means++ seeding) on the
//! standardised operating channels for k = 2..=[`MAX_REGIMES`], keeping the largest k
//! whose clusters are all well separated — every pair of centroids at least
//! [`SEPARATION`] pooled within-cluster standard deviations apart along the line that
//! joins them. Noise around one operating point never passes (splitting a Gaussian
//! yields halves about 1.6 sd apart), while distinct flight conditions or load levels
//! pass easily; so a fleet with one regime gets one.

use serde::{Deserialize, Serialize};

use super::linalg::SplitMix64;

/// Most regimes looked for.
pub const MAX_REGIMES: usize = 10;
/// Least separation of two regimes, in pooled within-cluster standard deviations.
pub const SEPARATION: f64 = 6.0;
/// Rows used to learn the clusters (a deterministic subsample of longer inputs).
const MAX_ROWS: usize = 30_000;
/// A cluster smaller than this share of the rows is not a regime.
const MIN_SHARE: f64 = 0.005;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeModel {
    /// Per operating channel: mean and standard deviation used to standardise it;
    /// `None` for channels that do not vary (they carry no regime information).
    scale: Vec<Option<(f64, f64)>>,
    /// Centroids in the standardised space of the varying channels.
    centroids: Vec<Vec<f64>>,
}

impl RegimeModel {
    /// One regime for everything (no operating channels, or none that vary).
    pub fn single(op_channels: usize) -> Self {
        Self {
            scale: vec![None; op_channels],
            centroids: vec![vec![]],
        }
    }

    /// Learns the regimes from rows of operating-channel values (NaN = missing).
    pub fn learn(rows: &[Vec<f64>]) -> Self {
        let p = rows.first().map_or(0, Vec::len);
        let scale: Vec<Option<(f64, f64)>> = (0..p)
            .map(|j| {
                let vals: Vec<f64> = rows
                    .iter()
                    .map(|r| r[j])
                    .filter(|v| v.is_finite())
                    .collect();
                if vals.len() < 2 {
                    return None;
                }
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / (vals.len() - 1) as f64)
                    .sqrt();
                (sd > 1e-9 * mean.abs().max(1.0)).then_some((mean, sd))
            })
            .collect();
        let mut model = Self {
            scale,
            centroids: vec![vec![]],
        };
        if model.scale.iter().all(Option::is_none) {
            return model;
        }
        let step = rows.len().div_ceil(MAX_ROWS).max(1);
        let points: Vec<Vec<f64>> = rows
            .iter()
            .step_by(step)
            .filter_map(|r| model.standardise(r))
            .collect();
        if points.len() < 10 {
            return model;
        }
        let dims = points[0].len();
        model.centroids = vec![vec![0.0; dims]];
        for k in 2..=MAX_REGIMES.min(points.len() / 10) {
            let (centroids, labels) = kmeans(&points, k, 0x5EED + k as u64);
            if well_separated(&points, &centroids, &labels) {
                model.centroids = centroids;
            }
        }
        model
    }

    pub fn count(&self) -> usize {
        self.centroids.len()
    }

    /// The regime of one row of operating values (missing values are ignored).
    pub fn assign(&self, op: &[f64]) -> usize {
        if self.centroids.len() == 1 {
            return 0;
        }
        let z = self.standardise_partial(op);
        let mut best = (0, f64::INFINITY);
        for (i, c) in self.centroids.iter().enumerate() {
            let d: f64 = c
                .iter()
                .zip(&z)
                .filter(|(_, v)| v.is_finite())
                .map(|(c, v)| (c - v).powi(2))
                .sum();
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    }

    /// Standardised varying channels; `None` if any is missing.
    fn standardise(&self, op: &[f64]) -> Option<Vec<f64>> {
        let z = self.standardise_partial(op);
        z.iter().all(|v| v.is_finite()).then_some(z)
    }

    fn standardise_partial(&self, op: &[f64]) -> Vec<f64> {
        self.scale
            .iter()
            .zip(op)
            .filter_map(|(s, v)| s.map(|(m, sd)| (v - m) / sd))
            .collect()
    }
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

fn nearest(p: &[f64], centroids: &[Vec<f64>]) -> (usize, f64) {
    centroids
        .iter()
        .enumerate()
        .map(|(i, c)| (i, dist2(p, c)))
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
}

/// Lloyd's k-means with k-means++ seeding; the best of a few seeds by within-cluster
/// sum of squares.
fn kmeans(points: &[Vec<f64>], k: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut best: Option<(f64, Vec<Vec<f64>>, Vec<usize>)> = None;
    for attempt in 0..3 {
        let mut rng = SplitMix64::new(seed.wrapping_mul(31).wrapping_add(attempt));
        let mut centroids = vec![points[rng.range(0, points.len())].clone()];
        let mut d: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
        while centroids.len() < k {
            let total: f64 = d.iter().sum();
            let mut target = rng.next_f64() * total;
            let mut pick = points.len() - 1;
            for (i, di) in d.iter().enumerate() {
                target -= di;
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            centroids.push(points[pick].clone());
            for (di, p) in d.iter_mut().zip(points) {
                *di = di.min(dist2(p, &centroids[centroids.len() - 1]));
            }
        }
        let mut labels = vec![0; points.len()];
        for _ in 0..100 {
            let mut changed = false;
            for (l, p) in labels.iter_mut().zip(points) {
                let (i, _) = nearest(p, &centroids);
                changed |= *l != i;
                *l = i;
            }
            let dims = points[0].len();
            let mut sums = vec![vec![0.0; dims]; k];
            let mut counts = vec![0usize; k];
            for (l, p) in labels.iter().zip(points) {
                counts[*l] += 1;
                for (s, v) in sums[*l].iter_mut().zip(p) {
                    *s += v;
                }
            }
            for ((c, s), n) in centroids.iter_mut().zip(sums).zip(&counts) {
                if *n > 0 {
                    *c = s.into_iter().map(|v| v / *n as f64).collect();
                }
            }
            if !changed {
                break;
            }
        }
        let sse: f64 = labels
            .iter()
            .zip(points)
            .map(|(l, p)| dist2(p, &centroids[*l]))
            .sum();
        if best.as_ref().is_none_or(|b| sse < b.0) {
            best = Some((sse, centroids, labels));
        }
    }
    let (_, c, l) = best.unwrap_or_default();
    (c, l)
}

fn well_separated(points: &[Vec<f64>], centroids: &[Vec<f64>], labels: &[usize]) -> bool {
    let k = centroids.len();
    let mut counts = vec![0usize; k];
    labels.iter().for_each(|l| counts[*l] += 1);
    if counts
        .iter()
        .any(|n| (*n as f64) < MIN_SHARE * points.len() as f64 || *n < 2)
    {
        return false;
    }
    for a in 0..k {
        for b in a + 1..k {
            let dir: Vec<f64> = centroids[b]
                .iter()
                .zip(&centroids[a])
                .map(|(x, y)| x - y)
                .collect();
            let dist = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
            if dist <= 0.0 {
                return false;
            }
            // Spread of both clusters along the line joining them.
            let (mut ss, mut n) = (0.0, 0.0);
            for (l, p) in labels.iter().zip(points) {
                if *l == a || *l == b {
                    let proj: f64 = p
                        .iter()
                        .zip(&centroids[*l])
                        .zip(&dir)
                        .map(|((x, c), d)| (x - c) * d)
                        .sum::<f64>()
                        / dist;
                    ss += proj * proj;
                    n += 1.0;
                }
            }
            let sd = (ss / n).sqrt();
            if dist < SEPARATION * sd.max(1e-12) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(rng: &mut SplitMix64) -> f64 {
        // Sum of uniforms: close enough to Gaussian for clustering tests.
        (0..12).map(|_| rng.next_f64()).sum::<f64>() - 6.0
    }

    #[test]
    fn six_flight_conditions_are_found_and_told_apart() {
        let centres = [
            [0.0, 0.0, 100.0],
            [10.0, 0.25, 100.0],
            [20.0, 0.7, 100.0],
            [25.0, 0.62, 60.0],
            [35.0, 0.84, 100.0],
            [42.0, 0.84, 100.0],
        ];
        let mut rng = SplitMix64::new(1);
        let rows: Vec<Vec<f64>> = (0..6000)
            .map(|i| {
                let c = centres[i % 6];
                c.iter().map(|v| v + 0.003 * noise(&mut rng)).collect()
            })
            .collect();
        let m = RegimeModel::learn(&rows);
        assert_eq!(m.count(), 6);
        let labels: Vec<usize> = centres.iter().map(|c| m.assign(c)).collect();
        let mut distinct = labels.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "{labels:?}");
        // A row is assigned like its centre even with a missing value.
        assert_eq!(m.assign(&[20.01, f64::NAN, 100.0]), labels[2]);
    }

    #[test]
    fn noise_around_one_operating_point_is_one_regime() {
        let mut rng = SplitMix64::new(2);
        let rows: Vec<Vec<f64>> = (0..5000)
            .map(|_| vec![0.002 * noise(&mut rng), 0.0003 * noise(&mut rng), 100.0])
            .collect();
        assert_eq!(RegimeModel::learn(&rows).count(), 1);
        assert_eq!(RegimeModel::learn(&[]).count(), 1);
    }
}
