-- Stripe Features imported as permissions (docs/stripe-entitlements.md), per connection.
-- Kept column-for-column equal to migrations/sqlite.

-- Whether a connection imports its Stripe Features automatically, and its last import.
CREATE TABLE ent_feature_sync (
    connection_id       TEXT PRIMARY KEY,
    merchant_account_id TEXT NOT NULL,
    -- 1: product, feature and entitlement-summary events import the features again
    automatic           BIGINT NOT NULL DEFAULT 0,
    -- when the last import ran (unix ms; NULL: never) and what it found (JSON)
    imported_at         BIGINT,
    report              TEXT,
    updated_at          BIGINT NOT NULL
);

-- The permission definition each imported feature manages (its identifier is the feature's
-- lookup_key). The import changes these definitions only, never one made by hand.
CREATE TABLE ent_imported_features (
    connection_id       TEXT NOT NULL,
    feature_id          TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    permission          TEXT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (connection_id, feature_id)
);
CREATE INDEX ent_imported_features_by_permission
    ON ent_imported_features (merchant_account_id, permission);
