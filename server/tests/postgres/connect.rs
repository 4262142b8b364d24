//! `store::postgres::connect`: idempotent, and clear when it cannot connect.

use sqlx::{PgPool, Row};
use wearcast_server::store::postgres::{self, redact_url};

use crate::catalog;
use crate::schema::migration_files;
use crate::support::{self, TestDb, free_port, with_database};

/// What sqlx recorded of each migration it applied: version, when, checksum.
async fn applied(pool: &PgPool) -> Vec<(i64, String, Vec<u8>)> {
    sqlx::query(
        "SELECT version, installed_on::text AS installed_on, checksum
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("version"), r.get("installed_on"), r.get("checksum")))
    .collect()
}

#[tokio::test]
async fn connecting_again_applies_nothing() {
    let Some(server) = support::server().await else {
        return;
    };
    let db = TestDb::create(&server).await;
    let first = postgres::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = applied(&first).await;
    let schema_before = catalog::read_postgres(&first).await;
    first.close().await;
    assert_eq!(
        before.len(),
        migration_files("postgres").len(),
        "{before:?}"
    );

    let second = postgres::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("connecting a second time: {e}"));
    assert_eq!(
        applied(&second).await,
        before,
        "the second connect re-applied migrations"
    );
    assert_eq!(catalog::read_postgres(&second).await, schema_before);
    second.close().await;
}

#[tokio::test]
async fn a_wrong_url_is_an_error_that_names_the_host_but_not_the_password() {
    // Nothing listens on this port.
    let port = free_port();
    let url = format!("postgres://wearcast:hunter2@127.0.0.1:{port}/wearcast");
    let error = postgres::connect(&url)
        .await
        .expect_err("connected to a port nothing listens on")
        .to_string();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(error.contains("cannot connect"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    let error = postgres::connect("not a url")
        .await
        .expect_err("parsed")
        .to_string();
    assert!(error.contains("cannot connect"), "{error}");

    // A database that is not there, on a server that is.
    let Some(server) = support::server().await else {
        return;
    };
    let missing = with_database(
        &server,
        &format!("wearcast_test_missing_{}", std::process::id()),
    );
    let error = postgres::connect(&missing)
        .await
        .expect_err("connected to a database that does not exist")
        .to_string();
    assert!(error.contains(&redact_url(&missing)), "{error}");
    assert!(error.contains("does not exist"), "{error}");
}
