//! Unit tests of the pure analytics on small fixed data sets. Every expected number is
//! worked out by hand in a comment next to it.

#![allow(clippy::unwrap_used)]

mod accounts;
mod health;
mod kpis;
mod ltv;
mod recommend;
mod survey;

use wearcast_protocol::UnixMs;

use super::*;

/// Monday 2026-01-05 00:00 UTC.
pub const T0: UnixMs = UnixMs(1_767_571_200_000);

pub fn day(n: f64) -> UnixMs {
    T0.plus_hours(24.0 * n)
}

pub fn customer(id: &str) -> CustomerFact {
    CustomerFact {
        id: id.into(),
        name: format!("Customer {id}"),
        contacts_last_week: 0,
    }
}

pub fn contract(
    id: &str,
    customer: &str,
    fee: i64,
    start: UnixMs,
    renewal: UnixMs,
) -> ContractFact {
    ContractFact {
        id: id.into(),
        customer: customer.into(),
        tier: "standard".into(),
        parts_coverage: 0.5,
        labour_coverage: 1.0,
        annual_fee_cents: fee,
        start,
        renewal,
    }
}

pub fn machine(id: &str, customer: &str, commissioned: UnixMs) -> MachineFact {
    MachineFact {
        id: id.into(),
        customer: customer.into(),
        commissioned_at: commissioned,
        last_seen_at: None,
        open_failures: vec![],
    }
}

/// A proposed offer created at `created`; adjust the rest in the test.
pub fn offer(id: &str, customer: &str, created: UnixMs) -> OfferFact {
    OfferFact {
        id: id.into(),
        customer: customer.into(),
        machine: format!("m-{customer}"),
        status: OfferStatus::Proposed,
        created_at: created,
        updated_at: created,
        decided_at: None,
        decline_reason: None,
        superseded_by: None,
        price: OfferPrice::default(),
        p_fail_before_next: 0.0,
        downtime_cost_cents_per_hour: 0,
        unplanned_downtime_hours: 0.0,
        work_order: None,
    }
}

pub fn price(parts: i64, labour: i64, travel: i64, parts_cov: i64, labour_cov: i64) -> OfferPrice {
    OfferPrice {
        parts,
        labour,
        travel,
        parts_coverage: parts_cov,
        labour_coverage: labour_cov,
    }
}

/// `o` accepted at `decided` and completed at `done`.
pub fn completed(mut o: OfferFact, decided: UnixMs, done: UnixMs, found_failed: bool) -> OfferFact {
    o.status = OfferStatus::Completed;
    o.decided_at = Some(decided);
    o.updated_at = done;
    o.work_order = Some(WorkOrderFact {
        id: format!("wo-{}", o.id),
        status: "completed".into(),
        created_at: decided,
        window_start: done.plus_hours(-8.0),
        window_end: done,
        completed_at: Some(done),
        found_failed,
    });
    o
}

pub fn declined(mut o: OfferFact, at: UnixMs, reason: &str) -> OfferFact {
    o.status = OfferStatus::Declined;
    o.decided_at = Some(at);
    o.updated_at = at;
    o.decline_reason = Some(reason.into());
    o
}

pub fn life(
    machine: &str,
    customer: &str,
    component: &str,
    ended: UnixMs,
    end: LifeEnd,
    work_order: Option<&str>,
) -> LifeFact {
    LifeFact {
        machine: machine.into(),
        customer: customer.into(),
        component: component.into(),
        ended_at: ended,
        end,
        work_order: work_order.map(str::to_string),
    }
}

pub fn survey(
    id: &str,
    customer: &str,
    created: UnixMs,
    answer: Option<(UnixMs, u8, Option<u8>, Option<&str>)>,
) -> SurveyFact {
    SurveyFact {
        id: id.into(),
        customer: customer.into(),
        work_order: format!("wo-{id}"),
        machine: format!("m-{customer}"),
        created_at: created,
        expires_at: created.plus_hours(24.0 * 30.0),
        answered_at: answer.map(|a| a.0),
        score: answer.map(|a| a.1),
        csat: answer.and_then(|a| a.2),
        reason: answer.and_then(|a| a.3.map(str::to_string)),
    }
}

#[test]
fn a_period_is_half_open() {
    let p = Period::new(day(0.0), day(10.0));
    assert!(p.contains(day(0.0)));
    assert!(p.contains(day(9.999)));
    assert!(!p.contains(day(10.0)));
    // [−5, 3) ∩ [0, 10) = [0, 3): 3 days.
    assert_eq!(p.overlap_ms(day(-5.0), day(3.0)), 3 * UnixMs::DAY);
    assert_eq!(p.overlap_ms(day(10.0), day(20.0)), 0);
}

#[test]
fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
    assert_eq!(median(&mut []), None);
    assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
    // sorted 1, 2, 4, 9 → (2 + 4) / 2 = 3
    assert_eq!(median(&mut [9.0, 1.0, 4.0, 2.0]), Some(3.0));
}

#[test]
fn a_contract_that_starts_within_the_grace_continues_the_previous_one() {
    let grace = 30 * UnixMs::DAY;
    let old = contract("k1", "a", 100, day(-365.0), day(0.0));
    let renewal = contract("k2", "a", 100, day(20.0), day(385.0));
    let upgrade = contract("k3", "a", 150, day(20.0), day(385.0));
    let won_back = contract("k4", "a", 100, day(31.0), day(396.0));
    let m = machine("m", "a", day(-400.0));
    for (k, expected) in [
        (&renewal, ContractKind::Renewal),
        // 150 − 100
        (&upgrade, ContractKind::Upgrade { uplift_cents: 50 }),
        // 31 days after the end: beyond the 30-day grace, a new sale to a known customer.
        (&won_back, ContractKind::CrossSell),
    ] {
        let all = [&old, k];
        assert_eq!(contract_kind(k, &all, &[&m], grace), expected, "{}", k.id);
    }
    // Without machines before it or earlier contracts, the first contract is a new customer's.
    let newer = machine("m", "a", day(-365.0));
    assert_eq!(
        contract_kind(&old, &[&old], &[&newer], grace),
        ContractKind::NewCustomer
    );

    // The old contract's renewal: renewed by k2; without it, pending inside the grace and
    // lapsed after it.
    assert_eq!(
        renewal_outcome(&old, &[&old, &renewal], day(1.0), grace),
        RenewalOutcome::Renewed
    );
    assert_eq!(
        renewal_outcome(&old, &[&old], day(29.0), grace),
        RenewalOutcome::Pending
    );
    assert_eq!(
        renewal_outcome(&old, &[&old], day(30.0), grace),
        RenewalOutcome::Lapsed
    );
}
