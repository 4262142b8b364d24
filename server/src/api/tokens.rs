//! API tokens over HTTP (admins issue, list and revoke them) and the dashboards'
//! session: signing in with a token sets it as an `HttpOnly`, `SameSite=Strict`
//! cookie (also `Secure` with `server.secure_cookies`), plus a CSRF cookie the pages
//! echo in a header on every change (see `access.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{CSRF_COOKIE, SESSION_COOKIE, forbidden, principal_of};
use super::{ApiError, ApiJson, AppState, Scope};
use crate::auth::{
    IssuedToken, Role, TokenRequest, TokenView, csrf_token, parse_expiry, real_now_ms,
};

/// Expiry of a token issued without one.
pub const DEFAULT_EXPIRY: &str = "90d";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    role: Role,
    /// The tenant the token acts in. An admin of one tenant may leave it out (its own
    /// is used) or name its own; the deployment's admin names any, and without it
    /// issues a deployment-wide admin token, or one of the only tenant.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    technician: Option<String>,
    #[serde(default)]
    name: String,
    /// `90d`, `12h`, ... or `never`; 90 days when absent.
    #[serde(default)]
    expires_in: Option<String>,
}

/// `POST /api/v1/tokens`: the answer carries the secret, the only time it is shown.
pub(super) async fn create(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let now = real_now_ms();
    let expires_at = parse_expiry(body.expires_in.as_deref().unwrap_or(DEFAULT_EXPIRY), now)
        .map_err(|e| ApiError::BadRequest(format!("`expires_in`: {e}")))?;
    // An admin of one tenant issues tokens of that tenant only (a deployment-wide
    // admin included: it gets the caller's tenant); the deployment's admin names any.
    let tenant = match (&scope.principal().tenant, body.tenant) {
        (Some(own), Some(asked)) if *own != asked => {
            return Err(forbidden(
                "an admin of one tenant issues tokens in that tenant only",
            ));
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let req = TokenRequest {
        role: body.role,
        tenant,
        customer: body.customer,
        technician: body.technician,
        name: body.name,
        expires_at,
    };
    match state.store.issue_token(&req, now).await? {
        Ok(issued) => {
            tracing::info!(token = %issued.token.id, role = %issued.token.role, by = %scope.principal().token, "API token issued");
            Ok((StatusCode::CREATED, Json(issued)))
        }
        Err(reason) => Err(ApiError::Rejected {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: reason,
        }),
    }
}

/// `GET /api/v1/tokens`: the caller's tenant's tokens (never their secrets).
pub(super) async fn list(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(
        state
            .store
            .tokens(scope.principal().tenant.as_deref(), real_now_ms())
            .await?,
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revoked at once; the next request with it is a 401.
pub(super) async fn revoke(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let view = state
        .store
        .revoke_token(&id, real_now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token `{id}`")))?;
    tracing::info!(token = %id, by = %scope.principal().token, "API token revoked");
    Ok(Json(view))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignInBody {
    token: String,
}

fn cookie(state: &AppState, name: &str, value: &str, http_only: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if state.secure_cookies {
        c.push_str("; Secure");
    }
    // Only our own cookie text: token secrets and hashes are ASCII.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /api/v1/session {"token": "wc_..."}`: signs the dashboards in.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<Response, ApiError> {
    let secret = body.token.trim();
    let principal = principal_of(&state, secret).await?;
    if principal.role == Role::Gateway {
        return Err(forbidden(
            "a gateway token cannot sign in to the dashboards",
        ));
    }
    tracing::info!(token = %principal.token, role = %principal.role, "signed in");
    let mut session = cookie(&state, SESSION_COOKIE, secret, true);
    session.set_sensitive(true);
    let csrf = cookie(&state, CSRF_COOKIE, &csrf_token(secret), false);
    let mut response = Json(serde_json::json!({
        "role": principal.role,
        "customer": principal.customer,
        "technician": principal.technician,
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session);
    headers.append(header::SET_COOKIE, csrf);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /api/v1/session`: forgets the cookies.
pub(super) async fn sign_out(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let mut c = format!("{name}=; Path=/; SameSite=Strict; Max-Age=0");
        if state.secure_cookies {
            c.push_str("; Secure");
        }
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}
