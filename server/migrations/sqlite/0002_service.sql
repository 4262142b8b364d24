-- Field service: one-off planned stops, depot stock, technicians and their absences,
-- work orders, offer decisions, the life history of every component, and the outbox
-- of notifications. Instants are Unix ms of the platform clock unless noted.

-- Planned stops outside the weekly schedule (a customer's shutdown week, a holiday).
CREATE TABLE maintenance_stops (
    id          TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL REFERENCES sites(id),
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL CHECK (end_ms > start_ms),
    note        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX maintenance_stops_by_site ON maintenance_stops (site_id, start_ms);

-- Units on the service depot's shelf, and how many are promised to open work orders.
ALTER TABLE parts ADD COLUMN stock INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0);
ALTER TABLE parts ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0);

CREATE TABLE technicians (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    email        TEXT,
    home_region  TEXT NOT NULL,
    -- JSON array of machine model ids the technician is qualified for.
    skills_json  TEXT NOT NULL,
    active       INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE technician_absences (
    id             TEXT PRIMARY KEY,
    technician_id  TEXT NOT NULL REFERENCES technicians(id),
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL CHECK (end_ms > start_ms),
    reason         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX technician_absences_by_technician ON technician_absences (technician_id, start_ms);

CREATE TABLE work_orders (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    offer_id        TEXT NOT NULL UNIQUE REFERENCES offers(id),
    machine_id      TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    -- unassigned (no qualified technician free yet) | scheduled | completed | cancelled
    status          TEXT NOT NULL,
    technician_id   TEXT REFERENCES technicians(id),
    -- The planned stop the work happens in.
    window_start    INTEGER NOT NULL,
    window_end      INTEGER NOT NULL,
    -- The technician's booking (travel included) while scheduled.
    booked_start    INTEGER,
    booked_end      INTEGER,
    travel_minutes  INTEGER,
    notes           TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX work_orders_by_technician ON work_orders (technician_id, booked_start);
CREATE INDEX work_orders_by_status ON work_orders (status, window_start);

CREATE TABLE work_order_components (
    work_order_id  TEXT NOT NULL REFERENCES work_orders(id),
    component      TEXT NOT NULL,
    part_id        TEXT NOT NULL,
    -- Recorded at completion: good | worn | failed
    as_found       TEXT,
    life_hours     REAL,
    notes          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (work_order_id, component)
);

ALTER TABLE offers ADD COLUMN decline_reason TEXT;
ALTER TABLE offers ADD COLUMN decided_at INTEGER;
ALTER TABLE offers ADD COLUMN work_order_id TEXT;

-- Every ended life of every component: the fleet life prior learns from these (a life
-- ended by a planned replacement is right-censored).
CREATE TABLE component_lives (
    machine_id     TEXT NOT NULL,
    component      TEXT NOT NULL,
    part_id        TEXT NOT NULL,
    installed_at   INTEGER NOT NULL,
    ended_at       INTEGER NOT NULL,
    end_reason     TEXT NOT NULL CHECK (end_reason IN ('failure', 'replaced')),
    as_found       TEXT,
    work_order_id  TEXT,
    PRIMARY KEY (machine_id, component, installed_at)
);
CREATE INDEX component_lives_by_part ON component_lives (part_id);

-- Notifications written in the same transaction as the change they announce, and
-- delivered (with retries) by the outbox worker, so none is lost if a receiver is down.
-- `next_attempt_at` and `delivered_at` are real (wall-clock) time: retries wait for real
-- receivers, whatever the platform clock does.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    channel          TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
    target           TEXT NOT NULL,
    event            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
