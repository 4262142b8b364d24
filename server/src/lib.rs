//! # Wearcast server
//!
//! One axum service: the ingest API the gateways post to, storage, the wear models,
//! the offer planner and the web dashboard.
//!
//! - [`config`]: the `[server]` configuration.
//! - [`api`]: HTTP routes, one module per area, one error type.
//! - [`store`]: all persistence (SQLite now; one module per backend).
//! - [`model`]: wear models, pure (data in, [`model::RulEstimate`] out).
//! - [`planner`]: turns estimates into offers in maintenance windows, pure.
//! - [`analysis`]: the periodic cycle that runs the models and the planner over the
//!   stored data.
//! - [`analytics`]: the service business, pure: KPIs, LTV, account health, surveys,
//!   upsell and cross-sell recommendations.
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
pub mod backtest;
pub mod config;
pub mod ical;
pub mod model;
pub mod notify;
pub mod planner;
pub mod planning;
pub mod service;
pub mod store;
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
    state: AppState,
    config: ServerConfig,
    analysis: AnalysisSettings,
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

        let listener = TcpListener::bind(&config.http_listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.http_listen.clone(),
                source,
            })?;
        let analysis = AnalysisSettings::default();
        let planning = planning_settings(&config);
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
        };
        let server = Self {
            listener,
            state,
            config,
            analysis,
        };
        if let Some(path) = server.config.registry.clone() {
            server.import_file(&path).await?;
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Imports a fleet manifest (validated first; nothing is written if it is invalid).
    pub async fn import(&self, manifest: &FleetManifest) -> Result<ImportReport, ServerError> {
        api::validate_manifest(manifest).map_err(ServerError::Manifest)?;
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
            state,
            config,
            analysis,
        } = self;
        let analysis_task = tokio::spawn(analysis_loop(
            state.store.clone(),
            state.clock.clone(),
            analysis,
            state.planning.clone(),
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
        let app = api::router(state.clone(), config.max_body_bytes, config.request_timeout);
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTP server listening");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        if let Err(e) = analysis_task.await {
            error!(error = %e, "analysis task panicked");
        }
        if let Err(e) = outbox_task.await {
            error!(error = %e, "outbox task panicked");
        }
        state.store.close().await;
        info!("server stopped");
        served.map_err(ServerError::Serve)
    }
}

async fn analysis_loop(
    store: Store,
    clock: SharedClock,
    settings: AnalysisSettings,
    planning: Arc<PlanningSettings>,
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
        let now = clock.now();
        match analysis::run_cycle(&store, now, &settings).await {
            Ok(r) => tracing::debug!(refreshed = r.components_refreshed, "model cycle"),
            Err(e) => {
                warn!(error = %e, "model cycle failed; retrying next interval");
                continue;
            }
        }
        match planning::plan_all(&store, now, &planning).await {
            Ok(r) if r.proposed + r.superseded + r.expired > 0 => info!(
                proposed = r.proposed,
                superseded = r.superseded,
                expired = r.expired,
                held_back = r.held_back,
                "planning changed offers"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "planning failed; retrying next interval"),
        }
    }
}

/// Delivers the notification outbox until shutdown (a last pass on the way out).
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
