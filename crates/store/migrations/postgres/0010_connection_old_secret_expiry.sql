-- A rotated (previous) Stripe webhook secret verifies only until this time (unix ms); NULL
-- with no previous secret. Secrets rotated before this column existed get 24 hours from the
-- upgrade, as a rotation made now would.
ALTER TABLE connections ADD COLUMN webhook_secret_old_expires_at BIGINT;
UPDATE connections
   SET webhook_secret_old_expires_at = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) * 1000 + 86400000
 WHERE webhook_secret_old_enc IS NOT NULL;
