//! Integration tests of the gateway against real services: an HTTP receiver on
//! 127.0.0.1:0 standing in for the server (storing each batch id once, like the real
//! one), the Mosquitto broker on 127.0.0.1:1883, and for the fault tests a Mosquitto of
//! their own and the gateway as a separate process (`wearcast-gateway-harness`).

// A failed setup step should fail the test on the spot, helpers included.
#![allow(clippy::unwrap_used)]

mod end_to_end;
mod faults;
mod forward;
mod processes;
mod shutdown;
mod support;
