//! Similarity-based remaining life: match the recent health-index trajectory of a unit
//! against the trajectories of past runs to failure, at every alignment, and read off
//! what the best-matching runs had left at the matching point.
//!
//! Library trajectories are smoothed by a least-squares cubic in relative life (the
//! noise of one past run should not decide a match); the query is compared as observed
//! over its last `window` rows. The `neighbours` closest runs (mean squared distance at
//! their best alignment) vote, weighted by exp(−distance / median distance of the
//! voters): the votes are the atoms of the remaining-life distribution.

use super::linalg::NormalEquations;

/// Degree of the polynomial that smooths each library trajectory.
const DEGREE: usize = 3;

#[derive(Clone, Debug, PartialEq)]
struct Trajectory {
    /// Smoothed HI per row.
    hi: Vec<f64>,
    /// Remaining life at each row.
    remaining: Vec<f64>,
    /// Prefix sums of hi² for O(1) window energies.
    sq_prefix: Vec<f64>,
}

/// Past runs to failure, ready to be matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimilarityLibrary {
    runs: Vec<Trajectory>,
}

/// One past run's vote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    pub run: usize,
    pub remaining: f64,
    pub distance: f64,
    pub weight: f64,
}

/// Least-squares polynomial smoothing of `y` over relative position 0..1.
pub fn smooth_polynomial(y: &[f64], degree: usize) -> Vec<f64> {
    let n = y.len();
    if n <= degree + 1 {
        return y.to_vec();
    }
    let basis = |i: usize| {
        let t = i as f64 / (n - 1) as f64;
        (0..=degree).map(move |p| t.powi(p as i32))
    };
    let mut ne = NormalEquations::new(degree + 1);
    let mut x = vec![0.0; degree + 1];
    for (i, v) in y.iter().enumerate() {
        if v.is_finite() {
            x.iter_mut().zip(basis(i)).for_each(|(a, b)| *a = b);
            ne.add(&x, *v, 1.0);
        }
    }
    match ne.solve(0.0, &[]) {
        Some(beta) => (0..n)
            .map(|i| basis(i).zip(&beta).map(|(b, c)| b * c).sum())
            .collect(),
        None => y.to_vec(),
    }
}

impl SimilarityLibrary {
    /// A library of runs to failure: each `(hi per row, remaining life per row)`.
    pub fn new(runs: &[(Vec<f64>, Vec<f64>)]) -> Self {
        Self {
            runs: runs
                .iter()
                .filter(|(hi, _)| hi.len() >= 2)
                .map(|(hi, remaining)| {
                    let hi = smooth_polynomial(hi, DEGREE);
                    let mut sq_prefix = Vec::with_capacity(hi.len() + 1);
                    sq_prefix.push(0.0);
                    let mut acc = 0.0;
                    for v in &hi {
                        acc += v * v;
                        sq_prefix.push(acc);
                    }
                    Trajectory {
                        hi,
                        remaining: remaining.clone(),
                        sq_prefix,
                    }
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The `neighbours` best-matching runs for the last `window` rows of `query`.
    pub fn matches(&self, query: &[f64], window: usize, neighbours: usize) -> Vec<Match> {
        let w = window.min(query.len()).max(1);
        let q = &query[query.len() - w..];
        let q_sq: f64 = q.iter().map(|v| v * v).sum();
        let mut best: Vec<Match> = Vec::with_capacity(self.runs.len());
        for (r, run) in self.runs.iter().enumerate() {
            if run.hi.len() < w {
                continue;
            }
            let mut top = (f64::INFINITY, 0);
            for start in 0..=run.hi.len() - w {
                let seg = &run.hi[start..start + w];
                let cross: f64 = seg.iter().zip(q).map(|(a, b)| a * b).sum();
                let seg_sq = run.sq_prefix[start + w] - run.sq_prefix[start];
                let d = (q_sq - 2.0 * cross + seg_sq) / w as f64;
                if d < top.0 {
                    top = (d, start + w - 1);
                }
            }
            if top.0.is_finite() {
                best.push(Match {
                    run: r,
                    remaining: run.remaining[top.1],
                    distance: top.0.max(0.0),
                    weight: 0.0,
                });
            }
        }
        best.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        best.truncate(neighbours.max(1));
        let scale = super::runs::median(&best.iter().map(|m| m.distance).collect::<Vec<_>>());
        for m in &mut best {
            m.weight = if scale > 0.0 {
                (-m.distance / scale).exp()
            } else {
                1.0
            };
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_cut_from_a_known_trajectory_finds_its_remaining_life() {
        // Runs of lengths 100..200 whose HI is (position / length)²: the same shape at
        // different speeds. A query of the 150-row run cut after 120 rows (last row 119 of 0..=149) has 30 left.
        let runs: Vec<(Vec<f64>, Vec<f64>)> = (100..=200)
            .step_by(10)
            .map(|len| {
                let hi = (0..len).map(|i| (i as f64 / len as f64).powi(2)).collect();
                let rem = (0..len).map(|i| (len - 1 - i) as f64).collect();
                (hi, rem)
            })
            .collect();
        let lib = SimilarityLibrary::new(&runs);
        let query: Vec<f64> = (0..120).map(|i| (i as f64 / 150.0).powi(2)).collect();
        let m = lib.matches(&query, 60, 3);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].remaining, 30.0, "{m:?}");
        assert!(m[0].distance < 1e-9 && m[0].weight >= m[1].weight);
    }

    #[test]
    fn polynomial_smoothing_keeps_a_cubic_and_removes_alternating_noise() {
        let y: Vec<f64> = (0..50)
            .map(|i| {
                let t = i as f64 / 49.0;
                1.0 + t - 2.0 * t * t * t + if i % 2 == 0 { 0.1 } else { -0.1 }
            })
            .collect();
        let s = smooth_polynomial(&y, 3);
        for (i, v) in s.iter().enumerate() {
            let t = i as f64 / 49.0;
            assert!((v - (1.0 + t - 2.0 * t * t * t)).abs() < 0.02, "{i}: {v}");
        }
    }
}
