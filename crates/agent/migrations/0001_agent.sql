-- The agent's own state, so that it survives restarts without the control plane:
-- the last desired-state document, the releases it built, the instances it runs,
-- and the events not yet acknowledged by the control plane.
CREATE TABLE document (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    body     TEXT NOT NULL,
    applied_version INTEGER NOT NULL DEFAULT 0
);

-- status: building | built | failed | live | retired (agent-local lifecycle)
CREATE TABLE releases (
    id          TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    number      INTEGER NOT NULL,
    commit_sha  TEXT NOT NULL,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    dir         TEXT,
    run_plan    TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX releases_service ON releases (service, number);

-- status: starting | healthy | unhealthy | exited
CREATE TABLE instances (
    id          TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    release_id  TEXT NOT NULL,
    replica     INTEGER NOT NULL,
    port        INTEGER NOT NULL UNIQUE,
    dir         TEXT NOT NULL,
    status      TEXT NOT NULL,
    restarts    INTEGER NOT NULL,
    pid         INTEGER,
    started_at  INTEGER NOT NULL,
    exited_at   INTEGER
);

CREATE TABLE outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT NOT NULL UNIQUE,
    body  TEXT NOT NULL
);
