//! Process-wide observability: tracing logs and the Prometheus recorder, plus the small
//! `/metrics` + `/healthz` (+ `/readyz`) listener for the commands that have no HTTP
//! server of their own (`wearcast gateway`, `wearcast sim`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the tracing subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(config: &LogConfig) {
    // The broker logs every connection at info; the rest of the platform's info is useful.
    let default = format!(
        "{},rumqttd=warn,rumqttd::router::routing=off,sqlx=warn,tower_http=warn",
        config.level
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the Prometheus recorder and keeps its histograms trimmed.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

pub fn render_fn(handle: PrometheusHandle) -> wearcast_server::MetricsRender {
    Arc::new(move || handle.render())
}

/// Whether the process is ready to do its job, and the facts behind the answer (JSON).
pub type ReadyFn = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

/// Serves `/metrics` and `/healthz` (liveness: the process answers) on `listen` until
/// `shutdown`, and with `ready`, `/readyz`: 200 when ready, 503 when not, with the facts
/// either way.
pub async fn serve_ops(
    listen: &str,
    handle: PrometheusHandle,
    ready: Option<ReadyFn>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} for /metrics (set another with --metrics-listen)")
        })?;
    tracing::info!(addr = %listener.local_addr()?, readyz = ready.is_some(), "metrics and health on /metrics, /healthz");
    let mut app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})).into_response() }),
        );
    if let Some(ready) = ready {
        app = app.route(
            "/readyz",
            get(move || {
                let (ok, facts) = ready();
                let status = if ok {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (status, axum::Json(facts)).into_response() }
            }),
        );
    }
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }))
}

/// Writes a line for the user on stdout. A closed stdout (e.g. `wearcast up | head`)
/// must not take the platform down, so write errors are ignored, unlike `println!`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: call it before announcing that the
/// process is up, so a stop requested right after the banner is a clean shutdown
/// rather than the default action of the signal (an abrupt exit).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate()).and_then(|term| {
            let int = signal(SignalKind::interrupt())?;
            Ok((term, int))
        });
        async move {
            match handlers {
                Ok((mut term, mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
