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
    /// Failure risk within this horizon beyond the part's lead time (clock time) makes a
    /// component worth an offer.
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
    pub service: ServiceConfig,
    pub notifications: NotificationsConfig,
    /// After-sales analytics: surveys, account health, LTV, recommendations.
    pub analytics: crate::analytics::AnalyticsConfig,
    /// The InfluxDB v2 sink of telemetry windows and health estimates (off without a
    /// URL).
    pub influx: crate::sink::influx::InfluxConfig,
    /// Mark the dashboards' session cookies `Secure` (sent over HTTPS only). Set it
    /// when a TLS-terminating proxy serves Wearcast; plain HTTP would then never send
    /// them back. With `tls` set they are always `Secure`.
    pub secure_cookies: bool,
    /// Serve HTTPS only, with this certificate and key (`[server.tls]`: `cert_file`,
    /// `key_file`, PEM). Unset: plain HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Each tenant's `/api/v1` request budget (429 beyond it).
    pub rate_limit: crate::api::limits::RateLimitConfig,
    /// How long raw telemetry windows and batch ids are kept.
    pub retention: RetentionConfig,
}

/// `[server.retention]`: raw telemetry windows older than `raw_windows` (platform
/// time) become hourly roll-ups, kept for the life of the machine; batch ids (which
/// recognise a redelivered batch) are forgotten after `batch_ids`. A pass runs every
/// `interval` (real time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub raw_windows: Duration,
    #[serde(with = "humantime_serde")]
    pub batch_ids: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw_windows: Duration::from_secs(30 * 86_400),
            // Longer than a gateway keeps a sample (35 days by default), so a batch it
            // redelivers from its spool is still recognised.
            batch_ids: Duration::from_secs(60 * 86_400),
            interval: Duration::from_secs(600),
        }
    }
}

impl RetentionConfig {
    /// Problems with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.raw_windows < Duration::from_secs(2 * 3600) {
            out.push("server.retention.raw_windows must be at least 2h".into());
        }
        if self.batch_ids < Duration::from_secs(86_400) {
            out.push(
                "server.retention.batch_ids must be at least 1d (longer than a gateway may hold a batch)"
                    .into(),
            );
        }
        if self.interval.is_zero() {
            out.push("server.retention.interval must be positive".into());
        }
        out
    }
}

/// How field service plans and contacts customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// At most this many offers (new or moved) per customer per rolling week; urgent
    /// visits always go out but count.
    pub contact_cap_per_week: u32,
    /// After a customer declines, their components are not offered again for this long.
    #[serde(with = "humantime_serde")]
    pub decline_cooldown: Duration,
    /// Days for a part on the depot's shelf to reach a site.
    pub dispatch_days: f64,
    /// Technician travel between sites in the same region, and between regions.
    pub travel_same_region_hours: f64,
    pub travel_other_region_hours: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            contact_cap_per_week: 3,
            decline_cooldown: Duration::from_secs(7 * 24 * 3600),
            dispatch_days: 1.0,
            travel_same_region_hours: 1.0,
            travel_other_region_hours: 8.0,
        }
    }
}

/// Where notifications go. Each is written to the outbox with the change it announces
/// and delivered with retries, so none is lost while a receiver is down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// CRM / ERP endpoints; each POST is signed with the endpoint's secret.
    pub webhooks: Vec<WebhookConfig>,
    /// E-mail to customer contacts and the service desk; none when absent.
    pub smtp: Option<SmtpConfig>,
    /// Longest wait between two delivery attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Real time between two looks at the outbox.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            smtp: None,
            max_backoff: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Shared secret for the `X-Wearcast-Signature` HMAC; never logged.
    pub secret: String,
    /// Events to send (e.g. `offer.accepted`); empty means all.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("events", &self.events)
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// A relay that accepts plain SMTP (e.g. the local Postfix); TLS to the internet
    /// is the relay's job.
    pub host: String,
    pub port: u16,
    pub from: String,
    /// Where internal notices go (accepted offers, urgent visits, unassigned work).
    #[serde(default)]
    pub service_desk: Option<String>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("service_desk", &self.service_desk)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("wearcast-data"),
            registry: None,
            analysis_interval: Duration::from_secs(10),
            planning_horizon: Duration::from_secs(14 * 24 * 3600),
            default_risk_tolerance: crate::planner::DEFAULT_RISK_TOLERANCE,
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_future: Duration::from_secs(300),
            service: ServiceConfig::default(),
            notifications: NotificationsConfig::default(),
            analytics: crate::analytics::AnalyticsConfig::default(),
            influx: crate::sink::influx::InfluxConfig::default(),
            secure_cookies: false,
            tls: None,
            rate_limit: crate::api::limits::RateLimitConfig::default(),
            retention: RetentionConfig::default(),
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
        for w in &self.notifications.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                problems.push(format!(
                    "server.notifications.webhooks: `{}` must be an http:// or https:// URL",
                    w.url
                ));
            }
            if w.secret.len() < 16 {
                problems.push(format!(
                    "server.notifications.webhooks: the secret of `{}` must be at least 16 characters",
                    w.url
                ));
            }
        }
        if self.service.dispatch_days < 0.0
            || self.service.travel_same_region_hours < 0.0
            || self.service.travel_other_region_hours < 0.0
        {
            problems.push("server.service: days and hours must not be negative".into());
        }
        if self.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes must be at least 1024".into());
        }
        problems.extend(self.analytics.problems());
        problems.extend(self.influx.problems());
        problems.extend(self.rate_limit.problems());
        problems.extend(self.retention.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_may_be_http_or_https_and_nothing_else() {
        let with = |url: &str| ServerConfig {
            notifications: NotificationsConfig {
                webhooks: vec![WebhookConfig {
                    url: url.into(),
                    secret: "0123456789abcdef".into(),
                    events: vec![],
                }],
                ..NotificationsConfig::default()
            },
            ..ServerConfig::default()
        };
        assert!(with("http://hooks.local/wearcast").check().is_ok());
        assert!(with("https://hooks.example.com/wearcast").check().is_ok());
        let problems = with("ftp://hooks.local").check().unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("ftp://hooks.local")),
            "{problems:?}"
        );
    }
}
