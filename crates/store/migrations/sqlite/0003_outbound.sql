-- Outbound webhooks (SPEC §7): subscriptions, the transactional outbox of deliveries, and the
-- delivery log. Kept column-for-column equal to migrations/postgres/0003_outbound.sql.

CREATE TABLE webhook_subscriptions (
    id                    TEXT PRIMARY KEY,
    merchant_account_id   TEXT NOT NULL REFERENCES merchant_accounts (id),
    url                   TEXT NOT NULL,
    -- JSON array of event name filters: exact names, `prefix.*` or `*`.
    events                TEXT NOT NULL,
    description           TEXT,
    active                INTEGER NOT NULL DEFAULT 1,
    -- AEAD-sealed `whsec_…` (the row id as associated data), and the previous one during a
    -- rotation, valid until old_secret_expires_at.
    secret_enc            BLOB NOT NULL,
    secret_hint           TEXT NOT NULL,
    old_secret_enc        BLOB,
    old_secret_expires_at INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    deleted_at            INTEGER
);
CREATE INDEX webhook_subscriptions_by_account
    ON webhook_subscriptions (merchant_account_id, created_at DESC, id DESC);

-- One row per (event, subscription): written in the same database transaction as the change.
CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY,
    merchant_account_id TEXT NOT NULL,
    subscription_id     TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    event_id            TEXT NOT NULL,
    event_name          TEXT NOT NULL,
    -- The event exactly as sent (the signed body).
    payload             TEXT NOT NULL,
    -- pending (never attempted), failed (retry scheduled), delivered, dead (gave up).
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    -- Attempts since the delivery was (re)started; drives the backoff.
    round_attempts      INTEGER NOT NULL DEFAULT 0,
    round_started_at    INTEGER NOT NULL,
    next_attempt_at     INTEGER NOT NULL,
    -- The claim of the worker attempting it now, and until when the claim holds.
    lease_token         TEXT,
    locked_until        INTEGER,
    last_status_code    INTEGER,
    last_error          TEXT,
    delivered_at        INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, subscription_id);
-- The worker's claim: due rows in time order.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_deliveries_list
    ON webhook_deliveries (merchant_account_id, created_at DESC, id DESC);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_delivery_attempts (
    id               TEXT PRIMARY KEY,
    delivery_id      TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt          INTEGER NOT NULL,
    attempted_at     INTEGER NOT NULL,
    status_code      INTEGER,
    latency_ms       INTEGER NOT NULL,
    -- At most 1 KiB of the answer's body.
    response_excerpt TEXT,
    error            TEXT,
    -- When the next attempt was scheduled after this one (null: delivered or gave up).
    next_attempt_at  INTEGER
);
CREATE INDEX webhook_delivery_attempts_by_delivery
    ON webhook_delivery_attempts (delivery_id, attempt);
