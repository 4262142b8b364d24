//! MQTT topic layout: `wearcast/v1/{tenant}/{machine}/{kind}` with kind one of
//! `telemetry`, `status` (retained birth / last will) and `events`.

use std::fmt;

use crate::ids::{IdError, MachineId, TenantId};

/// First two topic levels; the version lets a future layout coexist on one broker.
pub const TOPIC_PREFIX: &str = "wearcast/v1";

/// What a message on a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Telemetry,
    Status,
    Events,
}

impl TopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Status => "status",
            Self::Events => "events",
        }
    }
}

/// A parsed Wearcast topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Topic {
    pub tenant: TenantId,
    pub machine: MachineId,
    pub kind: TopicKind,
}

/// Why a topic is not a Wearcast topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` is not `wearcast/v1/<tenant>/<machine>/<telemetry|status|events>`")]
    Shape(String),
    #[error("topic `{topic}`: unknown kind `{kind}` (expected telemetry, status or events)")]
    Kind { topic: String, kind: String },
    #[error("topic `{topic}`: {source}")]
    Id {
        topic: String,
        #[source]
        source: IdError,
    },
}

impl Topic {
    pub fn new(tenant: TenantId, machine: MachineId, kind: TopicKind) -> Self {
        Self {
            tenant,
            machine,
            kind,
        }
    }

    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let shape = || TopicError::Shape(topic.chars().take(200).collect());
        let rest = topic
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(shape)?;
        let mut parts = rest.split('/');
        let (Some(tenant), Some(machine), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let id_err = |source| TopicError::Id {
            topic: topic.to_owned(),
            source,
        };
        let kind = match kind {
            "telemetry" => TopicKind::Telemetry,
            "status" => TopicKind::Status,
            "events" => TopicKind::Events,
            other => {
                return Err(TopicError::Kind {
                    topic: topic.to_owned(),
                    kind: other.to_owned(),
                });
            }
        };
        Ok(Self {
            tenant: TenantId::parse(tenant).map_err(id_err)?,
            machine: MachineId::parse(machine).map_err(id_err)?,
            kind,
        })
    }

    /// The subscription filter for every Wearcast topic, optionally as an MQTT 5 / Mosquitto 2
    /// shared subscription so several gateways split the load.
    pub fn subscription_filter(share_group: Option<&str>) -> String {
        match share_group {
            Some(group) => format!("$share/{group}/{TOPIC_PREFIX}/+/+/+"),
            None => format!("{TOPIC_PREFIX}/+/+/+"),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}/{}/{}/{}",
            self.tenant,
            self.machine,
            self.kind.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = Topic::parse("wearcast/v1/acme/m-001/telemetry").unwrap();
        assert_eq!(t.machine.as_str(), "m-001");
        assert_eq!(t.kind, TopicKind::Telemetry);
        assert_eq!(t.to_string(), "wearcast/v1/acme/m-001/telemetry");
    }

    #[test]
    fn foreign_topics_are_rejected_with_the_reason() {
        assert!(matches!(
            Topic::parse("wearcast/v1/acme/m-001"),
            Err(TopicError::Shape(_))
        ));
        assert!(matches!(
            Topic::parse("wearcast/v1/acme/m-001/telemetry/x"),
            Err(TopicError::Shape(_))
        ));
        assert!(matches!(
            Topic::parse("wearcast/v1/acme/m-001/logs"),
            Err(TopicError::Kind { .. })
        ));
        assert!(matches!(
            Topic::parse("wearcast/v1/ac me/m-001/status"),
            Err(TopicError::Id { .. })
        ));
        assert!(Topic::parse("other/v1/acme/m/telemetry").is_err());
    }

    #[test]
    fn shared_subscription_filter() {
        assert_eq!(
            Topic::subscription_filter(Some("gw")),
            "$share/gw/wearcast/v1/+/+/+"
        );
    }
}
