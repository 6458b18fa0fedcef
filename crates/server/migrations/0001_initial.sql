-- Portable DDL: runs unchanged on SQLite and PostgreSQL. Ids are UUIDv7 text (time
-- ordered, so `ORDER BY id` is creation order and ids do not leak counts); times are
-- UTC milliseconds since the epoch; JSON documents are TEXT.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT
);

CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    csrf_token   TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    client_addr  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- created_by columns are historical facts, not foreign keys: deleting a user must
-- not delete or orphan what they made.
CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    env_json   TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE project_grants (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    team_id    TEXT REFERENCES teams (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX project_grants_project ON project_grants (project_id);

-- Service names are unique cluster-wide: they become `<name>.svc.internal`, the
-- app user `ns-<name>` and a directory name on every node.
CREATE TABLE services (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name               TEXT NOT NULL UNIQUE,
    spec_json          TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    current_release_id TEXT
);
CREATE INDEX services_project ON services (project_id);

CREATE TABLE releases (
    id          TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    commit_sha  TEXT NOT NULL,
    git_ref     TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    rollback_of TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (service_id, number)
);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL,
    labels_json     TEXT NOT NULL,
    status          TEXT NOT NULL,
    security_mode   TEXT NOT NULL,
    cpus            BIGINT NOT NULL,
    memory_bytes    BIGINT NOT NULL,
    desired_version BIGINT NOT NULL,
    applied_version BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT
);

-- Events and audit entries keep plain ids (no foreign keys) so the history of a
-- deleted resource survives it.
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    time       BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    message    TEXT NOT NULL,
    project_id TEXT,
    service_id TEXT,
    release_id TEXT,
    node_id    TEXT,
    actor_id   TEXT
);
CREATE INDEX events_service ON events (service_id, id);
CREATE INDEX events_project ON events (project_id, id);

CREATE TABLE audit_entries (
    id            TEXT PRIMARY KEY,
    time          BIGINT NOT NULL,
    actor_id      TEXT,
    actor_name    TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    summary_json  TEXT NOT NULL,
    request_id    TEXT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
