//! The simulator's one error type. Only configuration problems, a ground-truth file
//! that cannot be written and internal bugs are errors: a broker that is down or slow
//! is retried for as long as the simulator runs.

use std::path::PathBuf;

use wearcast_protocol::ids::IdError;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("sim.mqtt_url `{url}`: {reason}")]
    MqttUrl { url: String, reason: String },

    #[error("sim.{field}: {reason}")]
    Config { field: &'static str, reason: String },

    #[error("sim.tenant: {0}")]
    Tenant(#[source] IdError),

    #[error("cannot write the ground truth to `{}`: {source}", path.display())]
    Truth {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The generated fleet does not pass its own manifest check: a simulator bug.
    #[error("the generated fleet manifest is inconsistent: {}", problems.join("; "))]
    Manifest { problems: Vec<String> },

    #[error("the task simulating machine `{machine}` ended abnormally: {reason}")]
    Task { machine: String, reason: String },
}

impl SimError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }
}
