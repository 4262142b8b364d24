-- Retention (the scale issue): raw telemetry windows are kept for a configurable
-- period (`[server.retention] raw_windows`); older ones are merged into one row per
-- machine, channel and hour, kept for the life of the machine. The merge is exact for
-- every statistic a window holds (count, mean, M2 by the parallel Welford formula,
-- min, max, last), so nothing read from the roll-ups differs from what the raw
-- windows of that hour would give at hourly resolution.
CREATE TABLE telemetry_hourly (
    machine_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    -- The hour, aligned to UTC hours (Unix ms).
    start_ms    INTEGER NOT NULL,
    -- The end of the latest window merged in (at most the hour's end).
    end_ms      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    mean        REAL NOT NULL,
    m2          REAL NOT NULL,
    vmin        REAL NOT NULL,
    vmax        REAL NOT NULL,
    vlast       REAL NOT NULL,
    last_ts     INTEGER NOT NULL,
    PRIMARY KEY (machine_id, channel, start_ms)
) WITHOUT ROWID;

-- What readers of telemetry see: the raw windows still kept and the hours rolled up.
-- A window is in exactly one of the two (a roll-up deletes the raw windows it merged,
-- in the same transaction), so sums over the view count every sample once. A late
-- window for an hour already rolled up sits in the raw table until the next pass
-- merges it in.
CREATE VIEW telemetry_series AS
    SELECT machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts
    FROM telemetry_windows
    UNION ALL
    SELECT machine_id, channel, start_ms, end_ms, n, mean, m2, vmin, vmax, vlast, last_ts
    FROM telemetry_hourly;

-- The retention pass finds and deletes raw windows by start time; the primary key
-- leads with the machine, so without this each pass would scan the whole table.
CREATE INDEX telemetry_windows_by_start ON telemetry_windows (start_ms);

-- Batches ids are kept to recognise a redelivered batch; past the retention period a
-- gateway can no longer hold one, so they may go (by received_at).
CREATE INDEX ingested_batches_by_received ON ingested_batches (received_at);
