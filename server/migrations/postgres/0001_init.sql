-- Mirrors server/migrations/sqlite/0001_init.sql in PostgreSQL's dialect: the same
-- tables, columns (names, order, nullability, defaults, CHECKs), keys and indexes.
-- Types: SQLite INTEGER is BIGINT (the store decodes every integer column as i64,
-- flags such as `offers.urgent` included, which it reads as i64 and compares with 0),
-- REAL is DOUBLE PRECISION, TEXT is TEXT, and INTEGER PRIMARY KEY AUTOINCREMENT is an
-- identity column. WITHOUT ROWID has no PostgreSQL counterpart (every table is a heap
-- there) and is dropped.
--
-- Wearcast schema v1. Instants are Unix milliseconds (BIGINT); money is integer cents of
-- the tenant's currency.

CREATE TABLE tenants (
    id                          TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    currency                    TEXT NOT NULL,
    labour_rate_cents_per_hour  BIGINT NOT NULL
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
    travel_cost_cents  BIGINT NOT NULL
);

-- Weekly planned stops in the site's local time.
CREATE TABLE maintenance_windows (
    site_id           TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    weekday           BIGINT NOT NULL CHECK (weekday BETWEEN 0 AND 6), -- 0 = Monday
    start_minute      BIGINT NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    duration_minutes  BIGINT NOT NULL CHECK (duration_minutes > 0),
    PRIMARY KEY (site_id, weekday, start_minute)
);

CREATE TABLE parts (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    name                TEXT NOT NULL,
    price_cents         BIGINT NOT NULL,
    lead_time_days      DOUBLE PRECISION NOT NULL,
    labour_hours        DOUBLE PRECISION NOT NULL,
    life_shape          DOUBLE PRECISION NOT NULL,
    life_scale_hours    DOUBLE PRECISION NOT NULL
);

CREATE TABLE machine_models (
    id                            TEXT PRIMARY KEY,
    tenant_id                     TEXT NOT NULL REFERENCES tenants(id),
    name                          TEXT NOT NULL,
    downtime_cost_cents_per_hour  BIGINT NOT NULL,
    unplanned_downtime_hours      DOUBLE PRECISION NOT NULL,
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
    commissioned_at  BIGINT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'unknown',  -- online | offline | unknown
    status_at        BIGINT,
    last_seen_at     BIGINT,
    -- Bumped by every ingest that touches the machine, so the analysis only refreshes
    -- what changed.
    data_version     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE components (
    machine_id    TEXT NOT NULL REFERENCES machines(id),
    key           TEXT NOT NULL,
    part_id       TEXT NOT NULL REFERENCES parts(id),
    installed_at  BIGINT NOT NULL,
    failed_at     BIGINT,
    PRIMARY KEY (machine_id, key)
);

CREATE TABLE contracts (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    tier              TEXT NOT NULL,
    parts_coverage    DOUBLE PRECISION NOT NULL,
    labour_coverage   DOUBLE PRECISION NOT NULL,
    risk_tolerance    DOUBLE PRECISION NOT NULL,
    annual_fee_cents  BIGINT NOT NULL,
    start_at          BIGINT NOT NULL,
    renewal_at        BIGINT NOT NULL
);

-- Aggregated telemetry, one row per machine, channel and window. Windows with the same
-- key are merged by count (late data), so `m2` (sum of squared deviations) is stored
-- instead of the standard deviation.
CREATE TABLE telemetry_windows (
    machine_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    mean        DOUBLE PRECISION NOT NULL,
    m2          DOUBLE PRECISION NOT NULL,
    vmin        DOUBLE PRECISION NOT NULL,
    vmax        DOUBLE PRECISION NOT NULL,
    vlast       DOUBLE PRECISION NOT NULL,
    last_ts     BIGINT NOT NULL,
    PRIMARY KEY (machine_id, channel, start_ms)
);

-- Which channels each machine has reported, so listing them needs no scan of the
-- windows.
CREATE TABLE machine_channels (
    machine_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    PRIMARY KEY (machine_id, channel)
);

-- Every batch stored, so a batch delivered twice is stored once.
CREATE TABLE ingested_batches (
    batch_id     TEXT PRIMARY KEY,
    gateway_id   TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    windows      BIGINT NOT NULL,
    events       BIGINT NOT NULL
);

CREATE TABLE machine_events (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    machine_id  TEXT NOT NULL,
    ts          BIGINT NOT NULL,
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
    computed_at     BIGINT NOT NULL,
    data_version    BIGINT NOT NULL,
    status          TEXT NOT NULL,
    health_index    DOUBLE PRECISION NOT NULL,
    rul_p10_h       DOUBLE PRECISION,
    rul_p50_h       DOUBLE PRECISION,
    rul_p90_h       DOUBLE PRECISION,
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
    -- 0 or 1. BIGINT, not BOOLEAN: the store binds and decodes it as an integer.
    urgent                   BIGINT NOT NULL,
    window_start             BIGINT NOT NULL,
    window_end               BIGINT NOT NULL,
    p_fail_before_window     DOUBLE PRECISION NOT NULL,
    p_fail_before_next       DOUBLE PRECISION NOT NULL,
    risk_tolerance           DOUBLE PRECISION NOT NULL,
    parts_cents              BIGINT NOT NULL,
    labour_cents             BIGINT NOT NULL,
    travel_cents             BIGINT NOT NULL,
    coverage_cents           BIGINT NOT NULL,
    total_cents              BIGINT NOT NULL,
    cost_of_waiting_cents    BIGINT NOT NULL,
    currency                 TEXT NOT NULL,
    explanation              TEXT NOT NULL,
    superseded_by            TEXT,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX offers_by_machine ON offers (machine_id, status);
CREATE INDEX offers_by_status ON offers (status, window_start);

CREATE TABLE offer_components (
    offer_id              TEXT NOT NULL REFERENCES offers(id),
    machine_id            TEXT NOT NULL,
    component             TEXT NOT NULL,
    part_id               TEXT NOT NULL,
    rul_p10_h             DOUBLE PRECISION,
    rul_p50_h             DOUBLE PRECISION,
    rul_p90_h             DOUBLE PRECISION,
    p_fail_before_window  DOUBLE PRECISION NOT NULL,
    health_index          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (offer_id, component)
);

CREATE TABLE offer_history (
    offer_id     TEXT NOT NULL REFERENCES offers(id),
    at           BIGINT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    note         TEXT NOT NULL
);
CREATE INDEX offer_history_by_offer ON offer_history (offer_id, at);
