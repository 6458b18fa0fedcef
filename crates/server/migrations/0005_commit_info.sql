-- A release's commit author and subject line, reported by the first node that
-- fetched the commit (the control plane only runs `git ls-remote`).
ALTER TABLE releases ADD COLUMN commit_author TEXT;
ALTER TABLE releases ADD COLUMN commit_message TEXT;
