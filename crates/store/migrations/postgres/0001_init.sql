-- Tollgate schema (PostgreSQL). Kept column-for-column equal to migrations/sqlite: ids and JSON as
-- TEXT, money and times (unix milliseconds) as 64-bit integers, booleans as 0/1 integers, so
-- one set of queries serves both databases.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE merchant_accounts (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    merchant_account_id TEXT REFERENCES merchant_accounts (id),
    kind                TEXT NOT NULL,
    secret_hash         TEXT NOT NULL,
    display_name        TEXT,
    created_at          BIGINT NOT NULL,
    revoked_at          BIGINT
);

CREATE TABLE connections (
    id                     TEXT PRIMARY KEY,
    merchant_account_id    TEXT NOT NULL REFERENCES merchant_accounts (id),
    kind                   TEXT NOT NULL,
    display_name           TEXT NOT NULL,
    secret_key_enc         BYTEA NOT NULL,
    secret_key_hint        TEXT NOT NULL,
    publishable_key        TEXT,
    webhook_secret_enc     BYTEA,
    webhook_secret_old_enc BYTEA,
    stripe_account         TEXT,
    api_version            TEXT,
    sandbox                BIGINT NOT NULL DEFAULT 0,
    is_default             BIGINT NOT NULL DEFAULT 0,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX connections_by_account ON connections (merchant_account_id, created_at);

CREATE TABLE transactions (
    id                       TEXT PRIMARY KEY,
    merchant_account_id      TEXT NOT NULL REFERENCES merchant_accounts (id),
    connection_id            TEXT NOT NULL REFERENCES connections (id),
    status                   TEXT NOT NULL,
    intent                   TEXT NOT NULL,
    amount                   BIGINT NOT NULL,
    currency                 TEXT NOT NULL,
    country                  TEXT,
    authorized_amount        BIGINT NOT NULL DEFAULT 0,
    captured_amount          BIGINT NOT NULL DEFAULT 0,
    refunded_amount          BIGINT NOT NULL DEFAULT 0,
    external_identifier      TEXT,
    metadata                 TEXT NOT NULL DEFAULT '{}',
    customid                 TEXT,
    method                   TEXT NOT NULL,
    redirect_url             TEXT,
    integration_client       TEXT,
    payment_intent_id        TEXT,
    client_secret            TEXT,
    error_code               TEXT,
    raw_response_code        TEXT,
    raw_response_description TEXT,
    approval_token_hash      TEXT,
    approval_expires_at      BIGINT,
    session_token_hash       TEXT,
    session_expires_at       BIGINT,
    disputed                 BIGINT NOT NULL DEFAULT 0,
    state                    TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL,
    authorized_at            BIGINT,
    captured_at              BIGINT,
    voided_at                BIGINT,
    version                  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX transactions_list ON transactions (merchant_account_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX transactions_by_pi ON transactions (connection_id, payment_intent_id)
    WHERE payment_intent_id IS NOT NULL;
CREATE INDEX transactions_by_external ON transactions (merchant_account_id, external_identifier);
CREATE INDEX transactions_expiry ON transactions (status, approval_expires_at);

CREATE TABLE refunds (
    id                       TEXT PRIMARY KEY,
    transaction_id           TEXT NOT NULL REFERENCES transactions (id),
    merchant_account_id      TEXT NOT NULL,
    stripe_refund_id         TEXT,
    amount                   BIGINT NOT NULL,
    currency                 TEXT NOT NULL,
    status                   TEXT NOT NULL,
    reason                   TEXT,
    error_code               TEXT,
    raw_response_code        TEXT,
    raw_response_description TEXT,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX refunds_by_transaction ON refunds (transaction_id, created_at);
CREATE UNIQUE INDEX refunds_by_stripe ON refunds (stripe_refund_id) WHERE stripe_refund_id IS NOT NULL;

CREATE TABLE transaction_events (
    id                  TEXT PRIMARY KEY,
    transaction_id      TEXT NOT NULL REFERENCES transactions (id),
    merchant_account_id TEXT NOT NULL,
    name                TEXT NOT NULL,
    data                TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX transaction_events_by_transaction ON transaction_events (transaction_id, id);

CREATE TABLE idempotency_keys (
    merchant_account_id TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    idem_key            TEXT NOT NULL,
    body_hash           TEXT NOT NULL,
    status_code         BIGINT,
    response            TEXT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    PRIMARY KEY (merchant_account_id, key_id, method, path, idem_key)
);
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
