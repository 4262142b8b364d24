-- Mirrors server/migrations/sqlite/0010_model_state.sql in PostgreSQL's dialect (types as
-- in 0001_init.sql).
--
-- The live wear model (server/src/model/online.rs): state kept between analysis
-- cycles, so each cycle folds in only the new telemetry buckets (O(1) per bucket),
-- and what the fleet learns from the lives it watched end.

-- One incremental model state per component; `installed_at` says which install it
-- belongs to (a replacement starts a new state).
CREATE TABLE model_component_state (
    machine_id    TEXT NOT NULL,
    component     TEXT NOT NULL,
    installed_at  BIGINT NOT NULL,
    -- The first bucket seen of this install: from then on its survival was watched.
    first_bucket  BIGINT,
    last_bucket   BIGINT,
    state_json    TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (machine_id, component)
);

-- Lives the live model saw end (failure or replacement), with the onset it detected:
-- the fleet's life prior and warning interval learn from them.
CREATE TABLE model_lives (
    machine_id    TEXT NOT NULL,
    component     TEXT NOT NULL,
    part_id       TEXT NOT NULL,
    installed_at  BIGINT NOT NULL,
    ended_at      BIGINT NOT NULL,
    -- When the platform first saw the part (its survival before that was not watched:
    -- the life is left-truncated there).
    observed_from BIGINT NOT NULL,
    -- 0 or 1. BIGINT, not BOOLEAN: the store decodes it as an integer (it binds a Rust
    -- bool today, which SQLite stores as 0/1; the PostgreSQL queries must bind an i64).
    failed        BIGINT NOT NULL,
    onset_at      BIGINT,
    alarm_at      BIGINT,
    PRIMARY KEY (machine_id, component, installed_at)
);
CREATE INDEX model_lives_by_part ON model_lives (part_id);

-- What the fleet knows per part type: the Weibull life (the manifest's prior updated
-- with observed lives, right-censored where a part was replaced or still runs) and the
-- warning interval (onset alarm to failure).
CREATE TABLE model_part_knowledge (
    part_id           TEXT PRIMARY KEY,
    life_shape        DOUBLE PRECISION NOT NULL,
    life_scale_hours  DOUBLE PRECISION NOT NULL,
    warning_median_h  DOUBLE PRECISION NOT NULL,
    warning_log_sd    DOUBLE PRECISION NOT NULL,
    lives             BIGINT NOT NULL,
    failures          BIGINT NOT NULL,
    warnings          BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Sudden faults the live model saw: alerts, never replacement offers.
CREATE TABLE model_anomalies (
    machine_id   TEXT NOT NULL,
    component    TEXT NOT NULL,
    at           BIGINT NOT NULL,
    channel      TEXT NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    description  TEXT NOT NULL,
    PRIMARY KEY (machine_id, component, at)
);
