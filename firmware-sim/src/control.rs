//! Steering a running simulation from outside, as the world around real machines does:
//! a technician replaces a part before it fails. Take a [`SimControl`] from the fleet
//! ([`crate::Fleet::control`]) before handing the fleet to [`crate::run`]; each machine's
//! task applies its commands at its next step (within `publish_every`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use wearcast_protocol::{ComponentKey, MachineId, UnixMs};

/// A cloneable handle on a running simulation.
#[derive(Clone, Debug, Default)]
pub struct SimControl {
    pending: Arc<Mutex<HashMap<MachineId, Vec<Command>>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Put a new part in `component` at `at` (or as soon as the machine's simulation
    /// reaches `at`, if it is already past it).
    Replace { component: ComponentKey, at: UnixMs },
}

impl SimControl {
    /// A technician replaces `component` of `machine` at `at` with a new part: its life
    /// ends there, without a failure, and a fresh life begins (the machine reports
    /// `part_replaced`; the ground truth records the new life). A component that
    /// failed and awaits its replacement, or an unknown one, is left as it is.
    pub fn replace_component(&self, machine: &MachineId, component: &ComponentKey, at: UnixMs) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(machine.clone())
            .or_default()
            .push(Command::Replace {
                component: component.clone(),
                at,
            });
    }

    /// The commands for `machine` since the last call, in the order they were given.
    pub(crate) fn take(&self, machine: &MachineId) -> Vec<Command> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(machine)
            .unwrap_or_default()
    }
}
