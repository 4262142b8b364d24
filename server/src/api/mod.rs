//! The HTTP API (`/api/v1`), operations endpoints (`/healthz`, `/readyz`, `/metrics`)
//! and the embedded dashboard. Each module owns its routes; [`router`] merges them.

mod analytics;
mod error;
mod ingest;
mod machines;
mod offers;
mod ops;
mod registry;
mod service;
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

pub use error::{ApiError, ApiJson, ApiQuery};
pub use registry::validate_manifest;

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
    let api = Router::new()
        .merge(ingest::routes())
        .merge(registry::routes())
        .merge(machines::routes())
        .merge(offers::routes())
        .merge(service::routes())
        .merge(analytics::routes())
        .merge(ops::api_routes());
    Router::new()
        .nest("/api/v1", api)
        .merge(ops::routes())
        .merge(ui::routes())
        .merge(analytics::public_routes())
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
