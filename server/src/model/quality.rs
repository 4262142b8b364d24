//! How good the live model's predictions turned out to be, scored against the lives
//! that ended (pure; the store supplies the rows).
//!
//! The analysis cycle samples each component's estimate once a day (P10/P50/P90 and the
//! status, `model_predictions`). When a life ends, every prediction made during it can
//! be scored:
//!
//! - **A life that ended in a failure** gives the truth, `ended_at − at`. A prediction's
//!   P10–P90 interval either *contains* it, or the part failed *before P10* (the model
//!   was late: the dangerous miss), or *after P90* (early: parts sold with life left).
//!   An honest 80% interval contains the truth 70–90% of the time. The P50's absolute
//!   error is reported in hours and relative to the truth.
//! - **A life that ended in a planned replacement** is right-censored: the part would
//!   have lasted at least until it was replaced. Only one miss can be seen: the part
//!   *outlived P90* (`at + P90 < replaced`), an interval that was surely too early.
//!
//! Scores are kept apart by the status the prediction was made in: a healthy part's
//! interval comes from the fleet life, a degrading or critical one's from its own trend;
//! mixing them would hide how the trend does.

use serde::Serialize;
use wearcast_protocol::UnixMs;

/// One sampled prediction of a life that has ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPrediction {
    /// `healthy`, `degrading` or `critical`.
    pub status: String,
    pub part: String,
    pub at: UnixMs,
    pub p10_h: Option<f64>,
    pub p50_h: Option<f64>,
    /// `None`: beyond any bound the data supported (an unbounded upper tail).
    pub p90_h: Option<f64>,
    pub ended_at: UnixMs,
    /// The life ended in a failure (else in a replacement before failure).
    pub failed: bool,
}

/// One ended life, for the warning figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EndedLifeSummary {
    pub part: String,
    pub ended_at: UnixMs,
    pub failed: bool,
    /// When the model first raised its degradation alarm in that life.
    pub alarm_at: Option<UnixMs>,
}

/// Interval calibration and accuracy over one group of predictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IntervalScore {
    /// Predictions of lives that failed: the ones with a known truth.
    pub scored: u64,
    /// Share of `scored` whose P10–P90 contained the truth (target 0.7–0.9).
    pub inside: Option<f64>,
    /// Share that failed before P10: warned too late.
    pub before_p10: Option<f64>,
    /// Share that failed after P90: warned too early.
    pub after_p90: Option<f64>,
    /// Median |P50 − truth| in hours, and relative to the truth.
    pub p50_abs_error_h: Option<f64>,
    pub p50_rel_error: Option<f64>,
    /// Predictions of lives replaced before failure.
    pub censored: u64,
    /// Share of `censored` whose part outlived at + P90 (an interval surely too early).
    pub outlived_p90: Option<f64>,
}

/// What the ended lives say about the warning the model gave.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WarningScore {
    pub failures: u64,
    /// Failures the model had raised its alarm for before they happened.
    pub warned: u64,
    /// Median hours from alarm to failure, over the warned failures.
    pub median_lead_h: Option<f64>,
    pub replacements: u64,
}

/// The whole report: overall, per prediction status and per part type.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelQuality {
    pub warnings: WarningScore,
    /// Every sampled prediction together.
    pub overall: IntervalScore,
    /// Per status the prediction was made in: `healthy`, `degrading`, `critical`.
    pub by_status: Vec<StatusQuality>,
    /// Per part type: (part, warnings, predictions made while degrading or critical).
    pub by_part: Vec<PartQuality>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusQuality {
    pub status: String,
    #[serde(flatten)]
    pub score: IntervalScore,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PartQuality {
    pub part: String,
    pub warnings: WarningScore,
    /// Predictions made while the part was degrading or critical (its own trend).
    pub from_signal: IntervalScore,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

fn share(k: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| k as f64 / n as f64)
}

/// Scores `predictions` (each of an ended life, made before it ended).
pub fn interval_score<'a>(
    predictions: impl IntoIterator<Item = &'a ScoredPrediction>,
) -> IntervalScore {
    let (mut scored, mut inside, mut before, mut after) = (0u64, 0u64, 0u64, 0u64);
    let (mut censored, mut outlived) = (0u64, 0u64);
    let (mut abs_err, mut rel_err) = (Vec::new(), Vec::new());
    for p in predictions {
        let truth = p.at.hours_until(p.ended_at);
        if truth < 0.0 {
            continue;
        }
        let p10 = p.p10_h.unwrap_or(0.0);
        let p90 = p.p90_h.unwrap_or(f64::INFINITY);
        if p.failed {
            scored += 1;
            if truth < p10 {
                before += 1;
            } else if truth > p90 {
                after += 1;
            } else {
                inside += 1;
            }
            if let Some(p50) = p.p50_h {
                abs_err.push((p50 - truth).abs());
                if truth > 0.0 {
                    rel_err.push((p50 - truth).abs() / truth);
                }
            }
        } else {
            censored += 1;
            if truth > p90 {
                outlived += 1;
            }
        }
    }
    IntervalScore {
        scored,
        inside: share(inside, scored),
        before_p10: share(before, scored),
        after_p90: share(after, scored),
        p50_abs_error_h: median(abs_err),
        p50_rel_error: median(rel_err),
        censored,
        outlived_p90: share(outlived, censored),
    }
}

/// Scores the warning the model gave over `lives`.
pub fn warning_score<'a>(lives: impl IntoIterator<Item = &'a EndedLifeSummary>) -> WarningScore {
    let mut s = WarningScore::default();
    let mut leads = Vec::new();
    for l in lives {
        if !l.failed {
            s.replacements += 1;
            continue;
        }
        s.failures += 1;
        if let Some(alarm) = l.alarm_at.filter(|a| *a < l.ended_at) {
            s.warned += 1;
            leads.push(alarm.hours_until(l.ended_at));
        }
    }
    s.median_lead_h = median(leads);
    s
}

const STATUSES: [&str; 3] = ["healthy", "degrading", "critical"];

fn from_signal(p: &ScoredPrediction) -> bool {
    p.status == "degrading" || p.status == "critical"
}

/// The report over `predictions` and `lives` (both of the same ended lives).
pub fn model_quality(predictions: &[ScoredPrediction], lives: &[EndedLifeSummary]) -> ModelQuality {
    let mut parts: Vec<&str> = lives
        .iter()
        .map(|l| l.part.as_str())
        .chain(predictions.iter().map(|p| p.part.as_str()))
        .collect();
    parts.sort_unstable();
    parts.dedup();
    ModelQuality {
        warnings: warning_score(lives),
        overall: interval_score(predictions),
        by_status: STATUSES
            .iter()
            .map(|s| StatusQuality {
                status: (*s).to_owned(),
                score: interval_score(predictions.iter().filter(|p| p.status == *s)),
            })
            .collect(),
        by_part: parts
            .into_iter()
            .map(|part| PartQuality {
                part: part.to_owned(),
                warnings: warning_score(lives.iter().filter(|l| l.part == part)),
                from_signal: interval_score(
                    predictions
                        .iter()
                        .filter(|p| p.part == part && from_signal(p)),
                ),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMs = UnixMs(1_800_000_000_000);

    fn prediction(
        status: &str,
        at_h: f64,
        q: [f64; 3],
        ended_h: f64,
        failed: bool,
    ) -> ScoredPrediction {
        ScoredPrediction {
            status: status.into(),
            part: "brg".into(),
            at: T0.plus_hours(at_h),
            p10_h: Some(q[0]),
            p50_h: Some(q[1]),
            p90_h: Some(q[2]),
            ended_at: T0.plus_hours(ended_h),
            failed,
        }
    }

    #[test]
    fn a_failure_is_inside_before_p10_or_after_p90_of_each_prediction() {
        // Failure at 100 h: truths 100, 60 and 20 h.
        let p = [
            prediction("degrading", 0.0, [80.0, 100.0, 130.0], 100.0, true), // inside
            prediction("degrading", 40.0, [70.0, 90.0, 120.0], 100.0, true), // before P10
            prediction("critical", 80.0, [5.0, 10.0, 15.0], 100.0, true),    // after P90
            prediction("critical", 90.0, [5.0, 10.0, 15.0], 100.0, true),    // inside (10 h)
        ];
        let s = interval_score(&p);
        assert_eq!(s.scored, 4);
        assert_eq!(s.inside, Some(0.5));
        assert_eq!(s.before_p10, Some(0.25));
        assert_eq!(s.after_p90, Some(0.25));
        // |P50 − truth|: 0, 30, 10, 0 → median 5.
        assert_eq!(s.p50_abs_error_h, Some(5.0));
        assert_eq!(s.censored, 0);
        assert_eq!(s.outlived_p90, None);
    }

    #[test]
    fn a_replacement_only_shows_intervals_the_part_outlived() {
        let p = [
            prediction("degrading", 0.0, [10.0, 20.0, 30.0], 50.0, false), // outlived P90
            prediction("degrading", 0.0, [40.0, 60.0, 90.0], 50.0, false), // cannot tell
        ];
        let s = interval_score(&p);
        assert_eq!((s.scored, s.censored), (0, 2));
        assert_eq!(s.outlived_p90, Some(0.5));
        assert_eq!(s.inside, None, "no truth, no calibration");
    }

    #[test]
    fn an_unbounded_p90_contains_any_late_failure_and_a_prediction_after_the_end_is_ignored() {
        let mut open = prediction("degrading", 0.0, [10.0, 20.0, 0.0], 500.0, true);
        open.p90_h = None;
        let after_end = prediction("degrading", 600.0, [1.0, 2.0, 3.0], 500.0, true);
        let s = interval_score(&[open, after_end]);
        assert_eq!((s.scored, s.inside), (1, Some(1.0)));
    }

    #[test]
    fn warnings_count_failures_alarmed_before_they_happened_and_their_lead() {
        let life = |ended_h: f64, failed: bool, alarm_h: Option<f64>| EndedLifeSummary {
            part: "brg".into(),
            ended_at: T0.plus_hours(ended_h),
            failed,
            alarm_at: alarm_h.map(|h| T0.plus_hours(h)),
        };
        let w = warning_score(&[
            life(100.0, true, Some(40.0)),  // 60 h lead
            life(100.0, true, Some(80.0)),  // 20 h lead
            life(100.0, true, None),        // unwarned
            life(100.0, true, Some(120.0)), // alarm after the failure: unwarned
            life(100.0, false, Some(50.0)), // a replacement
        ]);
        assert_eq!((w.failures, w.warned, w.replacements), (4, 2, 1));
        assert_eq!(w.median_lead_h, Some(40.0));
    }

    #[test]
    fn the_report_keeps_statuses_and_parts_apart() {
        let mut other = prediction("healthy", 0.0, [500.0, 900.0, 1500.0], 100.0, true);
        other.part = "seal".into();
        let p = [
            prediction("degrading", 0.0, [80.0, 100.0, 130.0], 100.0, true),
            other,
        ];
        let q = model_quality(&p, &[]);
        assert_eq!(q.overall.scored, 2);
        let healthy = &q
            .by_status
            .iter()
            .find(|s| s.status == "healthy")
            .unwrap()
            .score;
        assert_eq!((healthy.scored, healthy.before_p10), (1, Some(1.0)));
        let seal = q.by_part.iter().find(|p| p.part == "seal").unwrap();
        assert_eq!(
            seal.from_signal.scored, 0,
            "a healthy prediction is not the trend's"
        );
        let brg = q.by_part.iter().find(|p| p.part == "brg").unwrap();
        assert_eq!(brg.from_signal.inside, Some(1.0));
    }
}
