//! Run histories: the rows of one component's (or engine's) life, as the learning
//! models take them. A run in a training set ends in failure at its last row; a run
//! being predicted stops somewhere before.

/// One unit's observations in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    pub id: String,
    /// Time of each row (cycles, hours: whatever the history counts in).
    pub time: Vec<f64>,
    /// Operating-condition values per row (NaN = missing).
    pub op: Vec<Vec<f64>>,
    /// Signal values per row (NaN = missing).
    pub signals: Vec<Vec<f64>>,
}

impl Run {
    pub fn len(&self) -> usize {
        self.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    pub fn channels(&self) -> usize {
        self.signals.first().map_or(0, Vec::len)
    }

    /// The first `n` rows: the run as it looked then.
    pub fn prefix(&self, n: usize) -> Run {
        let n = n.min(self.len());
        Run {
            id: self.id.clone(),
            time: self.time[..n].to_vec(),
            op: self.op[..n].to_vec(),
            signals: self.signals[..n].to_vec(),
        }
    }

    /// Time from row `i` to the end of the run (the remaining life at row `i` of a run
    /// to failure).
    pub fn remaining_after(&self, i: usize) -> f64 {
        match (self.time.last(), self.time.get(i)) {
            (Some(end), Some(t)) => end - t,
            _ => 0.0,
        }
    }

    /// Length of the run in its time unit (first row to last).
    pub fn span(&self) -> f64 {
        match (self.time.first(), self.time.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }
}

/// Median of a non-empty slice (0 for an empty one).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Synthetic run-to-failure fleets with known structure, for tests.
#[cfg(test)]
pub mod synthetic {
    use super::Run;
    use crate::model::linalg::SplitMix64;

    /// `units` runs to failure: lives Weibull(4, 200) cycles (at least 60); two
    /// operating regimes (`op.alt` 0 or 10, switching at random; `op.fixed` constant);
    /// signals: 0 constant, 1 rising wear with a regime offset, 2 falling wear with a
    /// regime offset, 3 noise. Wear is 0 until 40% of the life, then rises
    /// exponentially to 1 at failure.
    pub fn fleet(units: usize, seed: u64) -> Vec<Run> {
        let mut lives = SplitMix64::new(seed ^ 0xA5A5);
        let mut rng = SplitMix64::new(seed);
        let mut gauss = move || (0..12).map(|_| rng.next_f64()).sum::<f64>() - 6.0;
        (0..units)
            .map(|u| {
                let uniform = lives.next_f64().clamp(1e-6, 1.0 - 1e-6);
                let life = (200.0 * (-(1.0 - uniform).ln()).powf(0.25))
                    .max(60.0)
                    .round() as usize;
                let mut run = Run {
                    id: format!("u{u}"),
                    ..Run::default()
                };
                for i in 0..life {
                    let regime = if gauss() > 0.0 { 1.0 } else { 0.0 };
                    let x = ((i as f64 - 0.4 * life as f64) / (0.6 * life as f64)).max(0.0);
                    let wear = (3.0 * x).exp_m1() / 3f64.exp_m1();
                    run.time.push(i as f64 + 1.0);
                    run.op.push(vec![10.0 * regime + 0.01 * gauss(), 100.0]);
                    run.signals.push(vec![
                        5.0,
                        20.0 * regime + 3.0 * wear + 0.2 * gauss(),
                        50.0 - 5.0 * regime - 2.0 * wear + 0.2 * gauss(),
                        gauss(),
                    ]);
                }
                run
            })
            .collect()
    }
}
