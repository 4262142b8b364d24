//! Integration tests of the gateway against real services: an HTTP receiver on
//! 127.0.0.1:0 standing in for the server, and the Mosquitto broker on 127.0.0.1:1883.

// A failed setup step should fail the test on the spot, helpers included.
#![allow(clippy::unwrap_used)]

mod end_to_end;
mod forward;
mod shutdown;
mod support;
