//! The store's queries written once for both engines (`wearcast_server::store::db`):
//! the same calls on SQLite and on PostgreSQL must give the same answers, and the
//! answers must be the right ones.

use wearcast_protocol::UnixMs;
use wearcast_server::auth::{Owner, Role, TokenRequest, TokenView, secret_hash};
use wearcast_server::backtest::BacktestSummary;
use wearcast_server::devices::verify;
use wearcast_server::store::db::{Pool, q};
use wearcast_server::store::{AuditEntry, ObjectKind, TokenLookup};
use wearcast_server::views::Rfc3339;

use crate::ingest::Engines;

fn entry(n: i64, tenant: Option<&str>) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: Rfc3339(UnixMs(1_700_000_000_000 + n)),
        platform_at: Rfc3339(UnixMs(1_800_000_000_000 + n)),
        token: format!("tok-{n}"),
        role: "admin".into(),
        tenant: tenant.map(str::to_string),
        customer: None,
        technician: (n == 2).then(|| "ana".into()),
        method: "POST".into(),
        route: "/api/v1/offers/{id}/accept".into(),
        path: format!("/api/v1/offers/of-{n}/accept"),
        object_kind: Some("offer".into()),
        object_id: Some(format!("of-{n}")),
        status: 200 + n as u16,
        request: Some(serde_json::json!({"n": n, "note": "it's"})),
        before: None,
        after: Some(serde_json::json!({"status": "accepted"})),
    }
}

/// The audit log: entries of one tenant, newest first, paged by id.
async fn audit(db: &Pool) -> Vec<Vec<AuditEntry>> {
    for (n, tenant) in [
        (1, Some("acme")),
        (2, Some("globex")),
        (3, Some("acme")),
        (4, None),
    ] {
        db.record_audit(&entry(n, tenant)).await.unwrap();
    }
    vec![
        db.audit_entries(Some("acme"), None, 10).await.unwrap(),
        db.audit_entries(None, None, 2).await.unwrap(),
        db.audit_entries(None, Some(3), 10).await.unwrap(),
    ]
}

fn summary(test: &str, rmse: f64) -> BacktestSummary {
    BacktestSummary {
        train: "train.csv".into(),
        test: test.into(),
        training_runs: 100,
        test_units: 100,
        rmse,
        mae: 10.5,
        cap: 125.0,
        level: 0.8,
        coverage: 0.88,
        below_p10: 0.05,
        above_p90: 0.07,
        live_engine_rmse: None,
        live_engine_coverage: Some(0.7),
    }
}

/// Backtests: a tenant's own and the deployment-wide ones, newest first (ids left out:
/// they are fresh on each engine).
async fn backtests(db: &Pool) -> Vec<Vec<(String, Option<String>, BacktestSummary)>> {
    for (n, tenant) in [
        (1, Some("acme")),
        (2, None),
        (3, Some("globex")),
        (4, Some("acme")),
    ] {
        let at = UnixMs(1_800_000_000_000 + n * 1000);
        db.record_backtest(
            tenant,
            "tok",
            at,
            &summary(&format!("test-{n}.csv"), 10.0 + n as f64),
        )
        .await
        .unwrap();
    }
    let listed = |all: Vec<wearcast_server::store::RecordedBacktest>| {
        all.into_iter()
            .map(|b| (b.recorded_at.0.to_rfc3339(), b.tenant, b.summary))
            .collect::<Vec<_>>()
    };
    vec![
        listed(db.backtests(Some("acme"), 10).await.unwrap()),
        listed(db.backtests(None, 2).await.unwrap()),
    ]
}

/// MQTT users: a device password for a registered machine only, a gateway user, and
/// every user listed with the password each was given.
async fn mqtt_users(db: &Pool) -> Vec<(String, Option<(String, String)>)> {
    let device = db.issue_device_password("m-1").await.unwrap().unwrap();
    assert!(db.issue_device_password("m-404").await.unwrap().is_none());
    let gateway = db.issue_gateway_password("gw-1").await.unwrap();
    // A new password replaces the old one.
    let device_again = db.issue_device_password("m-1").await.unwrap().unwrap();
    assert_ne!(device, device_again);
    let users = db.mqtt_users().await.unwrap();
    for u in &users {
        let password = if u.username == "gw-1" {
            &gateway
        } else {
            &device_again
        };
        assert!(verify(password, &u.password_hash), "{}", u.username);
    }
    assert_eq!(
        db.mqtt_user("m-1").await.unwrap().map(|u| u.device),
        Some(Some(("acme".into(), "m-1".into())))
    );
    assert!(db.mqtt_user("m-2").await.unwrap().is_none());
    assert_eq!(db.machine_ids().await.unwrap(), ["m-1", "m-2"]);
    users.into_iter().map(|u| (u.username, u.device)).collect()
}

const NOW: i64 = 1_700_000_000_000;

/// What a token scenario answers, ids left out (they are fresh on each engine).
#[derive(Debug, PartialEq)]
struct Tokens {
    refusals: Vec<String>,
    listed: Vec<TokenView>,
    lookups: Vec<TokenLookup>,
    admin_before_and_after: (bool, bool),
    named_revoked: u64,
    owners: Vec<Option<Owner>>,
}

/// API tokens: issued in the only tenant, refused for what does not exist, listed
/// newest first, revoked (once), expired, looked up by secret; and objects' owners.
async fn tokens(db: &Pool) -> Tokens {
    let issue = |req: TokenRequest, at: i64| async move { db.issue_token(&req, at).await.unwrap() };
    let refusals = vec![
        issue(TokenRequest::for_customer("cust-404"), NOW)
            .await
            .unwrap_err(),
        issue(
            TokenRequest {
                tenant: Some("globex".into()),
                ..TokenRequest::new(Role::Service)
            },
            NOW,
        )
        .await
        .unwrap_err(),
        issue(
            TokenRequest {
                expires_at: Some(NOW - 1),
                ..TokenRequest::new(Role::Service)
            },
            NOW,
        )
        .await
        .unwrap_err(),
    ];
    let admin_before = db.has_active_admin_token(NOW).await.unwrap();
    let admin = issue(
        TokenRequest {
            name: "admin".into(),
            ..TokenRequest::new(Role::Admin)
        },
        NOW,
    )
    .await
    .unwrap();
    let customer = issue(TokenRequest::for_customer("cust-1"), NOW + 1)
        .await
        .unwrap();
    let short = issue(
        TokenRequest {
            expires_at: Some(NOW + 10),
            ..TokenRequest::new(Role::Gateway)
        },
        NOW + 2,
    )
    .await
    .unwrap();
    let admin_after = db.has_active_admin_token(NOW + 3).await.unwrap();
    let revoked = db
        .revoke_token(&customer.token.id, NOW + 4)
        .await
        .unwrap()
        .unwrap();
    let again = db
        .revoke_token(&customer.token.id, NOW + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revoked.revoked_at, again.revoked_at,
        "revoking twice keeps the first time"
    );
    assert!(db.revoke_token("tok-404", NOW).await.unwrap().is_none());
    let named_revoked = db.revoke_tokens_named("admin", NOW + 6).await.unwrap();
    let anonymous = |mut v: TokenView| {
        v.id = String::new();
        v
    };
    let listed = db
        .tokens(Some("acme"), NOW + 20)
        .await
        .unwrap()
        .into_iter()
        .map(anonymous)
        .collect();
    let mut answers = Vec::new();
    for secret in [&admin.secret, &customer.secret, &short.secret, "wc_nothing"] {
        answers.push(
            match db.principal(&secret_hash(secret), NOW + 20).await.unwrap() {
                TokenLookup::Valid(mut p) => {
                    p.token = String::new();
                    TokenLookup::Valid(p)
                }
                other => other,
            },
        );
    }
    // m-1 has three work orders, two of them Ana's: its technicians are each once.
    for tech in ["ana", "ben"] {
        q(
            "INSERT INTO technicians (id, tenant_id, name, home_region, skills_json)
           VALUES ($1, 'acme', $1, 'eu', '[]')",
        )
        .bind(tech)
        .execute(db)
        .await
        .unwrap();
    }
    for (n, tech) in [(1, "ana"), (2, "ben"), (3, "ana")] {
        let offer = format!("of-{n}");
        q(
            "INSERT INTO offers (id, tenant_id, customer_id, site_id, machine_id, status, urgent,
             window_start, window_end, p_fail_before_window, p_fail_before_next,
             risk_tolerance, parts_cents, labour_cents, travel_cents, coverage_cents,
             total_cents, cost_of_waiting_cents, currency, explanation, created_at, updated_at)
           VALUES ($1, 'acme', 'cust-1', 'site-1', 'm-1', 'scheduled', 0, $2, $2, 0.1, 0.2,
             0.15, 0, 0, 0, 0, 0, 0, 'EUR', '', $2, $2)",
        )
        .bind(&offer)
        .bind(NOW)
        .execute(db)
        .await
        .unwrap();
        q(
            "INSERT INTO work_orders (id, tenant_id, offer_id, machine_id, site_id, status,
             technician_id, window_start, window_end, created_at, updated_at)
           VALUES ($1, 'acme', $2, 'm-1', 'site-1', 'scheduled', $3, $4, $4, $4, $4)",
        )
        .bind(format!("wo-{n}"))
        .bind(&offer)
        .bind(tech)
        .bind(NOW)
        .execute(db)
        .await
        .unwrap();
    }
    let mut owners = Vec::new();
    for (kind, id) in [
        (ObjectKind::Machine, "m-1"),
        (ObjectKind::Customer, "cust-1"),
        (ObjectKind::Site, "site-1"),
        (ObjectKind::Offer, "of-404"),
        (ObjectKind::Token, admin.token.id.as_str()),
    ] {
        let mut owner = db.owner(kind, id).await.unwrap();
        // The aggregate's order is the engine's own.
        if let Some(o) = owner.as_mut() {
            o.technicians.sort();
        }
        owners.push(owner);
    }
    Tokens {
        refusals,
        listed,
        lookups: answers,
        admin_before_and_after: (admin_before, admin_after),
        named_revoked,
        owners,
    }
}

#[tokio::test]
async fn the_portable_queries_answer_the_same_on_both_engines() {
    let Some(e) = Engines::open().await else {
        return;
    };
    let (lite, pg): (&Pool, &Pool) = (&e.sqlite, &e.pg);

    let (a, b) = (audit(lite).await, audit(pg).await);
    assert_eq!(a, b);
    let ids = |list: &[AuditEntry]| {
        list.iter()
            .map(|x| x.object_id.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a[0]), ["of-3", "of-1"], "acme's, newest first");
    assert_eq!(ids(&a[1]), ["of-4", "of-3"], "every tenant's, two");
    assert_eq!(ids(&a[2]), ["of-2", "of-1"], "before id 3");
    assert_eq!(
        a[0][0],
        AuditEntry {
            id: 3,
            ..entry(3, Some("acme"))
        }
    );

    let (a, b) = (backtests(lite).await, backtests(pg).await);
    assert_eq!(a, b);
    let tests = |list: &[(String, Option<String>, BacktestSummary)]| {
        list.iter().map(|x| x.2.test.clone()).collect::<Vec<_>>()
    };
    assert_eq!(tests(&a[0]), ["test-4.csv", "test-2.csv", "test-1.csv"]);
    assert_eq!(tests(&a[1]), ["test-4.csv", "test-3.csv"]);

    let (a, b) = (tokens(lite).await, tokens(pg).await);
    assert_eq!(a, b);
    assert_eq!(a.refusals.len(), 3);
    assert!(a.refusals[0].contains("cust-404"), "{:?}", a.refusals);
    assert_eq!(a.admin_before_and_after, (false, true));
    assert_eq!(a.named_revoked, 1, "the admin token, named");
    let states: Vec<(&str, &str)> = a
        .listed
        .iter()
        .map(|t| (t.role.as_str(), t.status))
        .collect();
    // Newest first; the deployment admin's token is in no tenant's list.
    assert_eq!(states, [("gateway", "expired"), ("customer", "revoked")]);
    assert!(matches!(a.lookups[0], TokenLookup::Revoked));
    assert!(matches!(a.lookups[1], TokenLookup::Revoked));
    assert!(matches!(a.lookups[2], TokenLookup::Expired));
    assert!(matches!(a.lookups[3], TokenLookup::Unknown));
    assert_eq!(a.owners[0].as_ref().unwrap().technicians, ["ana", "ben"]);
    let cust = a.owners[1].as_ref().unwrap();
    assert_eq!(
        (cust.tenant.as_str(), cust.customer.as_deref()),
        ("acme", Some("cust-1"))
    );
    assert!(a.owners[3].is_none());
    assert_eq!(
        a.owners[4].as_ref().unwrap().tenant,
        "",
        "a deployment admin's token"
    );

    let (a, b) = (mqtt_users(lite).await, mqtt_users(pg).await);
    assert_eq!(a, b);
    assert_eq!(
        a,
        [
            ("gw-1".to_string(), None),
            (
                "m-1".to_string(),
                Some(("acme".to_string(), "m-1".to_string()))
            )
        ]
    );
}

/// On PostgreSQL a write transaction holds the store's advisory lock: a second one (on
/// another connection, as from another replica) waits until the first ends, then sees
/// what it wrote.
#[tokio::test]
async fn postgres_write_transactions_take_turns_like_sqlites() {
    let Some(e) = Engines::open().await else {
        return;
    };
    let pg: Pool = (*e.pg).clone();
    let mut first = pg.begin_write().await.unwrap();
    q("UPDATE tenants SET name = $1 WHERE id = $2")
        .bind("Acme (first)")
        .bind("acme")
        .execute_in(&mut first)
        .await
        .unwrap();
    let second = {
        let pg = pg.clone();
        tokio::spawn(async move {
            let mut tx = pg.begin_write().await.unwrap();
            let name: String = q("SELECT name FROM tenants WHERE id = $1")
                .bind("acme")
                .fetch_all_in(&mut tx)
                .await
                .unwrap()[0]
                .get("name")
                .unwrap();
            tx.commit().await.unwrap();
            name
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second writer did not wait for the first"
    );
    first.commit().await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), second)
        .await
        .expect("the second writer went on once the first committed")
        .unwrap();
    assert_eq!(seen, "Acme (first)");
}

/// An hour-aligned instant.
const BASE: i64 = 472_222 * 3_600_000;

/// Inserts a raw window of `values` (one a second from `start`) on `db`.
async fn raw(db: &Pool, machine: &str, start: i64, values: &[f64]) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let m2: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    q("INSERT INTO telemetry_windows
         (machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts)
       VALUES ($1, 'spindle.temp', $2, $3, $4, $5, $6, $7, $8, $9, $10)")
    .bind(machine)
    .bind(start)
    .bind(start + 600_000)
    .bind(values.len() as i64)
    .bind(mean)
    .bind(m2)
    .bind(min)
    .bind(max)
    .bind(*values.last().unwrap())
    .bind(start + 1000 * (values.len() as i64 - 1))
    .execute(db)
    .await
    .unwrap();
}

type Hour = (String, i64, i64, i64, [f64; 5], i64);

/// Two passes of retention: the first rolls up two hours, the second a third and
/// merges a late window into an hour already rolled up. The hours it leaves.
async fn retention(db: &Pool) -> (Vec<wearcast_server::store::RetentionReport>, Vec<Hour>) {
    for machine in ["m-1", "m-2"] {
        for (i, minute) in (0..180).step_by(10).enumerate() {
            let v = i as f64;
            raw(db, machine, BASE + minute * 60_000, &[v, v + 1.5, 0.5 * v]).await;
        }
    }
    let first = db
        .apply_retention(UnixMs(BASE + 2 * 3_600_000 + 1), UnixMs(0))
        .await
        .unwrap();
    raw(db, "m-1", BASE + 5 * 60_000, &[100.0, -3.0]).await;
    let second = db
        .apply_retention(UnixMs(BASE + 3 * 3_600_000), UnixMs(0))
        .await
        .unwrap();
    assert_eq!(db.telemetry_rows().await.unwrap(), (0, 6));
    let hours = q(
        "SELECT machine_id, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts
                   FROM telemetry_hourly ORDER BY machine_id, start_ms",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("machine_id").unwrap(),
            r.get("start_ms").unwrap(),
            r.get("end_ms").unwrap(),
            r.get("n").unwrap(),
            ["mean", "m2", "vmin", "vmax", "vlast"].map(|c| r.get::<f64>(c).unwrap()),
            r.get("last_ts").unwrap(),
        )
    })
    .collect();
    (vec![first, second], hours)
}

#[tokio::test]
async fn retention_rolls_up_the_same_hours_on_both_engines() {
    let Some(e) = Engines::open().await else {
        return;
    };
    let (lite, pg): (&Pool, &Pool) = (&e.sqlite, &e.pg);
    let (a, b) = (retention(lite).await, retention(pg).await);
    assert_eq!(a.0, b.0, "the same reports");
    assert_eq!(a.0[0].windows_rolled_up, 24);
    assert_eq!(
        a.0[1].windows_rolled_up, 13,
        "a third hour, and the late window"
    );
    assert_eq!(a.1.len(), 6);
    for (x, y) in a.1.iter().zip(&b.1) {
        assert_eq!((&x.0, x.1, x.2, x.3, x.5), (&y.0, y.1, y.2, y.3, y.5));
        for (u, v) in x.4.iter().zip(&y.4) {
            assert!((u - v).abs() <= 1e-9 * u.abs().max(1.0), "{x:?} vs {y:?}");
        }
    }
    // m-1's first hour holds its six windows' samples and the late one's.
    let mut samples: Vec<f64> = (0..6)
        .flat_map(|i| {
            let v = f64::from(i);
            [v, v + 1.5, 0.5 * v]
        })
        .collect();
    samples.extend([100.0, -3.0]);
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let m2: f64 = samples.iter().map(|v| (v - mean).powi(2)).sum();
    let hour = &a.1[0];
    assert_eq!((hour.0.as_str(), hour.1, hour.3), ("m-1", BASE, 20));
    assert!(
        (hour.4[0] - mean).abs() < 1e-9 && (hour.4[1] - m2).abs() < 1e-6,
        "{hour:?}"
    );
    assert_eq!((hour.4[2], hour.4[3]), (-3.0, 100.0));
}
