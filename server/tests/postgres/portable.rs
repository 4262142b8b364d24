//! The store's queries written once for both engines (`wearcast_server::store::db`):
//! the same calls on SQLite and on PostgreSQL must give the same answers, and the
//! answers must be the right ones.

use wearcast_protocol::UnixMs;
use wearcast_server::backtest::BacktestSummary;
use wearcast_server::devices::verify;
use wearcast_server::store::AuditEntry;
use wearcast_server::store::db::Pool;
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
