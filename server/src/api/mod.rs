//! The HTTP API (`/api/v1`), operations endpoints (`/healthz`, `/readyz`, `/metrics`)
//! and the embedded dashboard. Each module owns its handlers; every route and who may
//! call it is declared in one table, [`routes`].

mod access;
mod analytics;
mod audit;
mod error;
mod ingest;
pub mod limits;
mod machines;
mod offers;
mod openapi;
mod ops;
mod registry;
pub mod routes;
mod service;
mod tokens;
mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::RwLock;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use wearcast_protocol::SharedClock;

pub use access::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, Scope};
pub use error::{ApiError, ApiJson, ApiQuery};
pub use registry::validate_manifest;
pub use tokens::DEFAULT_EXPIRY;

use crate::store::{MachineRegistry, Store};

/// Renders the process's Prometheus metrics (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Option<MetricsRender>,
    /// Registered machines, for validating ingest without a query per item; reloaded
    /// after an import and when an unknown machine shows up.
    pub registry: Arc<RwLock<RegistryCache>>,
    pub max_future_ms: i64,
    pub planning: Arc<crate::planning::PlanningSettings>,
    /// `[server.analytics]`: survey links, health thresholds, LTV parameters.
    pub analytics: Arc<crate::analytics::AnalyticsConfig>,
    /// The model cycle's bucket size and history depth: the health history the
    /// dashboards draw is replayed with the same ones.
    pub analysis: Arc<crate::analysis::AnalysisSettings>,
    /// Where stored windows are copied for Grafana; `None` when no InfluxDB is set.
    pub influx: Option<crate::sink::influx::InfluxSink>,
    /// `server.secure_cookies`: the session cookies get the `Secure` flag.
    pub secure_cookies: bool,
    /// `[server.rate_limit]`: each tenant's request budget.
    pub rate_limits: Arc<limits::RateLimits>,
    /// `server.max_body_bytes`, for the audit log's copy of a request body.
    pub max_body_bytes: usize,
}

pub struct RegistryCache {
    pub machines: Arc<MachineRegistry>,
    pub loaded_at: Instant,
}

impl AppState {
    /// The registry, reloaded first if `refresh` and the cache is older than a second.
    pub async fn registry(&self, refresh: bool) -> Result<Arc<MachineRegistry>, ApiError> {
        {
            let cache = self.registry.read().await;
            if !refresh || cache.loaded_at.elapsed() < Duration::from_secs(1) {
                return Ok(cache.machines.clone());
            }
        }
        self.reload_registry().await
    }

    pub async fn reload_registry(&self) -> Result<Arc<MachineRegistry>, ApiError> {
        let machines = Arc::new(self.store.machine_registry().await?);
        let mut cache = self.registry.write().await;
        cache.machines = machines.clone();
        cache.loaded_at = Instant::now();
        Ok(machines)
    }
}

pub fn router(state: AppState, max_body_bytes: usize, timeout: Duration) -> Router {
    Router::new()
        .nest("/api/v1", routes::api(&state))
        .merge(routes::public())
        .merge(ui::routes())
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The trace span of a request: method and path, never the query string, and a
/// survey link's token (a credential in the URL) replaced by `[redacted]`. API
/// tokens never travel in URLs (see `access.rs`).
fn request_span(req: &Request) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %redacted_path(req.uri().path()))
}

/// `path` with the token of a survey link (`/survey/{token}`,
/// `/api/v1/surveys/{token}`) redacted.
pub fn redacted_path(path: &str) -> String {
    let mut segments: Vec<&str> = path.split('/').collect();
    for i in 1..segments.len() {
        let token_follows = matches!(segments[i - 1], "survey" | "surveys");
        if token_follows && crate::analytics::survey::well_formed(segments[i]) {
            segments[i] = "[redacted]";
        }
    }
    segments.join("/")
}

/// Counts every request by route and status, and times it.
async fn track(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("wearcast_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("wearcast_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
