//! After-sales analytics over HTTP: KPIs over a period, customer accounts (health,
//! churn signals, lifecycle, LTV, renewal, recommendations) as JSON, CSV and a webhook
//! snapshot for the CRM, contract proposals, and the NPS survey: its public answer page
//! (`GET /survey/{token}`, no sign-in) and answer endpoint.
//!
//! Every figure is restricted through [`customer_scope`]: a customer's token sees
//! only its own customer (naming another answers 404, as an unknown one does); staff
//! see the customer they name, or all. Who may call what is in `routes.rs`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wearcast_protocol::UnixMs;

use super::{ApiError, ApiJson, ApiQuery, AppState, Scope};
use crate::analytics::accounts::{account, to_csv};
use crate::analytics::config::ms;
use crate::analytics::health::LifecycleStage;
use crate::analytics::kpis::{by_customer, compute};
use crate::analytics::survey::{
    InvalidAnswer, RawAnswer, SurveyAnswer, answer_page, message_page, token_hash, well_formed,
};
use crate::analytics::{Facts, Period, ProposalKind, date};
use crate::backtest::BacktestSummary;
use crate::store::{ObjectKind, RecordedBacktest, SurveyAnswered, SurveyRequest};
use crate::views::*;

/// Default KPI period when `from` is not given.
const DEFAULT_PERIOD_MS: i64 = 30 * UnixMs::DAY;
/// Largest survey answer body (a reason is at most 2000 characters).
const MAX_ANSWER_BYTES: usize = 16 * 1024;
const SURVEY_STATUSES: [&str; 3] = ["open", "answered", "expired"];

impl AppState {
    /// What completing a work order needs to survey the customer.
    pub fn survey_request(&self) -> SurveyRequest<'_> {
        SurveyRequest {
            analytics: &self.analytics,
            contact_cap_per_week: self.planning.service.contact_cap_per_week,
        }
    }

    fn contact_cap(&self) -> u32 {
        self.planning.service.contact_cap_per_week
    }
}

fn status(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        status: code,
        message: message.into(),
    }
}

/// The customer whose figures a request may see (`None`: the whole tenant): the
/// caller's own for a customer token ([`Scope::customer`]), else the one named.
async fn customer_scope(
    state: &AppState,
    scope: &Scope,
    requested: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if requested.is_some_and(|id| id.trim().is_empty()) {
        return Err(ApiError::BadRequest(
            "query parameter `customer` is empty; leave it out for every customer".into(),
        ));
    }
    let Some(id) = scope.customer(requested)? else {
        return Ok(None);
    };
    let seen = state
        .store
        .owner(ObjectKind::Customer, &id)
        .await?
        .is_some_and(|owner| scope.principal().sees(&owner));
    if !seen {
        return Err(ApiError::NotFound(format!("no customer `{id}`")));
    }
    Ok(Some(id))
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<UnixMs>, ApiError> {
    value
        .map(|v| {
            UnixMs::parse_flexible(v).map_err(|e| {
                ApiError::BadRequest(format!(
                    "query parameter `{name}`: {e} (use RFC 3339 like 2026-11-01T00:00:00Z or Unix milliseconds)"
                ))
            })
        })
        .transpose()
}

// ---- KPIs ------------------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KpiQuery {
    from: Option<String>,
    to: Option<String>,
    customer: Option<String>,
}

/// The period `[from, to)` a query asks for: `to` defaults to `now` and `from` to
/// `default_ms` before `to`.
fn period(q: &KpiQuery, now: UnixMs, default_ms: i64) -> Result<(UnixMs, UnixMs), ApiError> {
    let to = parse_time("to", q.to.as_deref())?.unwrap_or(now);
    let from = parse_time("from", q.from.as_deref())?.unwrap_or(to.plus_ms(-default_ms));
    if to <= from {
        return Err(ApiError::BadRequest(format!(
            "the period is empty: `to` ({}) must be after `from` ({})",
            to.to_rfc3339(),
            from.to_rfc3339()
        )));
    }
    Ok((from, to))
}

/// `GET /api/v1/kpis?from=&to=&customer=`: the period is `[from, to)`; `to` defaults
/// to now and `from` to 30 days before `to`.
pub(super) async fn kpis(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<KpiQuery>,
) -> Result<Json<KpisView>, ApiError> {
    let now = state.clock.now();
    let (from, to) = period(&q, now, DEFAULT_PERIOD_MS)?;
    let scope = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    let cfg = &state.analytics;
    let facts = state
        .store
        .analytics_facts(scope.as_deref(), now, None, ms(cfg.ltv.renewal_grace))
        .await?;
    let period = Period::new(from, to);
    Ok(Json(KpisView {
        period: PeriodView {
            from: Rfc3339(from),
            to: Rfc3339(to),
        },
        customer: scope,
        currency: facts.currency.clone(),
        ltv_as_of: Rfc3339(UnixMs(to.0.min(now.0))),
        kpis: compute(&facts, None, period, now, &cfg.ltv),
        by_customer: by_customer(&facts, period, now, &cfg.ltv)
            .into_iter()
            .map(|(customer, name, kpis)| CustomerKpisView {
                customer,
                name,
                kpis,
            })
            .collect(),
    }))
}

// ---- model quality ---------------------------------------------------------------

/// Default model-quality period: lives end rarely, so a year.
const QUALITY_PERIOD_MS: i64 = 365 * UnixMs::DAY;

/// `GET /api/v1/model-quality?from=&to=&customer=`: how the live model's daily sampled
/// predictions fared against the component lives that ended in `[from, to)` (see
/// [`crate::model::quality`]); `from` defaults to a year before `to`.
pub(super) async fn model_quality(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<KpiQuery>,
) -> Result<Json<ModelQualityView>, ApiError> {
    let (from, to) = period(&q, state.clock.now(), QUALITY_PERIOD_MS)?;
    let customer = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    let mut vis = scope.visibility();
    if customer.is_some() {
        vis.customer.clone_from(&customer);
    }
    let (predictions, lives) = state.store.prediction_outcomes(from, to, &vis).await?;
    Ok(Json(ModelQualityView {
        period: PeriodView {
            from: Rfc3339(from),
            to: Rfc3339(to),
        },
        customer,
        sampled_every_h: crate::store::PREDICTION_SAMPLE_MS as f64 / UnixMs::HOUR as f64,
        target_inside: [0.7, 0.9],
        quality: crate::model::quality::model_quality(&predictions, &lives),
    }))
}

// ---- backtests -------------------------------------------------------------------

/// How many published backtests the list shows.
const BACKTESTS_SHOWN: u32 = 20;

#[derive(Debug, Serialize)]
pub(super) struct BacktestsView {
    /// Newest first: the caller's tenant's and the deployment-wide ones.
    backtests: Vec<RecordedBacktest>,
}

/// `POST /api/v1/model-quality/backtests`: records a backtest's summary (what `wearcast
/// backtest --publish` sends) for the caller's tenant.
pub(super) async fn record_backtest(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(body): ApiJson<BacktestSummary>,
) -> Result<(StatusCode, Json<RecordedBacktest>), ApiError> {
    body.check().map_err(|m| ApiError::Rejected {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: m,
    })?;
    let p = scope.principal();
    let recorded = state
        .store
        .record_backtest(p.tenant.as_deref(), &p.token, state.clock.now(), &body)
        .await?;
    Ok((StatusCode::CREATED, Json(recorded)))
}

/// `GET /api/v1/model-quality/backtests`: the newest published backtests.
pub(super) async fn backtests(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<BacktestsView>, ApiError> {
    let tenant = scope.principal().tenant.clone();
    Ok(Json(BacktestsView {
        backtests: state
            .store
            .backtests(tenant.as_deref(), BACKTESTS_SHOWN)
            .await?,
    }))
}

// ---- accounts --------------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountQuery {
    customer: Option<String>,
    flagged: Option<String>,
    stage: Option<String>,
}

pub(super) struct AccountFilter {
    flagged: Option<bool>,
    stage: Option<LifecycleStage>,
}

impl AccountQuery {
    fn filter(&self) -> Result<AccountFilter, ApiError> {
        let flagged = match self.flagged.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "query parameter `flagged` must be `true` or `false`, got `{other}`"
                )));
            }
        };
        let stage = match self.stage.as_deref() {
            None => None,
            Some(s) => Some(LifecycleStage::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `stage` must be one of onboarding, established, mature; got `{s}`"
                ))
            })?),
        };
        Ok(AccountFilter { flagged, stage })
    }
}

/// Accounts in scope at now, worst health first.
async fn load_accounts(
    state: &AppState,
    scope: Option<&str>,
    filter: &AccountFilter,
) -> Result<Vec<AccountView>, ApiError> {
    let now = state.clock.now();
    let cfg = &state.analytics;
    let facts: Facts = state
        .store
        .analytics_facts(scope, now, Some(&cfg.health), ms(cfg.ltv.renewal_grace))
        .await?;
    let index = facts.offer_index();
    let mut out: Vec<AccountView> = facts
        .customers
        .iter()
        .map(|c| {
            account(
                &facts.view(c, &index),
                now,
                cfg,
                &facts.tenant_renewals,
                state.contact_cap(),
                &facts.currency,
            )
        })
        .filter(|a| filter.flagged.is_none_or(|f| a.flagged == f))
        .filter(|a| filter.stage.is_none_or(|s| a.lifecycle_stage == s))
        .collect();
    out.sort_by(|a, b| {
        a.health_score
            .total_cmp(&b.health_score)
            .then_with(|| a.customer.cmp(&b.customer))
    });
    Ok(out)
}

pub(super) async fn accounts(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    let filter = q.filter()?;
    let scope = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    Ok(Json(
        load_accounts(&state, scope.as_deref(), &filter).await?,
    ))
}

pub(super) async fn accounts_csv(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let scope = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    let accounts = load_accounts(&state, scope.as_deref(), &filter).await?;
    let csv = to_csv(&accounts)
        .map_err(|e| crate::store::StoreError::Corrupt(format!("writing the accounts CSV: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"accounts.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

pub(super) async fn one_account(
    State(state): State<AppState>,
    scope: Scope,
    Path(customer): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let scope = customer_scope(&state, &scope, Some(&customer)).await?;
    let filter = AccountFilter {
        flagged: None,
        stage: None,
    };
    load_accounts(&state, scope.as_deref(), &filter)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no customer `{customer}`")))
}

/// `POST /api/v1/exports/accounts?customer=&flagged=&stage=`: the accounts, as JSON,
/// to every webhook subscribed to `accounts.snapshot` (signed, through the outbox).
pub(super) async fn export_accounts(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let filter = q.filter()?;
    let scope = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    let notifications = &state.planning.notifications;
    if !notifications
        .webhooks
        .iter()
        .any(|h| h.events.is_empty() || h.events.iter().any(|e| e == "accounts.snapshot"))
    {
        return Err(status(
            StatusCode::CONFLICT,
            "no webhook receives `accounts.snapshot`: configure one in server.notifications.webhooks (events empty, or listing it)",
        ));
    }
    let accounts = load_accounts(&state, scope.as_deref(), &filter).await?;
    let count = accounts.len();
    let now = state.clock.now();
    let data = serde_json::json!({ "customer": scope, "accounts": accounts });
    let deliveries = state
        .store
        .queue_accounts_snapshot(data, now, notifications)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "event": "accounts.snapshot",
            "accounts": count,
            "deliveries": deliveries,
        })),
    ))
}

// ---- proposals -------------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProposalBody {
    kind: ProposalKind,
}

/// `POST /api/v1/accounts/{customer}/proposals {"kind": "contract"|"upgrade"}`: sends
/// the current recommendation of that kind to the customer.
pub(super) async fn send_proposal(
    State(state): State<AppState>,
    scope: Scope,
    Path(customer): Path<String>,
    ApiJson(body): ApiJson<ProposalBody>,
) -> Result<(StatusCode, Json<ProposalView>), ApiError> {
    let scope = customer_scope(&state, &scope, Some(&customer)).await?;
    let filter = AccountFilter {
        flagged: None,
        stage: None,
    };
    let Some(account) = load_accounts(&state, scope.as_deref(), &filter)
        .await?
        .into_iter()
        .next()
    else {
        return Err(ApiError::NotFound(format!("no customer `{customer}`")));
    };
    let kind = body.kind.as_str();
    let Some(rec) = account
        .recommendations
        .into_iter()
        .find(|r| r.kind == body.kind)
    else {
        return Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "no {kind} proposal is recommended for customer `{customer}` now (see GET /api/v1/accounts/{customer})"
            ),
        ));
    };
    if let Some(why) = &rec.held_back {
        return Err(status(
            StatusCode::CONFLICT,
            format!("the {kind} proposal for `{customer}` is held back: {why}"),
        ));
    }
    let now = state.clock.now();
    match state
        .store
        .send_proposal(
            &customer,
            &rec,
            now,
            state.contact_cap(),
            &state.planning.notifications,
        )
        .await?
    {
        Ok(view) => {
            tracing::info!(%customer, kind, tier = %rec.tier, "proposal sent");
            Ok((StatusCode::CREATED, Json(view)))
        }
        Err(contacts) => Err(status(
            StatusCode::CONFLICT,
            format!(
                "the {kind} proposal for `{customer}` is held back: contact cap reached: {contacts} contacts in the last 7 days (cap {})",
                state.contact_cap()
            ),
        )),
    }
}

// ---- surveys ---------------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SurveyQuery {
    customer: Option<String>,
    status: Option<String>,
}

pub(super) async fn surveys(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<SurveyQuery>,
) -> Result<Json<Vec<SurveyView>>, ApiError> {
    if let Some(s) = &q.status
        && !SURVEY_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "query parameter `status` must be one of {}; got `{s}`",
            SURVEY_STATUSES.join(", ")
        )));
    }
    let scope = customer_scope(&state, &scope, q.customer.as_deref()).await?;
    Ok(Json(
        state
            .store
            .surveys(scope.as_deref(), q.status.as_deref(), state.clock.now())
            .await?,
    ))
}

/// `POST /api/v1/surveys/{id}/link`: a fresh link for an unanswered survey (the old
/// one stops working), e.g. for the service desk to hand over by phone.
pub(super) async fn reissue_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SurveyLinkView>, ApiError> {
    let now = state.clock.now();
    match state
        .store
        .reissue_survey_link(&id, now, state.analytics.survey_expiry_ms())
        .await?
    {
        None => Err(ApiError::NotFound(format!("no survey `{id}`"))),
        Some(Err(answered)) => Err(status(
            StatusCode::CONFLICT,
            format!(
                "survey `{id}` was answered on {}; it needs no new link",
                date(answered)
            ),
        )),
        Some(Ok((token, expires))) => Ok(Json(SurveyLinkView {
            survey: id,
            link: state.analytics.survey_link(&token),
            expires_at: Rfc3339(expires),
        })),
    }
}

/// How the survey answer was posted, so the answer comes back the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Json,
    Form,
}

fn rejected(via: Via, code: StatusCode, outcome: &'static str, message: String) -> Response {
    metrics::counter!("wearcast_survey_answers_total", "outcome" => outcome).increment(1);
    match via {
        Via::Json => status(code, message).into_response(),
        Via::Form => {
            // A sentence on the page starts with a capital.
            let mut text: Vec<char> = message.chars().collect();
            if let Some(first) = text.first_mut() {
                *first = first.to_ascii_uppercase();
            }
            let text: String = text.into_iter().collect();
            html(code, message_page("Your answer was not recorded", &text))
        }
    }
}

fn html(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The token is in the URL: never leak it to another site.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

/// `POST /api/v1/surveys/{token}`: JSON `{"score": 0..10, "reason": "...", "csat":
/// 1..5}` or the answer page's form. 404 unknown link, 409 already answered, 410
/// expired, 422 a value out of range; nothing is recorded unless all is well.
pub(super) async fn answer_survey(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let via = if content_type.starts_with("application/x-www-form-urlencoded") {
        Via::Form
    } else {
        Via::Json
    };
    if via == Via::Json && !content_type.starts_with("application/json") {
        return rejected(
            via,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "malformed",
            "send the answer as JSON (Content-Type: application/json) or as a form (application/x-www-form-urlencoded)".into(),
        );
    }
    if body.len() > MAX_ANSWER_BYTES {
        return rejected(
            via,
            StatusCode::PAYLOAD_TOO_LARGE,
            "malformed",
            format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
        );
    }
    let parsed: Result<SurveyAnswer, InvalidAnswer> = match via {
        Via::Json => {
            let mut de = serde_json::Deserializer::from_slice(&body);
            match serde_path_to_error::deserialize::<_, RawAnswer>(&mut de) {
                Ok(raw) => SurveyAnswer::parse(&raw),
                Err(e) => {
                    return rejected(
                        via,
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!(
                            "the answer is not valid JSON of the expected shape: at `{}`: {}",
                            e.path(),
                            e.inner()
                        ),
                    );
                }
            }
        }
        Via::Form => match std::str::from_utf8(&body)
            .map_err(|_| "the form is not UTF-8".to_string())
            .and_then(SurveyAnswer::from_form)
        {
            Ok(answer) => answer,
            Err(e) => return rejected(via, StatusCode::BAD_REQUEST, "malformed", e),
        },
    };
    let answer = match parsed {
        Ok(a) => a,
        Err(InvalidAnswer(m)) => {
            return rejected(via, StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
        }
    };
    if !well_formed(&token) {
        return rejected(
            via,
            StatusCode::NOT_FOUND,
            "unknown",
            "no survey has this link; check that it was copied whole".into(),
        );
    }
    let now = state.clock.now();
    let outcome = state
        .store
        .answer_survey(
            &token_hash(&token),
            &answer,
            now,
            &state.planning.notifications,
        )
        .await;
    match outcome {
        Err(e) => ApiError::from(e).into_response(),
        Ok(SurveyAnswered::Unknown) => rejected(
            via,
            StatusCode::NOT_FOUND,
            "unknown",
            "no survey has this link; check that it was copied whole".into(),
        ),
        Ok(SurveyAnswered::AlreadyAnswered(at)) => rejected(
            via,
            StatusCode::CONFLICT,
            "already_answered",
            format!(
                "this survey was already answered on {}; one answer per visit",
                date(at)
            ),
        ),
        Ok(SurveyAnswered::Expired(at)) => rejected(
            via,
            StatusCode::GONE,
            "expired",
            format!("this survey link expired on {}", date(at)),
        ),
        Ok(SurveyAnswered::Recorded(view)) => {
            metrics::counter!("wearcast_survey_answers_total", "outcome" => "recorded")
                .increment(1);
            tracing::info!(survey = %view.id, customer = %view.customer, score = answer.score, "survey answered");
            match via {
                Via::Json => Json(view).into_response(),
                Via::Form => html(
                    StatusCode::OK,
                    message_page(
                        "Thank you",
                        "Your answer is recorded. It goes straight to the service team.",
                    ),
                ),
            }
        }
    }
}

/// `GET /survey/{token}`: the answer page (plain HTML form, no script).
pub(super) async fn survey_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let not_found = || {
        html(
            StatusCode::NOT_FOUND,
            message_page(
                "Survey not found",
                "No survey has this link; check that it was copied whole.",
            ),
        )
    };
    if !well_formed(&token) {
        return not_found();
    }
    let survey = match state.store.survey_for_page(&token_hash(&token)).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(survey) = survey else {
        return not_found();
    };
    let now = state.clock.now();
    if let Some(at) = survey.answered_at {
        return html(
            StatusCode::CONFLICT,
            message_page(
                "Already answered",
                &format!(
                    "This survey was answered on {}. Thank you — one answer per visit.",
                    date(at)
                ),
            ),
        );
    }
    if now >= survey.expires_at {
        return html(
            StatusCode::GONE,
            message_page(
                "This link has expired",
                &format!("The survey link expired on {}.", date(survey.expires_at)),
            ),
        );
    }
    html(StatusCode::OK, answer_page(&token, &survey.context))
}
