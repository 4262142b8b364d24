//! The SQLite backend.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use wearcast_protocol::UnixMs;
use wearcast_protocol::batch::{IngestBatch, WindowAggregate};
use wearcast_protocol::event::EventKind;
use wearcast_protocol::ids::{ComponentKey, MachineId, PartId};
use wearcast_protocol::registry::{ComponentSpec, FleetManifest, WeibullLife};

use super::db::Pool;
use super::service::{offer_notice, record_history, release_open_offer};
use super::{
    AppliedDecisions, ChannelBucket, ImportReport, MachineRegistry, ModelComponent, OfferFilter,
    PlanningContext, RegisteredMachine, StoreError, StoredBatch, Visibility,
};
use crate::config::NotificationsConfig;
use crate::model::{HealthStatus, RulEstimate};
use crate::notify::{self, Audience};
use crate::planner::calendar::{Occurrence, WeeklyWindow, occurrences};
use crate::planner::{
    ComponentInput, Decision, MachineInput, OfferDraft, OpenOffer, PartTerms, Terms,
};
use crate::service::{Job, assign, effective_lead_time_days};
use crate::views::*;

type Result<T> = std::result::Result<T, StoreError>;

/// Handle to the database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The same pool, for the queries written once for both engines (`store/db.rs`),
    /// which `Store` offers through `Deref`.
    db: Pool,
}

impl std::ops::Deref for Store {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        &self.db
    }
}

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    Ok(row.try_get(col)?)
}

fn ms(v: i64) -> UnixMs {
    UnixMs(v)
}

fn opt_ms(v: Option<i64>) -> Option<Rfc3339> {
    v.map(|v| Rfc3339(UnixMs(v)))
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// How often a component's estimate is kept for the model-quality report: once a day
/// (of platform time) per life.
pub const PREDICTION_SAMPLE_MS: i64 = UnixMs::DAY;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // A batch of windows dirties more pages than SQLite's default 2 MiB cache
            // holds: it then spilled them to the WAL mid-transaction and read them back
            // (most of the ingest time in a profile). 32 MiB per connection (4 at most),
            // and statement journals in memory.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            db: Pool::Sqlite(pool.clone()),
            pool,
        })
    }

    /// The connection pool, for the query modules that extend `Store` from other files
    /// (e.g. `store/model_data.rs`).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes SQLite's write lock up front, so
    /// writers queue (within the busy timeout) instead of a transaction that read first
    /// failing when another connection wrote in between.
    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A cheap query that proves the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- registry ------------------------------------------------------------------

    /// Upserts a checked manifest. Re-importing is harmless: nothing is duplicated and
    /// component install times only move forward (a replacement recorded since wins).
    /// The ids in `m` that another tenant already owns (customers, sites, parts,
    /// machine models, machines, contracts), as `kind id` strings. Importing over
    /// them would rewrite another manufacturer's objects, so callers refuse `m` when
    /// there are any.
    pub async fn foreign_ids(&self, m: &FleetManifest) -> Result<Vec<String>> {
        let tenant = m.tenant.id.as_str();
        let lists: [(&str, &str, Vec<&str>); 6] = [
            (
                "customer",
                "customers",
                m.customers.iter().map(|c| c.id.as_str()).collect(),
            ),
            (
                "site",
                "sites",
                m.sites.iter().map(|s| s.id.as_str()).collect(),
            ),
            (
                "part",
                "parts",
                m.parts.iter().map(|p| p.id.as_str()).collect(),
            ),
            (
                "machine model",
                "machine_models",
                m.machine_models.iter().map(|mm| mm.id.as_str()).collect(),
            ),
            (
                "machine",
                "machines",
                m.machines.iter().map(|mc| mc.id.as_str()).collect(),
            ),
            (
                "contract",
                "contracts",
                m.contracts.iter().map(|k| k.id.as_str()).collect(),
            ),
        ];
        let mut foreign = Vec::new();
        for (kind, table, ids) in lists {
            if ids.is_empty() {
                continue;
            }
            let ids =
                serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let taken: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM {table} WHERE tenant_id <> ?1
                   AND id IN (SELECT value FROM json_each(?2)) ORDER BY id"
            )))
            .bind(tenant)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
            foreign.extend(taken.into_iter().map(|id| format!("{kind} {id}")));
        }
        Ok(foreign)
    }

    pub async fn import_manifest(&self, m: &FleetManifest) -> Result<ImportReport> {
        let mut tx = self.write_tx().await?;
        let t = &m.tenant;
        sqlx::query(
            "INSERT INTO tenants (id, name, currency, labour_rate_cents_per_hour) VALUES (?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, currency = excluded.currency,
               labour_rate_cents_per_hour = excluded.labour_rate_cents_per_hour",
        )
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(&t.currency)
        .bind(t.labour_rate_cents_per_hour)
        .execute(&mut *tx)
        .await?;
        for c in &m.customers {
            sqlx::query(
                "INSERT INTO customers (id, tenant_id, name, contact_email) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, contact_email = excluded.contact_email",
            )
            .bind(c.id.as_str())
            .bind(t.id.as_str())
            .bind(&c.name)
            .bind(&c.contact_email)
            .execute(&mut *tx)
            .await?;
        }
        for s in &m.sites {
            sqlx::query(
                "INSERT INTO sites (id, tenant_id, customer_id, name, timezone, region, travel_cost_cents)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name,
                   timezone = excluded.timezone, region = excluded.region,
                   travel_cost_cents = excluded.travel_cost_cents",
            )
            .bind(s.id.as_str())
            .bind(t.id.as_str())
            .bind(s.customer.as_str())
            .bind(&s.name)
            .bind(&s.timezone)
            .bind(&s.region)
            .bind(s.travel_cost_cents)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM maintenance_windows WHERE site_id = ?")
                .bind(s.id.as_str())
                .execute(&mut *tx)
                .await?;
            for w in &s.maintenance_windows {
                let start = w.start_minute().map_err(StoreError::Corrupt)?;
                sqlx::query(
                    "INSERT OR REPLACE INTO maintenance_windows (site_id, weekday, start_minute, duration_minutes)
                     VALUES (?, ?, ?, ?)",
                )
                .bind(s.id.as_str())
                .bind(w.weekday.days_from_monday() as i64)
                .bind(start as i64)
                .bind((w.duration_hours * 60.0).round() as i64)
                .execute(&mut *tx)
                .await?;
            }
        }
        for p in &m.parts {
            sqlx::query(
                "INSERT INTO parts (id, tenant_id, name, price_cents, lead_time_days, labour_hours, life_shape, life_scale_hours)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents,
                   lead_time_days = excluded.lead_time_days, labour_hours = excluded.labour_hours,
                   life_shape = excluded.life_shape, life_scale_hours = excluded.life_scale_hours",
            )
            .bind(p.id.as_str())
            .bind(t.id.as_str())
            .bind(&p.name)
            .bind(p.price_cents)
            .bind(p.lead_time_days)
            .bind(p.labour_hours)
            .bind(p.life.shape)
            .bind(p.life.scale_hours)
            .execute(&mut *tx)
            .await?;
        }
        for mm in &m.machine_models {
            let components = serde_json::to_string(&mm.components)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO machine_models (id, tenant_id, name, downtime_cost_cents_per_hour, unplanned_downtime_hours, components_json)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                   downtime_cost_cents_per_hour = excluded.downtime_cost_cents_per_hour,
                   unplanned_downtime_hours = excluded.unplanned_downtime_hours,
                   components_json = excluded.components_json",
            )
            .bind(mm.id.as_str())
            .bind(t.id.as_str())
            .bind(&mm.name)
            .bind(mm.downtime_cost_cents_per_hour)
            .bind(mm.unplanned_downtime_hours)
            .bind(components)
            .execute(&mut *tx)
            .await?;
        }
        for machine in &m.machines {
            sqlx::query(
                "INSERT INTO machines (id, tenant_id, customer_id, site_id, model_id, serial, commissioned_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id,
                   site_id = excluded.site_id, model_id = excluded.model_id,
                   serial = excluded.serial, commissioned_at = excluded.commissioned_at",
            )
            .bind(machine.id.as_str())
            .bind(t.id.as_str())
            .bind(machine.customer.as_str())
            .bind(machine.site.as_str())
            .bind(machine.model.as_str())
            .bind(&machine.serial)
            .bind(machine.commissioned_at.0)
            .execute(&mut *tx)
            .await?;
            let model = m.model(&machine.model).ok_or_else(|| {
                StoreError::Corrupt(format!("machine {} names unknown model", machine.id))
            })?;
            for spec in &model.components {
                let installed = machine.installed_at(&spec.key);
                sqlx::query(
                    "INSERT INTO components (machine_id, key, part_id, installed_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (machine_id, key) DO UPDATE SET part_id = excluded.part_id,
                       installed_at = MAX(components.installed_at, excluded.installed_at)",
                )
                .bind(machine.id.as_str())
                .bind(spec.key.as_str())
                .bind(spec.part.as_str())
                .bind(installed.0)
                .execute(&mut *tx)
                .await?;
            }
        }
        for c in &m.contracts {
            sqlx::query(
                "INSERT INTO contracts (id, tenant_id, customer_id, tier, parts_coverage, labour_coverage,
                   risk_tolerance, annual_fee_cents, start_at, renewal_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, tier = excluded.tier,
                   parts_coverage = excluded.parts_coverage, labour_coverage = excluded.labour_coverage,
                   risk_tolerance = excluded.risk_tolerance, annual_fee_cents = excluded.annual_fee_cents,
                   start_at = excluded.start_at, renewal_at = excluded.renewal_at",
            )
            .bind(c.id.as_str())
            .bind(t.id.as_str())
            .bind(c.customer.as_str())
            .bind(c.tier.as_str())
            .bind(c.parts_coverage)
            .bind(c.labour_coverage)
            .bind(c.risk_tolerance)
            .bind(c.annual_fee_cents)
            .bind(c.start.0)
            .bind(c.renewal.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ImportReport {
            customers: m.customers.len(),
            sites: m.sites.len(),
            parts: m.parts.len(),
            machine_models: m.machine_models.len(),
            machines: m.machines.len(),
            contracts: m.contracts.len(),
        })
    }

    /// Every registered machine with its tenant and component keys (for ingest checks).
    pub async fn machine_registry(&self) -> Result<MachineRegistry> {
        let rows = sqlx::query(
            "SELECT m.id, m.tenant_id, m.customer_id, c.key FROM machines m
             LEFT JOIN components c ON c.machine_id = m.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = MachineRegistry::new();
        for row in rows {
            let id: String = get(&row, "id")?;
            let entry = out.entry(id).or_insert_with(|| RegisteredMachine {
                tenant: String::new(),
                customer: String::new(),
                components: Default::default(),
            });
            entry.tenant = get(&row, "tenant_id")?;
            entry.customer = get(&row, "customer_id")?;
            if let Some(key) = get::<Option<String>>(&row, "key")? {
                entry.components.insert(key);
            }
        }
        Ok(out)
    }

    // ---- ingest --------------------------------------------------------------------

    /// Stores the items of `batch` that `keep` selects, once per batch id, atomically.
    /// With `want_windows`, the answer holds each window as stored (merged with what
    /// was there), for the InfluxDB sink; without, the statements return nothing.
    pub async fn store_batch(
        &self,
        batch: &IngestBatch,
        keep: &BatchSelection,
        now: UnixMs,
        want_windows: bool,
    ) -> Result<StoredBatch> {
        // Planned before the write lock is taken, to hold it for less time.
        let mut plan = IngestPlan::new(batch, keep, WINDOWS_PER_STATEMENT, want_windows);
        let mut tx = self.write_tx().await?;
        if !record_batch(&mut *tx, RECORD_BATCH, batch, keep, now).await? {
            tx.rollback().await?;
            return Ok(StoredBatch::duplicate());
        }
        for statement in &plan.statements {
            upsert_windows(&mut tx, statement, plan.stored_windows.as_mut()).await?;
        }
        for part in plan.channels.chunks(WINDOWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO machine_channels (machine_id, channel) ",
            );
            q.push_values(part, |mut b, (machine, channel)| {
                b.push_bind(*machine).push_bind(*channel);
            });
            q.build().execute(&mut *tx).await?;
        }
        for &i in &keep.events {
            let e = &batch.events[i];
            let ev = &e.event;
            let fresh_event = sqlx::query(
                "INSERT OR IGNORE INTO machine_events (machine_id, ts, kind, component, code, message, batch_id)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.machine.as_str())
            .bind(ev.ts.0)
            .bind(ev.kind.as_str())
            .bind(ev.component.as_ref().map(|c| c.as_str()))
            .bind(&ev.code)
            .bind(&ev.message)
            .bind(batch.batch_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !fresh_event {
                continue;
            }
            match (ev.kind, &ev.component) {
                (EventKind::PartReplaced, Some(c)) => {
                    // The machine confirming a replacement a technician already recorded
                    // is the same replacement, not a second one.
                    let recorded: Option<i64> = sqlx::query_scalar(
                        "SELECT 1 FROM work_orders w JOIN work_order_components wc ON wc.work_order_id = w.id
                         WHERE w.machine_id = ? AND wc.component = ? AND w.status = 'completed'
                           AND w.completed_at BETWEEN ? AND ? LIMIT 1",
                    )
                    .bind(e.machine.as_str())
                    .bind(c.as_str())
                    .bind(ev.ts.0 - UnixMs::DAY)
                    .bind(ev.ts.0 + UnixMs::DAY)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if recorded.is_none() {
                        // The life that ends here; a life that ended in a failure is
                        // already recorded (same install time) and stays so.
                        sqlx::query(
                            "INSERT OR IGNORE INTO component_lives (machine_id, component, part_id, installed_at,
                               ended_at, end_reason)
                             SELECT machine_id, key, part_id, installed_at, ?, 'replaced' FROM components
                             WHERE machine_id = ? AND key = ? AND installed_at < ?",
                        )
                        .bind(ev.ts.0)
                        .bind(e.machine.as_str())
                        .bind(c.as_str())
                        .bind(ev.ts.0)
                        .execute(&mut *tx)
                        .await?;
                        let reset = sqlx::query(
                            "UPDATE components SET installed_at = ?, failed_at = NULL
                             WHERE machine_id = ? AND key = ? AND installed_at < ?",
                        )
                        .bind(ev.ts.0)
                        .bind(e.machine.as_str())
                        .bind(c.as_str())
                        .bind(ev.ts.0)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if reset > 0 {
                            sqlx::query(
                                "DELETE FROM component_health WHERE machine_id = ? AND component = ?",
                            )
                            .bind(e.machine.as_str())
                            .bind(c.as_str())
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                (EventKind::Failure, Some(c)) => {
                    let failed = sqlx::query(
                        "UPDATE components SET failed_at = ?
                         WHERE machine_id = ? AND key = ? AND installed_at <= ? AND failed_at IS NULL",
                    )
                    .bind(ev.ts.0)
                    .bind(e.machine.as_str())
                    .bind(c.as_str())
                    .bind(ev.ts.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if failed > 0 {
                        sqlx::query(
                            "INSERT OR IGNORE INTO component_lives (machine_id, component, part_id, installed_at,
                               ended_at, end_reason)
                             SELECT machine_id, key, part_id, installed_at, ?, 'failure' FROM components
                             WHERE machine_id = ? AND key = ?",
                        )
                        .bind(ev.ts.0)
                        .bind(e.machine.as_str())
                        .bind(c.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                _ => {}
            }
            plan.touch(e.machine.as_str(), ev.ts.0);
        }
        for &i in &keep.statuses {
            let s = &batch.statuses[i];
            sqlx::query(
                "UPDATE machines SET status = ?, status_at = ?
                 WHERE id = ? AND (status_at IS NULL OR status_at <= ?)",
            )
            .bind(s.state.as_str())
            .bind(s.at.0)
            .bind(s.machine.as_str())
            .bind(s.at.0)
            .execute(&mut *tx)
            .await?;
        }
        let touched: Vec<(&str, i64)> = plan.touched.iter().map(|(m, ts)| (*m, *ts)).collect();
        for part in touched.chunks(WINDOWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("WITH seen (id, ts) AS (");
            q.push_values(part, |mut b, (machine, last_seen)| {
                b.push_bind(*machine).push_bind(*last_seen);
            });
            q.push(
                ") UPDATE machines SET data_version = data_version + 1,
                   last_seen_at = MAX(COALESCE(last_seen_at, 0), (SELECT ts FROM seen WHERE seen.id = machines.id))
                 WHERE id IN (SELECT id FROM seen)",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(plan.answer(keep))
    }

    // ---- reads for the API ---------------------------------------------------------

    /// The machines `vis` may see: a technician's are those they have a work order on.
    pub async fn list_machines(&self, vis: &Visibility) -> Result<Vec<MachineSummary>> {
        let sql = format!(
            "{MACHINE_SUMMARY_SQL_BASE}
             WHERE (?1 IS NULL OR m.tenant_id = ?1) AND (?2 IS NULL OR m.customer_id = ?2)
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM work_orders w
                                          WHERE w.machine_id = m.id AND w.technician_id = ?3))
             ORDER BY m.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&vis.tenant)
            .bind(&vis.customer)
            .bind(&vis.technician)
            .fetch_all(&self.pool)
            .await?;
        let worst = self.worst_components(None).await?;
        rows.iter()
            .map(|row| machine_summary(row, &worst))
            .collect()
    }

    pub async fn machine_detail(&self, id: &str) -> Result<Option<MachineDetail>> {
        let sql = format!("{MACHINE_SUMMARY_SQL_BASE} WHERE m.id = ?");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let worst = self.worst_components(Some(id)).await?;
        let summary = machine_summary(&row, &worst)?;
        let timezone: String = get(&row, "timezone")?;
        let specs = parse_specs(&get::<String>(&row, "components_json")?)?;
        let comp_rows = sqlx::query(
            "SELECT c.key, c.part_id, c.installed_at, c.failed_at, h.status, h.health_index, h.estimate_json
             FROM components c LEFT JOIN component_health h
               ON h.machine_id = c.machine_id AND h.component = c.key
             WHERE c.machine_id = ? ORDER BY c.key",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut components = Vec::new();
        for r in &comp_rows {
            let key: String = get(r, "key")?;
            let spec = specs.iter().find(|s| s.key.as_str() == key);
            let estimate = match get::<Option<String>>(r, "estimate_json")? {
                Some(json) => Some(parse_estimate(&json)?),
                None => None,
            };
            components.push(ComponentView {
                name: spec.map_or_else(|| key.clone(), |s| s.name.clone()),
                wear_channels: spec
                    .map(|s| {
                        s.wear_channels
                            .iter()
                            .map(|w| WearChannelView {
                                channel: format!("{key}.{}", w.quantity),
                                unit: w.unit.clone(),
                                healthy: w.healthy,
                                failure: w.failure,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                key,
                part: get(r, "part_id")?,
                installed_at: Rfc3339(ms(get(r, "installed_at")?)),
                failed_at: opt_ms(get(r, "failed_at")?),
                status: get::<Option<String>>(r, "status")?
                    .unwrap_or_else(|| HealthStatus::Unknown.as_str().into()),
                health_pct: estimate.as_ref().map(RulEstimate::health_pct),
                estimate,
            });
        }
        let channels = sqlx::query_scalar::<_, String>(
            "SELECT channel FROM machine_channels WHERE machine_id = ? ORDER BY channel",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(MachineDetail {
            summary,
            timezone,
            components,
            channels,
        }))
    }

    pub async fn machine_exists(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM machines WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn machine_channels(&self, id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT channel FROM machine_channels WHERE machine_id = ? ORDER BY channel",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Windows of one channel starting in `[from, to)`; at most `limit`, the most
    /// recent ones if more match.
    pub async fn telemetry(
        &self,
        machine: &str,
        channel: &str,
        from: UnixMs,
        to: UnixMs,
        limit: usize,
    ) -> Result<TelemetryView> {
        let rows = sqlx::query(
            "SELECT start_ms, end_ms, n, mean, m2, vmin, vmax, vlast FROM telemetry_series
             WHERE machine_id = ? AND channel = ? AND start_ms >= ? AND start_ms < ?
             ORDER BY start_ms DESC LIMIT ?",
        )
        .bind(machine)
        .bind(channel)
        .bind(from.0)
        .bind(to.0)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let truncated = rows.len() > limit;
        let mut windows = Vec::with_capacity(rows.len().min(limit));
        for r in rows.iter().take(limit) {
            let n: i64 = get(r, "n")?;
            let m2: f64 = get(r, "m2")?;
            windows.push(TelemetryWindowView {
                start: Rfc3339(ms(get(r, "start_ms")?)),
                end: Rfc3339(ms(get(r, "end_ms")?)),
                count: n,
                mean: get(r, "mean")?,
                min: get(r, "vmin")?,
                max: get(r, "vmax")?,
                std: if n > 1 {
                    (m2.max(0.0) / (n - 1) as f64).sqrt()
                } else {
                    0.0
                },
                last: get(r, "vlast")?,
            });
        }
        windows.reverse();
        Ok(TelemetryView {
            machine: machine.into(),
            channel: channel.into(),
            from: Rfc3339(from),
            to: Rfc3339(to),
            windows,
            truncated,
        })
    }

    /// The offers matching `filter` that `vis` may see (a technician sees none).
    pub async fn list_offers(
        &self,
        filter: &OfferFilter,
        vis: &Visibility,
    ) -> Result<Vec<OfferView>> {
        if vis.technician.is_some() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(
            "SELECT * FROM offers
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR machine_id = ?2)
               AND (?3 IS NULL OR customer_id = ?3)
               AND (?4 IS NULL OR tenant_id = ?4) AND (?5 IS NULL OR customer_id = ?5)
             ORDER BY window_start, id",
        )
        .bind(&filter.status)
        .bind(&filter.machine)
        .bind(&filter.customer)
        .bind(&vis.tenant)
        .bind(&vis.customer)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| get::<String>(r, "id"))
            .collect::<Result<_>>()?;
        let mut components = self.offer_components(&ids).await?;
        let mut history = self.offer_history(&ids).await?;
        rows.iter()
            .map(|r| {
                let id: String = get(r, "id")?;
                offer_view(
                    r,
                    components.remove(&id).unwrap_or_default(),
                    history.remove(&id).unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn offer(&self, id: &str) -> Result<Option<OfferView>> {
        let Some(row) = sqlx::query("SELECT * FROM offers WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let ids = vec![id.to_string()];
        let components = self
            .offer_components(&ids)
            .await?
            .remove(id)
            .unwrap_or_default();
        let history = self
            .offer_history(&ids)
            .await?
            .remove(id)
            .unwrap_or_default();
        offer_view(&row, components, history).map(Some)
    }

    async fn offer_components(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<OfferComponentView>>> {
        self.rows_by_offer(
            "SELECT oc.* FROM offer_components oc JOIN json_each(?) j ON j.value = oc.offer_id
             ORDER BY oc.offer_id, oc.rowid",
            ids,
            |r| {
                Ok(OfferComponentView {
                    component: get(r, "component")?,
                    part: get(r, "part_id")?,
                    health_index: get(r, "health_index")?,
                    rul_p10_h: get(r, "rul_p10_h")?,
                    rul_p50_h: get(r, "rul_p50_h")?,
                    rul_p90_h: get(r, "rul_p90_h")?,
                    p_fail_before_window: get(r, "p_fail_before_window")?,
                })
            },
        )
        .await
    }

    async fn offer_history(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<OfferHistoryView>>> {
        self.rows_by_offer(
            "SELECT h.* FROM offer_history h JOIN json_each(?) j ON j.value = h.offer_id
             ORDER BY h.offer_id, h.at, h.rowid",
            ids,
            |r| {
                Ok(OfferHistoryView {
                    at: Rfc3339(ms(get(r, "at")?)),
                    from: get(r, "from_status")?,
                    to: get(r, "to_status")?,
                    note: get(r, "note")?,
                })
            },
        )
        .await
    }

    /// Runs `sql` (one `?`: a JSON array of offer ids) and groups the mapped rows by
    /// their `offer_id`, in query order.
    async fn rows_by_offer<T>(
        &self,
        sql: &'static str,
        ids: &[String],
        map: impl Fn(&SqliteRow) -> Result<T>,
    ) -> Result<HashMap<String, Vec<T>>> {
        let mut out: HashMap<String, Vec<T>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows = sqlx::query(sql)
            .bind(serde_json::to_string(ids).unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            out.entry(get(r, "offer_id")?).or_default().push(map(r)?);
        }
        Ok(out)
    }

    /// The sites `vis` may see (a technician sees none through this list).
    pub async fn list_sites(
        &self,
        now: UnixMs,
        lookahead_h: f64,
        vis: &Visibility,
    ) -> Result<Vec<SiteView>> {
        if vis.technician.is_some() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(
            "SELECT * FROM sites WHERE (?1 IS NULL OR tenant_id = ?1)
               AND (?2 IS NULL OR customer_id = ?2) ORDER BY id",
        )
        .bind(&vis.tenant)
        .bind(&vis.customer)
        .fetch_all(&self.pool)
        .await?;
        let windows = self.all_weekly_windows().await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = get(&r, "id")?;
            let timezone: String = get(&r, "timezone")?;
            let specs = windows.get(&id).cloned().unwrap_or_default();
            let upcoming = match Tz::from_str(&timezone) {
                Ok(tz) => occurrences(tz, &specs, now, now.plus_hours(lookahead_h)),
                Err(_) => vec![],
            };
            out.push(SiteView {
                customer: get(&r, "customer_id")?,
                name: get(&r, "name")?,
                region: get(&r, "region")?,
                maintenance_windows: specs
                    .iter()
                    .map(|w| RecurringWindowView {
                        weekday: WEEKDAYS[w.weekday as usize % 7].into(),
                        start: format!("{:02}:{:02}", w.start_minute / 60, w.start_minute % 60),
                        duration_hours: f64::from(w.duration_minutes) / 60.0,
                    })
                    .collect(),
                upcoming_windows: upcoming
                    .iter()
                    .map(|o| WindowView {
                        start: Rfc3339(o.start),
                        end: Rfc3339(o.end),
                    })
                    .collect(),
                id,
                timezone,
            });
        }
        Ok(out)
    }

    async fn all_weekly_windows(&self) -> Result<HashMap<String, Vec<WeeklyWindow>>> {
        let rows = sqlx::query(
            "SELECT site_id, weekday, start_minute, duration_minutes FROM maintenance_windows
             ORDER BY site_id, weekday, start_minute",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<WeeklyWindow>> = HashMap::new();
        for r in rows {
            out.entry(get(&r, "site_id")?)
                .or_default()
                .push(WeeklyWindow {
                    weekday: get::<i64>(&r, "weekday")? as u32,
                    start_minute: get::<i64>(&r, "start_minute")? as u32,
                    duration_minutes: get::<i64>(&r, "duration_minutes")? as u32,
                });
        }
        Ok(out)
    }

    /// Count of offers per status, for the metrics gauges.
    pub async fn offer_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM offers GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((get(r, "status")?, get(r, "n")?)))
            .collect()
    }

    // ---- analysis ------------------------------------------------------------------

    /// Machines with data the stored estimates have not seen, with their data version.
    pub async fn stale_machines(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT m.id, m.data_version FROM machines m
             WHERE m.data_version > 0 AND (
               EXISTS (SELECT 1 FROM components c LEFT JOIN component_health h
                         ON h.machine_id = c.machine_id AND h.component = c.key
                       WHERE c.machine_id = m.id AND (h.data_version IS NULL OR h.data_version < m.data_version)))
             ORDER BY m.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "data_version")?)))
            .collect()
    }

    /// The machine's components with their specs, install state and life prior.
    pub async fn model_components(&self, machine: &str) -> Result<Vec<ModelComponent>> {
        let rows = sqlx::query(
            "SELECT c.key, c.installed_at, c.failed_at, p.life_shape, p.life_scale_hours, mm.components_json
             FROM components c JOIN machines m ON m.id = c.machine_id
             JOIN machine_models mm ON mm.id = m.model_id JOIN parts p ON p.id = c.part_id
             WHERE c.machine_id = ? ORDER BY c.key",
        )
        .bind(machine)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let key: String = get(&r, "key")?;
            let specs = parse_specs(&get::<String>(&r, "components_json")?)?;
            let Some(spec) = specs.into_iter().find(|s| s.key.as_str() == key) else {
                continue;
            };
            out.push(ModelComponent {
                spec,
                installed_at: ms(get(&r, "installed_at")?),
                failed_at: get::<Option<i64>>(&r, "failed_at")?.map(ms),
                prior: WeibullLife {
                    shape: get(&r, "life_shape")?,
                    scale_hours: get(&r, "life_scale_hours")?,
                },
            });
        }
        Ok(out)
    }

    /// Count-weighted means of every channel of `component` in buckets of `bucket_ms`,
    /// from `since`, oldest first. Bounded: one row per channel and bucket.
    pub async fn component_buckets(
        &self,
        machine: &str,
        component: &str,
        since: UnixMs,
        bucket_ms: i64,
    ) -> Result<Vec<ChannelBucket>> {
        // `component.` .. `component/` is exactly the channels of this component ('/' follows '.').
        let rows = sqlx::query(
            "SELECT channel, (start_ms / ?1) * ?1 AS bucket, SUM(n * mean) / SUM(n) AS mean
             FROM telemetry_series
             WHERE machine_id = ?2 AND channel >= ?3 AND channel < ?4 AND start_ms >= ?5
             GROUP BY channel, bucket ORDER BY bucket, channel",
        )
        .bind(bucket_ms)
        .bind(machine)
        .bind(format!("{component}."))
        .bind(format!("{component}/"))
        .bind(since.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChannelBucket {
                    channel: get(r, "channel")?,
                    start: ms(get(r, "bucket")?),
                    mean: get(r, "mean")?,
                })
            })
            .collect()
    }

    pub async fn save_estimates(
        &self,
        machine: &str,
        data_version: i64,
        estimates: &[(String, RulEstimate)],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (component, e) in estimates {
            sqlx::query(
                "INSERT INTO component_health (machine_id, component, computed_at, data_version, status,
                   health_index, rul_p10_h, rul_p50_h, rul_p90_h, estimate_json)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (machine_id, component) DO UPDATE SET computed_at = excluded.computed_at,
                   data_version = excluded.data_version, status = excluded.status,
                   health_index = excluded.health_index, rul_p10_h = excluded.rul_p10_h,
                   rul_p50_h = excluded.rul_p50_h, rul_p90_h = excluded.rul_p90_h,
                   estimate_json = excluded.estimate_json",
            )
            .bind(machine)
            .bind(component)
            .bind(e.computed_at.0)
            .bind(data_version)
            .bind(e.status.as_str())
            .bind(e.health_index)
            .bind(e.rul_p10_h)
            .bind(e.rul_p50_h)
            .bind(e.rul_p90_h)
            .bind(serde_json::to_string(e).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .execute(&mut *tx)
            .await?;
            if matches!(
                e.status,
                HealthStatus::Healthy | HealthStatus::Degrading | HealthStatus::Critical
            ) {
                // The day's sample of this life, for the model-quality report.
                sqlx::query(
                    "INSERT OR IGNORE INTO model_predictions (machine_id, component, installed_at, at,
                       status, p10_h, p50_h, p90_h)
                     SELECT ?1, ?2, c.installed_at, ?3, ?4, ?5, ?6, ?7 FROM components c
                     WHERE c.machine_id = ?1 AND c.key = ?2 AND NOT EXISTS (
                       SELECT 1 FROM model_predictions p
                       WHERE p.machine_id = ?1 AND p.component = ?2
                         AND p.installed_at = c.installed_at AND p.at > ?3 - ?8)",
                )
                .bind(machine)
                .bind(component)
                .bind(e.computed_at.0)
                .bind(e.status.as_str())
                .bind(e.rul_p10_h)
                .bind(e.rul_p50_h)
                .bind(e.rul_p90_h)
                .bind(PREDICTION_SAMPLE_MS)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Machines the planner should look at: a component past healthy, or an open offer.
    pub async fn machines_to_plan(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT machine_id FROM component_health WHERE status IN ('degrading', 'critical', 'failed')
             UNION SELECT machine_id FROM offers WHERE status = 'proposed'
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Everything the planner needs about one machine at `now`, and its customer.
    /// Windows are the site's planned stops (weekly and one-off) in which a qualified
    /// technician is free (once technicians are registered); lead times count parts on
    /// the shelf; components the customer declined recently count as taken care of.
    pub async fn planner_input(
        &self,
        machine: &str,
        now: UnixMs,
        lookahead_h: f64,
        ctx: &PlanningContext,
    ) -> Result<Option<(MachineInput, String)>> {
        let Some(m) = sqlx::query(
            "SELECT m.id, m.site_id, m.customer_id, m.model_id, mm.name AS model_name, mm.components_json,
                    mm.downtime_cost_cents_per_hour, mm.unplanned_downtime_hours,
                    s.timezone, s.travel_cost_cents, t.currency, t.labour_rate_cents_per_hour,
                    k.tier, k.parts_coverage, k.labour_coverage, k.risk_tolerance
             FROM machines m JOIN machine_models mm ON mm.id = m.model_id
             JOIN sites s ON s.id = m.site_id JOIN tenants t ON t.id = m.tenant_id
             LEFT JOIN contracts k ON k.id = (
               SELECT id FROM contracts WHERE customer_id = m.customer_id
                 AND start_at <= ?2 AND renewal_at > ?2 ORDER BY start_at DESC LIMIT 1)
             WHERE m.id = ?1",
        )
        .bind(machine)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let specs = parse_specs(&get::<String>(&m, "components_json")?)?;
        let site_id: String = get(&m, "site_id")?;
        let site = self.site_info(&site_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("machine {machine}: unknown site {site_id}"))
        })?;
        let tier: Option<String> = get(&m, "tier")?;
        let terms = Terms {
            currency: get(&m, "currency")?,
            labour_rate_cents_per_hour: get(&m, "labour_rate_cents_per_hour")?,
            travel_cost_cents: get(&m, "travel_cost_cents")?,
            parts_coverage: get::<Option<f64>>(&m, "parts_coverage")?.unwrap_or(0.0),
            labour_coverage: get::<Option<f64>>(&m, "labour_coverage")?.unwrap_or(0.0),
            risk_tolerance: get(&m, "risk_tolerance")?,
            contract_tier: tier,
            downtime_cost_cents_per_hour: get(&m, "downtime_cost_cents_per_hour")?,
            unplanned_downtime_hours: get(&m, "unplanned_downtime_hours")?,
        };
        let rows = sqlx::query(
            "SELECT c.key, c.installed_at, p.id AS part_id, p.name AS part_name, p.price_cents,
                    p.lead_time_days, p.labour_hours, p.stock, p.reserved, h.estimate_json
             FROM components c JOIN parts p ON p.id = c.part_id
             JOIN component_health h ON h.machine_id = c.machine_id AND h.component = c.key
             WHERE c.machine_id = ? ORDER BY c.key",
        )
        .bind(machine)
        .fetch_all(&self.pool)
        .await?;
        let mut components = Vec::new();
        for r in rows {
            let key: String = get(&r, "key")?;
            let name = specs
                .iter()
                .find(|s| s.key.as_str() == key)
                .map_or_else(|| key.clone(), |s| s.name.clone());
            components.push(ComponentInput {
                key: parse_id(&key)?,
                name,
                part: PartTerms {
                    id: parse_id::<PartId>(&get::<String>(&r, "part_id")?)?,
                    name: get(&r, "part_name")?,
                    price_cents: get(&r, "price_cents")?,
                    lead_time_days: effective_lead_time_days(
                        get(&r, "stock")?,
                        get(&r, "reserved")?,
                        get(&r, "lead_time_days")?,
                        ctx.dispatch_days,
                    ),
                    labour_hours: get(&r, "labour_hours")?,
                },
                installed_at: ms(get(&r, "installed_at")?),
                estimate: parse_estimate(&get::<String>(&r, "estimate_json")?)?,
            });
        }
        let offers = sqlx::query(
            "SELECT o.id, o.status, o.urgent, o.window_start, o.window_end, o.created_at,
                    json_group_array(oc.component) AS components
             FROM offers o JOIN offer_components oc ON oc.offer_id = o.id
             WHERE o.machine_id = ? AND o.status IN ('proposed', 'accepted', 'scheduled')
             GROUP BY o.id ORDER BY o.window_start",
        )
        .bind(machine)
        .fetch_all(&self.pool)
        .await?;
        let mut open_offers = Vec::new();
        let mut committed = Vec::new();
        for r in offers {
            let keys: Vec<String> = serde_json::from_str(&get::<String>(&r, "components")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let keys: Vec<ComponentKey> =
                keys.iter().map(|k| parse_id(k)).collect::<Result<_>>()?;
            if get::<String>(&r, "status")? == "proposed" {
                open_offers.push(OpenOffer {
                    id: get(&r, "id")?,
                    components: keys,
                    window: Occurrence {
                        start: ms(get(&r, "window_start")?),
                        end: ms(get(&r, "window_end")?),
                    },
                    urgent: get::<i64>(&r, "urgent")? != 0,
                    created_at: ms(get(&r, "created_at")?),
                });
            } else {
                committed.extend(keys);
            }
        }
        for declined in self.recently_declined(machine, ctx.declined_since).await? {
            committed.push(parse_id(&declined)?);
        }
        let model_id: String = get(&m, "model_id")?;
        // The longest job this machine may need now (a component showing wear): a
        // window must fit it.
        let work_hours = components
            .iter()
            .filter(|c| {
                matches!(
                    c.estimate.status,
                    HealthStatus::Degrading | HealthStatus::Critical
                )
            })
            .map(|c| c.part.labour_hours)
            .fold(1.0, f64::max);
        let windows = self
            .site_occurrences(&site, now, now.plus_hours(lookahead_h))
            .await?
            .into_iter()
            .map(|(o, _)| o)
            .filter(|o| {
                ctx.technicians.is_empty()
                    || assign(
                        &Job {
                            machine_model: model_id.clone(),
                            region: site.region.clone(),
                            window: *o,
                            work_hours,
                        },
                        &ctx.technicians,
                        &ctx.busy,
                        &ctx.travel,
                    )
                    .is_ok()
            })
            .collect();
        Ok(Some((
            MachineInput {
                machine: parse_id::<MachineId>(machine)?,
                machine_label: format!("{machine} ({})", get::<String>(&m, "model_name")?),
                timezone: site.timezone,
                terms,
                components,
                committed,
                open_offers,
                windows,
            },
            get(&m, "customer_id")?,
        )))
    }

    /// Applies the planner's decisions for one machine atomically, with their notices.
    pub async fn apply_decisions(
        &self,
        machine: &MachineInput,
        decisions: &[Decision],
        now: UnixMs,
        notifications: &NotificationsConfig,
    ) -> Result<AppliedDecisions> {
        let mut applied = AppliedDecisions::default();
        if decisions.is_empty() {
            return Ok(applied);
        }
        let mut tx = self.write_tx().await?;
        for d in decisions {
            match d {
                Decision::Propose(draft) => {
                    let Some(id) = insert_offer(&mut tx, machine, draft, now, "planned").await?
                    else {
                        continue;
                    };
                    let mut notice = offer_notice(&mut tx, &id).await?;
                    if draft.urgent {
                        notice.event = "alert.urgent";
                        notice.audience = Audience::Everyone;
                        notice.subject = format!("Urgent: {} needs a visit", machine.machine);
                    }
                    notify::enqueue(&mut tx, notifications, &notice, now).await?;
                    applied.proposed += 1;
                }
                Decision::Supersede { old, draft } => {
                    // The old offer releases its components first, so the new one can
                    // claim them; if it is no longer proposed, someone decided already.
                    if !transition(
                        &mut tx,
                        old,
                        "superseded",
                        now,
                        "the risk rose before its window; re-planned into an earlier stop",
                    )
                    .await?
                    {
                        continue;
                    }
                    let Some(new_id) = insert_offer(
                        &mut tx,
                        machine,
                        draft,
                        now,
                        &format!("re-planned: replaces {old}, whose window is no longer safe"),
                    )
                    .await?
                    else {
                        continue;
                    };
                    sqlx::query("UPDATE offers SET superseded_by = ? WHERE id = ?")
                        .bind(&new_id)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?;
                    let mut notice = offer_notice(&mut tx, &new_id).await?;
                    notice.event = "offer.superseded";
                    notice.subject = format!(
                        "Planned replacement for {} moved to an earlier stop",
                        machine.machine
                    );
                    notice.body = format!(
                        "The risk rose, so this replaces offer {old}.\n\n{}",
                        notice.body
                    );
                    notify::enqueue(&mut tx, notifications, &notice, now).await?;
                    applied.superseded += 1;
                    applied.proposed += 1;
                }
                Decision::Expire { offer, reason } => {
                    if transition(&mut tx, offer, "expired", now, reason).await? {
                        let mut notice = offer_notice(&mut tx, offer).await?;
                        notice.event = "offer.expired";
                        notice.audience = Audience::ServiceDesk;
                        notice.subject = format!("Offer for {} expired", machine.machine);
                        notice.body = format!("Expired: {reason}.\n\n{}", notice.body);
                        notify::enqueue(&mut tx, notifications, &notice, now).await?;
                        applied.expired += 1;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The worst component per machine (optionally one machine).
    async fn worst_components(
        &self,
        machine: Option<&str>,
    ) -> Result<HashMap<String, WorstComponent>> {
        let rows = sqlx::query(
            "SELECT machine_id, component, status, health_index, rul_p50_h FROM component_health
             WHERE ?1 IS NULL OR machine_id = ?1",
        )
        .bind(machine)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, WorstComponent> = HashMap::new();
        for r in rows {
            let status: String = get(&r, "status")?;
            let hi: f64 = get(&r, "health_index")?;
            let candidate = WorstComponent {
                component: get(&r, "component")?,
                health_pct: (100.0 * (1.0 - hi)).clamp(0.0, 100.0),
                rul_p50_h: get(&r, "rul_p50_h")?,
                status,
            };
            let key = |w: &WorstComponent| {
                (
                    HealthStatus::parse(&w.status).severity(),
                    -(w.health_pct * 1000.0) as i64,
                )
            };
            let machine_id: String = get(&r, "machine_id")?;
            match out.get(&machine_id) {
                Some(current) if key(current) >= key(&candidate) => {}
                _ => {
                    out.insert(machine_id, candidate);
                }
            }
        }
        Ok(out)
    }
}

/// Which items of a batch passed validation.
#[derive(Clone, Debug, Default)]
pub struct BatchSelection {
    pub windows: Vec<usize>,
    pub events: Vec<usize>,
    pub statuses: Vec<usize>,
}

const MACHINE_SUMMARY_SQL_BASE: &str = "SELECT m.id, m.tenant_id, m.customer_id, c.name AS customer_name,
        m.site_id, s.name AS site_name, s.timezone, m.model_id, mm.name AS model_name, mm.components_json,
        m.serial, m.status, m.last_seen_at
 FROM machines m JOIN customers c ON c.id = m.customer_id JOIN sites s ON s.id = m.site_id
 JOIN machine_models mm ON mm.id = m.model_id";

fn machine_summary(
    row: &SqliteRow,
    worst: &HashMap<String, WorstComponent>,
) -> Result<MachineSummary> {
    let id: String = get(row, "id")?;
    Ok(MachineSummary {
        health: worst.get(&id).cloned(),
        tenant: get(row, "tenant_id")?,
        customer: get(row, "customer_id")?,
        customer_name: get(row, "customer_name")?,
        site: get(row, "site_id")?,
        site_name: get(row, "site_name")?,
        model: get(row, "model_id")?,
        model_name: get(row, "model_name")?,
        serial: get(row, "serial")?,
        status: get(row, "status")?,
        last_seen: opt_ms(get(row, "last_seen_at")?),
        id,
    })
}

fn offer_view(
    r: &SqliteRow,
    components: Vec<OfferComponentView>,
    history: Vec<OfferHistoryView>,
) -> Result<OfferView> {
    let lead = components.first();
    Ok(OfferView {
        id: get(r, "id")?,
        tenant: get(r, "tenant_id")?,
        customer: get(r, "customer_id")?,
        site: get(r, "site_id")?,
        machine: get(r, "machine_id")?,
        status: get(r, "status")?,
        urgent: get::<i64>(r, "urgent")? != 0,
        window_start: Rfc3339(ms(get(r, "window_start")?)),
        window_end: Rfc3339(ms(get(r, "window_end")?)),
        rul_p10_h: lead.and_then(|c| c.rul_p10_h),
        rul_p50_h: lead.and_then(|c| c.rul_p50_h),
        rul_p90_h: lead.and_then(|c| c.rul_p90_h),
        p_fail_before_window: get(r, "p_fail_before_window")?,
        p_fail_before_next_window: get(r, "p_fail_before_next")?,
        risk_tolerance: get(r, "risk_tolerance")?,
        price: PriceView {
            parts_cents: get(r, "parts_cents")?,
            labour_cents: get(r, "labour_cents")?,
            travel_cents: get(r, "travel_cents")?,
            coverage_cents: get(r, "coverage_cents")?,
            total_cents: get(r, "total_cents")?,
            cost_of_waiting_cents: get(r, "cost_of_waiting_cents")?,
            currency: get(r, "currency")?,
        },
        explanation: get(r, "explanation")?,
        superseded_by: get(r, "superseded_by")?,
        created_at: Rfc3339(ms(get(r, "created_at")?)),
        updated_at: Rfc3339(ms(get(r, "updated_at")?)),
        components,
        history,
    })
}

/// Inserts a proposed offer, or nothing (`None`) if one of its components already has
/// an open offer: the database holds one claim per component while an offer is open.
async fn insert_offer(
    tx: &mut Transaction<'_, Sqlite>,
    machine: &MachineInput,
    draft: &OfferDraft,
    now: UnixMs,
    note: &str,
) -> Result<Option<String>> {
    for c in &draft.components {
        let held: Option<String> = sqlx::query_scalar(
            "SELECT offer_id FROM open_offer_components WHERE machine_id = ? AND component = ?",
        )
        .bind(machine.machine.as_str())
        .bind(c.key.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(other) = held {
            tracing::debug!(machine = %machine.machine, component = %c.key, offer = %other,
                "component already has an open offer; not proposing another");
            return Ok(None);
        }
    }
    let id = format!("of-{}", uuid::Uuid::now_v7().simple());
    let p = &draft.price;
    // The revenue split (analytics): what the contract covers of the parts; the rest
    // of the coverage is labour and travel's, so the two add up to `coverage_cents`.
    let parts_coverage_cents = ((p.parts_cents as f64 * machine.terms.parts_coverage).round()
        as i64)
        .clamp(0, p.coverage_cents.max(0));
    // One statement that writes first: a transaction that reads first fails at once
    // (SQLITE_BUSY, whatever the busy timeout) when another connection, such as the
    // outbox worker, wrote in between.
    let inserted = sqlx::query(
        "INSERT INTO offers (id, tenant_id, customer_id, site_id, machine_id, status, urgent,
           window_start, window_end, p_fail_before_window, p_fail_before_next, risk_tolerance,
           parts_cents, labour_cents, travel_cents, coverage_cents, total_cents, cost_of_waiting_cents,
           currency, explanation, created_at, updated_at, parts_coverage_cents, labour_coverage_cents)
         SELECT ?, m.tenant_id, m.customer_id, m.site_id, m.id, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?,
           ?, ?, ?, ?, ?, ?, ?, ?, ?
         FROM machines m WHERE m.id = ?",
    )
    .bind(&id)
    .bind(draft.urgent as i64)
    .bind(draft.window.start.0)
    .bind(draft.window.end.0)
    .bind(draft.p_fail_before_window)
    .bind(draft.p_fail_before_next)
    .bind(draft.risk_tolerance)
    .bind(p.parts_cents)
    .bind(p.labour_cents)
    .bind(p.travel_cents)
    .bind(p.coverage_cents)
    .bind(p.total_cents)
    .bind(p.cost_of_waiting_cents)
    .bind(&p.currency)
    .bind(&draft.explanation)
    .bind(now.0)
    .bind(now.0)
    .bind(parts_coverage_cents)
    .bind(p.coverage_cents - parts_coverage_cents)
    .bind(machine.machine.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted != 1 {
        return Err(StoreError::Corrupt(format!(
            "offer for unknown machine {}",
            machine.machine
        )));
    }
    for c in &draft.components {
        sqlx::query(
            "INSERT INTO offer_components (offer_id, machine_id, component, part_id, rul_p10_h, rul_p50_h,
               rul_p90_h, p_fail_before_window, health_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(machine.machine.as_str())
        .bind(c.key.as_str())
        .bind(c.part.as_str())
        .bind(c.estimate.rul_p10_h)
        .bind(c.estimate.rul_p50_h)
        .bind(c.estimate.rul_p90_h)
        .bind(c.p_fail_before_window)
        .bind(c.estimate.health_index)
        .execute(&mut **tx)
        .await?;
    }
    for c in &draft.components {
        sqlx::query(
            "INSERT INTO open_offer_components (machine_id, component, offer_id) VALUES (?, ?, ?)",
        )
        .bind(machine.machine.as_str())
        .bind(c.key.as_str())
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    }
    record_history(tx, &id, None, "proposed", now, note).await?;
    Ok(Some(id))
}

/// Moves a `proposed` offer to `to`; false if it was no longer proposed.
async fn transition(
    tx: &mut Transaction<'_, Sqlite>,
    offer: &str,
    to: &str,
    now: UnixMs,
    note: &str,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE offers SET status = ?, updated_at = ? WHERE id = ? AND status = 'proposed'",
    )
    .bind(to)
    .bind(now.0)
    .bind(offer)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed > 0 {
        release_open_offer(tx, offer).await?;
        record_history(tx, offer, Some("proposed"), to, now, note).await?;
    }
    Ok(changed > 0)
}

fn parse_specs(json: &str) -> Result<Vec<ComponentSpec>> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("component specs: {e}")))
}

fn parse_estimate(json: &str) -> Result<RulEstimate> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("stored estimate: {e}")))
}

fn parse_id<T: FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    T::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The INSERT of [`record_batch`].
const RECORD_BATCH: &str =
    "INSERT INTO ingested_batches (batch_id, gateway_id, received_at, windows, events)
     VALUES (?, ?, ?, ?, ?) ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id";

/// Windows upserted per statement: 11 parameters each, well under SQLite's 32 766.
const WINDOWS_PER_STATEMENT: usize = 400;

/// The columns of `telemetry_windows`, in the order the upserts write and return them.
pub(crate) const WINDOW_COLUMNS: &str =
    "machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts";

/// Records `batch` in `ingested_batches` (id, gateway, when, how many windows and
/// events) with `sql`, the backend's `INSERT ... ON CONFLICT (batch_id) DO NOTHING
/// RETURNING batch_id`: true if it was not there, false if the batch was stored before.
pub(crate) async fn record_batch<'c, DB, E>(
    conn: E,
    sql: &'static str,
    batch: &IngestBatch,
    keep: &BatchSelection,
    now: UnixMs,
) -> Result<bool>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let inserted = sqlx::query(sql)
        .bind(batch.batch_id.as_str())
        .bind(batch.gateway.as_str())
        .bind(now.0)
        .bind(keep.windows.len() as i64)
        .bind(keep.events.len() as i64)
        .fetch_optional(conn)
        .await?;
    Ok(inserted.is_some())
}

/// What a fresh batch comes to before any statement runs, and what storing it
/// gathers; both backends store a batch from it.
pub(crate) struct IngestPlan<'a> {
    /// The kept windows in batch order, cut into multi-row upserts of at most the
    /// backend's statement size with no window key twice in one (one statement cannot
    /// merge into a row it wrote itself): a key seen again starts the next statement,
    /// so the second merges into what the first stored, as one statement per window
    /// would.
    pub(crate) statements: Vec<Vec<&'a WindowAggregate>>,
    /// Every (machine, channel) the windows name, once each, sorted.
    pub(crate) channels: Vec<(&'a str, &'a str)>,
    /// Per machine the batch touches, the time its `last_seen_at` moves up to (at
    /// least 0): the latest `last_ts` of its windows, then of its new events
    /// ([`IngestPlan::touch`]).
    pub(crate) touched: HashMap<&'a str, i64>,
    /// When the caller wants them, each window as stored, in batch order, appended
    /// by the upserts.
    pub(crate) stored_windows: Option<Vec<WindowAggregate>>,
}

impl<'a> IngestPlan<'a> {
    pub(crate) fn new(
        batch: &'a IngestBatch,
        keep: &BatchSelection,
        per_statement: usize,
        want_windows: bool,
    ) -> Self {
        let mut plan = Self {
            statements: Vec::new(),
            channels: Vec::new(),
            touched: HashMap::new(),
            stored_windows: want_windows.then(|| Vec::with_capacity(keep.windows.len())),
        };
        let mut channels: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut chunk: Vec<&WindowAggregate> = Vec::new();
        let mut keys: HashSet<(&str, &str, i64)> = HashSet::new();
        for &i in &keep.windows {
            let w = &batch.windows[i];
            let key = (w.machine.as_str(), w.channel.as_str(), w.start.0);
            if chunk.len() == per_statement || keys.contains(&key) {
                plan.statements.push(std::mem::take(&mut chunk));
                keys.clear();
            }
            keys.insert(key);
            chunk.push(w);
            plan.touch(w.machine.as_str(), w.last_ts.0);
            channels.insert((w.machine.as_str(), w.channel.as_str()));
        }
        if !chunk.is_empty() {
            plan.statements.push(chunk);
        }
        plan.channels = channels.into_iter().collect();
        plan
    }

    /// Marks `machine` as touched by the batch, seen at `ts` or later.
    pub(crate) fn touch(&mut self, machine: &'a str, ts: i64) {
        let seen = self.touched.entry(machine).or_insert(0);
        *seen = (*seen).max(ts);
    }

    /// The answer for the batch once stored.
    pub(crate) fn answer(self, keep: &BatchSelection) -> StoredBatch {
        StoredBatch {
            duplicate: false,
            windows: keep.windows.len() as u64,
            events: keep.events.len() as u64,
            statuses: keep.statuses.len() as u64,
            stored_windows: self.stored_windows.unwrap_or_default(),
        }
    }
}

/// A `telemetry_windows` row as an upsert returns it ([`WINDOW_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct WindowRow {
    machine_id: String,
    channel: String,
    start_ms: i64,
    end_ms: i64,
    n: i64,
    mean: f64,
    m2: f64,
    vmin: f64,
    vmax: f64,
    vlast: f64,
    last_ts: i64,
}

/// Appends to `stored` each window of `chunk` as `rows` (what its upsert returned)
/// say it now reads, in `chunk`'s order: a window the gateway sent in parts (a late
/// sample after its group closed) is stored merged, and that is what goes on to the
/// sinks. RETURNING's order is not guaranteed, so rows are matched to windows by key.
pub(crate) fn push_stored_windows(
    chunk: &[&WindowAggregate],
    rows: Vec<WindowRow>,
    stored: &mut Vec<WindowAggregate>,
) -> Result<()> {
    let mut by_key: HashMap<(String, String, i64), WindowRow> = rows
        .into_iter()
        .map(|row| {
            (
                (row.machine_id.clone(), row.channel.clone(), row.start_ms),
                row,
            )
        })
        .collect();
    for w in chunk {
        let key = (w.machine.to_string(), w.channel.to_string(), w.start.0);
        let row = by_key.remove(&key).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "no stored window for {}/{} at {}",
                w.machine, w.channel, w.start.0
            ))
        })?;
        stored.push(WindowAggregate {
            end: UnixMs(row.end_ms),
            count: row.n.max(0) as u64,
            mean: row.mean,
            min: row.vmin,
            max: row.vmax,
            std: if row.n > 1 {
                (row.m2.max(0.0) / (row.n - 1) as f64).sqrt()
            } else {
                0.0
            },
            last: row.vlast,
            last_ts: UnixMs(row.last_ts),
            ..(*w).clone()
        });
    }
    Ok(())
}

/// Upserts `chunk` (no two windows with the same key) in one statement, merging each
/// into a window already stored under its key; with `stored`, appends what is stored
/// for each, in `chunk`'s order.
async fn upsert_windows(
    tx: &mut Transaction<'static, Sqlite>,
    chunk: &[&WindowAggregate],
    stored: Option<&mut Vec<WindowAggregate>>,
) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("INSERT INTO telemetry_windows ({WINDOW_COLUMNS}) "));
    q.push_values(chunk, |mut b, w| {
        b.push_bind(w.machine.as_str())
            .push_bind(w.channel.as_str())
            .push_bind(w.start.0)
            .push_bind(w.end.0)
            .push_bind(w.count as i64)
            .push_bind(w.mean)
            .push_bind(w.m2())
            .push_bind(w.min)
            .push_bind(w.max)
            .push_bind(w.last)
            .push_bind(w.last_ts.0);
    });
    q.push(
        " ON CONFLICT (machine_id, channel, start_ms) DO UPDATE SET
           end_ms = MAX(end_ms, excluded.end_ms),
           n = n + excluded.n,
           mean = (mean * n + excluded.mean * excluded.n) / (n + excluded.n),
           m2 = m2 + excluded.m2
                + (excluded.mean - mean) * (excluded.mean - mean) * n * excluded.n / (n + excluded.n),
           vmin = MIN(vmin, excluded.vmin),
           vmax = MAX(vmax, excluded.vmax),
           vlast = CASE WHEN excluded.last_ts >= last_ts THEN excluded.vlast ELSE vlast END,
           last_ts = MAX(last_ts, excluded.last_ts)",
    );
    let Some(stored) = stored else {
        q.build().execute(&mut **tx).await?;
        return Ok(());
    };
    q.push(format!(" RETURNING {WINDOW_COLUMNS}"));
    let rows: Vec<WindowRow> = q.build_query_as().fetch_all(&mut **tx).await?;
    push_stored_windows(chunk, rows, stored)
}
