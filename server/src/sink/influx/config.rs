//! `[server.influx]`: where the InfluxDB sink writes and how hard it tries. The sink is
//! off unless `url` is set; then `org`, `bucket` and `token` are required.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL of InfluxDB 2 (or any server of its `/api/v2/write` API), e.g.
    /// `http://influxdb:8086`. No URL, no sink.
    pub url: Option<String>,
    pub org: String,
    pub bucket: String,
    /// API token with write access to the bucket; never logged or printed.
    pub token: Option<InfluxToken>,
    /// Points per write request.
    pub batch_size: usize,
    /// A batch that is not full is written after this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Points waiting in memory at most; beyond, new points are dropped and counted
    /// (`wearcast_influx_points_dropped_total{reason="queue_full"}`).
    pub queue_capacity: usize,
    /// Longest wait between two attempts at a failing write (it doubles from 100 ms).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Timeout of one write request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// On shutdown, how long the sink keeps writing what is queued before it counts the
    /// rest as dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Compress write bodies (`Content-Encoding: gzip`, at the best and slowest level):
    /// about 5× less traffic for half the sink's throughput and CPU on the async
    /// workers, so worth it only when InfluxDB is far away.
    pub gzip: bool,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: None,
            org: String::new(),
            bucket: String::new(),
            token: None,
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 100_000,
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            gzip: false,
        }
    }
}

impl InfluxConfig {
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Every problem, each naming its setting; none when the sink is off.
    pub fn problems(&self) -> Vec<String> {
        let Some(url) = &self.url else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => problems.push(format!(
                "server.influx.url `{url}` must be an http:// or https:// URL with a host, like http://127.0.0.1:8086"
            )),
            Err(e) => problems.push(format!(
                "server.influx.url `{url}` is not a URL ({e}); expected e.g. http://127.0.0.1:8086"
            )),
        }
        if self.org.trim().is_empty() {
            problems.push(
                "server.influx.org is required when server.influx.url is set (--influx-org)".into(),
            );
        }
        if self.bucket.trim().is_empty() {
            problems.push(
                "server.influx.bucket is required when server.influx.url is set (--influx-bucket)"
                    .into(),
            );
        }
        if self.token.as_ref().is_none_or(|t| t.0.trim().is_empty()) {
            problems.push(
                "server.influx.token is required when server.influx.url is set (--influx-token or WEARCAST_SERVER__INFLUX__TOKEN)"
                    .into(),
            );
        }
        if self.batch_size == 0 {
            problems.push("server.influx.batch_size must be at least 1".into());
        }
        if self.queue_capacity < self.batch_size {
            problems.push(format!(
                "server.influx.queue_capacity {} must be at least server.influx.batch_size {}",
                self.queue_capacity, self.batch_size
            ));
        }
        for (name, d) in [
            ("flush_interval", self.flush_interval),
            ("max_backoff", self.max_backoff),
            ("timeout", self.timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("server.influx.{name} must be positive"));
            }
        }
        problems
    }
}

/// The InfluxDB API token. Its `Debug` and its serialised form (`wearcast config`) are
/// redacted, so it cannot end up in a log line or a printed configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InfluxToken(String);

impl InfluxToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for InfluxToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for InfluxToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> InfluxConfig {
        InfluxConfig {
            url: Some("http://127.0.0.1:8086".into()),
            org: "acme".into(),
            bucket: "telemetry".into(),
            token: Some(InfluxToken::new("s3cr3t-token")),
            ..InfluxConfig::default()
        }
    }

    #[test]
    fn the_sink_is_off_and_valid_without_a_url() {
        assert!(!InfluxConfig::default().enabled());
        assert!(InfluxConfig::default().problems().is_empty());
        assert!(
            enabled().problems().is_empty(),
            "{:?}",
            enabled().problems()
        );
    }

    #[test]
    fn a_bad_url_names_the_setting() {
        for bad in ["influx:8086", "not a url", "ftp://host/"] {
            let c = InfluxConfig {
                url: Some(bad.into()),
                ..enabled()
            };
            let p = c.problems();
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with("server.influx.url"), "{p:?}");
        }
    }

    #[test]
    fn a_url_without_token_org_or_bucket_names_each_missing_setting() {
        let c = InfluxConfig {
            url: Some("http://127.0.0.1:8086".into()),
            ..InfluxConfig::default()
        };
        let p = c.problems().join("\n");
        for name in [
            "server.influx.org",
            "server.influx.bucket",
            "server.influx.token",
        ] {
            assert!(p.contains(name), "{p}");
        }
    }

    #[test]
    fn the_token_is_never_in_debug_output_or_the_printed_configuration() {
        let c = enabled();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
        assert!(json.contains(REDACTED));
        assert_eq!(c.token.unwrap().expose(), "s3cr3t-token");
    }
}
