//! Countable reasons for rejecting input. Each has a stable label used as the `reason`
//! label of the rejection metrics, so dashboards and alerts can rely on it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The message is bigger than the configured limit.
    TooLarge,
    /// Not JSON, or JSON of the wrong shape.
    Malformed,
    /// The topic is not a Wearcast topic.
    BadTopic,
    /// The machine is not in the registry.
    UnknownMachine,
    /// The machine exists but belongs to another tenant than the topic says.
    WrongTenant,
    /// A sample has no `ts`.
    MissingTs,
    /// A `ts` that is not Unix milliseconds or RFC 3339.
    BadTs,
    /// A `ts` further in the future than the allowed clock skew.
    TsFuture,
    /// A `ts` older than the accepted age.
    TsPast,
    /// A channel name that is not `<component>.<quantity>`.
    BadChannel,
    /// A reading that is not a finite number.
    BadValue,
    /// A sample without readings.
    NoReadings,
    /// More samples in one message, or readings in one sample, than allowed.
    TooMany,
    /// An event or status message that does not follow the contract.
    BadEvent,
    /// A window aggregate whose statistics are inconsistent.
    BadWindow,
    /// The device sent more messages than its per-device budget allows.
    RateLimited,
}

impl RejectReason {
    pub const ALL: [Self; 16] = [
        Self::TooLarge,
        Self::Malformed,
        Self::BadTopic,
        Self::UnknownMachine,
        Self::WrongTenant,
        Self::MissingTs,
        Self::BadTs,
        Self::TsFuture,
        Self::TsPast,
        Self::BadChannel,
        Self::BadValue,
        Self::NoReadings,
        Self::TooMany,
        Self::BadEvent,
        Self::BadWindow,
        Self::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::BadTopic => "bad_topic",
            Self::UnknownMachine => "unknown_machine",
            Self::WrongTenant => "wrong_tenant",
            Self::MissingTs => "missing_ts",
            Self::BadTs => "bad_ts",
            Self::TsFuture => "ts_future",
            Self::TsPast => "ts_past",
            Self::BadChannel => "bad_channel",
            Self::BadValue => "bad_value",
            Self::NoReadings => "no_readings",
            Self::TooMany => "too_many",
            Self::BadEvent => "bad_event",
            Self::BadWindow => "bad_window",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// What a rejection threw away: a whole message, one sample of it, or one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectUnit {
    Message,
    Sample,
    Reading,
}

impl RejectUnit {
    pub fn label(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Sample => "sample",
            Self::Reading => "reading",
        }
    }
}

/// One rejection: why, what was lost, and where in the input (a human-readable path
/// such as `samples[3].readings."x.y"` followed by the detail).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: RejectReason,
    pub unit: RejectUnit,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, unit: RejectUnit, detail: impl Into<String>) -> Self {
        Self {
            reason,
            unit,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rejected ({}): {}",
            self.unit.label(),
            self.reason.label(),
            self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_match_serde() {
        let mut labels: Vec<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        for r in RejectReason::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.label().into())
            );
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }
}
