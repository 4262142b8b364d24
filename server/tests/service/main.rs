//! Field service end to end inside the server: a real `Server` (port 0, temporary
//! SQLite, a manual clock), a degrading component fed through the real ingest API, the
//! model and planning steps driven directly, and the offer → work order → completion
//! flow over HTTP. Notifications go to a real HTTP receiver and a real SMTP server
//! (Python's aiosmtpd).

#![allow(clippy::unwrap_used)]

mod dashboards;
mod limits;
mod notifications;
mod support;
mod tls;
mod workflow;
