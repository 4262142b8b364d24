//! Retention: raw telemetry windows older than the retention period become hourly
//! roll-ups (migration 0015), and batch ids older than it are forgotten.
//!
//! A pass works through the raw windows oldest first, one day of window starts per
//! transaction, so a long backlog (the first pass on an old database) never holds the
//! write lock for long and each transaction's work is bounded.

use wearcast_protocol::UnixMs;

use super::StoreError;
use super::db::{Pool, q};

type Result<T> = std::result::Result<T, StoreError>;

const HOUR_MS: i64 = 3_600_000;
/// Window starts rolled up per transaction.
const CHUNK_MS: i64 = 24 * HOUR_MS;

/// What one retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Raw windows merged into hourly roll-ups (and deleted).
    pub windows_rolled_up: u64,
    /// Hourly rows written or extended.
    pub hours_written: u64,
    /// Batch ids forgotten.
    pub batches_forgotten: u64,
}

/// The roll-up of the raw windows starting in `[$2, $3)` into their hours (`$1` ms):
/// one row per machine, channel and hour: count, the count-weighted mean, M2 by the
/// parallel formula (sum of M2 plus the spread of the window means), and the last value
/// of the window seen last; merged the same way into an hour already rolled up.
/// Portable SQL (`store::db`): sums cast to fixed types (PostgreSQL's SUM of a BIGINT
/// is NUMERIC), `CASE` for the two-value MAX/MIN SQLite has and PostgreSQL does not,
/// and the hour computed before grouping, so the last-value subquery only names grouped
/// columns.
const ROLL_UP: &str = "INSERT INTO telemetry_hourly
       (machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts)
     SELECT machine_id, channel, hour, end_ms, n, mean,
            CASE WHEN m2 > 0.0 THEN m2 ELSE 0.0 END, vmin, vmax, vlast, last_ts
     FROM (
         SELECT w.machine_id, w.channel, w.hour,
                MAX(w.end_ms) AS end_ms,
                CAST(SUM(w.n) AS BIGINT) AS n,
                SUM(w.n * w.mean) / CAST(SUM(w.n) AS DOUBLE PRECISION) AS mean,
                SUM(w.m2) + SUM(w.n * w.mean * w.mean)
                    - SUM(w.n * w.mean) * SUM(w.n * w.mean)
                      / CAST(SUM(w.n) AS DOUBLE PRECISION) AS m2,
                MIN(w.vmin) AS vmin, MAX(w.vmax) AS vmax,
                (SELECT l.vlast FROM telemetry_windows l
                  WHERE l.machine_id = w.machine_id AND l.channel = w.channel
                    AND l.start_ms >= w.hour AND l.start_ms < w.hour + $1
                    AND l.start_ms >= $2 AND l.start_ms < $3
                  ORDER BY l.last_ts DESC, l.start_ms DESC LIMIT 1) AS vlast,
                MAX(w.last_ts) AS last_ts
         FROM (SELECT r.*, (r.start_ms / $1) * $1 AS hour FROM telemetry_windows r
               WHERE r.start_ms >= $2 AND r.start_ms < $3 AND r.n > 0) w
         GROUP BY w.machine_id, w.channel, w.hour
     ) hours WHERE true
     ON CONFLICT (machine_id, channel, start_ms) DO UPDATE SET
       end_ms = CASE WHEN excluded.end_ms > telemetry_hourly.end_ms
                     THEN excluded.end_ms ELSE telemetry_hourly.end_ms END,
       n = telemetry_hourly.n + excluded.n,
       mean = (telemetry_hourly.mean * telemetry_hourly.n + excluded.mean * excluded.n)
              / (telemetry_hourly.n + excluded.n),
       m2 = telemetry_hourly.m2 + excluded.m2
            + (excluded.mean - telemetry_hourly.mean) * (excluded.mean - telemetry_hourly.mean)
              * telemetry_hourly.n * excluded.n / (telemetry_hourly.n + excluded.n),
       vmin = CASE WHEN excluded.vmin < telemetry_hourly.vmin
                   THEN excluded.vmin ELSE telemetry_hourly.vmin END,
       vmax = CASE WHEN excluded.vmax > telemetry_hourly.vmax
                   THEN excluded.vmax ELSE telemetry_hourly.vmax END,
       vlast = CASE WHEN excluded.last_ts >= telemetry_hourly.last_ts
                    THEN excluded.vlast ELSE telemetry_hourly.vlast END,
       last_ts = CASE WHEN excluded.last_ts > telemetry_hourly.last_ts
                      THEN excluded.last_ts ELSE telemetry_hourly.last_ts END";

impl Pool {
    /// Merges every raw window that starts before `cutoff` (aligned down to an hour)
    /// into its hour's roll-up, deleting it, and forgets batch ids received before
    /// `batches_before`.
    pub async fn apply_retention(
        &self,
        cutoff: UnixMs,
        batches_before: UnixMs,
    ) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let cutoff = cutoff.0.div_euclid(HOUR_MS) * HOUR_MS;
        loop {
            let oldest: Option<i64> = q("SELECT MIN(start_ms) AS oldest FROM telemetry_windows")
                .fetch_optional(self)
                .await?
                .map(|r| r.get("oldest"))
                .transpose()?
                .flatten();
            let Some(oldest) = oldest.filter(|o| *o < cutoff) else {
                break;
            };
            let until = (oldest.div_euclid(HOUR_MS) * HOUR_MS + CHUNK_MS).min(cutoff);
            let (windows, hours) = self.roll_up(oldest, until).await?;
            report.windows_rolled_up += windows;
            report.hours_written += hours;
        }
        report.batches_forgotten = q("DELETE FROM ingested_batches WHERE received_at < $1")
            .bind(batches_before.0)
            .execute(self)
            .await?;
        Ok(report)
    }

    /// Rolls up the raw windows starting in `[from, until)` (`until` on an hour), in
    /// one transaction: (windows merged, hourly rows written).
    async fn roll_up(&self, from: i64, until: i64) -> Result<(u64, u64)> {
        let mut tx = self.begin_write().await?;
        let hours = q(ROLL_UP)
            .bind(HOUR_MS)
            .bind(from)
            .bind(until)
            .execute_in(&mut tx)
            .await?;
        let windows = q("DELETE FROM telemetry_windows WHERE start_ms >= $1 AND start_ms < $2")
            .bind(from)
            .bind(until)
            .execute_in(&mut tx)
            .await?;
        tx.commit().await?;
        Ok((windows, hours))
    }

    /// How many raw windows and hourly roll-ups are kept (for `/metrics` and tests).
    pub async fn telemetry_rows(&self) -> Result<(i64, i64)> {
        let rows = q("SELECT (SELECT COUNT(*) FROM telemetry_windows) AS raw,
                             (SELECT COUNT(*) FROM telemetry_hourly) AS hourly")
        .fetch_all(self)
        .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("COUNT answered no row".into()))?;
        Ok((row.get("raw")?, row.get("hourly")?))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::store::Store;

    /// One raw window of `samples`, as the gateway would send it.
    struct Raw {
        machine: &'static str,
        start: i64,
        samples: Vec<(i64, f64)>,
    }

    fn stats(values: &[f64]) -> (i64, f64, f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let m2 = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (values.len() as i64, mean, m2, min, max)
    }

    async fn insert(store: &Store, w: &Raw) {
        let values: Vec<f64> = w.samples.iter().map(|s| s.1).collect();
        let (n, mean, m2, min, max) = stats(&values);
        let last = w.samples.iter().max_by_key(|s| s.0).unwrap();
        sqlx::query(
            "INSERT INTO telemetry_windows (machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts)
             VALUES (?, 'spindle.temp', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(w.machine)
        .bind(w.start)
        .bind(w.start + 60_000)
        .bind(n)
        .bind(mean)
        .bind(m2)
        .bind(min)
        .bind(max)
        .bind(last.1)
        .bind(last.0)
        .execute(store.pool())
        .await
        .unwrap();
    }

    /// Each of the first three hours' roll-up holds exactly the statistics of its
    /// samples (and of `late`'s, when it falls in the hour).
    async fn check(store: &Store, raws: &[Raw], base: i64, late: Option<&Raw>) {
        for machine in ["m-1", "m-2"] {
            for hour in 0..3_i64 {
                let start = base + hour * HOUR_MS;
                let in_hour = |w: &&Raw| {
                    w.machine == machine && w.start >= start && w.start < start + HOUR_MS
                };
                let mut samples: Vec<(i64, f64)> = raws
                    .iter()
                    .filter(in_hour)
                    .flat_map(|w| w.samples.clone())
                    .collect();
                if let Some(l) = late.filter(|l| in_hour(l)) {
                    samples.extend(l.samples.clone());
                }
                let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
                let (n, mean, m2, min, max) = stats(&values);
                let last = samples.iter().max_by_key(|s| s.0).unwrap().1;
                let row = sqlx::query(
                    "SELECT n, mean, m2, vmin, vmax, vlast FROM telemetry_hourly
                     WHERE machine_id = ? AND channel = 'spindle.temp' AND start_ms = ?",
                )
                .bind(machine)
                .bind(start)
                .fetch_one(store.pool())
                .await
                .unwrap();
                let got: (i64, f64, f64, f64, f64, f64) = (
                    row.get("n"),
                    row.get("mean"),
                    row.get("m2"),
                    row.get("vmin"),
                    row.get("vmax"),
                    row.get("vlast"),
                );
                assert_eq!(got.0, n, "{machine} hour {hour}");
                assert!(
                    close(got.1, mean),
                    "{machine} hour {hour}: mean {} vs {mean}",
                    got.1
                );
                assert!(
                    close(got.2, m2),
                    "{machine} hour {hour}: m2 {} vs {m2}",
                    got.2
                );
                assert_eq!(
                    (got.3, got.4, got.5),
                    (min, max, last),
                    "{machine} hour {hour}"
                );
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[tokio::test]
    async fn old_windows_become_exact_hourly_rollups_and_late_ones_merge_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let base = 1_700_000_000_000_i64.div_euclid(HOUR_MS) * HOUR_MS;
        // Three hours of one-minute windows with different levels and spreads, on two
        // machines, plus windows in the hour that stays raw.
        let mut raws = Vec::new();
        for machine in ["m-1", "m-2"] {
            for minute in 0..200_i64 {
                let start = base + minute * 60_000;
                let level =
                    80.0 + (minute / 60) as f64 * 5.0 + if machine == "m-2" { 100.0 } else { 0.0 };
                let samples = (0..(1 + minute % 4))
                    .map(|k| {
                        (
                            start + k * 10_000,
                            level + ((minute * 7 + k * 3) % 11) as f64 * 0.37,
                        )
                    })
                    .collect();
                raws.push(Raw {
                    machine,
                    start,
                    samples,
                });
            }
        }
        for w in &raws {
            insert(&store, w).await;
        }
        // Keep the last hour (from base + 3h) raw.
        let cutoff = UnixMs(base + 3 * HOUR_MS + 1234);
        let r = store.apply_retention(cutoff, UnixMs(0)).await.unwrap();
        let rolled = raws.iter().filter(|w| w.start < base + 3 * HOUR_MS).count() as u64;
        assert_eq!(r.windows_rolled_up, rolled);
        assert_eq!(r.hours_written, 6);
        let (raw_left, hourly) = store.telemetry_rows().await.unwrap();
        assert_eq!(
            (raw_left as usize, hourly),
            (raws.len() - rolled as usize, 6)
        );

        check(&store, &raws, base, None).await;

        // A late window for an hour already rolled up merges into it at the next pass.
        let late = &Raw {
            machine: "m-1",
            start: base + HOUR_MS + 30 * 60_000 + 30_000,
            samples: vec![
                (base + 2 * HOUR_MS - 1, 500.0),
                (base + HOUR_MS + 40 * 60_000, -3.0),
            ],
        };
        insert(&store, late).await;
        let r = store.apply_retention(cutoff, UnixMs(0)).await.unwrap();
        assert_eq!((r.windows_rolled_up, r.hours_written), (1, 1));
        check(&store, &raws, base, Some(late)).await;

        // Readers see every sample once: the API's view of the rolled-up hour.
        let view = store
            .telemetry(
                "m-1",
                "spindle.temp",
                UnixMs(base),
                UnixMs(base + 4 * HOUR_MS),
                10_000,
            )
            .await
            .unwrap();
        let total: i64 = view.windows.iter().map(|w| w.count).sum();
        let expected: usize = raws
            .iter()
            .filter(|w| w.machine == "m-1")
            .map(|w| w.samples.len())
            .sum::<usize>()
            + late.samples.len();
        assert_eq!(total as usize, expected);
    }

    #[tokio::test]
    async fn batch_ids_past_their_retention_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        for (id, at) in [("b-old", 1_000_i64), ("b-new", 5_000)] {
            sqlx::query(
                "INSERT INTO ingested_batches (batch_id, gateway_id, received_at, windows, events)
                 VALUES (?, 'gw', ?, 0, 0)",
            )
            .bind(id)
            .bind(at)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let r = store
            .apply_retention(UnixMs(0), UnixMs(2_000))
            .await
            .unwrap();
        assert_eq!(r.batches_forgotten, 1);
        let left: Vec<String> = sqlx::query_scalar("SELECT batch_id FROM ingested_batches")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ["b-new"]);
    }
}

/// The ingest path's multi-row upsert (`Store::store_batch`), which the retention
/// roll-ups build on.
#[cfg(test)]
mod ingest_tests {
    use wearcast_protocol::{IngestBatch, WindowAggregate};

    use super::*;
    use crate::store::BatchSelection;
    use crate::store::Store;

    fn window(machine: &str, start: i64, values: &[f64], last_ts: i64) -> WindowAggregate {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        WindowAggregate {
            tenant: "acme".parse().unwrap(),
            machine: machine.parse().unwrap(),
            channel: "spindle.temp".parse().unwrap(),
            start: UnixMs(start),
            end: UnixMs(start + 60_000),
            count: values.len() as u64,
            mean,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            std: var.sqrt(),
            last: *values.last().unwrap(),
            last_ts: UnixMs(last_ts),
        }
    }

    fn batch(id: &str, windows: Vec<WindowAggregate>) -> (IngestBatch, BatchSelection) {
        let keep = BatchSelection {
            windows: (0..windows.len()).collect(),
            ..BatchSelection::default()
        };
        let batch = IngestBatch {
            batch_id: id.parse().unwrap(),
            gateway: "gw-1".parse().unwrap(),
            created_at: UnixMs(0),
            windows,
            events: vec![],
            statuses: vec![],
        };
        (batch, keep)
    }

    #[tokio::test]
    async fn windows_are_stored_in_bulk_and_a_key_seen_again_merges_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        // More windows than one statement takes, one key twice in the same batch.
        let mut windows: Vec<WindowAggregate> = (0..1000)
            .map(|i| {
                window(
                    &format!("m-{}", i % 7),
                    i * 60_000,
                    &[i as f64, i as f64 + 2.0],
                    i * 60_000 + 1,
                )
            })
            .collect();
        windows.insert(500, window("m-0", 0, &[10.0, 20.0, 30.0], 50));
        let (b, keep) = batch("b-1", windows.clone());
        let stored = store.store_batch(&b, &keep, UnixMs(0), true).await.unwrap();
        assert_eq!(stored.stored_windows.len(), 1001);
        // In the batch's order, each as stored after its merge.
        for (w, s) in windows.iter().zip(&stored.stored_windows) {
            assert_eq!((&w.machine, w.start), (&s.machine, s.start));
        }
        let merged = &stored.stored_windows[500];
        let all = [0.0, 2.0, 10.0, 20.0, 30.0];
        let mean = all.iter().sum::<f64>() / 5.0;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert_eq!(merged.count, 5);
        assert!((merged.mean - mean).abs() < 1e-12);
        assert!((merged.std - var.sqrt()).abs() < 1e-9);
        assert_eq!((merged.min, merged.max, merged.last), (0.0, 30.0, 30.0));
        // The first of the two, as stored when it came: not yet merged.
        assert_eq!(stored.stored_windows[0].count, 2);

        // A later batch with the same key merges too; a redelivered batch is a no-op.
        let (b2, keep2) = batch("b-2", vec![window("m-0", 0, &[-5.0], 40)]);
        let again = store
            .store_batch(&b2, &keep2, UnixMs(0), true)
            .await
            .unwrap();
        let w = &again.stored_windows[0];
        assert_eq!((w.count, w.min, w.last), (6, -5.0, 30.0), "{w:?}");
        assert!(
            store
                .store_batch(&b, &keep, UnixMs(0), false)
                .await
                .unwrap()
                .duplicate
        );
        let (raw, _) = store.telemetry_rows().await.unwrap();
        assert_eq!(raw, 1000);
    }
}
