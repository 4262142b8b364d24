//! The live model of one component: an incremental state that takes one time bucket
//! of telemetry at a time, in O(1) work per bucket, and gives the component's estimate
//! at any instant. The analysis cycle keeps one per component between cycles.
//!
//! Per bucket:
//! 1. **Operating-condition correction**: each wear channel's sensitivity to the
//!    operating channels (`op.*`) is learned by regressing its bucket-to-bucket
//!    changes on theirs (differencing removes the slow wear, which the regimes do not
//!    cause), and the reading is brought to the component's average conditions.
//! 2. **Anomalies**: a corrected reading far outside the one-step forecast of its own
//!    recent level and trend (Holt smoothing) is a sudden fault, not wear: it raises an
//!    [`Anomaly`] and is kept out of the health index. A jump that persists is accepted
//!    as the new level (the alert stays).
//! 3. **Health index** (HI): each channel on its scale, 0 at the machine model's
//!    healthy level and 1 at its failure level, weighted and averaged.
//! 4. **Onset**: a one-sided CUSUM of the HI above its healthy level, with an
//!    allowance of a few noise standard deviations, raises the onset alarm; the onset
//!    is where that excursion began. A long return to healthy clears it.
//! 5. **Trend**: from the onset on, recency-weighted least squares of a linear trend
//!    and of exponential ones, ln(HI + c) linear in time for a few offsets c (wear that
//!    starts flat and accelerates, [`EXP_OFFSETS`]), kept as discounted sufficient
//!    statistics; the one with the smallest one-step-ahead error is used. The slope gets a conjugate normal prior from
//!    the fleet (the rate that would use up the part type's warning interval), so a
//!    short trend is not trusted more than the fleet's experience.
//!
//! The estimate: failed; unknown (no data: the fleet's life prior); healthy (at least
//! the fleet's warning interval remains, and the life prior if that says more);
//! degrading with a trend (the slope's Student-t distribution gives the crossing time,
//! bounded by the life prior); or degrading without a trend yet (what is left of the
//! warning interval).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::WeibullLife;

use super::linalg::{NormalEquations, Welford};
use super::warning::WarningInterval;
use super::weibull::weibull_conditional_quantile;
use super::{
    CRITICAL_RUL_H, Evidence, HealthStatus, HiPoint, RulDistribution, RulEstimate, TrendFit,
    TrendShape,
};

/// Buckets averaged for the displayed health index.
const TRAILING: usize = 12;
/// Fewest buckets after the onset before a trend is trusted.
pub const MIN_TREND_POINTS: u64 = 8;
/// Least CUSUM allowance above the healthy level, in HI units.
const CUSUM_ALLOWANCE_MIN: f64 = 0.04;
/// CUSUM allowance in noise standard deviations (when that is more).
const CUSUM_ALLOWANCE_SIGMAS: f64 = 3.0;
/// CUSUM decision threshold, in HI × buckets.
const CUSUM_THRESHOLD: f64 = 0.6;
/// Consecutive buckets back at healthy that clear an onset alarm.
const ONSET_RESET_BUCKETS: u32 = 48;
/// Buckets kept from the start of a CUSUM excursion to seed the trend at the alarm.
const EXCURSION_BUFFER: usize = 168;
/// Recent buckets weigh more (wear accelerates): the weight halves every this share of
/// the time since the onset, and at least every [`MIN_HALF_LIFE_H`].
const RECENCY_SHARE: f64 = 0.25;
const MIN_HALF_LIFE_H: f64 = 24.0;
/// Smallest HI the exponential trend takes the logarithm of.
const HI_FLOOR: f64 = 0.01;
/// Floor on the slope's relative standard error: wear rarely follows the fitted curve
/// (it accelerates, regimes shift), which the fit's own error cannot see. On the
/// simulated fleet's degrading components 0.25 let the P10–P90 interval hold only 46% of
/// the true remaining lives (most misses late), 0.4 holds about 70%.
const MODEL_FORM_REL_SE: f64 = 0.4;
/// Relative standard deviation of the fleet prior on the slope (weak on purpose).
const PRIOR_REL_SD: f64 = 1.0;
/// One-step forecast error, in robust standard deviations, that makes a reading an
/// anomaly.
const ANOMALY_Z: f64 = 8.0;
/// Buckets of a channel's own history before it can raise anomalies.
const ANOMALY_WARMUP: u32 = 24;
/// Consecutive anomalous buckets after which a jump is the channel's new level.
const STEP_BUCKETS: u32 = 3;
/// An anomaly stays on the estimate this long after its last anomalous bucket.
pub const ANOMALY_HOLD_H: f64 = 24.0;
/// Bucket-to-bucket differences needed before the operating correction applies.
const OP_MIN_DIFFERENCES: f64 = 24.0;
/// Ridge penalty of the operating correction (relative to each channel's own spread).
const OP_RIDGE: f64 = 1e-3;
/// Healthy baseline: learned over this many first buckets, if they come within
/// [`BASELINE_AGE_H`] of the install (a part seen only later keeps the machine
/// model's healthy level, HI 0).
const BASELINE_BUCKETS: f64 = 48.0;
const BASELINE_AGE_H: f64 = 72.0;
/// The learned healthy level may not stray further than this from HI 0.
const BASELINE_MAX_OFFSET: f64 = 0.1;
/// Smoothing of the noise estimates.
const NOISE_ALPHA: f64 = 0.05;
/// Holt smoothing of each channel's level and trend (for the one-step forecast).
const HOLT_LEVEL: f64 = 0.3;
const HOLT_TREND: f64 = 0.1;
/// Upper quantile of the conditional life prior that bounds any remaining life.
const LIFE_BOUND_Q: f64 = 0.999;
/// Bound on the health index a bucket feeds the model and on a trend's one-step error
/// (0 is healthy, 1 is failure): a reading ten failure-spans out is a broken sensor, not
/// wear, and unbounded values would overflow the trend's sums of squares to infinity,
/// which the stored state cannot hold (JSON has no infinity).
const HI_LIMIT: f64 = 10.0;

/// A sudden fault: an alert, not a replacement offer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    #[serde(with = "crate::views::rfc3339")]
    pub at: UnixMs,
    /// The wear channel (quantity) that jumped.
    pub channel: String,
    /// How far outside its forecast, in robust standard deviations.
    pub score: f64,
    pub description: String,
}

/// How the component's wear channels map to health, from the machine model (and, as
/// the fleet's history grows, learned weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelScale {
    pub quantity: String,
    pub healthy: f64,
    pub failure: f64,
    /// Weight in the fused health index.
    pub weight: f64,
}

/// One time bucket of a component's telemetry: the mean of each wear channel (in the
/// order of its [`ChannelScale`]s, NaN where it has no data) and of each operating
/// channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketReading {
    pub t: UnixMs,
    pub wear: Vec<f64>,
    pub op: Vec<(String, f64)>,
}

/// What the fleet knows about the component's part type.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetKnowledge {
    pub life: WeibullLife,
    pub warning: WarningInterval,
}

impl FleetKnowledge {
    /// What is known before any fleet history: the manifest's life prior and the
    /// default warning interval.
    pub fn from_prior(life: WeibullLife) -> Self {
        Self {
            life,
            warning: WarningInterval::default_for(life),
        }
    }
}

/// The operating-condition correction of the wear channels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct OpCorrection {
    names: Vec<String>,
    mean: Vec<Welford>,
    /// Per wear channel: Δreading on Δop.
    equations: Vec<NormalEquations>,
    /// Per wear channel: the fitted sensitivities (empty until enough differences).
    beta: Vec<Vec<f64>>,
}

impl OpCorrection {
    fn values(&mut self, op: &[(String, f64)]) -> Vec<f64> {
        if self.names.is_empty() && !op.is_empty() {
            let mut names: Vec<String> = op.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            names.dedup();
            self.mean = vec![Welford::default(); names.len()];
            self.names = names;
        }
        self.names
            .iter()
            .map(|n| {
                op.iter()
                    .find(|(m, _)| m == n)
                    .map_or(f64::NAN, |(_, v)| *v)
            })
            .collect()
    }

    /// Learns from one step between consecutive buckets and refits.
    fn learn(&mut self, prev_op: &[f64], op: &[f64], prev_x: &[f64], x: &[f64]) {
        let p = self.names.len();
        // A bucket read before the operating channels were first seen carries no
        // operating values: there is no step to learn from it.
        if p == 0
            || op.len() != p
            || prev_op.len() != p
            || op.iter().chain(prev_op).any(|v| !v.is_finite())
        {
            return;
        }
        if self.equations.len() != x.len() {
            self.equations = vec![NormalEquations::new(p); x.len()];
            self.beta = vec![Vec::new(); x.len()];
        }
        let d_op: Vec<f64> = op.iter().zip(prev_op).map(|(a, b)| a - b).collect();
        for c in 0..x.len() {
            if x[c].is_finite() && prev_x[c].is_finite() {
                self.equations[c].add(&d_op, x[c] - prev_x[c], 1.0);
                if self.equations[c].rows() >= OP_MIN_DIFFERENCES {
                    self.beta[c] = self.equations[c]
                        .solve_relative(OP_RIDGE)
                        .unwrap_or_default();
                }
            }
        }
    }

    /// The reading of channel `c` brought to the average operating conditions.
    fn correct(&self, c: usize, x: f64, op: &[f64]) -> f64 {
        match self.beta.get(c) {
            Some(beta) if !beta.is_empty() => {
                x - beta
                    .iter()
                    .zip(op.iter().zip(&self.mean))
                    .map(|(b, (v, m))| if v.is_finite() { b * (v - m.mean) } else { 0.0 })
                    .sum::<f64>()
            }
            _ => x,
        }
    }
}

/// One wear channel's recent behaviour, for anomaly detection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ChannelTracker {
    level: Option<f64>,
    trend: f64,
    /// Smoothed absolute one-step forecast error.
    mad: f64,
    seen: u32,
    streak: u32,
}

impl ChannelTracker {
    /// Folds in a corrected reading; `Some(score)` if it is an anomaly (then it is not
    /// folded in unless the jump persists).
    fn observe(&mut self, x: f64) -> Option<f64> {
        let Some(level) = self.level else {
            self.level = Some(x);
            self.seen = 1;
            return None;
        };
        let forecast = level + self.trend;
        let error = x - forecast;
        let sd = 1.25 * self.mad;
        let score = if sd > 0.0 { error.abs() / sd } else { 0.0 };
        if self.seen >= ANOMALY_WARMUP && score > ANOMALY_Z {
            self.streak += 1;
            if self.streak < STEP_BUCKETS {
                return Some(score);
            }
            // A jump that stays is the channel's new level.
            self.level = Some(x);
            self.trend = 0.0;
            self.streak = 0;
            return Some(score);
        }
        self.streak = 0;
        let new_level = HOLT_LEVEL * x + (1.0 - HOLT_LEVEL) * forecast;
        self.trend = HOLT_TREND * (new_level - level) + (1.0 - HOLT_TREND) * self.trend;
        self.level = Some(new_level);
        self.mad = if self.seen <= 1 {
            error.abs()
        } else {
            NOISE_ALPHA * error.abs().min(6.0 * sd.max(1e-12)) + (1.0 - NOISE_ALPHA) * self.mad
        };
        self.seen = self.seen.saturating_add(1);
        None
    }
}

/// Recency-weighted sums of one trend shape's regression of y on τ (hours since onset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Discounted {
    w: f64,
    wx: f64,
    wxx: f64,
    wy: f64,
    wyy: f64,
    wxy: f64,
    w2: f64,
    w2x: f64,
    w2xx: f64,
    /// One-step-ahead errors in HI units: Σw e², and Σw e·e₋₁ with the last error, for
    /// the residual autocorrelation.
    e2: f64,
    ee: f64,
    last_e: f64,
    n: u64,
}

impl Discounted {
    fn discount(&mut self, lambda: f64) {
        let l2 = lambda * lambda;
        self.w *= lambda;
        self.wx *= lambda;
        self.wxx *= lambda;
        self.wy *= lambda;
        self.wyy *= lambda;
        self.wxy *= lambda;
        self.w2 *= l2;
        self.w2x *= l2;
        self.w2xx *= l2;
        self.e2 *= lambda;
        self.ee *= lambda;
    }

    fn add(&mut self, x: f64, y: f64) {
        self.w += 1.0;
        self.wx += x;
        self.wxx += x * x;
        self.wy += y;
        self.wyy += y * y;
        self.wxy += x * y;
        self.w2 += 1.0;
        self.w2x += x;
        self.w2xx += x * x;
        self.n += 1;
    }

    fn record_error(&mut self, e: f64) {
        // A forecast that ran off to infinity is as wrong as it can be counted.
        let e = if e.is_nan() {
            HI_LIMIT
        } else {
            e.clamp(-HI_LIMIT, HI_LIMIT)
        };
        self.e2 += e * e;
        self.ee += e * self.last_e;
        self.last_e = e;
    }

    /// (intercept, slope) of the weighted least-squares line.
    fn line(&self) -> Option<(f64, f64)> {
        if self.n < 3 || self.w <= 0.0 {
            return None;
        }
        let mx = self.wx / self.w;
        let my = self.wy / self.w;
        let sxx = self.wxx - self.w * mx * mx;
        if sxx <= 1e-12 * self.wxx.max(1.0) {
            return None;
        }
        let b = (self.wxy - self.w * mx * my) / sxx;
        Some((my - b * mx, b))
    }
}

/// The offsets c of the shifted exponential trends, ln(HI + c) = a + b·τ, fitted next
/// to the linear one and the pure exponential (c = 0). Wear that follows
/// HI = A·(e^(bτ) − 1) from its onset (flat at first, then accelerating; the
/// exponential degradation model with an intercept, as in MATLAB's
/// `exponentialDegradationModel`) is a straight line in ln(HI + A); which c fits a
/// component is read off the one-step forecast errors like the choice between linear
/// and exponential. Small c: a sharp late run-away; large c: close to linear.
pub const EXP_OFFSETS: [f64; 4] = [0.03, 0.1, 0.3, 1.0];

/// A trend form: the shape and, for the exponential, its offset.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    Linear,
    Exp(f64),
}

impl Form {
    fn shape(self) -> TrendShape {
        match self {
            Form::Linear => TrendShape::Linear,
            Form::Exp(_) => TrendShape::Exponential,
        }
    }

    fn offset(self) -> f64 {
        match self {
            Form::Linear => 0.0,
            Form::Exp(c) => c,
        }
    }
}

fn transform(form: Form, hi: f64) -> f64 {
    match form {
        Form::Linear => hi,
        Form::Exp(c) => (hi + c).max(HI_FLOOR).ln(),
    }
}

fn untransform(form: Form, y: f64) -> f64 {
    match form {
        Form::Linear => y,
        Form::Exp(c) => y.exp() - c,
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrendState {
    origin: UnixMs,
    last_tau: f64,
    linear: Discounted,
    exponential: Discounted,
    /// One per [`EXP_OFFSETS`] (empty in a state saved before they existed: then only
    /// the linear and the pure exponential trend are fitted).
    #[serde(default)]
    shifted: Vec<Discounted>,
    /// HI at the alarm, for the fleet prior on the slope.
    hi_at_alarm: f64,
}

impl TrendState {
    fn new(origin: UnixMs, hi_at_alarm: f64) -> Self {
        Self {
            origin,
            last_tau: 0.0,
            linear: Discounted::default(),
            exponential: Discounted::default(),
            shifted: vec![Discounted::default(); EXP_OFFSETS.len()],
            hi_at_alarm,
        }
    }

    /// Every form this state fits.
    fn forms(&self) -> Vec<Form> {
        let mut forms = vec![Form::Linear, Form::Exp(0.0)];
        if self.shifted.len() == EXP_OFFSETS.len() {
            forms.extend(EXP_OFFSETS.iter().map(|c| Form::Exp(*c)));
        }
        forms
    }

    fn add(&mut self, t: UnixMs, hi: f64) {
        let tau = self.origin.hours_until(t).max(0.0);
        let half_life = (RECENCY_SHARE * tau).max(MIN_HALF_LIFE_H);
        let lambda = 0.5f64.powf((tau - self.last_tau).max(0.0) / half_life);
        for form in self.forms() {
            let d = self.stats_mut(form);
            d.discount(lambda);
            if let Some((a, b)) = d.line() {
                let e = hi - untransform(form, a + b * tau);
                d.record_error(e);
            }
            d.add(tau, transform(form, hi));
        }
        self.last_tau = tau;
    }

    fn stats_mut(&mut self, form: Form) -> &mut Discounted {
        match form {
            Form::Linear => &mut self.linear,
            Form::Exp(c) => match EXP_OFFSETS.iter().position(|o| *o == c) {
                Some(i) => &mut self.shifted[i],
                None => &mut self.exponential,
            },
        }
    }

    fn stats(&self, form: Form) -> &Discounted {
        match form {
            Form::Linear => &self.linear,
            Form::Exp(c) => match EXP_OFFSETS.iter().position(|o| *o == c) {
                Some(i) => &self.shifted[i],
                None => &self.exponential,
            },
        }
    }

    /// The form that forecasts best (smallest discounted one-step error); until the
    /// others have forecast, the linear one.
    fn best_form(&self) -> Form {
        let mut best = Form::Linear;
        for form in self.forms().into_iter().skip(1) {
            let d = self.stats(form);
            if d.e2 > 0.0 && d.e2 < self.stats(best).e2 {
                best = form;
            }
        }
        best
    }

    /// The trend at `now`, with the fleet's prior on the slope.
    fn fit(&self, now: UnixMs, warning: WarningInterval) -> Option<TrendFit> {
        let form = self.best_form();
        let d = self.stats(form);
        let (_, b) = d.line()?;
        let mx = d.wx / d.w;
        let my = d.wy / d.w;
        let sxx = d.wxx - d.w * mx * mx;
        let sxy = d.wxy - d.w * mx * my;
        let syy = d.wyy - d.w * my * my;
        let n_w = d.w * d.w / d.w2;
        let sse = (syy - b * sxy).max(0.0);
        let s2 = sse / d.w * n_w / (n_w - 2.0).max(1.0);
        let sxx_w2 = (d.w2xx - 2.0 * mx * d.w2x + mx * mx * d.w2).max(0.0);
        let rho = if d.e2 > 0.0 {
            (d.ee / d.e2).clamp(0.0, 0.95)
        } else {
            0.0
        };
        let inflation = ((1.0 + rho) / (1.0 - rho)).sqrt();
        let se_data = ((s2 * sxx_w2).sqrt() / sxx * inflation).max(1e-12);
        let n_eff = n_w * (1.0 - rho) / (1.0 + rho);

        // The fleet's prior on the slope: the rate that uses up a typical warning
        // interval from the HI at the alarm to failure.
        let failure_level = transform(form, 1.0);
        let start = transform(form, self.hi_at_alarm.clamp(HI_FLOOR, 0.9));
        let b0 = (failure_level - start) / warning.median_h.max(1.0);
        let s0 = (PRIOR_REL_SD * b0.abs()).max(1e-12);
        let precision = 1.0 / (se_data * se_data) + 1.0 / (s0 * s0);
        let slope = (b / (se_data * se_data) + b0 / (s0 * s0)) / precision;
        let se = (1.0 / precision)
            .sqrt()
            .max(MODEL_FORM_REL_SE * slope.abs());

        let tau_now = self.origin.hours_until(now);
        let level = my + slope * (tau_now - mx);
        let rmse_hi = if d.w > 0.0 { (d.e2 / d.w).sqrt() } else { 0.0 };
        Some(TrendFit {
            shape: form.shape(),
            level,
            gap: failure_level - level,
            slope_per_h: slope,
            slope_se: se.max(1e-12),
            dof: (n_eff - 2.0).max(1.0),
            rmse_hi,
            offset: form.offset(),
        })
    }
}

/// Onset detection state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cusum {
    s: f64,
    /// Start of the current excursion above the allowance.
    run_start: Option<UnixMs>,
    /// The excursion's points so far (bounded), to seed the trend at the alarm.
    excursion: VecDeque<HiPoint>,
    onset_at: Option<UnixMs>,
    alarm_at: Option<UnixMs>,
    calm: u32,
}

/// Readings with gaps (NaN) through JSON, which has no NaN: `null` stands for one.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use wearcast_protocol::UnixMs;

    type Prev = Option<(UnixMs, Vec<f64>, Vec<f64>)>;
    type Stored = Option<(UnixMs, Vec<Option<f64>>, Vec<Option<f64>>)>;

    fn to_options(v: &[f64]) -> Vec<Option<f64>> {
        v.iter().map(|x| x.is_finite().then_some(*x)).collect()
    }

    fn to_nans(v: Vec<Option<f64>>) -> Vec<f64> {
        v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()
    }

    pub fn serialize<S: Serializer>(prev: &Prev, s: S) -> Result<S::Ok, S::Error> {
        let stored: Stored = prev
            .as_ref()
            .map(|(t, wear, op)| (*t, to_options(wear), to_options(op)));
        stored.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Prev, D::Error> {
        let stored = Stored::deserialize(d)?;
        Ok(stored.map(|(t, wear, op)| (t, to_nans(wear), to_nans(op))))
    }
}

/// Everything the live model keeps about one component between cycles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentState {
    /// The install this state belongs to; a replacement starts a new state.
    pub installed_at: UnixMs,
    /// The last bucket folded in.
    pub last_bucket: Option<UnixMs>,
    pub first_bucket: Option<UnixMs>,
    /// Buckets folded in.
    pub buckets: u64,
    op: OpCorrection,
    channels: Vec<ChannelTracker>,
    /// The previous bucket's raw wear readings and operating values (for differences);
    /// a missing reading is NaN, stored as JSON `null`.
    #[serde(with = "nan_as_null")]
    prev: Option<(UnixMs, Vec<f64>, Vec<f64>)>,
    recent: VecDeque<HiPoint>,
    /// Smoothed |ΔHI| between consecutive buckets.
    hi_mad: f64,
    prev_hi: Option<(UnixMs, f64)>,
    baseline: Welford,
    healthy_level: f64,
    cusum: Cusum,
    trend: Option<TrendState>,
    pub anomaly: Option<Anomaly>,
}

impl ComponentState {
    pub fn new(installed_at: UnixMs) -> Self {
        Self {
            installed_at,
            last_bucket: None,
            first_bucket: None,
            buckets: 0,
            op: OpCorrection::default(),
            channels: Vec::new(),
            prev: None,
            recent: VecDeque::new(),
            hi_mad: 0.0,
            prev_hi: None,
            baseline: Welford::default(),
            healthy_level: 0.0,
            cusum: Cusum::default(),
            trend: None,
            anomaly: None,
        }
    }

    /// When degradation started, if it has (the start of the alarmed excursion).
    pub fn onset_at(&self) -> Option<UnixMs> {
        self.cusum.onset_at
    }

    /// When the onset alarm was raised.
    pub fn alarm_at(&self) -> Option<UnixMs> {
        self.cusum.alarm_at
    }

    /// Folds in one bucket of raw telemetry. Buckets must come in time order; one at
    /// or before the last is ignored. O(channels × operating channels²).
    pub fn update(&mut self, reading: &BucketReading, scales: &[ChannelScale], bucket_ms: i64) {
        if self.last_bucket.is_some_and(|t| reading.t <= t) {
            return;
        }
        let op = self.op.values(&reading.op);
        if let Some((t_prev, x_prev, op_prev)) = &self.prev
            && reading.t.0 - t_prev.0 == bucket_ms
        {
            let (x_prev, op_prev) = (x_prev.clone(), op_prev.clone());
            self.op.learn(&op_prev, &op, &x_prev, &reading.wear);
        }
        for (w, v) in self.op.mean.iter_mut().zip(&op) {
            if v.is_finite() {
                w.add(*v);
            }
        }
        if self.channels.len() != scales.len() {
            self.channels = vec![ChannelTracker::default(); scales.len()];
        }
        let (mut sum, mut weights) = (0.0, 0.0);
        for (c, scale) in scales.iter().enumerate() {
            let Some(x) = reading.wear.get(c).copied().filter(|v| v.is_finite()) else {
                continue;
            };
            let corrected = self.op.correct(c, x, &op);
            if let Some(score) = self.channels[c].observe(corrected) {
                let stays = self.channels[c].streak == 0;
                self.anomaly = Some(Anomaly {
                    at: reading.t,
                    channel: scale.quantity.clone(),
                    score,
                    description: if stays {
                        format!(
                            "{} jumped to a new level ({score:.0} standard deviations outside its forecast) and stayed there",
                            scale.quantity
                        )
                    } else {
                        format!(
                            "{} jumped {score:.0} standard deviations outside its forecast: a sudden fault, not wear",
                            scale.quantity
                        )
                    },
                });
                if !stays {
                    continue;
                }
            }
            let span = scale.failure - scale.healthy;
            if span != 0.0 && scale.weight > 0.0 {
                sum += scale.weight * (corrected - scale.healthy) / span;
                weights += scale.weight;
            }
        }
        self.prev = Some((reading.t, reading.wear.clone(), op));
        self.last_bucket = Some(reading.t);
        if weights > 0.0 {
            self.update_hi(reading.t, sum / weights);
        }
    }

    /// Folds in one bucket's health index directly (when it is computed elsewhere).
    pub fn update_hi(&mut self, t: UnixMs, hi: f64) {
        if !hi.is_finite() || self.prev_hi.is_some_and(|(p, _)| t <= p) {
            return;
        }
        let hi = hi.clamp(-HI_LIMIT, HI_LIMIT);
        self.buckets += 1;
        self.first_bucket.get_or_insert(t);
        self.last_bucket = Some(self.last_bucket.map_or(t, |l| l.max(t)));
        self.recent.push_back(HiPoint { t, hi });
        while self.recent.len() > TRAILING {
            self.recent.pop_front();
        }
        if let Some((_, prev)) = self.prev_hi {
            let d = (hi - prev).abs();
            let sd = self.noise_sd();
            let d = if sd > 0.0 { d.min(6.0 * sd) } else { d };
            self.hi_mad = if self.buckets <= 2 {
                d
            } else {
                NOISE_ALPHA * d + (1.0 - NOISE_ALPHA) * self.hi_mad
            };
        }
        self.prev_hi = Some((t, hi));
        if self
            .first_bucket
            .is_some_and(|f| self.installed_at.hours_until(f) <= BASELINE_AGE_H)
            && self.baseline.n < BASELINE_BUCKETS
        {
            self.baseline.add(hi);
            self.healthy_level = self
                .baseline
                .mean
                .clamp(-BASELINE_MAX_OFFSET, BASELINE_MAX_OFFSET);
        }
        self.detect_onset(t, hi);
        if let Some(trend) = &mut self.trend {
            trend.add(t, hi);
        }
    }

    /// Standard deviation of the HI's bucket-to-bucket noise.
    pub fn noise_sd(&self) -> f64 {
        // E|Δ| = 2σ/√π for Δ ~ N(0, 2σ²).
        self.hi_mad * std::f64::consts::PI.sqrt() / 2.0
    }

    fn allowance(&self) -> f64 {
        (CUSUM_ALLOWANCE_SIGMAS * self.noise_sd()).max(CUSUM_ALLOWANCE_MIN)
    }

    fn detect_onset(&mut self, t: UnixMs, hi: f64) {
        let k = self.allowance();
        let excess = hi - self.healthy_level - k;
        let c = &mut self.cusum;
        if c.alarm_at.is_some() {
            let trailing = self.recent.iter().map(|p| p.hi).sum::<f64>() / self.recent.len() as f64;
            if trailing < self.healthy_level + 0.5 * k {
                c.calm += 1;
            } else {
                c.calm = 0;
            }
            if c.calm >= ONSET_RESET_BUCKETS {
                // It was not wear after all: back to healthy.
                *c = Cusum::default();
                self.trend = None;
            }
            return;
        }
        c.s = (c.s + excess).max(0.0);
        if c.s <= 0.0 {
            c.run_start = None;
            c.excursion.clear();
            return;
        }
        c.run_start.get_or_insert(t);
        c.excursion.push_back(HiPoint { t, hi });
        while c.excursion.len() > EXCURSION_BUFFER {
            c.excursion.pop_front();
        }
        if c.s > CUSUM_THRESHOLD {
            let onset = c.run_start.unwrap_or(t);
            c.onset_at = Some(onset);
            c.alarm_at = Some(t);
            let mut trend = TrendState::new(onset, hi);
            // The excursion so far already belongs to the trend (this point included).
            for p in c.excursion.drain(..) {
                trend.add(p.t, p.hi);
            }
            self.trend = Some(trend);
        }
    }

    /// The health index of the last bucket.
    pub fn health_index_now(&self) -> f64 {
        self.recent.back().map_or(f64::NAN, |p| p.hi)
    }

    /// Current health index: the mean of the last buckets.
    pub fn health_index(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().map(|p| p.hi).sum::<f64>() / self.recent.len() as f64)
    }

    /// The estimate at `now`.
    pub fn estimate(
        &self,
        now: UnixMs,
        fleet: &FleetKnowledge,
        failed_at: Option<UnixMs>,
    ) -> RulEstimate {
        let age_h = self.installed_at.hours_until(now).max(0.0);
        let life = fleet.life;
        let evidence = |onset_at, hi_per_day| Evidence {
            points: self.buckets as usize,
            last_data_at: self.last_bucket,
            onset_at,
            hi_per_day,
        };
        let current_hi = self.health_index();
        if let Some(failed_at) = failed_at {
            return finish(
                now,
                HealthStatus::Failed,
                current_hi.unwrap_or(1.0).max(1.0),
                RulDistribution::Failed,
                Evidence {
                    last_data_at: Some(failed_at),
                    ..evidence(None, 0.0)
                },
            );
        }
        let Some(hi) = current_hi else {
            return finish(
                now,
                HealthStatus::Unknown,
                0.0,
                RulDistribution::FleetPrior {
                    shape: life.shape,
                    scale_h: life.scale_hours,
                    age_h,
                },
                evidence(None, 0.0),
            );
        };
        let cap_h = weibull_conditional_quantile(life.shape, life.scale_hours, age_h, LIFE_BOUND_Q);
        let Some(onset) = self.cusum.onset_at else {
            return finish(
                now,
                HealthStatus::Healthy,
                hi,
                RulDistribution::HealthySignal {
                    shape: life.shape,
                    scale_h: life.scale_hours,
                    age_h,
                    warning: fleet.warning,
                },
                evidence(None, 0.0),
            );
        };
        let trend = self
            .trend
            .as_ref()
            .filter(|t| t.linear.n >= MIN_TREND_POINTS)
            .and_then(|t| t.fit(now, fleet.warning));
        let (distribution, hi_per_day) = match trend {
            Some(fit) => {
                let per_day = fit.hi_slope_now_per_h() * 24.0;
                (RulDistribution::BoundedTrend { trend: fit, cap_h }, per_day)
            }
            None => (
                RulDistribution::SinceOnset {
                    warning: fleet.warning,
                    elapsed_h: self
                        .cusum
                        .alarm_at
                        .map_or(0.0, |a| a.hours_until(now).max(0.0)),
                    cap_h,
                },
                0.0,
            ),
        };
        let status = if distribution
            .quantile_h(0.1)
            .is_some_and(|h| h < CRITICAL_RUL_H)
        {
            HealthStatus::Critical
        } else {
            HealthStatus::Degrading
        };
        finish(
            now,
            status,
            hi,
            distribution,
            evidence(Some(onset), hi_per_day),
        )
    }

    /// The anomaly to show at `now`, if a recent one.
    pub fn recent_anomaly(&self, now: UnixMs) -> Option<&Anomaly> {
        self.anomaly
            .as_ref()
            .filter(|a| a.at.hours_until(now) <= ANOMALY_HOLD_H)
    }
}

fn finish(
    now: UnixMs,
    status: HealthStatus,
    health_index: f64,
    distribution: RulDistribution,
    evidence: Evidence,
) -> RulEstimate {
    RulEstimate::new(now, status, health_index, distribution, evidence)
}
