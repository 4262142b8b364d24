//! Queries the wear models need beyond the core store (fleet lifetimes, model state).
//! Kept apart from `sqlite.rs` so model work and offer work do not collide.

#[allow(unused_imports)]
use super::Store;
