//! # Wearcast server
//!
//! One axum service: the ingest API the gateways post to, storage, the wear models,
//! the offer planner and the web dashboard.
//!
//! - [`config`]: the `[server]` configuration.
//! - [`api`]: HTTP routes, one module per area, one error type.
//! - [`auth`]: roles, API tokens, who may see what (the route table in [`api`]
//!   enforces it).
//! - [`store`]: all persistence (SQLite now; one module per backend).
//! - [`model`]: wear models, pure (data in, [`model::RulEstimate`] out).
//! - [`planner`]: turns estimates into offers in maintenance windows, pure.
//! - [`analysis`]: the periodic cycle that runs the models and the planner over the
//!   stored data.
//! - [`analytics`]: the service business, pure: KPIs, LTV, account health, surveys,
//!   upsell and cross-sell recommendations.
//! - [`sink`]: copies of stored windows and estimates for other systems (InfluxDB),
//!   through a bounded queue that never holds up ingestion.
//!
//! [`Server::start`] opens the database and binds the listener (port 0 works, and
//! [`Server::local_addr`] tells which port was taken); [`Server::run`] serves until the
//! shutdown token is cancelled, then finishes in-flight requests and the current
//! analysis cycle before returning.
//!
//! This crate depends only on `wearcast-protocol` among the Wearcast crates.

pub mod analysis;
pub mod analytics;
pub mod api;
pub mod auth;
pub mod backtest;
pub mod config;
pub mod devices;
pub mod ical;
pub mod model;
pub mod notify;
pub mod planner;
pub mod planning;
pub mod service;
pub mod sink;
pub mod store;
pub mod tls;
pub mod views;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wearcast_protocol::SharedClock;
use wearcast_protocol::registry::FleetManifest;

pub use api::MetricsRender;
pub use config::ServerConfig;

use analysis::AnalysisSettings;
use api::{AppState, RegistryCache};
use planning::PlanningSettings;
use sink::influx::{InfluxSink, InfluxWriter, Owner};
use store::{ImportReport, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid server configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr}: {source} (set another address with --http-listen or server.http_listen)"
    )]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the registry file {path}: {reason}")]
    RegistryFile { path: String, reason: String },
    #[error("invalid fleet manifest: {}", .0.join("; "))]
    Manifest(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Influx(#[from] sink::influx::InfluxError),
}

/// What the server needs from its host process.
#[derive(Clone)]
pub struct ServerDeps {
    pub clock: SharedClock,
    /// Renders `/metrics`; the binary installs the Prometheus recorder.
    pub metrics: Option<MetricsRender>,
}

/// A started server: database open, listener bound, not yet serving.
pub struct Server {
    listener: TcpListener,
    /// HTTPS when `[server.tls]` is set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// A plain-HTTP loopback listener for clients in the same process (the gateway and
    /// demo people of `wearcast up` when the server speaks TLS); see
    /// [`Server::bind_internal`].
    internal: Option<TcpListener>,
    state: AppState,
    config: ServerConfig,
    analysis: AnalysisSettings,
    /// The InfluxDB sink's writer, started by [`Server::run`].
    influx_writer: Option<InfluxWriter>,
}

/// Planning settings from the server configuration.
pub fn planning_settings(config: &ServerConfig) -> PlanningSettings {
    let mut p = PlanningSettings::default();
    p.planner.horizon_h = config.planning_horizon.as_secs_f64() / 3600.0;
    p.planner.default_risk_tolerance = config.default_risk_tolerance;
    p.service = config.service.clone();
    p.notifications = config.notifications.clone();
    p
}

impl Server {
    pub async fn start(config: ServerConfig, deps: ServerDeps) -> Result<Self, ServerError> {
        config.check().map_err(ServerError::Config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let db_path = config.data_dir.join("wearcast.db");
        let store = Store::open_sqlite(&db_path).await?;
        info!(path = %db_path.display(), "database open");

        let tls = config
            .tls
            .as_ref()
            .map(|t| tls::acceptor(t, &[b"http/1.1"]))
            .transpose()
            .map_err(|e| ServerError::Config(vec![format!("server.tls: {e}")]))?;
        let listener = TcpListener::bind(&config.http_listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.http_listen.clone(),
                source,
            })?;
        let analysis = AnalysisSettings::default();
        let planning = planning_settings(&config);
        let (influx, influx_writer) = if config.influx.enabled() {
            let (sink, writer) = InfluxSink::new(&config.influx)?;
            info!(url = config.influx.url.as_deref().unwrap_or_default(), org = %config.influx.org, bucket = %config.influx.bucket, "InfluxDB sink enabled");
            (Some(sink), Some(writer))
        } else {
            (None, None)
        };
        let state = AppState {
            registry: Arc::new(RwLock::new(RegistryCache {
                machines: Arc::new(store.machine_registry().await?),
                loaded_at: Instant::now(),
            })),
            store,
            clock: deps.clock,
            metrics: deps.metrics,
            max_future_ms: config.max_future.as_millis() as i64,
            planning: Arc::new(planning),
            analytics: Arc::new(config.analytics.clone()),
            analysis: Arc::new(analysis.clone()),
            influx,
            secure_cookies: config.secure_cookies || tls.is_some(),
            rate_limits: Arc::new(api::limits::RateLimits::new(&config.rate_limit)),
            max_body_bytes: config.max_body_bytes,
        };
        let server = Self {
            listener,
            tls,
            internal: None,
            state,
            config,
            analysis,
            influx_writer,
        };
        if let Some(path) = server.config.registry.clone() {
            server.import_file(&path).await?;
        }
        Ok(server)
    }

    /// Also serves plain HTTP on a free loopback port, for clients in this process
    /// that have no TLS (the gateway of `wearcast up`); returns its address. The same
    /// API, authentication included: only the transport differs.
    pub async fn bind_internal(&mut self) -> Result<SocketAddr, ServerError> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| ServerError::Bind {
                    addr: "127.0.0.1:0".into(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        self.internal = Some(listener);
        Ok(addr)
    }

    /// The base URL it serves: `https://` with `[server.tls]`, else `http://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The InfluxDB sink, when one is configured (its counts are what tests read).
    pub fn influx(&self) -> Option<&InfluxSink> {
        self.state.influx.as_ref()
    }

    /// Imports a fleet manifest (validated first; nothing is written if it is invalid).
    pub async fn import(&self, manifest: &FleetManifest) -> Result<ImportReport, ServerError> {
        api::validate_manifest(manifest).map_err(ServerError::Manifest)?;
        let foreign = self.state.store.foreign_ids(manifest).await?;
        if !foreign.is_empty() {
            return Err(ServerError::Manifest(vec![format!(
                "these ids belong to another tenant: {}",
                foreign.join(", ")
            )]));
        }
        let report = self.state.store.import_manifest(manifest).await?;
        self.state
            .reload_registry()
            .await
            .map_err(|e| ServerError::Manifest(vec![e.to_string()]))?;
        Ok(report)
    }

    /// Imports technicians and depot stock (validated against the registry).
    pub async fn import_service(
        &self,
        org: &wearcast_protocol::registry::ServiceOrganisation,
    ) -> Result<(usize, usize), ServerError> {
        org.check().map_err(ServerError::Manifest)?;
        let tenant =
            self.state.store.tenant_id().await?.ok_or_else(|| {
                ServerError::Manifest(vec!["import a fleet manifest first".into()])
            })?;
        Ok(self.state.store.import_service(&tenant, org).await?)
    }

    async fn import_file(&self, path: &Path) -> Result<ImportReport, ServerError> {
        let file_err = |reason: String| ServerError::RegistryFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let manifest: FleetManifest =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
                .map_err(|e| file_err(format!("at `{}`: {}", e.path(), e.inner())))?;
        let report = self.import(&manifest).await?;
        info!(path = %path.display(), machines = report.machines, "registry file imported");
        Ok(report)
    }

    /// Serves HTTP and runs the analysis cycle until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Self {
            listener,
            tls,
            internal,
            state,
            config,
            analysis,
            influx_writer,
        } = self;
        // The sink stops last, after everything that feeds it, so it can flush.
        let sink_shutdown = CancellationToken::new();
        let influx_task = influx_writer.map(|w| tokio::spawn(w.run(sink_shutdown.clone())));
        let analysis_task = tokio::spawn(analysis_loop(
            state.clone(),
            analysis,
            config.analysis_interval,
            shutdown.clone(),
        ));
        let dispatcher = notify::Dispatcher::new(state.store.clone(), config.notifications.clone())
            .map_err(|e| ServerError::Config(vec![format!("notification HTTP client: {e}")]))?;
        let outbox_task = tokio::spawn(outbox_loop(
            dispatcher,
            config.notifications.poll_interval,
            shutdown.clone(),
        ));
        let retention_task = tokio::spawn(retention_loop(
            state.store.clone(),
            state.clock.clone(),
            config.retention.clone(),
            shutdown.clone(),
        ));
        let app = api::router(state.clone(), config.max_body_bytes, config.request_timeout);
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTP server listening");
        let internal_task = internal.map(|listener| {
            let (app, shutdown) = (app.clone(), shutdown.clone());
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            })
        });
        let served = match tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor, "http")
                    .map_err(ServerError::Serve)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
        };
        shutdown.cancel();
        if let Some(task) = internal_task
            && let Err(e) = task.await
        {
            error!(error = %e, "internal HTTP listener panicked");
        }
        if let Err(e) = analysis_task.await {
            error!(error = %e, "analysis task panicked");
        }
        if let Err(e) = retention_task.await {
            error!(error = %e, "retention task panicked");
        }
        if let Err(e) = outbox_task.await {
            error!(error = %e, "outbox task panicked");
        }
        sink_shutdown.cancel();
        if let Some(task) = influx_task
            && let Err(e) = task.await
        {
            error!(error = %e, "InfluxDB sink task panicked");
        }
        state.store.close().await;
        info!("server stopped");
        served.map_err(ServerError::Serve)
    }
}

async fn analysis_loop(
    state: AppState,
    settings: AnalysisSettings,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Each step is its own task, so a bug that panics in one step is logged and
        // counted at once and the next interval tries again, instead of the model
        // silently stopping for the rest of the process's life.
        let step = tokio::spawn(analysis_step(state.clone(), settings.clone()));
        if let Err(e) = step.await
            && e.is_panic()
        {
            metrics::counter!("wearcast_task_panics_total", "task" => "analysis").increment(1);
            error!(error = %panic_message(e.into_panic()), "model cycle panicked; retrying next interval");
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// One model cycle, then one planning pass, at the clock's now.
async fn analysis_step(state: AppState, settings: AnalysisSettings) {
    let (store, clock, planning) = (&state.store, &state.clock, &state.planning);
    let now = clock.now();
    let cycle = match &state.influx {
        Some(sink) => {
            let registry = state.registry.read().await.machines.clone();
            let mut copy = |machine: &str, estimates: &[(String, model::RulEstimate)]| {
                let owner = registry.get(machine).map_or_else(
                    || Owner {
                        tenant: String::new(),
                        customer: String::new(),
                    },
                    |m| Owner {
                        tenant: m.tenant.clone(),
                        customer: m.customer.clone(),
                    },
                );
                sink.offer_estimates(&owner, machine, estimates);
            };
            analysis::run_cycle_observed(store, now, &settings, &mut copy).await
        }
        None => analysis::run_cycle(store, now, &settings).await,
    };
    match cycle {
        Ok(r) => tracing::debug!(refreshed = r.components_refreshed, "model cycle"),
        Err(e) => {
            warn!(error = %e, "model cycle failed; retrying next interval");
            return;
        }
    }
    match planning::plan_all(store, now, planning).await {
        Ok(r) if r.proposed + r.superseded + r.expired + r.work_orders_cancelled > 0 => info!(
            proposed = r.proposed,
            superseded = r.superseded,
            expired = r.expired,
            work_orders_cancelled = r.work_orders_cancelled,
            held_back = r.held_back,
            "planning changed offers"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "planning failed; retrying next interval"),
    }
}

/// Delivers the notification outbox until shutdown (a last pass on the way out).
/// Applies `[server.retention]` every `interval`: raw windows past `raw_windows`
/// become hourly roll-ups, batch ids past `batch_ids` are forgotten (platform time).
async fn retention_loop(
    store: Store,
    clock: SharedClock,
    config: config::RetentionConfig,
    shutdown: CancellationToken,
) {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        let now = clock.now();
        let started = std::time::Instant::now();
        match store
            .apply_retention(
                now.plus_ms(-ms(config.raw_windows)),
                now.plus_ms(-ms(config.batch_ids)),
            )
            .await
        {
            Ok(r) => {
                metrics::counter!("wearcast_retention_windows_rolled_up_total")
                    .increment(r.windows_rolled_up);
                metrics::counter!("wearcast_retention_batch_ids_forgotten_total")
                    .increment(r.batches_forgotten);
                if r != store::RetentionReport::default() {
                    info!(
                        windows = r.windows_rolled_up,
                        hours = r.hours_written,
                        batch_ids = r.batches_forgotten,
                        took = ?started.elapsed(),
                        "retention pass: old raw windows rolled up into hours"
                    );
                }
            }
            Err(e) => warn!(error = %e, "retention pass failed; retrying at the next"),
        }
    }
}

async fn outbox_loop(
    dispatcher: notify::Dispatcher,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        match dispatcher.step(100).await {
            Ok(r) if r.failed > 0 => {
                tracing::debug!(delivered = r.delivered, failed = r.failed, "outbox step")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "outbox step failed; retrying"),
        }
        if stopping {
            break;
        }
    }
}
