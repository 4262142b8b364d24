//! The `[sim]` section of the configuration file, and the broker address it names.
//! Every field has a default, so an empty section runs the demo fleet against a local
//! broker; an unknown field is an error, so a typo does not silently fall back.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wearcast_protocol::TenantId;

use crate::error::SimError;
use crate::faults::FaultConfig;

/// Port of plain MQTT when the URL names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// Config section `[sim]`; every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Broker to publish to: `mqtt://host:port` (plain TCP; `tcp://` is accepted too).
    pub mqtt_url: String,
    /// Each machine connects as `{client_prefix}-{machine}`.
    pub client_prefix: String,
    /// Seeds everything random: the fleet, the lives, the readings.
    pub seed: u64,
    /// Number of machines (at least 1), spread over the demo customers' sites.
    pub machines: usize,
    /// Clock time between two samples of a machine.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// Clock time of history published before going live.
    #[serde(with = "humantime_serde")]
    pub backfill: Duration,
    /// Real time between two live publishes; each carries every sample due since the last.
    #[serde(with = "humantime_serde")]
    pub publish_every: Duration,
    /// Where to append the ground truth (JSON lines); `None` writes none.
    pub truth_path: Option<PathBuf>,
    /// Tenant the fleet belongs to (a topic level, so `[A-Za-z0-9_-]{1,64}`).
    pub tenant: String,
    /// A demo customer (`northwind`, `contoso` or `globex`) whose machines all go
    /// quiet `goes_quiet_after` (clock time) after the run starts: they publish
    /// nothing from then on, though they still wear. The demo's quietly churning
    /// customer.
    pub quiet_customer: Option<String>,
    #[serde(with = "humantime_serde")]
    pub goes_quiet_after: Duration,
    /// Fault injection, for exercising the gateway; all off by default.
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            mqtt_url: format!("mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}"),
            client_prefix: "wearcast-sim".into(),
            seed: 7,
            machines: 30,
            sample_interval: Duration::from_secs(5 * 60),
            backfill: Duration::from_secs(21 * 24 * 3600),
            publish_every: Duration::from_secs(1),
            truth_path: None,
            tenant: "acme".into(),
            quiet_customer: None,
            goes_quiet_after: Duration::from_secs(3 * 24 * 3600),
            faults: FaultConfig::default(),
        }
    }
}

impl SimConfig {
    /// Checks every field, so a bad setting fails at start-up with the field's name.
    pub fn validate(&self) -> Result<(), SimError> {
        self.broker()?;
        self.tenant_id()?;
        self.faults.validate()?;
        if self.machines == 0 {
            return Err(SimError::config("machines", "must be at least 1"));
        }
        if self.machines > 9_999 {
            return Err(SimError::config(
                "machines",
                format!(
                    "{} is more than the 9999 the demo fleet names",
                    self.machines
                ),
            ));
        }
        if self.sample_interval < Duration::from_secs(1) {
            return Err(SimError::config(
                "sample_interval",
                format!("{:?} is shorter than 1s", self.sample_interval),
            ));
        }
        if self.publish_every < Duration::from_millis(10) {
            return Err(SimError::config(
                "publish_every",
                format!("{:?} is shorter than 10ms", self.publish_every),
            ));
        }
        if self.backfill > Duration::from_secs(366 * 24 * 3600) {
            return Err(SimError::config(
                "backfill",
                format!("{:?} is longer than a year", self.backfill),
            ));
        }
        let prefix_ok = !self.client_prefix.is_empty()
            && self
                .client_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(SimError::config(
                "client_prefix",
                format!(
                    "`{}` must be non-empty letters, digits, `-` and `_`",
                    self.client_prefix
                ),
            ));
        }
        Ok(())
    }

    pub fn tenant_id(&self) -> Result<TenantId, SimError> {
        TenantId::parse(self.tenant.as_str()).map_err(SimError::Tenant)
    }

    pub fn broker(&self) -> Result<BrokerAddress, SimError> {
        BrokerAddress::parse(&self.mqtt_url)
    }

    pub(crate) fn sample_interval_ms(&self) -> i64 {
        i64::try_from(self.sample_interval.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn goes_quiet_after_ms(&self) -> i64 {
        i64::try_from(self.goes_quiet_after.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn backfill_ms(&self) -> i64 {
        i64::try_from(self.backfill.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Where the broker listens, from `mqtt://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// A host name, an IPv4 address or a bracketed IPv6 address (`[::1]`), as the
    /// socket address lookup wants it.
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    /// Accepts `mqtt://` and `tcp://` URLs; TLS and WebSocket schemes are refused
    /// because this build speaks plain MQTT over TCP only.
    pub fn parse(url: &str) -> Result<Self, SimError> {
        let err = |reason: String| SimError::MqttUrl {
            url: url.to_owned(),
            reason,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(err("expected `mqtt://host:port`".into()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" | "tls" | "ws" | "wss" => {
                return Err(err(format!(
                    "scheme `{scheme}` is not supported: the simulator speaks plain MQTT over TCP \
                     only; use `mqtt://host:port`"
                )));
            }
            _ => {
                return Err(err(format!(
                    "unknown scheme `{scheme}`; use `mqtt://host:port`"
                )));
            }
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(err("a path, query or fragment is not allowed".into()));
        }
        if authority.contains('@') {
            return Err(err("credentials in the URL are not supported".into()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("`[` of an IPv6 address is not closed".into()))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err(format!("unexpected `{p}` after the IPv6 address")))?,
                ),
            };
            (format!("[{host}]"), port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(err("the host is empty".into()));
        }
        let port = match port {
            None => DEFAULT_MQTT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(format!("port `{p}` is not a number in 1–65535")))?,
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_give_host_and_port() {
        let b = BrokerAddress::parse("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 1883));
        let b = BrokerAddress::parse("tcp://broker.local").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("broker.local", 1883));
        let b = BrokerAddress::parse("mqtt://[::1]:11883/").unwrap();
        assert_eq!(b.to_string(), "[::1]:11883");
    }

    #[test]
    fn other_schemes_and_malformed_urls_are_rejected_with_the_reason() {
        for (url, expected) in [
            ("mqtts://h:8883", "not supported"),
            ("ws://h:80", "not supported"),
            ("http://h", "unknown scheme `http`"),
            ("127.0.0.1:1883", "expected `mqtt://host:port`"),
            ("mqtt://:1883", "host is empty"),
            ("mqtt://h:0", "port `0`"),
            ("mqtt://h:99999", "port `99999`"),
            ("mqtt://h:1883/topic", "path"),
            ("mqtt://u:p@h", "credentials"),
            ("mqtt://[::1", "not closed"),
        ] {
            let e = BrokerAddress::parse(url).unwrap_err().to_string();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(e.starts_with("sim.mqtt_url"), "{e}");
        }
    }

    #[test]
    fn an_empty_section_gives_the_defaults_and_an_unknown_field_is_an_error() {
        let c: SimConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.machines, 30);
        assert_eq!(c.sample_interval, Duration::from_secs(300));
        assert_eq!(c.backfill, Duration::from_secs(21 * 86_400));
        c.validate().unwrap();
        let c: SimConfig =
            serde_json::from_str(r#"{"sample_interval":"1m","backfill":"2h","seed":9}"#).unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(60));
        assert_eq!(c.seed, 9);
        let e = serde_json::from_str::<SimConfig>(r#"{"machine":3}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `machine`"), "{e}");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let bad = [
            SimConfig {
                machines: 0,
                ..SimConfig::default()
            },
            SimConfig {
                sample_interval: Duration::from_millis(10),
                ..SimConfig::default()
            },
            SimConfig {
                tenant: "a/b".into(),
                ..SimConfig::default()
            },
            SimConfig {
                client_prefix: "sim #1".into(),
                ..SimConfig::default()
            },
        ];
        let fields = [
            "sim.machines",
            "sim.sample_interval",
            "sim.tenant",
            "sim.client_prefix",
        ];
        for (config, field) in bad.iter().zip(fields) {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
