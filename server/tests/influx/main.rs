//! The InfluxDB sink against a real server of the InfluxDB v2 write API: Debian's
//! VictoriaMetrics, started by the test as a child process on a free port, read back
//! through its export API. A real `Server` (port 0, temporary SQLite) is fed through the
//! real ingest API. Without the `victoria-metrics` binary the tests that need it skip
//! with a message, except under `CI=true`, where they fail (`scripts/services` installs
//! it). The Grafana dashboards' names are checked against the sink's here too.

#![allow(clippy::unwrap_used)]

mod grafana;
mod sink;
mod support;
mod victoria;
