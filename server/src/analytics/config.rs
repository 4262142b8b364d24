//! The `[server.analytics]` section: survey links, LTV parameters, account-health
//! thresholds and weights, and the contract tiers recommendations may propose. Every
//! key has a default; unknown keys are errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;

const DAY_SECS: u64 = 24 * 3600;

/// Durations as humantime, but whole days as days: "90days", not humantime's
/// "2months 29days 2h 52m 48s" (its month is 30.44 days).
mod days {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    use super::DAY_SECS;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 && d.as_secs() > 0 && d.as_secs().is_multiple_of(DAY_SECS) {
            s.serialize_str(&format!("{}days", d.as_secs() / DAY_SECS))
        } else {
            humantime_serde::serialize(d, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime_serde::deserialize(d)
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY_SECS)
}

/// Milliseconds of a configured duration (durations are far below `i64::MAX` ms).
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Base of the links in survey e-mails (`{public_url}/survey/{token}`): the
    /// address customers reach the server at.
    pub public_url: String,
    /// A survey link older than this answers 410 Gone.
    #[serde(with = "days")]
    pub survey_expiry: Duration,
    pub ltv: LtvConfig,
    pub health: HealthConfig,
    pub recommendations: RecommendationConfig,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            survey_expiry: days(30),
            ltv: LtvConfig::default(),
            health: HealthConfig::default(),
            recommendations: RecommendationConfig::default(),
        }
    }
}

/// Margins per revenue type and the parameters of the LTV formula.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtvConfig {
    /// Share of parts revenue that is margin.
    pub parts_margin: f64,
    /// Share of labour and travel revenue that is margin.
    pub labour_margin: f64,
    /// Share of contract fees that is margin.
    pub contract_margin: f64,
    /// Yearly discount rate `d` of future margin.
    pub discount_rate: f64,
    /// Retention `r` when neither the customer nor the tenant has enough renewals.
    pub default_retention: f64,
    /// Renewals a customer needs behind it before its own renewal rate is used.
    pub min_own_renewals: u32,
    /// Renewals the tenant needs behind it before the tenant's rate is used.
    pub min_tenant_renewals: u32,
    /// A contract starting within this long after another one of the same customer
    /// ended continues it (a renewal, an upgrade); a later one is a new sale.
    #[serde(with = "days")]
    pub renewal_grace: Duration,
}

impl Default for LtvConfig {
    fn default() -> Self {
        Self {
            parts_margin: 0.35,
            labour_margin: 0.5,
            contract_margin: 0.6,
            discount_rate: 0.1,
            default_retention: 0.8,
            min_own_renewals: 2,
            min_tenant_renewals: 3,
            renewal_grace: days(30),
        }
    }
}

/// Thresholds of the churn signals and their weight in the health score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// No telemetry from any of the customer's machines for this long: `quiet`.
    #[serde(with = "days")]
    pub quiet_after: Duration,
    /// Usage is compared over this window and the one before it.
    #[serde(with = "days")]
    pub usage_window: Duration,
    /// `usage_down` when usage fell by at least this share (0.5 = halved).
    pub usage_drop: f64,
    /// The operating channel whose time integral measures usage.
    pub usage_channel: String,
    /// `offers_declined` when the customer's latest this-many decisions are declines.
    pub declined_in_a_row: u32,
    /// `work_order_overdue` when a work order is open this many business days
    /// (Mon–Fri, UTC) after it was created without a technician, or after its planned
    /// stop ended.
    pub overdue_business_days: u32,
    /// `renewal_due` when the active contract renews within this long and no
    /// successor is signed.
    #[serde(with = "days")]
    pub renewal_notice: Duration,
    /// Declines, unplanned failures and detractor scores older than this no longer
    /// count.
    #[serde(with = "days")]
    pub lookback: Duration,
    /// An account is flagged when its score is below this.
    pub flag_below: f64,
    /// The first this-long of a customer is `onboarding`.
    #[serde(with = "days")]
    pub onboarding: Duration,
    /// From this age on a customer is `mature` (before: `established`).
    #[serde(with = "days")]
    pub mature_after: Duration,
    pub weights: SignalWeights,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            quiet_after: days(14),
            usage_window: days(30),
            usage_drop: 0.5,
            usage_channel: "op.load_pct".into(),
            declined_in_a_row: 1,
            overdue_business_days: 5,
            renewal_notice: days(90),
            lookback: days(180),
            flag_below: 70.0,
            onboarding: days(90),
            mature_after: days(730),
            weights: SignalWeights::default(),
        }
    }
}

/// Points each active signal takes off the health score of 100.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalWeights {
    pub quiet: f64,
    pub usage_down: f64,
    pub offers_declined: f64,
    pub work_order_overdue: f64,
    pub unplanned_failure: f64,
    pub nps_detractor: f64,
    pub renewal_due: f64,
}

impl Default for SignalWeights {
    fn default() -> Self {
        Self {
            quiet: 35.0,
            usage_down: 20.0,
            offers_declined: 15.0,
            work_order_overdue: 10.0,
            unplanned_failure: 15.0,
            nps_detractor: 25.0,
            renewal_due: 10.0,
        }
    }
}

/// When a contract or an upgrade is worth proposing, and what the tiers cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendationConfig {
    /// A customer without a contract with at least this many paid repairs in the last
    /// year gets a contract recommendation.
    pub min_paid_repairs: u32,
    /// ... if what the tier would have covered is at least this share of its fee.
    pub min_cover_share: f64,
    /// An upgrade is recommended when the paid extras of the last year reach this
    /// share of the upgrade price (the fee difference).
    pub upgrade_share: f64,
    /// The same kind of proposal is not recommended again for this long.
    #[serde(with = "days")]
    pub cooldown: Duration,
    /// The tiers on sale, any order.
    pub tiers: Vec<TierOffer>,
}

impl Default for RecommendationConfig {
    fn default() -> Self {
        let tier = |tier: &str, parts, labour, risk, fee| TierOffer {
            tier: tier.into(),
            parts_coverage: parts,
            labour_coverage: labour,
            risk_tolerance: risk,
            annual_fee_cents_per_machine: fee,
        };
        Self {
            min_paid_repairs: 2,
            min_cover_share: 0.5,
            upgrade_share: 0.5,
            cooldown: days(90),
            tiers: vec![
                tier("basic", 0.0, 0.5, 0.15, 120_000),
                tier("standard", 0.5, 1.0, 0.10, 300_000),
                tier("premium", 1.0, 1.0, 0.05, 600_000),
            ],
        }
    }
}

/// One contract tier as sold: coverage and a yearly fee per covered machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierOffer {
    pub tier: String,
    pub parts_coverage: f64,
    pub labour_coverage: f64,
    pub risk_tolerance: f64,
    pub annual_fee_cents_per_machine: i64,
}

impl AnalyticsConfig {
    /// Every value serde cannot check, as `server.analytics.*: problem`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let url = self.public_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(' ') {
            p.push(format!(
                "server.analytics.public_url `{}` must be an http:// or https:// URL",
                self.public_url
            ));
        }
        if self.survey_expiry < Duration::from_secs(3600) {
            p.push("server.analytics.survey_expiry must be at least 1h".into());
        }
        let share = |name: &str, v: f64, p: &mut Vec<String>| {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("server.analytics.{name} {v} is not in [0, 1]"));
            }
        };
        let l = &self.ltv;
        share("ltv.parts_margin", l.parts_margin, &mut p);
        share("ltv.labour_margin", l.labour_margin, &mut p);
        share("ltv.contract_margin", l.contract_margin, &mut p);
        share("ltv.default_retention", l.default_retention, &mut p);
        if !(l.discount_rate > 0.0 && l.discount_rate < 1.0) {
            p.push(format!(
                "server.analytics.ltv.discount_rate {} is not in (0, 1)",
                l.discount_rate
            ));
        }
        let h = &self.health;
        share("health.usage_drop", h.usage_drop, &mut p);
        for (name, d) in [
            ("quiet_after", h.quiet_after),
            ("usage_window", h.usage_window),
            ("renewal_notice", h.renewal_notice),
            ("lookback", h.lookback),
        ] {
            if d.is_zero() {
                p.push(format!("server.analytics.health.{name} must be positive"));
            }
        }
        if h.onboarding > h.mature_after {
            p.push(
                "server.analytics.health.onboarding must not be longer than mature_after".into(),
            );
        }
        if h.declined_in_a_row == 0 {
            p.push("server.analytics.health.declined_in_a_row must be at least 1".into());
        }
        if !(0.0..=100.0).contains(&h.flag_below) {
            p.push(format!(
                "server.analytics.health.flag_below {} is not in [0, 100]",
                h.flag_below
            ));
        }
        if wearcast_protocol::Channel::parse(h.usage_channel.as_str()).is_err() {
            p.push(format!(
                "server.analytics.health.usage_channel `{}` is not a channel like op.load_pct",
                h.usage_channel
            ));
        }
        let w = &h.weights;
        for (name, v) in [
            ("quiet", w.quiet),
            ("usage_down", w.usage_down),
            ("offers_declined", w.offers_declined),
            ("work_order_overdue", w.work_order_overdue),
            ("unplanned_failure", w.unplanned_failure),
            ("nps_detractor", w.nps_detractor),
            ("renewal_due", w.renewal_due),
        ] {
            if !(0.0..=100.0).contains(&v) {
                p.push(format!(
                    "server.analytics.health.weights.{name} {v} is not in [0, 100]"
                ));
            }
        }
        let r = &self.recommendations;
        share("recommendations.upgrade_share", r.upgrade_share, &mut p);
        if r.min_cover_share < 0.0 {
            p.push("server.analytics.recommendations.min_cover_share must not be negative".into());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &r.tiers {
            if !seen.insert(t.tier.as_str()) {
                p.push(format!(
                    "server.analytics.recommendations.tiers: `{}` is listed twice",
                    t.tier
                ));
            }
            let sound = (0.0..=1.0).contains(&t.parts_coverage)
                && (0.0..=1.0).contains(&t.labour_coverage)
                && t.risk_tolerance > 0.0
                && t.risk_tolerance < 0.5
                && t.annual_fee_cents_per_machine > 0;
            if !sound {
                p.push(format!(
                    "server.analytics.recommendations.tiers: `{}` needs coverages in [0, 1], a risk tolerance in (0, 0.5) and a positive fee",
                    t.tier
                ));
            }
        }
        p
    }

    /// The survey link of `token`.
    pub fn survey_link(&self, token: &str) -> String {
        format!("{}/survey/{token}", self.public_url.trim_end_matches('/'))
    }

    pub fn survey_expiry_ms(&self) -> i64 {
        ms(self.survey_expiry)
    }
}

impl HealthConfig {
    pub fn lookback_start(&self, now: UnixMs) -> UnixMs {
        now.plus_ms(-ms(self.lookback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_their_own_checks() {
        assert_eq!(AnalyticsConfig::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_bad_value_is_named() {
        let mut c = AnalyticsConfig {
            public_url: "ftp://x".into(),
            ..AnalyticsConfig::default()
        };
        c.ltv.discount_rate = 0.0;
        c.ltv.parts_margin = 1.5;
        c.health.weights.quiet = -1.0;
        c.health.usage_channel = "load".into();
        c.recommendations
            .tiers
            .push(c.recommendations.tiers[0].clone());
        let problems = c.problems().join("\n");
        for needle in [
            "public_url",
            "discount_rate",
            "ltv.parts_margin",
            "weights.quiet",
            "usage_channel",
            "`basic` is listed twice",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
    }

    #[test]
    fn whole_days_print_as_days_and_read_back_the_same() {
        let c = AnalyticsConfig::default();
        let json = serde_json::to_value(&c).expect("serialises");
        assert_eq!(json["health"]["renewal_notice"], "90days");
        assert_eq!(json["survey_expiry"], "30days");
        let back: AnalyticsConfig = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, c);
    }

    #[test]
    fn a_survey_link_never_has_a_double_slash() {
        let c = AnalyticsConfig {
            public_url: "https://service.example/".into(),
            ..AnalyticsConfig::default()
        };
        assert_eq!(c.survey_link("ab12"), "https://service.example/survey/ab12");
    }
}
