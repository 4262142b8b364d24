//! LTV = margin to date + m · r / (1 + d − r), on one customer X seen at T0.

use super::*;
use crate::analytics::config::LtvConfig;
use crate::analytics::ltv::{RetentionSource, customer_ltv, future_margin};

fn cfg() -> LtvConfig {
    LtvConfig {
        parts_margin: 0.4,
        labour_margin: 0.5,
        contract_margin: 0.6,
        discount_rate: 0.1,
        default_retention: 0.8,
        min_own_renewals: 2,
        min_tenant_renewals: 3,
        ..LtvConfig::default()
    }
}

/// X: contract k1 (a year, 100 000) renewed by k2 (two years, 120 000 a year, in force
/// at T0); repairs completed 400 and 100 days ago, and one tomorrow.
fn facts(tenant: RenewalTally) -> Facts {
    let mut a = offer("oa", "x", day(-420.0));
    a.price = price(10_000, 4_000, 0, 0, 0);
    let mut b = offer("ob", "x", day(-120.0));
    b.price = price(40_000, 6_000, 2_000, 20_000, 2_000);
    let mut c = offer("oc", "x", day(-2.0));
    c.price = price(99_000, 0, 0, 0, 0);
    Facts {
        currency: "EUR".into(),
        customers: vec![customer("x")],
        contracts: vec![
            contract("k1", "x", 100_000, day(-730.0), day(-365.0)),
            contract("k2", "x", 120_000, day(-365.0), day(365.0)),
        ],
        machines: vec![machine("m-x", "x", day(-800.0))],
        offers: vec![
            completed(a, day(-410.0), day(-400.0), false),
            completed(b, day(-110.0), day(-100.0), false),
            completed(c, day(-1.0), day(1.0), false),
        ],
        tenant_renewals: tenant,
        ..Facts::default()
    }
}

#[test]
fn the_future_margin_is_m_r_over_one_plus_d_minus_r() {
    // 1 000 × 0.9 / (1 + 0.1 − 0.9) = 900 / 0.2 = 4 500
    assert!((future_margin(1_000.0, 0.9, 0.1) - 4_500.0).abs() < 1e-9);
    // r = 1 keeps it finite: 1 000 / 0.1 = 10 000
    assert!((future_margin(1_000.0, 1.0, 0.1) - 10_000.0).abs() < 1e-9);
    assert_eq!(future_margin(1_000.0, 0.0, 0.1), 0.0);
}

#[test]
fn ltv_uses_the_tenants_retention_when_the_customer_has_too_few_renewals() {
    // X has one decided renewal (k1 → k2) of the two it needs; the tenant has 4 ≥ 3:
    // 3 renewed, 1 lapsed → r = 0.75.
    let facts = facts(RenewalTally {
        renewed: 3,
        lapsed: 1,
    });
    let index = facts.offer_index();
    let ltv = customer_ltv(
        &facts.view(&facts.customers[0], &index),
        T0,
        &facts.tenant_renewals,
        &cfg(),
    );
    // Margin to date (work completed before T0: oa, ob; oc is completed tomorrow):
    //   parts  0.4 × (10 000 + (40 000 − 20 000))      = 0.4 × 30 000 = 12 000
    //   labour 0.5 × (4 000 + (6 000 + 2 000 − 2 000)) = 0.5 × 10 000 =  5 000
    //   fees   0.6 × (k1 100 000 + k2 365 d of 120 000) = 0.6 × 220 000 = 132 000
    //   = 149 000
    assert_eq!(ltv.margin_to_date_cents, 149_000);
    // m = 0.6 × 120 000 (k2 in force) + last 365 days' service (ob only):
    //     0.4 × 20 000 + 0.5 × 6 000 = 72 000 + 8 000 + 3 000 = 83 000
    assert_eq!(ltv.annual_margin_cents, 83_000);
    assert_eq!(
        (ltv.retention, ltv.retention_source),
        (0.75, RetentionSource::Tenant)
    );
    // 83 000 × 0.75 / (1 + 0.1 − 0.75) = 62 250 / 0.35 = 177 857.14 → 177 857
    assert_eq!(ltv.expected_future_margin_cents, 177_857);
    assert_eq!(ltv.ltv_cents, 149_000 + 177_857);
    assert_eq!(ltv.discount_rate, 0.1);
}

#[test]
fn ltv_uses_the_customers_own_retention_once_it_has_enough_renewals() {
    let mut facts = facts(RenewalTally {
        renewed: 3,
        lapsed: 1,
    });
    // k0 → k1 → k2: two decided renewals, both renewed: r = 1.
    facts
        .contracts
        .push(contract("k0", "x", 100_000, day(-1095.0), day(-730.0)));
    let index = facts.offer_index();
    let ltv = customer_ltv(
        &facts.view(&facts.customers[0], &index),
        T0,
        &facts.tenant_renewals,
        &cfg(),
    );
    // 149 000 + 0.6 × 100 000 for k0
    assert_eq!(ltv.margin_to_date_cents, 209_000);
    assert_eq!(
        (ltv.retention, ltv.retention_source),
        (1.0, RetentionSource::Customer)
    );
    // 83 000 × 1 / (1 + 0.1 − 1) = 830 000
    assert_eq!(ltv.expected_future_margin_cents, 830_000);
    assert_eq!(ltv.ltv_cents, 1_039_000);
}

#[test]
fn ltv_falls_back_on_the_default_retention_without_enough_renewals_anywhere() {
    let facts = facts(RenewalTally {
        renewed: 2,
        lapsed: 0,
    });
    let index = facts.offer_index();
    let ltv = customer_ltv(
        &facts.view(&facts.customers[0], &index),
        T0,
        &facts.tenant_renewals,
        &cfg(),
    );
    assert_eq!(
        (ltv.retention, ltv.retention_source),
        (0.8, RetentionSource::Default)
    );
    // 83 000 × 0.8 / 0.3 = 221 333.33 → 221 333
    assert_eq!(ltv.expected_future_margin_cents, 221_333);
}

#[test]
fn a_customer_without_contract_or_paid_work_has_no_future_margin() {
    let facts = Facts {
        customers: vec![customer("y")],
        machines: vec![machine("m-y", "y", day(-10.0))],
        ..Facts::default()
    };
    let index = facts.offer_index();
    let ltv = customer_ltv(
        &facts.view(&facts.customers[0], &index),
        T0,
        &facts.tenant_renewals,
        &cfg(),
    );
    assert_eq!((ltv.ltv_cents, ltv.annual_margin_cents), (0, 0));
}
