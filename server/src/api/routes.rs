//! Every route of the server and who may call it: the one place authorization is
//! decided.
//!
//! Each `/api/v1` route is declared in [`table`] with its method, path, handler and
//! [`Access`] rule, and the router is built from that table only. The rule runs as a
//! layer on the route, before the handler:
//!
//! 1. **Authentication**: no token, or an unknown, expired or revoked one → 401. A
//!    change made with the dashboards' session cookie needs its CSRF header → 403.
//!    Then the tenant's request budget (`limits.rs`): over it → 429.
//! 2. **Object**: if the path names an object (a machine, offer, work order, ...), its
//!    owner is looked up; an object the caller may not see answers 404, exactly as an
//!    unknown id does, so ids of other customers cannot be probed.
//! 3. **Role**: a role the route does not allow → 403.
//! 4. The caller goes on the request as a [`Scope`], which every non-public handler
//!    takes and every list query needs, so a list returns only the caller's rows.
//! 5. A call that changes state is recorded in the audit log (`audit.rs`).
//!
//! A route mounted outside the table has no rule: its handler cannot get a [`Scope`],
//! and [`require_rule`] turns any answer of it into a 500, so it fails closed. The
//! acceptance matrix (`server/tests/authz`) walks [`route_rules`].
//!
//! Outside `/api/v1` only public things are served: liveness, readiness, Prometheus
//! metrics (counts and timings by route template; no ids, no secrets — restrict it
//! at the network level like any metrics endpoint), the static dashboard pages (their
//! data comes from the API, so they hold nothing) and the survey answer page, which
//! its unguessable link authorizes.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

use super::access::{Scope, authenticate, forbidden};
use super::{
    ApiError, AppState, analytics, audit, ingest, machines, offers, openapi, ops, registry,
    service, tokens,
};
use crate::auth::Role;
use crate::store::ObjectKind;

use Role::{Admin, Customer, Gateway, Service, Technician};

const ADMIN: &[Role] = &[Admin];
const STAFF: &[Role] = &[Admin, Service];
const STAFF_CUSTOMER: &[Role] = &[Admin, Service, Customer];
const STAFF_TECHNICIAN: &[Role] = &[Admin, Service, Technician];
const STAFF_CUSTOMER_TECHNICIAN: &[Role] = &[Admin, Service, Customer, Technician];
const INGEST: &[Role] = &[Admin, Gateway];

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token: the reason says why that is safe.
    Public(&'static str),
    /// A token of one of `roles`; with `object`, the path parameter (second) names an
    /// object of that kind (first) the caller must be able to see.
    Roles {
        roles: &'static [Role],
        object: Option<(ObjectKind, &'static str)>,
    },
}

/// One route of `/api/v1` and its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub method: &'static str,
    /// Relative to `/api/v1`, in axum's syntax (`/machines/{id}`).
    pub path: &'static str,
    pub access: Access,
}

impl RouteRule {
    pub fn full_path(&self) -> String {
        format!("/api/v1{}", self.path)
    }
}

const fn roles(roles: &'static [Role]) -> Access {
    Access::Roles {
        roles,
        object: None,
    }
}

const fn on(roles: &'static [Role], kind: ObjectKind, param: &'static str) -> Access {
    Access::Roles {
        roles,
        object: Some((kind, param)),
    }
}

/// Writes the JSON Schema of a route's query or body (see [`RouteDoc`]).
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// What the OpenAPI document says a route takes, declared next to its rule.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteDoc {
    /// The query string's parameters (an object schema whose properties they are).
    pub query: Option<SchemaFn>,
    /// The JSON body's schema.
    pub body: Option<SchemaFn>,
    /// Whether the body may be left out.
    pub body_optional: bool,
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

fn root_schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.root_schema_for::<T>()
}

/// A JSON object the handler validates itself (a manifest, an ingest batch, ...: their
/// types live in the protocol crate and check more than a schema can say).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object" })
}

/// The route just added, to declare its query and body.
struct Documented<'a>(&'a mut RouteDoc);

impl Documented<'_> {
    fn query<T: schemars::JsonSchema>(self) -> Self {
        self.0.query = Some(root_schema_of::<T>);
        self
    }

    fn body<T: schemars::JsonSchema>(self) -> Self {
        self.0.body = Some(schema_of::<T>);
        self
    }

    fn optional_body<T: schemars::JsonSchema>(self) -> Self {
        self.0.body_optional = true;
        self.body::<T>()
    }

    fn json_body(self) -> Self {
        self.0.body = Some(any_object);
        self
    }
}

/// Collects the table: a rule cannot be left out, because a route is only added with
/// one.
struct Table(Vec<(RouteRule, MethodRouter<AppState>, RouteDoc)>);

impl Table {
    fn add<H, T>(
        &mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Documented<'_>
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let router = match method {
            "GET" => get(handler),
            "POST" => post(handler),
            "PUT" => put(handler),
            "DELETE" => delete(handler),
            other => unreachable!("method {other} is not used by the API"),
        };
        self.0.push((
            RouteRule {
                method,
                path,
                access,
            },
            router,
            RouteDoc::default(),
        ));
        let last = self.0.len() - 1;
        Documented(&mut self.0[last].2)
    }
}

/// The API: every route with its rule.
fn table() -> Table {
    use ObjectKind as K;
    let mut t = Table(Vec::new());

    // Ingest: the gateways (and an admin replaying a dead-lettered batch).
    t.add("POST", "/ingest", roles(INGEST), ingest::ingest)
        .json_body();
    t.add("GET", "/ingest/machines", roles(INGEST), ingest::machines);
    t.add("POST", "/registry", roles(ADMIN), registry::import)
        .json_body();

    // Machines and sites.
    let seen = STAFF_CUSTOMER_TECHNICIAN;
    t.add("GET", "/machines", roles(seen), machines::list);
    t.add(
        "GET",
        "/machines/{id}",
        on(seen, K::Machine, "id"),
        machines::detail,
    );
    t.add(
        "GET",
        "/machines/{id}/telemetry",
        on(seen, K::Machine, "id"),
        machines::telemetry,
    )
    .query::<machines::TelemetryQuery>();
    t.add(
        "GET",
        "/machines/{id}/lives",
        on(seen, K::Machine, "id"),
        machines::lives,
    );
    t.add(
        "GET",
        "/machines/{id}/health-history",
        on(seen, K::Machine, "id"),
        machines::health_history,
    );
    t.add("GET", "/sites", roles(STAFF_CUSTOMER), machines::sites);

    // Offers: the customer decides on its own.
    t.add("GET", "/offers", roles(STAFF_CUSTOMER), offers::list)
        .query::<offers::OfferQuery>();
    t.add(
        "GET",
        "/offers/{id}",
        on(STAFF_CUSTOMER, K::Offer, "id"),
        offers::detail,
    );
    t.add(
        "GET",
        "/offers/{id}/windows",
        on(STAFF_CUSTOMER, K::Offer, "id"),
        offers::windows,
    );
    t.add(
        "POST",
        "/offers/{id}/accept",
        on(STAFF_CUSTOMER, K::Offer, "id"),
        offers::accept,
    )
    .optional_body::<offers::AcceptBody>();
    t.add(
        "POST",
        "/offers/{id}/decline",
        on(STAFF_CUSTOMER, K::Offer, "id"),
        offers::decline,
    )
    .body::<offers::DeclineBody>();
    t.add(
        "POST",
        "/offers/{id}/reschedule",
        on(STAFF_CUSTOMER, K::Offer, "id"),
        offers::reschedule,
    )
    .body::<offers::RescheduleBody>();

    // Field service: dispatch is the service desk's; a technician completes their own.
    t.add(
        "GET",
        "/work-orders",
        roles(seen),
        service::list_work_orders,
    )
    .query::<service::WorkOrderQuery>();
    t.add(
        "GET",
        "/work-orders/{id}",
        on(seen, K::WorkOrder, "id"),
        service::work_order,
    );
    t.add(
        "POST",
        "/work-orders/{id}/assign",
        on(STAFF, K::WorkOrder, "id"),
        service::assign_work_order,
    )
    .body::<service::AssignBody>();
    t.add(
        "POST",
        "/work-orders/{id}/complete",
        on(STAFF_TECHNICIAN, K::WorkOrder, "id"),
        service::complete_work_order,
    )
    .body::<service::CompleteBody>();
    // A technician sees only themselves (the field-service view names them).
    t.add(
        "GET",
        "/technicians",
        roles(STAFF_TECHNICIAN),
        service::technicians,
    );
    t.add(
        "POST",
        "/technicians",
        roles(STAFF),
        service::upsert_technician,
    )
    .json_body();
    t.add(
        "POST",
        "/technicians/{id}/absences",
        on(STAFF_TECHNICIAN, K::Technician, "id"),
        service::add_absence,
    )
    .body::<service::AbsenceBody>();
    t.add(
        "GET",
        "/technicians/{id}/schedule.ics",
        on(STAFF_TECHNICIAN, K::Technician, "id"),
        service::technician_ics,
    );
    t.add("GET", "/parts", roles(STAFF_TECHNICIAN), service::parts);
    t.add(
        "PUT",
        "/parts/{id}/stock",
        on(STAFF, K::Part, "id"),
        service::set_stock,
    )
    .body::<service::StockBody>();
    t.add("GET", "/contracts", roles(STAFF), service::contracts);
    t.add("POST", "/service", roles(STAFF), service::import_service)
        .json_body();

    // A customer keeps its own sites' planned stops.
    t.add(
        "PUT",
        "/sites/{id}/maintenance-windows",
        on(STAFF_CUSTOMER, K::Site, "id"),
        service::set_weekly_windows,
    )
    .json_body();
    t.add(
        "GET",
        "/sites/{id}/stops",
        on(STAFF_CUSTOMER, K::Site, "id"),
        service::stops,
    );
    t.add(
        "POST",
        "/sites/{id}/stops",
        on(STAFF_CUSTOMER, K::Site, "id"),
        service::add_stop,
    )
    .body::<service::StopBody>();
    t.add(
        "DELETE",
        "/sites/{id}/stops/{stop}",
        on(STAFF_CUSTOMER, K::Site, "id"),
        service::delete_stop,
    );
    t.add(
        "GET",
        "/sites/{id}/calendar.ics",
        on(STAFF_CUSTOMER, K::Site, "id"),
        service::site_ics,
    );

    // After-sales analytics: a customer sees its own figures; selling is staff's.
    t.add("GET", "/kpis", roles(STAFF_CUSTOMER), analytics::kpis)
        .query::<analytics::KpiQuery>();
    t.add(
        "GET",
        "/model-quality",
        roles(STAFF_CUSTOMER),
        analytics::model_quality,
    )
    .query::<analytics::KpiQuery>();
    // Backtests on run-to-failure history: published by staff (`wearcast backtest
    // --publish`), read like the model quality. They hold no customer's data.
    t.add(
        "GET",
        "/model-quality/backtests",
        roles(STAFF_CUSTOMER),
        analytics::backtests,
    );
    t.add(
        "POST",
        "/model-quality/backtests",
        roles(STAFF),
        analytics::record_backtest,
    )
    .body::<crate::backtest::BacktestSummary>();
    t.add(
        "GET",
        "/accounts",
        roles(STAFF_CUSTOMER),
        analytics::accounts,
    )
    .query::<analytics::AccountQuery>();
    t.add(
        "GET",
        "/accounts.csv",
        roles(STAFF_CUSTOMER),
        analytics::accounts_csv,
    )
    .query::<analytics::AccountQuery>();
    t.add(
        "GET",
        "/accounts/{customer}",
        on(STAFF_CUSTOMER, K::Customer, "customer"),
        analytics::one_account,
    );
    t.add(
        "POST",
        "/accounts/{customer}/proposals",
        on(STAFF, K::Customer, "customer"),
        analytics::send_proposal,
    )
    .body::<analytics::ProposalBody>();
    t.add(
        "POST",
        "/exports/accounts",
        roles(STAFF),
        analytics::export_accounts,
    )
    .query::<analytics::AccountQuery>();
    t.add("GET", "/surveys", roles(STAFF_CUSTOMER), analytics::surveys)
        .query::<analytics::SurveyQuery>();
    t.add(
        "POST",
        "/surveys/{token}",
        Access::Public(
            "the survey link's 256-bit token is the authorization; answered without signing in",
        ),
        analytics::answer_survey,
    )
    .json_body();
    t.add(
        "POST",
        "/surveys/{id}/link",
        on(STAFF, K::Survey, "id"),
        analytics::reissue_link,
    );

    t.add("GET", "/info", roles(STAFF_CUSTOMER_TECHNICIAN), ops::info);

    // The API's own description.
    t.add(
        "GET",
        "/openapi.json",
        Access::Public("the shape of the API: no data, and every route still checks its own rule"),
        openapi::document,
    );

    // The audit log of every change made through the API.
    t.add("GET", "/audit", roles(ADMIN), audit::list)
        .query::<audit::AuditQuery>();

    // Tokens and the dashboards' session.
    t.add("POST", "/tokens", roles(ADMIN), tokens::create)
        .body::<tokens::CreateBody>();
    t.add("GET", "/tokens", roles(ADMIN), tokens::list);
    t.add(
        "DELETE",
        "/tokens/{id}",
        on(ADMIN, K::Token, "id"),
        tokens::revoke,
    );
    t.add(
        "POST",
        "/session",
        Access::Public("signing in: the body carries the token to check"),
        tokens::sign_in,
    )
    .body::<tokens::SignInBody>();
    t.add(
        "DELETE",
        "/session",
        Access::Public("signing out only clears the caller's own cookies"),
        tokens::sign_out,
    );
    t
}

/// Every `/api/v1` route with its rule, in declaration order.
pub fn route_rules() -> Vec<RouteRule> {
    table().0.into_iter().map(|(rule, ..)| rule).collect()
}

/// Every `/api/v1` route with its rule and what it takes, for the OpenAPI document.
pub fn route_docs() -> Vec<(RouteRule, RouteDoc)> {
    table()
        .0
        .into_iter()
        .map(|(rule, _, doc)| (rule, doc))
        .collect()
}

/// The `/api/v1` router, built from [`table`] only.
pub(super) fn api(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for (rule, handler, _) in table().0 {
        let layer = middleware::from_fn_with_state((state.clone(), rule), authorize);
        router = router.route(rule.path, handler.layer(layer));
    }
    guarded(router)
}

/// Public routes outside `/api/v1` (see the module doc for why each is public).
pub(super) fn public() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/survey/{token}", get(analytics::survey_page))
}

/// Marks a response that went through a route's rule.
#[derive(Clone, Copy, Debug)]
struct Authorized;

/// Wraps every route of `router`: an answer from a route that did not go through its
/// rule (one mounted outside the table) becomes a 500.
fn guarded<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(middleware::from_fn(require_rule))
}

async fn require_rule(req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(req).await;
    match matched {
        Some(route) if response.extensions().get::<Authorized>().is_none() => {
            tracing::error!(%route, "route has no authorization rule (it is not in the route table); refusing");
            ApiError::Rejected {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "this route has no authorization rule".into(),
            }
            .into_response()
        }
        _ => response,
    }
}

async fn authorize(
    State((state, rule)): State<(AppState, RouteRule)>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = match check(&state, &rule, req).await {
        Ok(req) if audit::audited(&rule) => audit::run_audited(&state, &rule, req, next).await,
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(Authorized);
    response
}

/// Applies `rule` to `req`: the request with its [`Scope`], or the refusal.
async fn check(state: &AppState, rule: &RouteRule, req: Request) -> Result<Request, ApiError> {
    let Access::Roles { roles, object } = rule.access else {
        return Ok(req);
    };
    let (mut parts, body) = req.into_parts();
    let principal = authenticate(state, &parts.method, &parts.headers).await?;
    state.rate_limits.check(&principal)?;
    if let Some((kind, param)) = object {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let Some(id) = params.get(param) else {
            tracing::error!(
                route = rule.path,
                param,
                "the route's rule names a path parameter it does not have"
            );
            return Err(ApiError::Rejected {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "this route's authorization rule is broken".into(),
            });
        };
        let seen = state
            .store
            .owner(kind, id)
            .await?
            .is_some_and(|owner| principal.sees(&owner));
        if !seen {
            return Err(ApiError::NotFound(format!("no {} `{id}`", kind.noun())));
        }
        parts
            .extensions
            .insert(audit::NamedObject(kind, id.clone()));
    }
    if !roles.contains(&principal.role) {
        return Err(forbidden(format!(
            "a {} token may not {} {}",
            principal.role,
            parts.method,
            rule.full_path()
        )));
    }
    parts.extensions.insert(Scope(principal));
    Ok(Request::from_parts(parts, body))
}

/// The methods the table uses, for the matrix test.
pub fn method(rule: &RouteRule) -> Method {
    Method::from_bytes(rule.method.as_bytes()).unwrap_or(Method::GET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_declared_once_and_every_object_rule_names_one_of_its_parameters() {
        let rules = route_rules();
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            if let Access::Roles { roles, object } = r.access {
                assert!(!roles.is_empty(), "{} {} allows nobody", r.method, r.path);
                if let Some((_, param)) = object {
                    assert!(
                        r.path.contains(&format!("{{{param}}}")),
                        "{} {}: the rule names `{param}`, which is not in the path",
                        r.method,
                        r.path
                    );
                }
            }
        }
    }

    #[test]
    fn the_request_log_never_shows_a_survey_links_token() {
        let token = "ab".repeat(32);
        assert_eq!(
            super::super::redacted_path(&format!("/survey/{token}")),
            "/survey/[redacted]"
        );
        assert_eq!(
            super::super::redacted_path(&format!("/api/v1/surveys/{token}")),
            "/api/v1/surveys/[redacted]"
        );
        // A survey id is not a secret, and the rest of a path stays readable.
        assert_eq!(
            super::super::redacted_path("/api/v1/surveys/sv-1/link"),
            "/api/v1/surveys/sv-1/link"
        );
        assert_eq!(
            super::super::redacted_path("/api/v1/machines/m-1"),
            "/api/v1/machines/m-1"
        );
    }

    /// The mistake the guard exists for: a route mounted next to the table, without a
    /// rule, must not serve anything.
    #[tokio::test]
    async fn a_route_mounted_outside_the_table_answers_500_instead_of_its_data() {
        use tower::ServiceExt;
        let sneaky: Router<()> =
            guarded(Router::new().route("/sneaky", get(|| async { "every customer's data" })))
                .with_state(());
        let response = sneaky
            .oneshot(
                Request::get("/sneaky")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("every customer"));
    }

    /// Routes are only mounted here (and the static assets in `ui.rs`): a `.route(`
    /// anywhere else in the API is a route that bypasses the table.
    #[test]
    fn no_module_of_the_api_mounts_a_route_of_its_own() {
        for (file, text) in [
            ("analytics.rs", include_str!("analytics.rs")),
            ("ingest.rs", include_str!("ingest.rs")),
            ("machines.rs", include_str!("machines.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("offers.rs", include_str!("offers.rs")),
            ("ops.rs", include_str!("ops.rs")),
            ("registry.rs", include_str!("registry.rs")),
            ("service.rs", include_str!("service.rs")),
            ("tokens.rs", include_str!("tokens.rs")),
            ("access.rs", include_str!("access.rs")),
            ("error.rs", include_str!("error.rs")),
        ] {
            for needle in [".route(", ".nest(", ".merge(", ".route_service("] {
                let allowed =
                    file == "mod.rs" && needle != ".route(" && needle != ".route_service(";
                assert!(
                    allowed || !text.contains(needle),
                    "api/{file} calls {needle}: mount routes in api/routes.rs with a rule"
                );
            }
        }
    }
}
