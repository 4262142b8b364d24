//! Wear models: data in, estimates out, no I/O.
//!
//! This is the first model (the foundation issue); the wear-models issue replaces the
//! insides (regime normalisation, learned channel relevance, Bayesian trend updates,
//! calibration) but keeps the output type, [`RulEstimate`], which the planner, the API
//! and the dashboards consume.
//!
//! How it works now:
//! 1. **Health index (HI)** per time bucket: each wear channel's mean is placed on the
//!    machine model's scale, 0 at the part's `healthy` level and 1 at its `failure`
//!    level, and the channels are averaged. HI 1 is end of life.
//! 2. **Onset**: degradation is taken to have started where the trailing mean of the HI
//!    last rose through [`ONSET_HI`]. Before that the component is healthy and its
//!    remaining life comes from the fleet prior (the part's Weibull life, conditioned on
//!    the component's age).
//! 3. **Trend**: after onset, a linear and an exponential trend are fitted by least
//!    squares and the one with the smaller error in HI units is kept. The time the trend
//!    reaches HI 1 gives the remaining useful life (RUL).
//! 4. **Uncertainty**: the slope's Student-t distribution (standard error inflated for
//!    autocorrelated residuals, with a floor for model-form error) maps to a
//!    distribution of the crossing time: P10/P50/P90 and P(failure before t) for any t.

mod trend;
mod weibull;

use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::{WearChannelSpec, WeibullLife};

pub use trend::{TrendFit, TrendShape, fit_trend};
pub use weibull::{weibull_conditional_cdf, weibull_conditional_quantile};

/// Trailing HI above which a component counts as degrading.
pub const ONSET_HI: f64 = 0.12;
/// Trailing HI the component must fall below for an onset to be discarded.
const ONSET_RESET_HI: f64 = 0.06;
/// Buckets averaged for the current HI and the onset test.
const TRAILING: usize = 12;
/// Fewest buckets after onset for a trend fit.
const MIN_TREND_POINTS: usize = 8;
/// Most recent buckets a trend is fitted on.
const MAX_TREND_POINTS: usize = 720;
/// RUL below which (at P10) a component is critical.
pub const CRITICAL_RUL_H: f64 = 7.0 * 24.0;

/// A wear channel's value on the health scale: 0 healthy, 1 failure.
pub fn channel_health_index(value: f64, spec: &WearChannelSpec) -> f64 {
    (value - spec.healthy) / (spec.failure - spec.healthy)
}

/// One bucket of the health-index history.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HiPoint {
    #[serde(with = "crate::views::rfc3339")]
    pub t: UnixMs,
    pub hi: f64,
}

/// What the model knows about one component.
#[derive(Clone, Debug)]
pub struct ComponentHistory<'a> {
    /// Health index per time bucket since the component was installed, oldest first.
    pub points: &'a [HiPoint],
    pub installed_at: UnixMs,
    pub failed_at: Option<UnixMs>,
    /// The part type's life distribution (fleet prior).
    pub prior: WeibullLife,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No telemetry yet.
    Unknown,
    Healthy,
    /// Degradation has started; replacement will be planned when the risk is material.
    Degrading,
    /// Likely to fail within a week.
    Critical,
    /// Broke down and not yet replaced.
    Failed,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degrading => "degrading",
            Self::Critical => "critical",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "healthy" => Self::Healthy,
            "degrading" => Self::Degrading,
            "critical" => Self::Critical,
            "failed" => Self::Failed,
            _ => Self::Unknown,
        }
    }

    /// Worse states sort higher.
    pub fn severity(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Unknown => 1,
            Self::Degrading => 2,
            Self::Critical => 3,
            Self::Failed => 4,
        }
    }
}

/// The distribution of the remaining useful life, from which any quantile or
/// probability of failure is computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RulDistribution {
    /// Time for a fitted trend to cross the failure level.
    Trend(TrendFit),
    /// The part's Weibull life, given that the component has survived `age_h`.
    FleetPrior {
        shape: f64,
        scale_h: f64,
        age_h: f64,
    },
    /// The component has failed.
    Failed,
}

impl RulDistribution {
    /// P(failure within `hours` from the estimate).
    pub fn p_fail_within(&self, hours: f64) -> f64 {
        if hours <= 0.0 {
            return match self {
                Self::Failed => 1.0,
                Self::Trend(fit) if fit.gap <= 0.0 => 1.0,
                _ => 0.0,
            };
        }
        match self {
            Self::Trend(fit) => fit.p_cross_within(hours),
            Self::FleetPrior {
                shape,
                scale_h,
                age_h,
            } => weibull_conditional_cdf(*shape, *scale_h, *age_h, hours),
            Self::Failed => 1.0,
        }
    }

    /// The `q` quantile of the RUL in hours; `None` when it lies beyond any bound the
    /// data supports (e.g. a trend that may be flat).
    pub fn quantile_h(&self, q: f64) -> Option<f64> {
        match self {
            Self::Trend(fit) => fit.crossing_quantile(q),
            Self::FleetPrior {
                shape,
                scale_h,
                age_h,
            } => Some(weibull_conditional_quantile(*shape, *scale_h, *age_h, q)),
            Self::Failed => Some(0.0),
        }
    }
}

/// What the estimate rests on, for the offer's explanation and the dashboards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Buckets of history used.
    pub points: usize,
    #[serde(with = "crate::views::rfc3339::option")]
    pub last_data_at: Option<UnixMs>,
    /// When degradation started, if it has.
    #[serde(with = "crate::views::rfc3339::option")]
    pub onset_at: Option<UnixMs>,
    /// Current rise of the health index per day (0 when healthy).
    pub hi_per_day: f64,
}

/// The model's verdict on one component at one instant: the stable shape the planner,
/// the API and the dashboards consume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RulEstimate {
    #[serde(with = "crate::views::rfc3339")]
    pub computed_at: UnixMs,
    pub status: HealthStatus,
    /// Current health index (0 new, 1 end of life), smoothed over the last buckets.
    pub health_index: f64,
    pub rul_p10_h: Option<f64>,
    pub rul_p50_h: Option<f64>,
    pub rul_p90_h: Option<f64>,
    pub distribution: RulDistribution,
    pub evidence: Evidence,
}

impl RulEstimate {
    /// P(failure before `t`).
    pub fn p_fail_before(&self, t: UnixMs) -> f64 {
        self.distribution
            .p_fail_within(self.computed_at.hours_until(t))
    }

    /// Remaining health in percent, for display.
    pub fn health_pct(&self) -> f64 {
        (100.0 * (1.0 - self.health_index)).clamp(0.0, 100.0)
    }
}

/// Estimates the remaining useful life of one component at `now`.
pub fn estimate(history: &ComponentHistory<'_>, now: UnixMs) -> RulEstimate {
    let points = history.points;
    let trailing = trailing_mean(points, points.len());
    let evidence = |onset_at, hi_per_day| Evidence {
        points: points.len(),
        last_data_at: points.last().map(|p| p.t),
        onset_at,
        hi_per_day,
    };
    let finish = |status, health_index, distribution: RulDistribution, evidence| RulEstimate {
        computed_at: now,
        status,
        health_index,
        rul_p10_h: distribution.quantile_h(0.1),
        rul_p50_h: distribution.quantile_h(0.5),
        rul_p90_h: distribution.quantile_h(0.9),
        distribution,
        evidence,
    };

    if let Some(failed_at) = history.failed_at {
        return finish(
            HealthStatus::Failed,
            trailing.unwrap_or(1.0).max(1.0),
            RulDistribution::Failed,
            Evidence {
                onset_at: None,
                last_data_at: Some(failed_at),
                ..evidence(None, 0.0)
            },
        );
    }
    let age_h = history.installed_at.hours_until(now).max(0.0);
    let prior = RulDistribution::FleetPrior {
        shape: history.prior.shape,
        scale_h: history.prior.scale_hours,
        age_h,
    };
    let Some(current_hi) = trailing else {
        return finish(HealthStatus::Unknown, 0.0, prior, evidence(None, 0.0));
    };

    match onset_index(points) {
        Some(onset) => {
            let from = onset
                .saturating_sub(TRAILING)
                .max(points.len().saturating_sub(MAX_TREND_POINTS));
            let segment = &points[from..];
            match (segment.len() >= MIN_TREND_POINTS)
                .then(|| fit_trend(segment, now))
                .flatten()
            {
                Some(fit) => {
                    let hi_per_day = fit.hi_slope_now_per_h() * 24.0;
                    let dist = RulDistribution::Trend(fit);
                    let p10 = dist.quantile_h(0.1);
                    let status = if p10.is_some_and(|h| h < CRITICAL_RUL_H) {
                        HealthStatus::Critical
                    } else {
                        HealthStatus::Degrading
                    };
                    finish(
                        status,
                        current_hi,
                        dist,
                        evidence(Some(points[onset].t), hi_per_day),
                    )
                }
                None => finish(
                    HealthStatus::Degrading,
                    current_hi,
                    prior,
                    evidence(Some(points[onset].t), 0.0),
                ),
            }
        }
        None => finish(
            HealthStatus::Healthy,
            current_hi,
            prior,
            evidence(None, 0.0),
        ),
    }
}

/// Mean HI of the `TRAILING` buckets that end at `end` (exclusive).
fn trailing_mean(points: &[HiPoint], end: usize) -> Option<f64> {
    let start = end.saturating_sub(TRAILING);
    let slice = &points[start..end];
    (!slice.is_empty()).then(|| slice.iter().map(|p| p.hi).sum::<f64>() / slice.len() as f64)
}

/// Index where the trailing HI last rose through `ONSET_HI` without falling back below
/// `ONSET_RESET_HI` since; `None` if the component is not degrading now.
fn onset_index(points: &[HiPoint]) -> Option<usize> {
    let mut onset = None;
    let mut sum = 0.0;
    for i in 0..points.len() {
        sum += points[i].hi;
        if i >= TRAILING {
            sum -= points[i - TRAILING].hi;
        }
        let mean = sum / (i + 1).min(TRAILING) as f64;
        match onset {
            None if mean > ONSET_HI && i + 1 >= TRAILING.min(points.len()) => onset = Some(i),
            Some(_) if mean < ONSET_RESET_HI => onset = None,
            _ => {}
        }
    }
    onset
}

#[cfg(test)]
mod tests;
