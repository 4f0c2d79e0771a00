-- Connect sessions: a hosted connect page's single-use, short-lived
-- session. The session token and the OAuth `state` are stored hashed; the
-- configuration (it may hold a client secret) and the PKCE verifier are
-- sealed with the keyring (`connect:<id>:<column>` as associated data) and
-- wiped (NULL) when the session is used. `stage`: open, authorizing, done.
CREATE TABLE connect_sessions (
    id                INTEGER PRIMARY KEY,
    token_hash        BLOB    NOT NULL UNIQUE,
    state_hash        BLOB    UNIQUE,
    organization_id   INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id           INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    element_key       TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    tags              TEXT    NOT NULL,
    redirect_url      TEXT    NOT NULL,
    end_user          TEXT,
    popup             BOOLEAN NOT NULL,
    configuration_enc TEXT,
    verifier_enc      TEXT,
    stage             TEXT    NOT NULL,
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX connect_sessions_expires_at ON connect_sessions (expires_at);
