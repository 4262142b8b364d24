//! Timestamps. Internally every instant is Unix milliseconds (UTC); on the wire a
//! timestamp may be an integer of Unix milliseconds or an RFC 3339 string.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Latest accepted instant: 9999-12-31T23:59:59.999Z.
pub const MAX_UNIX_MS: i64 = 253_402_300_799_999;

/// Unix time in milliseconds, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UnixMs(pub i64);

/// Why a wire timestamp was not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp {0} is negative; expected Unix milliseconds")]
    Negative(i64),
    #[error("timestamp {0} is beyond year 9999; expected Unix milliseconds")]
    TooLarge(i64),
    #[error("timestamp {0} is not a whole number of milliseconds")]
    Fractional(f64),
    #[error("timestamp `{value}` is not RFC 3339 ({reason})")]
    NotRfc3339 { value: String, reason: String },
}

impl UnixMs {
    pub const HOUR: i64 = 3_600_000;
    pub const DAY: i64 = 86_400_000;

    /// Accepts Unix milliseconds within year 0..=9999.
    pub fn from_millis(ms: i64) -> Result<Self, TimestampError> {
        if ms < 0 {
            Err(TimestampError::Negative(ms))
        } else if ms > MAX_UNIX_MS {
            Err(TimestampError::TooLarge(ms))
        } else {
            Ok(Self(ms))
        }
    }

    /// Parses an RFC 3339 string, e.g. `2026-11-22T13:00:00Z` or with an offset.
    pub fn parse_rfc3339(value: &str) -> Result<Self, TimestampError> {
        let parsed =
            DateTime::parse_from_rfc3339(value).map_err(|e| TimestampError::NotRfc3339 {
                value: value.chars().take(64).collect(),
                reason: e.to_string(),
            })?;
        Self::from_millis(parsed.timestamp_millis())
    }

    /// Parses either form, as HTTP query parameters and CLI flags allow: digits are Unix
    /// milliseconds, anything else must be RFC 3339.
    pub fn parse_flexible(value: &str) -> Result<Self, TimestampError> {
        let trimmed = value.trim();
        if !trimmed.is_empty()
            && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && let Ok(ms) = trimmed.parse::<i64>()
        {
            return Self::from_millis(ms);
        }
        Self::parse_rfc3339(trimmed)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_millis())
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn plus_ms(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    pub fn plus_hours(self, hours: f64) -> Self {
        Self(self.0.saturating_add((hours * Self::HOUR as f64) as i64))
    }

    /// Hours from `self` to `later` (negative if `later` is earlier).
    pub fn hours_until(self, later: UnixMs) -> f64 {
        (later.0 - self.0) as f64 / Self::HOUR as f64
    }

    /// Start of the fixed window of `size_ms` that contains this instant.
    pub fn window_start(self, size_ms: i64) -> Self {
        Self(self.0 - self.0.rem_euclid(size_ms))
    }
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for UnixMs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for UnixMs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnixMsVisitor)
    }
}

struct UnixMsVisitor;

impl Visitor<'_> for UnixMsVisitor {
    type Value = UnixMs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unix milliseconds or an RFC 3339 string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnixMs, E> {
        UnixMs::from_millis(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnixMs, E> {
        let v = i64::try_from(v).map_err(|_| E::custom(TimestampError::TooLarge(i64::MAX)))?;
        self.visit_i64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<UnixMs, E> {
        if v.fract() != 0.0 || !v.is_finite() {
            return Err(E::custom(TimestampError::Fractional(v)));
        }
        self.visit_i64(v as i64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<UnixMs, E> {
        UnixMs::parse_rfc3339(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wire_forms_name_the_same_instant() {
        let a: UnixMs = serde_json::from_str("1795352355524").unwrap();
        let b: UnixMs = serde_json::from_str("\"2026-11-22T13:59:15.524+01:00\"").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-22T12:59:15.524Z");
    }

    #[test]
    fn bad_timestamps_say_why() {
        let e = serde_json::from_str::<UnixMs>("-5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative"), "{e}");
        let e = serde_json::from_str::<UnixMs>("\"yesterday\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not RFC 3339"), "{e}");
        let e = serde_json::from_str::<UnixMs>("1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole number"), "{e}");
        assert!(UnixMs::from_millis(MAX_UNIX_MS + 1).is_err());
    }

    #[test]
    fn flexible_parsing_takes_digits_as_millis() {
        assert_eq!(UnixMs::parse_flexible("1000").unwrap(), UnixMs(1000));
        assert_eq!(
            UnixMs::parse_flexible("1970-01-01T00:00:01Z").unwrap(),
            UnixMs(1000)
        );
        assert!(UnixMs::parse_flexible("soon").is_err());
    }

    #[test]
    fn window_start_floors_to_the_window() {
        assert_eq!(UnixMs(3_599_999).window_start(UnixMs::HOUR), UnixMs(0));
        assert_eq!(
            UnixMs(3_600_000).window_start(UnixMs::HOUR),
            UnixMs(3_600_000)
        );
    }
}
