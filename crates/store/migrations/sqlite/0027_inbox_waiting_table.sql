-- The rows still waiting to be applied, with their next attempt, lease and attempt count, in
-- a small table of their own, written with the event in the same commit (the same tables as
-- on PostgreSQL, where it spares the inbox the dead row versions that needed VACUUM). Workers
-- lease rows here; an applied, ignored or dead event's waiting row is deleted in its batch's
-- commit, a failed one's next attempt moves. `webhook_events` keeps the event's status and
-- outcome, written once per attempt. Without a rowid: the row is its primary key's entry, one
-- b-tree fewer to write per event.
CREATE TABLE webhook_waiting (
    id              TEXT PRIMARY KEY REFERENCES webhook_events (id) ON DELETE CASCADE,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX webhook_waiting_due ON webhook_waiting (next_attempt_at, id);
INSERT INTO webhook_waiting (id, next_attempt_at, locked_until, attempts)
    SELECT id, next_attempt_at, locked_until, attempts FROM webhook_events
    WHERE status IN ('received', 'failed');
DROP INDEX webhook_events_waiting;
