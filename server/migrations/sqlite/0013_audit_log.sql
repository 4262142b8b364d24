-- Every state change made through the API (the security issue): who (the token, its
-- role and scope), what (method, route, path, the object it named, the request),
-- when (real time, and the platform clock, which the demo runs fast), the outcome, and
-- the object before and after where the API has a view of it. Secrets are redacted
-- before they get here. Telemetry ingest is not audited (its batches are recorded by
-- id in ingested_batches).
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    platform_at   INTEGER NOT NULL,
    token_id      TEXT NOT NULL,
    role          TEXT NOT NULL,
    tenant_id     TEXT,
    customer_id   TEXT,
    technician_id TEXT,
    method        TEXT NOT NULL,
    route         TEXT NOT NULL,
    path          TEXT NOT NULL,
    object_kind   TEXT,
    object_id     TEXT,
    status        INTEGER NOT NULL,
    request_json  TEXT,
    before_json   TEXT,
    after_json    TEXT
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
