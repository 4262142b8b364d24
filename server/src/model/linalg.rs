//! The little dense linear algebra the models need (ridge regressions of a few dozen
//! columns at most), and a seeded generator, so the crate needs no numeric dependency
//! beyond `statrs`.

/// Accumulates the normal equations `XᵀX β = Xᵀy` of a least-squares problem row by
/// row, so a regression over any number of rows costs O(columns²) memory.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormalEquations {
    n: usize,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    rows: f64,
}

impl NormalEquations {
    pub fn new(columns: usize) -> Self {
        Self {
            n: columns,
            xtx: vec![0.0; columns * columns],
            xty: vec![0.0; columns],
            rows: 0.0,
        }
    }

    pub fn add(&mut self, x: &[f64], y: f64, weight: f64) {
        debug_assert_eq!(x.len(), self.n);
        for (i, xi) in x.iter().enumerate() {
            let wxi = weight * xi;
            self.xty[i] += wxi * y;
            for (j, xj) in x[..=i].iter().enumerate() {
                self.xtx[i * self.n + j] += wxi * xj;
            }
        }
        self.rows += weight;
    }

    /// Total weight of the rows added.
    pub fn rows(&self) -> f64 {
        self.rows
    }

    /// The ridge solution with a penalty of `lambda` times each column's own sum of
    /// squares: invariant to the columns' units (like a ridge on standardised columns).
    pub fn solve_relative(&self, lambda: f64) -> Option<Vec<f64>> {
        let n = self.n;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                a[i * n + j] = self.xtx[i * n + j];
                a[j * n + i] = self.xtx[i * n + j];
            }
            a[i * n + i] *= 1.0 + lambda;
        }
        let mut b = self.xty.clone();
        cholesky_solve(&mut a, &mut b, n).then_some(b)
    }

    /// The ridge solution with penalty `lambda · rows` on every column except those in
    /// `unpenalised` (typically the intercept); `None` if the system is singular.
    pub fn solve(&self, lambda: f64, unpenalised: &[usize]) -> Option<Vec<f64>> {
        let n = self.n;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                a[i * n + j] = self.xtx[i * n + j];
                a[j * n + i] = self.xtx[i * n + j];
            }
            if !unpenalised.contains(&i) {
                a[i * n + i] += lambda * self.rows.max(1.0);
            }
        }
        let mut b = self.xty.clone();
        cholesky_solve(&mut a, &mut b, n).then_some(b)
    }
}

/// Solves `A x = b` for a symmetric positive definite `A` (row-major, n×n) in place:
/// `b` becomes `x`. Returns false if `A` is not positive definite.
pub fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> bool {
    // A tiny relative jitter keeps exactly collinear columns (a constant op channel next
    // to the intercept) from failing the whole regression.
    let scale = (0..n).map(|i| a[i * n + i].abs()).fold(0.0, f64::max);
    if !(scale > 0.0 && scale.is_finite()) {
        return false;
    }
    for i in 0..n {
        a[i * n + i] += 1e-12 * scale;
    }
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    b.iter().all(|v| v.is_finite())
}

/// SplitMix64: a small, seeded, reproducible generator for k-means seeding and
/// cross-validation cuts (results must not change from run to run).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
}

/// Mean and variance of a stream (Welford), optionally discounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welford {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Welford {
    pub fn add(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    pub fn variance(&self) -> f64 {
        if self.n > 1.0 {
            self.m2 / (self.n - 1.0)
        } else {
            0.0
        }
    }

    pub fn sd(&self) -> f64 {
        self.variance().sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_the_coefficients_of_an_exact_plane() {
        let mut ne = NormalEquations::new(3);
        for i in 0..20 {
            let (a, b) = (i as f64, (i * i % 7) as f64);
            ne.add(&[1.0, a, b], 2.0 + 0.5 * a - 3.0 * b, 1.0);
        }
        let beta = ne.solve(0.0, &[]).unwrap();
        for (got, want) in beta.iter().zip([2.0, 0.5, -3.0]) {
            assert!((got - want).abs() < 1e-6, "{beta:?}");
        }
    }

    #[test]
    fn ridge_shares_the_weight_of_collinear_columns() {
        let mut ne = NormalEquations::new(3);
        for i in 0..10 {
            let a = i as f64;
            ne.add(&[1.0, a, 2.0 * a], a, 1.0);
        }
        let beta = ne.solve(1e-3, &[0]).unwrap();
        // The penalty splits the weight between the two collinear columns.
        assert!((beta[1] - beta[2] / 2.0).abs() < 1e-3, "{beta:?}");
    }

    #[test]
    fn welford_matches_the_two_pass_variance() {
        let xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let mut w = Welford::default();
        xs.iter().for_each(|x| w.add(*x));
        let mean = xs.iter().sum::<f64>() / 8.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 7.0;
        assert!((w.mean - mean).abs() < 1e-12 && (w.variance() - var).abs() < 1e-12);
    }
}
