use super::*;
use crate::planner::{OfferDraft, Price};

const T0: UnixMs = UnixMs(1_795_305_600_000);

fn h(hours: f64) -> UnixMs {
    T0.plus_hours(hours)
}

fn tech(id: &str, region: &str, skills: &[&str]) -> TechnicianProfile {
    TechnicianProfile {
        id: id.into(),
        home_region: region.into(),
        skills: skills.iter().map(|s| s.to_string()).collect(),
    }
}

fn job(region: &str, from_h: f64, to_h: f64, work_h: f64) -> Job {
    Job {
        machine_model: "mill".into(),
        region: region.into(),
        window: Occurrence {
            start: h(from_h),
            end: h(to_h),
        },
        work_hours: work_h,
    }
}

fn busy(tech: &str, from_h: f64, to_h: f64, region: Option<&str>) -> Busy {
    Busy {
        technician: tech.into(),
        start: h(from_h),
        end: h(to_h),
        region: region.map(String::from),
    }
}

#[test]
fn only_a_qualified_technician_gets_the_job() {
    let techs = [tech("a", "eu", &["press"]), tech("b", "eu", &["mill"])];
    let a = assign(
        &job("eu", 0.0, 8.0, 2.0),
        &techs,
        &[],
        &TravelModel::default(),
    )
    .unwrap();
    assert_eq!(a.technician, "b");
    assert_eq!(a.start, h(0.0));
    assert_eq!(a.end, h(2.0));
    let none = assign(
        &job("eu", 0.0, 8.0, 2.0),
        &techs[..1],
        &[],
        &TravelModel::default(),
    );
    assert_eq!(none, Err(NoAssignment::NobodyQualified));
}

#[test]
fn a_booked_technician_is_not_double_booked() {
    let techs = [tech("a", "eu", &["mill"])];
    let travel = TravelModel::default();
    // Busy at another site in the same region 0–3 h: next start is 3 h + 1 h travel.
    let b = [busy("a", 0.0, 3.0, Some("eu"))];
    let a = assign(&job("eu", 0.0, 8.0, 2.0), &techs, &b, &travel).unwrap();
    assert_eq!(a.start, h(4.0));
    assert_eq!(a.travel_minutes, 60);
    assert!(!fits(
        &job("eu", 0.0, 8.0, 2.0),
        &techs[0],
        h(2.0),
        &b,
        &travel
    ));
    // Fully booked window: nobody free.
    let b = [busy("a", 0.0, 8.0, Some("eu"))];
    assert_eq!(
        assign(&job("eu", 0.0, 8.0, 2.0), &techs, &b, &travel),
        Err(NoAssignment::NobodyFree)
    );
}

#[test]
fn travel_from_another_region_takes_longer() {
    let techs = [tech("a", "us", &["mill"])];
    let travel = TravelModel::default();
    let b = [busy("a", 0.0, 2.0, Some("us"))];
    // Job in eu: 2 h + 8 h travel = 10 h, but the window ends at 9 h.
    assert_eq!(
        assign(&job("eu", 0.0, 9.0, 1.0), &techs, &b, &travel),
        Err(NoAssignment::NobodyFree)
    );
    let a = assign(&job("eu", 0.0, 12.0, 1.0), &techs, &b, &travel).unwrap();
    assert_eq!(a.start, h(10.0));
    assert_eq!(a.travel_minutes, 480);
    // A later job elsewhere must leave time to travel there too.
    let b = [busy("a", 5.0, 8.0, Some("us"))];
    assert!(!fits(
        &job("eu", 0.0, 12.0, 1.0),
        &techs[0],
        h(0.0),
        &b,
        &travel
    ));
}

#[test]
fn an_absence_blocks_without_travel() {
    let techs = [tech("a", "eu", &["mill"])];
    let b = [busy("a", 0.0, 3.0, None)];
    let a = assign(
        &job("eu", 0.0, 8.0, 2.0),
        &techs,
        &b,
        &TravelModel::default(),
    )
    .unwrap();
    assert_eq!(a.start, h(3.0));
}

#[test]
fn the_earliest_free_technician_wins_and_locals_break_ties() {
    let techs = [
        tech("far", "us", &["mill"]),
        tech("local", "eu", &["mill"]),
        tech("busy", "eu", &["mill"]),
    ];
    let b = [busy("busy", 0.0, 4.0, Some("eu"))];
    let a = assign(
        &job("eu", 0.0, 8.0, 2.0),
        &techs,
        &b,
        &TravelModel::default(),
    )
    .unwrap();
    assert_eq!(a.technician, "local");
}

#[test]
fn stock_on_the_shelf_shortens_the_lead_time() {
    assert_eq!(effective_lead_time_days(2, 1, 10.0, 1.0), 1.0);
    assert_eq!(effective_lead_time_days(1, 1, 10.0, 1.0), 10.0);
    assert_eq!(effective_lead_time_days(0, 0, 0.5, 1.0), 0.5);
}

fn draft(urgent: bool, start_h: f64) -> OfferDraft {
    OfferDraft {
        machine: "m".parse().unwrap(),
        components: vec![],
        window: Occurrence {
            start: h(start_h),
            end: h(start_h + 2.0),
        },
        urgent,
        p_fail_before_window: 0.0,
        p_fail_before_next: 0.0,
        risk_tolerance: 0.1,
        price: Price {
            parts_cents: 0,
            labour_cents: 0,
            travel_cents: 0,
            coverage_cents: 0,
            total_cents: 0,
            cost_of_waiting_cents: 0,
            currency: "EUR".into(),
        },
        explanation: String::new(),
    }
}

#[test]
fn the_contact_cap_holds_back_the_least_pressing_offers_but_never_an_urgent_one() {
    let decisions = vec![
        Decision::Propose(draft(false, 100.0)),
        Decision::Expire {
            offer: "o-1".into(),
            reason: "passed".into(),
        },
        Decision::Propose(draft(false, 20.0)),
        Decision::Propose(draft(true, 50.0)),
    ];
    // Two contacts left: the urgent visit takes one (it counts), the earliest window the
    // other.
    let mut remaining = 2;
    let (kept, held) = cap_contacts(decisions, &mut remaining);
    assert_eq!(held, 1);
    assert_eq!(remaining, 0);
    let starts: Vec<_> = kept
        .iter()
        .filter_map(|d| match d {
            Decision::Propose(d) => Some((d.urgent, d.window.start)),
            _ => None,
        })
        .collect();
    // The urgent one, then the earliest window; the window at 100 h waits.
    assert_eq!(starts, vec![(true, h(50.0)), (false, h(20.0))]);
    assert!(kept.iter().any(|d| matches!(d, Decision::Expire { .. })));
}

#[test]
fn an_urgent_visit_goes_out_even_when_the_cap_is_spent() {
    let mut remaining = 0;
    let (kept, held) = cap_contacts(
        vec![
            Decision::Propose(draft(true, 5.0)),
            Decision::Propose(draft(false, 6.0)),
        ],
        &mut remaining,
    );
    assert_eq!(held, 1);
    assert!(matches!(kept.as_slice(), [Decision::Propose(d)] if d.urgent));
}
