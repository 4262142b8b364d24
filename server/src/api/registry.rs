//! `POST /api/v1/registry`: import a fleet manifest.

use std::str::FromStr;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono_tz::Tz;
use wearcast_protocol::registry::FleetManifest;

use super::{ApiError, ApiJson, AppState};
use crate::store::ImportReport;

pub fn routes() -> Router<AppState> {
    Router::new().route("/registry", post(import))
}

/// The protocol's checks plus what only the server can check (time zones).
pub fn validate_manifest(manifest: &FleetManifest) -> Result<(), Vec<String>> {
    let mut problems = manifest.check().err().unwrap_or_default();
    for site in &manifest.sites {
        if Tz::from_str(&site.timezone).is_err() {
            problems.push(format!(
                "site `{}`: unknown time zone `{}` (use an IANA name such as Europe/Berlin)",
                site.id, site.timezone
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

async fn import(
    State(state): State<AppState>,
    ApiJson(manifest): ApiJson<FleetManifest>,
) -> Result<Json<ImportReport>, ApiError> {
    validate_manifest(&manifest).map_err(|problems| {
        ApiError::BadRequest(format!("invalid manifest: {}", problems.join("; ")))
    })?;
    let report = state.store.import_manifest(&manifest).await?;
    state.reload_registry().await?;
    tracing::info!(machines = report.machines, "registry imported");
    Ok(Json(report))
}
