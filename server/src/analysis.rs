//! The model cycle: refresh the estimates of components that received data.
//! [`run_cycle`] is one step (tests drive it directly); the server calls it on a timer,
//! followed by the planning step (`crate::planning`).
//!
//! Each component keeps its live-model state ([`ComponentState`]) in the store between
//! cycles; a cycle reads only the telemetry buckets after the last one the state has
//! seen and folds them in, O(1) work per bucket, so the cost of a cycle follows the new
//! data, not the history. The newest bucket waits until it is complete (its end is a
//! bucket's length in the past). A replacement (a new install time) ends the old life,
//! which is recorded for the fleet, and starts a new state; when a life ends, what the
//! fleet knows about its part type is re-learned (until then it is the manifest's
//! prior).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::ComponentSpec;

use crate::model::online::{BucketReading, ChannelScale};
use crate::model::{ComponentState, FleetKnowledge, HiPoint, RulEstimate};
use crate::store::{ChannelBucket, EndedLife, ModelComponent, Store, StoreError};

/// Operating-condition channels live under this component.
const OPERATING: &str = wearcast_protocol::channel::OPERATING_COMPONENT;

#[derive(Clone, Debug)]
pub struct AnalysisSettings {
    /// Telemetry windows are averaged into buckets of this size before modelling, so
    /// the model's input is bounded whatever the gateway's window size.
    pub bucket_ms: i64,
    /// How much history a component's first cycle reads (later cycles read only what
    /// is new).
    pub history_ms: i64,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            bucket_ms: UnixMs::HOUR,
            history_ms: 60 * UnixMs::DAY,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub components_refreshed: u64,
    /// Telemetry buckets folded into component states.
    pub buckets_folded: u64,
    /// Lives that ended (replacements seen) this cycle.
    pub lives_ended: u64,
    pub anomalies: u64,
}

/// The wear channels of a component on their health scales (machine-model defaults:
/// every channel weighs the same).
pub fn channel_scales(spec: &ComponentSpec) -> Vec<ChannelScale> {
    spec.wear_channels
        .iter()
        .map(|w| ChannelScale {
            quantity: w.quantity.clone(),
            healthy: w.healthy,
            failure: w.failure,
            weight: 1.0,
        })
        .collect()
}

/// The operating values per bucket start.
pub type OperatingBuckets = BTreeMap<UnixMs, Vec<(String, f64)>>;

pub fn operating_buckets(buckets: &[ChannelBucket]) -> OperatingBuckets {
    let mut out: OperatingBuckets = BTreeMap::new();
    for b in buckets {
        out.entry(b.start)
            .or_default()
            .push((b.channel.clone(), b.mean));
    }
    out
}

/// Groups one component's channel buckets into readings, oldest first: each wear
/// channel's mean in the order of `scales` (NaN where missing), with the operating
/// values of the same bucket. Channels that are not wear channels are left out.
pub fn readings(
    buckets: &[ChannelBucket],
    scales: &[ChannelScale],
    operating: &OperatingBuckets,
) -> Vec<BucketReading> {
    let mut by_start: BTreeMap<UnixMs, Vec<f64>> = BTreeMap::new();
    for b in buckets {
        let quantity = b.channel.split_once('.').map(|(_, q)| q);
        let Some(c) = scales
            .iter()
            .position(|s| Some(s.quantity.as_str()) == quantity)
        else {
            continue;
        };
        by_start
            .entry(b.start)
            .or_insert_with(|| vec![f64::NAN; scales.len()])[c] = b.mean;
    }
    by_start
        .into_iter()
        .map(|(t, wear)| BucketReading {
            t,
            wear,
            op: operating.get(&t).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The readings that are complete at `now`: all but the newest, which counts once its
/// bucket ended a bucket's length ago (late windows may still be on their way).
pub fn complete(
    mut readings: Vec<BucketReading>,
    now: UnixMs,
    bucket_ms: i64,
) -> Vec<BucketReading> {
    if readings
        .last()
        .is_some_and(|r| r.t.0 + 2 * bucket_ms > now.0)
    {
        readings.pop();
    }
    readings
}

/// Called with a machine and its estimates (component, estimate) once they are stored.
pub type SavedEstimates<'a> = dyn FnMut(&str, &[(String, RulEstimate)]) + Send + 'a;

/// One model step at `now`.
pub async fn run_cycle(
    store: &Store,
    now: UnixMs,
    settings: &AnalysisSettings,
) -> Result<CycleReport, StoreError> {
    run_cycle_observed(store, now, settings, &mut |_, _| {}).await
}

/// [`run_cycle`], telling `on_saved` each machine's estimates once they are stored (the
/// server copies them to its sinks).
pub async fn run_cycle_observed(
    store: &Store,
    now: UnixMs,
    settings: &AnalysisSettings,
    on_saved: &mut SavedEstimates<'_>,
) -> Result<CycleReport, StoreError> {
    let started = Instant::now();
    let mut report = CycleReport::default();
    let mut knowledge = store.part_knowledge().await?;
    let mut ended_parts: HashSet<String> = HashSet::new();

    for (machine, data_version) in store.stale_machines().await? {
        let components = store.model_components(&machine).await?;
        let mut states = store.model_states(&machine).await?;
        // Where each component's new data starts.
        let mut plans = Vec::with_capacity(components.len());
        for c in components {
            let key = c.spec.key.to_string();
            let state = match states.remove(&key) {
                Some(s) if s.installed_at == c.installed_at => s,
                old => {
                    if let Some(old) = old.filter(|o| o.first_bucket.is_some()) {
                        end_life(store, &machine, &c, &old).await?;
                        ended_parts.insert(c.spec.part.to_string());
                        report.lives_ended += 1;
                    }
                    ComponentState::new(c.installed_at)
                }
            };
            let since = match state.last_bucket {
                Some(t) => t.plus_ms(settings.bucket_ms),
                None => UnixMs(c.installed_at.0.max(now.0 - settings.history_ms)),
            };
            plans.push((c, key, state, since));
        }
        let Some(earliest) = plans.iter().map(|p| p.3).min() else {
            continue;
        };
        let operating = operating_buckets(
            &store
                .component_buckets(&machine, OPERATING, earliest, settings.bucket_ms)
                .await?,
        );

        let mut estimates: Vec<(String, RulEstimate)> = Vec::with_capacity(plans.len());
        let mut saved: Vec<(String, ComponentState)> = Vec::with_capacity(plans.len());
        for (c, key, mut state, since) in plans {
            let scales = channel_scales(&c.spec);
            let buckets = store
                .component_buckets(&machine, &key, since, settings.bucket_ms)
                .await?;
            let before = state.anomaly.as_ref().map(|a| a.at);
            for r in complete(
                readings(&buckets, &scales, &operating),
                now,
                settings.bucket_ms,
            ) {
                state.update(&r, &scales, settings.bucket_ms);
                report.buckets_folded += 1;
            }
            if let Some(a) = &state.anomaly
                && Some(a.at) != before
            {
                store.record_anomaly(&machine, &key, a).await?;
                report.anomalies += 1;
            }
            let fleet = knowledge
                .get(c.spec.part.as_str())
                .copied()
                .unwrap_or_else(|| FleetKnowledge::from_prior(c.prior));
            estimates.push((key.clone(), state.estimate(now, &fleet, c.failed_at)));
            saved.push((key, state));
        }
        report.components_refreshed += estimates.len() as u64;
        store.save_model_states(&machine, &saved, now).await?;
        store
            .save_estimates(&machine, data_version, &estimates)
            .await?;
        on_saved(&machine, &estimates);
    }

    // What the fleet knows changes when a life ends (until the first does, a part
    // type's knowledge is its manifest prior).
    for part in ended_parts {
        let k = store.refit_part_knowledge(&part, now).await?;
        knowledge.insert(part, k);
    }

    metrics::histogram!("wearcast_model_cycle_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("wearcast_model_estimates_total").increment(report.components_refreshed);
    metrics::counter!("wearcast_model_buckets_total").increment(report.buckets_folded);
    metrics::counter!("wearcast_model_anomalies_total").increment(report.anomalies);
    Ok(report)
}

/// One component's health-index history for display: the current install's buckets
/// (at most `settings.history_ms` back from `now`) folded through a fresh live-model
/// state, the index read after each bucket. Read-only: the stored state and estimate are
/// untouched, and the same functions as [`run_cycle`] compute it, so the history a
/// dashboard draws is the one the model saw (up to where its state began, when an
/// install is older than `history_ms`).
pub async fn health_history(
    store: &Store,
    machine: &str,
    now: UnixMs,
    settings: &AnalysisSettings,
) -> Result<Vec<(String, Vec<HiPoint>)>, StoreError> {
    let components = store.model_components(machine).await?;
    let since_of = |c: &ModelComponent| UnixMs(c.installed_at.0.max(now.0 - settings.history_ms));
    let Some(earliest) = components.iter().map(since_of).min() else {
        return Ok(Vec::new());
    };
    let operating = operating_buckets(
        &store
            .component_buckets(machine, OPERATING, earliest, settings.bucket_ms)
            .await?,
    );
    let mut out = Vec::with_capacity(components.len());
    for c in &components {
        let key = c.spec.key.to_string();
        let scales = channel_scales(&c.spec);
        let buckets = store
            .component_buckets(machine, &key, since_of(c), settings.bucket_ms)
            .await?;
        let mut state = ComponentState::new(c.installed_at);
        let mut points = Vec::new();
        for r in complete(
            readings(&buckets, &scales, &operating),
            now,
            settings.bucket_ms,
        ) {
            let before = state.buckets;
            state.update(&r, &scales, settings.bucket_ms);
            if state.buckets > before {
                points.push(HiPoint {
                    t: r.t,
                    hi: state.health_index_now(),
                });
            }
        }
        out.push((key, points));
    }
    Ok(out)
}

/// Records the life that `old` watched, which ended when `c` was installed.
async fn end_life(
    store: &Store,
    machine: &str,
    c: &ModelComponent,
    old: &ComponentState,
) -> Result<(), StoreError> {
    let key = c.spec.key.as_str();
    let ended_at = c.installed_at;
    let failure = store
        .failure_between(machine, key, old.installed_at, ended_at)
        .await?;
    store
        .record_ended_life(&EndedLife {
            machine: machine.to_owned(),
            component: key.to_owned(),
            part: c.spec.part.to_string(),
            installed_at: old.installed_at,
            ended_at: failure.unwrap_or(ended_at),
            observed_from: old.first_bucket.unwrap_or(old.installed_at),
            failed: failure.is_some(),
            onset_at: old.onset_at(),
            alarm_at: old.alarm_at(),
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::registry::WearChannelSpec;

    fn spec() -> ComponentSpec {
        ComponentSpec {
            key: "pump".parse().unwrap(),
            name: "Pump".into(),
            part: "p".parse().unwrap(),
            wear_channels: vec![
                WearChannelSpec {
                    quantity: "flow".into(),
                    unit: "l/min".into(),
                    healthy: 40.0,
                    failure: 20.0,
                },
                WearChannelSpec {
                    quantity: "current".into(),
                    unit: "A".into(),
                    healthy: 5.0,
                    failure: 10.0,
                },
            ],
        }
    }

    fn b(channel: &str, start: i64, mean: f64) -> ChannelBucket {
        ChannelBucket {
            channel: channel.into(),
            start: UnixMs(start),
            mean,
        }
    }

    #[test]
    fn buckets_become_readings_in_wear_channel_order_with_their_operating_values() {
        let scales = channel_scales(&spec());
        let operating = operating_buckets(&[b("op.load_pct", 0, 70.0), b("op.load_pct", 10, 35.0)]);
        let buckets = [
            b("pump.current", 0, 6.0),
            b("pump.flow", 0, 30.0),
            b("pump.noise", 0, 99.0), // not a wear channel
            b("pump.flow", 10, 20.0), // current missing in this bucket
        ];
        let r = readings(&buckets, &scales, &operating);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].wear, [30.0, 6.0]);
        assert_eq!(r[0].op, [("op.load_pct".to_string(), 70.0)]);
        assert_eq!(r[1].wear[0], 20.0);
        assert!(r[1].wear[1].is_nan());
        assert_eq!(r[1].op[0].1, 35.0);
    }

    #[test]
    fn the_newest_bucket_waits_until_it_is_complete() {
        let hour = UnixMs::HOUR;
        let reading = |h: i64| BucketReading {
            t: UnixMs(h * hour),
            wear: vec![1.0],
            op: vec![],
        };
        let rs = vec![reading(0), reading(1), reading(2)];
        // At 02:30 the 02:00 bucket is still filling.
        assert_eq!(
            complete(rs.clone(), UnixMs(2 * hour + hour / 2), hour).len(),
            2
        );
        // At 04:00 it has been over for an hour.
        assert_eq!(complete(rs, UnixMs(4 * hour), hour).len(), 3);
    }
}
