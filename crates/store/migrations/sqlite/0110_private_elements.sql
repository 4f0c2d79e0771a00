-- private elements (issue 17): an organization's own elements, stored as
-- the TOML text of the catalog format without its `id` (the element id is
-- 1000000000 + the row id, a range no catalog file may use). `key` is
-- unique within the organization only: an organization may shadow a
-- built-in key for itself.
CREATE TABLE private_elements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    element_key     TEXT    NOT NULL,
    spec_toml       TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (organization_id, element_key)
);
-- Elements (built-in or private) an organization has deactivated for itself.
CREATE TABLE element_deactivations (
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    element_key     TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (organization_id, element_key)
);
