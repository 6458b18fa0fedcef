-- The cluster (issue 5): the cluster CA, one-time join tokens, node certificates
-- and heartbeat usage.

-- One row: the CA every node and the control plane's cluster listener chain to.
-- Kept in the store so every control-plane replica signs with the same CA.
CREATE TABLE cluster_ca (
    id          BIGINT PRIMARY KEY,
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Only the SHA-256 of a token's secret is stored. A token is consumed in the same
-- transaction that registers its node, so a refused join leaves nothing behind.
CREATE TABLE join_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_by   TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    node_id      TEXT
);

-- A node's client certificate is accepted only while its SHA-256 is one of these
-- two (the previous one stays valid until the agent first uses the renewed one);
-- removing the node forgets both.
ALTER TABLE nodes ADD COLUMN cert_sha256 TEXT;
ALTER TABLE nodes ADD COLUMN previous_cert_sha256 TEXT;
ALTER TABLE nodes ADD COLUMN arch TEXT;
ALTER TABLE nodes ADD COLUMN usage_json TEXT;
CREATE INDEX nodes_cert ON nodes (cert_sha256);
CREATE INDEX nodes_previous_cert ON nodes (previous_cert_sha256);
