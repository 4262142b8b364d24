//! The live platform's engine run on the same history, for comparison: each unit's
//! learned health index is fed, row by row, to the incremental per-component model
//! ([`crate::model::online`]: CUSUM onset, recency-weighted trend with a fleet prior on
//! its slope, bounded by the fleet's Weibull life), whose warning interval (onset alarm
//! to failure) is learned from the training runs the same way. Time is the history's
//! own unit, read as hours.

use wearcast_protocol::UnixMs;

use crate::model::learner::{FleetWearModel, life_length};
use crate::model::runs::Run;
use crate::model::{ComponentState, FleetKnowledge, WarningInterval};

/// The instant a row's time stands for (its time as hours after an origin).
fn instant(t: f64) -> UnixMs {
    UnixMs(0).plus_hours(t)
}

fn replay(model: &FleetWearModel, run: &Run) -> ComponentState {
    let origin = run.time.first().copied().unwrap_or(0.0) - life_length(run) + run.span();
    let mut state = ComponentState::new(instant(origin));
    for (t, hi) in run.time.iter().zip(model.health_index(run)) {
        state.update_hi(instant(*t), hi);
    }
    state
}

/// What the live engine learns from the training runs: their Weibull life and the
/// warning interval its onset alarm gave before each failure.
pub fn fleet_knowledge(model: &FleetWearModel, train: &[Run]) -> Option<FleetKnowledge> {
    let life = model.life?;
    let warnings: Vec<f64> = train
        .iter()
        .filter_map(|run| {
            let alarm = replay(model, run).alarm_at()?;
            Some(alarm.hours_until(instant(*run.time.last()?)))
        })
        .collect();
    Some(FleetKnowledge {
        life,
        warning: WarningInterval::default_for(life).updated(&warnings),
    })
}

/// P10, P50, P90 (or the `level` interval's ends) of each test run's remaining life at
/// its last row, by the live engine.
pub fn predict(
    model: &FleetWearModel,
    fleet: &FleetKnowledge,
    test: &[Run],
    level: f64,
) -> Vec<(f64, f64, f64)> {
    test.iter()
        .map(|run| {
            let now = instant(run.time.last().copied().unwrap_or(0.0));
            let e = replay(model, run).estimate(now, fleet, None);
            let q = |q: f64| e.distribution.quantile_h(q).unwrap_or(f64::INFINITY);
            (q(0.5 - level / 2.0), q(0.5), q(0.5 + level / 2.0))
        })
        .collect()
}
