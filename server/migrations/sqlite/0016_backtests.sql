-- Backtests of the wear models on run-to-failure history, published with `wearcast
-- backtest ... --publish`: the offline accuracy the manufacturer view shows beside the
-- live model's calibration. One row per published run: who published it (the token),
-- for which tenant (NULL: a deployment admin's, seen by every tenant), when (the
-- platform clock), and the run's summary as JSON (`backtest::BacktestSummary`).
CREATE TABLE backtests (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT,
    recorded_at  INTEGER NOT NULL,
    token_id     TEXT NOT NULL,
    summary_json TEXT NOT NULL
);
CREATE INDEX backtests_by_tenant ON backtests (tenant_id, recorded_at);
