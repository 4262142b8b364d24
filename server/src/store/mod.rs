//! Storage. Everything the server keeps goes through [`Store`]; handlers and the
//! analysis never write SQL themselves.
//!
//! SQLite is the default backend (one file in the data directory, WAL mode, and
//! `synchronous = FULL` so an ingest the server acknowledged survives a power loss). The
//! PostgreSQL backend of the scale-out issue will implement the same operations; the
//! queries live in [`sqlite`] so that split stays mechanical. So far [`postgres`] holds
//! its schema (the same tables as SQLite's, checked against a real server by
//! `server/tests/postgres`) and the ingest path ([`postgres::PgStore::store_batch`],
//! tested there against SQLite's).

mod analytics;
mod audit;
mod auth;
mod backtests;
pub mod db;
mod model_data;
mod mqtt_users;
pub mod postgres;
mod retention;
mod service;
mod sqlite;

use std::collections::{HashMap, HashSet};

use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::{ComponentSpec, WeibullLife};

pub use crate::auth::Visibility;
pub use analytics::{SurveyAnswered, SurveyForPage, SurveyRequest};
pub use audit::AuditEntry;
pub use auth::{ObjectKind, TokenLookup};
pub use backtests::RecordedBacktest;
pub use model_data::{ComponentAnomaly, EndedLife};
pub use retention::RetentionReport;
pub use service::{
    AsFound, ChangeRefused, ComponentFinding, OfferForDecision, OfferPart, OutboxEntry, SiteInfo,
    WorkOrderFilter, WorkOrderForChange,
};
pub use sqlite::{BatchSelection, PREDICTION_SAMPLE_MS, Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `url` is shown without its password.
    #[error("cannot connect to the PostgreSQL database at {url}: {source}")]
    PgConnect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// `url` is shown without its password.
    #[error("cannot apply the PostgreSQL migrations to the database at {url}: {source}")]
    PgMigrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// What the ingest path needs to know about a registered machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredMachine {
    pub tenant: String,
    /// The machine's owner, for tagging what the sinks write.
    pub customer: String,
    pub components: HashSet<String>,
}

pub type MachineRegistry = HashMap<String, RegisteredMachine>;

/// Counts of what an import wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub customers: usize,
    pub sites: usize,
    pub parts: usize,
    pub machine_models: usize,
    pub machines: usize,
    pub contracts: usize,
}

/// The outcome of storing one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredBatch {
    pub duplicate: bool,
    pub windows: u64,
    pub events: u64,
    pub statuses: u64,
    /// Each stored window as its row now reads (merged with the parts of the same
    /// window stored before), in batch order: what the sinks copy.
    pub stored_windows: Vec<wearcast_protocol::WindowAggregate>,
}

impl StoredBatch {
    /// The answer for a batch stored before: nothing was stored again.
    pub fn duplicate() -> Self {
        Self {
            duplicate: true,
            ..Self::default()
        }
    }
}

/// One component as the model sees it.
#[derive(Clone, Debug)]
pub struct ModelComponent {
    pub spec: ComponentSpec,
    pub installed_at: UnixMs,
    pub failed_at: Option<UnixMs>,
    pub prior: WeibullLife,
}

/// A bucket of one channel's telemetry: the count-weighted mean of its windows.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelBucket {
    pub channel: String,
    pub start: UnixMs,
    pub mean: f64,
}

/// Filters for listing offers.
#[derive(Clone, Debug, Default)]
pub struct OfferFilter {
    pub status: Option<String>,
    pub machine: Option<String>,
    pub customer: Option<String>,
}

/// What planning needs besides one machine's own data, loaded once per step.
#[derive(Clone, Debug)]
pub struct PlanningContext {
    pub technicians: Vec<crate::service::TechnicianProfile>,
    pub busy: Vec<crate::service::Busy>,
    pub travel: crate::service::TravelModel,
    pub dispatch_days: f64,
    /// Components declined since then are not offered again yet.
    pub declined_since: UnixMs,
}

/// Counts of what a planning step changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedDecisions {
    pub proposed: u64,
    pub superseded: u64,
    pub expired: u64,
}
