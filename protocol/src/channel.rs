//! Channel names: `<component>.<quantity>`, e.g. `spindle_bearing.vibration_rms`.
//!
//! The component part names a component slot of the machine model; the reserved
//! component `op` holds operating conditions (load, speed, ambient temperature), which
//! normalise wear signals and are never wear signals themselves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{ComponentKey, IdError, validate_id};

/// The component name reserved for operating conditions.
pub const OPERATING_COMPONENT: &str = "op";

/// Why a string is not a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel `{0}` is not `<component>.<quantity>` (exactly one `.`)")]
    Shape(String),
    #[error("channel `{channel}`: {source}")]
    Part {
        channel: String,
        #[source]
        source: IdError,
    },
}

/// A validated channel name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Channel {
    name: String,
}

impl Channel {
    pub fn parse(name: impl Into<String>) -> Result<Self, ChannelError> {
        let name = name.into();
        let Some((component, quantity)) = name.split_once('.') else {
            return Err(ChannelError::Shape(name));
        };
        if quantity.contains('.') {
            return Err(ChannelError::Shape(name));
        }
        let check = |what, part: &str| {
            validate_id(what, part).map_err(|source| ChannelError::Part {
                channel: name.clone(),
                source,
            })
        };
        check("component", component)?;
        check("quantity", quantity)?;
        Ok(Self { name })
    }

    /// Builds `<component>.<quantity>` from parts that are already valid ids.
    pub fn new(component: &ComponentKey, quantity: &str) -> Result<Self, ChannelError> {
        Self::parse(format!("{component}.{quantity}"))
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn component(&self) -> &str {
        self.split().0
    }

    pub fn quantity(&self) -> &str {
        self.split().1
    }

    /// True for `op.*` channels (operating conditions, not wear).
    pub fn is_operating(&self) -> bool {
        self.component() == OPERATING_COMPONENT
    }

    fn split(&self) -> (&str, &str) {
        // Invariant from `parse`: exactly one dot.
        self.name.split_once('.').unwrap_or((&self.name, ""))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_splits_into_component_and_quantity() {
        let c = Channel::parse("spindle_bearing.vibration_rms").unwrap();
        assert_eq!(c.component(), "spindle_bearing");
        assert_eq!(c.quantity(), "vibration_rms");
        assert!(!c.is_operating());
        assert!(Channel::parse("op.load_pct").unwrap().is_operating());
    }

    #[test]
    fn malformed_channels_are_rejected_with_the_reason() {
        for bad in ["vibration", "a.b.c", ".x", "x.", "a/b.c", "a.b c"] {
            assert!(Channel::parse(bad).is_err(), "{bad} accepted");
        }
        let err = Channel::parse("bearing.vib rms").unwrap_err().to_string();
        assert!(err.contains("quantity") && err.contains("` `"), "{err}");
    }
}
