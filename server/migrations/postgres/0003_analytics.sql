-- Mirrors server/migrations/sqlite/0003_analytics.sql in PostgreSQL's dialect (types as
-- in 0001_init.sql). SQLite's two-argument MIN(a, b) is LEAST here; SQLite's ROUND rounds
-- halves away from zero, which PostgreSQL's round does for NUMERIC (not for DOUBLE
-- PRECISION, where halves go to even), hence the cast to NUMERIC before rounding.
--
-- After-sales analytics: the coverage of each offer split into parts and labour (for
-- the revenue split), NPS surveys after completed work orders, and contract proposals
-- sent to customers. Instants are Unix ms of the platform clock; money integer cents.

-- What the contract covered of the parts, and of labour and travel; their sum is
-- `coverage_cents`. Offers stored before this migration get the split from the
-- contract in force when they were made (none: all coverage is labour's, which is 0).
ALTER TABLE offers ADD COLUMN parts_coverage_cents BIGINT;
ALTER TABLE offers ADD COLUMN labour_coverage_cents BIGINT;
UPDATE offers SET parts_coverage_cents = LEAST(coverage_cents, CAST(ROUND(CAST(parts_cents * COALESCE(
    (SELECT k.parts_coverage FROM contracts k
     WHERE k.customer_id = offers.customer_id AND k.start_at <= offers.created_at
       AND k.renewal_at > offers.created_at
     ORDER BY k.start_at DESC LIMIT 1), 0.0) AS NUMERIC)) AS BIGINT));
UPDATE offers SET labour_coverage_cents = coverage_cents - parts_coverage_cents;

-- One survey per completed work order. Only the SHA-256 of the link's token is kept.
CREATE TABLE surveys (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    customer_id    TEXT NOT NULL REFERENCES customers(id),
    work_order_id  TEXT NOT NULL UNIQUE REFERENCES work_orders(id),
    machine_id     TEXT NOT NULL,
    token_sha256   TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    answered_at    BIGINT,
    score          BIGINT CHECK (score BETWEEN 0 AND 10),
    csat           BIGINT CHECK (csat BETWEEN 1 AND 5),
    reason         TEXT,
    CHECK ((answered_at IS NULL) = (score IS NULL))
);
CREATE INDEX surveys_by_customer ON surveys (customer_id, created_at);

-- Contract and upgrade proposals sent (they count towards the contact cap).
CREATE TABLE contract_proposals (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    kind              TEXT NOT NULL CHECK (kind IN ('contract', 'upgrade')),
    tier              TEXT NOT NULL,
    annual_fee_cents  BIGINT NOT NULL,
    -- The recommendation as sent: the numbers behind it.
    details_json      TEXT NOT NULL,
    sent_at           BIGINT NOT NULL
);
CREATE INDEX contract_proposals_by_customer ON contract_proposals (customer_id, sent_at);

-- Contacts per customer and week (the cap) look offers up by customer.
CREATE INDEX offers_by_customer ON offers (customer_id, created_at);
