//! KPIs of four customers over the 30 days [T0, T0 + 30 d), seen at T0 + 60 d.

use std::collections::HashSet;

use super::*;
use crate::analytics::config::LtvConfig;
use crate::analytics::kpis::{ReasonCount, by_customer, compute};
use crate::analytics::ltv::customer_ltv;

const YEAR_FEE: i64 = 365_000; // 1 000 cents a day

fn period() -> Period {
    Period::new(day(0.0), day(30.0))
}

fn now() -> UnixMs {
    day(60.0)
}

/// A: upgraded mid-period; B: lets its contract lapse; C: buys its first contract in
/// the period (cross-sell); D: a contract running throughout.
fn facts() -> Facts {
    let mut o1 = offer("o1", "a", day(-5.0));
    o1.price = price(100_000, 20_000, 10_000, 50_000, 30_000);
    o1.p_fail_before_next = 0.3;
    o1.downtime_cost_cents_per_hour = 10_000;
    o1.unplanned_downtime_hours = 20.0;
    let o1 = completed(o1, day(1.0), day(8.0), false);

    let o2 = declined(offer("o2", "a", day(2.0)), day(3.0), "too expensive");

    let mut o3 = offer("o3", "a", day(4.0));
    o3.status = OfferStatus::Superseded;
    o3.superseded_by = Some("o4".into());
    let mut o4 = offer("o4", "a", day(6.0));
    o4.price = price(40_000, 10_000, 10_000, 20_000, 20_000);
    o4.p_fail_before_next = 0.9;
    o4.unplanned_downtime_hours = 20.0;
    o4.downtime_cost_cents_per_hour = 10_000;
    let o4 = completed(o4, day(7.0), day(12.0), true);

    let mut o5 = offer("o5", "c", day(1.0));
    o5.price = price(30_000, 10_000, 5_000, 0, 0);
    o5.p_fail_before_next = 0.5;
    o5.downtime_cost_cents_per_hour = 20_000;
    o5.unplanned_downtime_hours = 10.0;
    let o5 = completed(o5, day(2.0), day(20.0), false);

    let o6 = declined(offer("o6", "b", day(10.0)), day(11.0), " too expensive ");
    let o7 = declined(offer("o7", "b", day(12.0)), day(13.0), "");
    let mut o8 = offer("o8", "d", day(15.0));
    o8.status = OfferStatus::Expired;
    o8.updated_at = day(25.0);
    let o9 = offer("o9", "d", day(29.0));
    let mut o10 = offer("o10", "a", day(-20.0));
    o10.price = price(1_000, 1_000, 1_000, 0, 0);
    let o10 = completed(o10, day(-15.0), day(-10.0), false);

    Facts {
        currency: "EUR".into(),
        customers: ["a", "b", "c", "d"].into_iter().map(customer).collect(),
        contracts: vec![
            contract("kA1", "a", YEAR_FEE, day(-355.0), day(10.0)),
            contract("kA2", "a", 2 * YEAR_FEE, day(10.0), day(375.0)),
            contract("kB1", "b", YEAR_FEE, day(-345.0), day(20.0)),
            contract("kC1", "c", YEAR_FEE / 2, day(5.0), day(370.0)),
            contract("kD1", "d", YEAR_FEE, day(-100.0), day(265.0)),
        ],
        machines: vec![
            // Commissioned with their first contract (new customers), except C's.
            machine("m-a", "a", day(-355.0)),
            machine("m-b", "b", day(-345.0)),
            machine("m-c", "c", day(-400.0)),
            machine("m-d", "d", day(-100.0)),
        ],
        offers: vec![o1, o2, o3, o4, o5, o6, o7, o8, o9, o10],
        lives: vec![
            life(
                "m-a",
                "a",
                "spindle",
                day(8.0),
                LifeEnd::Replaced,
                Some("wo-o1"),
            ),
            life(
                "m-a",
                "a",
                "belt",
                day(12.0),
                LifeEnd::Failure,
                Some("wo-o4"),
            ),
            life("m-b", "b", "bearing", day(14.0), LifeEnd::Failure, None),
            life("m-c", "c", "bearing", day(16.0), LifeEnd::Replaced, None),
            life("m-d", "d", "belt", day(-1.0), LifeEnd::Failure, None),
            life(
                "m-c",
                "c",
                "spindle",
                day(20.0),
                LifeEnd::Replaced,
                Some("wo-o5"),
            ),
        ],
        surveys: vec![
            survey("s1", "a", day(8.0), Some((day(9.0), 10, Some(5), None))),
            survey(
                "s2",
                "a",
                day(12.0),
                Some((day(13.0), 3, Some(2), Some("late"))),
            ),
            survey("s3", "c", day(20.0), Some((day(21.0), 8, Some(4), None))),
            survey("s4", "c", day(25.0), None),
            survey("s5", "b", day(-10.0), Some((day(1.0), 9, None, None))),
            survey("s6", "d", day(29.0), Some((day(31.0), 0, None, None))),
        ],
        proposals: vec![],
        usage: vec![],
        tenant_renewals: RenewalTally::default(),
    }
}

#[test]
fn offers_count_proposals_decisions_and_reasons_in_the_period() {
    let k = compute(&facts(), None, period(), now(), &LtvConfig::default());
    let o = &k.offers;
    // Created in the period: o2, o3, o5, o6, o7, o8, o9 = 7 (o4 re-plans o3; o1 and o10
    // were created before).
    assert_eq!(o.proposed, 7);
    // Decided in the period: accepted o1 (day 1), o4 (day 7), o5 (day 2) = 3;
    // declined o2, o6, o7 = 3; expired o8 = 1.
    assert_eq!((o.accepted, o.declined, o.expired), (3, 3, 1));
    // 3 / (3 + 3)
    assert_eq!(o.acceptance_rate, Some(0.5));
    // " too expensive " is trimmed into "too expensive"; "" has no reason.
    assert_eq!(
        o.decline_reasons,
        vec![
            ReasonCount {
                reason: "too expensive".into(),
                count: 2
            },
            ReasonCount {
                reason: "(no reason given)".into(),
                count: 1
            },
        ]
    );
}

#[test]
fn revenue_is_split_into_parts_labour_and_contracts_with_upsell_and_cross_sell() {
    let r = compute(&facts(), None, period(), now(), &LtvConfig::default()).revenue;
    // Completed in the period: o1 (parts 100 000 − 50 000 covered = 50 000; labour
    // 20 000 + 10 000 − 30 000 = 0), o4 (40 000 − 20 000 = 20 000; 20 000 − 20 000 = 0),
    // o5 (30 000; 10 000 + 5 000 = 15 000). o10 was completed before.
    assert_eq!(r.parts_cents, 50_000 + 20_000 + 30_000);
    assert_eq!(r.labour_cents, 15_000);
    // 1 000 cents a day per 365 000 of fee:
    // kA1 days 0–10: 10 × 1 000 = 10 000; kA2 days 10–30: 20 × 2 000 = 40 000;
    // kB1 days 0–20: 20 000; kC1 days 5–30: 25 × 500 = 12 500; kD1: 30 000.
    assert_eq!(
        r.contracts_cents,
        10_000 + 40_000 + 20_000 + 12_500 + 30_000
    );
    assert_eq!(r.total_cents, 100_000 + 15_000 + 112_500);
    // kA2 upgrades kA1 by 365 000 a year: 20 days × 1 000 in the period.
    assert_eq!(
        (r.upgrades_sold, r.upsell_booked_cents, r.upsell_cents),
        (1, 365_000, 20_000)
    );
    // kC1 is C's first contract, and C had a machine before: a cross-sell, 12 500 in the
    // period, booked at its yearly fee.
    assert_eq!(
        (
            r.cross_sells_sold,
            r.cross_sell_booked_cents,
            r.cross_sell_cents
        ),
        (1, 182_500, 12_500)
    );
}

#[test]
fn failures_lead_time_and_downtime_avoided_follow_their_definitions() {
    let f = compute(&facts(), None, period(), now(), &LtvConfig::default()).failures;
    // Lives ended in the period: spindle by wo-o1 and spindle by wo-o5 in time; belt by
    // wo-o4 found failed; bearing of m-b failed without a work order; m-c's bearing
    // replaced outside Wearcast counts as neither; m-d's belt ended before the period.
    assert_eq!(
        (f.predicted_in_time, f.failed_before_visit, f.unplanned),
        (2, 1, 1)
    );
    assert_eq!(f.in_time_rate, Some(0.5)); // 2 / 4
    // From the first offer of each chain to completion: o1 day −5 → 8 = 13 d = 312 h;
    // o3 (re-planned as o4) day 4 → 12 = 8 d = 192 h; o5 day 1 → 20 = 19 d = 456 h.
    // Median of 192, 312, 456 = 312.
    assert_eq!(f.median_lead_time_h, Some(312.0));
    // Not found failed: o1 0.3 × 20 h = 6 h (× 10 000 = 60 000), o5 0.5 × 10 h = 5 h
    // (× 20 000 = 100 000). o4 was found failed: nothing avoided.
    assert!(
        (f.downtime_avoided_h - 11.0).abs() < 1e-9,
        "{}",
        f.downtime_avoided_h
    );
    assert_eq!(f.downtime_avoided_cents, 160_000);
}

#[test]
fn retention_is_kept_customers_over_customers_at_the_start_and_renewals_have_outcomes() {
    let r = compute(&facts(), None, period(), now(), &LtvConfig::default()).retention;
    // Under contract at day 0: A (kA1), B (kB1), D = 3. At day 30: A (kA2), C, D = 3
    // (B's ended on day 20). New: C = 1. Retention (3 − 1) / 3.
    assert_eq!(
        (r.customers_at_start, r.customers_at_end, r.new_customers),
        (3, 3, 1)
    );
    assert!((r.retention_rate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.churn_rate.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // Renewal dates in the period: kA1 (day 10, renewed by kA2), kB1 (day 20, nothing
    // by day 20 + 30 = 50 < now = 60: lapsed). 1 / 2.
    assert_eq!(
        (r.renewals_due, r.renewed, r.lapsed, r.pending),
        (2, 1, 1, 0)
    );
    assert_eq!(r.renewal_rate, Some(0.5));
}

#[test]
fn a_renewal_inside_the_grace_is_pending_not_lost() {
    // Seen at day 45, kB1's grace runs until day 50.
    let r = compute(&facts(), None, period(), day(45.0), &LtvConfig::default()).retention;
    assert_eq!((r.renewed, r.lapsed, r.pending), (1, 0, 1));
    assert_eq!(r.renewal_rate, Some(1.0));
}

#[test]
fn nps_and_csat_count_the_answers_given_in_the_period() {
    let f = compute(&facts(), None, period(), now(), &LtvConfig::default()).feedback;
    // Sent in the period: s1, s2, s3, s4, s6 = 5, of which s1, s2, s3, s6 answered: 4 / 5.
    assert_eq!(f.surveys_sent, 5);
    assert_eq!(f.response_rate, Some(0.8));
    // Answered in the period: s1 10, s2 3, s3 8, s5 9 (s6 on day 31 is after it).
    // Promoters s1, s5 = 2; passive s3; detractor s2. NPS = 100 × (2 − 1) / 4 = 25.
    assert_eq!(
        (f.answers, f.promoters, f.passives, f.detractors),
        (4, 2, 1, 1)
    );
    assert_eq!(f.nps, Some(25.0));
    // CSAT answers 5, 2, 4: satisfied (4–5) 2 of 3 = 66.67 %; mean 11 / 3.
    assert_eq!(f.csat_answers, 3);
    assert!((f.csat_pct.unwrap() - 200.0 / 3.0).abs() < 1e-9);
    assert!((f.csat_mean.unwrap() - 11.0 / 3.0).abs() < 1e-9);
}

#[test]
fn ltv_is_the_sum_of_the_customers_ltv_at_the_end_of_the_period() {
    let facts = facts();
    let cfg = LtvConfig::default();
    let k = compute(&facts, None, period(), now(), &cfg);
    let index = facts.offer_index();
    let sum: i64 = facts
        .customers
        .iter()
        .map(|c| {
            customer_ltv(
                &facts.view(c, &index),
                day(30.0),
                &facts.tenant_renewals,
                &cfg,
            )
            .ltv_cents
        })
        .sum();
    assert_eq!(k.ltv.customers, 4);
    assert_eq!(k.ltv.total_cents, sum);
    assert_eq!(k.ltv.average_cents, Some((sum as f64 / 4.0).round() as i64));
}

#[test]
fn one_customer_sees_only_its_own_figures() {
    let facts = facts();
    let only_a: HashSet<&str> = ["a"].into_iter().collect();
    let a = compute(
        &facts,
        Some(&only_a),
        period(),
        now(),
        &LtvConfig::default(),
    );
    // A's offers: proposed o2, o3; accepted o1, o4; declined o2.
    assert_eq!(
        (a.offers.proposed, a.offers.accepted, a.offers.declined),
        (2, 2, 1)
    );
    // A's revenue: parts 50 000 + 20 000; contracts 10 000 + 40 000.
    assert_eq!(a.revenue.parts_cents, 70_000);
    assert_eq!(a.revenue.contracts_cents, 50_000);
    // A's answers: 10 and 3 → NPS 100 × (1 − 1) / 2 = 0.
    assert_eq!(a.feedback.nps, Some(0.0));
    // The per-customer breakdown is the same computation.
    let per = by_customer(&facts, period(), now(), &LtvConfig::default());
    assert_eq!(per[0].0, "a");
    assert_eq!(per[0].2, a);
    // Every customer's revenue adds up to the tenant's.
    let total = compute(&facts, None, period(), now(), &LtvConfig::default());
    assert_eq!(
        per.iter()
            .map(|(_, _, k)| k.revenue.total_cents)
            .sum::<i64>(),
        total.revenue.total_cents
    );
}

#[test]
fn a_period_without_data_has_no_rates() {
    let k = compute(
        &facts(),
        None,
        Period::new(day(-3000.0), day(-2990.0)),
        now(),
        &LtvConfig::default(),
    );
    assert_eq!(k.offers.acceptance_rate, None);
    assert_eq!(k.retention.retention_rate, None);
    assert_eq!(k.feedback.nps, None);
    assert_eq!(k.failures.median_lead_time_h, None);
    assert_eq!(k.revenue.total_cents, 0);
}
