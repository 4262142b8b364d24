//! The gateway → server ingest batch (`POST /api/v1/ingest`): aggregated windows,
//! events and status changes, under a batch id that stays the same across retries so
//! the server stores a batch once however often it is sent.

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::event::{MachineEvent, StatusUpdate};
use crate::ids::{BatchId, GatewayId, MachineId, TenantId};
use crate::reject::RejectReason;
use crate::time::UnixMs;

/// Statistics of one channel of one machine over one fixed window `[start, end)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowAggregate {
    pub tenant: TenantId,
    pub machine: MachineId,
    pub channel: Channel,
    pub start: UnixMs,
    pub end: UnixMs,
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation (n − 1); 0 for a single sample.
    pub std: f64,
    /// The reading with the latest timestamp in the window, and that timestamp.
    pub last: f64,
    pub last_ts: UnixMs,
}

impl WindowAggregate {
    /// Sum of squared deviations from the mean, the mergeable form of `std`.
    pub fn m2(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.std * self.std * (self.count - 1) as f64
        }
    }

    /// Checks the statistics are consistent, so a corrupt window cannot enter storage.
    pub fn check(&self) -> Result<(), String> {
        let finite = [self.mean, self.min, self.max, self.std, self.last]
            .iter()
            .all(|v| v.is_finite());
        // Rounding in a streaming mean can put it a hair outside [min, max].
        let slack = 1e-9 * (self.max.abs() + self.min.abs() + 1.0);
        if self.count == 0 {
            Err("count is 0".into())
        } else if !finite {
            Err("a statistic is not finite".into())
        } else if self.end <= self.start {
            Err(format!(
                "end {} is not after start {}",
                self.end, self.start
            ))
        } else if self.min > self.max
            || self.mean < self.min - slack
            || self.mean > self.max + slack
        {
            Err(format!(
                "min {} ≤ mean {} ≤ max {} does not hold",
                self.min, self.mean, self.max
            ))
        } else if self.std < 0.0 {
            Err(format!("std {} is negative", self.std))
        } else if self.last_ts < self.start || self.last_ts >= self.end {
            Err(format!("last_ts {} is outside the window", self.last_ts))
        } else {
            Ok(())
        }
    }
}

/// One gateway → server delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    pub batch_id: BatchId,
    pub gateway: GatewayId,
    pub created_at: UnixMs,
    #[serde(default)]
    pub windows: Vec<WindowAggregate>,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
    #[serde(default)]
    pub statuses: Vec<StatusUpdate>,
}

impl IngestBatch {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.events.is_empty() && self.statuses.is_empty()
    }
}

/// Which list of a batch an item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Window,
    Event,
    Status,
}

/// An item of a batch the server refused (the rest of the batch is stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRejection {
    pub kind: ItemKind,
    pub index: usize,
    pub reason: RejectReason,
    pub detail: String,
}

/// The server's answer to an ingest: everything it did not reject is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub batch_id: BatchId,
    /// True if this batch id was stored before; nothing was stored again.
    pub duplicate: bool,
    pub windows_stored: u64,
    pub events_stored: u64,
    pub statuses_stored: u64,
    pub rejected: Vec<ItemRejection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> WindowAggregate {
        WindowAggregate {
            tenant: TenantId::parse("t").unwrap(),
            machine: MachineId::parse("m").unwrap(),
            channel: Channel::parse("a.b").unwrap(),
            start: UnixMs(0),
            end: UnixMs(60_000),
            count: 3,
            mean: 2.0,
            min: 1.0,
            max: 3.0,
            std: 1.0,
            last: 3.0,
            last_ts: UnixMs(59_000),
        }
    }

    #[test]
    fn consistent_windows_pass_and_inconsistent_ones_say_why() {
        assert!(window().check().is_ok());
        assert_eq!(window().m2(), 2.0);
        let bad = WindowAggregate {
            mean: 5.0,
            ..window()
        };
        assert!(bad.check().unwrap_err().contains("mean"));
        let bad = WindowAggregate {
            count: 0,
            ..window()
        };
        assert!(bad.check().is_err());
        let bad = WindowAggregate {
            last_ts: UnixMs(60_000),
            ..window()
        };
        assert!(bad.check().unwrap_err().contains("last_ts"));
    }
}
