//! The configuration of every command, layered: built-in defaults (with the demo's
//! presets under `--demo`), then the TOML file given with `--config`, then environment
//! variables `WEARCAST_<SECTION>__<KEY>` (e.g. `WEARCAST_SERVER__HTTP_LISTEN`), then
//! command-line flags. Unknown keys anywhere are errors, so a typo never silently
//! falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use wearcast_firmware_sim::SimConfig;
use wearcast_gateway::GatewayConfig;
use wearcast_server::ServerConfig;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub server: ServerConfig,
    pub gateway: GatewayConfig,
    pub sim: SimConfig,
    pub demo: DemoConfig,
    pub ops: OpsConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `info,wearcast_gateway=debug`; `RUST_LOG` wins.
    pub level: String,
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The embedded MQTT broker of `wearcast up`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Where the embedded broker listens (unless `--mqtt-url` names an external one).
    pub listen: String,
    /// Largest accepted MQTT payload.
    pub max_payload_bytes: usize,
    /// Whether clients without a user name and password may connect (unrestricted).
    /// Unset: only when `listen` is a loopback address, like Mosquitto 2's local-only
    /// mode. Devices sign in with `wearcast device password`; see `src/broker.rs`.
    pub allow_anonymous: Option<bool>,
    /// MQTT over TLS only (`mqtts://`) on `listen`, with this certificate and key
    /// (`[broker.tls]`: `cert_file`, `key_file`, PEM). Unset: plain MQTT.
    pub tls: Option<wearcast_server::tls::TlsConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1883".into(),
            max_payload_bytes: 1024 * 1024,
            allow_anonymous: None,
            tls: None,
        }
    }
}

/// The demo of `wearcast up --demo`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Platform-clock seconds per real second: at 1800, one real second is half an
    /// hour, so a component visibly wears out within minutes.
    pub speed: f64,
    /// The demo customer that is quietly churning: its machines went quiet before the
    /// demo started, it declines every offer and answers surveys as a detractor
    /// (`northwind`, `contoso` or `globex`; empty for none). See `src/demo.rs`.
    pub churning_customer: String,
    /// Customers answer offers and surveys, and technicians complete work orders (see
    /// `src/demo.rs`); off, the demo only streams and predicts.
    pub actors: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            speed: 1800.0,
            churning_customer: "globex".into(),
            actors: true,
        }
    }
}

/// The metrics and health listener of `wearcast gateway` and `wearcast sim` (the server
/// serves them on its own port).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    pub listen: String,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9101".into(),
        }
    }
}

impl Config {
    /// Defaults for the demo: windows and analysis sized for a clock running ~1800×.
    pub fn demo_defaults() -> Self {
        let mut c = Self::default();
        c.gateway.window = Duration::from_secs(3600);
        c.gateway.lateness = Duration::from_secs(600);
        c.gateway.flush_interval = Duration::from_millis(250);
        c.gateway.registry_refresh = Duration::from_secs(10);
        c.server.analysis_interval = Duration::from_secs(2);
        c
    }

    /// Layers defaults, the file, the environment and `overrides` (flags, as a partial
    /// config in JSON shape).
    pub fn load(
        file: Option<&Path>,
        demo: bool,
        overrides: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let base = if demo {
            Self::demo_defaults()
        } else {
            Self::default()
        };
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(path) = file {
            if !path.is_file() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(Env::prefixed("WEARCAST_").split("__"))
            .merge(Serialized::defaults(overrides));
        let config: Self = figment.extract().map_err(|e| {
            let mut msg = String::from("invalid configuration:");
            for err in e {
                msg.push_str(&format!("\n  - {err}"));
            }
            anyhow::anyhow!(msg)
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut problems = self.server.check().err().unwrap_or_default();
        if self.broker.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "broker.listen `{}` is not an address like 127.0.0.1:1883",
                self.broker.listen
            ));
        }
        if self.ops.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "ops.listen `{}` is not an address like 127.0.0.1:9101",
                self.ops.listen
            ));
        }
        if !(self.demo.speed.is_finite() && self.demo.speed >= 1.0) {
            problems.push(format!("demo.speed {} must be at least 1", self.demo.speed));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }
}

/// Builds the JSON patch of the flags that were given; absent flags leave the lower
/// layers alone.
#[derive(Default)]
pub struct Overrides(serde_json::Map<String, serde_json::Value>);

impl Overrides {
    pub fn set(&mut self, section: &str, key: &str, value: Option<impl Serialize>) -> &mut Self {
        if let Some(v) = value {
            let section = self
                .0
                .entry(section.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(map) = section {
                map.insert(
                    key.to_string(),
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                );
            }
        }
        self
    }

    pub fn set_path(&mut self, section: &str, key: &str, value: Option<&PathBuf>) -> &mut Self {
        self.set(section, key, value.map(|p| p.display().to_string()))
    }

    pub fn into_value(self) -> serde_json::Value {
        serde_json::Value::Object(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_in_the_config_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, "[server]\nhttp_lisen = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&path), false, serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_lisen"), "{err}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "[server]\nhttp_listen = \"127.0.0.1:9000\"\nanalysis_interval = \"7s\"\n",
        )
        .unwrap();
        let mut o = Overrides::default();
        o.set("server", "http_listen", Some("127.0.0.1:9001"));
        let c = Config::load(Some(&path), false, o.into_value()).unwrap();
        assert_eq!(c.server.http_listen, "127.0.0.1:9001");
        assert_eq!(c.server.analysis_interval, Duration::from_secs(7));
        assert_eq!(c.broker.listen, "127.0.0.1:1883");
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let mut o = Overrides::default();
        o.set("broker", "listen", Some("localhost"));
        let err = Config::load(None, false, o.into_value())
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.listen"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/w.toml")),
            false,
            serde_json::json!({}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn influx_flags_merge_with_the_files_influx_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "[server.influx]\norg = \"acme\"\nbucket = \"from-file\"\nbatch_size = 500\n",
        )
        .unwrap();
        let mut o = Overrides::default();
        o.set(
            "server",
            "influx",
            Some(serde_json::json!({"url": "http://127.0.0.1:8086", "bucket": "b", "token": "t0ken"})),
        );
        let c = Config::load(Some(&path), false, o.into_value()).unwrap();
        let influx = &c.server.influx;
        assert_eq!(influx.url.as_deref(), Some("http://127.0.0.1:8086"));
        assert_eq!((influx.org.as_str(), influx.bucket.as_str()), ("acme", "b"));
        assert_eq!(influx.batch_size, 500);
        assert_eq!(influx.token.as_ref().unwrap().expose(), "t0ken");
    }

    #[test]
    fn an_influx_url_without_a_token_is_an_error_naming_the_setting() {
        let mut o = Overrides::default();
        o.set(
            "server",
            "influx",
            Some(serde_json::json!({"url": "http://127.0.0.1:8086", "org": "o", "bucket": "b"})),
        );
        let err = Config::load(None, false, o.into_value())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.influx.token"), "{err}");
    }

    #[test]
    fn the_demo_presets_apply_only_with_demo() {
        let c = Config::load(None, true, serde_json::json!({})).unwrap();
        assert_eq!(c.gateway.window, Duration::from_secs(3600));
        let c = Config::load(None, false, serde_json::json!({})).unwrap();
        assert_eq!(c.gateway.window, Duration::from_secs(60));
    }
}
