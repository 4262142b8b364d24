//! One error type for every handler: the caller's mistakes get their status and a
//! message that says what is wrong; our own failures are logged and answered 500
//! without internals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("internal error: {0}")]
    Internal(#[from] StoreError),
    /// 429 with `Retry-After` (see `limits.rs`).
    #[error("{message}")]
    RateLimited {
        retry_after: std::time::Duration,
        message: String,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::RateLimited {
                retry_after,
                message,
            } => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                return (
                    status,
                    [(
                        axum::http::header::RETRY_AFTER,
                        super::limits::retry_after_secs(retry_after).to_string(),
                    )],
                    Json(json!({ "error": message, "status": status.as_u16() })),
                )
                    .into_response();
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Self::Rejected { status, message } => (status, message),
            Self::Internal(e) => {
                tracing::error!(error = %e, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log".to_string(),
                )
            }
        };
        (
            status,
            Json(json!({ "error": message, "status": status.as_u16() })),
        )
            .into_response()
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s with serde's message (what and where).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = match rejection.status() {
        // A body that parses as JSON but not as the expected shape is still the
        // caller's malformed request.
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        other => other,
    };
    ApiError::Rejected {
        status,
        message: rejection.body_text(),
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}
