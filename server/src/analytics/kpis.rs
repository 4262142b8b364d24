//! The service business over a period: offers, revenue, failures caught in time,
//! downtime avoided, retention and renewals, upsell and cross-sell, NPS and CSAT, LTV.
//! Definitions in the [module documentation](super).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use wearcast_protocol::UnixMs;

use super::config::{LtvConfig, ms};
use super::ltv::{Ltv, customer_ltv};
use super::{
    ContractKind, CustomerView, Facts, LifeEnd, OfferStatus, Period, RenewalOutcome, chain_start,
    contract_kind, median, prorated_fee, renewal_outcome, replaced_by_index,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OfferKpis {
    pub proposed: u32,
    pub accepted: u32,
    pub declined: u32,
    /// Expired undecided (window passed, or the part failed or was replaced first).
    pub expired: u32,
    /// accepted ÷ (accepted + declined).
    pub acceptance_rate: Option<f64>,
    /// Decline reasons, most frequent first.
    pub decline_reasons: Vec<ReasonCount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RevenueKpis {
    pub parts_cents: i64,
    /// Labour and travel.
    pub labour_cents: i64,
    pub contracts_cents: i64,
    pub total_cents: i64,
    /// Fee uplift of upgraded contracts (part of `contracts_cents`).
    pub upsell_cents: i64,
    /// Fees of new contracts sold to existing customers (part of `contracts_cents`).
    pub cross_sell_cents: i64,
    /// Upgrades and cross-sells that started in the period, and their yearly value
    /// (bookings: the fee uplift, the new contract's fee).
    pub upgrades_sold: u32,
    pub upsell_booked_cents: i64,
    pub cross_sells_sold: u32,
    pub cross_sell_booked_cents: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FailureKpis {
    pub predicted_in_time: u32,
    pub failed_before_visit: u32,
    pub unplanned: u32,
    /// predicted in time ÷ all three.
    pub in_time_rate: Option<f64>,
    /// Hours from the first offer of the chain to the completed replacement.
    pub median_lead_time_h: Option<f64>,
    pub downtime_avoided_h: f64,
    pub downtime_avoided_cents: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetentionKpis {
    pub customers_at_start: u32,
    pub customers_at_end: u32,
    /// Under contract at the end but not at the start (new or won back).
    pub new_customers: u32,
    /// (at end − new) ÷ at start.
    pub retention_rate: Option<f64>,
    pub churn_rate: Option<f64>,
    /// Contracts whose renewal date is in the period, by outcome.
    pub renewals_due: u32,
    pub renewed: u32,
    pub lapsed: u32,
    pub pending: u32,
    /// renewed ÷ (renewed + lapsed).
    pub renewal_rate: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeedbackKpis {
    pub surveys_sent: u32,
    /// Of the surveys sent in the period, how many are answered.
    pub response_rate: Option<f64>,
    pub answers: u32,
    pub promoters: u32,
    pub passives: u32,
    pub detractors: u32,
    /// 100 × (promoters − detractors) ÷ answers, in [-100, 100].
    pub nps: Option<f64>,
    pub csat_answers: u32,
    /// 100 × answers of 4–5 ÷ CSAT answers.
    pub csat_pct: Option<f64>,
    pub csat_mean: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LtvKpis {
    /// LTV is taken at the end of the period (or now, if that is earlier).
    pub customers: u32,
    pub total_cents: i64,
    pub average_cents: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub offers: OfferKpis,
    pub revenue: RevenueKpis,
    pub failures: FailureKpis,
    pub retention: RetentionKpis,
    pub feedback: FeedbackKpis,
    pub ltv: LtvKpis,
}

fn ratio(num: u32, den: u32) -> Option<f64> {
    (den > 0).then(|| f64::from(num) / f64::from(den))
}

/// The KPIs of `customers` (every customer in `facts` when `None`) over `period`, seen
/// at `now`.
pub fn compute(
    facts: &Facts,
    customers: Option<&HashSet<&str>>,
    period: Period,
    now: UnixMs,
    ltv_config: &LtvConfig,
) -> Kpis {
    let index = facts.offer_index();
    let views: Vec<CustomerView<'_>> = facts
        .customers
        .iter()
        .filter(|c| customers.is_none_or(|set| set.contains(c.id.as_str())))
        .map(|c| facts.view(c, &index))
        .collect();
    let grace = ms(ltv_config.renewal_grace);
    let mut k = Kpis::default();
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut lead_times: Vec<f64> = Vec::new();
    let mut downtime_avoided_cents = 0.0;
    let mut contract_revenue = 0.0;
    let mut upsell = 0.0;
    let mut cross_sell = 0.0;
    let mut csat_sum = 0u32;
    let mut csat_satisfied = 0u32;
    let mut sent_answered = 0u32;
    let ltv_at = UnixMs(period.to.0.min(now.0));

    for v in &views {
        // ---- offers and service revenue
        let replaced_by = replaced_by_index(&v.offers);
        for o in &v.offers {
            if period.contains(o.created_at) && !replaced_by.contains_key(o.id.as_str()) {
                k.offers.proposed += 1;
            }
            if o.decided_at.is_some_and(|t| period.contains(t)) {
                if o.status.is_accepted() {
                    k.offers.accepted += 1;
                } else if o.status == OfferStatus::Declined {
                    k.offers.declined += 1;
                    let reason = o
                        .decline_reason
                        .as_deref()
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .unwrap_or("(no reason given)");
                    *reasons.entry(reason.to_string()).or_insert(0) += 1;
                }
            }
            if o.status == OfferStatus::Expired && period.contains(o.updated_at) {
                k.offers.expired += 1;
            }
            let Some(done) = o.completed_at().filter(|t| period.contains(*t)) else {
                continue;
            };
            k.revenue.parts_cents += o.price.parts_revenue();
            k.revenue.labour_cents += o.price.labour_revenue();
            let first = chain_start(o, v.offer_index, &replaced_by);
            lead_times.push(first.created_at.hours_until(done));
            if o.work_order.as_ref().is_some_and(|w| !w.found_failed) {
                let hours = o.p_fail_before_next * o.unplanned_downtime_hours;
                k.failures.downtime_avoided_h += hours;
                downtime_avoided_cents += hours * o.downtime_cost_cents_per_hour as f64;
            }
        }

        // ---- failures
        for l in v.lives.iter().filter(|l| period.contains(l.ended_at)) {
            match (l.end, &l.work_order) {
                (LifeEnd::Replaced, Some(_)) => k.failures.predicted_in_time += 1,
                (LifeEnd::Failure, Some(_)) => k.failures.failed_before_visit += 1,
                (LifeEnd::Failure, None) => k.failures.unplanned += 1,
                // Replaced outside Wearcast (the machine reported it): neither.
                (LifeEnd::Replaced, None) => {}
            }
        }

        // ---- contracts: revenue, upsell, cross-sell, retention, renewals
        for c in &v.contracts {
            let earned = prorated_fee(c.annual_fee_cents, c.start, c.renewal, &period);
            contract_revenue += earned;
            match contract_kind(c, &v.contracts, &v.machines, grace) {
                ContractKind::Upgrade { uplift_cents } => {
                    upsell += prorated_fee(uplift_cents, c.start, c.renewal, &period);
                    if period.contains(c.start) {
                        k.revenue.upgrades_sold += 1;
                        k.revenue.upsell_booked_cents += uplift_cents;
                    }
                }
                ContractKind::CrossSell => {
                    cross_sell += earned;
                    if period.contains(c.start) {
                        k.revenue.cross_sells_sold += 1;
                        k.revenue.cross_sell_booked_cents += c.annual_fee_cents;
                    }
                }
                ContractKind::Renewal | ContractKind::NewCustomer => {}
            }
            if period.contains(c.renewal) {
                k.retention.renewals_due += 1;
                match renewal_outcome(c, &v.contracts, now, grace) {
                    RenewalOutcome::Renewed => k.retention.renewed += 1,
                    RenewalOutcome::Lapsed => k.retention.lapsed += 1,
                    RenewalOutcome::Pending => k.retention.pending += 1,
                }
            }
        }
        let at_start = v.active_contract(period.from).is_some();
        let at_end = v.active_contract(period.to).is_some();
        k.retention.customers_at_start += u32::from(at_start);
        k.retention.customers_at_end += u32::from(at_end);
        k.retention.new_customers += u32::from(at_end && !at_start);

        // ---- feedback
        for s in &v.surveys {
            if period.contains(s.created_at) {
                k.feedback.surveys_sent += 1;
                sent_answered += u32::from(s.answered_at.is_some());
            }
            if !s.answered_at.is_some_and(|t| period.contains(t)) {
                continue;
            }
            if let Some(score) = s.score {
                k.feedback.answers += 1;
                match score {
                    9..=10 => k.feedback.promoters += 1,
                    7..=8 => k.feedback.passives += 1,
                    _ => k.feedback.detractors += 1,
                }
            }
            if let Some(csat) = s.csat {
                k.feedback.csat_answers += 1;
                csat_sum += u32::from(csat);
                csat_satisfied += u32::from(csat >= 4);
            }
        }

        // ---- lifetime value at the end of the period
        let Ltv { ltv_cents, .. } = customer_ltv(v, ltv_at, &facts.tenant_renewals, ltv_config);
        k.ltv.customers += 1;
        k.ltv.total_cents += ltv_cents;
    }

    k.offers.acceptance_rate = ratio(k.offers.accepted, k.offers.accepted + k.offers.declined);
    let mut reasons: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    k.offers.decline_reasons = reasons;

    k.revenue.contracts_cents = contract_revenue.round() as i64;
    k.revenue.upsell_cents = upsell.round() as i64;
    k.revenue.cross_sell_cents = cross_sell.round() as i64;
    k.revenue.total_cents =
        k.revenue.parts_cents + k.revenue.labour_cents + k.revenue.contracts_cents;

    let f = &mut k.failures;
    f.in_time_rate = ratio(
        f.predicted_in_time,
        f.predicted_in_time + f.failed_before_visit + f.unplanned,
    );
    f.median_lead_time_h = median(&mut lead_times);
    f.downtime_avoided_cents = downtime_avoided_cents.round() as i64;

    let r = &mut k.retention;
    if r.customers_at_start > 0 {
        let kept = f64::from(r.customers_at_end - r.new_customers);
        let retention = kept / f64::from(r.customers_at_start);
        r.retention_rate = Some(retention);
        r.churn_rate = Some(1.0 - retention);
    }
    r.renewal_rate = ratio(r.renewed, r.renewed + r.lapsed);

    let fb = &mut k.feedback;
    fb.response_rate = ratio(sent_answered, fb.surveys_sent);
    if fb.answers > 0 {
        fb.nps = Some(
            100.0 * (f64::from(fb.promoters) - f64::from(fb.detractors)) / f64::from(fb.answers),
        );
    }
    if fb.csat_answers > 0 {
        fb.csat_pct = Some(100.0 * f64::from(csat_satisfied) / f64::from(fb.csat_answers));
        fb.csat_mean = Some(f64::from(csat_sum) / f64::from(fb.csat_answers));
    }

    if k.ltv.customers > 0 {
        k.ltv.average_cents =
            Some((k.ltv.total_cents as f64 / f64::from(k.ltv.customers)).round() as i64);
    }
    k
}

/// The KPIs of each customer in `facts` separately.
pub fn by_customer(
    facts: &Facts,
    period: Period,
    now: UnixMs,
    ltv_config: &LtvConfig,
) -> Vec<(String, String, Kpis)> {
    facts
        .customers
        .iter()
        .map(|c| {
            let one: HashSet<&str> = [c.id.as_str()].into_iter().collect();
            (
                c.id.clone(),
                c.name.clone(),
                compute(facts, Some(&one), period, now, ltv_config),
            )
        })
        .collect()
}
