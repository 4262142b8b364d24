//! The InfluxDB v2 sink: every telemetry window the server stores and every health
//! estimate the analysis cycle computes, written as line protocol to `/api/v2/write`
//! (org, bucket, token) with the influxdb2 crate, for Grafana.
//!
//! | measurement | tags | fields | timestamp |
//! |---|---|---|---|
//! | `wearcast_window` | `tenant`, `customer`, `machine`, `component`, `channel` | `count` (integer), `mean`, `min`, `max`, `std`, `last` | window start |
//! | `wearcast_health` | `tenant`, `customer`, `machine`, `component` | `health_index`, `rul_p10_h`, `rul_p50_h`, `rul_p90_h` (hours; absent while unknown), `status_code` (integer: 0 unknown, 1 healthy, 2 degrading, 3 critical, 4 failed) | when computed |
//!
//! A window arrives once per ingest of it; a window the gateway sent in parts is
//! written again, merged, at the same timestamp, which InfluxDB treats as an
//! overwrite. The names are constants in [`schema`]; change them there and nowhere else.
//!
//! - [`config`]: `[server.influx]` and its validation.
//! - [`schema`]: names, and the encoding of a queued point as an influxdb2 `DataPoint`.
//! - [`writer`]: the bounded queue, batching, retries, accounting, shutdown flush.
//!
//! The sink never reads or writes the database and never makes a caller wait.

pub mod config;
pub mod schema;
pub mod writer;

pub use config::{InfluxConfig, InfluxToken};
pub use schema::{MEASUREMENTS, Measurement, Owner, SinkPoint};
pub use writer::{DropReason, InfluxError, InfluxSink, InfluxWriter, SinkStats};
