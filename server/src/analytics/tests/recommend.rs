//! Contract and upgrade recommendations at T0, with tiers priced for the test:
//! basic 0 % parts / 50 % labour at 20 000 per machine, standard 50 % / 100 % at
//! 60 000, premium 100 % / 100 % at 150 000.

use super::*;
use crate::analytics::config::{RecommendationConfig, TierOffer};
use crate::analytics::recommend::recommend;

fn cfg() -> RecommendationConfig {
    let tier = |name: &str, parts, labour, fee| TierOffer {
        tier: name.into(),
        parts_coverage: parts,
        labour_coverage: labour,
        risk_tolerance: 0.1,
        annual_fee_cents_per_machine: fee,
    };
    RecommendationConfig {
        tiers: vec![
            tier("premium", 1.0, 1.0, 150_000),
            tier("basic", 0.0, 0.5, 20_000),
            tier("standard", 0.5, 1.0, 60_000),
        ],
        ..RecommendationConfig::default()
    }
}

fn repair(id: &str, customer: &str, done_days_ago: f64, p: OfferPrice) -> OfferFact {
    let mut o = offer(id, customer, day(-done_days_ago - 10.0));
    o.price = p;
    completed(o, day(-done_days_ago - 5.0), day(-done_days_ago), false)
}

/// Two machines, no contract; three paid repairs in the last year, one older, one free.
fn without_contract() -> Facts {
    Facts {
        currency: "EUR".into(),
        customers: vec![customer("n")],
        machines: vec![
            machine("m1", "n", day(-900.0)),
            machine("m2", "n", day(-900.0)),
        ],
        offers: vec![
            repair("r1", "n", 30.0, price(100_000, 20_000, 10_000, 0, 0)),
            repair("r2", "n", 100.0, price(50_000, 10_000, 10_000, 0, 0)),
            repair("r3", "n", 200.0, price(0, 30_000, 10_000, 0, 0)),
            repair("old", "n", 400.0, price(900_000, 0, 0, 0, 0)),
            repair("free", "n", 10.0, price(10_000, 0, 0, 10_000, 0)),
        ],
        ..Facts::default()
    }
}

fn recommendations(facts: &Facts, cap: u32) -> Vec<crate::analytics::recommend::Recommendation> {
    let index = facts.offer_index();
    recommend(
        &facts.view(&facts.customers[0], &index),
        T0,
        &cfg(),
        cap,
        "EUR",
    )
}

#[test]
fn a_customer_paying_for_repairs_gets_the_contract_that_would_have_saved_it_most() {
    let r = recommendations(&without_contract(), 3);
    assert_eq!(r.len(), 1, "{r:#?}");
    let r = &r[0];
    // Paid repairs of the last 365 days: r1 130 000, r2 70 000, r3 40 000 = 240 000
    // ("old" is 400 days ago, "free" cost nothing).
    assert_eq!((r.paid_repairs, r.paid_last_year_cents), (3, 240_000));
    // Would have covered (parts × p + (labour + travel) × l), fee for 2 machines:
    //   basic    0 × 150 000 + 0.5 × 90 000 =  45 000 vs  40 000 → saves   5 000
    //   standard 0.5 × 150 000 + 1 × 90 000 = 165 000 vs 120 000 → saves  45 000
    //   premium  150 000 + 90 000            = 240 000 vs 300 000 → costs  60 000
    // All cover at least half their fee; standard saves the most.
    assert_eq!(r.kind, ProposalKind::Contract);
    assert_eq!(r.tier, "standard");
    assert_eq!((r.annual_fee_cents, r.price_cents), (120_000, 120_000));
    assert_eq!(r.would_have_covered_cents, 165_000);
    assert_eq!(r.customer_net_cents, 45_000);
    assert_eq!(r.return_ratio, 1.375); // 165 000 / 120 000
    assert_eq!(
        r.reason,
        "3 paid repairs in the last 12 months cost EUR 2,400.00; the standard contract (EUR 1,200.00/year for 2 machines) would have covered EUR 1,650.00 of them, 1.38× its fee"
    );
    assert!(r.sendable);
}

#[test]
fn one_paid_repair_is_not_enough_for_a_contract_proposal() {
    let mut facts = without_contract();
    facts.offers.retain(|o| o.id != "r2" && o.id != "r3");
    assert_eq!(recommendations(&facts, 3), vec![]);
}

#[test]
fn a_customer_with_a_contract_gets_an_upgrade_when_its_extras_reach_half_the_price() {
    let mut basic = contract("k", "u", 40_000, day(-100.0), day(265.0));
    basic.tier = "basic".into();
    basic.parts_coverage = 0.0;
    basic.labour_coverage = 0.5;
    let facts = Facts {
        currency: "EUR".into(),
        customers: vec![customer("u")],
        contracts: vec![basic],
        machines: vec![
            machine("m1", "u", day(-900.0)),
            machine("m2", "u", day(-900.0)),
        ],
        offers: vec![
            // Under basic: labour and travel half covered.
            repair("r1", "u", 30.0, price(100_000, 20_000, 10_000, 0, 15_000)),
            repair("r2", "u", 60.0, price(50_000, 10_000, 10_000, 0, 10_000)),
        ],
        ..Facts::default()
    };
    let r = recommendations(&facts, 3);
    assert_eq!(r.len(), 1, "{r:#?}");
    let r = &r[0];
    assert_eq!(r.kind, ProposalKind::Upgrade);
    // The cheapest tier above basic that covers at least as much: standard, 120 000 for
    // 2 machines; the upgrade costs 120 000 − 40 000 = 80 000.
    assert_eq!(r.tier, "standard");
    assert_eq!(
        (r.current_tier.as_deref(), r.current_fee_cents),
        (Some("basic"), Some(40_000))
    );
    assert_eq!(r.price_cents, 80_000);
    // Extras paid: r1 100 000 + 15 000, r2 50 000 + 10 000 = 175 000 ≥ 0.5 × 80 000.
    assert_eq!(r.paid_last_year_cents, 175_000);
    // Standard would have covered beyond basic: r1 (50 000 + 30 000) − 15 000 = 65 000;
    // r2 (25 000 + 20 000) − 10 000 = 35 000; = 100 000, 1.25× the price.
    assert_eq!(r.would_have_covered_cents, 100_000);
    assert_eq!(r.return_ratio, 1.25);
    assert_eq!(r.customer_net_cents, 20_000);
    // 175 000 / 80 000 = 219 %
    assert!(r.reason.starts_with("EUR 1,750.00 paid in extras over the last 12 months under the basic contract: 219% of the EUR 800.00/year upgrade to standard"), "{}", r.reason);
}

#[test]
fn the_top_tier_has_no_upgrade() {
    let mut top = contract("k", "u", 300_000, day(-100.0), day(265.0));
    top.parts_coverage = 1.0;
    top.labour_coverage = 1.0;
    let facts = Facts {
        customers: vec![customer("u")],
        contracts: vec![top],
        machines: vec![machine("m1", "u", day(-900.0))],
        offers: vec![repair("r1", "u", 30.0, price(0, 0, 10_000, 0, 0))],
        ..Facts::default()
    };
    assert_eq!(recommendations(&facts, 3), vec![]);
}

#[test]
fn never_a_proposal_to_a_customer_with_an_open_unplanned_failure() {
    let mut facts = without_contract();
    facts.machines[1].open_failures = vec![("spindle".into(), day(-2.0))];
    let r = recommendations(&facts, 3);
    assert!(!r[0].sendable);
    assert_eq!(
        r[0].held_back.as_deref(),
        Some(
            "an unplanned failure is open (m2 spindle since 2026-01-03): repair first, propose later"
        )
    );
}

#[test]
fn a_proposal_waits_for_its_cooldown_and_for_the_contact_cap() {
    let mut facts = without_contract();
    facts.proposals.push(ProposalFact {
        customer: "n".into(),
        kind: ProposalKind::Contract,
        sent_at: day(-89.0),
    });
    // 89 days ago < 90-day cooldown.
    assert_eq!(
        recommendations(&facts, 3)[0].held_back.as_deref(),
        Some("a contract proposal went out on 2025-10-08; not again before 2026-01-06")
    );
    facts.proposals[0].sent_at = day(-90.0);
    assert!(recommendations(&facts, 3)[0].sendable);

    facts.customers[0].contacts_last_week = 3;
    assert_eq!(
        recommendations(&facts, 3)[0].held_back.as_deref(),
        Some("contact cap reached: 3 contacts in the last 7 days (cap 3)")
    );
    assert!(recommendations(&facts, 4)[0].sendable);
}
