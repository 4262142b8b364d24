//! Machines, their health and their telemetry; sites and their maintenance windows.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use wearcast_protocol::{Channel, UnixMs};

use super::{ApiError, ApiQuery, AppState, Scope};
use crate::model::HiPoint;
use crate::views::{
    ComponentHealthHistoryView, MachineDetail, MachineHealthHistoryView, MachineSummary, Rfc3339,
    SiteView, TelemetryView,
};

/// Points of a drawn trend line (it is smooth: a linear or exponential curve).
const TREND_POINTS: usize = 48;
/// The drawn trend stops once it is this far past the failure level.
const TREND_OVERSHOOT: f64 = 1.25;

/// Most windows one telemetry request returns.
const MAX_TELEMETRY_LIMIT: usize = 100_000;
const DEFAULT_TELEMETRY_LIMIT: usize = 5_000;

pub(super) async fn list(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<Vec<MachineSummary>>, ApiError> {
    Ok(Json(state.store.list_machines(&scope.visibility()).await?))
}

pub(super) async fn detail(
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TelemetryQuery {
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

pub(super) async fn telemetry(
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
pub(super) async fn lives(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::views::ComponentLifeView>>, ApiError> {
    if !state.store.machine_exists(&id).await? {
        return Err(ApiError::NotFound(format!("no machine `{id}`")));
    }
    Ok(Json(state.store.component_lives(&id).await?))
}

/// Per component: the health-index history, the fitted trend, the failure threshold
/// and the RUL band as instants — everything the machine page's chart draws.
pub(super) async fn health_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MachineHealthHistoryView>, ApiError> {
    let detail = state
        .store
        .machine_detail(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no machine `{id}`")))?;
    let now = state.clock.now();
    let mut histories =
        crate::analysis::health_history(&state.store, &id, now, &state.analysis).await?;
    let components = detail
        .components
        .into_iter()
        .map(|c| {
            let history = histories
                .iter_mut()
                .find(|(k, _)| *k == c.key)
                .map(|(_, h)| std::mem::take(h))
                .unwrap_or_default();
            let est = c.estimate.as_ref();
            let at = |h: Option<f64>| {
                est.zip(h)
                    .map(|(e, h)| Rfc3339(e.computed_at.plus_hours(h.max(0.0))))
            };
            let onset_at = est.and_then(|e| e.evidence.onset_at);
            let trend = est
                .and_then(|e| Some((e, e.distribution.trend()?)))
                .map(|(e, fit)| {
                    let start = onset_at
                        .or_else(|| history.first().map(|p| p.t))
                        .unwrap_or(e.computed_at);
                    let end_h = e.rul_p90_h.or(e.rul_p50_h).unwrap_or(0.0).max(24.0);
                    trend_line(fit, e.computed_at, start, end_h)
                })
                .unwrap_or_default();
            ComponentHealthHistoryView {
                name: c.name,
                status: c.status,
                installed_at: c.installed_at,
                failure_level: 1.0,
                trend_shape: est.and_then(|e| e.distribution.trend()).map(|f| f.shape),
                basis: est.map(|e| e.distribution.kind().to_string()),
                estimate_at: est.map(|e| Rfc3339(e.computed_at)),
                onset_at: onset_at.map(Rfc3339),
                rul_p10_at: at(est.and_then(|e| e.rul_p10_h)),
                rul_p50_at: at(est.and_then(|e| e.rul_p50_h)),
                rul_p90_at: at(est.and_then(|e| e.rul_p90_h)),
                history,
                trend,
                component: c.key,
            }
        })
        .collect();
    Ok(Json(MachineHealthHistoryView {
        machine: detail.summary.id,
        site: detail.summary.site,
        timezone: detail.timezone,
        bucket_hours: state.analysis.bucket_ms as f64 / UnixMs::HOUR as f64,
        components,
    }))
}

/// The fitted trend from `start` to `end_h` hours after the fit instant, cut once it
/// is well past the failure level.
fn trend_line(
    fit: &crate::model::TrendFit,
    fitted_at: UnixMs,
    start: UnixMs,
    end_h: f64,
) -> Vec<HiPoint> {
    let start_h = fitted_at.hours_until(start).min(0.0);
    let step = (end_h - start_h) / (TREND_POINTS - 1) as f64;
    let mut out = Vec::with_capacity(TREND_POINTS);
    for i in 0..TREND_POINTS {
        let h = start_h + step * i as f64;
        let hi = fit.hi_at(h);
        if !hi.is_finite() {
            break;
        }
        out.push(HiPoint {
            t: fitted_at.plus_hours(h),
            hi,
        });
        if hi > TREND_OVERSHOOT {
            break;
        }
    }
    out
}

pub(super) async fn sites(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<Vec<SiteView>>, ApiError> {
    let now = state.clock.now();
    Ok(Json(
        state
            .store
            .list_sites(now, state.planning.lookahead_h, &scope.visibility())
            .await?,
    ))
}
