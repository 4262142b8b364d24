//! The authorization matrix, generated from the route table (`api::routes`): every
//! `/api/v1` route is called with no token, with customer B's token on customer A's
//! objects, with a technician's token on another technician's work order and with a
//! gateway token, and the answers and the (unchanged) state are checked. A route
//! whose path names something this test has no fixture for, or a change without a
//! request body here, fails the test: a new route cannot slip through unexamined.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wearcast_server::api::routes::{Access, RouteRule, route_rules};
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::store::ObjectKind;

use crate::support::{TestServer, ts};

/// Customer A (whose objects are probed) and customer B (who probes).
const A: &str = "fading";
const B: &str = "steady";

struct Fixture {
    server: TestServer,
    /// Path parameter → A's object for it, per kind.
    ids: BTreeMap<&'static str, String>,
    /// The technician of A's open work order, and another one.
    technician: String,
    other_technician: String,
    /// A window the proposed offer could move to (for a valid reschedule body).
    window_start: String,
}

async fn fixture() -> Fixture {
    let s = TestServer::start(10).await;
    // A completed visit (with its survey), a booked one, and a proposal, all A's.
    let done = s.repair("f-1").await;
    s.feed_wear("f-2").await;
    s.cycle().await;
    let booked = s.accept(&s.offer_of("f-2").await).await;
    s.feed_wear("f-3").await;
    s.cycle().await;
    let proposed = s.offer_of("f-3").await;
    let technician = booked["technician"].as_str().unwrap().to_string();
    let other_technician = if technician == "ana" { "ben" } else { "ana" }.to_string();
    let surveys = s.get(&format!("/api/v1/surveys?customer={A}")).await;
    let survey = surveys
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["work_order"] == done["id"])
        .unwrap_or_else(|| panic!("no survey of {}: {surveys:#}", done["id"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stop_start = ts(&proposed["window_start"]).plus_hours(24.0 * 3.0);
    let (status, stop) = s
        .send(
            "POST",
            "/api/v1/sites/fading-1/stops",
            Some(json!({"start": stop_start.to_rfc3339(), "end": stop_start.plus_hours(4.0).to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 201, "{stop}");
    let token = s
        .store
        .issue_token_now(&TokenRequest::for_customer(A))
        .await
        .unwrap();
    let windows = s
        .get(&format!(
            "/api/v1/offers/{}/windows",
            proposed["id"].as_str().unwrap()
        ))
        .await;
    let window_start = windows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["selectable"] == true)
        .map_or_else(|| proposed["window_start"].clone(), |w| w["start"].clone())
        .as_str()
        .unwrap()
        .to_string();
    let ids = BTreeMap::from([
        ("machine", "f-2".to_string()),
        ("offer", proposed["id"].as_str().unwrap().to_string()),
        ("work order", booked["id"].as_str().unwrap().to_string()),
        ("site", "fading-1".to_string()),
        ("customer", A.to_string()),
        ("technician", technician.clone()),
        ("survey", survey),
        ("part", "brg".to_string()),
        ("token", token.token.id.clone()),
        ("stop", stop["id"].as_str().unwrap().to_string()),
    ]);
    Fixture {
        server: s,
        ids,
        technician,
        other_technician,
        window_start,
    }
}

impl Fixture {
    /// The rule's path with A's objects filled in.
    fn path(&self, rule: &RouteRule) -> String {
        let object = match rule.access {
            Access::Roles {
                object: Some((kind, param)),
                ..
            } => Some((kind, param)),
            _ => None,
        };
        let mut path = rule.full_path();
        while let Some(open) = path.find('{') {
            let close = path[open..].find('}').unwrap() + open;
            let param = &path[open + 1..close];
            let key = match object {
                Some((kind, p)) if p == param => kind.noun(),
                _ => param,
            };
            let value = match (key, rule.path) {
                // The survey answer link: an unknown (but well-formed) token.
                ("token", p) if p.starts_with("/surveys/") => "0".repeat(64),
                _ => self.ids.get(key).cloned().unwrap_or_else(|| {
                    panic!(
                        "{} {}: no fixture for `{{{param}}}` ({key}); add A's object of that kind to the authz fixture",
                        rule.method, rule.path
                    )
                }),
            };
            path.replace_range(open..=close, &value);
        }
        path
    }

    /// A valid body for each change, so a missing check would change something.
    fn body(&self, rule: &RouteRule) -> Option<Value> {
        let body = match (rule.method, rule.path) {
            ("GET", _) => return None,
            (_, "/ingest") => json!({"batch_id": "authz-probe", "gateway": "gw-test",
                "created_at": self.server.now().0, "events": [], "windows": [], "statuses": []}),
            (_, "/registry") => serde_json::to_value(crate::support::manifest()).unwrap(),
            (_, "/offers/{id}/accept") => json!({}),
            (_, "/offers/{id}/decline") => json!({"reason": "probing"}),
            (_, "/offers/{id}/reschedule") => json!({"window_start": self.window_start}),
            (_, "/work-orders/{id}/assign") => json!({"technician": self.other_technician}),
            (_, "/work-orders/{id}/complete") => {
                json!({"components": [{"component": "main_bearing", "as_found": "worn"}]})
            }
            (_, "/technicians") => {
                json!({"id": "eve", "name": "Eve", "home_region": "eu-central", "skills": ["press"]})
            }
            (_, "/technicians/{id}/absences") => {
                json!({"start": self.server.now().plus_hours(1.0).to_rfc3339(),
                "end": self.server.now().plus_hours(30.0).to_rfc3339()})
            }
            (_, "/parts/{id}/stock") => json!({"quantity": 99}),
            (_, "/service") => {
                json!({"technicians": [], "stock": [{"part": "brg", "quantity": 98}]})
            }
            (_, "/sites/{id}/maintenance-windows") => json!([]),
            (_, "/sites/{id}/stops") => {
                json!({"start": self.server.now().plus_hours(200.0).to_rfc3339(),
                "end": self.server.now().plus_hours(204.0).to_rfc3339()})
            }
            (_, "/sites/{id}/stops/{stop}") | (_, "/tokens/{id}") => json!({}),
            (_, "/accounts/{customer}/proposals") => json!({"kind": "contract"}),
            (_, "/exports/accounts") => json!({}),
            (_, "/surveys/{id}/link") => json!({}),
            (_, "/surveys/{token}") => json!({"score": 9}),
            (_, "/tokens") => json!({"role": "service"}),
            (_, "/session") => json!({"token": "wc_nothing"}),
            (_, "/model-quality/backtests") => crate::quality::backtest_summary(),
            (m, p) => panic!("{m} {p}: no request body in the authz matrix; add a valid one"),
        };
        Some(body)
    }

    async fn call(&self, token: Option<&str>, rule: &RouteRule) -> (u16, String) {
        let url = format!("{}{}", self.server.url, self.path(rule));
        let client = match token {
            Some(t) => bearer_client(t),
            None => {
                wearcast_server::tls::install_crypto_provider();
                reqwest::Client::new()
            }
        };
        let mut req = client.request(
            reqwest::Method::from_bytes(rule.method.as_bytes()).unwrap(),
            &url,
        );
        if let Some(body) = self.body(rule) {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Everything a probe could change, as the admin sees it.
    async fn state(&self) -> Value {
        let mut out = serde_json::Map::new();
        for path in [
            "/api/v1/machines",
            "/api/v1/offers",
            "/api/v1/work-orders",
            "/api/v1/technicians",
            "/api/v1/parts",
            "/api/v1/sites",
            "/api/v1/sites/fading-1/stops",
            "/api/v1/surveys",
            "/api/v1/tokens",
            "/api/v1/contracts",
            // Proposals and exports count as contacts; every change is audited.
            "/api/v1/accounts",
            "/api/v1/audit",
            "/api/v1/model-quality/backtests",
        ] {
            out.insert(path.into(), self.server.get(path).await);
        }
        Value::Object(out)
    }
}

fn object(rule: &RouteRule) -> Option<ObjectKind> {
    match rule.access {
        Access::Roles {
            object: Some((kind, _)),
            ..
        } => Some(kind),
        _ => None,
    }
}

fn allows(rule: &RouteRule, role: Role) -> bool {
    matches!(rule.access, Access::Roles { roles, .. } if roles.contains(&role))
}

#[tokio::test]
async fn every_route_refuses_what_its_rule_forbids_and_changes_nothing_doing_so() {
    let f = fixture().await;
    let store = &f.server.store;
    let issue =
        |req: TokenRequest| async move { store.issue_token_now(&req).await.unwrap().secret };
    let customer_b = issue(TokenRequest::for_customer(B)).await;
    let other_technician = issue(TokenRequest::for_technician(&f.other_technician)).await;
    let gateway = issue(TokenRequest::new(Role::Gateway)).await;
    let customer_a = issue(TokenRequest::for_customer(A)).await;
    let before = f.state().await;

    let rules = route_rules();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for rule in &rules {
        let what = format!("{} {}", rule.method, f.path(rule));
        // The fixture really is A's: otherwise "B gets 404" would prove nothing.
        if let Some(kind) = object(rule) {
            let id = match f.path(rule).split('/').nth(4) {
                Some(id) => id.to_string(),
                None => unreachable!(),
            };
            let owner = store.owner(kind, &id).await.unwrap();
            let owner =
                owner.unwrap_or_else(|| panic!("{what}: the fixture `{id}` does not exist"));
            if !matches!(
                kind,
                ObjectKind::Part | ObjectKind::Technician | ObjectKind::Token
            ) {
                assert_eq!(
                    owner.customer.as_deref(),
                    Some(A),
                    "{what}: the fixture is not A's"
                );
            }
        }

        // No token: 401, unless the route is public.
        let (status, body) = f.call(None, rule).await;
        match rule.access {
            Access::Public(_) => assert!(
                !body.contains("needs an API token"),
                "{what} is public: {status} {body}"
            ),
            Access::Roles { .. } => {
                assert_eq!(status, 401, "{what} without a token: {body}");
                assert!(body.contains("\"error\""), "{what}: 401 is JSON: {body}");
                *checked.entry("no token: 401").or_default() += 1;
            }
        }
        if matches!(rule.access, Access::Public(_)) {
            continue;
        }

        // Customer B on A's objects: 404, as for an unknown id; on lists, B's own rows.
        if object(rule).is_some() {
            let (status, body) = f.call(Some(&customer_b), rule).await;
            assert_eq!(status, 404, "{what} as customer B: {body}");
            *checked.entry("customer B on A's object: 404").or_default() += 1;
        } else if rule.method == "GET" && allows(rule, Role::Customer) {
            let (status, body) = f.call(Some(&customer_b), rule).await;
            assert_eq!(status, 200, "{what} as customer B: {body}");
            // Quoted or not (a CSV leaves ids bare): A's id, or its sites' and
            // machines' ids, which begin with it.
            assert!(
                !body.contains(A),
                "{what}: customer B's list names customer A: {body}"
            );
            *checked.entry("customer B's list: no row of A").or_default() += 1;
        } else if !allows(rule, Role::Customer) {
            // Staff-only routes without an object (exports, imports, planning): a
            // customer token is refused outright.
            let (status, body) = f.call(Some(&customer_b), rule).await;
            assert!(
                status == 403 || status == 404,
                "{what} as customer B: {status} {body}"
            );
            *checked
                .entry("customer B on a staff route: refused")
                .or_default() += 1;
        }

        // Another technician on this technician's work order (and calendar): 404.
        if matches!(
            object(rule),
            Some(ObjectKind::WorkOrder | ObjectKind::Technician)
        ) {
            let (status, body) = f.call(Some(&other_technician), rule).await;
            assert_eq!(
                status, 404,
                "{what} as technician {}: {body}",
                f.other_technician
            );
            *checked.entry("other technician: 404").or_default() += 1;
        } else if rule.method == "GET" && allows(rule, Role::Technician) && object(rule).is_none() {
            // A list a technician may read holds only their own rows: nothing that names
            // the technician of A's work order.
            let (status, body) = f.call(Some(&other_technician), rule).await;
            assert_eq!(
                status, 200,
                "{what} as technician {}: {body}",
                f.other_technician
            );
            assert!(
                !body.contains(&format!("\"{}\"", f.technician)),
                "{what}: technician {} is shown {}'s rows: {body}",
                f.other_technician,
                f.technician
            );
            *checked
                .entry("other technician's list: none of this one's rows")
                .or_default() += 1;
        }

        // A gateway token ingests and does nothing else.
        let (status, body) = f.call(Some(&gateway), rule).await;
        if allows(rule, Role::Gateway) {
            assert!(status < 400, "{what} as the gateway: {status} {body}");
        } else {
            assert!(
                status == 403 || status == 404,
                "{what} as the gateway: {status} {body}"
            );
            *checked.entry("gateway: refused").or_default() += 1;
        }

        let after = f.state().await;
        for (view, was) in before.as_object().unwrap() {
            assert!(
                after[view] == *was,
                "{what}: a refused request changed {view}:\nbefore {was}\nafter {}",
                after[view]
            );
        }
    }

    // Positive controls: A sees its own objects, and its lists hold only its rows.
    let a = bearer_client(&customer_a);
    let get = |path: String| {
        let a = a.clone();
        let url = format!("{}{path}", f.server.url);
        async move {
            let resp = a.get(&url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let machine = get(format!("/api/v1/machines/{}", f.ids["machine"])).await;
    assert_eq!(machine.0, 200, "{}", machine.1);
    let offer = get(format!("/api/v1/offers/{}", f.ids["offer"])).await;
    assert_eq!(offer.0, 200, "{}", offer.1);
    let (_, machines) = get("/api/v1/machines".into()).await;
    let machines: Value = serde_json::from_str(&machines).unwrap();
    assert!(!machines.as_array().unwrap().is_empty());
    assert!(
        machines
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["customer"] == A)
    );
    let (status, body) = get(format!("/api/v1/kpis?customer={B}")).await;
    assert_eq!(status, 404, "A asking for B's figures: {body}");
    let tech = bearer_client(&issue(TokenRequest::for_technician(&f.technician)).await);
    let own: Value = tech
        .get(format!("{}/api/v1/work-orders", f.server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        own.as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == f.ids["work order"].as_str())
    );
    assert!(
        own.as_array()
            .unwrap()
            .iter()
            .all(|w| w["technician"] == f.technician.as_str())
    );

    let with_id = rules.iter().filter(|r| object(r).is_some()).count();
    assert_eq!(checked["customer B on A's object: 404"], with_id);
    eprintln!("authz matrix over {} routes: {checked:?}", rules.len());
    f.server.stop().await;
}

/// The other side of "no row of A" in B's lists: A's own lists hold A's rows and only
/// those (an empty answer would pass the matrix).
#[tokio::test]
async fn a_customer_sees_exactly_its_own_accounts_kpis_and_surveys() {
    let f = fixture().await;
    let customer_a = f
        .server
        .store
        .issue_token_now(&TokenRequest::for_customer(A))
        .await
        .unwrap()
        .secret;
    let client = bearer_client(&customer_a);
    let get = |path: &str| {
        let url = format!("{}/api/v1{path}", f.server.url);
        let client = client.clone();
        async move {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET {url}");
            resp.text().await.unwrap()
        }
    };

    let accounts: Value = serde_json::from_str(&get("/accounts").await).unwrap();
    let customers: Vec<&str> = accounts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["customer"].as_str())
        .collect();
    assert_eq!(customers, [A], "{accounts:#}");

    let csv = get("/accounts.csv").await;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].starts_with(&format!("{A},")), "{csv}");

    let kpis: Value = serde_json::from_str(&get("/kpis").await).unwrap();
    let per_customer: Vec<&str> = kpis["by_customer"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["customer"].as_str())
        .collect();
    assert!(per_customer.iter().all(|c| *c == A), "{kpis:#}");
    assert!(!kpis.to_string().contains(B), "{kpis:#}");

    let surveys: Value = serde_json::from_str(&get("/surveys").await).unwrap();
    assert!(
        surveys
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["customer"] == A),
        "{surveys:#}"
    );
    // The staff see both customers, so the fixture has B's rows to leak.
    let all = f.server.get("/api/v1/accounts").await;
    assert!(all.to_string().contains(B), "{all:#}");
}

#[tokio::test]
async fn an_expired_or_revoked_token_is_refused_and_says_why() {
    let s = TestServer::start(3).await;
    let mut req = TokenRequest::for_customer(A);
    let now = wearcast_server::auth::real_now_ms();
    req.expires_at = Some(now + 1);
    let expired = s.store.issue_token(&req, now).await.unwrap().unwrap();
    let revoked = s
        .store
        .issue_token_now(&TokenRequest::for_customer(A))
        .await
        .unwrap();
    let (status, _) = s
        .send(
            "DELETE",
            &format!("/api/v1/tokens/{}", revoked.token.id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for (secret, why) in [(&expired.secret, "expired"), (&revoked.secret, "revoked")] {
        let resp = bearer_client(secret)
            .get(format!("{}/api/v1/machines", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let text = resp.text().await.unwrap();
        assert!(text.contains(why), "{text}");
    }
    // An admin issues a token over the API; its secret is shown once and works.
    let (status, body) = s
        .send(
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "customer", "customer": B, "expires_in": "1h"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap();
    let listed = s.get("/api/v1/tokens").await;
    assert!(
        !listed.to_string().contains(secret),
        "a list never shows a secret"
    );
    let mine: Value = bearer_client(secret)
        .get(format!("{}/api/v1/machines", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(mine.as_array().unwrap().iter().all(|m| m["customer"] == B));
    s.stop().await;
}

#[tokio::test]
async fn a_cookie_session_needs_its_csrf_header_for_changes() {
    let s = TestServer::start(3).await;
    let token = s
        .store
        .issue_token_now(&TokenRequest::for_customer(A))
        .await
        .unwrap();
    wearcast_server::tls::install_crypto_provider();
    let plain = reqwest::Client::new();
    let resp = plain
        .post(format!("{}/api/v1/session", s.url))
        .json(&json!({"token": token.secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("wearcast_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("wearcast_csrf="))
        .unwrap();
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "the page must read it: {csrf_cookie}"
    );
    let value = |c: &String| {
        c.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string()
    };
    let cookie = format!(
        "wearcast_session={}; wearcast_csrf={}",
        value(session),
        value(csrf_cookie)
    );
    let csrf = value(csrf_cookie);

    let read = plain
        .get(format!("{}/api/v1/machines", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200, "reading needs no CSRF header");
    let stop = json!({"start": s.now().plus_hours(300.0).to_rfc3339(), "end": s.now().plus_hours(304.0).to_rfc3339()});
    let url = format!("{}/api/v1/sites/fading-1/stops", s.url);
    let forged = plain
        .post(&url)
        .header("cookie", &cookie)
        .json(&stop)
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status().as_u16(),
        403,
        "a change without the CSRF header"
    );
    let wrong = plain
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", "0".repeat(64))
        .json(&stop)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    let ok = plain
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&stop)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 201, "{}", ok.text().await.unwrap());
    s.stop().await;
}

/// `/` sends a signed-in caller to their role's view and shows everyone else (no
/// cookie, a revoked token, a gateway) the page that lists the views.
#[tokio::test]
async fn the_landing_page_leads_each_signed_in_role_to_its_view() {
    let s = TestServer::start(3).await;
    wearcast_server::tls::install_crypto_provider();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let landing = |cookie: Option<String>| {
        let mut req = no_redirects.get(format!("{}/", s.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (status, location, resp.text().await.unwrap())
        }
    };
    let requests = [
        (TokenRequest::new(Role::Admin), Some("/manufacturer")),
        (TokenRequest::new(Role::Service), Some("/service")),
        (TokenRequest::for_technician("ana"), Some("/service")),
        (TokenRequest::for_customer(A), Some("/operator")),
        (TokenRequest::new(Role::Gateway), None),
    ];
    for (req, want) in requests {
        let issued = s.store.issue_token_now(&req).await.unwrap();
        let (status, location, body) =
            landing(Some(format!("wearcast_session={}", issued.secret))).await;
        match want {
            Some(view) => {
                assert_eq!(status, 303, "{:?}: {body}", req.role);
                assert_eq!(location.as_deref(), Some(view), "{:?}", req.role);
            }
            None => {
                assert_eq!(status, 200, "{:?}", req.role);
                assert!(body.contains("href=\"/signin\""), "{body}");
            }
        }
    }
    let (status, location, body) = landing(None).await;
    assert_eq!((status, location), (200, None));
    for view in ["/operator", "/service", "/manufacturer", "/signin"] {
        assert!(
            body.contains(&format!("href=\"{view}\"")),
            "no link to {view}"
        );
    }
    let admin = s
        .store
        .issue_token_now(&TokenRequest::new(Role::Admin))
        .await
        .unwrap();
    let views = no_redirects
        .get(format!("{}/views", s.url))
        .header("cookie", format!("wearcast_session={}", admin.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(
        views.status().as_u16(),
        200,
        "/views lists the views even when signed in"
    );
    assert!(
        views
            .text()
            .await
            .unwrap()
            .contains("href=\"/manufacturer\"")
    );
    let (status, _, _) = landing(Some(format!("wearcast_session=wc_{}", "0".repeat(64)))).await;
    assert_eq!(
        status, 200,
        "an unknown token is shown the views, not an error"
    );
    s.stop().await;
}

/// The test manifest for a second manufacturer, `beta`: every id prefixed with `b-`.
fn beta_manifest() -> wearcast_protocol::registry::FleetManifest {
    use crate::support::id;
    let b = |s: &str| format!("b-{s}");
    let mut m = crate::support::manifest();
    m.tenant.id = id("beta");
    m.tenant.name = "Beta Machines".into();
    for c in &mut m.customers {
        c.id = id(&b(c.id.as_str()));
    }
    for s in &mut m.sites {
        s.id = id(&b(s.id.as_str()));
        s.customer = id(&b(s.customer.as_str()));
    }
    for p in &mut m.parts {
        p.id = id(&b(p.id.as_str()));
    }
    for model in &mut m.machine_models {
        model.id = id(&b(model.id.as_str()));
        for c in &mut model.components {
            c.part = id(&b(c.part.as_str()));
        }
    }
    for machine in &mut m.machines {
        machine.id = id(&b(machine.id.as_str()));
        machine.customer = id(&b(machine.customer.as_str()));
        machine.site = id(&b(machine.site.as_str()));
        machine.model = id(&b(machine.model.as_str()));
    }
    for k in &mut m.contracts {
        k.id = id(&b(k.id.as_str()));
        k.customer = id(&b(k.customer.as_str()));
    }
    m
}

async fn send_as(
    client: &reqwest::Client,
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", s.url);
    let req = match method {
        "GET" => client.get(&url),
        "POST" => client.post(&url),
        other => panic!("method {other}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Two manufacturers on one deployment. The deployment's admin gives the second,
/// `beta`, an admin of its own, who sees only beta's machines (another tenant's id is
/// a 404), issues tokens only in beta, and cannot import over acme's fleet; with two
/// tenants, a token for a tenant-bound role must name its tenant.
#[tokio::test]
async fn an_admin_of_one_tenant_sees_issues_and_imports_only_within_it() {
    let s = TestServer::start(3).await;
    let beta = serde_json::to_value(beta_manifest()).unwrap();
    let (status, body) = s.send("POST", "/api/v1/registry", Some(beta.clone())).await;
    assert_eq!(status, 200, "{body}");
    let (status, issued) = s
        .send(
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "admin", "tenant": "beta", "name": "beta's admin"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["tenant"], "beta");
    let beta_admin = bearer_client(issued["secret"].as_str().unwrap());

    let (status, machines) = send_as(&beta_admin, &s, "GET", "/api/v1/machines", None).await;
    assert_eq!(status, 200, "{machines}");
    let ids: Vec<&str> = machines
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("b-")), "{ids:?}");
    let (status, _) = send_as(&beta_admin, &s, "GET", "/api/v1/machines/f-2", None).await;
    assert_eq!(status, 404, "another tenant's machine is visible");
    let everyone = s.get("/api/v1/machines").await;
    assert_eq!(everyone.as_array().unwrap().len(), 12);

    // Tokens: its own tenant, whatever it leaves out; never another's.
    for body in [json!({"role": "service"}), json!({"role": "admin"})] {
        let (status, issued) = send_as(&beta_admin, &s, "POST", "/api/v1/tokens", Some(body)).await;
        assert_eq!(status, 201, "{issued}");
        assert_eq!(issued["tenant"], "beta", "{issued}");
    }
    let (status, body) = send_as(
        &beta_admin,
        &s,
        "POST",
        "/api/v1/tokens",
        Some(json!({"role": "service", "tenant": "acme"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send_as(
        &beta_admin,
        &s,
        "POST",
        "/api/v1/tokens",
        Some(json!({"role": "customer", "customer": "fading"})),
    )
    .await;
    assert_eq!(status, 422, "a customer of acme for beta: {body}");
    let (status, listed) = send_as(&beta_admin, &s, "GET", "/api/v1/tokens", None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tenant"] == "beta"),
        "{listed}"
    );

    // Imports: its own fleet, not acme's.
    let acme = serde_json::to_value(crate::support::manifest()).unwrap();
    let (status, body) = send_as(&beta_admin, &s, "POST", "/api/v1/registry", Some(acme)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send_as(&beta_admin, &s, "POST", "/api/v1/registry", Some(beta)).await;
    assert_eq!(status, 200, "{body}");

    // Nothing of acme's can be written over from beta: a manifest naming an acme id
    // is refused whole (409), and acme's customer keeps its name.
    let mut hijack = beta_manifest();
    hijack.customers[0].id = crate::support::id("fading");
    hijack.customers[0].name = "Hijacked".into();
    for site in hijack
        .sites
        .iter_mut()
        .filter(|s| s.customer.as_str() == "b-steady")
    {
        site.customer = crate::support::id("fading");
    }
    for m in hijack
        .machines
        .iter_mut()
        .filter(|m| m.customer.as_str() == "b-steady")
    {
        m.customer = crate::support::id("fading");
    }
    for k in hijack
        .contracts
        .iter_mut()
        .filter(|k| k.customer.as_str() == "b-steady")
    {
        k.customer = crate::support::id("fading");
    }
    let (status, body) = send_as(
        &beta_admin,
        &s,
        "POST",
        "/api/v1/registry",
        Some(serde_json::to_value(&hijack).unwrap()),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("customer fading"), "{body}");
    let accounts = s.get("/api/v1/accounts").await;
    let fading = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["customer"] == "fading")
        .unwrap();
    assert_eq!(fading["name"], "Fading Fabrication", "{fading}");

    // Technicians: each tenant sees and writes its own, skilled on its own models.
    let (status, techs) = send_as(&beta_admin, &s, "GET", "/api/v1/technicians", None).await;
    assert_eq!(status, 200, "{techs}");
    assert_eq!(techs, json!([]), "beta sees acme's technicians");
    assert_eq!(
        s.get("/api/v1/technicians").await.as_array().unwrap().len(),
        2
    );
    let technician = |id: &str, model: &str| json!({"id": id, "name": id, "home_region": "eu-central", "skills": [model]});
    for (body, expected) in [
        (technician("ana", "b-press"), 409),
        (technician("bea", "press"), 422),
        (technician("bea", "b-press"), 200),
    ] {
        let (status, answer) = send_as(
            &beta_admin,
            &s,
            "POST",
            "/api/v1/technicians",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (_, techs) = send_as(&beta_admin, &s, "GET", "/api/v1/technicians", None).await;
    let ids: Vec<&str> = techs
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bea"]);
    let everyone = s.get("/api/v1/technicians").await;
    let ana = everyone
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "ana")
        .unwrap();
    assert_eq!(ana["skills"], json!(["press"]), "{ana}");

    // Two tenants: the deployment's admin names the tenant of a tenant-bound token.
    let (status, body) = s
        .send("POST", "/api/v1/tokens", Some(json!({"role": "service"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("name it"), "{body}");
    let (status, body) = s
        .send(
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "service", "tenant": "nope"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}
