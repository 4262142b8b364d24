//! Ingest throughput into SQLite and PostgreSQL, each against its engine's own bulk
//! load of the same rows, in the same run. `scripts/bench` runs it after the gateway's
//! and the sink's benchmarks.
//!
//! N telemetry windows (M machines × 4 channels) are stored these ways, each into a
//! fresh database with the server's schema:
//!
//! - **SQLite reference**: the rows as CSV, loaded by the `sqlite3` shell's `.import`
//!   into `telemetry_windows` (one transaction, no upsert, no validation, no HTTP): the
//!   engine's own bulk-load rate on this machine, now.
//! - **SQLite store**: `Store::store_batch` on batches of B windows, as the API handler
//!   calls it (a transaction per batch: de-duplication by batch id, upserting windows
//!   with the merge of the statistics, the channel index, the machines' last-seen).
//! - **HTTP**: `POST /api/v1/ingest` to a running server, batches of B as JSON with a
//!   gateway token: what a gateway gets (parsing, authentication, validation against
//!   the registry, the store, the answer).
//! - **PostgreSQL reference**: the same CSV rows through `COPY telemetry_windows FROM
//!   STDIN` (sqlx's copy-in) in one transaction.
//! - **PostgreSQL store**: `PgStore::store_batch` on batches of B, into another fresh
//!   database with the same fleet registered.
//!
//! The PostgreSQL part runs when a server answers at `WEARCAST_BENCH_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, as `scripts/services` leaves
//! it; the bench creates its databases there and drops them afterwards), and prints a
//! `skipped: ...` line otherwise or with `--no-postgres`. The SQLite part needs the
//! `sqlite3` shell and likewise says so when it is missing.
//!
//! ```text
//! cargo bench -p wearcast-server --bench ingest -- [--windows N] [--machines M] [--batch B] [--rounds K] [--no-postgres]
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use wearcast_protocol::registry::*;
use wearcast_protocol::{Clock, GatewayId, IngestBatch, SystemClock, UnixMs, WindowAggregate};
use wearcast_server::auth::{Role, TokenRequest, bearer_client};
use wearcast_server::config::ServerConfig;
use wearcast_server::store::postgres::{self, PgStore, redact_url};
use wearcast_server::store::{BatchSelection, Store, StoredBatch};
use wearcast_server::{Server, ServerDeps};

/// Fresh databases on a PostgreSQL server, dropped when done with, and the registry
/// rows for them: the PostgreSQL tests' own helpers.
#[allow(dead_code)]
#[path = "../tests/postgres/support.rs"]
mod support;

/// The server the PostgreSQL part uses unless `WEARCAST_BENCH_POSTGRES_URL` says
/// otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The columns the references load, in the CSV's order.
const COLUMNS: &str =
    "machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts";

const CHANNELS: [&str; 4] = [
    "spindle.vibration_rms",
    "spindle.temperature_c",
    "axis1.temperature_c",
    "op.speed_rpm",
];

struct Options {
    windows: usize,
    machines: usize,
    batch: usize,
    rounds: usize,
    postgres: bool,
}

fn options() -> Options {
    let mut o = Options {
        windows: 200_000,
        machines: 500,
        batch: 5_000,
        rounds: 2,
        postgres: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--windows" => o.windows = value("--windows").max(1),
            "--machines" => o.machines = value("--machines").max(1),
            "--batch" => o.batch = value("--batch").max(1),
            "--rounds" => o.rounds = value("--rounds").max(1),
            "--no-postgres" => o.postgres = false,
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    o
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("a valid id")
}

fn machine_id(i: usize) -> String {
    format!("m-{i:05}")
}

/// One tenant, one site, `machines` lathes with a spindle.
fn manifest(machines: usize, now: UnixMs) -> FleetManifest {
    FleetManifest {
        tenant: Tenant {
            id: id("bench"),
            name: "Bench Machines".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 9_000,
        },
        customers: vec![Customer {
            id: id("plant-co"),
            name: "Plant Co".into(),
            contact_email: None,
        }],
        sites: vec![Site {
            id: id("plant-1"),
            customer: id("plant-co"),
            name: "Plant 1".into(),
            timezone: "UTC".into(),
            region: "eu".into(),
            travel_cost_cents: 20_000,
            maintenance_windows: vec![RecurringWindow {
                weekday: Weekday::Sun,
                start: "02:00".into(),
                duration_hours: 4.0,
            }],
        }],
        parts: vec![Part {
            id: id("brg-6205"),
            name: "Bearing 6205".into(),
            price_cents: 45_000,
            lead_time_days: 1.0,
            labour_hours: 2.0,
            life: WeibullLife {
                shape: 3.0,
                scale_hours: 4_000.0,
            },
        }],
        machine_models: vec![MachineModel {
            id: id("lathe-l1"),
            name: "Lathe L1".into(),
            components: vec![ComponentSpec {
                key: id("spindle"),
                name: "Spindle".into(),
                part: id("brg-6205"),
                wear_channels: vec![WearChannelSpec {
                    quantity: "vibration_rms".into(),
                    unit: "mm/s".into(),
                    healthy: 1.0,
                    failure: 8.0,
                }],
            }],
            downtime_cost_cents_per_hour: 50_000,
            unplanned_downtime_hours: 16.0,
        }],
        machines: (0..machines)
            .map(|i| Machine {
                id: id(&machine_id(i)),
                customer: id("plant-co"),
                site: id("plant-1"),
                model: id("lathe-l1"),
                serial: format!("L1-{i:05}"),
                commissioned_at: now.plus_hours(-24.0 * 400.0),
                components: vec![],
            })
            .collect(),
        contracts: vec![],
    }
}

/// `n` one-minute windows, machine by machine, channel by channel, ending before
/// `now`; each round's windows start elsewhere in time so no round overwrites another.
fn windows(o: &Options, round: usize, now: UnixMs) -> Vec<WindowAggregate> {
    let per_series = o.windows.div_ceil(o.machines * CHANNELS.len());
    let first = now
        .plus_ms(-((round as i64 + 1) * (per_series as i64 + 10) * 60_000))
        .window_start(60_000);
    let mut out = Vec::with_capacity(o.windows);
    'all: for k in 0..per_series {
        for m in 0..o.machines {
            for (c, channel) in CHANNELS.iter().enumerate() {
                if out.len() == o.windows {
                    break 'all;
                }
                let start = first.plus_ms(k as i64 * 60_000);
                let mean = 10.0 + c as f64 + (k % 17) as f64 * 0.1 + m as f64 * 1e-3;
                out.push(WindowAggregate {
                    tenant: id("bench"),
                    machine: id(&machine_id(m)),
                    channel: id(channel),
                    start,
                    end: start.plus_ms(60_000),
                    count: 60,
                    mean,
                    min: mean - 0.5,
                    max: mean + 0.5,
                    std: 0.2,
                    last: mean + 0.1,
                    last_ts: start.plus_ms(59_000),
                });
            }
        }
    }
    out
}

fn batches(
    windows: &[WindowAggregate],
    size: usize,
    round: usize,
    now: UnixMs,
) -> Vec<IngestBatch> {
    windows
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| IngestBatch {
            batch_id: id(&format!("bench-{round}-{i:06}")),
            gateway: id::<GatewayId>("gw-bench"),
            created_at: now,
            windows: chunk.to_vec(),
            events: vec![],
            statuses: vec![],
        })
        .collect()
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

/// `windows` as CSV rows in [`COLUMNS`]' order (floats in Rust's shortest round-trip
/// form, so both engines load exactly the values the stores get).
fn csv(windows: &[WindowAggregate]) -> Vec<u8> {
    let mut out = Vec::with_capacity(windows.len() * 120);
    for w in windows {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            w.machine,
            w.channel,
            w.start.0,
            w.end.0,
            w.count,
            w.mean,
            w.m2(),
            w.min,
            w.max,
            w.last,
            w.last_ts.0
        )
        .unwrap();
    }
    out
}

/// The reference: `.import` of the rows as CSV into a fresh database with the schema.
async fn reference(dir: &std::path::Path, windows: &[WindowAggregate]) -> Duration {
    let db = dir.join("reference.db");
    Store::open_sqlite(&db).await.unwrap().close().await;
    let csv_file = dir.join("windows.csv");
    std::fs::write(&csv_file, csv(windows)).unwrap();
    let started = Instant::now();
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            ".import --csv {} telemetry_windows",
            csv_file.display()
        ))
        .output()
        .expect("the sqlite3 shell (apt-get install sqlite3)");
    let took = started.elapsed();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 .import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[tokio::main]
async fn main() {
    let o = options();
    println!(
        "ingest: {} windows ({} machines x {} channels) in batches of {}, {} rounds",
        o.windows,
        o.machines,
        CHANNELS.len(),
        o.batch,
        o.rounds
    );
    let now = SystemClock.now();
    if Command::new("sqlite3").arg("--version").output().is_err() {
        println!("ingest into SQLite: skipped: needs the sqlite3 shell (apt-get install sqlite3)");
    } else {
        sqlite(&o, now).await;
    }
    postgres(&o, now).await;
}

/// How long storing `batches` one after the other with `store` takes, each whole, as the
/// API handler calls it (none may be a duplicate).
async fn time_stores(
    batches: &[IngestBatch],
    store: impl AsyncFn(&IngestBatch, &BatchSelection) -> StoredBatch,
) -> Duration {
    let started = Instant::now();
    for b in batches {
        let keep = BatchSelection {
            windows: (0..b.windows.len()).collect(),
            ..BatchSelection::default()
        };
        assert!(!store(b, &keep).await.duplicate);
    }
    started.elapsed()
}

/// SQLite: `.import` against the store and HTTP, round by round.
async fn sqlite(o: &Options, now: UnixMs) {
    let mut ratios = Vec::new();
    for round in 0..o.rounds {
        let dir = tempfile::tempdir().unwrap();
        let rows = windows(o, round, now);
        let reference = reference(dir.path(), &rows).await;

        // The store, as the API handler calls it.
        let store_dir = dir.path().join("store");
        let server = Server::start(
            ServerConfig {
                http_listen: "127.0.0.1:0".into(),
                data_dir: store_dir,
                analysis_interval: Duration::from_secs(3600),
                ..ServerConfig::default()
            },
            ServerDeps {
                clock: Arc::new(SystemClock),
                metrics: None,
            },
        )
        .await
        .unwrap();
        server.import(&manifest(o.machines, now)).await.unwrap();
        let store = server.store().clone();
        let direct = batches(&rows, o.batch, round, now);
        let store_took = time_stores(&direct, async |b, keep| {
            store.store_batch(b, keep, now, false).await.unwrap()
        })
        .await;

        // HTTP into the running server, into other windows of time.
        let token = store
            .issue_token_now(&TokenRequest::new(Role::Gateway))
            .await
            .unwrap();
        let url = format!("http://{}/api/v1/ingest", server.local_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        let http_rows = windows(o, round + o.rounds, now);
        let bodies: Vec<Vec<u8>> = batches(&http_rows, o.batch, round + o.rounds, now)
            .iter()
            .map(|b| serde_json::to_vec(b).unwrap())
            .collect();
        let client = bearer_client(&token.secret);
        let started = Instant::now();
        for body in bodies {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert!(
                status.is_success(),
                "{status}: {}",
                resp.text().await.unwrap()
            );
        }
        let http_took = started.elapsed();
        stop.cancel();
        task.await.unwrap().unwrap();

        let (r, s, h) = (
            rate(rows.len(), reference),
            rate(rows.len(), store_took),
            rate(http_rows.len(), http_took),
        );
        println!(
            "round {}: reference .import {:>9.0} windows/s | store {:>9.0} windows/s (ratio {:.2}) | HTTP {:>9.0} windows/s (ratio {:.2})",
            round + 1,
            r,
            s,
            s / r,
            h,
            h / r
        );
        ratios.push((s / r, h / r));
    }
    let worst_store = ratios.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let worst_http = ratios.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    println!(
        "ingest: worst ratio to the bulk load: store {worst_store:.2}, HTTP {worst_http:.2} (acceptance >= 0.50)"
    );
}

/// PostgreSQL: `COPY` against `PgStore::store_batch`, round by round, on the server at
/// `WEARCAST_BENCH_POSTGRES_URL`.
async fn postgres(o: &Options, now: UnixMs) {
    if !o.postgres {
        println!("ingest into PostgreSQL: skipped: --no-postgres");
        return;
    }
    let url = std::env::var("WEARCAST_BENCH_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string());
    match support::connect_to(&url).await {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(error) => {
            println!(
                "ingest into PostgreSQL: skipped: no server answers at {}: {error} \
                 (scripts/services starts the local one; WEARCAST_BENCH_POSTGRES_URL names another)",
                redact_url(&url)
            );
            return;
        }
    }
    let mut ratios = Vec::new();
    for round in 0..o.rounds {
        let rows = windows(o, round, now);
        let reference = copy(&url, &rows).await;
        let store = pg_store(o, &url, &rows, round, now).await;
        let (r, s) = (rate(rows.len(), reference), rate(rows.len(), store));
        println!(
            "round {}: PostgreSQL reference COPY {:>9.0} windows/s | PgStore {:>9.0} windows/s (ratio {:.2})",
            round + 1,
            r,
            s,
            s / r
        );
        ratios.push(s / r);
    }
    let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    println!("ingest into PostgreSQL: worst ratio to COPY: store {worst:.2} (acceptance >= 0.30)");
}

/// The reference: `rows` as CSV through `COPY ... FROM STDIN` in one transaction, into
/// a fresh database with the schema (dropped afterwards).
async fn copy(url: &str, rows: &[WindowAggregate]) -> Duration {
    let db = support::TestDb::create_named(url, "wearcast_bench").await;
    let pool = postgres::connect(&db.url).await.unwrap();
    let data = csv(rows);
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY telemetry_windows ({COLUMNS}) FROM STDIN (FORMAT csv)"
        ))
        .await
        .unwrap();
    // CopyData messages need not end at rows; 1 MiB each.
    for piece in data.chunks(1 << 20) {
        copy.send(piece).await.unwrap();
    }
    let copied = copy.finish().await.unwrap();
    tx.commit().await.unwrap();
    let took = started.elapsed();
    assert_eq!(copied, rows.len() as u64);
    pool.close().await;
    took
}

/// `PgStore::store_batch` on `rows` in batches, into a fresh database with the fleet
/// registered (dropped afterwards).
async fn pg_store(
    o: &Options,
    url: &str,
    rows: &[WindowAggregate],
    round: usize,
    now: UnixMs,
) -> Duration {
    let db = support::TestDb::create_named(url, "wearcast_bench").await;
    let store = PgStore::open(&db.url).await.unwrap();
    // Planned stops do not matter to ingest, and the registry helper writes none.
    let mut fleet = manifest(o.machines, now);
    fleet
        .sites
        .iter_mut()
        .for_each(|s| s.maintenance_windows.clear());
    support::register(store.pool(), &fleet).await;
    let batches = batches(rows, o.batch, round, now);
    let took = time_stores(&batches, async |b, keep| {
        store.store_batch(b, keep, now, false).await.unwrap()
    })
    .await;
    store.pool().close().await;
    took
}
