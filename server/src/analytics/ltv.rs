//! Customer lifetime value: the margin a customer has brought plus the margin it is
//! expected to bring, discounted.
//!
//! ```text
//! LTV(t) = margin to date + m · r / (1 + d − r)
//!
//! margin to date = parts_margin    × Σ parts revenue of work completed by t
//!                + labour_margin   × Σ labour and travel revenue of that work
//!                + contract_margin × Σ contract fees earned before t (pro-rated)
//! m = contract_margin × annual fee of the contract in force at t
//!   + parts_margin × parts revenue + labour_margin × labour revenue of (t − 365 d, t]
//! r = the customer's renewal rate (renewed ÷ decided renewals) once it has
//!     `min_own_renewals` decided renewals; else the tenant's once the tenant has
//!     `min_tenant_renewals`; else `default_retention`
//! d = discount_rate
//! ```
//!
//! m·r/(1 + d − r) is the value of a margin m received each year the customer stays,
//! starting next year, when each year it stays with probability r and money a year
//! away is worth 1/(1 + d) (Gupta & Lehmann's infinite-horizon CLV). With d > 0 and
//! r ≤ 1 the denominator is at least d, so it is always finite.

use serde::Serialize;
use wearcast_protocol::UnixMs;

use super::config::{LtvConfig, ms};
use super::{CustomerView, Period, RenewalTally, YEAR_MS, prorated_fee, renewal_tally};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionSource {
    /// The customer's own renewals.
    Customer,
    /// The tenant's renewals (the customer's history is too short).
    Tenant,
    /// `ltv.default_retention` (not enough renewals anywhere yet).
    Default,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ltv {
    pub ltv_cents: i64,
    pub margin_to_date_cents: i64,
    pub expected_future_margin_cents: i64,
    /// m: the yearly margin expected while the customer stays.
    pub annual_margin_cents: i64,
    /// r.
    pub retention: f64,
    pub retention_source: RetentionSource,
    /// d.
    pub discount_rate: f64,
}

/// m · r / (1 + d − r).
pub fn future_margin(annual_margin: f64, retention: f64, discount_rate: f64) -> f64 {
    let r = retention.clamp(0.0, 1.0);
    annual_margin * r / (1.0 + discount_rate - r)
}

/// The retention to use and where it comes from.
pub fn retention(
    own: RenewalTally,
    tenant: &RenewalTally,
    cfg: &LtvConfig,
) -> (f64, RetentionSource) {
    match (own.rate(), tenant.rate()) {
        (Some(r), _) if own.decided() >= cfg.min_own_renewals => (r, RetentionSource::Customer),
        (_, Some(r)) if tenant.decided() >= cfg.min_tenant_renewals => (r, RetentionSource::Tenant),
        _ => (cfg.default_retention, RetentionSource::Default),
    }
}

/// The LTV of one customer at `at`.
pub fn customer_ltv(
    v: &CustomerView<'_>,
    at: UnixMs,
    tenant: &RenewalTally,
    cfg: &LtvConfig,
) -> Ltv {
    let service_margin = |parts: i64, labour: i64| {
        parts as f64 * cfg.parts_margin + labour as f64 * cfg.labour_margin
    };
    let year_before = at.plus_ms(-YEAR_MS);
    let mut to_date = 0.0;
    let mut last_year = 0.0;
    for o in &v.offers {
        // Work recorded at `at` itself is done: "to date" includes it.
        let Some(done) = o.completed_at().filter(|t| *t <= at) else {
            continue;
        };
        let margin = service_margin(o.price.parts_revenue(), o.price.labour_revenue());
        to_date += margin;
        if done > year_before {
            last_year += margin;
        }
    }
    let until_at = Period::new(UnixMs(0), at);
    for c in &v.contracts {
        to_date +=
            prorated_fee(c.annual_fee_cents, c.start, c.renewal, &until_at) * cfg.contract_margin;
    }
    let contract = v
        .active_contract(at)
        .map_or(0.0, |c| c.annual_fee_cents as f64 * cfg.contract_margin);
    let annual = contract + last_year;
    let own = renewal_tally(&v.contracts, at, ms(cfg.renewal_grace));
    let (r, source) = retention(own, tenant, cfg);
    let to_date = to_date.round() as i64;
    let future = future_margin(annual, r, cfg.discount_rate).round() as i64;
    Ltv {
        // The parts, each rounded to the cent, add up to the whole.
        ltv_cents: to_date + future,
        margin_to_date_cents: to_date,
        expected_future_margin_cents: future,
        annual_margin_cents: annual.round() as i64,
        retention: r,
        retention_source: source,
        discount_rate: cfg.discount_rate,
    }
}
