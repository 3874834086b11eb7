-- Overage of metered permissions billed through Stripe Billing Meters (docs/credits.md).
-- Kept column-for-column equal between migrations/sqlite and migrations/postgres.

-- The Stripe meter (by its event_name) a metered permission reports overage to.
CREATE TABLE credit_meters (
    merchant_account_id TEXT NOT NULL,
    permission          TEXT NOT NULL,
    meter_event_name    TEXT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (merchant_account_id, permission)
);

-- One meter event to send per consumption with overage, written in the transaction of its
-- ledger row (whose id is the event's identifier). status: pending, sent.
CREATE TABLE meter_outbox (
    ledger_id           TEXT PRIMARY KEY,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    permission          TEXT NOT NULL,
    event_name          TEXT NOT NULL,
    units               BIGINT NOT NULL,
    -- the consumption's time (unix ms), sent as the event's timestamp
    event_time          BIGINT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending',
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    last_error          TEXT,
    sent_at             BIGINT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX meter_outbox_due ON meter_outbox (status, next_attempt_at);
