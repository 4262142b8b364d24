//! The `[gateway]` configuration section, and its checks. Parsing a URL or an id here
//! (once, at start-up) means the rest of the gateway only sees values that are valid.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wearcast_protocol::GatewayId;
use wearcast_protocol::telemetry::TelemetryLimits;

use crate::GatewayError;
use crate::spool::SpoolSettings;
use crate::window::VibrationChannels;

/// Config section `[gateway]`; every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Broker address, `mqtt://host[:port]` (plain TCP; TLS is not built in).
    pub mqtt_url: String,
    /// Fixed so the broker keeps this gateway's persistent session (and the messages
    /// queued in it) across restarts.
    pub client_id: String,
    /// With a group, gateways split the traffic through an MQTT shared subscription.
    pub share_group: Option<String>,
    /// Base URL of the Wearcast server (`http://host:port`).
    pub server_url: String,
    /// Names this gateway in every batch it sends.
    pub gateway_id: String,
    /// Length of the fixed aggregation windows, in clock time.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How late (in event time) a sample may arrive and still land in its window.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Clock skew allowance: how far ahead of the clock a sample may be.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// How old a sample may be (devices buffer while offline).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Larger MQTT payloads are rejected as `too_large`.
    pub max_payload_bytes: usize,
    /// Most windows in one ingest batch, which bounds the size of one HTTP request.
    pub batch_max_windows: usize,
    /// Real time between aggregator sweeps and forward attempts.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Real time between reloads of the machine registry.
    #[serde(with = "humantime_serde")]
    pub registry_refresh: Duration,
    /// Real-time limit of one HTTP request to the server.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: Duration,
    /// Holds the durable spool (`spool/`), `dead-letter.jsonl` and `rejected.jsonl`. One
    /// gateway per directory: a second one refuses to start.
    pub data_dir: PathBuf,
    /// Disk budget of the spool, in bytes. Past it, `spool_overflow` applies.
    pub spool_max_bytes: u64,
    /// The spool's log is cut into files of about this size; space is freed a whole
    /// file at a time. At most a quarter of `spool_max_bytes`.
    pub spool_segment_bytes: u64,
    /// What happens when the spool is full: `block` (stop acknowledging new messages, so
    /// the broker keeps them) or `drop_oldest` (delete the oldest undelivered data,
    /// counted in `wearcast_gateway_dropped_total{reason="spool_full"}`).
    pub spool_overflow: OverflowPolicy,
    /// Channels whose quantity contains one of these words also get RMS and kurtosis.
    pub vibration_quantities: Vec<String>,
}

/// The spool's overflow policy; see [`GatewayConfig::spool_overflow`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Stop taking messages until the server has taken enough of the backlog. Nothing
    /// is lost in the gateway; the broker must be able to queue what waits (Mosquitto:
    /// `max_queued_messages`, `max_queued_bytes`).
    #[default]
    Block,
    /// Keep taking messages and drop the oldest undelivered batches to make room.
    DropOldest,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            client_id: "wearcast-gateway".into(),
            share_group: None,
            server_url: "http://127.0.0.1:8080".into(),
            gateway_id: "gw-1".into(),
            window: Duration::from_secs(60),
            lateness: Duration::from_secs(10),
            max_future: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(35 * 86_400),
            max_payload_bytes: 256 * 1024,
            batch_max_windows: 5000,
            flush_interval: Duration::from_millis(500),
            registry_refresh: Duration::from_secs(60),
            forward_timeout: Duration::from_secs(10),
            data_dir: PathBuf::from("wearcast-data/gateway"),
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 16 << 20,
            spool_overflow: OverflowPolicy::Block,
            vibration_quantities: vec!["vibration".into(), "accel".into()],
        }
    }
}

/// Where the broker is, from `mqtt_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

/// A checked configuration: what the tasks of the gateway are built from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub broker: BrokerAddress,
    pub client_id: String,
    pub subscription: String,
    /// `server_url` without a trailing `/`.
    pub server_url: String,
    pub gateway: GatewayId,
    pub limits: TelemetryLimits,
    pub flush_interval: Duration,
    pub registry_refresh: Duration,
    pub forward_timeout: Duration,
    pub data_dir: PathBuf,
    pub spool: SpoolSettings,
}

/// Smallest spool segment: below this, file overhead dominates.
const MIN_SEGMENT_BYTES: u64 = 4096;

fn invalid(field: &'static str, reason: impl Into<String>) -> GatewayError {
    GatewayError::Config {
        field,
        reason: reason.into(),
    }
}

fn millis(field: &'static str, d: Duration) -> Result<i64, GatewayError> {
    i64::try_from(d.as_millis()).map_err(|_| invalid(field, "is too long"))
}

fn positive(field: &'static str, d: Duration) -> Result<Duration, GatewayError> {
    if d.is_zero() {
        Err(invalid(field, "must be longer than 0"))
    } else {
        Ok(d)
    }
}

/// Parses `mqtt://host[:port]`; the gateway has no TLS, so any other scheme is refused
/// here rather than failing obscurely at connect time.
pub fn parse_mqtt_url(url: &str) -> Result<BrokerAddress, GatewayError> {
    let field = "mqtt_url";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            field,
            format!("`{url}` is not a URL; expected mqtt://host:port"),
        ));
    };
    match scheme {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" | "wss" | "ws" => {
            return Err(invalid(
                field,
                format!(
                    "scheme `{scheme}://` is not supported: this gateway speaks plain MQTT over TCP only (mqtt://host:port)"
                ),
            ));
        }
        other => {
            return Err(invalid(
                field,
                format!("unknown scheme `{other}://`; expected mqtt://host:port"),
            ));
        }
    }
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('?') || authority.contains('@') {
        return Err(invalid(
            field,
            format!("`{url}` must be just mqtt://host:port (no path, query or credentials)"),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:1883` and `host:1883`; a bare IPv6 literal needs brackets.
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid(field, format!("port `{port}` is not a number 0–65535")))?;
            (host, port)
        }
        _ => (authority, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(field, format!("`{url}` has no host")));
    }
    Ok(BrokerAddress {
        host: host.to_owned(),
        port,
    })
}

impl GatewayConfig {
    /// Checks every field and derives what the tasks need.
    pub(crate) fn settings(&self) -> Result<Settings, GatewayError> {
        let broker = parse_mqtt_url(&self.mqtt_url)?;
        if self.client_id.is_empty() {
            // rumqttc panics on an empty id with a persistent session.
            return Err(invalid(
                "client_id",
                "must not be empty (the persistent session is keyed by it)",
            ));
        }
        if let Some(group) = &self.share_group
            && (group.is_empty() || group.contains(['/', '+', '#']))
        {
            return Err(invalid(
                "share_group",
                format!("`{group}` must be non-empty without `/`, `+` or `#`"),
            ));
        }
        let server_url = self.server_url.trim_end_matches('/').to_owned();
        if server_url.starts_with("https://") {
            return Err(invalid(
                "server_url",
                "https is not supported: this gateway is built without TLS (use http:// or a local TLS proxy)",
            ));
        }
        if !server_url.starts_with("http://") || server_url.len() <= "http://".len() {
            return Err(invalid(
                "server_url",
                format!("`{}` is not an http://host:port URL", self.server_url),
            ));
        }
        let gateway = GatewayId::parse(self.gateway_id.clone())
            .map_err(|e| invalid("gateway_id", e.to_string()))?;
        let window_ms = millis("window", positive("window", self.window)?)?;
        let lateness_ms = millis("lateness", self.lateness)?;
        if self.max_payload_bytes == 0 {
            return Err(invalid("max_payload_bytes", "must be more than 0"));
        }
        if self.batch_max_windows == 0 {
            return Err(invalid("batch_max_windows", "must be more than 0"));
        }
        let limits = TelemetryLimits {
            max_payload_bytes: self.max_payload_bytes,
            max_future_ms: millis("max_future", self.max_future)?,
            max_age_ms: millis("max_age", self.max_age)?,
            ..TelemetryLimits::default()
        };
        if self.spool_segment_bytes < MIN_SEGMENT_BYTES {
            return Err(invalid(
                "spool_segment_bytes",
                format!("must be at least {MIN_SEGMENT_BYTES}"),
            ));
        }
        if self.spool_max_bytes < 4 * self.spool_segment_bytes {
            return Err(invalid(
                "spool_max_bytes",
                format!(
                    "{} is less than 4 segments of spool_segment_bytes ({}); space is freed a segment at a time",
                    self.spool_max_bytes, self.spool_segment_bytes
                ),
            ));
        }
        let spool = SpoolSettings {
            dir: self.data_dir.join("spool"),
            gateway: gateway.clone(),
            segment_bytes: self.spool_segment_bytes,
            max_bytes: self.spool_max_bytes,
            overflow: self.spool_overflow,
            batch_max_windows: self.batch_max_windows,
            window_ms,
            lateness_ms,
            vibration: VibrationChannels::new(self.vibration_quantities.iter().cloned()),
        };
        Ok(Settings {
            broker,
            client_id: self.client_id.clone(),
            subscription: wearcast_protocol::Topic::subscription_filter(
                self.share_group.as_deref(),
            ),
            server_url,
            gateway,
            limits,
            flush_interval: positive("flush_interval", self.flush_interval)?,
            registry_refresh: positive("registry_refresh", self.registry_refresh)?,
            forward_timeout: positive("forward_timeout", self.forward_timeout)?,
            data_dir: self.data_dir.clone(),
            spool,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_subscribe_to_every_wearcast_topic() {
        let s = GatewayConfig::default().settings().unwrap();
        assert_eq!(
            s.broker,
            BrokerAddress {
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(s.subscription, "wearcast/v1/+/+/+");
        assert_eq!(s.spool.window_ms, 60_000);
        assert_eq!(s.limits.max_age_ms, 35 * 86_400_000);
    }

    #[test]
    fn a_share_group_turns_the_filter_into_a_shared_subscription() {
        let config = GatewayConfig {
            share_group: Some("edge".into()),
            ..GatewayConfig::default()
        };
        assert_eq!(
            config.settings().unwrap().subscription,
            "$share/edge/wearcast/v1/+/+/+"
        );
    }

    #[test]
    fn mqtt_urls_without_tls_parse_and_the_rest_say_why_not() {
        assert_eq!(parse_mqtt_url("mqtt://broker").unwrap().port, 1883);
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1884").unwrap(),
            BrokerAddress {
                host: "::1".into(),
                port: 1884
            }
        );
        let err = parse_mqtt_url("mqtts://broker:8883")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = parse_mqtt_url("http://broker").unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(parse_mqtt_url("broker:1883").is_err());
        assert!(parse_mqtt_url("mqtt://broker:port").is_err());
    }

    #[test]
    fn a_typo_in_the_config_section_is_an_error() {
        let err = serde_json::from_str::<GatewayConfig>(r#"{"windwo": "30s"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let config: GatewayConfig =
            serde_json::from_str(r#"{"window": "30s", "flush_interval": "1s 500ms"}"#).unwrap();
        assert_eq!(config.window, Duration::from_secs(30));
        assert_eq!(config.flush_interval, Duration::from_millis(1500));
    }

    #[test]
    fn the_spool_budget_must_hold_several_segments_and_the_policy_is_named() {
        let config: GatewayConfig = serde_json::from_str(
            r#"{"spool_max_bytes": 1000000, "spool_segment_bytes": 100000, "spool_overflow": "drop_oldest"}"#,
        )
        .unwrap();
        let s = config.settings().unwrap();
        assert_eq!(s.spool.overflow, OverflowPolicy::DropOldest);
        assert_eq!(s.spool.dir, PathBuf::from("wearcast-data/gateway/spool"));
        let too_small = GatewayConfig {
            spool_max_bytes: 300_000,
            spool_segment_bytes: 100_000,
            ..GatewayConfig::default()
        };
        let err = too_small.settings().unwrap_err().to_string();
        assert!(err.contains("spool_max_bytes"), "{err}");
        let err = serde_json::from_str::<GatewayConfig>(r#"{"spool_overflow": "drop_newest"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn https_and_bad_ids_are_refused_at_start_up() {
        let config = GatewayConfig {
            server_url: "https://server".into(),
            ..GatewayConfig::default()
        };
        assert!(config.settings().is_err());
        let config = GatewayConfig {
            gateway_id: "gw/1".into(),
            ..GatewayConfig::default()
        };
        let err = config.settings().unwrap_err().to_string();
        assert!(err.contains("gateway_id"), "{err}");
    }
}
