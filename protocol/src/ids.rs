//! Identifier newtypes. Every id is 1–64 characters of `[A-Za-z0-9_-]`, so it is safe
//! as an MQTT topic level (no `/`, `+`, `#`, never starting with `$`) and as a URL path
//! segment without escaping. An invalid id cannot be constructed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted identifier, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} `{value}` is longer than {MAX_ID_LEN} characters")]
    TooLong { what: &'static str, value: String },
    #[error("{what} `{value}` contains `{bad}`; only letters, digits, `_` and `-` are allowed")]
    BadChar {
        what: &'static str,
        value: String,
        bad: char,
    },
}

/// Checks the shared identifier rule; `what` names the kind of id in the error.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            value: value.chars().take(MAX_ID_LEN + 8).collect(),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdError::BadChar {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id($what, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_newtype!(
    /// A manufacturer (the Wearcast customer that sells the machines and the service).
    TenantId, "tenant id");
id_newtype!(
    /// A plant operator that owns machines and buys service.
    CustomerId, "customer id");
id_newtype!(
    /// One plant of a customer; maintenance windows are per site.
    SiteId, "site id");
id_newtype!(
    /// One installed machine. Unique within a deployment.
    MachineId, "machine id");
id_newtype!(
    /// A machine model (type), which defines its components and their wear channels.
    MachineModelId, "machine model id");
id_newtype!(
    /// A component slot within a machine model, e.g. `spindle_bearing`.
    ComponentKey, "component key");
id_newtype!(
    /// A spare part in the catalogue.
    PartId, "part id");
id_newtype!(
    /// A service contract.
    ContractId, "contract id");
id_newtype!(
    /// A field-service technician.
    TechnicianId, "technician id");
id_newtype!(
    /// An edge gateway instance.
    GatewayId, "gateway id");
id_newtype!(
    /// A gateway → server batch; stable across retries so the server can de-duplicate.
    BatchId, "batch id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_topic_safe_names_and_reject_the_rest() {
        assert!(MachineId::parse("m-0001_A").is_ok());
        assert_eq!(
            MachineId::parse("").unwrap_err(),
            IdError::Empty { what: "machine id" }
        );
        for bad in ["a/b", "a+b", "#", "$sys", "a b", "ü"] {
            let err = MachineId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("machine id"), "{err}");
        }
        assert!(MachineId::parse("x".repeat(65)).is_err());
        assert!(MachineId::parse("x".repeat(64)).is_ok());
    }

    #[test]
    fn deserialising_an_invalid_id_fails_with_the_reason() {
        let err = serde_json::from_str::<TenantId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("contains `/`"), "{err}");
    }
}
