-- The inbox no longer needs VACUUM. Each event's row was written three times (inserted,
-- claimed, finished), and most of those updates could not be heap-only: pages were full and
-- the outcome changed `status`, which two indexes read. With autovacuum off (or behind), the
-- dead row versions and index entries piled up and applying slowed down run by run.
--
-- Now the rows still waiting to be applied, with their next attempt, lease and attempt count,
-- live in a small table of their own, written with the event in the same commit. Workers
-- lease rows there (an update of columns no index reads: heap-only); an applied, ignored or
-- dead event's waiting row is deleted in its batch's commit, a failed one's next attempt
-- moves. `webhook_events` is inserted once and updated once per outcome, and no index reads
-- a column that update changes, so it is heap-only: PostgreSQL reclaims the old version
-- itself when it next reads the page. The server vacuums the small waiting table itself.
CREATE TABLE webhook_waiting (
    id              TEXT PRIMARY KEY REFERENCES webhook_events (id) ON DELETE CASCADE,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0
) WITH (fillfactor = 45);
-- (Room for each row's lease on its page: a claim leases consecutive rows in one transaction.)
CREATE INDEX webhook_waiting_due ON webhook_waiting (next_attempt_at, id);
INSERT INTO webhook_waiting (id, next_attempt_at, locked_until, attempts)
    SELECT id, next_attempt_at, locked_until, attempts FROM webhook_events
    WHERE status IN ('received', 'failed');
DROP INDEX webhook_events_waiting;

-- No index of the inbox reads `status` any more (the overview's counts read it from the row).
DROP INDEX webhook_events_received;
CREATE INDEX webhook_events_received ON webhook_events (merchant_account_id, received_at,
    connection_id);

-- Room on each page for its rows' one update each, so that each stays on its page (heap-only).
-- A page's rows arrive together and are finished together, often in one transaction, where
-- none of the old versions can be reclaimed yet: the page must hold each row twice, and the
-- finished version is larger (its note, its time applied). Measured with 256 rows of the
-- size the server writes, finished in one transaction: 91 heap-only at fillfactor 70, 205 at
-- 55, 220 at 50, all 256 at 45. The payload is in `webhook_event_payloads`, so a row is
-- small (about 300 bytes; 680 with this room). Applies to pages written from now on.
ALTER TABLE webhook_events SET (fillfactor = 45);
