//! The PostgreSQL server the tests use, a database of their own on it that is
//! dropped when the test ends (passed or failed), and the registry rows the ingest
//! tests need there.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use wearcast_protocol::registry::FleetManifest;
use wearcast_server::store::postgres::redact_url;

/// Where the tests find PostgreSQL unless `WEARCAST_TEST_POSTGRES_URL` says otherwise:
/// the local server that `scripts/services` makes sure of (trust authentication).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of a database on the server that the tests may create databases from.
pub fn server_url() -> String {
    std::env::var("WEARCAST_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

pub async fn connect_to(url: &str) -> Result<PgConnection, String> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .disable_statement_logging();
    match tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".to_string()),
    }
}

/// The server's URL when it answers. When it does not: `None` after printing a SKIP
/// line, or a panic under `CI=true`, where `scripts/services` must have started it.
pub async fn server() -> Option<String> {
    let url = server_url();
    match connect_to(&url).await {
        Ok(conn) => {
            let _ = conn.close().await;
            Some(url)
        }
        Err(error) => {
            let shown = redact_url(&url);
            assert!(
                !in_ci(),
                "PostgreSQL is required under CI=true but is not reachable at {shown}: {error} \
                 (scripts/services starts the local one; WEARCAST_TEST_POSTGRES_URL names another)"
            );
            eprintln!("SKIP: PostgreSQL not reachable at {shown}: {error}");
            None
        }
    }
}

/// `url` with its database replaced by `database` (user, host, port and query kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A fresh database, `wearcast_test_<pid>_<nanos>_<n>`, dropped (with any session still
/// on it) when this is dropped, so a failed assertion does not leave it behind.
pub struct TestDb {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl TestDb {
    pub async fn create(server_url: &str) -> TestDb {
        TestDb::create_named(server_url, "wearcast_test").await
    }

    /// A fresh database `<prefix>_<pid>_<nanos>_<n>` (the benchmarks use this too).
    pub async fn create_named(server_url: &str, prefix: &str) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "{prefix}_{}_{nanos}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = connect_to(server_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {server_url}: {e}"));
        // The name is ours (the caller's prefix, digits and underscores), so formatting
        // it in is safe.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server_url}: {e}"));
        let _ = conn.close().await;
        TestDb {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_string(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which must not be blocked on: the DROP
        // runs on a thread of its own with a runtime of its own.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = connect_to(&server_url).await?;
                // WITH (FORCE): the pools of the code under test may still hold sessions.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}: panicked", self.name),
        }
    }
}

/// Registers `m` in a PostgreSQL database with plain INSERTs, as `Store::import_manifest`
/// does on SQLite for what ingest reads and writes: the tenant, customers, sites,
/// parts, machine models, machines, and each machine's components (installed when the
/// manifest says, else at commissioning). Maintenance windows and contracts are not
/// written: the PostgreSQL store has no import of its own yet, and `m` must have none.
pub async fn register(pool: &PgPool, m: &FleetManifest) {
    assert!(
        m.contracts.is_empty() && m.sites.iter().all(|s| s.maintenance_windows.is_empty()),
        "register writes no contracts and no maintenance windows"
    );
    let tenant = m.tenant.id.as_str();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO tenants (id, name, currency, labour_rate_cents_per_hour) VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant)
    .bind(&m.tenant.name)
    .bind(&m.tenant.currency)
    .bind(m.tenant.labour_rate_cents_per_hour)
    .execute(&mut *tx)
    .await
    .unwrap();
    for c in &m.customers {
        sqlx::query(
            "INSERT INTO customers (id, tenant_id, name, contact_email) VALUES ($1, $2, $3, $4)",
        )
        .bind(c.id.as_str())
        .bind(tenant)
        .bind(&c.name)
        .bind(&c.contact_email)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for s in &m.sites {
        sqlx::query(
            "INSERT INTO sites (id, tenant_id, customer_id, name, timezone, region, travel_cost_cents)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id.as_str())
        .bind(tenant)
        .bind(s.customer.as_str())
        .bind(&s.name)
        .bind(&s.timezone)
        .bind(&s.region)
        .bind(s.travel_cost_cents)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for p in &m.parts {
        sqlx::query(
            "INSERT INTO parts (id, tenant_id, name, price_cents, lead_time_days, labour_hours,
               life_shape, life_scale_hours)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(p.id.as_str())
        .bind(tenant)
        .bind(&p.name)
        .bind(p.price_cents)
        .bind(p.lead_time_days)
        .bind(p.labour_hours)
        .bind(p.life.shape)
        .bind(p.life.scale_hours)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for mm in &m.machine_models {
        sqlx::query(
            "INSERT INTO machine_models (id, tenant_id, name, downtime_cost_cents_per_hour,
               unplanned_downtime_hours, components_json)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(mm.id.as_str())
        .bind(tenant)
        .bind(&mm.name)
        .bind(mm.downtime_cost_cents_per_hour)
        .bind(mm.unplanned_downtime_hours)
        .bind(serde_json::to_string(&mm.components).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for machine in &m.machines {
        sqlx::query(
            "INSERT INTO machines (id, tenant_id, customer_id, site_id, model_id, serial, commissioned_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(machine.id.as_str())
        .bind(tenant)
        .bind(machine.customer.as_str())
        .bind(machine.site.as_str())
        .bind(machine.model.as_str())
        .bind(&machine.serial)
        .bind(machine.commissioned_at.0)
        .execute(&mut *tx)
        .await
        .unwrap();
        let model = m
            .model(&machine.model)
            .expect("the machine's model is in the manifest");
        for spec in &model.components {
            let installed = machine.installed_at(&spec.key);
            sqlx::query(
                "INSERT INTO components (machine_id, key, part_id, installed_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(machine.id.as_str())
            .bind(spec.key.as_str())
            .bind(spec.part.as_str())
            .bind(installed.0)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn with_database_swaps_only_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@db:6432/a?sslmode=disable", "x"),
        "postgresql://u:p@db:6432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://db", "x"), "postgres://db/x");
}
