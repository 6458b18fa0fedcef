-- Security modes (issue 7): the networks SSH is open to in mode B, and what the
-- node last reported of its firewall (its "exposure").
ALTER TABLE nodes ADD COLUMN ssh_from_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE nodes ADD COLUMN firewall_json TEXT;
