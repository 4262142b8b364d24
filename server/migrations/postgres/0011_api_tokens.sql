-- Mirrors server/migrations/sqlite/0011_api_tokens.sql in PostgreSQL's dialect (types as
-- in 0001_init.sql).
--
-- API tokens (the security issue): who may call the HTTP API, as what, and for whom.
-- Only the SHA-256 of a token's secret is kept, so a copy of the database cannot call
-- the API. Instants here are real (wall-clock) Unix ms, not the platform clock: the
-- demo's clock runs 1800x fast and must not expire a 90-day token in an hour.
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    -- admin | service | technician | customer | gateway
    role           TEXT NOT NULL
                   CHECK (role IN ('admin', 'service', 'technician', 'customer', 'gateway')),
    -- The tenant the token acts in. NULL only for a deployment admin (the one `up`
    -- creates before any fleet is imported), who sees every tenant, and a gateway
    -- issued before any fleet was imported, which may ingest for any registered
    -- machine.
    tenant_id      TEXT REFERENCES tenants(id),
    -- A customer token sees only this customer's machines, offers, sites and figures.
    customer_id    TEXT REFERENCES customers(id),
    -- A technician token touches only this technician's work orders.
    technician_id  TEXT REFERENCES technicians(id),
    -- What the token is for, e.g. "customer-acme (demo)"; shown in lists, never secret.
    name           TEXT NOT NULL DEFAULT '',
    secret_sha256  TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    -- NULL: does not expire.
    expires_at     BIGINT,
    revoked_at     BIGINT,
    CHECK (tenant_id IS NOT NULL OR role IN ('admin', 'gateway')),
    CHECK ((role = 'customer') = (customer_id IS NOT NULL)),
    CHECK ((role = 'technician') = (technician_id IS NOT NULL))
);
CREATE INDEX api_tokens_by_role ON api_tokens (role, revoked_at);
