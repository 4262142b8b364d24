//! `PgStore::store_batch` against `Store::store_batch`: every scenario stores the same
//! batches on SQLite (a fresh file) and PostgreSQL (a fresh database), both registries
//! made from one manifest. The two answers must be equal, and so must everything the
//! two engines hold afterwards, read back with the same SELECTs ([`Engines::contents`]);
//! each scenario then checks on both what it must be (merged statistics against those
//! of the union of the samples, components after a failure and a replacement, ...).
//! The last tests race two PostgreSQL replicas on one batch.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};
use tempfile::TempDir;
use wearcast_protocol::event::{EventKind, EventPayload, MachineEvent, MachineState, StatusUpdate};
use wearcast_protocol::registry::*;
use wearcast_protocol::{IngestBatch, UnixMs, WindowAggregate};
use wearcast_server::store::postgres::PgStore;
use wearcast_server::store::{BatchSelection, Store, StoredBatch};

use crate::support::{self, TestDb};

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// Two lathes, m-1 and m-2, commissioned at T0, each with a spindle and a belt; m-1's
/// belt was installed a day later.
pub(crate) fn manifest() -> FleetManifest {
    let part = |part: &str| Part {
        id: id(part),
        name: part.to_string(),
        price_cents: 10_000,
        lead_time_days: 2.0,
        labour_hours: 1.0,
        life: WeibullLife {
            shape: 2.0,
            scale_hours: 5_000.0,
        },
    };
    let spec = |key: &str, part: &str| ComponentSpec {
        key: id(key),
        name: key.to_string(),
        part: id(part),
        wear_channels: vec![],
    };
    FleetManifest {
        tenant: Tenant {
            id: id("acme"),
            name: "Acme".into(),
            currency: "EUR".into(),
            labour_rate_cents_per_hour: 9_000,
        },
        customers: vec![Customer {
            id: id("cust-1"),
            name: "Customer 1".into(),
            contact_email: None,
        }],
        sites: vec![Site {
            id: id("site-1"),
            customer: id("cust-1"),
            name: "Site 1".into(),
            timezone: "UTC".into(),
            region: "eu".into(),
            travel_cost_cents: 10_000,
            maintenance_windows: vec![],
        }],
        parts: vec![part("brg-1"), part("belt-1")],
        machine_models: vec![MachineModel {
            id: id("lathe"),
            name: "Lathe".into(),
            components: vec![spec("spindle", "brg-1"), spec("belt", "belt-1")],
            downtime_cost_cents_per_hour: 50_000,
            unplanned_downtime_hours: 8.0,
        }],
        machines: ["m-1", "m-2"]
            .into_iter()
            .map(|m| Machine {
                id: id(m),
                customer: id("cust-1"),
                site: id("site-1"),
                model: id("lathe"),
                serial: format!("S-{m}"),
                commissioned_at: UnixMs(T0),
                components: if m == "m-1" {
                    vec![InstalledComponent {
                        key: id("belt"),
                        installed_at: UnixMs(T0 + DAY),
                    }]
                } else {
                    vec![]
                },
            })
            .collect(),
        contracts: vec![],
    }
}

/// Count, mean, M2, min, max, last value and its time of `samples` (time, value),
/// computed directly. The last is the latest sample, the later-listed of a tie.
#[derive(Debug)]
struct Stats {
    n: i64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts: i64,
}

fn stats(samples: &[(i64, f64)]) -> Stats {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let mut last = samples[0];
    for &s in samples {
        if s.0 >= last.0 {
            last = s;
        }
    }
    Stats {
        n: samples.len() as i64,
        mean,
        m2: samples.iter().map(|s| (s.1 - mean).powi(2)).sum(),
        min: samples.iter().map(|s| s.1).fold(f64::INFINITY, f64::min),
        max: samples
            .iter()
            .map(|s| s.1)
            .fold(f64::NEG_INFINITY, f64::max),
        last: last.1,
        last_ts: last.0,
    }
}

/// The one-minute window from `start` of `samples`, as a gateway sends it.
fn window(machine: &str, channel: &str, start: i64, samples: &[(i64, f64)]) -> WindowAggregate {
    let s = stats(samples);
    WindowAggregate {
        tenant: id("acme"),
        machine: id(machine),
        channel: id(channel),
        start: UnixMs(start),
        end: UnixMs(start + MINUTE),
        count: s.n as u64,
        mean: s.mean,
        min: s.min,
        max: s.max,
        std: if s.n > 1 {
            (s.m2 / (s.n - 1) as f64).sqrt()
        } else {
            0.0
        },
        last: s.last,
        last_ts: UnixMs(s.last_ts),
    }
}

fn batch(
    batch_id: &str,
    windows: Vec<WindowAggregate>,
    events: Vec<MachineEvent>,
    statuses: Vec<StatusUpdate>,
) -> IngestBatch {
    IngestBatch {
        batch_id: id(batch_id),
        gateway: id("gw-1"),
        created_at: UnixMs(T0),
        windows,
        events,
        statuses,
    }
}

fn keep_all(b: &IngestBatch) -> BatchSelection {
    BatchSelection {
        windows: (0..b.windows.len()).collect(),
        events: (0..b.events.len()).collect(),
        statuses: (0..b.statuses.len()).collect(),
    }
}

fn event(
    machine: &str,
    ts: i64,
    kind: EventKind,
    component: Option<&str>,
    code: Option<&str>,
) -> MachineEvent {
    MachineEvent {
        tenant: id("acme"),
        machine: id(machine),
        event: EventPayload {
            ts: UnixMs(ts),
            seq: None,
            kind,
            component: component.map(id),
            code: code.map(String::from),
            message: Some(format!("{} at {ts}", kind.as_str())),
        },
    }
}

fn status(machine: &str, state: MachineState, at: i64) -> StatusUpdate {
    StatusUpdate {
        tenant: id("acme"),
        machine: id(machine),
        state,
        at: UnixMs(at),
    }
}

// ---- values read back from either engine ------------------------------------------

/// One column's value as the store decodes it.
#[derive(Clone, Debug)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Val {
    fn rank(&self) -> u8 {
        match self {
            Val::Null => 0,
            Val::Int(_) => 1,
            Val::Real(_) => 2,
            Val::Text(_) => 3,
        }
    }

    /// A total order, for sorting rows the same way whatever the engine's collation.
    fn order(&self, other: &Val) -> Ordering {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => a.cmp(b),
            (Val::Real(a), Val::Real(b)) => a.total_cmp(b),
            (Val::Text(a), Val::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Equal, reals within 1e-9 relative.
    fn close(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Real(a), Val::Real(b)) => close(*a, *b),
            _ => self.order(other) == Ordering::Equal,
        }
    }

    fn int(&self) -> i64 {
        match self {
            Val::Int(v) => *v,
            other => panic!("{other:?} is not an integer"),
        }
    }

    fn opt_int(&self) -> Option<i64> {
        match self {
            Val::Null => None,
            other => Some(other.int()),
        }
    }

    fn real(&self) -> f64 {
        match self {
            Val::Real(v) => *v,
            other => panic!("{other:?} is not a real"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Val::Text(v) => v,
            other => panic!("{other:?} is not text"),
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Column `i` of `row`, by the type the engine reports for it (SQLite's storage
/// classes, PostgreSQL's types): anything but a 64-bit integer, a double, text or NULL
/// is a difference in itself.
fn val<'r, R>(row: &'r R, i: usize) -> Val
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let raw = row.try_get_raw(i).unwrap();
    if raw.is_null() {
        return Val::Null;
    }
    let class = raw.type_info().name().to_string();
    match class.as_str() {
        "INTEGER" | "INT8" => Val::Int(row.get(i)),
        "REAL" | "FLOAT8" => Val::Real(row.get(i)),
        "TEXT" => Val::Text(row.get(i)),
        other => panic!("column {i}: unexpected type {other}"),
    }
}

/// `rows` as values, sorted.
fn values<R>(rows: &[R]) -> Vec<Vec<Val>>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    sorted(
        rows.iter()
            .map(|r| (0..r.len()).map(|i| val(r, i)).collect())
            .collect(),
    )
}

/// What ingest writes, table by table, read with the same SELECT on both engines (the
/// key columns first; `machine_events.id` left out: PostgreSQL's identity also counts
/// the rows ON CONFLICT skipped, SQLite's rowid does not).
const CONTENTS: [(&str, &str); 8] = [
    (
        "ingested_batches",
        "SELECT batch_id, gateway_id, received_at, windows, events FROM ingested_batches",
    ),
    (
        "telemetry_windows",
        "SELECT machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts
         FROM telemetry_windows",
    ),
    (
        "machine_channels",
        "SELECT machine_id, channel FROM machine_channels",
    ),
    (
        "machine_events",
        "SELECT machine_id, ts, kind, component, code, message, batch_id FROM machine_events",
    ),
    (
        "components",
        "SELECT machine_id, key, part_id, installed_at, failed_at FROM components",
    ),
    (
        "component_lives",
        "SELECT machine_id, component, installed_at, part_id, ended_at, end_reason, as_found,
           work_order_id FROM component_lives",
    ),
    (
        "component_health",
        "SELECT machine_id, component, computed_at, status FROM component_health",
    ),
    (
        "machines",
        "SELECT id, status, status_at, last_seen_at, data_version FROM machines",
    ),
];

/// Rows per table, sorted.
#[derive(Debug)]
struct Contents(BTreeMap<&'static str, Vec<Vec<Val>>>);

fn text(s: &str) -> Val {
    Val::Text(s.to_string())
}

impl Contents {
    fn table(&self, name: &str) -> &[Vec<Val>] {
        &self.0[name]
    }

    /// The row of `table` whose leading columns are `key`.
    fn row(&self, table: &str, key: &[Val]) -> Option<&[Val]> {
        self.table(table)
            .iter()
            .find(|row| row.iter().zip(key).all(|(a, b)| a.close(b)))
            .map(Vec::as_slice)
    }

    fn machine(&self, machine: &str) -> &[Val] {
        self.row("machines", &[text(machine)]).unwrap()
    }

    /// (installed_at, failed_at) of a component.
    fn component(&self, machine: &str, key: &str) -> (i64, Option<i64>) {
        let row = self.row("components", &[text(machine), text(key)]).unwrap();
        (row[3].int(), row[4].opt_int())
    }

    /// (machine, component, installed_at, ended_at, end_reason) of every life.
    fn lives(&self) -> Vec<(String, String, i64, i64, String)> {
        self.table("component_lives")
            .iter()
            .map(|r| {
                (
                    r[0].text().to_string(),
                    r[1].text().to_string(),
                    r[2].int(),
                    r[4].int(),
                    r[5].text().to_string(),
                )
            })
            .collect()
    }

    fn has_health(&self, machine: &str, component: &str) -> bool {
        self.row("component_health", &[text(machine), text(component)])
            .is_some()
    }
}

fn sorted(mut rows: Vec<Vec<Val>>) -> Vec<Vec<Val>> {
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.order(y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    rows
}

/// Panics, naming the first difference, unless `a` and `b` hold the same rows.
fn assert_same_contents(a: &Contents, b: &Contents) {
    for (table, _) in CONTENTS {
        let (x, y) = (a.table(table), b.table(table));
        assert_eq!(
            x.len(),
            y.len(),
            "{table}: SQLite has {} rows, PostgreSQL {}:\n  SQLite {x:?}\n  PostgreSQL {y:?}",
            x.len(),
            y.len()
        );
        for (rx, ry) in x.iter().zip(y) {
            assert!(
                rx.len() == ry.len() && rx.iter().zip(ry).all(|(u, v)| u.close(v)),
                "{table} differs:\n  SQLite     {rx:?}\n  PostgreSQL {ry:?}"
            );
        }
    }
}

fn assert_same_window(a: &WindowAggregate, b: &WindowAggregate) {
    let same = (
        &a.tenant, &a.machine, &a.channel, a.start, a.end, a.count, a.last_ts,
    ) == (
        &b.tenant, &b.machine, &b.channel, b.start, b.end, b.count, b.last_ts,
    ) && [
        (a.mean, b.mean),
        (a.min, b.min),
        (a.max, b.max),
        (a.std, b.std),
        (a.last, b.last),
    ]
    .iter()
    .all(|&(x, y)| close(x, y));
    assert!(
        same,
        "stored window differs:\n  SQLite     {a:?}\n  PostgreSQL {b:?}"
    );
}

/// Panics unless the two engines answered the same.
fn assert_same_answer(lite: &StoredBatch, pg: &StoredBatch) {
    assert_eq!(
        (lite.duplicate, lite.windows, lite.events, lite.statuses),
        (pg.duplicate, pg.windows, pg.events, pg.statuses),
        "the answers differ"
    );
    assert_eq!(
        lite.stored_windows.len(),
        pg.stored_windows.len(),
        "stored windows"
    );
    for (a, b) in lite.stored_windows.iter().zip(&pg.stored_windows) {
        assert_same_window(a, b);
    }
}

// ---- the two engines --------------------------------------------------------------

/// The same registry on SQLite and PostgreSQL, each in a store of its own.
pub(crate) struct Engines {
    pub(crate) sqlite: Store,
    /// A second pool on the SQLite file, for fixtures and reading back.
    lite: SqlitePool,
    pub(crate) pg: PgStore,
    _db: TestDb,
    _dir: TempDir,
}

impl Engines {
    /// `None` (after a SKIP line) without a PostgreSQL server.
    pub(crate) async fn open() -> Option<Engines> {
        let server = support::server().await?;
        let db = TestDb::create(&server).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wearcast.db");
        let sqlite = Store::open_sqlite(&file).await.unwrap();
        let lite = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file))
            .await
            .unwrap();
        let pg = PgStore::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let m = manifest();
        sqlite.import_manifest(&m).await.unwrap();
        support::register(pg.pool(), &m).await;
        Some(Engines {
            sqlite,
            lite,
            pg,
            _db: db,
            _dir: dir,
        })
    }

    /// Stores all of `b` on both engines at `now`; the answers must be the same.
    async fn store(&self, b: &IngestBatch, now: i64, want_windows: bool) -> StoredBatch {
        let keep = keep_all(b);
        let lite = self
            .sqlite
            .store_batch(b, &keep, UnixMs(now), want_windows)
            .await
            .unwrap();
        let pg = self
            .pg
            .store_batch(b, &keep, UnixMs(now), want_windows)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.batch_id));
        assert_same_answer(&lite, &pg);
        pg
    }

    /// Stores a batch of `events` only, on both engines.
    async fn store_events(&self, batch_id: &str, events: Vec<MachineEvent>, now: i64) {
        self.store(&batch(batch_id, vec![], events, vec![]), now, false)
            .await;
    }

    /// Runs `sql` (literal values only) on both engines: fixtures ingest has no call for.
    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&self.lite)
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(self.pg.pool())
            .await
            .unwrap();
    }

    /// Panics unless on both engines `read` finds in each machine's row what `want`
    /// says of it.
    async fn expect_machines<T>(&self, read: impl Fn(&[Val]) -> T, want: &[(&str, T)])
    where
        T: PartialEq + std::fmt::Debug,
    {
        for (engine, c) in self.contents().await {
            for (machine, wanted) in want {
                assert_eq!(&read(c.machine(machine)), wanted, "{engine}: {machine}");
            }
        }
    }

    /// What both engines hold, which must be the same: SQLite's and PostgreSQL's, for
    /// the scenario's own checks on each.
    async fn contents(&self) -> [(&'static str, Contents); 2] {
        let mut lite = BTreeMap::new();
        let mut pg = BTreeMap::new();
        for (table, sql) in CONTENTS {
            let rows = sqlx::query(sql).fetch_all(&self.lite).await.unwrap();
            lite.insert(table, values(&rows));
            let rows = sqlx::query(sql).fetch_all(self.pg.pool()).await.unwrap();
            pg.insert(table, values(&rows));
        }
        let (lite, pg) = (Contents(lite), Contents(pg));
        assert_same_contents(&lite, &pg);
        [("SQLite", lite), ("PostgreSQL", pg)]
    }
}

// ---- windows ----------------------------------------------------------------------

/// A small deterministic generator of sample values and times.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

type Key = (String, String, i64);

/// Windows of random samples, with every sample sent per window key, and the samples of
/// each window in the order the windows were made.
struct Sender {
    rng: Lcg,
    sent: BTreeMap<Key, Vec<(i64, f64)>>,
    log: Vec<Vec<(i64, f64)>>,
}

impl Sender {
    fn new() -> Self {
        Sender {
            rng: Lcg(7),
            sent: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// A window of 1 to 20 new samples under the key (machine, channel, start).
    fn window(&mut self, machine: &str, channel: &str, start: i64) -> WindowAggregate {
        let n = 1 + self.rng.next() % 20;
        let samples: Vec<(i64, f64)> = (0..n)
            .map(|_| {
                let ts = start + (self.rng.next() % MINUTE as u64) as i64;
                let value = 40.0 + (self.rng.next() % 10_000) as f64 / 100.0;
                (ts, value)
            })
            .collect();
        self.exactly(machine, channel, start, &samples)
    }

    /// The window of `samples` under the key (machine, channel, start).
    fn exactly(
        &mut self,
        machine: &str,
        channel: &str,
        start: i64,
        samples: &[(i64, f64)],
    ) -> WindowAggregate {
        self.sent
            .entry((machine.to_string(), channel.to_string(), start))
            .or_default()
            .extend(samples);
        self.log.push(samples.to_vec());
        window(machine, channel, start, samples)
    }
}

const CHANNELS: [&str; 3] = ["spindle.temp", "spindle.vib", "belt.tension"];

/// Two batches whose window keys overlap: the first has 901 windows (more than SQLite
/// puts in one statement) with three keys sent twice in it (the second time near, and
/// across a statement boundary from, the first), the second sends about 300 of the first's
/// keys again (two of them twice) and about 150 new ones. Two keys get a part whose last
/// sample is as late as the last one stored before (the later part's value wins), once
/// across the batches, once within the second.
fn overlapping_batches(sender: &mut Sender) -> [IngestBatch; 2] {
    let key = |i: i64| {
        (
            if i % 2 == 0 { "m-1" } else { "m-2" },
            CHANNELS[(i / 2 % 3) as usize],
            T0 + (i / 6) * MINUTE,
        )
    };
    let mut first = Vec::new();
    for i in 0..897 {
        let (m, c, start) = key(i);
        first.push(sender.window(m, c, start));
        if [3, 5, 450].contains(&i) {
            let (m, c, start) = key(if i == 450 { 2 } else { i - 1 });
            first.push(sender.window(m, c, start));
        }
    }
    let tie = T0 + 1_000 * MINUTE;
    first.push(sender.exactly(
        "m-1",
        "spindle.temp",
        tie,
        &[(tie + 10, 1.0), (tie + 40_000, 2.0)],
    ));
    let mut second = Vec::new();
    for i in (0..300).map(|k| k * 3).chain(900..1050) {
        let (m, c, start) = key(i);
        second.push(sender.window(m, c, start));
        if i == 30 {
            second.push(sender.window(m, c, start));
        }
    }
    second.push(sender.exactly("m-1", "spindle.temp", tie, &[(tie + 40_000, 3.0)]));
    second.push(sender.exactly(
        "m-2",
        "spindle.temp",
        tie,
        &[(tie + 5, 4.0), (tie + 50_000, 5.0)],
    ));
    second.push(sender.exactly(
        "m-2",
        "spindle.temp",
        tie,
        &[(tie + 50_000, 6.0), (tie + 7, 7.0)],
    ));
    [
        batch("b-windows-1", first, vec![], vec![]),
        batch("b-windows-2", second, vec![], vec![]),
    ]
}

/// The engines, and [`overlapping_batches`] with what they send.
async fn engines_and_overlapping_batches() -> Option<(Engines, Sender, [IngestBatch; 2])> {
    let e = Engines::open().await?;
    let mut sender = Sender::new();
    let batches = overlapping_batches(&mut sender);
    Some((e, sender, batches))
}

/// Each stored window must hold the statistics of all the samples sent under its key.
fn check_windows_against_samples(
    engine: &str,
    c: &Contents,
    sent: &BTreeMap<Key, Vec<(i64, f64)>>,
) {
    let rows = c.table("telemetry_windows");
    assert_eq!(rows.len(), sent.len(), "{engine}: one row per window key");
    for row in rows {
        let key = (
            row[0].text().to_string(),
            row[1].text().to_string(),
            row[2].int(),
        );
        let s = stats(&sent[&key]);
        let got = (
            row[3].int(),
            row[4].int(),
            row[5].real(),
            row[6].real(),
            row[7].real(),
            row[8].real(),
            row[9].real(),
            row[10].int(),
        );
        assert!(
            got.0 == key.2 + MINUTE
                && got.1 == s.n
                && close(got.2, s.mean)
                && close(got.3, s.m2)
                && (got.4, got.5, got.6, got.7) == (s.min, s.max, s.last, s.last_ts),
            "{engine}: window {key:?} holds {got:?}, its samples give {s:?}"
        );
    }
}

// ---- the scenarios ------------------------------------------------------------------

/// (a) A batch stored again is a duplicate and changes nothing.
#[tokio::test]
async fn a_batch_stored_again_is_a_duplicate_and_changes_nothing() {
    let Some(e) = Engines::open().await else {
        return;
    };
    let mut sender = Sender::new();
    let b = batch(
        "b-1",
        vec![
            sender.window("m-1", "spindle.temp", T0),
            sender.window("m-2", "spindle.temp", T0),
        ],
        vec![
            event(
                "m-1",
                T0 + 3 * DAY,
                EventKind::Failure,
                Some("spindle"),
                None,
            ),
            event("m-2", T0 + 5, EventKind::Fault, None, Some("E7")),
        ],
        vec![status("m-1", MachineState::Online, T0 + 10)],
    );
    let first = e.store(&b, T0 + 4 * DAY, false).await;
    assert!(!first.duplicate);
    assert_eq!((first.windows, first.events, first.statuses), (2, 2, 1));
    let before = e.contents().await;
    for (engine, c) in &before {
        assert_eq!(c.table("ingested_batches").len(), 1, "{engine}");
        assert_eq!(c.table("telemetry_windows").len(), 2, "{engine}");
        assert_eq!(c.table("machine_events").len(), 2, "{engine}");
        assert_eq!(c.lives().len(), 1, "{engine}");
    }

    // Again, later and asking for the stored windows: nothing is stored.
    let again = e.store(&b, T0 + 5 * DAY, true).await;
    assert_eq!(
        again,
        StoredBatch {
            duplicate: true,
            ..StoredBatch::default()
        }
    );
    let after = e.contents().await;
    for ((engine, before), (_, after)) in before.iter().zip(&after) {
        for (table, _) in CONTENTS {
            assert_eq!(
                format!("{:?}", before.table(table)),
                format!("{:?}", after.table(table)),
                "{engine}: {table} changed"
            );
        }
    }
}

/// (b) Windows with keys seen before, in the same batch or an earlier one, merge into
/// the statistics of all their samples, on both engines alike.
#[tokio::test]
async fn overlapping_windows_merge_into_the_statistics_of_all_their_samples() {
    let Some((e, sender, [first, second])) = engines_and_overlapping_batches().await else {
        return;
    };
    e.store(&first, T0 + DAY, false).await;
    e.store(&second, T0 + DAY, false).await;
    let merged = sender.sent.values().filter(|s| s.len() > 20).count();
    for (engine, c) in e.contents().await {
        check_windows_against_samples(engine, &c, &sender.sent);
        // Merges happened: keys with more samples than one window carries.
        assert!(merged >= 100, "{engine}: only {merged} merged keys");
        assert_eq!(
            c.table("machine_channels").len(),
            6,
            "{engine}: {:?}",
            c.table("machine_channels")
        );
    }
}

/// (f) Asked for, the stored windows come back in batch order, each as its row reads
/// after its own upsert (the first of a key twice in a batch not yet merged with the
/// second), the same on both engines.
#[tokio::test]
async fn the_stored_windows_are_the_same_on_both_engines() {
    let Some((e, sender, batches)) = engines_and_overlapping_batches().await else {
        return;
    };
    // The samples of each key so far, window by window in the order they were made
    // (which is the order of the batches' windows).
    let mut so_far: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
    let mut made = sender.log.iter();
    for b in &batches {
        let answer = e.store(b, T0 + DAY, true).await;
        assert_eq!(answer.stored_windows.len(), b.windows.len());
        for (sent, stored) in b.windows.iter().zip(&answer.stored_windows) {
            let key = (
                sent.machine.to_string(),
                sent.channel.to_string(),
                sent.start.0,
            );
            let samples = made.next().unwrap();
            assert_eq!(
                &window(&key.0, &key.1, key.2, samples),
                sent,
                "the log is in order"
            );
            so_far.entry(key.clone()).or_default().extend(samples);
            let s = stats(&so_far[&key]);
            let std = if s.n > 1 {
                (s.m2 / (s.n - 1) as f64).sqrt()
            } else {
                0.0
            };
            assert!(
                (&stored.machine, &stored.channel, stored.start)
                    == (&sent.machine, &sent.channel, sent.start)
                    && stored.count == s.n as u64
                    && close(stored.mean, s.mean)
                    && (stored.std - std).abs() <= 1e-9 * std.max(1.0)
                    && (stored.min, stored.max, stored.last, stored.last_ts.0)
                        == (s.min, s.max, s.last, s.last_ts),
                "stored {stored:?}, the samples so far give {s:?}"
            );
        }
    }
    assert!(made.next().is_none());
    // The batches hold what this is about: keys sent twice in one batch.
    for (b, twice) in batches.iter().zip([3, 2]) {
        let mut keys: Vec<(&str, &str, i64)> = b
            .windows
            .iter()
            .map(|w| (w.machine.as_str(), w.channel.as_str(), w.start.0))
            .collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(all - keys.len(), twice, "{}", b.batch_id);
    }
    e.contents().await;
}

/// (c) A failure marks the component failed and ends its life as a failure; a later
/// replacement starts a new life (keeping the failed life as it is) and drops the
/// health estimate; a replacement a completed work order already recorded changes
/// nothing; an event delivered again, in the same batch or another, is stored once.
#[tokio::test]
async fn failures_and_replacements_change_components_and_lives_alike() {
    let Some(e) = Engines::open().await else {
        return;
    };
    // Health estimates the analysis would have written, and a completed work order
    // that replaced m-2's belt at tw.
    let tw = T0 + 20 * DAY;
    e.exec(&format!(
        "INSERT INTO component_health (machine_id, component, computed_at, data_version, status,
           health_index, estimate_json)
         VALUES ('m-1', 'spindle', {T0}, 0, 'critical', 0.9, '{{}}'),
                ('m-1', 'belt', {T0}, 0, 'healthy', 0.1, '{{}}'),
                ('m-2', 'belt', {T0}, 0, 'degrading', 0.6, '{{}}'),
                ('m-2', 'spindle', {T0}, 0, 'healthy', 0.2, '{{}}');
         INSERT INTO offers (id, tenant_id, customer_id, site_id, machine_id, status, urgent,
           window_start, window_end, p_fail_before_window, p_fail_before_next, risk_tolerance,
           parts_cents, labour_cents, travel_cents, coverage_cents, total_cents,
           cost_of_waiting_cents, currency, explanation, created_at, updated_at)
         VALUES ('of-1', 'acme', 'cust-1', 'site-1', 'm-2', 'completed', 0, {w0}, {w1}, 0.1, 0.2,
           0.05, 10000, 9000, 10000, 0, 29000, 50000, 'EUR', 'fixture', {w0}, {tw});
         INSERT INTO work_orders (id, tenant_id, offer_id, machine_id, site_id, status,
           window_start, window_end, created_at, updated_at, completed_at)
         VALUES ('wo-1', 'acme', 'of-1', 'm-2', 'site-1', 'completed', {w0}, {w1}, {w0}, {tw}, {tw});
         INSERT INTO work_order_components (work_order_id, component, part_id)
         VALUES ('wo-1', 'belt', 'belt-1');",
        w0 = tw - DAY,
        w1 = tw + DAY,
    ))
    .await;

    let t1 = T0 + 5 * DAY;
    let failure = event("m-1", t1, EventKind::Failure, Some("spindle"), None);
    // The same failure twice in one batch, and a fault.
    let b1 = batch(
        "b-events-1",
        vec![],
        vec![
            failure.clone(),
            failure.clone(),
            event("m-1", t1 + 1, EventKind::Fault, None, Some("E1")),
        ],
        vec![],
    );
    let answer = e.store(&b1, t1 + HOUR, false).await;
    assert_eq!(answer.events, 3);
    for (engine, c) in e.contents().await {
        assert_eq!(c.component("m-1", "spindle").1, Some(t1), "{engine}");
        assert_eq!(
            c.lives(),
            [("m-1".into(), "spindle".into(), T0, t1, "failure".into())],
            "{engine}"
        );
        assert_eq!(c.table("machine_events").len(), 2, "{engine}");
        assert!(c.has_health("m-1", "spindle"), "{engine}");
    }

    // The replacement: a new life from t2, the failed life kept as a failure.
    let t2 = t1 + 2 * HOUR;
    let replaced = event("m-1", t2, EventKind::PartReplaced, Some("spindle"), None);
    e.store_events("b-events-2", vec![replaced.clone()], t2)
        .await;
    for (engine, c) in e.contents().await {
        assert_eq!(c.component("m-1", "spindle"), (t2, None), "{engine}");
        assert_eq!(
            c.lives(),
            [("m-1".into(), "spindle".into(), T0, t1, "failure".into())],
            "{engine}"
        );
        assert!(!c.has_health("m-1", "spindle"), "{engine}");
        assert!(c.has_health("m-1", "belt"), "{engine}");
    }

    // Both events delivered again, in another batch: stored once, the machine not
    // touched again.
    let before = e.contents().await;
    e.store_events("b-events-3", vec![failure, replaced], t2)
        .await;
    for ((engine, before), (_, after)) in before.iter().zip(&e.contents().await) {
        assert_eq!(after.table("machine_events").len(), 3, "{engine}");
        assert_eq!(
            format!("{:?}", before.machine("m-1")),
            format!("{:?}", after.machine("m-1")),
            "{engine}: the redelivered events touched m-1"
        );
    }

    // A replacement with no failure before it ends the life as replaced (m-1's belt,
    // installed a day after commissioning). m-2's belt was replaced by work order wo-1:
    // the machine reporting it is that replacement, not another. m-2's spindle was not
    // on the work order. A failure before the component was installed is not its own.
    let t3 = tw + 2 * HOUR;
    e.store_events(
        "b-events-4",
        vec![
            event("m-1", t3, EventKind::PartReplaced, Some("belt"), None),
            event("m-2", t3, EventKind::PartReplaced, Some("belt"), None),
            event("m-2", t3, EventKind::PartReplaced, Some("spindle"), None),
            event("m-2", T0 - DAY, EventKind::Failure, Some("belt"), None),
        ],
        t3,
    )
    .await;
    for (engine, c) in e.contents().await {
        assert_eq!(
            c.lives(),
            [
                ("m-1".into(), "belt".into(), T0 + DAY, t3, "replaced".into()),
                ("m-1".into(), "spindle".into(), T0, t1, "failure".into()),
                ("m-2".into(), "spindle".into(), T0, t3, "replaced".into()),
            ],
            "{engine}"
        );
        assert_eq!(c.component("m-1", "belt"), (t3, None), "{engine}");
        assert_eq!(c.component("m-2", "belt"), (T0, None), "{engine}");
        assert_eq!(c.component("m-2", "spindle"), (t3, None), "{engine}");
        assert!(c.has_health("m-2", "belt"), "{engine}");
        assert!(!c.has_health("m-2", "spindle"), "{engine}");
        assert!(!c.has_health("m-1", "belt"), "{engine}");
        assert_eq!(c.table("machine_events").len(), 7, "{engine}");
    }

    // Where storing an event twice would show: a failure at t6, then a replacement the
    // machine stamped earlier (t5), then the failure again. Applied again, the failure
    // would fail the new spindle; stored once (in the same batch, or in the next), it
    // does nothing.
    let (t5, t6) = (T0 + 30 * DAY, T0 + 30 * DAY + HOUR);
    let late_failure = event("m-1", t6, EventKind::Failure, Some("spindle"), None);
    let events = vec![
        late_failure.clone(),
        event("m-1", t5, EventKind::PartReplaced, Some("spindle"), None),
        late_failure.clone(),
    ];
    e.store_events("b-events-5", events, t6).await;
    e.store_events("b-events-6", vec![late_failure], t6).await;
    for (engine, c) in e.contents().await {
        assert_eq!(c.component("m-1", "spindle"), (t5, None), "{engine}");
        assert_eq!(
            c.lives()
                .into_iter()
                .filter(|l| (l.0.as_str(), l.1.as_str()) == ("m-1", "spindle"))
                .collect::<Vec<_>>(),
            [
                ("m-1".into(), "spindle".into(), T0, t1, "failure".into()),
                ("m-1".into(), "spindle".into(), t2, t6, "failure".into()),
            ],
            "{engine}"
        );
        assert_eq!(c.table("machine_events").len(), 9, "{engine}");
    }
}

/// (d) The newest status wins: an older one does not overwrite it, one as new does,
/// and of several in one batch the last of the newest is kept.
#[tokio::test]
async fn an_older_status_does_not_overwrite_a_newer_one() {
    let Some(e) = Engines::open().await else {
        return;
    };
    // (status, status_at)
    let status_of = |row: &[Val]| (row[1].text().to_string(), row[2].opt_int());
    let expect = async |want: [(&str, &str, Option<i64>); 2]| {
        let want = want.map(|(machine, state, at)| (machine, (state.to_string(), at)));
        e.expect_machines(status_of, &want).await;
    };
    use MachineState::{Offline, Online};
    let only = |id: &str, s: StatusUpdate| batch(id, vec![], vec![], vec![s]);
    e.store(&only("b-s1", status("m-1", Online, T0 + 100)), T0, false)
        .await;
    // Older than the stored one: ignored.
    e.store(&only("b-s2", status("m-1", Offline, T0 + 50)), T0, false)
        .await;
    expect([("m-1", "online", Some(T0 + 100)), ("m-2", "unknown", None)]).await;
    e.store(
        &batch(
            "b-s3",
            vec![],
            vec![],
            vec![
                status("m-1", Offline, T0 + 200),
                status("m-2", Online, T0 + 300),
                status("m-1", Online, T0 + 200),
                status("m-1", Offline, T0 + 150),
                status("m-2", Offline, T0 + 250),
            ],
        ),
        T0,
        false,
    )
    .await;
    expect([
        ("m-1", "online", Some(T0 + 200)),
        ("m-2", "online", Some(T0 + 300)),
    ])
    .await;
    // As new as the stored one: it wins.
    e.store(&only("b-s4", status("m-1", Offline, T0 + 200)), T0, false)
        .await;
    expect([
        ("m-1", "offline", Some(T0 + 200)),
        ("m-2", "online", Some(T0 + 300)),
    ])
    .await;
    // Statuses do not count as data: no data version, no last-seen.
    let data_of = |row: &[Val]| (row[3].opt_int(), row[4].int());
    e.expect_machines(data_of, &[("m-1", (None, 0)), ("m-2", (None, 0))])
        .await;
}

/// (e) A batch bumps the data version of each machine it brings data for (windows or
/// new events; statuses and events already stored do not count) once, and moves its
/// last-seen time up to the latest of that data, never back.
#[tokio::test]
async fn last_seen_and_data_version_follow_the_data() {
    let Some(e) = Engines::open().await else {
        return;
    };
    let mut sender = Sender::new();
    // (last_seen_at, data_version)
    let data_of = |row: &[Val]| (row[3].opt_int(), row[4].int());
    let expect = async |want: [(&str, Option<i64>, i64); 2]| {
        let want = want.map(|(machine, seen, version)| (machine, (seen, version)));
        e.expect_machines(data_of, &want).await;
    };
    expect([("m-1", None, 0), ("m-2", None, 0)]).await;

    // Two windows of m-1: the later last_ts counts.
    let late = sender.window("m-1", "spindle.temp", T0 + 10 * MINUTE);
    let early = sender.window("m-1", "spindle.vib", T0 + 2 * MINUTE);
    let seen1 = late.last_ts.0;
    e.store(&batch("b-e1", vec![late, early], vec![], vec![]), T0, false)
        .await;
    expect([("m-1", Some(seen1), 1), ("m-2", None, 0)]).await;

    // Older data for m-1 (last-seen stays), a fault for m-2.
    let fault = event("m-2", T0 + 3 * MINUTE, EventKind::Fault, None, Some("E2"));
    e.store(
        &batch(
            "b-e2",
            vec![sender.window("m-1", "spindle.temp", T0)],
            vec![fault.clone()],
            vec![],
        ),
        T0,
        false,
    )
    .await;
    expect([("m-1", Some(seen1), 2), ("m-2", Some(T0 + 3 * MINUTE), 1)]).await;

    // Statuses only, and an event already stored: no data.
    e.store(
        &batch(
            "b-e3",
            vec![],
            vec![fault],
            vec![status("m-1", MachineState::Online, T0 + DAY)],
        ),
        T0,
        false,
    )
    .await;
    expect([("m-1", Some(seen1), 2), ("m-2", Some(T0 + 3 * MINUTE), 1)]).await;

    // A new event later than m-1's windows, and windows of both machines: one bump
    // each, however many items.
    let ts = seen1 + HOUR;
    let b4 = batch(
        "b-e4",
        vec![
            sender.window("m-2", "belt.tension", T0 + 4 * MINUTE),
            sender.window("m-1", "belt.tension", T0 + 5 * MINUTE),
            sender.window("m-2", "spindle.temp", T0 + 5 * MINUTE),
        ],
        vec![event("m-1", ts, EventKind::Fault, None, Some("E3"))],
        vec![],
    );
    let seen2 = b4.windows[2].last_ts.0.max(b4.windows[0].last_ts.0);
    e.store(&b4, T0, false).await;
    expect([("m-1", Some(ts), 3), ("m-2", Some(seen2), 2)]).await;

    // Redelivered: nothing moves.
    assert!(e.store(&b4, T0, false).await.duplicate);
    expect([("m-1", Some(ts), 3), ("m-2", Some(seen2), 2)]).await;
}

/// `n` windows (one sample each) of both machines from `start`, with distinct keys.
fn many_windows(n: usize, start: i64) -> Vec<WindowAggregate> {
    (0..n)
        .map(|i| {
            let machine = if i % 2 == 0 { "m-1" } else { "m-2" };
            let s = start + (i / 6) as i64 * MINUTE;
            window(machine, CHANNELS[i / 2 % 3], s, &[(s + 1, i as f64)])
        })
        .collect()
}

/// `n` PostgreSQL stores (replicas: a pool each) on one fresh database with the
/// registry; `None` (after a SKIP line) without a server.
async fn replicas(n: usize) -> Option<(TestDb, Vec<PgStore>)> {
    let server = support::server().await?;
    let db = TestDb::create(&server).await;
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(PgStore::open(&db.url).await.unwrap());
    }
    support::register(stores[0].pool(), &manifest()).await;
    Some((db, stores))
}

/// What PostgreSQL holds of windows and batches: (windows, their count of samples,
/// batches).
async fn pg_totals(pg: &PgStore) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM telemetry_windows),
                (SELECT COALESCE(SUM(n), 0)::int8 FROM telemetry_windows),
                (SELECT COUNT(*) FROM ingested_batches)",
    )
    .fetch_one(pg.pool())
    .await
    .unwrap()
}

/// (g) Two replicas (two pools on one database) storing the same batch at the same
/// time store it once: one answer is fresh, the other a duplicate, and every window is
/// in once with its own count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_storing_one_batch_at_once_store_it_once() {
    let Some((_db, replicas)) = replicas(2).await else {
        return;
    };
    const WINDOWS: usize = 3_000;
    for round in 0..4 {
        let b = Arc::new(batch(
            &format!("b-race-{round}"),
            many_windows(WINDOWS, T0 + round * DAY),
            vec![],
            vec![],
        ));
        let keep = Arc::new(keep_all(&b));
        let start = Arc::new(tokio::sync::Barrier::new(2));
        // Both spawned before either is awaited (collected, not a lazy iterator).
        let tasks: Vec<_> = replicas
            .iter()
            .map(|store| {
                let store = store.clone();
                let (b, keep, start) = (b.clone(), keep.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    store.store_batch(&b, &keep, UnixMs(T0), true).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        let fresh: Vec<&StoredBatch> = answers.iter().filter(|a| !a.duplicate).collect();
        assert_eq!(
            fresh.len(),
            1,
            "round {round}: {} fresh answers",
            fresh.len()
        );
        assert!(
            fresh[0].stored_windows.iter().all(|w| w.count == 1),
            "round {round}: a window was merged with itself"
        );
        let rounds = round + 1;
        assert_eq!(
            pg_totals(&replicas[0]).await,
            (rounds * WINDOWS as i64, rounds * WINDOWS as i64, rounds),
            "round {round}: (windows, samples, batches)"
        );
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT data_version FROM machines ORDER BY id")
                .fetch_all(replicas[1].pool())
                .await
                .unwrap();
        assert_eq!(versions, [rounds, rounds], "round {round}");
    }
}

/// The mechanism behind (g), step by step: a replica that finds the batch id inserted
/// by a transaction still open waits for it; when that commits, the batch is a
/// duplicate; when it rolls back, the waiting replica stores the batch itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_for_the_transaction_storing_the_same_batch() {
    let Some((_db, stores)) = replicas(1).await else {
        return;
    };
    let store = &stores[0];
    for commit in [true, false] {
        let b = Arc::new(batch(
            &format!("b-held-{commit}"),
            many_windows(10, T0 + if commit { 0 } else { DAY }),
            vec![],
            vec![],
        ));
        let mut other = store.pool().begin().await.unwrap();
        sqlx::query(
            "INSERT INTO ingested_batches (batch_id, gateway_id, received_at, windows, events)
             VALUES ($1, 'gw-other', 0, 10, 0)",
        )
        .bind(b.batch_id.as_str())
        .execute(&mut *other)
        .await
        .unwrap();
        let task = {
            let (store, b) = (store.clone(), b.clone());
            tokio::spawn(async move {
                let keep = keep_all(&b);
                store.store_batch(&b, &keep, UnixMs(T0), false).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "commit {commit}: did not wait");
        if commit {
            other.commit().await.unwrap();
        } else {
            other.rollback().await.unwrap();
        }
        let answer = task.await.unwrap().unwrap();
        assert_eq!(answer.duplicate, commit, "commit {commit}");
    }
    // The batch that was committed by the other transaction wrote no windows; the one
    // it rolled back was stored by the waiting replica.
    assert_eq!(pg_totals(store).await, (10, 10, 2));
}
