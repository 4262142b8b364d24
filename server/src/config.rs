//! Server configuration: the `[server]` section of the config file, overridable by
//! environment and flags (the binary layers them). Unknown keys are errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API and dashboard.
    pub http_listen: String,
    /// Directory of the SQLite database (`wearcast.db`).
    pub data_dir: PathBuf,
    /// A fleet manifest (JSON) to import at start-up; importing again is harmless.
    pub registry: Option<PathBuf>,
    /// Real time between analysis cycles (model refresh and planning).
    #[serde(with = "humantime_serde")]
    pub analysis_interval: Duration,
    /// Failure risk within this horizon (clock time) makes a component worth an offer.
    #[serde(with = "humantime_serde")]
    pub planning_horizon: Duration,
    /// Risk tolerance for customers without a contract.
    pub default_risk_tolerance: f64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Requests taking longer are answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A window ending further ahead of the server's clock is rejected.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("wearcast-data"),
            registry: None,
            analysis_interval: Duration::from_secs(10),
            planning_horizon: Duration::from_secs(21 * 24 * 3600),
            default_risk_tolerance: crate::planner::DEFAULT_RISK_TOLERANCE,
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_future: Duration::from_secs(300),
        }
    }
}

impl ServerConfig {
    /// Checks values serde cannot; returns every problem.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.http_listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "server.http_listen `{}` is not an address like 127.0.0.1:8080",
                self.http_listen
            ));
        }
        if !(self.default_risk_tolerance > 0.0 && self.default_risk_tolerance < 0.5) {
            problems.push(format!(
                "server.default_risk_tolerance {} is not in (0, 0.5)",
                self.default_risk_tolerance
            ));
        }
        if self.analysis_interval.is_zero() {
            problems.push("server.analysis_interval must be positive".into());
        }
        if self.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes must be at least 1024".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
