-- Mirrors server/migrations/sqlite/0012_model_predictions.sql in PostgreSQL's dialect
-- (types as in 0001_init.sql).
--
-- What the live model predicted, sampled once a day per component life, so its
-- accuracy and interval calibration can be scored when the life ends (the model
-- quality report, server/src/model/quality.rs). Only estimates with an interval are
-- kept: healthy, degrading and critical.
CREATE TABLE model_predictions (
    machine_id   TEXT NOT NULL,
    component    TEXT NOT NULL,
    -- The life the prediction is of (components.installed_at when it was made).
    installed_at BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    status       TEXT NOT NULL,
    p10_h        DOUBLE PRECISION,
    p50_h        DOUBLE PRECISION,
    p90_h        DOUBLE PRECISION,
    PRIMARY KEY (machine_id, component, installed_at, at)
);
