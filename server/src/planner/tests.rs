//! Planner tests: a fixed clock, a site with a stop every day 06:00–14:00 UTC, and
//! estimates whose distributions are set directly so each probability is known.

use super::*;
use crate::model::{Evidence, RulDistribution, TrendFit, TrendShape};
use calendar::{WeeklyWindow, occurrences};

const NOW: UnixMs = UnixMs(1_795_305_600_000); // Sun 2026-11-22 00:00 UTC
const DAY_H: f64 = 24.0;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// An estimate whose crossing time has median `p50_h` and a slope uncertainty of
/// `rel_se` (relative), linear trend from HI 0.5.
fn estimate(p50_h: f64, rel_se: f64) -> RulEstimate {
    let slope = 0.5 / p50_h;
    let dist = RulDistribution::Trend(TrendFit {
        shape: TrendShape::Linear,
        level: 0.5,
        gap: 0.5,
        slope_per_h: slope,
        slope_se: rel_se * slope,
        dof: 200.0,
        rmse_hi: 0.01,
        offset: 0.0,
    });
    RulEstimate {
        computed_at: NOW,
        status: HealthStatus::Degrading,
        health_index: 0.5,
        rul_p10_h: dist.quantile_h(0.1),
        rul_p50_h: dist.quantile_h(0.5),
        rul_p90_h: dist.quantile_h(0.9),
        distribution: dist,
        evidence: Evidence {
            points: 100,
            last_data_at: Some(NOW),
            onset_at: None,
            hi_per_day: slope * 24.0,
        },
    }
}

/// A component whose signal is healthy, but old enough that the fleet prior alone
/// would put P(failure within 21 days) far above any tolerance.
fn healthy() -> RulEstimate {
    let dist = RulDistribution::FleetPrior {
        shape: 3.0,
        scale_h: 1500.0,
        age_h: 1400.0,
    };
    RulEstimate {
        status: HealthStatus::Healthy,
        health_index: 0.02,
        rul_p10_h: dist.quantile_h(0.1),
        rul_p50_h: dist.quantile_h(0.5),
        rul_p90_h: dist.quantile_h(0.9),
        distribution: dist,
        ..estimate(100.0, 0.1)
    }
}

fn component(key: &str, lead_days: f64, estimate: RulEstimate) -> ComponentInput {
    ComponentInput {
        key: id(key),
        name: key.replace('_', " "),
        part: PartTerms {
            id: id(&format!("part-{key}")),
            name: key.into(),
            price_cents: 100_000,
            lead_time_days: lead_days,
            labour_hours: 2.0,
        },
        installed_at: UnixMs(NOW.0 - 1000 * UnixMs::HOUR),
        estimate,
    }
}

fn terms(tolerance: Option<f64>, parts_cov: f64, labour_cov: f64) -> Terms {
    Terms {
        currency: "EUR".into(),
        labour_rate_cents_per_hour: 10_000,
        travel_cost_cents: 30_000,
        contract_tier: tolerance.map(|_| "standard".into()),
        parts_coverage: parts_cov,
        labour_coverage: labour_cov,
        risk_tolerance: tolerance,
        downtime_cost_cents_per_hour: 50_000,
        unplanned_downtime_hours: 24.0,
    }
}

fn machine(components: Vec<ComponentInput>) -> MachineInput {
    machine_with_stops(components, &[0, 1, 2, 3, 4, 5, 6])
}

/// A machine whose site stops 06:00–14:00 UTC on the given weekdays (0 = Monday).
fn machine_with_stops(components: Vec<ComponentInput>, weekdays: &[u32]) -> MachineInput {
    let daily: Vec<WeeklyWindow> = weekdays
        .iter()
        .map(|&d| WeeklyWindow {
            weekday: d,
            start_minute: 360,
            duration_minutes: 480,
        })
        .collect();
    MachineInput {
        machine: id("m-1"),
        machine_label: "m-1 (Mill)".into(),
        timezone: chrono_tz::UTC,
        terms: terms(Some(0.1), 0.5, 1.0),
        components,
        committed: vec![],
        open_offers: vec![],
        windows: occurrences(chrono_tz::UTC, &daily, NOW, NOW.plus_hours(70.0 * DAY_H)),
    }
}

fn plan(input: &MachineInput) -> Vec<Decision> {
    plan_machine(input, NOW, &PlannerSettings::default())
}

fn only_proposal(decisions: &[Decision]) -> &OfferDraft {
    match decisions {
        [Decision::Propose(d)] => d,
        other => panic!("expected one proposal, got {other:?}"),
    }
}

#[test]
fn the_latest_window_that_stays_under_the_tolerance_is_chosen() {
    let input = machine(vec![component(
        "bearing",
        1.0,
        estimate(10.0 * DAY_H, 0.15),
    )]);
    let decisions = plan(&input);
    let d = only_proposal(&decisions);
    let e = &input.components[0].estimate;
    assert!(!d.urgent);
    assert!(input.windows.contains(&d.window));
    assert!(e.p_fail_before(d.window.start) <= 0.1);
    let next = input
        .windows
        .iter()
        .find(|w| w.start > d.window.start)
        .unwrap();
    assert!(
        e.p_fail_before(next.start) > 0.1,
        "a later window was still safe: {next:?}"
    );
    assert!(d.window.start.0 < NOW.plus_hours(e.rul_p50_h.unwrap()).0);
    assert!((d.p_fail_before_window - e.p_fail_before(d.window.start)).abs() < 1e-12);
}

#[test]
fn a_window_before_the_parts_lead_time_is_not_feasible() {
    // Safe until about day 7 (P10), but the part takes 5 days: windows on days 5–7 only.
    let input = machine(vec![component("bearing", 5.0, estimate(9.0 * DAY_H, 0.15))]);
    let d = only_proposal(&plan(&input)).clone();
    assert!(d.window.start >= NOW.plus_hours(5.0 * DAY_H));
    assert!(!d.urgent);
}

#[test]
fn with_no_safe_window_after_the_lead_time_the_visit_is_urgent() {
    let input = machine(vec![component(
        "bearing",
        10.0,
        estimate(8.0 * DAY_H, 0.15),
    )]);
    let d = only_proposal(&plan(&input)).clone();
    assert!(d.urgent);
    assert!(d.window.start >= NOW.plus_hours(10.0 * DAY_H));
    assert!(d.explanation.contains("urgent visit"), "{}", d.explanation);
}

#[test]
fn a_healthy_component_gets_no_offer_even_when_old() {
    let input = machine(vec![component("bearing", 1.0, healthy())]);
    let e = &input.components[0].estimate;
    assert!(
        e.p_fail_before(NOW.plus_hours(21.0 * DAY_H)) > 0.3,
        "the prior alone says risky"
    );
    assert!(plan(&input).is_empty());
}

#[test]
fn a_component_with_risk_beyond_the_horizon_gets_no_offer_yet() {
    let input = machine(vec![component("bearing", 1.0, estimate(60.0 * DAY_H, 0.1))]);
    assert!(plan(&input).is_empty());
}

#[test]
fn a_component_that_cannot_wait_for_the_next_window_joins_the_visit() {
    // Stops only on Sundays: today 06:00, then in 7 and 14 days.
    let input = machine_with_stops(
        vec![
            component("bearing", 0.1, estimate(6.0 * DAY_H, 0.15)),
            // Would last past today's stop but not safely until next Sunday's.
            component("belt", 0.1, estimate(8.0 * DAY_H, 0.15)),
            // Can safely wait for next Sunday: planned on its own.
            component("pump", 0.1, estimate(10.0 * DAY_H, 0.1)),
            component("filter", 0.1, healthy()),
        ],
        &[6],
    );
    let decisions = plan(&input);
    let drafts: Vec<&OfferDraft> = decisions
        .iter()
        .map(|d| match d {
            Decision::Propose(d) => d,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(drafts.len(), 2, "{drafts:?}");
    let keys = |d: &OfferDraft| {
        d.components
            .iter()
            .map(|c| c.key.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(drafts[0]), ["bearing", "belt"]);
    assert_eq!(drafts[0].window, input.windows[0]);
    assert_eq!(drafts[0].price.parts_cents, 200_000);
    assert!(
        drafts[0].explanation.contains("same visit"),
        "{}",
        drafts[0].explanation
    );
    assert_eq!(keys(drafts[1]), ["pump"]);
    assert_eq!(drafts[1].window, input.windows[1]);
}

#[test]
fn components_that_can_wait_get_their_own_later_offer() {
    let input = machine(vec![
        component("bearing", 1.0, estimate(5.0 * DAY_H, 0.1)),
        component("belt", 1.0, estimate(14.0 * DAY_H, 0.1)),
    ]);
    let decisions = plan(&input);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let windows: Vec<_> = decisions
        .iter()
        .map(|d| match d {
            Decision::Propose(d) => d.window.start,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(windows[0] < windows[1]);
}

#[test]
fn an_open_offer_whose_window_is_still_safe_is_kept_not_duplicated() {
    let mut input = machine(vec![component(
        "bearing",
        1.0,
        estimate(10.0 * DAY_H, 0.15),
    )]);
    let first = only_proposal(&plan(&input)).clone();
    input.open_offers.push(OpenOffer {
        id: "o-1".into(),
        components: vec![id("bearing")],
        window: first.window,
        urgent: false,
        created_at: NOW,
    });
    assert!(plan(&input).is_empty());
}

#[test]
fn rising_risk_supersedes_the_offer_with_an_earlier_window() {
    let mut input = machine(vec![component(
        "bearing",
        1.0,
        estimate(10.0 * DAY_H, 0.15),
    )]);
    let first = only_proposal(&plan(&input)).clone();
    input.open_offers.push(OpenOffer {
        id: "o-1".into(),
        components: vec![id("bearing")],
        window: first.window,
        urgent: false,
        created_at: NOW,
    });
    // The wear accelerates: now expected in 5 days.
    input.components[0].estimate = estimate(5.0 * DAY_H, 0.15);
    match plan(&input).as_slice() {
        [Decision::Supersede { old, draft }] => {
            assert_eq!(old, "o-1");
            assert!(draft.window.start < first.window.start);
        }
        other => panic!("expected a supersede, got {other:?}"),
    }
}

#[test]
fn an_offer_whose_window_passed_expires() {
    let mut input = machine(vec![component("bearing", 1.0, healthy())]);
    input.open_offers.push(OpenOffer {
        id: "o-1".into(),
        components: vec![id("bearing")],
        window: Occurrence {
            start: NOW.plus_hours(-30.0),
            end: NOW.plus_hours(-22.0),
        },
        urgent: false,
        created_at: NOW.plus_hours(-100.0),
    });
    assert!(matches!(plan(&input).as_slice(), [Decision::Expire { offer, .. }] if offer == "o-1"));
}

#[test]
fn an_offer_for_a_replaced_component_expires() {
    let mut input = machine(vec![component("bearing", 1.0, healthy())]);
    input.components[0].installed_at = NOW.plus_hours(-1.0);
    input.open_offers.push(OpenOffer {
        id: "o-1".into(),
        components: vec![id("bearing")],
        window: input.windows[3],
        urgent: false,
        created_at: NOW.plus_hours(-10.0),
    });
    match plan(&input).as_slice() {
        [Decision::Expire { reason, .. }] => assert!(reason.contains("replaced"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_price_reflects_each_contract_tier() {
    let cases = [
        // (parts coverage, labour coverage, expected total)
        (0.0, 0.0, 100_000 + 20_000 + 30_000),
        (0.0, 0.5, 100_000 + 25_000),
        (0.5, 1.0, 50_000),
        (1.0, 1.0, 0),
    ];
    for (pc, lc, total) in cases {
        let mut input = machine(vec![component(
            "bearing",
            1.0,
            estimate(10.0 * DAY_H, 0.15),
        )]);
        input.terms = terms(Some(0.1), pc, lc);
        let d = only_proposal(&plan(&input)).clone();
        assert_eq!(d.price.parts_cents, 100_000);
        assert_eq!(d.price.labour_cents, 20_000);
        assert_eq!(d.price.travel_cents, 30_000);
        assert_eq!(d.price.total_cents, total, "coverage {pc}/{lc}");
        assert_eq!(
            d.price.total_cents + d.price.coverage_cents,
            150_000,
            "coverage {pc}/{lc}"
        );
    }
}

#[test]
fn a_stricter_tolerance_picks_an_earlier_window() {
    let mut strict = machine(vec![component(
        "bearing",
        1.0,
        estimate(12.0 * DAY_H, 0.15),
    )]);
    strict.terms = terms(Some(0.02), 1.0, 1.0);
    let lenient = machine(vec![component(
        "bearing",
        1.0,
        estimate(12.0 * DAY_H, 0.15),
    )]);
    let s = only_proposal(&plan(&strict)).window;
    let l = only_proposal(&plan(&lenient)).window;
    assert!(s.start < l.start, "{s:?} vs {l:?}");
}

#[test]
fn money_is_formatted_with_thousands_separators() {
    assert_eq!(format_money(123_456_789, "EUR"), "EUR 1,234,567.89");
    assert_eq!(format_money(99, "EUR"), "EUR 0.99");
    assert_eq!(format_money(-2_250, "EUR"), "-EUR 22.50");
}

#[test]
fn the_horizon_counts_from_when_the_part_can_be_there() {
    // The same risk, P50 in 20 days: a part that comes overnight is not booked weeks
    // ahead yet (the next days of wear will sharpen the estimate), one that takes ten
    // days to come is offered now.
    let risk = || estimate(20.0 * DAY_H, 0.2);
    assert!(plan(&machine(vec![component("filter", 1.0, risk())])).is_empty());
    let decisions = plan(&machine(vec![component("bearing", 10.0, risk())]));
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let Decision::Propose(draft) = &decisions[0] else {
        panic!("{decisions:?}")
    };
    assert!(!draft.urgent);
    assert!(draft.window.start >= NOW.plus_hours(10.0 * DAY_H));
}

#[test]
fn durations_read_as_words_with_the_right_number() {
    assert_eq!(describe_hours(0.2), "about 1 hour");
    assert_eq!(describe_hours(1.4), "about 1 hour");
    assert_eq!(describe_hours(20.0), "about 20 hours");
    assert_eq!(describe_hours(72.0), "about 3 days");
    assert_eq!(describe_hours(24.0 * 21.0), "about 3 weeks");
}
