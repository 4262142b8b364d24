//! The audit log of state changes made through the API (see `api/audit.rs`).

use serde::Serialize;
use serde_json::Value;
use wearcast_protocol::UnixMs;

use super::StoreError;
use super::db::{Pool, q};
use crate::views::Rfc3339;

type Result<T> = std::result::Result<T, StoreError>;

/// One audited change, as recorded and as `GET /api/v1/audit` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Real time of the change.
    pub at: Rfc3339,
    /// The platform's clock at the change (the demo's runs fast).
    pub platform_at: Rfc3339,
    pub token: String,
    pub role: String,
    pub tenant: Option<String>,
    pub customer: Option<String>,
    pub technician: Option<String>,
    pub method: String,
    /// The route template (`/api/v1/offers/{id}/accept`).
    pub route: String,
    pub path: String,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    /// The HTTP status the change was answered with.
    pub status: u16,
    /// The request body (secrets redacted), when it was JSON.
    pub request: Option<Value>,
    /// The object as the API showed it before and after, where it has a view of it
    /// (offers, work orders, tokens); `after` is otherwise the answer's body.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

fn json_value(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Pool {
    /// Records one change (its `id` is assigned here).
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        q(
            "INSERT INTO audit_log (at, platform_at, token_id, role, tenant_id, customer_id,
             technician_id, method, route, path, object_kind, object_id, status,
             request_json, before_json, after_json)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(e.at.0.0)
        .bind(e.platform_at.0.0)
        .bind(&e.token)
        .bind(&e.role)
        .bind(&e.tenant)
        .bind(&e.customer)
        .bind(&e.technician)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.path)
        .bind(&e.object_kind)
        .bind(&e.object_id)
        .bind(i64::from(e.status))
        .bind(json_text(&e.request))
        .bind(json_text(&e.before))
        .bind(json_text(&e.after))
        .execute(self)
        .await?;
        Ok(())
    }

    /// Entries newest first: of `tenant` (`None`: every tenant's and the deployment
    /// admin's), older than `before_id` if given, at most `limit`.
    pub async fn audit_entries(
        &self,
        tenant: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows = q("SELECT * FROM audit_log
                      WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id < $2)
                      ORDER BY id DESC LIMIT $3")
        .bind(tenant)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.get("id")?,
                    at: Rfc3339(UnixMs(r.get("at")?)),
                    platform_at: Rfc3339(UnixMs(r.get("platform_at")?)),
                    token: r.get("token_id")?,
                    role: r.get("role")?,
                    tenant: r.get("tenant_id")?,
                    customer: r.get("customer_id")?,
                    technician: r.get("technician_id")?,
                    method: r.get("method")?,
                    route: r.get("route")?,
                    path: r.get("path")?,
                    object_kind: r.get("object_kind")?,
                    object_id: r.get("object_id")?,
                    status: u16::try_from(r.get::<i64>("status")?).unwrap_or(0),
                    request: json_value(r.get("request_json")?),
                    before: json_value(r.get("before_json")?),
                    after: json_value(r.get("after_json")?),
                })
            })
            .collect()
    }
}
