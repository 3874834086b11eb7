-- The dashboard's overview: indexes that serve its grouped queries.

-- Transactions of one account and currency created in a range, with every column the figures
-- sum (so the per-day totals read the index alone).
CREATE INDEX transactions_overview ON transactions (merchant_account_id, currency, created_at,
    status, captured_amount, refunded_amount, disputed);

-- Stripe events received by an account in a range, and the last one per connection.
CREATE INDEX webhook_events_received ON webhook_events (merchant_account_id, received_at,
    connection_id, status);
CREATE INDEX webhook_events_last_received ON webhook_events (connection_id, received_at);

-- Outbound deliveries of an account created in a range, by status.
CREATE INDEX webhook_deliveries_overview ON webhook_deliveries (merchant_account_id, created_at,
    status);

-- The subscriptions Tollgate knows of an account.
CREATE INDEX ent_objects_by_type ON ent_stripe_objects (merchant_account_id, object_type);
