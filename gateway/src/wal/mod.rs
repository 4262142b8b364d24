//! The write-ahead log under the spool: length- and CRC-framed records ([`record`]) in
//! segment files ([`segment`]), appended and synced by a writer thread ([`writer`]).
//!
//! This layer knows bytes and files only; what the records mean, and how the spool's
//! state is rebuilt from them, is the spool's business.

pub mod record;
pub mod segment;
pub mod writer;

pub use record::Lsn;
pub use segment::{HEADER_LEN, SpoolId, segment_path};
