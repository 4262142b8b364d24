//! The telemetry payload, published on `wearcast/v1/{tenant}/{machine}/telemetry`:
//!
//! ```json
//! {"ts": 1795352355524, "seq": 42,
//!  "readings": {"spindle_bearing.vibration_rms": 1.92, "op.load_pct": 73.0}}
//! ```
//!
//! or a batch `{"samples": [ <sample>, ... ]}`. `ts` is Unix milliseconds or RFC 3339;
//! `seq` is an optional per-machine counter used to drop duplicate deliveries.
//!
//! Parsing is lenient where it can be without guessing: a structurally broken message is
//! rejected whole (with serde's line and column), but inside a well-formed message a bad
//! sample only loses that sample and a bad reading only loses that reading, each with a
//! [`Rejection`] that says why and where.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::channel::Channel;
use crate::reject::{RejectReason, RejectUnit, Rejection};
use crate::time::UnixMs;

/// One validated sample: a timestamp and one or more readings.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub ts: UnixMs,
    pub seq: Option<u64>,
    pub readings: Vec<(Channel, f64)>,
}

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Readings<'a>(&'a [(Channel, f64)]);
        impl Serialize for Readings<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (channel, value) in self.0 {
                    map.serialize_entry(channel.as_str(), value)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ts", &self.ts)?;
        if let Some(seq) = self.seq {
            map.serialize_entry("seq", &seq)?;
        }
        map.serialize_entry("readings", &Readings(&self.readings))?;
        map.end()
    }
}

/// Encodes one sample as a single-sample payload.
pub fn encode_sample(sample: &Sample) -> Vec<u8> {
    serde_json::to_vec(sample).unwrap_or_default()
}

/// Encodes samples as a `{"samples": [...]}` batch payload.
pub fn encode_samples(samples: &[Sample]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Batch<'a> {
        samples: &'a [Sample],
    }
    serde_json::to_vec(&Batch { samples }).unwrap_or_default()
}

/// Limits every telemetry entry point enforces.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryLimits {
    /// Larger messages are rejected before parsing.
    pub max_payload_bytes: usize,
    /// Samples in one batch message.
    pub max_samples: usize,
    /// Readings in one sample.
    pub max_readings: usize,
    /// How far ahead of the receiver's clock a `ts` may be (clock skew allowance).
    pub max_future_ms: i64,
    /// How old a `ts` may be (devices buffer while offline).
    pub max_age_ms: i64,
}

impl Default for TelemetryLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            max_samples: 10_000,
            max_readings: 512,
            max_future_ms: 5 * 60_000,
            max_age_ms: 35 * UnixMs::DAY,
        }
    }
}

/// The result of parsing one message: what was accepted and what was not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedTelemetry {
    pub samples: Vec<Sample>,
    pub rejected: Vec<Rejection>,
}

/// Parses a telemetry payload. `Err` means the whole message is rejected; otherwise the
/// accepted samples come with the rejections of individual samples and readings.
/// Timestamps are not checked against a clock here; see [`check_time`].
pub fn parse_telemetry(
    payload: &[u8],
    limits: &TelemetryLimits,
) -> Result<ParsedTelemetry, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            RejectUnit::Message,
            format!(
                "payload is {} bytes; the limit is {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let envelope: RawEnvelope = serde_json::from_slice(payload).map_err(|e| {
        Rejection::new(
            RejectReason::Malformed,
            RejectUnit::Message,
            format!("payload is not a telemetry message: {e}"),
        )
    })?;
    let mut parsed = ParsedTelemetry::default();
    match envelope.samples {
        Some(samples) => {
            if envelope.ts.is_some() || envelope.seq.is_some() || envelope.readings.is_some() {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    RejectUnit::Message,
                    "a payload carries either `samples` or one sample's `ts`/`seq`/`readings`, not both",
                ));
            }
            if samples.is_empty() {
                return Err(Rejection::new(
                    RejectReason::NoReadings,
                    RejectUnit::Message,
                    "`samples` is empty",
                ));
            }
            if samples.len() > limits.max_samples {
                return Err(Rejection::new(
                    RejectReason::TooMany,
                    RejectUnit::Message,
                    format!(
                        "{} samples in one message; the limit is {}",
                        samples.len(),
                        limits.max_samples
                    ),
                ));
            }
            parsed.samples.reserve(samples.len());
            for (i, raw) in samples.into_iter().enumerate() {
                finish_sample(raw, &format!("samples[{i}]"), limits, &mut parsed);
            }
        }
        None => {
            let raw = RawSample {
                ts: envelope.ts,
                seq: envelope.seq,
                readings: envelope.readings,
            };
            finish_sample(raw, "sample", limits, &mut parsed);
        }
    }
    Ok(parsed)
}

/// Checks a sample's timestamp against the receiver's clock.
pub fn check_time(ts: UnixMs, now: UnixMs, limits: &TelemetryLimits) -> Result<(), Rejection> {
    if ts.0 > now.0.saturating_add(limits.max_future_ms) {
        return Err(Rejection::new(
            RejectReason::TsFuture,
            RejectUnit::Sample,
            format!(
                "ts {ts} is {} ahead of the receiver's clock ({now}); at most {} of clock skew is accepted",
                human_duration(ts.0 - now.0),
                human_duration(limits.max_future_ms)
            ),
        ));
    }
    if ts.0 < now.0.saturating_sub(limits.max_age_ms) {
        let hint = if ts.0 < 100_000_000_000 {
            " (it looks like Unix seconds; `ts` is Unix milliseconds)"
        } else {
            ""
        };
        return Err(Rejection::new(
            RejectReason::TsPast,
            RejectUnit::Sample,
            format!(
                "ts {ts} is {} old; at most {} is accepted{hint}",
                human_duration(now.0 - ts.0),
                human_duration(limits.max_age_ms)
            ),
        ));
    }
    Ok(())
}

/// `90061000` → `1d 1h 1m`; coarse on purpose, for error messages.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    let (d, h, m, s) = (
        ms / 86_400_000,
        ms / 3_600_000 % 24,
        ms / 60_000 % 60,
        ms / 1000 % 60,
    );
    if d >= 365 {
        format!("{:.1} years", ms as f64 / (365.25 * 86_400_000.0))
    } else if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{}.{:03}s", s, ms % 1000)
    }
}

fn finish_sample(raw: RawSample, path: &str, limits: &TelemetryLimits, out: &mut ParsedTelemetry) {
    let reject = |reason, detail: String| {
        Rejection::new(reason, RejectUnit::Sample, format!("{path}: {detail}"))
    };
    let ts = match raw.ts {
        None => {
            out.rejected
                .push(reject(RejectReason::MissingTs, "`ts` is missing".into()));
            return;
        }
        Some(Err(e)) => {
            out.rejected.push(reject(RejectReason::BadTs, e));
            return;
        }
        Some(Ok(ts)) => ts,
    };
    let seq = match raw.seq {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(e)) => {
            out.rejected.push(reject(RejectReason::Malformed, e));
            return;
        }
    };
    let raw_readings = raw.readings.map(|r| r.0).unwrap_or_default();
    if raw_readings.is_empty() {
        out.rejected.push(reject(
            RejectReason::NoReadings,
            "`readings` is missing or empty".into(),
        ));
        return;
    }
    if raw_readings.len() > limits.max_readings {
        out.rejected.push(reject(
            RejectReason::TooMany,
            format!(
                "{} readings; the limit is {}",
                raw_readings.len(),
                limits.max_readings
            ),
        ));
        return;
    }
    let mut readings = Vec::with_capacity(raw_readings.len());
    for (name, value) in raw_readings {
        let reading_reject = |reason, detail: String| {
            Rejection::new(
                reason,
                RejectUnit::Reading,
                format!("{path}.readings.\"{name}\": {detail}"),
            )
        };
        let channel = match Channel::parse(name.as_str()) {
            Ok(c) => c,
            Err(e) => {
                out.rejected
                    .push(reading_reject(RejectReason::BadChannel, e.to_string()));
                continue;
            }
        };
        match value {
            Ok(v) if v.is_finite() => {
                if readings.iter().any(|(c, _)| *c == channel) {
                    out.rejected.push(reading_reject(
                        RejectReason::Malformed,
                        "channel appears twice in one sample".into(),
                    ));
                } else {
                    readings.push((channel, v));
                }
            }
            Ok(v) => out.rejected.push(reading_reject(
                RejectReason::BadValue,
                format!("{v} is not finite"),
            )),
            Err(e) => out.rejected.push(reading_reject(RejectReason::BadValue, e)),
        }
    }
    if !readings.is_empty() {
        out.samples.push(Sample { ts, seq, readings });
    }
}

// ---- wire shapes -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    #[serde(default)]
    samples: Option<Vec<RawSample>>,
    #[serde(default, deserialize_with = "de_ts")]
    ts: Option<Lenient<UnixMs>>,
    #[serde(default, deserialize_with = "de_seq")]
    seq: Option<Lenient<u64>>,
    #[serde(default)]
    readings: Option<RawReadings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    #[serde(default, deserialize_with = "de_ts")]
    ts: Option<Lenient<UnixMs>>,
    #[serde(default, deserialize_with = "de_seq")]
    seq: Option<Lenient<u64>>,
    #[serde(default)]
    readings: Option<RawReadings>,
}

/// A value whose type error is kept (as a message) instead of failing the whole message.
type Lenient<T> = Result<T, String>;

/// Readings in message order, each value either a number or why it is not one.
struct RawReadings(Vec<(String, Lenient<f64>)>);

/// Describes a JSON value that is not what was expected, draining it if needed.
fn found<'de, A: MapAccess<'de>>(mut map: A) -> Result<&'static str, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok("an object")
}
fn found_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<&'static str, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok("an array")
}

macro_rules! lenient_visitor {
    ($visitor:ident, $t:ty, $expecting:literal,
     i64 => $vi:expr, u64 => $vu:expr, f64 => $vf:expr, str => $vs:expr) => {
        struct $visitor;
        impl<'de> Visitor<'de> for $visitor {
            type Value = Lenient<$t>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($expecting)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok($vi(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok($vu(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok($vf(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok($vs(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Err(format!("expected {}, found `{v}`", $expecting)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Err(format!("expected {}, found null", $expecting)))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                self.visit_unit()
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(Err(format!(
                    "expected {}, found {}",
                    $expecting,
                    found(map)?
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(Err(format!(
                    "expected {}, found {}",
                    $expecting,
                    found_seq(seq)?
                )))
            }
        }
    };
}

lenient_visitor!(TsVisitor, UnixMs, "`ts` as Unix milliseconds or an RFC 3339 string",
    i64 => |v| UnixMs::from_millis(v).map_err(|e| e.to_string()),
    u64 => |v| i64::try_from(v).map_err(|_| "ts is too large".to_string())
        .and_then(|v| UnixMs::from_millis(v).map_err(|e| e.to_string())),
    f64 => |v: f64| if v.fract() == 0.0 && v.is_finite() {
            UnixMs::from_millis(v as i64).map_err(|e| e.to_string())
        } else {
            Err(format!("timestamp {v} is not a whole number of milliseconds"))
        },
    str => |v: &str| UnixMs::parse_rfc3339(v).map_err(|e| e.to_string()));

lenient_visitor!(SeqVisitor, u64, "`seq` as a non-negative integer",
    i64 => |v: i64| u64::try_from(v).map_err(|_| format!("`seq` {v} is negative")),
    u64 => Ok,
    f64 => |v: f64| if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
            Ok(v as u64)
        } else {
            Err(format!("`seq` {v} is not a non-negative integer"))
        },
    str => |v: &str| Err(format!("`seq` must be a number, found the string {v:?}")));

lenient_visitor!(ValueVisitor, f64, "a number",
    i64 => |v| Ok(v as f64),
    u64 => |v| Ok(v as f64),
    f64 => Ok,
    str => |v: &str| Err(format!("expected a number, found the string {:?}",
        v.chars().take(32).collect::<String>())));

impl<'de> Deserialize<'de> for LenientTs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TsVisitor).map(LenientTs)
    }
}

// `Lenient<T>` is a plain `Result`, so the field types above go through these wrappers.
struct LenientTs(Lenient<UnixMs>);
struct LenientSeq(Lenient<u64>);

impl<'de> Deserialize<'de> for LenientSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeqVisitor).map(LenientSeq)
    }
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lenient<UnixMs>>, D::Error> {
    Ok(Some(LenientTs::deserialize(d)?.0))
}

fn de_seq<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lenient<u64>>, D::Error> {
    Ok(Some(LenientSeq::deserialize(d)?.0))
}

impl<'de> Deserialize<'de> for RawReadings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReadingsVisitor;
        struct ValueSeed;
        impl<'de> DeserializeSeed<'de> for ValueSeed {
            type Value = Lenient<f64>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(ValueVisitor)
            }
        }
        impl<'de> Visitor<'de> for ReadingsVisitor {
            type Value = RawReadings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`readings` as an object of channel → number")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReadings, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<String>()? {
                    out.push((key, map.next_value_seed(ValueSeed)?));
                }
                Ok(RawReadings(out))
            }
        }
        d.deserialize_map(ReadingsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> TelemetryLimits {
        TelemetryLimits::default()
    }

    #[test]
    fn parses_the_design_example() {
        let p = br#"{"ts": 1795352355524, "seq": 42,
            "readings": {"spindle_bearing.vibration_rms": 1.92,
                         "spindle_bearing.temperature_c": 51.3, "op.load_pct": 73}}"#;
        let parsed = parse_telemetry(p, &limits()).unwrap();
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        let s = &parsed.samples[0];
        assert_eq!(s.ts, UnixMs(1795352355524));
        assert_eq!(s.seq, Some(42));
        assert_eq!(s.readings.len(), 3);
        assert_eq!(
            s.readings[2],
            (Channel::parse("op.load_pct").unwrap(), 73.0)
        );
    }

    #[test]
    fn a_batch_with_rfc3339_timestamps_parses() {
        let p = br#"{"samples":[{"ts":"2026-11-22T10:00:00Z","readings":{"a.b":1}},
                                {"ts":1795352355524,"seq":7,"readings":{"a.b":2}}]}"#;
        let parsed = parse_telemetry(p, &limits()).unwrap();
        assert_eq!(parsed.samples.len(), 2);
        assert_eq!(parsed.samples[0].seq, None);
    }

    #[test]
    fn broken_json_rejects_the_message_with_a_position() {
        let e = parse_telemetry(b"{\"ts\": 1,", &limits()).unwrap_err();
        assert_eq!(e.reason, RejectReason::Malformed);
        assert_eq!(e.unit, RejectUnit::Message);
        assert!(e.detail.contains("line 1 column"), "{}", e.detail);
        let e =
            parse_telemetry(br#"{"ts":1,"readings":{"a.b":1},"extra":1}"#, &limits()).unwrap_err();
        assert!(e.detail.contains("unknown field `extra`"), "{}", e.detail);
    }

    #[test]
    fn oversized_payloads_are_rejected_before_parsing() {
        let l = TelemetryLimits {
            max_payload_bytes: 10,
            ..limits()
        };
        let e = parse_telemetry(b"{\"ts\":1,\"readings\":{}}", &l).unwrap_err();
        assert_eq!(e.reason, RejectReason::TooLarge);
    }

    #[test]
    fn a_bad_sample_loses_only_itself() {
        let p = br#"{"samples":[{"readings":{"a.b":1}},
                                {"ts":"noon","readings":{"a.b":1}},
                                {"ts":5,"seq":-1,"readings":{"a.b":1}},
                                {"ts":5,"readings":{}},
                                {"ts":6,"readings":{"a.b":3}}]}"#;
        let parsed = parse_telemetry(p, &limits()).unwrap();
        assert_eq!(parsed.samples.len(), 1);
        assert_eq!(parsed.samples[0].ts, UnixMs(6));
        let reasons: Vec<_> = parsed.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                RejectReason::MissingTs,
                RejectReason::BadTs,
                RejectReason::Malformed,
                RejectReason::NoReadings
            ]
        );
        assert!(parsed.rejected[1].detail.starts_with("samples[1]:"));
    }

    #[test]
    fn a_bad_reading_loses_only_itself() {
        let p = br#"{"ts":5,"readings":{"a.b":1,"nodot":2,"c.d":"hot","e.f":null,"g.h":[1]}}"#;
        let parsed = parse_telemetry(p, &limits()).unwrap();
        assert_eq!(parsed.samples[0].readings.len(), 1);
        let reasons: Vec<_> = parsed.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                RejectReason::BadChannel,
                RejectReason::BadValue,
                RejectReason::BadValue,
                RejectReason::BadValue
            ]
        );
        assert!(
            parsed
                .rejected
                .iter()
                .all(|r| r.unit == RejectUnit::Reading)
        );
        assert!(parsed.rejected[1].detail.contains("\"c.d\""));
    }

    #[test]
    fn timestamps_outside_the_accepted_range_say_by_how_much() {
        let now = UnixMs(1_800_000_000_000);
        let year_ahead = now.plus_ms(365 * UnixMs::DAY);
        let e = check_time(year_ahead, now, &limits()).unwrap_err();
        assert_eq!(e.reason, RejectReason::TsFuture);
        assert!(e.detail.contains("1.0 years ahead"), "{}", e.detail);
        let e = check_time(UnixMs(1_800_000_000), now, &limits()).unwrap_err();
        assert_eq!(e.reason, RejectReason::TsPast);
        assert!(e.detail.contains("Unix seconds"), "{}", e.detail);
        assert!(check_time(now.plus_ms(1000), now, &limits()).is_ok());
    }

    fn channel_strategy() -> impl Strategy<Value = Channel> {
        ("[a-z][a-z0-9_]{0,12}", "[a-z][a-z0-9_-]{0,12}")
            .prop_map(|(c, q)| Channel::parse(format!("{c}.{q}")).unwrap())
    }

    fn sample_strategy() -> impl Strategy<Value = Sample> {
        (
            0i64..=crate::time::MAX_UNIX_MS,
            proptest::option::of(any::<u64>()),
            proptest::collection::btree_map(channel_strategy(), -1e12f64..1e12, 1..20),
        )
            .prop_map(|(ts, seq, readings)| Sample {
                ts: UnixMs(ts),
                seq,
                readings: readings.into_iter().collect(),
            })
    }

    fn assert_same(a: &Sample, b: &Sample) {
        assert_eq!(a.ts, b.ts);
        assert_eq!(a.seq, b.seq);
        assert_eq!(a.readings.len(), b.readings.len());
        for ((ca, va), (cb, vb)) in a.readings.iter().zip(&b.readings) {
            assert_eq!(ca, cb);
            // serde_json's default float parser may differ in the last bit.
            assert!((va - vb).abs() <= va.abs() * 1e-15, "{va} != {vb}");
        }
    }

    proptest! {
        #[test]
        fn a_single_sample_survives_encode_then_parse(s in sample_strategy()) {
            let parsed = parse_telemetry(&encode_sample(&s), &limits()).unwrap();
            prop_assert!(parsed.rejected.is_empty());
            assert_same(&parsed.samples[0], &s);
        }

        #[test]
        fn a_batch_survives_encode_then_parse(batch in proptest::collection::vec(sample_strategy(), 1..10)) {
            let parsed = parse_telemetry(&encode_samples(&batch), &limits()).unwrap();
            prop_assert!(parsed.rejected.is_empty());
            prop_assert_eq!(parsed.samples.len(), batch.len());
            for (a, b) in parsed.samples.iter().zip(&batch) {
                assert_same(a, b);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_telemetry(&bytes, &limits());
        }
    }
}
