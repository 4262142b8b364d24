-- Wearcast schema v1 (SQLite). Instants are Unix milliseconds (INTEGER); money is
-- integer cents of the tenant's currency.

CREATE TABLE tenants (
    id                          TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    currency                    TEXT NOT NULL,
    labour_rate_cents_per_hour  INTEGER NOT NULL
);

CREATE TABLE customers (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    contact_email  TEXT
);

CREATE TABLE sites (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    customer_id        TEXT NOT NULL REFERENCES customers(id),
    name               TEXT NOT NULL,
    timezone           TEXT NOT NULL,
    region             TEXT NOT NULL,
    travel_cost_cents  INTEGER NOT NULL
);

-- Weekly planned stops in the site's local time.
CREATE TABLE maintenance_windows (
    site_id           TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    weekday           INTEGER NOT NULL CHECK (weekday BETWEEN 0 AND 6), -- 0 = Monday
    start_minute      INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    duration_minutes  INTEGER NOT NULL CHECK (duration_minutes > 0),
    PRIMARY KEY (site_id, weekday, start_minute)
);

CREATE TABLE parts (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    name                TEXT NOT NULL,
    price_cents         INTEGER NOT NULL,
    lead_time_days      REAL NOT NULL,
    labour_hours        REAL NOT NULL,
    life_shape          REAL NOT NULL,
    life_scale_hours    REAL NOT NULL
);

CREATE TABLE machine_models (
    id                            TEXT PRIMARY KEY,
    tenant_id                     TEXT NOT NULL REFERENCES tenants(id),
    name                          TEXT NOT NULL,
    downtime_cost_cents_per_hour  INTEGER NOT NULL,
    unplanned_downtime_hours      REAL NOT NULL,
    -- The component specs (keys, parts, wear channels with healthy/failure levels).
    components_json               TEXT NOT NULL
);

CREATE TABLE machines (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    customer_id      TEXT NOT NULL REFERENCES customers(id),
    site_id          TEXT NOT NULL REFERENCES sites(id),
    model_id         TEXT NOT NULL REFERENCES machine_models(id),
    serial           TEXT NOT NULL,
    commissioned_at  INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'unknown',  -- online | offline | unknown
    status_at        INTEGER,
    last_seen_at     INTEGER,
    -- Bumped by every ingest that touches the machine, so the analysis only refreshes
    -- what changed.
    data_version     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE components (
    machine_id    TEXT NOT NULL REFERENCES machines(id),
    key           TEXT NOT NULL,
    part_id       TEXT NOT NULL REFERENCES parts(id),
    installed_at  INTEGER NOT NULL,
    failed_at     INTEGER,
    PRIMARY KEY (machine_id, key)
);

CREATE TABLE contracts (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    tier              TEXT NOT NULL,
    parts_coverage    REAL NOT NULL,
    labour_coverage   REAL NOT NULL,
    risk_tolerance    REAL NOT NULL,
    annual_fee_cents  INTEGER NOT NULL,
    start_at          INTEGER NOT NULL,
    renewal_at        INTEGER NOT NULL
);

-- Aggregated telemetry, one row per machine, channel and window. Windows with the same
-- key are merged by count (late data), so `m2` (sum of squared deviations) is stored
-- instead of the standard deviation.
CREATE TABLE telemetry_windows (
    machine_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
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

-- Which channels each machine has reported, so listing them needs no scan of the
-- windows.
CREATE TABLE machine_channels (
    machine_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    PRIMARY KEY (machine_id, channel)
) WITHOUT ROWID;

-- Every batch stored, so a batch delivered twice is stored once.
CREATE TABLE ingested_batches (
    batch_id     TEXT PRIMARY KEY,
    gateway_id   TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    windows      INTEGER NOT NULL,
    events       INTEGER NOT NULL
);

CREATE TABLE machine_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id  TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    component   TEXT,
    code        TEXT,
    message     TEXT,
    batch_id    TEXT NOT NULL
);
CREATE INDEX machine_events_by_machine ON machine_events (machine_id, ts);
-- MQTT delivers at least once: the same event arriving again (in another batch) is the
-- same event.
CREATE UNIQUE INDEX machine_events_natural_key ON machine_events
    (machine_id, ts, kind, COALESCE(component, ''), COALESCE(code, ''));

-- The latest estimate per component (the model output the planner and UI read).
CREATE TABLE component_health (
    machine_id      TEXT NOT NULL,
    component       TEXT NOT NULL,
    computed_at     INTEGER NOT NULL,
    data_version    INTEGER NOT NULL,
    status          TEXT NOT NULL,
    health_index    REAL NOT NULL,
    rul_p10_h       REAL,
    rul_p50_h       REAL,
    rul_p90_h       REAL,
    estimate_json   TEXT NOT NULL,
    PRIMARY KEY (machine_id, component)
);

CREATE TABLE offers (
    id                       TEXT PRIMARY KEY,
    tenant_id                TEXT NOT NULL,
    customer_id              TEXT NOT NULL,
    site_id                  TEXT NOT NULL,
    machine_id               TEXT NOT NULL,
    status                   TEXT NOT NULL,  -- proposed | accepted | scheduled | completed | declined | expired | superseded
    urgent                   INTEGER NOT NULL,
    window_start             INTEGER NOT NULL,
    window_end               INTEGER NOT NULL,
    p_fail_before_window     REAL NOT NULL,
    p_fail_before_next       REAL NOT NULL,
    risk_tolerance           REAL NOT NULL,
    parts_cents              INTEGER NOT NULL,
    labour_cents             INTEGER NOT NULL,
    travel_cents             INTEGER NOT NULL,
    coverage_cents           INTEGER NOT NULL,
    total_cents              INTEGER NOT NULL,
    cost_of_waiting_cents    INTEGER NOT NULL,
    currency                 TEXT NOT NULL,
    explanation              TEXT NOT NULL,
    superseded_by            TEXT,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);
CREATE INDEX offers_by_machine ON offers (machine_id, status);
CREATE INDEX offers_by_status ON offers (status, window_start);

CREATE TABLE offer_components (
    offer_id              TEXT NOT NULL REFERENCES offers(id),
    machine_id            TEXT NOT NULL,
    component             TEXT NOT NULL,
    part_id               TEXT NOT NULL,
    rul_p10_h             REAL,
    rul_p50_h             REAL,
    rul_p90_h             REAL,
    p_fail_before_window  REAL NOT NULL,
    health_index          REAL NOT NULL,
    PRIMARY KEY (offer_id, component)
);

CREATE TABLE offer_history (
    offer_id     TEXT NOT NULL REFERENCES offers(id),
    at           INTEGER NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    note         TEXT NOT NULL
);
CREATE INDEX offer_history_by_offer ON offer_history (offer_id, at);
