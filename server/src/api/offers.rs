//! Replacement offers.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState};
use crate::store::OfferFilter;
use crate::views::OfferView;

const STATUSES: [&str; 7] = [
    "proposed",
    "accepted",
    "scheduled",
    "completed",
    "declined",
    "expired",
    "superseded",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/offers", get(list))
        .route("/offers/{id}", get(detail))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferQuery {
    status: Option<String>,
    machine: Option<String>,
    customer: Option<String>,
}

async fn list(
    State(state): State<AppState>,
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
        customer: q.customer,
    };
    Ok(Json(state.store.list_offers(&filter).await?))
}

async fn detail(
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
