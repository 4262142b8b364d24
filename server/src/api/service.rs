//! Field service over HTTP: work orders (list, assign, complete), technicians and their
//! schedules, the parts catalogue with stock, contracts, planned stops (weekly schedule,
//! one-off stops, iCalendar export) and the service-organisation import.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wearcast_protocol::UnixMs;
use wearcast_protocol::registry::{RecurringWindow, ServiceOrganisation, Technician};

use super::{ApiError, ApiJson, ApiQuery, AppState, Scope};
use crate::ical::{IcsEvent, calendar};
use crate::planner::calendar::{Occurrence, WeeklyWindow, describe};
use crate::service::{Job, NoAssignment, TravelModel, assign, fits};
use crate::store::{AsFound, ChangeRefused, ComponentFinding, WorkOrderFilter, WorkOrderForChange};
use crate::views::*;

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

fn travel(state: &AppState) -> TravelModel {
    TravelModel {
        same_region_h: state.planning.service.travel_same_region_hours,
        other_region_h: state.planning.service.travel_other_region_hours,
    }
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<UnixMs>, ApiError> {
    value
        .map(|v| {
            UnixMs::parse_flexible(v).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
        })
        .transpose()
}

// ---- work orders -----------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkOrderQuery {
    technician: Option<String>,
    status: Option<String>,
    machine: Option<String>,
    site: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

const WORK_ORDER_STATUSES: [&str; 4] = ["unassigned", "scheduled", "completed", "cancelled"];

pub(super) async fn list_work_orders(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<WorkOrderQuery>,
) -> Result<Json<Vec<WorkOrderView>>, ApiError> {
    if let Some(s) = &q.status
        && !WORK_ORDER_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status `{s}`; one of {}",
            WORK_ORDER_STATUSES.join(", ")
        )));
    }
    let filter = WorkOrderFilter {
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
        technician: q.technician,
        status: q.status,
        machine: q.machine,
        site: q.site,
    };
    Ok(Json(
        state
            .store
            .work_orders(&filter, &scope.visibility())
            .await?,
    ))
}

pub(super) async fn work_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkOrderView>, ApiError> {
    state
        .store
        .work_order(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no work order `{id}`")))
}

async fn load_work_order(state: &AppState, id: &str) -> Result<WorkOrderForChange, ApiError> {
    state
        .store
        .work_order_for_change(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no work order `{id}`")))
}

/// Books an open work order in `window` with `technician` (or whoever fits best).
pub async fn move_work_order(
    state: &AppState,
    id: &str,
    window: Occurrence,
    technician: Option<&str>,
    now: UnixMs,
) -> Result<WorkOrderView, ApiError> {
    let wo = load_work_order(state, id).await?;
    if !matches!(wo.status.as_str(), "unassigned" | "scheduled") {
        return Err(conflict(format!(
            "work order `{id}` is {}; only an unassigned or scheduled one can be (re)booked",
            wo.status
        )));
    }
    let mut techs = state.store.technician_profiles().await?;
    if let Some(t) = technician {
        let Some(profile) = techs.iter().find(|p| p.id == t).cloned() else {
            return Err(ApiError::NotFound(format!("no active technician `{t}`")));
        };
        if !profile.skills.contains(&wo.machine_model) {
            return Err(unprocessable(format!(
                "technician `{t}` is not qualified for machine model `{}` (skills: {})",
                wo.machine_model,
                profile
                    .skills
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        techs = vec![profile];
    }
    // The work order's own booking does not block its re-booking.
    let busy: Vec<_> = state
        .store
        .busy(window.start.plus_hours(-48.0), window.end.plus_hours(48.0))
        .await?
        .into_iter()
        .filter(|b| {
            !(Some(&b.technician) == wo.technician.as_ref()
                && wo.status == "scheduled"
                && b.start >= wo.window.start
                && b.end <= wo.window.end)
        })
        .collect();
    let job = Job {
        machine_model: wo.machine_model.clone(),
        region: wo.site.region.clone(),
        window,
        work_hours: wo.work_hours,
    };
    let assignment = match assign(&job, &techs, &busy, &travel(state)) {
        Ok(a) => a,
        Err(NoAssignment::NobodyQualified) => {
            return Err(unprocessable(format!(
                "no technician is qualified for machine model `{}`",
                wo.machine_model
            )));
        }
        Err(NoAssignment::NobodyFree) => {
            return Err(conflict(format!(
                "{} is not free during {}",
                technician.map_or("no qualified technician".to_string(), |t| format!(
                    "technician `{t}`"
                )),
                describe(wo.site.timezone, &window)
            )));
        }
    };
    debug_assert!(fits(
        &job,
        techs
            .iter()
            .find(|t| t.id == assignment.technician)
            .unwrap_or(&techs[0]),
        assignment.start,
        &busy,
        &travel(state)
    ));
    match state
        .store
        .schedule_work_order(&wo, window, &assignment, now, &state.planning.notifications)
        .await?
    {
        Ok(()) => {}
        Err(ChangeRefused::TechnicianBusy(other)) => {
            return Err(conflict(format!(
                "the technician was booked for work order `{other}` meanwhile; try again"
            )));
        }
        Err(ChangeRefused::State(m) | ChangeRefused::Other(m)) => return Err(conflict(m)),
    }
    state
        .store
        .work_order(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    technician: String,
}

pub(super) async fn assign_work_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<WorkOrderView>, ApiError> {
    let wo = load_work_order(&state, &id).await?;
    let now = state.clock.now();
    if wo.window.end <= now {
        return Err(unprocessable(format!(
            "the work order's window ({}) is over; reschedule the offer to another planned stop",
            describe(wo.site.timezone, &wo.window)
        )));
    }
    Ok(Json(
        move_work_order(&state, &id, wo.window, Some(&body.technician), now).await?,
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FindingBody {
    component: String,
    as_found: AsFound,
    #[serde(default)]
    notes: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteBody {
    /// One finding per replaced component.
    components: Vec<FindingBody>,
    #[serde(default)]
    notes: String,
    /// The work was done before the planned stop it is booked in began (the customer
    /// stopped the machine early and the technician came). Without it, completing a
    /// visit whose stop has not begun is refused: most often it is the wrong card.
    #[serde(default)]
    early: bool,
}

pub(super) async fn complete_work_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<WorkOrderView>, ApiError> {
    let wo = load_work_order(&state, &id).await?;
    if wo.status != "scheduled" {
        return Err(conflict(format!(
            "work order `{id}` is {}; only a scheduled one can be completed",
            wo.status
        )));
    }
    let expected: HashSet<&str> = wo.components.iter().map(|(c, _)| c.as_str()).collect();
    let given: HashSet<&str> = body
        .components
        .iter()
        .map(|f| f.component.as_str())
        .collect();
    if given.len() != body.components.len() {
        return Err(ApiError::BadRequest("a component is listed twice".into()));
    }
    if let Some(extra) = given.difference(&expected).next() {
        return Err(unprocessable(format!(
            "component `{extra}` is not part of work order `{id}` (it covers: {})",
            wo.components
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(missing) = expected.difference(&given).next() {
        return Err(unprocessable(format!(
            "record the as-found condition of `{missing}` too"
        )));
    }
    if body.notes.len() > 4000 || body.components.iter().any(|f| f.notes.len() > 2000) {
        return Err(ApiError::BadRequest("notes are too long".into()));
    }
    if state.clock.now() < wo.window.start && !body.early {
        return Err(unprocessable(format!(
            "work order `{id}` is booked in the planned stop {}, which has not begun; if \
             the work was done early, say so with \"early\": true",
            describe(wo.site.timezone, &wo.window)
        )));
    }
    let findings: Vec<ComponentFinding> = body
        .components
        .into_iter()
        .map(|f| ComponentFinding {
            component: f.component,
            as_found: f.as_found,
            notes: f.notes,
        })
        .collect();
    let now = state.clock.now();
    match state
        .store
        .complete_work_order(
            &wo,
            &findings,
            &body.notes,
            now,
            &state.planning.notifications,
            &state.survey_request(),
        )
        .await?
    {
        Ok(()) => {}
        Err(
            ChangeRefused::State(m) | ChangeRefused::TechnicianBusy(m) | ChangeRefused::Other(m),
        ) => {
            return Err(conflict(m));
        }
    }
    tracing::info!(work_order = %id, machine = %wo.machine, "work order completed");
    state
        .store
        .work_order(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(id))
}

// ---- technicians -----------------------------------------------------------------

/// The caller's tenant's technicians (every tenant's for the deployment's admin).
pub(super) async fn technicians(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<Vec<TechnicianView>>, ApiError> {
    let p = scope.principal();
    let mut all = state.store.technicians_of(p.tenant.as_deref()).await?;
    if let Some(own) = &p.technician {
        all.retain(|t| &t.id == own);
    }
    Ok(Json(all))
}

/// The tenant a change by `scope` goes to: the caller's, or for the deployment's
/// admin, the deployment's first.
async fn tenant(state: &AppState, scope: &Scope) -> Result<String, ApiError> {
    if let Some(own) = &scope.principal().tenant {
        return Ok(own.clone());
    }
    state
        .store
        .tenant_id()
        .await?
        .ok_or_else(|| conflict("import a fleet manifest first (POST /api/v1/registry)"))
}

/// A technician id another tenant already uses cannot be written over (409).
async fn check_own_technician(state: &AppState, tenant: &str, id: &str) -> Result<(), ApiError> {
    if state
        .store
        .technician_tenant(id)
        .await?
        .is_some_and(|owner| owner != tenant)
    {
        return Err(ApiError::Rejected {
            status: StatusCode::CONFLICT,
            message: format!("technician id `{id}` belongs to another tenant"),
        });
    }
    Ok(())
}

/// A technician's skills must be machine models of their own tenant, so the planner,
/// which matches work to technicians by model, never sends one to another tenant.
async fn check_skills(state: &AppState, tenant: &str, t: &Technician) -> Result<(), ApiError> {
    let models = state.store.machine_models_of(tenant).await?;
    if let Some(unknown) = t.skills.iter().find(|s| !models.contains(s.as_str())) {
        return Err(unprocessable(format!(
            "technician `{}`: unknown machine model `{unknown}`",
            t.id
        )));
    }
    Ok(())
}

pub(super) async fn upsert_technician(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(t): ApiJson<Technician>,
) -> Result<Json<TechnicianView>, ApiError> {
    let org = ServiceOrganisation {
        technicians: vec![t.clone()],
        stock: vec![],
    };
    org.check()
        .map_err(|p| ApiError::BadRequest(p.join("; ")))?;
    let tenant = tenant(&state, &scope).await?;
    check_skills(&state, &tenant, &t).await?;
    check_own_technician(&state, &tenant, t.id.as_str()).await?;
    state.store.upsert_technician(&tenant, &t).await?;
    state
        .store
        .technicians_of(Some(&tenant))
        .await?
        .into_iter()
        .find(|v| v.id == t.id.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(t.id.to_string()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AbsenceBody {
    start: String,
    end: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn add_absence(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AbsenceBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !state.store.technicians().await?.iter().any(|t| t.id == id) {
        return Err(ApiError::NotFound(format!("no technician `{id}`")));
    }
    let start = parse_time("start", Some(&body.start))?.unwrap_or_default();
    let end = parse_time("end", Some(&body.end))?.unwrap_or_default();
    if end <= start {
        return Err(ApiError::BadRequest("`end` must be after `start`".into()));
    }
    let absence = state
        .store
        .add_absence(&id, start, end, &body.reason)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            serde_json::json!({ "id": absence, "technician": id, "start": start.to_rfc3339(), "end": end.to_rfc3339() }),
        ),
    ))
}

fn ics_response(body: String, filename: &str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/calendar; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn technician_ics(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tech = state
        .store
        .technicians()
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no technician `{id}`")))?;
    let orders = state
        .store
        .work_orders(
            &WorkOrderFilter {
                technician: Some(id.clone()),
                status: Some("scheduled".into()),
                ..Default::default()
            },
            &scope.visibility(),
        )
        .await?;
    let events: Vec<IcsEvent> = orders
        .iter()
        .filter_map(|w| {
            Some(IcsEvent {
                uid: format!("{}@wearcast", w.id),
                summary: format!(
                    "{}: replace {} ({})",
                    w.machine,
                    w.components
                        .iter()
                        .map(|c| c.part_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    w.site_name
                ),
                description: format!(
                    "Work order {}. Parts to bring: {}.\n\nWhy: {}",
                    w.id,
                    w.components
                        .iter()
                        .map(|c| format!("{} ({})", c.part_name, c.part))
                        .collect::<Vec<_>>()
                        .join(", "),
                    w.reason
                ),
                location: w.site_name.clone(),
                start: w.booked_start?.0,
                end: w.booked_end?.0,
            })
        })
        .collect();
    Ok(ics_response(
        calendar(
            &format!("Wearcast: {}", tech.name),
            &events,
            state.clock.now(),
        ),
        &format!("{id}.ics"),
    ))
}

// ---- catalogue, contracts ----------------------------------------------------------

pub(super) async fn parts(State(state): State<AppState>) -> Result<Json<Vec<PartView>>, ApiError> {
    Ok(Json(state.store.parts().await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StockBody {
    quantity: u32,
}

pub(super) async fn set_stock(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StockBody>,
) -> Result<Json<PartView>, ApiError> {
    if !state.store.set_stock(&id, body.quantity).await? {
        return Err(ApiError::NotFound(format!("no part `{id}`")));
    }
    state
        .store
        .parts()
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(id))
}

pub(super) async fn contracts(
    State(state): State<AppState>,
) -> Result<Json<Vec<ContractView>>, ApiError> {
    Ok(Json(state.store.contracts().await?))
}

// ---- planned stops -----------------------------------------------------------------

async fn load_site(state: &AppState, id: &str) -> Result<crate::store::SiteInfo, ApiError> {
    state
        .store
        .site_info(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no site `{id}`")))
}

pub(super) async fn set_weekly_windows(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    ApiJson(windows): ApiJson<Vec<RecurringWindow>>,
) -> Result<Json<Vec<SiteView>>, ApiError> {
    load_site(&state, &id).await?;
    let mut weekly = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let start = w
            .start_minute()
            .map_err(|e| ApiError::BadRequest(format!("[{i}]: {e}")))?;
        if !(w.duration_hours > 0.0 && w.duration_hours <= 168.0) {
            return Err(ApiError::BadRequest(format!(
                "[{i}]: duration_hours {} is not in (0, 168]",
                w.duration_hours
            )));
        }
        weekly.push(WeeklyWindow {
            weekday: w.weekday.days_from_monday(),
            start_minute: start,
            duration_minutes: (w.duration_hours * 60.0).round() as u32,
        });
    }
    state.store.set_weekly_windows(&id, &weekly).await?;
    let now = state.clock.now();
    Ok(Json(
        state
            .store
            .list_sites(now, state.planning.lookahead_h, &scope.visibility())
            .await?
            .into_iter()
            .filter(|s| s.id == id)
            .collect(),
    ))
}

pub(super) async fn stops(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StopView>>, ApiError> {
    load_site(&state, &id).await?;
    let now = state.clock.now();
    Ok(Json(
        state
            .store
            .stops(&id, now, now.plus_hours(state.planning.lookahead_h))
            .await?,
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StopBody {
    start: String,
    end: String,
    #[serde(default)]
    note: String,
}

pub(super) async fn add_stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StopBody>,
) -> Result<(StatusCode, Json<StopView>), ApiError> {
    load_site(&state, &id).await?;
    let start = parse_time("start", Some(&body.start))?.unwrap_or_default();
    let end = parse_time("end", Some(&body.end))?.unwrap_or_default();
    let now = state.clock.now();
    if end <= start {
        return Err(ApiError::BadRequest("`end` must be after `start`".into()));
    }
    if end.0 - start.0 > 14 * UnixMs::DAY {
        return Err(ApiError::BadRequest(
            "a stop longer than 14 days is not a planned stop; split it".into(),
        ));
    }
    if start <= now {
        return Err(unprocessable(format!(
            "the stop starts in the past (now is {now})"
        )));
    }
    if body.note.len() > 500 {
        return Err(ApiError::BadRequest(
            "`note` is longer than 500 characters".into(),
        ));
    }
    let stop = state
        .store
        .add_stop(&id, start, end, &body.note, now)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(StopView {
            id: stop,
            site: id,
            start: Rfc3339(start),
            end: Rfc3339(end),
            note: body.note,
        }),
    ))
}

pub(super) async fn delete_stop(
    State(state): State<AppState>,
    Path((id, stop)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_stop(&id, &stop).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "site `{id}` has no stop `{stop}`"
        )))
    }
}

pub(super) async fn site_ics(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let site = load_site(&state, &id).await?;
    let now = state.clock.now();
    let to = now.plus_hours(state.planning.lookahead_h);
    let mut events: Vec<IcsEvent> = state
        .store
        .site_occurrences(&site, now, to)
        .await?
        .into_iter()
        .map(|(o, one_off)| IcsEvent {
            uid: format!("stop-{}-{}@wearcast", site.id, o.start.0),
            summary: format!("Planned stop{}", if one_off { " (one-off)" } else { "" }),
            description: format!("Planned maintenance window of {}", site.name),
            location: site.name.clone(),
            start: o.start,
            end: o.end,
        })
        .collect();
    for w in state
        .store
        .work_orders(
            &WorkOrderFilter {
                site: Some(id.clone()),
                from: Some(now),
                ..Default::default()
            },
            &scope.visibility(),
        )
        .await?
        .into_iter()
        .filter(|w| matches!(w.status.as_str(), "scheduled" | "unassigned"))
    {
        events.push(IcsEvent {
            uid: format!("{}@wearcast", w.id),
            summary: format!("Service visit: {}", w.machine),
            description: format!(
                "Replacing {} (work order {}).",
                w.components
                    .iter()
                    .map(|c| c.component.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                w.id
            ),
            location: site.name.clone(),
            start: w.booked_start.unwrap_or(w.window_start).0,
            end: w.booked_end.unwrap_or(w.window_end).0,
        });
    }
    Ok(ics_response(
        calendar(&format!("{}: planned stops", site.name), &events, now),
        &format!("{id}.ics"),
    ))
}

// ---- service organisation -------------------------------------------------------------

pub(super) async fn import_service(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(org): ApiJson<ServiceOrganisation>,
) -> Result<Json<serde_json::Value>, ApiError> {
    org.check()
        .map_err(|p| ApiError::BadRequest(p.join("; ")))?;
    let tenant = tenant(&state, &scope).await?;
    for t in &org.technicians {
        check_skills(&state, &tenant, t).await?;
        check_own_technician(&state, &tenant, t.id.as_str()).await?;
    }
    let parts = state.store.part_ids_of(&tenant).await?;
    if let Some(unknown) = org.stock.iter().find(|s| !parts.contains(s.part.as_str())) {
        return Err(unprocessable(format!(
            "stock: unknown part `{}`",
            unknown.part
        )));
    }
    let (technicians, stock) = state.store.import_service(&tenant, &org).await?;
    Ok(Json(
        serde_json::json!({ "technicians": technicians, "stock": stock }),
    ))
}
