-- Two indexes of the inbox that no query reads any more, each written by every new event
-- (and `webhook_events_due` again by every change of status):
-- - `webhook_events_due (status, next_attempt_at)`: claims read `webhook_events_waiting`, and
--   the list (`GET /webhook-events`) reads `webhook_events_by_account`, status filter or not;
-- - `webhook_events_by_connection (connection_id, stripe_created)`: nothing looks rows up by
--   connection alone.
DROP INDEX webhook_events_due;
DROP INDEX webhook_events_by_connection;
