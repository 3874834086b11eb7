-- Entitlements for support desks and the business's own database: manual grants, the history
-- of every permission change, the per-customer state version, and the dispute policies. Kept
-- column-for-column equal to migrations/postgres.

-- Permissions given by hand (support, promotions). Times in unix milliseconds. A revoked grant
-- stays, with revoked_at.
CREATE TABLE ent_grants (
    id                  TEXT PRIMARY KEY,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    permission          TEXT NOT NULL,
    starts_at           INTEGER NOT NULL,
    expires_at          INTEGER,
    reason              TEXT NOT NULL,
    created_by          TEXT NOT NULL,
    revoked_at          INTEGER,
    revoked_by          TEXT
);
CREATE INDEX ent_grants_by_customid ON ent_grants (merchant_account_id, customid);

-- Every change of a customer's permission as the check answers it, written in the transaction
-- that rewrites ent_permissions. `at` (ms) is when the answer changed: the evaluation's time,
-- or for a lapse by the clock the moment it lapsed. `removed`: the permission left the answer.
-- `cause`: JSON naming what did it.
CREATE TABLE ent_permission_history (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    identifier          TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    is_valid            INTEGER NOT NULL,
    entitlement         INTEGER NOT NULL,
    expires_at          INTEGER,
    valid_until         INTEGER,
    skus                TEXT NOT NULL,
    removed             INTEGER NOT NULL,
    cause               TEXT NOT NULL,
    version             INTEGER NOT NULL
);
CREATE INDEX ent_permission_history_by_customer
    ON ent_permission_history (merchant_account_id, customid, seq);

-- The version of a customer's permission set: +1 in every transaction that changes it.
CREATE TABLE ent_customer_state (
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    version             INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, customid)
);
-- The customer's version on each of its rows, so one read gives the check its ETag.
ALTER TABLE ent_permissions ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- `lost` (a dispute revokes once lost) or `opened` (as soon as it opens; restored if won).
ALTER TABLE ent_settings ADD COLUMN revoke_on_dispute TEXT NOT NULL DEFAULT 'lost';
ALTER TABLE ent_settings ADD COLUMN revoke_on_fraud_warning INTEGER NOT NULL DEFAULT 0;
