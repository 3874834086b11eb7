-- The inbox deduplicates per connection: unique on (connection, event id), no longer on
-- (Stripe account, event id). Two merchant accounts connected to one Stripe account each
-- store and apply the event Stripe delivers to both endpoints, a duplicate answer never tells
-- one connection about another's events, and the account an event's body names no longer
-- chooses where it is deduplicated.
--
-- Under the old key one connection could hold an event twice (the same event id naming two
-- accounts): the copy received first is kept.
DELETE FROM webhook_event_payloads WHERE id IN (
    SELECT id FROM webhook_events WHERE id NOT IN (
        SELECT MIN(id) FROM webhook_events GROUP BY connection_id, stripe_event_id));
DELETE FROM webhook_events WHERE id NOT IN (
    SELECT MIN(id) FROM webhook_events GROUP BY connection_id, stripe_event_id);
DROP INDEX webhook_events_dedupe;
CREATE UNIQUE INDEX webhook_events_dedupe ON webhook_events (connection_id, stripe_event_id);
