//! Authentication (a bearer token, or the dashboards' session cookie with its CSRF
//! header) and [`Scope`], the extractor through which every non-public handler learns
//! who is calling and which rows it may return.
//!
//! Secrets never reach a log: they travel only in the `Authorization` header, the
//! session cookie or a sign-in body, never in a URL, and nothing here logs them.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};

use super::{ApiError, AppState};
use crate::auth::{Principal, Visibility, csrf_token, real_now_ms, secret_hash, well_formed};
use crate::store::TokenLookup;

/// The dashboards' session cookie: the API token itself, `HttpOnly` so no script
/// reads it.
pub const SESSION_COOKIE: &str = "wearcast_session";
/// The CSRF cookie the dashboards' script reads and echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "wearcast_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
    }
}

pub(super) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Where the secret came from: a cookie-authenticated change needs its CSRF header.
enum Presented<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
}

fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let Some(secret) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        };
        return Ok(Some(Presented::Bearer(secret.trim())));
    }
    Ok(cookie(headers, SESSION_COOKIE).map(Presented::Cookie))
}

/// The caller of a request: 401 without a valid token, 403 for a cookie-authenticated
/// change without the matching CSRF header.
pub(super) async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let Some(presented) = presented(headers)? else {
        return Err(unauthorized(
            "this endpoint needs an API token: send `Authorization: Bearer <token>` (see README: roles and tokens)",
        ));
    };
    let secret = match presented {
        Presented::Bearer(s) => s,
        Presented::Cookie(s) => {
            let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe
                && headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some(&csrf_token(s))
            {
                return Err(forbidden(format!(
                    "a change made with the session cookie needs the `{CSRF_HEADER}` header from the `{CSRF_COOKIE}` cookie"
                )));
            }
            s
        }
    };
    principal_of(state, secret).await
}

/// The caller a secret stands for, or 401 saying why not.
pub(super) async fn principal_of(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    if !well_formed(secret) {
        return Err(unauthorized(
            "not a Wearcast API token (they look like `wc_` and 64 hex digits)",
        ));
    }
    match state
        .store
        .principal(&secret_hash(secret), real_now_ms())
        .await?
    {
        TokenLookup::Valid(p) => Ok(p),
        TokenLookup::Unknown => Err(unauthorized("unknown API token")),
        TokenLookup::Expired => Err(unauthorized(
            "the API token has expired; ask an admin for a new one",
        )),
        TokenLookup::Revoked => Err(unauthorized("the API token was revoked")),
    }
}

/// Who is calling and what they may see. Only the route table's authorization layer
/// puts it on a request, so a handler that takes it cannot run unchecked: a route
/// added outside the table answers 500 instead of serving data.
#[derive(Clone, Debug)]
pub struct Scope(pub Principal);

impl Scope {
    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// The rows a list may return.
    pub fn visibility(&self) -> Visibility {
        self.0.visibility()
    }

    /// The customer a request about "a customer's figures" is restricted to: a
    /// customer's own (naming another is a 404, as for an unknown one), or for staff
    /// what they asked for (`None`: every customer).
    pub fn customer(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match (&self.0.customer, requested) {
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(asked)) if asked == own => Ok(Some(own.clone())),
            (Some(_), Some(asked)) => Err(ApiError::NotFound(format!("no customer `{asked}`"))),
            (None, asked) => Ok(asked.map(str::to_string)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Scope>() {
            Some(scope) => Ok(scope.clone()),
            None => {
                tracing::error!(path = %parts.uri.path(), "a handler that needs a caller ran without the route table's authorization; refusing");
                Err(ApiError::Rejected {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "this route has no authorization rule".into(),
                })
            }
        }
    }
}
