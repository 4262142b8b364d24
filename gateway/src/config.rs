//! The `[gateway]` configuration section, and its checks. Parsing a URL or an id here
//! (once, at start-up) means the rest of the gateway only sees values that are valid.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Broker address: `mqtt://host[:port]` (port 1883), or `mqtts://host[:port]` for
    /// MQTT over TLS (port 8883).
    pub mqtt_url: String,
    /// With `mqtts://`: a PEM file of extra trusted certificates (a private CA, or the
    /// broker's self-signed certificate), besides the system's roots.
    pub mqtt_ca_file: Option<PathBuf>,
    /// Fixed so the broker keeps this gateway's persistent session (and the messages
    /// queued in it) across restarts.
    pub client_id: String,
    /// MQTT user name, for a broker that requires one (e.g. a gateway user made by
    /// `wearcast device gateway-password --name NAME`).
    pub mqtt_username: Option<String>,
    /// That user's password. Prefer `mqtt_password_file`. Never printed.
    pub mqtt_password: Option<Secret>,
    /// A file holding the MQTT password (e.g. the one `wearcast device
    /// gateway-password --output FILE` wrote).
    pub mqtt_password_file: Option<PathBuf>,
    /// With a group, gateways split the traffic through an MQTT shared subscription.
    pub share_group: Option<String>,
    /// Base URL of the Wearcast server: `http://host:port`, or `https://host:port`
    /// when it serves TLS.
    pub server_url: String,
    /// With `https://`: a PEM file of extra trusted certificates (a private CA, or the
    /// server's self-signed certificate), besides the system's roots.
    pub server_ca_file: Option<PathBuf>,
    /// The server's API token for this gateway (role `gateway`), sent as
    /// `Authorization: Bearer`. Prefer `server_token_file`, which keeps it out of the
    /// configuration and the environment. Never printed.
    pub server_token: Option<Secret>,
    /// A file holding the API token (e.g. one written by `wearcast token create
    /// --role gateway --output FILE`).
    pub server_token_file: Option<PathBuf>,
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
    /// Sustained messages per second one machine may publish; beyond it (and the burst)
    /// its messages are rejected as `rate_limited` and counted. 0 (the default) turns
    /// the budget off: devices legitimately burst when they replay what they buffered
    /// offline, so set it from your fleet's publish rate.
    pub device_messages_per_second: u32,
    /// Messages one machine may publish at once beyond the sustained rate.
    pub device_burst: u32,
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
    /// Longest wait between two tries to reach a server that is down: the wait doubles
    /// from half a second up to this (at most 5 min, the default).
    #[serde(with = "humantime_serde")]
    pub forward_max_backoff: Duration,
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

/// A secret string that never prints: `Debug` and serialization (`wearcast config`)
/// show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
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
            mqtt_ca_file: None,
            client_id: "wearcast-gateway".into(),
            mqtt_username: None,
            mqtt_password: None,
            mqtt_password_file: None,
            share_group: None,
            server_url: "http://127.0.0.1:8080".into(),
            server_ca_file: None,
            server_token: None,
            server_token_file: None,
            gateway_id: "gw-1".into(),
            window: Duration::from_secs(60),
            lateness: Duration::from_secs(10),
            max_future: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(35 * 86_400),
            max_payload_bytes: 256 * 1024,
            device_messages_per_second: 0,
            device_burst: 0,
            batch_max_windows: 5000,
            flush_interval: Duration::from_millis(500),
            registry_refresh: Duration::from_secs(60),
            forward_timeout: Duration::from_secs(10),
            forward_max_backoff: MAX_FORWARD_BACKOFF,
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
    /// `mqtts://`: MQTT over TLS.
    pub tls: bool,
}

/// A checked configuration: what the tasks of the gateway are built from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub broker: BrokerAddress,
    /// The TLS client configuration, with `mqtts://`.
    pub mqtt_tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    /// MQTT user name and password, when the broker wants them.
    pub credentials: Option<(String, Secret)>,
    pub subscription: String,
    /// `server_url` without a trailing `/`.
    pub server_url: String,
    /// The TLS client configuration, with `https://`.
    pub server_tls: Option<Arc<rustls::ClientConfig>>,
    /// The API token, from `server_token` or `server_token_file`.
    pub server_token: Option<Secret>,
    pub gateway: GatewayId,
    pub limits: TelemetryLimits,
    /// Per-machine message budget: (sustained per second, burst); `None`: off.
    pub device_budget: Option<(NonZeroU32, NonZeroU32)>,
    pub flush_interval: Duration,
    pub registry_refresh: Duration,
    pub forward_timeout: Duration,
    pub forward_max_backoff: Duration,
    pub data_dir: PathBuf,
    pub spool: SpoolSettings,
}

/// The longest `forward_max_backoff`: a recovered server is used again within 5 min.
pub const MAX_FORWARD_BACKOFF: Duration = Duration::from_secs(300);

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

/// A secret given either inline (`value`) or as a file (`file`, trimmed), never both.
fn secret_setting(
    value: (&'static str, Option<&Secret>),
    file: (&'static str, Option<&std::path::Path>),
) -> Result<Option<Secret>, GatewayError> {
    match (value.1, file.1) {
        (Some(_), Some(_)) => Err(invalid(
            file.0,
            format!("set either {} or {}, not both", value.0, file.0),
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(Secret::new(text.trim())))
            .map_err(|e| invalid(file.0, format!("cannot read {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (MQTT over TLS); any other
/// scheme is refused here rather than failing obscurely at connect time.
pub fn parse_mqtt_url(url: &str) -> Result<BrokerAddress, GatewayError> {
    let field = "mqtt_url";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            field,
            format!("`{url}` is not a URL; expected mqtt://host:port or mqtts://host:port"),
        ));
    };
    let (tls, default_port) = match scheme {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        "wss" | "ws" => {
            return Err(invalid(
                field,
                format!(
                    "scheme `{scheme}://` is not supported: this gateway speaks MQTT over TCP (mqtt://) or TLS (mqtts://), not WebSockets"
                ),
            ));
        }
        other => {
            return Err(invalid(
                field,
                format!(
                    "unknown scheme `{other}://`; expected mqtt://host:port or mqtts://host:port"
                ),
            ));
        }
    };
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
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(field, format!("`{url}` has no host")));
    }
    Ok(BrokerAddress {
        host: host.to_owned(),
        port,
        tls,
    })
}

impl GatewayConfig {
    /// Checks every field and derives what the tasks need.
    pub(crate) fn settings(&self) -> Result<Settings, GatewayError> {
        let broker = parse_mqtt_url(&self.mqtt_url)?;
        let mqtt_tls = match (broker.tls, &self.mqtt_ca_file) {
            (true, ca_file) => Some(Arc::new(
                crate::tls::client_config(ca_file.as_deref())
                    .map_err(|e| invalid("mqtt_ca_file", e))?,
            )),
            (false, Some(_)) => {
                return Err(invalid(
                    "mqtt_ca_file",
                    "is only used with an mqtts:// mqtt_url",
                ));
            }
            (false, None) => None,
        };
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
        let https = server_url.starts_with("https://");
        if !(https && server_url.len() > "https://".len()
            || server_url.starts_with("http://") && server_url.len() > "http://".len())
        {
            return Err(invalid(
                "server_url",
                format!(
                    "`{}` is not an http://host:port or https://host:port URL",
                    self.server_url
                ),
            ));
        }
        let server_tls = match (https, &self.server_ca_file) {
            (true, ca_file) => Some(Arc::new(
                crate::tls::client_config(ca_file.as_deref())
                    .map_err(|e| invalid("server_ca_file", e))?,
            )),
            (false, Some(_)) => {
                return Err(invalid(
                    "server_ca_file",
                    "is only used with an https:// server_url",
                ));
            }
            (false, None) => None,
        };
        let server_token = secret_setting(
            ("server_token", self.server_token.as_ref()),
            ("server_token_file", self.server_token_file.as_deref()),
        )?;
        if let Some(t) = &server_token
            && (t.expose().is_empty() || !t.expose().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "server_token",
                "is empty or not a single word of printable ASCII",
            ));
        }
        let mqtt_password = secret_setting(
            ("mqtt_password", self.mqtt_password.as_ref()),
            ("mqtt_password_file", self.mqtt_password_file.as_deref()),
        )?;
        let credentials = match (&self.mqtt_username, mqtt_password) {
            (Some(user), _) if user.is_empty() || user.contains(['/', '+', '#']) => {
                return Err(invalid(
                    "mqtt_username",
                    format!("`{user}` must be non-empty without `/`, `+` or `#`"),
                ));
            }
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (Some(user), None) => Some((user.clone(), Secret::default())),
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt_username",
                    "must be set when mqtt_password or mqtt_password_file is",
                ));
            }
            (None, None) => None,
        };
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
        let device_budget = match (
            NonZeroU32::new(self.device_messages_per_second),
            NonZeroU32::new(self.device_burst),
        ) {
            (None, _) => None,
            (Some(rate), Some(burst)) => Some((rate, burst)),
            (Some(_), None) => {
                return Err(invalid(
                    "device_burst",
                    "must be at least 1 when device_messages_per_second is set",
                ));
            }
        };
        Ok(Settings {
            broker,
            mqtt_tls,
            client_id: self.client_id.clone(),
            credentials,
            subscription: wearcast_protocol::Topic::subscription_filter(
                self.share_group.as_deref(),
            ),
            server_url,
            server_tls,
            server_token,
            gateway,
            limits,
            device_budget,
            flush_interval: positive("flush_interval", self.flush_interval)?,
            registry_refresh: positive("registry_refresh", self.registry_refresh)?,
            forward_timeout: positive("forward_timeout", self.forward_timeout)?,
            forward_max_backoff: match positive("forward_max_backoff", self.forward_max_backoff)? {
                d if d > MAX_FORWARD_BACKOFF => {
                    return Err(invalid("forward_max_backoff", "must be at most 5m"));
                }
                d => d,
            },
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
                port: 1883,
                tls: false,
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
    fn mqtt_and_mqtts_urls_parse_and_the_rest_say_why_not() {
        assert_eq!(parse_mqtt_url("mqtt://broker").unwrap().port, 1883);
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1884").unwrap(),
            BrokerAddress {
                host: "::1".into(),
                port: 1884,
                tls: false,
            }
        );
        assert_eq!(
            parse_mqtt_url("mqtts://broker").unwrap(),
            BrokerAddress {
                host: "broker".into(),
                port: 8883,
                tls: true,
            }
        );
        let err = parse_mqtt_url("wss://broker:8883").unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = parse_mqtt_url("http://broker").unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(parse_mqtt_url("broker:1883").is_err());
        assert!(parse_mqtt_url("mqtt://broker:port").is_err());
    }

    #[test]
    fn mqtt_credentials_come_from_a_file_need_a_user_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw-1.password");
        std::fs::write(&file, "0123abcd\n").unwrap();
        let config = GatewayConfig {
            mqtt_username: Some("gw-1".into()),
            mqtt_password_file: Some(file.clone()),
            ..GatewayConfig::default()
        };
        let s = config.settings().unwrap();
        let (user, password) = s.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("gw-1", "0123abcd"));
        assert!(!format!("{s:?}").contains("0123abcd"));
        let options = crate::mqtt::options(&s);
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("gw-1", "0123abcd")
        );
        assert!(
            GatewayConfig::default()
                .settings()
                .unwrap()
                .credentials
                .is_none()
        );
        let no_user = GatewayConfig {
            mqtt_password: Some(Secret::new("0123abcd")),
            ..GatewayConfig::default()
        };
        let err = no_user.settings().unwrap_err().to_string();
        assert!(err.contains("mqtt_username"), "{err}");
        let both = GatewayConfig {
            mqtt_password: Some(Secret::new("x")),
            ..config
        };
        let err = both.settings().unwrap_err().to_string();
        assert!(
            err.contains("mqtt_password_file") && err.contains("not both"),
            "{err}"
        );
    }

    #[test]
    fn the_server_token_comes_from_its_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.token");
        std::fs::write(&file, "wc_secret123\n").unwrap();
        let config = GatewayConfig {
            server_token_file: Some(file.clone()),
            ..GatewayConfig::default()
        };
        let s = config.settings().unwrap();
        assert_eq!(
            s.server_token.as_ref().map(Secret::expose),
            Some("wc_secret123")
        );
        assert!(!format!("{s:?}").contains("wc_secret123"));
        let inline = GatewayConfig {
            server_token: Some(Secret::new("wc_secret123")),
            ..GatewayConfig::default()
        };
        assert!(
            !serde_json::to_string(&inline)
                .unwrap()
                .contains("wc_secret123")
        );
        assert!(!format!("{inline:?}").contains("wc_secret123"));
        let both = GatewayConfig {
            server_token_file: Some(file),
            ..inline
        };
        assert!(
            both.settings()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let missing = GatewayConfig {
            server_token_file: Some(dir.path().join("nope.token")),
            ..GatewayConfig::default()
        };
        let err = missing.settings().unwrap_err().to_string();
        assert!(
            err.contains("server_token_file") && err.contains("nope.token"),
            "{err}"
        );
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
    fn server_urls_and_ids_are_checked_at_start_up() {
        let https = GatewayConfig {
            server_url: "https://server:8443".into(),
            ..GatewayConfig::default()
        };
        assert!(https.settings().unwrap().server_tls.is_some());
        assert!(
            GatewayConfig::default()
                .settings()
                .unwrap()
                .server_tls
                .is_none()
        );
        for url in ["ftp://server", "https://", "server:8080"] {
            let config = GatewayConfig {
                server_url: url.into(),
                ..GatewayConfig::default()
            };
            let err = config.settings().unwrap_err().to_string();
            assert!(err.contains("server_url"), "{url}: {err}");
        }
        let config = GatewayConfig {
            server_ca_file: Some("/nonexistent/ca.pem".into()),
            ..https.clone()
        };
        let err = config.settings().unwrap_err().to_string();
        assert!(
            err.contains("server_ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let config = GatewayConfig {
            server_ca_file: Some("/nonexistent/ca.pem".into()),
            ..GatewayConfig::default()
        };
        let err = config.settings().unwrap_err().to_string();
        assert!(err.contains("only used with an https://"), "{err}");
        let config = GatewayConfig {
            gateway_id: "gw/1".into(),
            ..GatewayConfig::default()
        };
        let err = config.settings().unwrap_err().to_string();
        assert!(err.contains("gateway_id"), "{err}");
    }

    #[test]
    fn the_forward_backoff_cap_is_at_most_five_minutes() {
        assert_eq!(
            GatewayConfig::default()
                .settings()
                .unwrap()
                .forward_max_backoff,
            Duration::from_secs(300)
        );
        for (cap, ok) in [
            (Duration::from_secs(2), true),
            (Duration::ZERO, false),
            (Duration::from_secs(301), false),
        ] {
            let config = GatewayConfig {
                forward_max_backoff: cap,
                ..GatewayConfig::default()
            };
            match config.settings() {
                Ok(s) => assert!(ok && s.forward_max_backoff == cap, "{cap:?} was taken"),
                Err(e) => assert!(
                    !ok && e.to_string().contains("forward_max_backoff"),
                    "{cap:?}: {e}"
                ),
            }
        }
    }

    #[test]
    fn a_device_budget_needs_a_burst_and_is_off_by_default() {
        assert_eq!(
            GatewayConfig::default().settings().unwrap().device_budget,
            None
        );
        let config = GatewayConfig {
            device_messages_per_second: 10,
            ..GatewayConfig::default()
        };
        let err = config.settings().unwrap_err().to_string();
        assert!(err.contains("device_burst"), "{err}");
        let config = GatewayConfig {
            device_messages_per_second: 10,
            device_burst: 50,
            ..GatewayConfig::default()
        };
        let (rate, burst) = config.settings().unwrap().device_budget.unwrap();
        assert_eq!((rate.get(), burst.get()), (10, 50));
    }
}
