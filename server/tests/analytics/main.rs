//! After-sales analytics end to end inside the server: a real `Server` (port 0,
//! temporary SQLite, a manual clock) with three customers, telemetry and events through
//! the real ingest API, the model and planning steps driven directly, offers and work
//! orders over HTTP, surveys answered through their link, and a real webhook receiver
//! that checks every signature; and the authorization matrix over every route.

#![allow(clippy::unwrap_used)]

mod audit;
mod authz;
mod churn;
mod kpis;
mod proposals;
mod quality;
mod support;
mod surveys;
