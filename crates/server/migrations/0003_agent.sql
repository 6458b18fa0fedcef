-- The agent protocol (issue 3): each node's credential (a SHA-256 of it), what its
-- agent last reported, the instances it runs, and the agent's own event ids so an
-- event re-sent after a lost acknowledgement is stored once.
ALTER TABLE nodes ADD COLUMN credential_hash TEXT;
ALTER TABLE nodes ADD COLUMN target_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN convergence TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE nodes ADD COLUMN problems_json TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX nodes_credential ON nodes (credential_hash);

ALTER TABLE events ADD COLUMN source_id TEXT;
CREATE UNIQUE INDEX events_source ON events (source_id);

-- Replaced as a whole by every report of the node. No foreign key to services or
-- releases: an agent keeps reporting an instance of a deleted service until it has
-- stopped it.
CREATE TABLE instances (
    node_id     TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    release_id  TEXT NOT NULL,
    replica     BIGINT NOT NULL,
    port        BIGINT NOT NULL,
    pid         BIGINT,
    status      TEXT NOT NULL,
    restarts    BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (node_id, id)
);
CREATE INDEX instances_service ON instances (service_id);
