-- The live wear model (server/src/model/online.rs): state kept between analysis
-- cycles, so each cycle folds in only the new telemetry buckets (O(1) per bucket),
-- and what the fleet learns from the lives it watched end.

-- One incremental model state per component; `installed_at` says which install it
-- belongs to (a replacement starts a new state).
CREATE TABLE model_component_state (
    machine_id    TEXT NOT NULL,
    component     TEXT NOT NULL,
    installed_at  INTEGER NOT NULL,
    -- The first bucket seen of this install: from then on its survival was watched.
    first_bucket  INTEGER,
    last_bucket   INTEGER,
    state_json    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (machine_id, component)
);

-- Lives the live model saw end (failure or replacement), with the onset it detected:
-- the fleet's life prior and warning interval learn from them.
CREATE TABLE model_lives (
    machine_id    TEXT NOT NULL,
    component     TEXT NOT NULL,
    part_id       TEXT NOT NULL,
    installed_at  INTEGER NOT NULL,
    ended_at      INTEGER NOT NULL,
    -- When the platform first saw the part (its survival before that was not watched:
    -- the life is left-truncated there).
    observed_from INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    onset_at      INTEGER,
    alarm_at      INTEGER,
    PRIMARY KEY (machine_id, component, installed_at)
);
CREATE INDEX model_lives_by_part ON model_lives (part_id);

-- What the fleet knows per part type: the Weibull life (the manifest's prior updated
-- with observed lives, right-censored where a part was replaced or still runs) and the
-- warning interval (onset alarm to failure).
CREATE TABLE model_part_knowledge (
    part_id           TEXT PRIMARY KEY,
    life_shape        REAL NOT NULL,
    life_scale_hours  REAL NOT NULL,
    warning_median_h  REAL NOT NULL,
    warning_log_sd    REAL NOT NULL,
    lives             INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    warnings          INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- Sudden faults the live model saw: alerts, never replacement offers.
CREATE TABLE model_anomalies (
    machine_id   TEXT NOT NULL,
    component    TEXT NOT NULL,
    at           INTEGER NOT NULL,
    channel      TEXT NOT NULL,
    score        REAL NOT NULL,
    description  TEXT NOT NULL,
    PRIMARY KEY (machine_id, component, at)
);
