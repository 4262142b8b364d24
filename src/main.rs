//! `wearcast`: the command-line entry point. A thin layer that parses flags, layers the
//! configuration and composes the crates: `up` runs everything in one process; `server`,
//! `gateway` and `sim` run one part each, for deployments where they live on different
//! hosts.

mod backtest;
mod broker;
mod config;
mod demo;
mod ops;
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
                .set("ops", "listen", a.metrics_listen.clone());
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
        Command::Backtest(a) => backtest::run(a),
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
    let server = wearcast_server::Server::start(
        config.server,
        wearcast_server::ServerDeps {
            clock: Arc::new(SystemClock),
            metrics: Some(ops::render_fn(metrics)),
        },
    )
    .await?;
    ops::say!("Wearcast server on http://{}/", server.local_addr());
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        ops::shutdown_signal().await;
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
    let shutdown = CancellationToken::new();
    let ops_task = ops::serve_ops(&config.ops.listen, metrics, shutdown.child_token()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        ops::shutdown_signal().await;
        info!("shutdown requested; flushing");
        signal.cancel();
    });
    let clock: SharedClock = Arc::new(SystemClock);
    let report = wearcast_gateway::run(config.gateway, clock, shutdown.clone())
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
    let shutdown = CancellationToken::new();
    let ops_task = ops::serve_ops(&config.ops.listen, metrics, shutdown.child_token()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        ops::shutdown_signal().await;
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
