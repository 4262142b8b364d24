//! Health, readiness, metrics and clock info.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState, Scope};

/// Liveness: the process answers.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers too.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "database unavailable" })),
            )
                .into_response()
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder installed").into_response(),
    }
}

/// The platform clock (the demo runs faster than real time) and the version.
/// `caller` says who the token is (role, and the customer or technician it acts
/// for), so a dashboard can show the right view.
pub(super) async fn info(State(state): State<AppState>, scope: Scope) -> Json<serde_json::Value> {
    let caller = scope.principal();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": state.clock.now().to_rfc3339(),
        "clock_speed": state.clock.speed(),
        "caller": {
            "role": caller.role,
            "customer": caller.customer,
            "technician": caller.technician,
        },
    }))
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}
