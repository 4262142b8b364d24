//! Wear models: data in, estimates out, no I/O.
//!
//! The output is one stable type, [`RulEstimate`]: a health status, a health index
//! (0 new, 1 end of life), the remaining useful life (RUL) as a distribution
//! ([`RulDistribution`]: P10/P50/P90 and P(failure before t) for any t) and the evidence
//! behind it. The planner, the API and the dashboards consume it.
//!
//! Two engines share the building blocks:
//! - the **live model** ([`online`]): one incremental state per component, fed one
//!   time bucket of telemetry at a time (O(1) work per bucket): operating-condition
//!   correction, anomaly alerts, health index on the machine model's scale, CUSUM onset,
//!   recency-weighted linear/exponential trend with a fleet prior on its slope, bounded
//!   by the part type's Weibull life and its warning interval ([`warning`]);
//! - the **fleet learner** ([`learner`]): from run-to-failure histories it learns the
//!   operating regimes ([`regime`]) and healthy baseline per regime ([`normalise`]),
//!   which channels carry wear ([`relevance`]), their fusion into one health index
//!   ([`fusion`]), and predicts remaining life by similarity to past runs
//!   ([`similarity`]) as a calibrated distribution ([`mixture`], [`calibration`]).
//!   `wearcast backtest` runs it on run-to-failure data.
//!
//! The fleet life prior ([`weibull`]) is a Weibull per part type fitted by maximum
//! likelihood with right-censoring, updated as lives end.

pub mod calibration;
pub mod fusion;
pub mod learner;
pub mod linalg;
pub mod mixture;
pub mod normalise;
pub mod online;
pub mod quality;
pub mod regime;
pub mod relevance;
pub mod runs;
pub mod similarity;
mod trend;
pub mod warning;
pub mod weibull;

use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::{WearChannelSpec, WeibullLife};

pub use mixture::KernelMixture;
pub use online::{Anomaly, ComponentState, FleetKnowledge};
pub use trend::{TrendFit, TrendShape, fit_trend};
pub use warning::WarningInterval;
pub use weibull::{weibull_conditional_cdf, weibull_conditional_quantile};

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

/// A component's health-index history, for a one-off estimate ([`estimate`]).
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
    /// A trend's crossing time, no later than `cap_h` (the fleet life prior's bound:
    /// no part of this type lives that much longer at this age).
    BoundedTrend { trend: TrendFit, cap_h: f64 },
    /// The part's Weibull life, given that the component has survived `age_h`.
    FleetPrior {
        shape: f64,
        scale_h: f64,
        age_h: f64,
    },
    /// The signal is healthy: degradation has not even started, so at least the part
    /// type's warning interval remains; and the life prior at this age where it says
    /// more. RUL = max(warning interval, Weibull residual life).
    HealthySignal {
        shape: f64,
        scale_h: f64,
        age_h: f64,
        warning: WarningInterval,
    },
    /// Degradation detected `elapsed_h` ago, too recently for a trend: what is left of
    /// the warning interval, no later than `cap_h`.
    SinceOnset {
        warning: WarningInterval,
        elapsed_h: f64,
        cap_h: f64,
    },
    /// Candidate remaining lives (e.g. from similar past runs), calibrated.
    Mixture(KernelMixture),
    /// The component has failed.
    Failed,
}

impl RulDistribution {
    /// The variant's name as serialised (`kind`), for display.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Trend(_) => "trend",
            Self::BoundedTrend { .. } => "bounded_trend",
            Self::FleetPrior { .. } => "fleet_prior",
            Self::HealthySignal { .. } => "healthy_signal",
            Self::SinceOnset { .. } => "since_onset",
            Self::Mixture(_) => "mixture",
            Self::Failed => "failed",
        }
    }

    /// The fitted degradation trend, when the distribution rests on one.
    pub fn trend(&self) -> Option<&TrendFit> {
        match self {
            Self::Trend(fit) | Self::BoundedTrend { trend: fit, .. } => Some(fit),
            _ => None,
        }
    }

    /// P(failure within `hours` from the estimate).
    pub fn p_fail_within(&self, hours: f64) -> f64 {
        if hours <= 0.0 {
            return match self {
                Self::Failed => 1.0,
                Self::Trend(fit) | Self::BoundedTrend { trend: fit, .. } if fit.gap <= 0.0 => 1.0,
                Self::Mixture(m) => m.cdf(0.0),
                _ => 0.0,
            };
        }
        match self {
            Self::Trend(fit) => fit.p_cross_within(hours),
            Self::BoundedTrend { trend, cap_h } => {
                if hours >= *cap_h {
                    1.0
                } else {
                    trend.p_cross_within(hours)
                }
            }
            Self::FleetPrior {
                shape,
                scale_h,
                age_h,
            } => weibull_conditional_cdf(*shape, *scale_h, *age_h, hours),
            Self::HealthySignal {
                shape,
                scale_h,
                age_h,
                warning,
            } => weibull_conditional_cdf(*shape, *scale_h, *age_h, hours).min(warning.cdf(hours)),
            Self::SinceOnset {
                warning,
                elapsed_h,
                cap_h,
            } => {
                if hours >= *cap_h {
                    1.0
                } else {
                    warning.conditional_cdf(*elapsed_h, hours)
                }
            }
            Self::Mixture(m) => m.cdf(hours),
            Self::Failed => 1.0,
        }
    }

    /// The `q` quantile of the RUL in hours; `None` when it lies beyond any bound the
    /// data supports (e.g. a trend that may be flat).
    pub fn quantile_h(&self, q: f64) -> Option<f64> {
        match self {
            Self::Trend(fit) => fit.crossing_quantile(q),
            Self::BoundedTrend { trend, cap_h } => {
                Some(trend.crossing_quantile(q).map_or(*cap_h, |h| h.min(*cap_h)))
            }
            Self::FleetPrior {
                shape,
                scale_h,
                age_h,
            } => Some(weibull_conditional_quantile(*shape, *scale_h, *age_h, q)),
            Self::HealthySignal {
                shape,
                scale_h,
                age_h,
                warning,
            } => Some(
                weibull_conditional_quantile(*shape, *scale_h, *age_h, q).max(warning.quantile(q)),
            ),
            Self::SinceOnset {
                warning,
                elapsed_h,
                cap_h,
            } => Some(warning.conditional_quantile(*elapsed_h, q).min(*cap_h)),
            Self::Mixture(m) => Some(m.quantile(q)),
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
    /// An estimate whose P10/P50/P90 are read off `distribution`.
    pub fn new(
        computed_at: UnixMs,
        status: HealthStatus,
        health_index: f64,
        distribution: RulDistribution,
        evidence: Evidence,
    ) -> Self {
        Self {
            computed_at,
            status,
            health_index,
            rul_p10_h: distribution.quantile_h(0.1),
            rul_p50_h: distribution.quantile_h(0.5),
            rul_p90_h: distribution.quantile_h(0.9),
            distribution,
            evidence,
        }
    }

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

/// Estimates the remaining useful life of one component at `now` from its whole
/// health-index history (the live model, replayed; the analysis cycle keeps the state
/// instead, and feeds it only new buckets).
pub fn estimate(history: &ComponentHistory<'_>, now: UnixMs) -> RulEstimate {
    let mut state = ComponentState::new(history.installed_at);
    for p in history.points {
        state.update_hi(p.t, p.hi);
    }
    state.estimate(
        now,
        &FleetKnowledge::from_prior(history.prior),
        history.failed_at,
    )
}

#[cfg(test)]
mod tests;
