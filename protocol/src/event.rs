//! Machine events (`.../events`) and status messages (`.../status`, retained; the
//! machine publishes `online` as its birth message and registers `offline` as its last
//! will, so the broker announces a lost connection).

use serde::{Deserialize, Serialize};

use crate::ids::{ComponentKey, MachineId, TenantId};
use crate::reject::{RejectReason, RejectUnit, Rejection};
use crate::time::UnixMs;

/// What happened on a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A component was replaced (by service or after a breakdown); its wear restarts.
    PartReplaced,
    /// A component broke down and stopped the machine (an unplanned failure).
    Failure,
    /// The controller raised a fault code (a sudden fault, not wear).
    Fault,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PartReplaced => "part_replaced",
            Self::Failure => "failure",
            Self::Fault => "fault",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "part_replaced" => Some(Self::PartReplaced),
            "failure" => Some(Self::Failure),
            "fault" => Some(Self::Fault),
            _ => None,
        }
    }
}

/// The payload published on `.../events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPayload {
    pub ts: UnixMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Longest accepted fault code and message, in bytes.
pub const MAX_CODE_LEN: usize = 64;
pub const MAX_MESSAGE_LEN: usize = 1024;

impl EventPayload {
    /// Parses and checks an events payload.
    pub fn parse(payload: &[u8]) -> Result<Self, Rejection> {
        let event: Self = serde_json::from_slice(payload).map_err(|e| {
            Rejection::new(
                RejectReason::BadEvent,
                RejectUnit::Message,
                format!("event is not valid: {e}"),
            )
        })?;
        event.check().map_err(|detail| {
            Rejection::new(RejectReason::BadEvent, RejectUnit::Message, detail)
        })?;
        Ok(event)
    }

    pub fn check(&self) -> Result<(), String> {
        if matches!(self.kind, EventKind::PartReplaced | EventKind::Failure)
            && self.component.is_none()
        {
            return Err(format!(
                "a `{}` event must name its `component`",
                self.kind.as_str()
            ));
        }
        if self.kind == EventKind::Fault && self.code.is_none() {
            return Err("a `fault` event must carry a `code`".into());
        }
        if self.code.as_ref().is_some_and(|c| c.len() > MAX_CODE_LEN) {
            return Err(format!("`code` is longer than {MAX_CODE_LEN} bytes"));
        }
        if self
            .message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_MESSAGE_LEN)
        {
            return Err(format!("`message` is longer than {MAX_MESSAGE_LEN} bytes"));
        }
        Ok(())
    }
}

/// An event as forwarded to the server, tagged with its machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineEvent {
    pub tenant: TenantId,
    pub machine: MachineId,
    #[serde(flatten)]
    pub event: EventPayload,
}

/// Connection state of a machine, as its status topic reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Online,
    Offline,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// The payload published (retained) on `.../status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusMessage {
    pub state: MachineState,
    /// Absent in a last will, which is registered before the disconnect time is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<UnixMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
}

impl StatusMessage {
    pub fn parse(payload: &[u8]) -> Result<Self, Rejection> {
        serde_json::from_slice(payload).map_err(|e| {
            Rejection::new(
                RejectReason::BadEvent,
                RejectUnit::Message,
                format!("status is not valid: {e}"),
            )
        })
    }
}

/// A status change as forwarded to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    pub tenant: TenantId,
    pub machine: MachineId,
    pub state: MachineState,
    /// When the gateway learnt of it (the message's own `ts` if it had one).
    pub at: UnixMs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_names_its_component() {
        let e =
            EventPayload::parse(br#"{"ts":1,"kind":"part_replaced","component":"belt"}"#).unwrap();
        assert_eq!(e.component.unwrap().as_str(), "belt");
        let err = EventPayload::parse(br#"{"ts":1,"kind":"part_replaced"}"#).unwrap_err();
        assert!(err.detail.contains("must name its `component`"));
        let err = EventPayload::parse(br#"{"ts":1,"kind":"explosion"}"#).unwrap_err();
        assert!(err.detail.contains("unknown variant"), "{}", err.detail);
    }

    #[test]
    fn a_machine_event_flattens_the_payload() {
        let e = MachineEvent {
            tenant: TenantId::parse("t").unwrap(),
            machine: MachineId::parse("m").unwrap(),
            event: EventPayload {
                ts: UnixMs(5),
                seq: None,
                kind: EventKind::Fault,
                component: None,
                code: Some("E7".into()),
                message: None,
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"tenant":"t","machine":"m","ts":5,"kind":"fault","code":"E7"}"#
        );
        assert_eq!(serde_json::from_str::<MachineEvent>(&json).unwrap(), e);
    }

    #[test]
    fn a_machine_event_with_an_unknown_field_is_refused() {
        let json =
            r#"{"tenant":"t","machine":"m","ts":5,"kind":"fault","code":"E7","colour":"red"}"#;
        let err = serde_json::from_str::<MachineEvent>(json).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn status_last_will_has_no_timestamp() {
        let s = StatusMessage::parse(br#"{"state":"offline"}"#).unwrap();
        assert_eq!(s.state, MachineState::Offline);
        assert!(StatusMessage::parse(br#"{"state":"sleeping"}"#).is_err());
    }
}
