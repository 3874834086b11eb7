-- Metered permissions (credit balances): which permissions are metered and what their SKUs
-- grant, the append-only ledger of every change of a balance, the balances derived from it
-- (the read model of the hot path) and the reservations that hold units. Times in unix
-- milliseconds. Kept column-for-column equal to migrations/postgres.

-- A permission definition with a row here is metered.
CREATE TABLE credit_definitions (
    merchant_account_id   TEXT NOT NULL,
    permission            TEXT NOT NULL,
    -- units of a paid period outlive the period (1) or end with it (0)
    rollover              INTEGER NOT NULL DEFAULT 0,
    -- balance.low fires when a balance falls to or below this (NULL: never)
    low_balance_threshold INTEGER,
    PRIMARY KEY (merchant_account_id, permission)
);

-- What each SKU of a metered permission grants.
CREATE TABLE credit_skus (
    merchant_account_id TEXT NOT NULL,
    permission          TEXT NOT NULL,
    sku                 TEXT NOT NULL,
    units               INTEGER NOT NULL,
    -- `period` (each paid period of a subscription) or `purchase` (once)
    per                 TEXT NOT NULL,
    -- a purchase's units end this many seconds after it (NULL: never)
    expires_in_secs     INTEGER,
    PRIMARY KEY (merchant_account_id, permission, sku)
);

-- Every change of a balance, in order. `units` is signed; `lot` names the lot a grant opens
-- or an expiry / claw-back closes (each at most once); `shortfall`: units of a clawed-back lot
-- already consumed.
CREATE TABLE credit_ledger (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    permission          TEXT NOT NULL,
    kind                TEXT NOT NULL,
    units               INTEGER NOT NULL,
    balance_after       INTEGER NOT NULL,
    lot                 TEXT,
    expires_at          INTEGER,
    shortfall           INTEGER NOT NULL DEFAULT 0,
    source              TEXT,
    reservation_id      TEXT,
    reason              TEXT,
    metadata            TEXT,
    created_at          INTEGER NOT NULL
);
CREATE INDEX credit_ledger_by_customer ON credit_ledger (merchant_account_id, customid, seq);
CREATE UNIQUE INDEX credit_ledger_lot_once
    ON credit_ledger (merchant_account_id, customid, permission, kind, lot);

-- One row per (customer, metered permission): balance = the sum of its ledger rows; held: units
-- of open reservations; granted / consumed: of the lots still open; due_at: the earliest moment
-- a lot or a hold ends (the hot path settles first when it has come).
CREATE TABLE credit_balances (
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    permission          TEXT NOT NULL,
    balance             INTEGER NOT NULL DEFAULT 0,
    held                INTEGER NOT NULL DEFAULT 0,
    granted             INTEGER NOT NULL DEFAULT 0,
    consumed            INTEGER NOT NULL DEFAULT 0,
    due_at              INTEGER,
    resets_at           INTEGER,
    low_threshold       INTEGER,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, customid, permission)
);
CREATE INDEX credit_balances_due ON credit_balances (due_at);

-- Units held for work whose cost is known at its end. status: held, committed, released,
-- expired.
CREATE TABLE credit_reservations (
    id                  TEXT PRIMARY KEY,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    permission          TEXT NOT NULL,
    units               INTEGER NOT NULL,
    status              TEXT NOT NULL,
    expires_at          INTEGER NOT NULL,
    committed_units     INTEGER,
    ledger_id           TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX credit_reservations_open
    ON credit_reservations (merchant_account_id, customid, permission, status, expires_at);
