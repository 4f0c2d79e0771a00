-- Events (issue 16): instance health, the outbox of lifecycle events, and
-- webhook endpoints with their deliveries.

-- Health: `health_failures` transient failures in a row (refresh or check)
-- and the last one's message; `health_since` when the current state began
-- (Unix ms; NULL: since creation). The state itself is derived: disabled,
-- else invalid (valid = 0), else degraded (failures > 0), else active.
ALTER TABLE instances ADD COLUMN health_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN health_last_error TEXT;
ALTER TABLE instances ADD COLUMN health_since INTEGER;

-- The outbox: one row per event, written in the transaction of the change
-- that caused it. `fanned_out`: deliveries were created for the webhooks
-- subscribed at that time.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type            TEXT    NOT NULL,
    -- The JSON body sent to webhooks.
    payload         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    fanned_out      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events (fanned_out, seq);
CREATE INDEX events_organization ON events (organization_id, seq);

CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url             TEXT    NOT NULL,
    -- JSON array of patterns (`instance.*`, `instance.created`); `["*"]`: all.
    events          TEXT    NOT NULL,
    secret_enc      TEXT    NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhooks_organization ON webhooks (organization_id);

-- One row per (event, webhook). state: pending, delivered, dead.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_owner     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL,
    UNIQUE (event_seq, webhook_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
