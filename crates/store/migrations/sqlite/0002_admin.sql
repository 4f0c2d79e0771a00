-- Small key/value facts about the database itself, e.g. the key check: a
-- value sealed with the master key, so a wrong key is refused at start-up.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- An organization's allow-list of exact callback URLs (empty: any URL that
-- passes the callback policy).
CREATE TABLE organization_callbacks (
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url             TEXT    NOT NULL,
    PRIMARY KEY (organization_id, url)
);
