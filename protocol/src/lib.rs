//! The Wearcast wire contract: everything the firmware simulator, the edge gateway and
//! the server say to each other, and nothing else.
//!
//! - [`ids`]: validated identifier newtypes (`MachineId`, `TenantId`, ...), safe to use as
//!   MQTT topic levels and URL path segments.
//! - [`channel`]: `<component>.<quantity>` channel names; `op.*` are operating conditions.
//! - [`time`]: Unix-millisecond timestamps that also accept RFC 3339 on the wire.
//! - [`topic`]: the MQTT topic layout `wearcast/v1/{tenant}/{machine}/{kind}`.
//! - [`telemetry`]: the telemetry payload (one sample or a `samples` batch) and its
//!   validation with precise, countable rejection reasons ([`reject`]).
//! - [`event`]: machine events (part replaced, failure, fault codes) and birth/last-will
//!   status messages.
//! - [`batch`]: the gateway → server ingest batch of aggregated windows.
//! - [`registry`]: the fleet manifest (customers, sites, maintenance windows, parts,
//!   machine models, machines, contracts) that seeds a server's registry.
//! - [`clock`]: the injected clock, so time-dependent logic is testable and the demo can
//!   run faster than real time.
//!
//! This crate does no I/O. The other crates depend on it and never on each other.

pub mod batch;
pub mod channel;
pub mod clock;
pub mod event;
pub mod ids;
pub mod registry;
pub mod reject;
pub mod telemetry;
pub mod time;
pub mod topic;

pub use batch::{IngestBatch, IngestResponse, WindowAggregate};
pub use channel::Channel;
pub use clock::{Clock, ScaledClock, SharedClock, SystemClock};
pub use event::{EventKind, MachineEvent, MachineState, StatusMessage};
pub use ids::{
    BatchId, ComponentKey, ContractId, CustomerId, GatewayId, MachineId, MachineModelId, PartId,
    SiteId, TechnicianId, TenantId,
};
pub use reject::RejectReason;
pub use telemetry::{Sample, TelemetryLimits};
pub use time::UnixMs;
pub use topic::{Topic, TopicKind};
