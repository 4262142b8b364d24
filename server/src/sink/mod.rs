//! Sinks: copies of what the server has stored, sent on to systems that other tools
//! read (InfluxDB, for the Grafana a manufacturer already runs).
//!
//! A sink is fed only after the store has committed, through a bounded queue that the
//! ingest path and the analysis cycle offer to without waiting, so a slow or absent
//! sink can lose its own copy but can never hold up ingestion or the models. The
//! database stays the record; a sink may not read from it or write to it.

pub mod influx;
