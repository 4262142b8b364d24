//! Churn signals, score and lifecycle, seen at T0 + 30 d (Wednesday 2026-02-04).

use super::*;
use crate::analytics::config::HealthConfig;
use crate::analytics::health::{
    LifecycleStage, SignalKind, add_business_days, health, lifecycle, signals,
};

fn now() -> UnixMs {
    day(30.0)
}

fn accepted(o: OfferFact, at: UnixMs) -> OfferFact {
    let mut o = o;
    o.status = OfferStatus::Accepted;
    o.decided_at = Some(at);
    o
}

fn with_work_order(
    mut o: OfferFact,
    status: &str,
    created: UnixMs,
    window_end: UnixMs,
) -> OfferFact {
    o.work_order = Some(WorkOrderFact {
        id: format!("wo-{}", o.id),
        status: status.into(),
        created_at: created,
        window_start: window_end.plus_hours(-8.0),
        window_end,
        completed_at: None,
        found_failed: false,
    });
    o
}

/// A customer showing every signal.
fn churning() -> Facts {
    let mut m1 = machine("m1", "q", day(-1000.0));
    m1.last_seen_at = Some(day(15.0));
    m1.open_failures = vec![("spindle".into(), day(26.0))];
    let mut m2 = machine("m2", "q", day(-1000.0));
    m2.last_seen_at = Some(day(10.0));
    let m3 = machine("m3", "q", day(-1000.0));
    Facts {
        currency: "EUR".into(),
        customers: vec![customer("q")],
        contracts: vec![contract("k", "q", 600_000, day(-300.0), day(60.0))],
        machines: vec![m1, m2, m3],
        offers: vec![
            accepted(offer("o1", "q", day(1.0)), day(5.0)),
            declined(offer("o2", "q", day(22.0)), day(23.0), "too expensive"),
            declined(offer("o3", "q", day(24.0)), day(25.0), "budget frozen"),
            // Accepted on Monday day 21 without a technician: 5 business days later is
            // Monday day 28.
            with_work_order(
                accepted(offer("o4", "q", day(20.0)), day(21.0)),
                "unassigned",
                day(21.0),
                day(40.0),
            ),
            // Its stop ended on Sunday day 27: overdue only from Friday day 32.
            with_work_order(
                accepted(offer("o5", "q", day(20.0)), day(21.0)),
                "scheduled",
                day(21.0),
                day(27.0),
            ),
        ],
        lives: vec![
            life("m2", "q", "bearing", day(12.0), LifeEnd::Failure, None),
            life("m1", "q", "spindle", day(26.0), LifeEnd::Failure, None),
            // A failure found at a planned visit is not unplanned.
            life("m1", "q", "belt", day(13.0), LifeEnd::Failure, Some("wo-x")),
        ],
        surveys: vec![
            survey("s1", "q", day(7.0), Some((day(8.0), 9, None, None))),
            survey(
                "s2",
                "q",
                day(21.0),
                Some((day(22.0), 3, Some(2), Some("machines keep breaking"))),
            ),
        ],
        usage: vec![UsageFact {
            customer: "q".into(),
            recent: 400.0,
            previous: 1_000.0,
        }],
        ..Facts::default()
    }
}

fn signal_of(
    facts: &Facts,
    cfg: &HealthConfig,
    kind: SignalKind,
) -> Option<crate::analytics::health::Signal> {
    let index = facts.offer_index();
    signals(&facts.view(&facts.customers[0], &index), now(), cfg, "EUR")
        .into_iter()
        .find(|s| s.kind == kind)
}

#[test]
fn business_days_skip_weekends() {
    let friday = day(4.0).plus_hours(10.0); // Friday 2026-01-09 10:00
    assert_eq!(add_business_days(friday, 1), day(7.0).plus_hours(10.0)); // Monday
    assert_eq!(add_business_days(day(5.0), 1), day(7.0)); // Saturday → Monday
    assert_eq!(add_business_days(day(0.0), 5), day(7.0)); // Monday → next Monday
    assert_eq!(add_business_days(day(0.0), 0), day(0.0));
}

#[test]
fn machines_gone_quiet_say_since_when_and_which_was_heard_last() {
    let s = signal_of(&churning(), &HealthConfig::default(), SignalKind::Quiet).unwrap();
    // Latest telemetry: m1 on day 15 (2026-01-20); 30 − 15 = 15 days ≥ 14. m3 never
    // reported and does not count.
    assert_eq!(s.since, day(15.0));
    assert_eq!(
        s.reason,
        "no telemetry from any of its 3 machines for 15 days (last: m1 on 2026-01-20)"
    );
    assert_eq!(s.weight, 35.0);
    // With 16 days of patience it is not quiet yet.
    let patient = HealthConfig {
        quiet_after: std::time::Duration::from_secs(16 * 86_400),
        ..HealthConfig::default()
    };
    assert_eq!(signal_of(&churning(), &patient, SignalKind::Quiet), None);
}

#[test]
fn a_customer_whose_machines_never_reported_has_not_gone_quiet() {
    let mut facts = churning();
    for m in &mut facts.machines {
        m.last_seen_at = None;
    }
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::Quiet),
        None
    );
}

#[test]
fn usage_down_compares_the_last_window_with_the_one_before() {
    let s = signal_of(&churning(), &HealthConfig::default(), SignalKind::UsageDown).unwrap();
    // 1 000 → 400: down 60 % ≥ 50 %.
    assert_eq!(s.since, day(0.0)); // now − 30 days
    assert_eq!(
        s.reason,
        "usage (op.load_pct × hours) fell 60% over the last 30 days: 1000 → 400"
    );
    // Down only 40 %: no signal; no usage before: no signal either.
    let mut facts = churning();
    facts.usage[0].recent = 600.0;
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::UsageDown),
        None
    );
    facts.usage[0].previous = 0.0;
    facts.usage[0].recent = 0.0;
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::UsageDown),
        None
    );
}

#[test]
fn declines_in_a_row_are_counted_from_the_latest_decision_with_their_reasons() {
    let two = HealthConfig {
        declined_in_a_row: 2,
        ..HealthConfig::default()
    };
    // Decisions newest first: o3 declined (day 25), o2 declined (day 23), then o4 and o5
    // accepted (day 21) and o1 (day 5).
    let s = signal_of(&churning(), &two, SignalKind::OffersDeclined).unwrap();
    assert_eq!(s.since, day(23.0));
    assert_eq!(
        s.reason,
        "declined 2 offers in a row since 2026-01-28: “budget frozen”; “too expensive”"
    );
    let three = HealthConfig {
        declined_in_a_row: 3,
        ..HealthConfig::default()
    };
    assert_eq!(
        signal_of(&churning(), &three, SignalKind::OffersDeclined),
        None
    );
    // An acceptance after the declines ends the streak.
    let mut facts = churning();
    facts
        .offers
        .push(accepted(offer("o6", "q", day(26.0)), day(27.0)));
    assert_eq!(signal_of(&facts, &two, SignalKind::OffersDeclined), None);
}

#[test]
fn declines_older_than_the_lookback_are_forgotten() {
    let facts = Facts {
        customers: vec![customer("q")],
        offers: vec![declined(offer("o", "q", day(-200.0)), day(-151.0), "no")],
        ..Facts::default()
    };
    // Lookback 180 days from day 30 starts on day −150.
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::OffersDeclined),
        None
    );
}

#[test]
fn a_work_order_is_overdue_five_business_days_after_it_should_have_moved() {
    let s = signal_of(
        &churning(),
        &HealthConfig::default(),
        SignalKind::WorkOrderOverdue,
    )
    .unwrap();
    // o4's work order: unassigned since Monday day 21 → overdue from Monday day 28.
    // o5's stop ended Sunday day 27 → overdue from Friday day 32, not yet.
    assert_eq!(s.since, day(28.0));
    assert_eq!(
        s.reason,
        "1 work order open for more than 5 business days: wo-o4 without a technician since 2026-01-26"
    );
}

#[test]
fn unplanned_failures_list_each_and_say_which_is_not_repaired() {
    let s = signal_of(
        &churning(),
        &HealthConfig::default(),
        SignalKind::UnplannedFailure,
    )
    .unwrap();
    // m2 bearing (day 12) and m1 spindle (day 26, still failed); the belt found failed at
    // a planned visit is not unplanned.
    assert_eq!(s.since, day(12.0));
    assert_eq!(
        s.reason,
        "2 unplanned failures without a planned visit: m2 bearing on 2026-01-17; m1 spindle on 2026-01-31, not repaired yet"
    );
}

#[test]
fn the_latest_answer_decides_whether_the_customer_is_a_detractor() {
    let s = signal_of(
        &churning(),
        &HealthConfig::default(),
        SignalKind::NpsDetractor,
    )
    .unwrap();
    assert_eq!(s.since, day(22.0));
    assert_eq!(
        s.reason,
        "scored 3/10 on 2026-01-27 after the visit of work order wo-s2: “machines keep breaking”"
    );
    let mut facts = churning();
    facts.surveys.push(survey(
        "s3",
        "q",
        day(28.0),
        Some((day(29.0), 10, None, None)),
    ));
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::NpsDetractor),
        None
    );
}

#[test]
fn a_renewal_within_ninety_days_without_a_successor_is_a_signal() {
    let s = signal_of(
        &churning(),
        &HealthConfig::default(),
        SignalKind::RenewalDue,
    )
    .unwrap();
    // Renews on day 60 (2026-03-06), 30 days from now; the notice started on day −30.
    assert_eq!(s.since, day(-30.0));
    assert_eq!(
        s.reason,
        "contract k (standard, EUR 6,000.00/year) renews on 2026-03-06, in 30 days; no renewal signed yet"
    );
    let mut facts = churning();
    facts
        .contracts
        .push(contract("k-next", "q", 600_000, day(60.0), day(425.0)));
    assert_eq!(
        signal_of(&facts, &HealthConfig::default(), SignalKind::RenewalDue),
        None
    );
}

#[test]
fn the_score_is_a_hundred_minus_the_weights_and_flags_below_the_threshold() {
    let cfg = HealthConfig::default();
    let facts = churning();
    let index = facts.offer_index();
    let h = health(&facts.view(&facts.customers[0], &index), now(), &cfg, "EUR");
    // Every signal is active: 35 + 20 + 15 + 10 + 15 + 25 + 10 = 130 > 100 → 0.
    assert_eq!(h.signals.len(), 7);
    assert_eq!(h.score, 0.0);
    assert!(h.flagged);
    // Strongest first.
    assert_eq!(h.signals[0].kind, SignalKind::Quiet);
    assert_eq!(h.signals[1].kind, SignalKind::NpsDetractor);

    // Only the renewal: 100 − 10 = 90, not flagged (threshold 70).
    let calm = Facts {
        customers: vec![customer("q")],
        contracts: vec![contract("k", "q", 600_000, day(-300.0), day(60.0))],
        ..Facts::default()
    };
    let index = calm.offer_index();
    let h = health(&calm.view(&calm.customers[0], &index), now(), &cfg, "EUR");
    assert_eq!((h.score, h.flagged), (90.0, false));
}

#[test]
fn a_healthy_customer_has_no_signal() {
    let mut m = machine("m", "h", day(-500.0));
    m.last_seen_at = Some(now().plus_hours(-1.0));
    let facts = Facts {
        customers: vec![customer("h")],
        contracts: vec![contract("k", "h", 600_000, day(-100.0), day(265.0))],
        machines: vec![m],
        offers: vec![accepted(offer("o", "h", day(20.0)), day(21.0))],
        surveys: vec![survey(
            "s",
            "h",
            day(22.0),
            Some((day(23.0), 10, Some(5), None)),
        )],
        usage: vec![UsageFact {
            customer: "h".into(),
            recent: 980.0,
            previous: 1_000.0,
        }],
        ..Facts::default()
    };
    let index = facts.offer_index();
    let h = health(
        &facts.view(&facts.customers[0], &index),
        now(),
        &HealthConfig::default(),
        "EUR",
    );
    assert_eq!(h.signals, vec![]);
    assert_eq!((h.score, h.flagged), (100.0, false));
}

#[test]
fn the_lifecycle_stage_follows_the_age_of_the_relationship() {
    let cfg = HealthConfig::default();
    let stage = |commissioned: f64, contract_start: Option<f64>| {
        let facts = Facts {
            customers: vec![customer("c")],
            machines: vec![machine("m", "c", day(commissioned))],
            contracts: contract_start
                .map(|s| vec![contract("k", "c", 1, day(s), day(s + 365.0))])
                .unwrap_or_default(),
            ..Facts::default()
        };
        let index = facts.offer_index();
        lifecycle(&facts.view(&facts.customers[0], &index), now(), &cfg)
    };
    // 30 − (−50) = 80 days < 90.
    assert_eq!(
        stage(-50.0, None),
        (LifecycleStage::Onboarding, Some(day(-50.0)))
    );
    // 30 − (−100) = 130 days.
    assert_eq!(stage(-100.0, None).0, LifecycleStage::Established);
    // The earlier of machine and contract counts: 30 − (−700) = 730 days.
    assert_eq!(
        stage(-10.0, Some(-700.0)),
        (LifecycleStage::Mature, Some(day(-700.0)))
    );
}
