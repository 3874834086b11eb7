-- A keyed request's claim is a lease: `lease_owner` is the request holding it, and it lapses at
-- `lease_expires_at` (unix ms) unless the request renews it, so a retry resumes the work of a
-- request whose process died. Claims made before this migration count as lapsed (0).
-- Stored answers are sealed with the master key in `response_enc`; `response` only holds
-- answers stored before this migration, until they expire.
ALTER TABLE idempotency_keys ADD COLUMN lease_owner TEXT;
ALTER TABLE idempotency_keys ADD COLUMN lease_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN response_enc BYTEA;
-- The answers still in clear, for the server to seal (empty once it has).
CREATE INDEX idempotency_clear ON idempotency_keys (expires_at) WHERE response IS NOT NULL;
