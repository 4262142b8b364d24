//! Bounded fuzzing of every parser a device can reach over MQTT: the topic, telemetry,
//! event and status payloads. Random bytes rarely get past JSON syntax, so the payloads
//! here are also valid messages with random edits (bytes flipped, inserted, cut) and
//! valid JSON of the wrong shape. Each parser must answer, never panic, and a rejection
//! must say why (a reason and a non-empty detail). Runs in `cargo test` (proptest's
//! default 256 cases per property).

use proptest::prelude::*;
use serde_json::{Value, json};
use wearcast_protocol::event::EventPayload;
use wearcast_protocol::reject::Rejection;
use wearcast_protocol::telemetry::parse_telemetry;
use wearcast_protocol::{StatusMessage, TelemetryLimits, Topic};

const TELEMETRY: &str = r#"{"ts": 1767225600000, "seq": 42, "readings": {"spindle.vibration_rms": 1.25, "spindle.temperature_c": 61.5, "op.speed_rpm": 1200}}"#;
const BATCHED: &str = r#"{"samples": [{"ts": 1767225600000, "seq": 1, "readings": {"a.b": 1}}, {"ts": 1767225601000, "seq": 2, "readings": {"a.b": 2}}]}"#;
const EVENT: &str = r#"{"ts": 1767225600000, "seq": 7, "kind": "failure", "component": "spindle_bearing", "code": "E42", "message": "spall"}"#;
const STATUS: &str = r#"{"state": "online", "ts": 1767225600000, "firmware": "1.2.3"}"#;

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Cut(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop::sample::select(b"{}[]\":,.-+eE0123456789 \\ntrufalse".to_vec())
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Edit::Cut(i, n)),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn apply(base: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Edit::Flip(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] = b;
                }
            }
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Cut(i, n) => {
                if !bytes.is_empty() {
                    let start = i % len;
                    let end = (start + n).min(bytes.len());
                    bytes.drain(start..end);
                }
            }
        }
    }
    bytes
}

/// Any JSON value, a few levels deep, with the payloads' own keys among the names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|x| json!(x)),
        "[a-z._]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                "[a-z._]{1,10}|ts|seq|readings|samples|kind|component|state",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn says_why(r: &Rejection) {
    assert!(
        !r.detail.trim().is_empty(),
        "{:?} without a detail",
        r.reason
    );
}

fn check_all(bytes: &[u8]) {
    match parse_telemetry(bytes, &TelemetryLimits::default()) {
        Ok(parsed) => parsed.rejected.iter().for_each(says_why),
        Err(r) => says_why(&r),
    }
    if let Err(r) = EventPayload::parse(bytes) {
        says_why(&r);
    }
    if let Err(r) = StatusMessage::parse(bytes) {
        says_why(&r);
    }
}

/// The seeds of the edits are valid: the fuzz starts from messages that parse.
#[test]
fn the_unedited_messages_parse() {
    let parsed = parse_telemetry(TELEMETRY.as_bytes(), &TelemetryLimits::default()).unwrap();
    assert_eq!((parsed.samples.len(), parsed.rejected.len()), (1, 0));
    let parsed = parse_telemetry(BATCHED.as_bytes(), &TelemetryLimits::default()).unwrap();
    assert_eq!(parsed.samples.len(), 2);
    assert!(EventPayload::parse(EVENT.as_bytes()).is_ok());
    assert!(StatusMessage::parse(STATUS.as_bytes()).is_ok());
    assert!(Topic::parse("wearcast/v1/acme/m-001/telemetry").is_ok());
}

proptest! {
    #[test]
    fn edited_messages_are_parsed_or_rejected_with_a_reason(
        base in prop::sample::select(vec![TELEMETRY, BATCHED, EVENT, STATUS]),
        edits in edits(),
    ) {
        check_all(&apply(base, &edits));
    }

    #[test]
    fn json_of_any_shape_is_parsed_or_rejected_with_a_reason(value in json_value()) {
        check_all(value.to_string().as_bytes());
        // The same value where a reading or a payload field is expected.
        let ts = 1_767_225_600_000_i64;
        check_all(json!({"ts": ts, "readings": {"a.b": value.clone()}}).to_string().as_bytes());
        check_all(json!({"samples": [value.clone()]}).to_string().as_bytes());
        check_all(json!({"ts": ts, "kind": value.clone()}).to_string().as_bytes());
        check_all(json!({"state": value}).to_string().as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        check_all(&bytes);
    }

    #[test]
    fn any_topic_is_parsed_or_refused(
        parts in proptest::collection::vec(
            "[a-z0-9_+#$./-]{0,12}|wearcast|v1|acme|m-001|telemetry|events|status",
            0..8,
        ),
    ) {
        let topic = parts.join("/");
        if let Ok(t) = Topic::parse(&topic) {
            // What parses came from a topic of the documented shape.
            prop_assert!(topic.starts_with("wearcast/v1/"), "{topic} parsed as {t:?}");
        }
    }
}
