//! API tokens and object owners: what authentication and the route table's object
//! checks read. Token instants are real (wall-clock) Unix ms.

use wearcast_protocol::UnixMs;

use super::StoreError;
use super::db::{DbRow, Pool, q};
use crate::auth::{IssuedToken, Owner, Principal, Role, TokenRequest, TokenView, new_secret};

type Result<T> = std::result::Result<T, StoreError>;

/// What a presented secret turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLookup {
    Valid(Principal),
    Unknown,
    Expired,
    Revoked,
}

/// The kinds of object a route's path can name; see [`Store::owner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Machine,
    Offer,
    WorkOrder,
    Site,
    Customer,
    Technician,
    Survey,
    Part,
    Token,
}

impl ObjectKind {
    /// How the API names it in a 404 ("no machine `m-1`").
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Machine => "machine",
            ObjectKind::Offer => "offer",
            ObjectKind::WorkOrder => "work order",
            ObjectKind::Site => "site",
            ObjectKind::Customer => "customer",
            ObjectKind::Technician => "technician",
            ObjectKind::Survey => "survey",
            ObjectKind::Part => "part",
            ObjectKind::Token => "token",
        }
    }
}

fn ms_text(ms: i64) -> String {
    UnixMs(ms).to_rfc3339()
}

fn token_view(r: &DbRow, now_ms: i64) -> Result<TokenView> {
    let role: String = r.get("role")?;
    let role: Role = role
        .parse()
        .map_err(|e: String| StoreError::Corrupt(format!("api_tokens.role: {e}")))?;
    let expires_at: Option<i64> = r.get("expires_at")?;
    let revoked_at: Option<i64> = r.get("revoked_at")?;
    let status = if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|e| e <= now_ms) {
        "expired"
    } else {
        "active"
    };
    Ok(TokenView {
        id: r.get("id")?,
        role,
        tenant: r.get("tenant_id")?,
        customer: r.get("customer_id")?,
        technician: r.get("technician_id")?,
        name: r.get("name")?,
        created_at: ms_text(r.get("created_at")?),
        expires_at: expires_at.map(ms_text),
        revoked_at: revoked_at.map(ms_text),
        status,
    })
}

impl Pool {
    /// Issues a token in `req.tenant`, which must exist. Without one: an admin token is
    /// the deployment's (every tenant); a gateway token acts in the deployment's only
    /// tenant, or in any; any other role acts in the only tenant, which must exist (a
    /// fleet manifest imported), and is refused when there are several. A customer or
    /// technician must exist in the token's tenant.
    /// `Ok(Err(reason))`: the request cannot be met, nothing written.
    pub async fn issue_token(
        &self,
        req: &TokenRequest,
        now_ms: i64,
    ) -> Result<std::result::Result<IssuedToken, String>> {
        if let Err(e) = req.check() {
            return Ok(Err(e));
        }
        if req.expires_at.is_some_and(|e| e <= now_ms) {
            return Ok(Err("the expiry is in the past".into()));
        }
        let tenants = q("SELECT id FROM tenants ORDER BY id")
            .fetch_all(self)
            .await?
            .iter()
            .map(|r| r.get::<String>("id"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if let Some(t) = &req.tenant
            && !tenants.contains(t)
        {
            return Ok(Err(format!("no tenant `{t}`")));
        }
        let only = match tenants.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let tenant = match (req.role, &req.tenant) {
            (_, Some(t)) => Some(t.clone()),
            // The deployment's admin.
            (Role::Admin, None) => None,
            // A gateway may ingest for any registered machine until it is given one.
            (Role::Gateway, None) => only,
            (role, None) => match (only, tenants.len()) {
                (Some(t), _) => Some(t),
                (None, 0) => {
                    return Ok(Err(format!(
                        "a {role} token acts in a tenant, and there is none yet: import a fleet manifest first"
                    )));
                }
                (None, _) => {
                    return Ok(Err(format!(
                        "a {role} token acts in one tenant, and there are {}: name it (tenant)",
                        tenants.len()
                    )));
                }
            },
        };
        if let Some(c) = &req.customer {
            let found = q("SELECT id FROM customers WHERE id = $1 AND tenant_id = $2")
                .bind(c)
                .bind(&tenant)
                .fetch_optional(self)
                .await?;
            if found.is_none() {
                return Ok(Err(format!("no customer `{c}`")));
            }
        }
        if let Some(t) = &req.technician {
            let found = q("SELECT id FROM technicians WHERE id = $1 AND tenant_id = $2")
                .bind(t)
                .bind(&tenant)
                .fetch_optional(self)
                .await?;
            if found.is_none() {
                return Ok(Err(format!("no technician `{t}`")));
            }
        }
        let (secret, hash) = new_secret();
        let id = format!("tok-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        q(
            "INSERT INTO api_tokens (id, role, tenant_id, customer_id, technician_id, name,
               secret_sha256, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(req.role.as_str())
        .bind(&tenant)
        .bind(&req.customer)
        .bind(&req.technician)
        .bind(&req.name)
        .bind(&hash)
        .bind(now_ms)
        .bind(req.expires_at)
        .execute(self)
        .await?;
        let token = self
            .token(&id, now_ms)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("token `{id}` vanished")))?;
        Ok(Ok(IssuedToken { token, secret }))
    }

    /// `issue_token` at the real clock's now, a refusal as an error (for tools and
    /// tests).
    pub async fn issue_token_now(&self, req: &TokenRequest) -> Result<IssuedToken> {
        self.issue_token(req, crate::auth::real_now_ms())
            .await?
            .map_err(StoreError::Corrupt)
    }

    pub async fn token(&self, id: &str, now_ms: i64) -> Result<Option<TokenView>> {
        q("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(self)
            .await?
            .map(|r| token_view(&r, now_ms))
            .transpose()
    }

    /// Tokens of `tenant` (`None`: all), newest first.
    pub async fn tokens(&self, tenant: Option<&str>, now_ms: i64) -> Result<Vec<TokenView>> {
        q("SELECT * FROM api_tokens WHERE $1 IS NULL OR tenant_id = $1
           ORDER BY created_at DESC, id")
        .bind(tenant)
        .fetch_all(self)
        .await?
        .iter()
        .map(|r| token_view(r, now_ms))
        .collect()
    }

    /// Revokes a token; `None`: no such token. Revoking twice keeps the first time.
    pub async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Option<TokenView>> {
        q("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(self)
            .await?;
        self.token(id, now_ms).await
    }

    /// Revokes every active token of this name (a process re-issuing its own token at
    /// start revokes the one it issued last time); how many.
    pub async fn revoke_tokens_named(&self, name: &str, now_ms: i64) -> Result<u64> {
        Ok(
            q("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now_ms)
                .bind(name)
                .execute(self)
                .await?,
        )
    }

    /// Whether an admin token that is neither revoked nor expired exists.
    pub async fn has_active_admin_token(&self, now_ms: i64) -> Result<bool> {
        Ok(q(
            "SELECT id FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > $1) LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(self)
        .await?
        .is_some())
    }

    /// The caller a secret's hash stands for.
    pub async fn principal(&self, secret_sha256: &str, now_ms: i64) -> Result<TokenLookup> {
        let Some(r) = q("SELECT * FROM api_tokens WHERE secret_sha256 = $1")
            .bind(secret_sha256)
            .fetch_optional(self)
            .await?
        else {
            return Ok(TokenLookup::Unknown);
        };
        let view = token_view(&r, now_ms)?;
        Ok(match view.status {
            "revoked" => TokenLookup::Revoked,
            "expired" => TokenLookup::Expired,
            _ => TokenLookup::Valid(Principal {
                token: view.id,
                role: view.role,
                tenant: view.tenant,
                customer: view.customer,
                technician: view.technician,
            }),
        })
    }

    /// Whose object `id` of `kind` is; `None`: there is no such object.
    pub async fn owner(&self, kind: ObjectKind, id: &str) -> Result<Option<Owner>> {
        let sql = match kind {
            // Its technicians: everyone with a work order on it, once each (portable
            // SQL: `string_agg` over a DISTINCT subquery, as neither engine takes
            // the other's aggregate-with-DISTINCT form).
            ObjectKind::Machine => {
                "SELECT m.tenant_id, m.customer_id,
                    (SELECT string_agg(d.technician_id, ',') FROM
                       (SELECT DISTINCT w.technician_id FROM work_orders w
                        WHERE w.machine_id = m.id AND w.technician_id IS NOT NULL) d
                    ) AS technicians
                 FROM machines m WHERE m.id = $1"
            }
            ObjectKind::Offer => {
                "SELECT tenant_id, customer_id, NULL AS technicians FROM offers WHERE id = $1"
            }
            ObjectKind::WorkOrder => {
                "SELECT w.tenant_id, m.customer_id, w.technician_id AS technicians
                 FROM work_orders w JOIN machines m ON m.id = w.machine_id WHERE w.id = $1"
            }
            ObjectKind::Site => {
                "SELECT tenant_id, customer_id, NULL AS technicians FROM sites WHERE id = $1"
            }
            ObjectKind::Customer => {
                "SELECT tenant_id, id AS customer_id, NULL AS technicians FROM customers WHERE id = $1"
            }
            ObjectKind::Technician => {
                "SELECT tenant_id, NULL AS customer_id, id AS technicians FROM technicians WHERE id = $1"
            }
            ObjectKind::Survey => {
                "SELECT tenant_id, customer_id, NULL AS technicians FROM surveys WHERE id = $1"
            }
            ObjectKind::Part => {
                "SELECT tenant_id, NULL AS customer_id, NULL AS technicians FROM parts WHERE id = $1"
            }
            // A deployment admin's token has no tenant: only a deployment admin sees it.
            ObjectKind::Token => {
                "SELECT COALESCE(tenant_id, '') AS tenant_id, NULL AS customer_id,
                    NULL AS technicians FROM api_tokens WHERE id = $1"
            }
        };
        let Some(r) = q(sql).bind(id).fetch_optional(self).await? else {
            return Ok(None);
        };
        let technicians: Option<String> = r.get("technicians")?;
        Ok(Some(Owner {
            tenant: r.get("tenant_id")?,
            customer: r.get("customer_id")?,
            technicians: technicians
                .map(|t| t.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        }))
    }
}
