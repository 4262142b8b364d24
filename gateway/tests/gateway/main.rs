//! Integration tests of the gateway against real services: an HTTP receiver on
//! 127.0.0.1:0 standing in for the server (storing each batch id once, like the real
//! one) and the Mosquitto broker on 127.0.0.1:1883. The process-level fault tests
//! (`kill -9`, outages, broker restarts, disk budgets, shared subscriptions) run the
//! real server and live in the root package: `tests/e2e/faults.rs`.

// A failed setup step should fail the test on the spot, helpers included.
#![allow(clippy::unwrap_used)]

mod alerts;
mod end_to_end;
mod forward;
mod shutdown;
mod support;
