-- Accounts and instances. Secrets are stored only as SHA-256 hashes
-- (secret_hash, token_hash) or AES-256-GCM ciphertext (*_enc).
-- Times: created_at/updated_at/refresh_lease_until in Unix milliseconds,
-- expires_at in Unix seconds.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           TEXT    NOT NULL,
    first_name      TEXT    NOT NULL,
    last_name       TEXT    NOT NULL,
    secret_hash     BLOB    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL
);

CREATE INDEX users_organization_id ON users (organization_id);

CREATE TABLE instances (
    -- Random, positive, below 2^53.
    id                  INTEGER PRIMARY KEY,
    -- Insertion order, for "newest first".
    seq                 INTEGER NOT NULL,
    organization_id     INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id             INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    element_key         TEXT    NOT NULL,
    element_id          INTEGER NOT NULL,
    name                TEXT    NOT NULL,
    -- JSON array of strings.
    tags                TEXT    NOT NULL DEFAULT '[]',
    configuration_enc   TEXT    NOT NULL,
    token_hash          BLOB    NOT NULL UNIQUE,
    access_token_enc    TEXT,
    refresh_token_enc   TEXT,
    token_type          TEXT,
    expires_at          INTEGER,
    valid               INTEGER NOT NULL DEFAULT 1,
    invalid_reason      TEXT,
    disabled            INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    token_version       INTEGER NOT NULL DEFAULT 0,
    -- The refresh lease: who holds it and until when.
    refresh_lease_until INTEGER,
    refresh_lease_owner INTEGER
);

CREATE INDEX instances_organization_seq ON instances (organization_id, seq);
CREATE INDEX instances_expiring ON instances (valid, disabled, expires_at);
