//! Scoring the live platform against a simulated fleet's ground truth: did the
//! failures get an offer in time, how early, and were parts replaced with much of their
//! life left? Pure: truth records and offers in, figures out.
//!
//! The truth is the simulator's JSON lines (`{"record":"life",...}` with each part's
//! install, onset and failure time, and `{"record":"failure",...}`); the offers are the
//! API's (`GET /api/v1/offers`). A replacement is a life that ended before its failure
//! time (the next life of the same component began earlier).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;

/// One life of a component in the ground truth.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TruthLife {
    pub machine: String,
    pub component: String,
    pub installed_at: UnixMs,
    pub onset_at: UnixMs,
    pub fails_at: UnixMs,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum TruthRecord {
    Life(TruthLife),
    Failure {
        machine: String,
        component: String,
        at: UnixMs,
    },
    #[serde(other)]
    Other,
}

/// The lives of the ground truth, and the failures that happened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundTruth {
    pub lives: Vec<TruthLife>,
    pub failures: Vec<(String, String, UnixMs)>,
}

/// Parses ground-truth JSON lines; a line that does not parse is an error naming it.
pub fn parse_truth(text: &str) -> Result<GroundTruth, String> {
    let mut truth = GroundTruth::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TruthRecord>(line) {
            Ok(TruthRecord::Life(l)) => truth.lives.push(l),
            Ok(TruthRecord::Failure {
                machine,
                component,
                at,
            }) => truth.failures.push((machine, component, at)),
            Ok(TruthRecord::Other) => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(truth)
}

/// An offer as the score needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferRecord {
    pub machine: String,
    pub components: Vec<String>,
    pub status: String,
    pub window_start: UnixMs,
    pub created_at: UnixMs,
}

/// Reads the offers of `GET /api/v1/offers` (a JSON array).
pub fn parse_offers(json: &serde_json::Value) -> Result<Vec<OfferRecord>, String> {
    let list = json.as_array().ok_or("the offers are not a JSON array")?;
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let s = |k: &str| -> Result<String, String> {
                o[k].as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("offer {i}: `{k}` is missing"))
            };
            let t = |k: &str| -> Result<UnixMs, String> {
                UnixMs::parse_rfc3339(&s(k)?).map_err(|e| format!("offer {i}: `{k}`: {e}"))
            };
            Ok(OfferRecord {
                machine: s("machine")?,
                components: o["components"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| c["component"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                status: s("status")?,
                window_start: t("window_start")?,
                created_at: t("created_at")?,
            })
        })
        .collect()
}

/// The three figures of the acceptance, with what they rest on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FleetScore {
    /// Failures in the scored period.
    pub failures: usize,
    /// Of these, those that got an offer (any status) whose window started before the
    /// failure, made while the failing part was installed.
    pub failures_with_offer_in_time: usize,
    pub share_offered_in_time: f64,
    /// Hours from the first such offer to the failure: median and 10th percentile.
    pub lead_time_median_h: Option<f64>,
    pub lead_time_p10_h: Option<f64>,
    /// Hours from the offered window's start to the failure, median.
    pub window_margin_median_h: Option<f64>,
    /// Parts replaced before they failed, and those with more than half their life left.
    pub replacements: usize,
    pub replacements_over_half_life_left: usize,
    pub share_replaced_over_half_life_left: Option<f64>,
    /// Until replacements are carried out: lives with an offer whose first window came
    /// with more than half the life left (as if every first offer were accepted).
    pub offered_lives: usize,
    pub offered_over_half_life_left: usize,
    pub share_offered_over_half_life_left: Option<f64>,
    /// Offers whose component's life had not even reached its degradation onset by
    /// the window.
    pub offers_before_onset: usize,
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// The lives of each component, oldest first.
type LivesByComponent<'a> = HashMap<(&'a str, &'a str), Vec<&'a TruthLife>>;

fn lives_by_component(truth: &GroundTruth) -> LivesByComponent<'_> {
    let mut lives: LivesByComponent<'_> = HashMap::new();
    for l in &truth.lives {
        lives
            .entry((l.machine.as_str(), l.component.as_str()))
            .or_default()
            .push(l);
    }
    for v in lives.values_mut() {
        v.sort_by_key(|l| l.installed_at);
        v.dedup_by_key(|l| l.installed_at);
    }
    lives
}

/// The offers made for `component` of `machine` while `life` was installed, oldest first.
fn offers_of<'a>(
    offers: &'a [OfferRecord],
    machine: &str,
    component: &str,
    life: &TruthLife,
) -> Vec<&'a OfferRecord> {
    let mut v: Vec<&OfferRecord> = offers
        .iter()
        .filter(|o| {
            o.machine == machine
                && o.components.iter().any(|c| c == component)
                && o.created_at >= life.installed_at
                && o.created_at < life.fails_at
        })
        .collect();
    v.sort_by_key(|o| o.created_at);
    v
}

/// How one failure of the ground truth was served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureOutcome {
    pub machine: String,
    pub component: String,
    pub at: UnixMs,
    /// Hours from the first offer with a window before the failure to the failure,
    /// and from that window's start to the failure; `None` when there was none.
    pub lead_h: Option<f64>,
    pub margin_h: Option<f64>,
    /// When there was no offer in time: how many hours after the failure the first
    /// offer's window started (`None`: no offer at all).
    pub late_by_h: Option<f64>,
}

/// Every failure in `[from, to)` with what the platform offered for it.
pub fn failure_outcomes(
    truth: &GroundTruth,
    offers: &[OfferRecord],
    from: UnixMs,
    to: UnixMs,
) -> Vec<FailureOutcome> {
    let lives = lives_by_component(truth);
    let mut out = Vec::new();
    for (machine, component, at) in &truth.failures {
        if !(from <= *at && *at < to) {
            continue;
        }
        let Some(life) = lives
            .get(&(machine.as_str(), component.as_str()))
            .and_then(|v| v.iter().rev().find(|l| l.installed_at <= *at))
        else {
            continue;
        };
        let made = offers_of(offers, machine, component, life);
        let first_in_time = made.iter().find(|o| o.window_start < *at);
        out.push(FailureOutcome {
            machine: machine.clone(),
            component: component.clone(),
            at: *at,
            lead_h: first_in_time.map(|o| o.created_at.hours_until(*at)),
            margin_h: first_in_time.map(|o| o.window_start.hours_until(*at)),
            late_by_h: match first_in_time {
                Some(_) => None,
                None => made.first().map(|o| at.hours_until(o.window_start)),
            },
        });
    }
    out.sort_by_key(|f| f.at);
    out
}

/// Scores the platform over `[from, to)`: failures in that period, replacements and
/// offers made in it.
pub fn score(truth: &GroundTruth, offers: &[OfferRecord], from: UnixMs, to: UnixMs) -> FleetScore {
    let in_period = |t: UnixMs| from <= t && t < to;
    let lives = lives_by_component(truth);

    let mut s = FleetScore::default();
    let outcomes = failure_outcomes(truth, offers, from, to);
    s.failures = outcomes.len();
    let mut leads: Vec<f64> = outcomes.iter().filter_map(|f| f.lead_h).collect();
    let mut margins: Vec<f64> = outcomes.iter().filter_map(|f| f.margin_h).collect();
    s.failures_with_offer_in_time = leads.len();
    s.share_offered_in_time = if s.failures > 0 {
        s.failures_with_offer_in_time as f64 / s.failures as f64
    } else {
        0.0
    };
    leads.sort_by(f64::total_cmp);
    margins.sort_by(f64::total_cmp);
    s.lead_time_median_h = quantile(&leads, 0.5);
    s.lead_time_p10_h = quantile(&leads, 0.1);
    s.window_margin_median_h = quantile(&margins, 0.5);

    for ((machine, component), v) in &lives {
        for pair in v.windows(2) {
            let (old, next) = (pair[0], pair[1]);
            if next.installed_at < old.fails_at && in_period(next.installed_at) {
                s.replacements += 1;
                let left = next.installed_at.hours_until(old.fails_at)
                    / old.installed_at.hours_until(old.fails_at).max(1e-9);
                if left > 0.5 {
                    s.replacements_over_half_life_left += 1;
                }
            }
        }
        for life in v {
            let Some(first) = offers_of(offers, machine, component, life)
                .into_iter()
                .find(|o| in_period(o.created_at))
            else {
                continue;
            };
            s.offered_lives += 1;
            let left = first.window_start.hours_until(life.fails_at)
                / life.installed_at.hours_until(life.fails_at).max(1e-9);
            if left > 0.5 {
                s.offered_over_half_life_left += 1;
            }
            if first.window_start < life.onset_at {
                s.offers_before_onset += 1;
            }
        }
    }
    let share = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    s.share_replaced_over_half_life_left =
        share(s.replacements_over_half_life_left, s.replacements);
    s.share_offered_over_half_life_left = share(s.offered_over_half_life_left, s.offered_lives);
    s
}

/// Which failures the steady-state figure counts. The raw figure counts every failure
/// after the start; two kinds nothing could have served are left out of this one:
///
/// - **warm-up**: failures within `warm_up_h` of the start. The fleet starts with
///   parts already worn (the demo puts some near failure on purpose), and an offer
///   needs the part's lead time plus a visit; the default, [`SteadyStateRule::for_lead_time`],
///   is the longest part lead time plus a week (the time to see a trend).
/// - **unobservable**: failures of machines that sent no telemetry in the
///   `silent_h` hours before (a machine that went quiet: no signal, no prediction).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SteadyStateRule {
    pub warm_up_h: f64,
    pub silent_h: f64,
}

/// Hours of silence before a failure that make it unobservable.
pub const SILENT_BEFORE_FAILURE_H: f64 = 7.0 * 24.0;
/// What the warm-up adds to the longest lead time: time to see a trend.
pub const WARM_UP_BEYOND_LEAD_TIME_H: f64 = 7.0 * 24.0;

impl SteadyStateRule {
    /// The warm-up is the longest part lead time plus a week; silence a week.
    pub fn for_lead_time(longest_lead_time_days: f64) -> Self {
        Self {
            warm_up_h: longest_lead_time_days.max(0.0) * 24.0 + WARM_UP_BEYOND_LEAD_TIME_H,
            silent_h: SILENT_BEFORE_FAILURE_H,
        }
    }
}

/// The in-time figure over the failures that could have been served.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SteadyScore {
    /// Failures counted: after the warm-up, of machines that were sending telemetry.
    pub failures: usize,
    pub failures_with_offer_in_time: usize,
    pub share_offered_in_time: Option<f64>,
    /// Failures left out because they came during the warm-up.
    pub excluded_warm_up: usize,
    /// Failures left out (after the warm-up) because their machine was silent.
    pub excluded_unobservable: usize,
    pub lead_time_median_h: Option<f64>,
    /// The counted failures without an offer in time.
    pub misses: Vec<FailureOutcome>,
    /// Failures that came due: every life whose failure time fell after the warm-up
    /// and before the end, whether the part failed then or was replaced first. An
    /// accepted offer prevents the failure it foresaw, so the failures that happened
    /// are mostly the ones the platform missed; this figure counts both.
    pub due: usize,
    /// Of these, lives that got an offer (made while they were installed) whose
    /// window started before their failure time.
    pub due_with_offer_in_time: usize,
    pub share_due_offered_in_time: Option<f64>,
    /// Lives due after the warm-up left out because their machine was silent in the
    /// `silent_h` before the life ended.
    pub due_excluded_unobservable: usize,
    /// The counted due lives without an offer in time.
    pub due_misses: Vec<DueOutcome>,
}

/// How one life whose failure came due was served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DueOutcome {
    pub machine: String,
    pub component: String,
    /// The life's failure time in the ground truth.
    pub due_at: UnixMs,
    /// When the life ended: at `due_at` when it failed, earlier when replaced.
    pub ended_at: UnixMs,
    /// Hours from the first offer with a window before `due_at` to `due_at`.
    pub lead_h: Option<f64>,
    /// With no offer in time: hours from `due_at` to the first offer's window
    /// (`None`: no offer at all).
    pub late_by_h: Option<f64>,
}

/// Every life whose failure time falls in `[from, to)`, with what the platform
/// offered for it while it was installed; oldest due first.
pub fn due_outcomes(
    truth: &GroundTruth,
    offers: &[OfferRecord],
    from: UnixMs,
    to: UnixMs,
) -> Vec<DueOutcome> {
    let mut out = Vec::new();
    for ((machine, component), v) in &lives_by_component(truth) {
        for (i, life) in v.iter().enumerate() {
            if !(from <= life.fails_at && life.fails_at < to) {
                continue;
            }
            let ended_at = v
                .get(i + 1)
                .map_or(life.fails_at, |next| next.installed_at.min(life.fails_at));
            let made: Vec<&OfferRecord> = offers_of(offers, machine, component, life)
                .into_iter()
                .filter(|o| o.created_at < ended_at)
                .collect();
            let first_in_time = made.iter().find(|o| o.window_start < life.fails_at);
            out.push(DueOutcome {
                machine: machine.to_string(),
                component: component.to_string(),
                due_at: life.fails_at,
                ended_at,
                lead_h: first_in_time.map(|o| o.created_at.hours_until(life.fails_at)),
                late_by_h: match first_in_time {
                    Some(_) => None,
                    None => made
                        .first()
                        .map(|o| life.fails_at.hours_until(o.window_start)),
                },
            });
        }
    }
    out.sort_by(|a, b| {
        (a.due_at, &a.machine, &a.component).cmp(&(b.due_at, &b.machine, &b.component))
    });
    out
}

/// The steady-state figures over `[from, to)`: failures that happened, and failures
/// that came due (see [`SteadyScore::due`]). `observed(machine, from, to)` says
/// whether the machine sent any telemetry in `[from, to)`.
pub fn steady_state(
    truth: &GroundTruth,
    offers: &[OfferRecord],
    from: UnixMs,
    to: UnixMs,
    rule: SteadyStateRule,
    observed: impl Fn(&str, UnixMs, UnixMs) -> bool,
) -> SteadyScore {
    let warm_until = from.plus_hours(rule.warm_up_h);
    let mut s = SteadyScore::default();
    let mut leads = Vec::new();
    for f in failure_outcomes(truth, offers, from, to) {
        if f.at < warm_until {
            s.excluded_warm_up += 1;
        } else if !observed(&f.machine, f.at.plus_hours(-rule.silent_h), f.at) {
            s.excluded_unobservable += 1;
        } else {
            s.failures += 1;
            match f.lead_h {
                Some(lead) => {
                    s.failures_with_offer_in_time += 1;
                    leads.push(lead);
                }
                None => s.misses.push(f),
            }
        }
    }
    s.share_offered_in_time =
        (s.failures > 0).then(|| s.failures_with_offer_in_time as f64 / s.failures as f64);
    leads.sort_by(f64::total_cmp);
    s.lead_time_median_h = quantile(&leads, 0.5);

    for d in due_outcomes(truth, offers, warm_until, to) {
        if !observed(
            &d.machine,
            d.ended_at.plus_hours(-rule.silent_h),
            d.ended_at,
        ) {
            s.due_excluded_unobservable += 1;
            continue;
        }
        s.due += 1;
        if d.lead_h.is_some() {
            s.due_with_offer_in_time += 1;
        } else {
            s.due_misses.push(d);
        }
    }
    s.share_due_offered_in_time =
        (s.due > 0).then(|| s.due_with_offer_in_time as f64 / s.due as f64);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = UnixMs::HOUR;

    fn life(machine: &str, installed: i64, onset: i64, fails: i64) -> String {
        format!(
            r#"{{"record":"life","tenant":"t","machine":"{machine}","component":"brg","part":"p","installed_at":{},"onset_at":{},"fails_at":{},"mode":"bearing_spall"}}"#,
            installed * H,
            onset * H,
            fails * H
        )
    }

    fn failure(machine: &str, at: i64) -> String {
        format!(
            r#"{{"record":"failure","machine":"{machine}","component":"brg","at":{}}}"#,
            at * H
        )
    }

    fn offer(machine: &str, created: i64, window: i64) -> OfferRecord {
        OfferRecord {
            machine: machine.into(),
            components: vec!["brg".into()],
            status: "proposed".into(),
            window_start: UnixMs(window * H),
            created_at: UnixMs(created * H),
        }
    }

    #[test]
    fn failures_offers_lead_times_and_early_replacements_are_counted() {
        let text = [
            life("m1", 0, 600, 1000),
            failure("m1", 1000),
            life("m2", 0, 500, 900),
            failure("m2", 900),
            // m3's part is replaced at 300 h though it would have lasted to 1000 h.
            life("m3", 0, 700, 1000),
            life("m3", 300, 900, 1500),
        ]
        .join("\n");
        let truth = parse_truth(&text).unwrap();
        let offers = [
            offer("m1", 800, 900), // in time: 200 h lead, window 100 h before
            offer("m2", 850, 950), // window after the failure: too late
            offer("m3", 100, 200), // at 200 h the part had 80% of its life left
        ];
        let s = score(&truth, &offers, UnixMs(0), UnixMs(2000 * H));
        assert_eq!((s.failures, s.failures_with_offer_in_time), (2, 1));
        assert_eq!(s.share_offered_in_time, 0.5);
        assert_eq!(s.lead_time_median_h, Some(200.0));
        assert_eq!(s.window_margin_median_h, Some(100.0));
        assert_eq!((s.replacements, s.replacements_over_half_life_left), (1, 1));
        assert_eq!(s.offered_lives, 3);
        assert_eq!(s.offered_over_half_life_left, 1);
        assert_eq!(s.offers_before_onset, 1);
    }

    #[test]
    fn offers_are_read_from_the_api_shape_and_bad_truth_lines_are_named() {
        let json = serde_json::json!([{
            "machine": "m1", "status": "accepted",
            "window_start": "2026-11-22T06:00:00Z", "created_at": "2026-11-20T06:00:00Z",
            "components": [{"component": "brg"}, {"component": "belt"}]
        }]);
        let o = parse_offers(&json).unwrap();
        assert_eq!(o[0].components, ["brg", "belt"]);
        assert_eq!(o[0].created_at.hours_until(o[0].window_start), 48.0);
        let e = parse_truth("{\"record\":\"life\"}\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn the_steady_state_leaves_out_the_warm_up_and_silent_machines_and_says_so() {
        let text = [
            life("m1", 0, 10, 50), // fails during the warm-up
            failure("m1", 50),
            life("m2", 0, 300, 500), // after the warm-up, silent machine
            failure("m2", 500),
            life("m3", 0, 300, 600), // counted, offered in time
            failure("m3", 600),
            life("m4", 0, 300, 700), // counted, offered too late
            failure("m4", 700),
        ]
        .join("\n");
        let truth = parse_truth(&text).unwrap();
        let offers = [
            offer("m1", 20, 60),
            offer("m3", 400, 550),
            offer("m4", 650, 710),
        ];
        let rule = SteadyStateRule {
            warm_up_h: 100.0,
            silent_h: 168.0,
        };
        let observed = |m: &str, from: UnixMs, to: UnixMs| {
            assert_eq!(from.hours_until(to), 168.0);
            m != "m2"
        };
        let s = steady_state(&truth, &offers, UnixMs(0), UnixMs(2000 * H), rule, observed);
        assert_eq!((s.excluded_warm_up, s.excluded_unobservable), (1, 1));
        assert_eq!((s.failures, s.failures_with_offer_in_time), (2, 1));
        assert_eq!(s.share_offered_in_time, Some(0.5));
        assert_eq!(s.lead_time_median_h, Some(200.0));
        assert_eq!(s.misses.len(), 1);
        assert_eq!(s.misses[0].machine, "m4");
        assert_eq!(s.misses[0].late_by_h, Some(10.0));
        // The raw figure still counts all four.
        let raw = score(&truth, &offers, UnixMs(0), UnixMs(2000 * H));
        assert_eq!((raw.failures, raw.failures_with_offer_in_time), (4, 1));
        assert_eq!(SteadyStateRule::for_lead_time(10.0).warm_up_h, 17.0 * 24.0);
        // Due: the same lives, as none was replaced early.
        assert_eq!((s.due, s.due_with_offer_in_time), (2, 1));
        assert_eq!(s.due_excluded_unobservable, 1);
        assert_eq!(s.due_misses[0].machine, "m4");
    }

    #[test]
    fn failures_that_came_due_count_the_ones_a_replacement_prevented() {
        let text = [
            // m1: offered at 300 for a window at 400, replaced at 410; it would have
            // failed at 600. Served in time, though no failure happened.
            life("m1", 0, 200, 600),
            life("m1", 410, 900, 5000),
            // m2: replaced at 500 without an offer made in its life before that (the
            // offer at 520 belongs to the next life), due at 700: a miss.
            life("m2", 0, 300, 700),
            life("m2", 500, 900, 5000),
            // m3: failed at 800 with the only offer's window after it: a miss, late 50 h.
            life("m3", 0, 400, 800),
            failure("m3", 800),
            // m4: due after the scored period.
            life("m4", 0, 400, 3000),
            // m5: due during the warm-up.
            life("m5", 0, 10, 50),
            failure("m5", 50),
        ]
        .join("\n");
        let truth = parse_truth(&text).unwrap();
        let offers = [
            offer("m1", 300, 400),
            offer("m2", 520, 690),
            offer("m3", 700, 850),
        ];
        let rule = SteadyStateRule {
            warm_up_h: 100.0,
            silent_h: 168.0,
        };
        let asked = std::cell::RefCell::new(Vec::new());
        let s = steady_state(
            &truth,
            &offers,
            UnixMs(0),
            UnixMs(2000 * H),
            rule,
            |m, _, to| {
                asked.borrow_mut().push((m.to_string(), to));
                true
            },
        );
        assert_eq!((s.due, s.due_with_offer_in_time), (3, 1), "{s:#?}");
        assert_eq!(s.share_due_offered_in_time, Some(1.0 / 3.0));
        let missed: Vec<(&str, UnixMs, Option<f64>)> = s
            .due_misses
            .iter()
            .map(|d| (d.machine.as_str(), d.ended_at, d.late_by_h))
            .collect();
        assert_eq!(
            missed,
            [
                ("m2", UnixMs(500 * H), None),
                ("m3", UnixMs(800 * H), Some(50.0))
            ]
        );
        // Observability is asked at the end of each due life (m1 at its replacement).
        let asked = asked.into_inner();
        assert!(
            asked.contains(&("m1".to_string(), UnixMs(410 * H))),
            "{asked:?}"
        );
        // Only m3's failure happened, and it was missed.
        assert_eq!((s.failures, s.failures_with_offer_in_time), (1, 0));
    }
}
