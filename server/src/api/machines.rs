//! Machines, their health and their telemetry; sites and their maintenance windows.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use wearcast_protocol::{Channel, UnixMs};

use super::{ApiError, ApiQuery, AppState};
use crate::views::{MachineDetail, MachineSummary, SiteView, TelemetryView};

/// Most windows one telemetry request returns.
const MAX_TELEMETRY_LIMIT: usize = 100_000;
const DEFAULT_TELEMETRY_LIMIT: usize = 5_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/machines", get(list))
        .route("/machines/{id}", get(detail))
        .route("/machines/{id}/telemetry", get(telemetry))
        .route("/machines/{id}/lives", get(lives))
        .route("/sites", get(sites))
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<MachineSummary>>, ApiError> {
    Ok(Json(state.store.list_machines().await?))
}

async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MachineDetail>, ApiError> {
    state
        .store
        .machine_detail(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no machine `{id}`")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryQuery {
    channel: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

fn parse_time(name: &str, value: Option<&str>, default: UnixMs) -> Result<UnixMs, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => UnixMs::parse_flexible(v)
            .map_err(|e| ApiError::BadRequest(format!("query parameter `{name}`: {e}"))),
    }
}

async fn telemetry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TelemetryQuery>,
) -> Result<Json<TelemetryView>, ApiError> {
    if !state.store.machine_exists(&id).await? {
        return Err(ApiError::NotFound(format!("no machine `{id}`")));
    }
    let channels = state.store.machine_channels(&id).await?;
    let Some(channel) = q.channel else {
        return Err(ApiError::BadRequest(format!(
            "query parameter `channel` is required; machine `{id}` has: {}",
            channels.join(", ")
        )));
    };
    Channel::parse(channel.as_str())
        .map_err(|e| ApiError::BadRequest(format!("query parameter `channel`: {e}")))?;
    if !channels.contains(&channel) {
        return Err(ApiError::NotFound(format!(
            "machine `{id}` has no telemetry on channel `{channel}`; it has: {}",
            if channels.is_empty() {
                "none yet".to_string()
            } else {
                channels.join(", ")
            }
        )));
    }
    let from = parse_time("from", q.from.as_deref(), UnixMs(0))?;
    let to = parse_time(
        "to",
        q.to.as_deref(),
        UnixMs(wearcast_protocol::time::MAX_UNIX_MS),
    )?;
    if to <= from {
        return Err(ApiError::BadRequest(format!(
            "`to` ({to}) must be after `from` ({from})"
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_TELEMETRY_LIMIT);
    if limit == 0 || limit > MAX_TELEMETRY_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_TELEMETRY_LIMIT}"
        )));
    }
    Ok(Json(
        state
            .store
            .telemetry(&id, &channel, from, to, limit)
            .await?,
    ))
}

/// The machine's ended component lives (failures and replacements), newest first.
async fn lives(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::views::ComponentLifeView>>, ApiError> {
    if !state.store.machine_exists(&id).await? {
        return Err(ApiError::NotFound(format!("no machine `{id}`")));
    }
    Ok(Json(state.store.component_lives(&id).await?))
}

async fn sites(State(state): State<AppState>) -> Result<Json<Vec<SiteView>>, ApiError> {
    let now = state.clock.now();
    Ok(Json(
        state
            .store
            .list_sites(now, state.planning.lookahead_h)
            .await?,
    ))
}
