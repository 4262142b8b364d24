//! `POST /api/v1/registry`: import a fleet manifest.

use std::str::FromStr;

use axum::Json;
use axum::extract::State;
use chrono_tz::Tz;
use wearcast_protocol::registry::FleetManifest;

use super::{ApiError, ApiJson, AppState, Scope};
use crate::store::ImportReport;

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

pub(super) async fn import(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(manifest): ApiJson<FleetManifest>,
) -> Result<Json<ImportReport>, ApiError> {
    validate_manifest(&manifest).map_err(|problems| {
        ApiError::BadRequest(format!("invalid manifest: {}", problems.join("; ")))
    })?;
    // An admin of one tenant imports its own tenant's fleet only.
    if let Some(own) = &scope.principal().tenant
        && own != manifest.tenant.id.as_str()
    {
        return Err(super::access::forbidden(
            "an admin of one tenant imports its own tenant's manifest only",
        ));
    }
    let foreign = state.store.foreign_ids(&manifest).await?;
    if !foreign.is_empty() {
        return Err(ApiError::Rejected {
            status: axum::http::StatusCode::CONFLICT,
            message: format!("these ids belong to another tenant: {}", foreign.join(", ")),
        });
    }
    let report = state.store.import_manifest(&manifest).await?;
    state.reload_registry().await?;
    tracing::info!(machines = report.machines, "registry imported");
    Ok(Json(report))
}
