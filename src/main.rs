//! `wearcast`: the command-line entry point. A thin layer that parses flags, layers the
//! configuration and composes the crates: `up` runs everything in one process; `server`,
//! `gateway` and `sim` run one part each, for deployments where they live on different
//! hosts.

mod backtest;
mod broker;
mod config;
mod demo;
mod devices;
mod ops;
mod tokens;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;
use wearcast_protocol::{SharedClock, SystemClock};

use config::{Config, LogFormat, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "wearcast",
    version,
    about = "Predictive after-sales: predict component wear, offer the replacement in the next planned stop"
)]
struct Cli {
    /// TOML configuration file (sections: log, broker, server, gateway, sim, demo, ops).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `debug,rumqttd=warn` (RUST_LOG wins).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole platform in one process: embedded MQTT broker, gateway, server and
    /// dashboard (and with --demo a simulated fleet).
    Up(UpArgs),
    /// Run the server alone (HTTP API, storage, models, planner, dashboard).
    Server(ServerArgs),
    /// Run the edge gateway alone (MQTT in, windows out to the server).
    Gateway(GatewayArgs),
    /// Run the simulated fleet alone, publishing to an MQTT broker.
    Sim(SimArgs),
    /// Learn the wear model from run-to-failure history and score its predictions.
    Backtest(backtest::BacktestArgs),
    /// Issue, list or revoke API tokens (works on the server's database directly).
    Token {
        /// The server's data directory [default: server.data_dir, ./wearcast-data].
        #[arg(long, value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// MQTT credentials per machine and gateway, and Mosquitto's password and ACL files.
    Device {
        /// The server's data directory [default: server.data_dir, ./wearcast-data].
        #[arg(long, value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: devices::DeviceCommand,
    },
    /// Print the effective configuration (defaults, file, environment and flags) as JSON.
    Config {
        /// Show the demo's presets.
        #[arg(long)]
        demo: bool,
    },
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Run the simulated demo fleet (30 machines, 3 customers) on a fast clock.
    #[arg(long)]
    demo: bool,
    /// Directory for the database, the gateway's files and the demo's ground truth.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API and dashboard [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Address of the embedded MQTT broker [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR", conflicts_with = "mqtt_url")]
    mqtt_listen: Option<String>,
    /// Use this external MQTT broker instead of the embedded one, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// A fleet manifest (JSON) to import at start-up.
    #[arg(long, value_name = "FILE")]
    registry: Option<PathBuf>,
    /// Seed of the demo fleet.
    #[arg(long, value_name = "N")]
    demo_seed: Option<u64>,
    /// Machines in the demo fleet.
    #[arg(long, value_name = "N")]
    demo_machines: Option<usize>,
    /// Demo clock speed (platform seconds per real second).
    #[arg(long, value_name = "X")]
    demo_speed: Option<f64>,
    /// How much history the demo publishes before going live, e.g. `21d`.
    #[arg(long, value_name = "DURATION")]
    demo_backfill: Option<String>,
    #[command(flatten)]
    influx: InfluxArgs,
}

#[derive(Args, Debug)]
struct ServerArgs {
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// A fleet manifest (JSON) to import at start-up.
    #[arg(long, value_name = "FILE")]
    registry: Option<PathBuf>,
    #[command(flatten)]
    influx: InfluxArgs,
}

/// The InfluxDB v2 sink (`[server.influx]`).
#[derive(Args)]
struct InfluxArgs {
    /// Copy telemetry windows and health estimates to this InfluxDB 2, e.g. http://127.0.0.1:8086.
    #[arg(long, value_name = "URL")]
    influx_url: Option<String>,
    /// InfluxDB organisation.
    #[arg(long, value_name = "ORG")]
    influx_org: Option<String>,
    /// InfluxDB bucket.
    #[arg(long, value_name = "BUCKET")]
    influx_bucket: Option<String>,
    /// InfluxDB API token (prefer WEARCAST_SERVER__INFLUX__TOKEN: flags show in `ps`).
    #[arg(long, value_name = "TOKEN")]
    influx_token: Option<String>,
}

impl std::fmt::Debug for InfluxArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxArgs")
            .field("influx_url", &self.influx_url)
            .field("influx_org", &self.influx_org)
            .field("influx_bucket", &self.influx_bucket)
            .field(
                "influx_token",
                &self.influx_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl InfluxArgs {
    fn apply(&self, o: &mut Overrides) {
        let mut influx = serde_json::Map::new();
        for (key, value) in [
            ("url", &self.influx_url),
            ("org", &self.influx_org),
            ("bucket", &self.influx_bucket),
            ("token", &self.influx_token),
        ] {
            if let Some(v) = value {
                influx.insert(key.into(), serde_json::Value::String(v.clone()));
            }
        }
        if !influx.is_empty() {
            o.set("server", "influx", Some(serde_json::Value::Object(influx)));
        }
    }
}

#[derive(Args, Debug)]
struct GatewayArgs {
    /// MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// Wearcast server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// MQTT client id (keep it fixed: the broker keeps the session under it).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Share the load with other gateways in this MQTT shared-subscription group.
    #[arg(long, value_name = "GROUP")]
    share_group: Option<String>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where /metrics and /healthz are served [default: 127.0.0.1:9101].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// A file holding the server's API token for this gateway (role gateway).
    #[arg(long, value_name = "FILE")]
    server_token_file: Option<PathBuf>,
    /// MQTT user name, for a broker that requires one (`wearcast device gateway-password`).
    #[arg(long, value_name = "NAME")]
    mqtt_username: Option<String>,
    /// A file holding that MQTT user's password.
    #[arg(long, value_name = "FILE")]
    mqtt_password_file: Option<PathBuf>,
    /// With an mqtts:// broker: extra trusted certificates (PEM), e.g. a private CA.
    #[arg(long, value_name = "FILE")]
    mqtt_ca_file: Option<PathBuf>,
    /// With an https:// server: extra trusted certificates (PEM), e.g. a private CA.
    #[arg(long, value_name = "FILE")]
    server_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SimArgs {
    /// MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    #[arg(long, value_name = "N")]
    machines: Option<usize>,
    /// Ground truth (true failure times) as JSON lines.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// How much history to publish before going live, e.g. `21d`.
    #[arg(long, value_name = "DURATION")]
    backfill: Option<String>,
    /// Write the fleet manifest (import it with `wearcast server --registry FILE`) and exit.
    #[arg(long, value_name = "FILE")]
    write_manifest: Option<PathBuf>,
    /// Where /metrics and /healthz are served [default: 127.0.0.1:9101].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

fn log_overrides(cli: &Cli, o: &mut Overrides) {
    o.set("log", "level", cli.log_level.clone());
    o.set(
        "log",
        "format",
        cli.log_format.map(|f| match f {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        }),
    );
}

fn main() -> ExitCode {
    // Every HTTP client and TLS endpoint of the process uses ring.
    wearcast_server::tls::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut o = Overrides::default();
    log_overrides(&cli, &mut o);
    match &cli.command {
        Command::Up(a) => {
            o.set_path("server", "data_dir", a.data_dir.as_ref())
                .set("server", "http_listen", a.http_listen.clone())
                .set("broker", "listen", a.mqtt_listen.clone())
                .set_path("server", "registry", a.registry.as_ref())
                .set("sim", "seed", a.demo_seed)
                .set("sim", "machines", a.demo_machines)
                .set("sim", "backfill", a.demo_backfill.clone())
                .set("demo", "speed", a.demo_speed);
            a.influx.apply(&mut o);
            let config = Config::load(cli.config.as_deref(), a.demo, o.into_value())?;
            ops::init_logging(&config.log);
            let metrics = ops::init_metrics()?;
            up::run(
                config,
                up::UpOptions {
                    demo: a.demo,
                    mqtt_url: a.mqtt_url.clone(),
                },
                metrics,
            )
            .await
        }
        Command::Server(a) => {
            o.set_path("server", "data_dir", a.data_dir.as_ref())
                .set("server", "http_listen", a.http_listen.clone())
                .set_path("server", "registry", a.registry.as_ref());
            a.influx.apply(&mut o);
            let config = Config::load(cli.config.as_deref(), false, o.into_value())?;
            ops::init_logging(&config.log);
            let metrics = ops::init_metrics()?;
            run_server(config, metrics).await
        }
        Command::Gateway(a) => {
            o.set("gateway", "mqtt_url", a.mqtt_url.clone())
                .set("gateway", "server_url", a.server_url.clone())
                .set("gateway", "client_id", a.client_id.clone())
                .set("gateway", "share_group", a.share_group.clone())
                .set_path("gateway", "data_dir", a.data_dir.as_ref())
                .set("ops", "listen", a.metrics_listen.clone())
                .set_path("gateway", "server_token_file", a.server_token_file.as_ref())
                .set("gateway", "mqtt_username", a.mqtt_username.clone())
                .set_path(
                    "gateway",
                    "mqtt_password_file",
                    a.mqtt_password_file.as_ref(),
                )
                .set_path("gateway", "mqtt_ca_file", a.mqtt_ca_file.as_ref())
                .set_path("gateway", "server_ca_file", a.server_ca_file.as_ref());
            let config = Config::load(cli.config.as_deref(), false, o.into_value())?;
            ops::init_logging(&config.log);
            let metrics = ops::init_metrics()?;
            run_gateway(config, metrics).await
        }
        Command::Sim(a) => {
            o.set("sim", "mqtt_url", a.mqtt_url.clone())
                .set("sim", "seed", a.seed)
                .set("sim", "machines", a.machines)
                .set_path("sim", "truth_path", a.truth.as_ref())
                .set("sim", "backfill", a.backfill.clone())
                .set("ops", "listen", a.metrics_listen.clone());
            let config = Config::load(cli.config.as_deref(), false, o.into_value())?;
            ops::init_logging(&config.log);
            run_sim(config, a.write_manifest.clone()).await
        }
        Command::Backtest(a) => backtest::run(a).await,
        Command::Token { data_dir, command } => {
            o.set_path("server", "data_dir", data_dir.as_ref());
            let config = Config::load(cli.config.as_deref(), false, o.into_value())?;
            tokens::run(&config.server.data_dir, command).await
        }
        Command::Device { data_dir, command } => {
            o.set_path("server", "data_dir", data_dir.as_ref());
            let config = Config::load(cli.config.as_deref(), false, o.into_value())?;
            devices::run(&config.server.data_dir, command).await
        }
        Command::Config { demo } => {
            let config = Config::load(cli.config.as_deref(), *demo, o.into_value())?;
            ops::say!("{}", serde_json::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

async fn run_server(
    config: Config,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let data_dir = config.server.data_dir.clone();
    let server = wearcast_server::Server::start(
        config.server,
        wearcast_server::ServerDeps {
            clock: Arc::new(SystemClock),
            metrics: Some(ops::render_fn(metrics)),
        },
    )
    .await?;
    tokens::ensure_admin_token(server.store(), &data_dir).await?;
    let stop = ops::shutdown_signal();
    ops::say!("Wearcast server on {}/", server.url());
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        info!("shutdown requested");
        signal.cancel();
    });
    server.run(shutdown).await?;
    Ok(())
}

async fn run_gateway(
    config: Config,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let stop = ops::shutdown_signal();
    let shutdown = CancellationToken::new();
    // Ready while connected and subscribed with a spool that takes messages.
    let monitor = wearcast_gateway::GatewayMonitor::new();
    let ready: ops::ReadyFn = {
        let monitor = monitor.clone();
        Arc::new(move || {
            let health = monitor.health();
            (
                health.healthy,
                serde_json::to_value(&health).unwrap_or_default(),
            )
        })
    };
    let ops_task = ops::serve_ops(
        &config.ops.listen,
        metrics,
        Some(ready),
        shutdown.child_token(),
    )
    .await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        info!("shutdown requested; flushing");
        signal.cancel();
    });
    let clock: SharedClock = Arc::new(SystemClock);
    let report = wearcast_gateway::run_monitored(config.gateway, clock, shutdown.clone(), monitor)
        .await
        .context("gateway failed")?;
    shutdown.cancel();
    let _ = ops_task.await;
    info!(?report, "gateway stopped");
    Ok(())
}

async fn run_sim(config: Config, write_manifest: Option<PathBuf>) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let fleet = wearcast_firmware_sim::demo_fleet(&config.sim, clock.now())?;
    if let Some(path) = write_manifest {
        let json = serde_json::to_string_pretty(&fleet.manifest)?;
        std::fs::write(&path, json)
            .with_context(|| format!("cannot write the manifest to {}", path.display()))?;
        ops::say!(
            "Fleet manifest of {} machines written to {}",
            fleet.manifest.machines.len(),
            path.display()
        );
        return Ok(());
    }
    let metrics = ops::init_metrics()?;
    let stop = ops::shutdown_signal();
    let shutdown = CancellationToken::new();
    let ops_task =
        ops::serve_ops(&config.ops.listen, metrics, None, shutdown.child_token()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        info!("shutdown requested");
        signal.cancel();
    });
    let report = wearcast_firmware_sim::run(config.sim, fleet, clock, shutdown.clone())
        .await
        .context("simulator failed")?;
    shutdown.cancel();
    let _ = ops_task.await;
    info!(?report, "simulator stopped");
    Ok(())
}
