-- The durable inbox of Stripe events (SPEC §4). A row is committed before the webhook is
-- answered; workers apply it later. Kept column-for-column equal to migrations/postgres.

CREATE TABLE webhook_events (
    id                  TEXT PRIMARY KEY,
    connection_id       TEXT NOT NULL REFERENCES connections (id),
    merchant_account_id TEXT NOT NULL REFERENCES merchant_accounts (id),
    -- The Stripe account the event belongs to ('' for the platform's own account): with the
    -- event id, the dedupe key, so two connections to one account apply an event once.
    stripe_account      TEXT NOT NULL,
    stripe_event_id     TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    api_version         TEXT,
    -- webhook | sync (read back from /v1/events or a list endpoint by reconcile)
    source              TEXT NOT NULL,
    payload             TEXT NOT NULL,
    -- received | applied | ignored | failed | dead
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    locked_until        INTEGER,
    note                TEXT,
    stripe_created      INTEGER,
    received_at         INTEGER NOT NULL,
    applied_at          INTEGER,
    updated_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX webhook_events_dedupe ON webhook_events (stripe_account, stripe_event_id);
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);
CREATE INDEX webhook_events_by_account ON webhook_events (merchant_account_id, id);
CREATE INDEX webhook_events_by_connection ON webhook_events (connection_id, stripe_created);

-- Where reconcile resumes reading a connection's events.
CREATE TABLE connection_sync (
    connection_id   TEXT PRIMARY KEY REFERENCES connections (id),
    last_event_at   INTEGER,
    last_event_id   TEXT,
    last_sync_at    INTEGER NOT NULL,
    last_report     TEXT NOT NULL
);
