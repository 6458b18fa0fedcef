-- The hash of the last desired-state document compiled for each node: its version
-- (nodes.desired_version) moves on only when this changes.
ALTER TABLE nodes ADD COLUMN desired_sha256 TEXT NOT NULL DEFAULT '';
