-- An endpoint's recent deliveries (the dashboard's last delivery and failure streak).
CREATE INDEX webhook_deliveries_by_subscription
    ON webhook_deliveries (subscription_id, created_at DESC, id DESC);
