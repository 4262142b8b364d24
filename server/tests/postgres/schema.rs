//! The PostgreSQL migrations give the schema the SQLite migrations give.

use std::path::{Path, PathBuf};

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;
use wearcast_server::store::{Store, postgres};

use crate::catalog::{self, Index, TypeClass};
use crate::support::{self, TestDb};

fn migrations(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect)
}

/// The `.sql` file names in `migrations/<dialect>`, sorted.
pub fn migration_files(dialect: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(migrations(dialect))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_sqlite_migration_has_a_postgres_twin_that_says_so() {
    let sqlite = migration_files("sqlite");
    assert!(sqlite.len() >= 10, "{sqlite:?}");
    assert_eq!(migration_files("postgres"), sqlite);
    for name in &sqlite {
        let text = std::fs::read_to_string(migrations("postgres").join(name)).unwrap();
        let head: String = text.lines().take(2).collect::<Vec<_>>().join(" ");
        assert!(
            head.starts_with("-- Mirrors")
                && head.contains(&format!("server/migrations/sqlite/{name}")),
            "migrations/postgres/{name} must start by naming the SQLite migration it mirrors: {head}"
        );
    }
}

/// The SQLite schema as the store leaves it: `Store::open_sqlite` on a new file.
async fn sqlite_schema() -> catalog::Schema {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wearcast.db");
    Store::open_sqlite(&file).await.unwrap().close().await;
    let pool =
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file).read_only(true))
            .await
            .unwrap();
    let schema = catalog::read_sqlite(&pool).await;
    pool.close().await;
    schema
}

#[tokio::test]
async fn the_postgres_schema_is_the_sqlite_schema() {
    let Some(server) = support::server().await else {
        return;
    };
    let db = TestDb::create(&server).await;
    let pool = postgres::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = catalog::read_postgres(&pool).await;
    pool.close().await;
    let sqlite = sqlite_schema().await;

    // The comparison is only as good as what was read: the SQLite side must be the
    // whole schema, with the hard cases in it, not something empty both sides agree on.
    assert_eq!(sqlite.migrations.len(), migration_files("sqlite").len());
    assert!(sqlite.tables.len() >= 30, "{:?}", sqlite.tables.keys());
    let offers = &sqlite.tables["offers"];
    let urgent = offers.columns.iter().find(|c| c.name == "urgent").unwrap();
    assert!(
        urgent.class == TypeClass::Integer && urgent.not_null,
        "{urgent:?}"
    );
    assert_eq!(offers.columns.last().unwrap().name, "labour_coverage_cents");
    assert_eq!(
        sqlite.tables["machine_events"].indexes["machine_events_natural_key"],
        Index {
            columns: [
                "machine_id",
                "ts",
                "kind",
                "coalesce(component,'')",
                "coalesce(code,'')"
            ]
            .map(String::from)
            .to_vec(),
            unique: true,
            partial: false,
        }
    );
    assert!(sqlite.tables["outbox"].columns[0].generated);
    assert_eq!(sqlite.tables["api_tokens"].checks, 4);
    assert_eq!(sqlite.tables["parts"].checks, 2);
    assert_eq!(
        sqlite.tables["work_orders"].unique,
        [vec!["offer_id".to_string()]].into()
    );
    assert!(
        sqlite.tables["maintenance_windows"]
            .foreign_keys
            .iter()
            .any(|fk| fk.on_delete == "CASCADE")
    );
    assert_eq!(sqlite.views["telemetry_series"].len(), 11);
    assert_eq!(
        sqlite.tables["machines"].columns[7].default.as_deref(),
        Some("'unknown'")
    );

    let differences = catalog::differences(&sqlite, &pg);
    assert!(
        differences.is_empty(),
        "the PostgreSQL schema differs from SQLite's in {} ways:\n  {}",
        differences.len(),
        differences.join("\n  ")
    );
}
