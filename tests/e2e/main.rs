//! End-to-end tests: the real `wearcast` binary, a real MQTT broker (the embedded one,
//! spoken to by real clients, or for the fault tests a Mosquitto of their own), real
//! HTTP. One test binary, one module per area.
//!
//! Knobs for debugging: `E2E_MQTT_URL=mqtt://host:port` runs the platform against that
//! broker instead of the embedded one; `E2E_RUST_LOG` sets the platform's log filter. A
//! failing test prints the platform's log tail and keeps the whole log in the temp dir.

// A test that cannot set up its fixture should stop right there.
#![allow(clippy::unwrap_used)]

mod backtest;
mod broker_access;
mod cli;
mod common;
mod demo;
mod devices;
mod faults;
mod pipeline;
mod processes;
mod rejections;
mod tls;
