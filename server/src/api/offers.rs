//! Replacement offers.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState, Scope};
use crate::store::OfferFilter;
use crate::views::OfferView;

const STATUSES: [&str; 8] = [
    "proposed",
    "accepted",
    "scheduled",
    "completed",
    "declined",
    "expired",
    "superseded",
    "cancelled",
];

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OfferQuery {
    status: Option<String>,
    machine: Option<String>,
    customer: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<OfferQuery>,
) -> Result<Json<Vec<OfferView>>, ApiError> {
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status `{s}`; one of {}",
            STATUSES.join(", ")
        )));
    }
    let filter = OfferFilter {
        status: q.status,
        machine: q.machine,
        customer: scope.customer(q.customer.as_deref())?,
    };
    Ok(Json(
        state
            .store
            .list_offers(&filter, &scope.visibility())
            .await?,
    ))
}

pub(super) async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OfferView>, ApiError> {
    state
        .store
        .offer(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no offer `{id}`")))
}

// ---- decisions: accept, decline, move --------------------------------------------

use axum::http::StatusCode;
use wearcast_protocol::UnixMs;

use super::ApiJson;
use crate::planner::calendar::{Occurrence, describe};
use crate::service::{Job, assign, effective_lead_time_days};
use crate::store::{ChangeRefused, OfferForDecision};
use crate::views::{CandidateWindowView, Rfc3339, WorkOrderView};

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::CONFLICT,
        message: message.into(),
    }
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: message.into(),
    }
}

async fn load_offer(state: &AppState, id: &str) -> Result<OfferForDecision, ApiError> {
    state
        .store
        .offer_for_decision(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no offer `{id}`")))
}

fn state_error(offer: &OfferForDecision, action: &str) -> ApiError {
    let hint = match (offer.status.as_str(), &offer.superseded_by) {
        ("superseded", Some(next)) => format!("; it was replaced by offer `{next}`"),
        ("expired", _) => {
            "; it expired (its window passed, or the part failed or was replaced)".into()
        }
        _ => String::new(),
    };
    conflict(format!(
        "offer `{}` is {}{hint}; only a proposed offer can be {action}",
        offer.id, offer.status
    ))
}

/// The offer's candidate windows with what makes each one selectable.
async fn candidates(
    state: &AppState,
    offer: &OfferForDecision,
    now: UnixMs,
) -> Result<Vec<(Occurrence, bool, CandidateWindowView)>, ApiError> {
    let lookahead = now.plus_hours(state.planning.lookahead_h);
    let occurrences = state
        .store
        .site_occurrences(&offer.site, now, lookahead)
        .await?;
    let technicians = state.store.technician_profiles().await?;
    let busy = state.store.busy(now, lookahead).await?;
    let service = &state.planning.service;
    let travel = crate::service::TravelModel {
        same_region_h: service.travel_same_region_hours,
        other_region_h: service.travel_other_region_hours,
    };
    let lead_days = offer
        .parts
        .iter()
        .map(|p| {
            effective_lead_time_days(p.stock, p.reserved, p.lead_time_days, service.dispatch_days)
        })
        .fold(0.0, f64::max);
    let earliest = now.plus_hours(lead_days * 24.0);
    let mut out = Vec::new();
    for (o, one_off) in occurrences {
        let p = p_any_fails_before(offer, o.start);
        let within_tolerance = p <= offer.risk_tolerance + 1e-12;
        let after_lead_time = o.start >= earliest;
        let technician_free =
            technicians.is_empty() || assign(&job(offer, o), &technicians, &busy, &travel).is_ok();
        out.push((
            o,
            one_off,
            CandidateWindowView {
                start: Rfc3339(o.start),
                end: Rfc3339(o.end),
                kind: if one_off { "one_off" } else { "weekly" }.into(),
                p_fail_before: p,
                within_tolerance,
                after_lead_time,
                technician_free,
                selectable: within_tolerance && after_lead_time && technician_free,
            },
        ));
    }
    Ok(out)
}

fn job(offer: &OfferForDecision, window: Occurrence) -> Job {
    Job {
        machine_model: offer.machine_model.clone(),
        region: offer.site.region.clone(),
        window,
        work_hours: offer.work_hours(),
    }
}

/// P(any of the offer's components fails before `t`), from their latest estimates.
fn p_any_fails_before(offer: &OfferForDecision, t: UnixMs) -> f64 {
    1.0 - offer
        .parts
        .iter()
        .filter_map(|p| p.estimate.as_ref())
        .map(|e| 1.0 - e.p_fail_before(t))
        .product::<f64>()
}

pub(super) async fn windows(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<CandidateWindowView>>, ApiError> {
    let offer = load_offer(&state, &id).await?;
    let now = state.clock.now();
    Ok(Json(
        candidates(&state, &offer, now)
            .await?
            .into_iter()
            .map(|(_, _, v)| v)
            .collect(),
    ))
}

/// Resolves the window the caller asked for (or the offer's own) and checks it may be
/// used: a planned stop of the site, in the future, after the parts arrive, within the
/// contract's risk tolerance (unless the offer is an urgent visit), with a technician.
async fn chosen_window(
    state: &AppState,
    offer: &OfferForDecision,
    requested: Option<&str>,
    now: UnixMs,
) -> Result<Occurrence, ApiError> {
    let Some(requested) = requested else {
        if offer.window.start <= now {
            return Err(unprocessable(format!(
                "the offer's window ({}) has already started; pick another with `window_start` (see GET /api/v1/offers/{}/windows)",
                offer.window.start, offer.id
            )));
        }
        return Ok(offer.window);
    };
    let start = UnixMs::parse_flexible(requested)
        .map_err(|e| ApiError::BadRequest(format!("`window_start`: {e}")))?;
    if start <= now {
        return Err(unprocessable(format!(
            "window {start} is in the past (now is {now})"
        )));
    }
    if offer.urgent && start == offer.window.start {
        return Ok(offer.window);
    }
    let all = candidates(state, offer, now).await?;
    let Some((o, _, view)) = all.into_iter().find(|(o, _, _)| o.start == start) else {
        return Err(unprocessable(format!(
            "{start} is not the start of one of site `{}`'s planned stops; see GET /api/v1/offers/{}/windows",
            offer.site.id, offer.id
        )));
    };
    if !view.after_lead_time {
        return Err(unprocessable(format!(
            "the parts cannot be on site before {}: their lead time ends later",
            describe(offer.site.timezone, &o)
        )));
    }
    if !view.within_tolerance {
        return Err(unprocessable(format!(
            "waiting until {} is not safe: P(failure before it) is {:.0}%, above the contract's {:.0}% tolerance",
            describe(offer.site.timezone, &o),
            100.0 * view.p_fail_before,
            100.0 * offer.risk_tolerance
        )));
    }
    if !view.technician_free {
        return Err(unprocessable(format!(
            "no qualified technician is free during {}",
            describe(offer.site.timezone, &o)
        )));
    }
    Ok(o)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcceptBody {
    /// Another planned stop (Unix ms or RFC 3339); the offer's own when absent.
    window_start: Option<String>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, serde::Serialize)]
pub(super) struct Decided {
    offer: OfferView,
    work_order: Option<WorkOrderView>,
}

pub(super) async fn accept(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Decided>, ApiError> {
    // The body is optional: accepting the offer as proposed needs none.
    let body: AcceptBody = if body.iter().all(u8::is_ascii_whitespace) {
        AcceptBody {
            window_start: None,
            note: String::new(),
        }
    } else {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(
            |e| ApiError::BadRequest(format!("invalid body at `{}`: {}", e.path(), e.inner())),
        )?
    };
    if body.note.len() > 2000 {
        return Err(ApiError::BadRequest(
            "`note` is longer than 2000 characters".into(),
        ));
    }
    let offer = load_offer(&state, &id).await?;
    if offer.status != "proposed" {
        return Err(state_error(&offer, "accepted"));
    }
    let now = state.clock.now();
    let window = chosen_window(&state, &offer, body.window_start.as_deref(), now).await?;
    let technicians = state.store.technician_profiles().await?;
    let service = &state.planning.service;
    let travel = crate::service::TravelModel {
        same_region_h: service.travel_same_region_hours,
        other_region_h: service.travel_other_region_hours,
    };
    let busy = state
        .store
        .busy(window.start.plus_hours(-48.0), window.end.plus_hours(48.0))
        .await?;
    // Nobody qualified or free: the offer is accepted all the same and the work order
    // waits for a dispatcher (the service desk is alerted).
    let assignment = assign(&job(&offer, window), &technicians, &busy, &travel).ok();
    let outcome = state
        .store
        .accept_offer(
            &offer,
            window,
            assignment.as_ref(),
            &body.note,
            now,
            &state.planning.notifications,
        )
        .await?;
    let wo = match outcome {
        Ok(wo) => wo,
        Err(ChangeRefused::State(m)) => return Err(conflict(m)),
        Err(ChangeRefused::TechnicianBusy(other)) => {
            return Err(conflict(format!(
                "the technician was booked for work order `{other}` meanwhile; try again"
            )));
        }
        Err(ChangeRefused::Other(m)) => return Err(unprocessable(m)),
    };
    tracing::info!(offer = %id, work_order = %wo, technician = ?assignment.as_ref().map(|a| &a.technician), "offer accepted");
    Ok(Json(Decided {
        offer: state
            .store
            .offer(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(id.clone()))?,
        work_order: state.store.work_order(&wo).await?,
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeclineBody {
    /// Why (shown to the service desk; feeds the after-sales analytics).
    reason: String,
}

pub(super) async fn decline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeclineBody>,
) -> Result<Json<OfferView>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::BadRequest(
            "`reason` must say why, in 1 to 2000 characters".into(),
        ));
    }
    let offer = load_offer(&state, &id).await?;
    if offer.status != "proposed" {
        return Err(state_error(&offer, "declined"));
    }
    let now = state.clock.now();
    if !state
        .store
        .decline_offer(&offer, reason, now, &state.planning.notifications)
        .await?
    {
        return Err(conflict("the offer changed meanwhile; reload it"));
    }
    state
        .store
        .offer(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(id))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RescheduleBody {
    window_start: String,
}

/// A proposed offer moves to another safe window (still to be accepted); an accepted
/// or scheduled one moves its work order there (with a technician free then).
pub(super) async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RescheduleBody>,
) -> Result<Json<Decided>, ApiError> {
    let offer = load_offer(&state, &id).await?;
    let now = state.clock.now();
    match offer.status.as_str() {
        "proposed" => {
            let window = chosen_window(&state, &offer, Some(&body.window_start), now).await?;
            if !state.store.move_proposal(&offer, window, now).await? {
                return Err(conflict("the offer changed meanwhile; reload it"));
            }
            Ok(Json(Decided {
                offer: state
                    .store
                    .offer(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(id.clone()))?,
                work_order: None,
            }))
        }
        "accepted" | "scheduled" => {
            let wo_id = offer
                .work_order
                .clone()
                .ok_or_else(|| conflict("the offer has no work order to move"))?;
            let window = chosen_window(&state, &offer, Some(&body.window_start), now).await?;
            let wo = super::service::move_work_order(&state, &wo_id, window, None, now).await?;
            Ok(Json(Decided {
                offer: state
                    .store
                    .offer(&id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(id.clone()))?,
                work_order: Some(wo),
            }))
        }
        _ => Err(state_error(&offer, "rescheduled")),
    }
}
