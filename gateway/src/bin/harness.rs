//! `wearcast-gateway-harness`: the gateway alone as an OS process, driven by a JSON
//! config file, for the throughput benchmark (which measures its CPU time and memory).
//! Production runs the gateway with `wearcast gateway`, which adds the layered
//! configuration, Prometheus `/metrics` and `/healthz`; the fault tests run that
//! (`tests/e2e/faults.rs`).
//!
//! ```text
//! wearcast-gateway-harness CONFIG.json [--report-acked N] [--stats-every-ms MS]
//! ```
//!
//! `CONFIG.json` is a `[gateway]` section as JSON (`{"mqtt_url": "...", "window":
//! "1s", ...}`). Progress goes to stdout as JSON lines:
//!
//! - `{"event":"started","pid":…}`
//! - `{"event":"subscribed","elapsed_ms":…}` the first time the subscription is in place
//! - `{"event":"stats","elapsed_ms":…,"report":{…}}` every `--stats-every-ms` (default 200)
//! - `{"event":"acked","count":N,"elapsed_ms":…}` once N messages are acknowledged
//! - `{"event":"stopped","report":{…}}` after SIGTERM or SIGINT, when it stopped cleanly
//!
//! Logs go to stderr at the level in `HARNESS_LOG` (`error`, `warn` (default), `info`,
//! `debug`). Metrics are recorded in memory, so the benchmark pays for them as
//! production does.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span;
use wearcast_gateway::stats::MemoryRecorder;
use wearcast_gateway::{GatewayConfig, GatewayMonitor};
use wearcast_protocol::clock::{SharedClock, SystemClock};

fn say(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Args {
    config: GatewayConfig,
    report_acked: Option<u64>,
    stats_every: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut report_acked = None;
    let mut stats_every = Duration::from_millis(200);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report-acked" => {
                let n = args.next().ok_or("--report-acked needs a count")?;
                report_acked = Some(n.parse().map_err(|e| format!("--report-acked {n}: {e}"))?);
            }
            "--stats-every-ms" => {
                let n = args.next().ok_or("--stats-every-ms needs a number")?;
                let ms: u64 = n
                    .parse()
                    .map_err(|e| format!("--stats-every-ms {n}: {e}"))?;
                stats_every = Duration::from_millis(ms.max(1));
            }
            path => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the config {path}: {e}"))?;
                config = Some(
                    serde_json::from_str(&text)
                        .map_err(|e| format!("invalid config {path}: {e}"))?,
                );
            }
        }
    }
    Ok(Args {
        config: config.ok_or(
            "usage: wearcast-gateway-harness CONFIG.json [--report-acked N] [--stats-every-ms MS]",
        )?,
        report_acked,
        stats_every,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let level = match std::env::var("HARNESS_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::WARN,
    };
    let _ = tracing::subscriber::set_global_default(StderrLog { max: level });
    let _ = metrics::set_global_recorder(MemoryRecorder::default());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    say(serde_json::json!({"event": "started", "pid": std::process::id()}));
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            shutdown.cancel();
        });
    }
    let monitor = GatewayMonitor::new();
    let reporter = {
        let (monitor, stop) = (monitor.clone(), shutdown.clone());
        tokio::spawn(report_progress(
            monitor,
            stop,
            started,
            args.report_acked,
            args.stats_every,
        ))
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let outcome =
        wearcast_gateway::run_monitored(args.config, clock, shutdown.clone(), monitor).await;
    shutdown.cancel();
    let _ = reporter.await;
    match outcome {
        Ok(report) => {
            say(serde_json::json!({"event": "stopped", "report": report}));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn report_progress(
    monitor: GatewayMonitor,
    stop: CancellationToken,
    started: Instant,
    report_acked: Option<u64>,
    every: Duration,
) {
    let elapsed = || started.elapsed().as_millis() as u64;
    let mut subscribed = false;
    let mut acked_reported = false;
    let mut last_stats = Instant::now();
    // Fine-grained, so the benchmark's completion time is accurate to a millisecond.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !subscribed && monitor.health().broker_connected {
            subscribed = true;
            say(serde_json::json!({"event": "subscribed", "elapsed_ms": elapsed()}));
        }
        if let Some(target) = report_acked
            && !acked_reported
            && monitor.stats().messages_acked >= target
        {
            acked_reported = true;
            say(serde_json::json!({"event": "acked", "count": target, "elapsed_ms": elapsed()}));
        }
        if last_stats.elapsed() >= every {
            last_stats = Instant::now();
            say(
                serde_json::json!({"event": "stats", "elapsed_ms": elapsed(), "report": monitor.stats()}),
            );
        }
    }
}

/// Prints events at or above a level to stderr: enough to read what a killed process
/// was doing, without a logging framework in the gateway's dependencies.
struct StderrLog {
    max: tracing::Level,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?} "));
        } else {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
}

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        eprintln!(
            "{:?} {} {} {}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            meta.level(),
            meta.target(),
            fields.0.trim_end()
        );
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
