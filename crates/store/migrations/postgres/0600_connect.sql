-- Connect sessions: a hosted connect page's single-use, short-lived
-- session. The session token and the OAuth `state` are stored hashed; the
-- configuration (it may hold a client secret) and the PKCE verifier are
-- sealed with the keyring (`connect:<id>:<column>` as associated data) and
-- wiped (NULL) when the session is used. `stage`: open, authorizing, done.
CREATE TABLE connect_sessions (
    id                BIGINT  NOT NULL,
    token_hash        BYTEA   NOT NULL,
    state_hash        BYTEA,
    organization_id   BIGINT  NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id           BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    element_key       TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    tags              TEXT    NOT NULL,
    redirect_url      TEXT    NOT NULL,
    end_user          TEXT,
    popup             BOOLEAN NOT NULL,
    configuration_enc TEXT,
    verifier_enc      TEXT,
    stage             TEXT    NOT NULL,
    expires_at        BIGINT  NOT NULL,
    created_at        BIGINT  NOT NULL,
    CONSTRAINT connect_sessions_pkey PRIMARY KEY (id),
    CONSTRAINT connect_sessions_token_hash_key UNIQUE (token_hash),
    CONSTRAINT connect_sessions_state_hash_key UNIQUE (state_hash)
);
CREATE INDEX connect_sessions_expires_at ON connect_sessions (expires_at);
