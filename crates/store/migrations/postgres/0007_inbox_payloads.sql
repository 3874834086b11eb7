-- An inbox row's payload (a Stripe event, a few KB) in a table of its own. The row itself is
-- rewritten as it moves (claimed, applied, retried): with the payload inside, every such
-- write copied the payload again (SQLite keeps it in overflow pages, read through to reach
-- any later column and rewritten with the row). The payload is written once and never changes.
CREATE TABLE webhook_event_payloads (
    id      TEXT PRIMARY KEY REFERENCES webhook_events (id) ON DELETE CASCADE,
    payload TEXT NOT NULL
);
INSERT INTO webhook_event_payloads (id, payload) SELECT id, payload FROM webhook_events;
ALTER TABLE webhook_events DROP COLUMN payload;
