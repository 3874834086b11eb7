-- The rows still waiting to be applied, in the order workers claim them. The claim reads
-- the first rows of this index and stops: with only (status, next_attempt_at) it had to read
-- every waiting row and sort them, so each claim cost more the longer the backlog grew.
-- Applied rows leave this index, so it stays as small as the backlog.
CREATE INDEX webhook_events_waiting ON webhook_events (next_attempt_at, id)
    WHERE status IN ('received', 'failed');
