//! The audit log: every state change made through `/api/v1` is recorded — who (the
//! token, its role and scope), what (method, route, path, the object the path named and
//! the request body), when (real time and the platform clock), the answer's status, and
//! the object before and after.
//!
//! It is recorded in one place, the route table's authorization layer, for every
//! authenticated route whose method changes state (POST, PUT, DELETE), so a new route is
//! audited without anyone remembering to. "Before" is the API's view of the named
//! object (offers, work orders, tokens) read just before the handler runs; "after" is
//! that view read again, or, for other objects, the answer's JSON body. Every value
//! under a key that names a secret, and every string that looks like an API token, is
//! replaced by `[redacted]` first, so the log never holds a secret.
//!
//! Not audited: reads; telemetry ingest (`/ingest`, recorded by batch id in
//! `ingested_batches`, and far too frequent); the public routes (signing in and out,
//! answering a survey through its link). A change whose audit entry cannot be written
//! still stands (it is already committed): the failure is logged at ERROR and counted
//! in `wearcast_audit_write_errors_total`.
//!
//! `GET /api/v1/audit?before_id=&limit=` lists entries newest first, for admins (a
//! tenant's admin sees its tenant's).

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use wearcast_protocol::UnixMs;

use super::routes::{Access, RouteRule};
use super::{ApiError, ApiQuery, AppState, Scope};
use crate::auth::{SECRET_PREFIX, real_now_ms};
use crate::store::{AuditEntry, ObjectKind};
use crate::views::Rfc3339;

/// The object a request's path named, put on the request by the authorization check.
#[derive(Clone, Debug)]
pub(super) struct NamedObject(pub ObjectKind, pub String);

/// Largest answer body kept as "after" (a bigger one is summarised).
const MAX_KEPT_BYTES: usize = 64 * 1024;
/// Answers bigger than this are not buffered for the log (none of the changing routes
/// answers anywhere near it).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Whether a route's calls are audited.
pub(super) fn audited(rule: &RouteRule) -> bool {
    matches!(rule.access, Access::Roles { .. })
        && rule.method != "GET"
        && !rule.path.starts_with("/ingest")
}

const SECRET_KEYS: [&str; 4] = ["secret", "token", "password", "csrf"];

/// `v` with every secret replaced by `[redacted]`.
pub fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let secret = SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s))
                        && !matches!(v, Value::Null | Value::Object(_));
                    (k, if secret { redacted() } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) if s.contains(SECRET_PREFIX) && s.len() > 40 => redacted(),
        other => other,
    }
}

fn redacted() -> Value {
    Value::String("[redacted]".into())
}

fn json_of(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.len() > MAX_KEPT_BYTES {
        return Some(serde_json::json!({ "omitted_bytes": bytes.len() }));
    }
    serde_json::from_slice(bytes).ok().map(redact)
}

/// The API's current view of `object`, if it has one.
async fn snapshot(state: &AppState, object: &NamedObject) -> Option<Value> {
    let NamedObject(kind, id) = object;
    let view = match kind {
        ObjectKind::Offer => state
            .store
            .offer(id)
            .await
            .ok()
            .flatten()
            .map(serde_json::to_value),
        ObjectKind::WorkOrder => state
            .store
            .work_order(id)
            .await
            .ok()
            .flatten()
            .map(serde_json::to_value),
        ObjectKind::Token => state
            .store
            .token(id, real_now_ms())
            .await
            .ok()
            .flatten()
            .map(serde_json::to_value),
        _ => None,
    }?;
    view.ok().map(redact)
}

/// Runs the handler of an audited route and records the change.
pub(super) async fn run_audited(
    state: &AppState,
    rule: &RouteRule,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let request = match to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the request body is larger than the {} bytes allowed (server.max_body_bytes)",
                    state.max_body_bytes
                ),
            }
            .into_response();
        }
    };
    let object = parts.extensions.get::<NamedObject>().cloned();
    let Some(Scope(caller)) = parts.extensions.get::<Scope>().cloned() else {
        return next
            .run(Request::from_parts(parts, Body::from(request)))
            .await;
    };
    let before = match &object {
        Some(o) => snapshot(state, o).await,
        None => None,
    };
    // The table's routes are nested under /api/v1 (as `RouteRule::full_path` says),
    // which the nested router's URI no longer holds.
    let path = format!("/api/v1{}", parts.uri.path());
    let method = parts.method.clone();
    let response = next
        .run(Request::from_parts(parts, Body::from(request.clone())))
        .await;
    let (answer_parts, answer) = response.into_parts();
    let answer = match to_bytes(answer, MAX_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, route = rule.path, "answer could not be read for the audit log");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let status = answer_parts.status;
    // After a change, the object as the API now shows it; otherwise (no view of it, or
    // a refused change) what the caller was told.
    let after = match (&object, status.is_success()) {
        (Some(o), true) => match snapshot(state, o).await {
            Some(view) => Some(view),
            None => json_of(&answer),
        },
        _ => json_of(&answer),
    };
    let entry = AuditEntry {
        id: 0,
        at: Rfc3339(UnixMs(real_now_ms())),
        platform_at: Rfc3339(state.clock.now()),
        token: caller.token.clone(),
        role: caller.role.as_str().to_owned(),
        tenant: caller.tenant.clone(),
        customer: caller.customer.clone(),
        technician: caller.technician.clone(),
        method: method.to_string(),
        route: rule.full_path(),
        path,
        object_kind: object.as_ref().map(|o| o.0.noun().to_owned()),
        object_id: object.as_ref().map(|o| o.1.clone()),
        status: status.as_u16(),
        request: json_of(&request),
        before,
        after,
    };
    if let Err(e) = state.store.record_audit(&entry).await {
        metrics::counter!("wearcast_audit_write_errors_total").increment(1);
        tracing::error!(error = %e, route = rule.path, "audit entry not written; the change stands");
    }
    Response::from_parts(answer_parts, Body::from(answer))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    before_id: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/v1/audit?before_id=&limit=`: newest first, at most `limit` (default 100,
/// at most 1000); page back with the last entry's id as `before_id`.
pub(super) async fn list(
    State(state): State<AppState>,
    scope: Scope,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "query parameter `limit`: {limit} is not between 1 and 1000"
        )));
    }
    Ok(Json(
        state
            .store
            .audit_entries(scope.principal().tenant.as_deref(), q.before_id, limit)
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let token = format!("{SECRET_PREFIX}{}", "ab".repeat(32));
        let v = redact(json!({
            "secret": token,
            "token": {"id": "tok-1", "role": "customer"},
            "nested": [{"Password": "hunter2"}, {"note": format!("use {token}")}],
            "id": "tok-1",
            "csrf": "x",
        }));
        assert_eq!(v["secret"], "[redacted]");
        assert_eq!(
            v["token"]["id"], "tok-1",
            "a token's view is not its secret"
        );
        assert_eq!(v["nested"][0]["Password"], "[redacted]");
        assert_eq!(v["nested"][1]["note"], "[redacted]");
        assert_eq!(v["id"], "tok-1");
        assert_eq!(v["csrf"], "[redacted]");
        assert!(!v.to_string().contains(&token[3..]));
    }
}
