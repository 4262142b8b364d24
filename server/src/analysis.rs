//! The model cycle: refresh the estimates of components that received data.
//! [`run_cycle`] is one step (tests drive it directly); the server calls it on a timer,
//! followed by the planning step (`crate::planning`).

use std::time::Instant;

use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::ComponentSpec;

use crate::model::{ComponentHistory, HiPoint, channel_health_index, estimate};
use crate::store::{ChannelBucket, Store, StoreError};

#[derive(Clone, Debug)]
pub struct AnalysisSettings {
    /// Telemetry windows are averaged into buckets of this size before modelling, so
    /// the model's input is bounded whatever the gateway's window size.
    pub bucket_ms: i64,
    /// How much history the model reads.
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
}

/// Fuses the channel buckets of one component into its health-index history: each wear
/// channel on its healthy→failure scale, averaged over the channels present.
pub fn fuse_health_index(buckets: &[ChannelBucket], spec: &ComponentSpec) -> Vec<HiPoint> {
    let mut points: Vec<HiPoint> = Vec::new();
    let mut acc: Option<(UnixMs, f64, usize)> = None;
    for b in buckets {
        let Some(wear) = spec
            .wear_channels
            .iter()
            .find(|w| b.channel.split_once('.').map(|(_, q)| q) == Some(w.quantity.as_str()))
        else {
            continue;
        };
        let hi = channel_health_index(b.mean, wear);
        match &mut acc {
            Some((t, sum, n)) if *t == b.start => {
                *sum += hi;
                *n += 1;
            }
            _ => {
                if let Some((t, sum, n)) = acc.take() {
                    points.push(HiPoint {
                        t,
                        hi: sum / n as f64,
                    });
                }
                acc = Some((b.start, hi, 1));
            }
        }
    }
    if let Some((t, sum, n)) = acc {
        points.push(HiPoint {
            t,
            hi: sum / n as f64,
        });
    }
    points
}

/// One model step at `now`.
pub async fn run_cycle(
    store: &Store,
    now: UnixMs,
    settings: &AnalysisSettings,
) -> Result<CycleReport, StoreError> {
    let started = Instant::now();
    let mut report = CycleReport::default();

    for (machine, data_version) in store.stale_machines().await? {
        let mut estimates = Vec::new();
        for c in store.model_components(&machine).await? {
            let since = UnixMs(c.installed_at.0.max(now.0 - settings.history_ms));
            let buckets = store
                .component_buckets(&machine, c.spec.key.as_str(), since, settings.bucket_ms)
                .await?;
            let points = fuse_health_index(&buckets, &c.spec);
            let history = ComponentHistory {
                points: &points,
                installed_at: c.installed_at,
                failed_at: c.failed_at,
                prior: c.prior,
            };
            estimates.push((c.spec.key.to_string(), estimate(&history, now)));
        }
        report.components_refreshed += estimates.len() as u64;
        store
            .save_estimates(&machine, data_version, &estimates)
            .await?;
    }

    metrics::histogram!("wearcast_model_cycle_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("wearcast_model_estimates_total").increment(report.components_refreshed);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearcast_protocol::registry::WearChannelSpec;

    #[test]
    fn channels_are_fused_per_bucket_on_their_own_scales() {
        let spec = ComponentSpec {
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
        };
        let b = |channel: &str, start, mean| ChannelBucket {
            channel: channel.into(),
            start: UnixMs(start),
            mean,
        };
        let buckets = [
            b("pump.current", 0, 6.0), // 0.2
            b("pump.flow", 0, 30.0),   // 0.5
            b("pump.noise", 0, 99.0),  // not a wear channel
            b("pump.flow", 10, 20.0),  // 1.0 (current missing in this bucket)
        ];
        let points = fuse_health_index(&buckets, &spec);
        assert_eq!(points.len(), 2);
        assert!((points[0].hi - 0.35).abs() < 1e-12, "{:?}", points[0]);
        assert!((points[1].hi - 1.0).abs() < 1e-12);
    }
}
