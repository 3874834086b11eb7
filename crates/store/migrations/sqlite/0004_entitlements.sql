-- Entitlements (SPEC §5): the business's users (customid) linked to Stripe customers, the
-- Stripe objects seen (kept at their newest version, so a purchase seen before its link counts
-- once the link appears), the catalogue (SKUs, permission definitions) and the permissions read
-- model the check endpoint serves. Kept column-for-column equal to migrations/postgres.

-- customid ↔ Stripe customer, per connection. A cus_ belongs to one customid.
CREATE TABLE ent_customers (
    connection_id       TEXT NOT NULL,
    stripe_customer_id  TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    -- `api` (connect_stripe) or `metadata`
    linked_by           TEXT NOT NULL,
    test_clock          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (connection_id, stripe_customer_id)
);
CREATE INDEX ent_customers_by_customid ON ent_customers (merchant_account_id, customid);

-- Every Stripe object an entitlement may depend on, at its newest version (stamp).
CREATE TABLE ent_stripe_objects (
    connection_id       TEXT NOT NULL,
    object_type         TEXT NOT NULL,
    object_id           TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    stamp_at            INTEGER NOT NULL,
    stamp_progress      INTEGER NOT NULL,
    -- the cus_ it belongs to, if it names one
    stripe_customer_id  TEXT,
    -- a direct link (metadata customid / client_reference_id), for guest purchases
    customid            TEXT,
    data                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (connection_id, object_type, object_id)
);
CREATE INDEX ent_objects_by_customer ON ent_stripe_objects (connection_id, stripe_customer_id);
CREATE INDEX ent_objects_by_customid ON ent_stripe_objects (merchant_account_id, customid);
CREATE INDEX ent_objects_by_id ON ent_stripe_objects (connection_id, object_id);

-- Objects an object is attached to (a dispute to its charge, a credit note to its invoice).
CREATE TABLE ent_object_refs (
    connection_id TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    ref_id        TEXT NOT NULL,
    PRIMARY KEY (connection_id, object_id, ref_id)
);
CREATE INDEX ent_object_refs_by_ref ON ent_object_refs (connection_id, ref_id);

CREATE TABLE ent_test_clocks (
    connection_id TEXT NOT NULL,
    id            TEXT NOT NULL,
    frozen_time   INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (connection_id, id)
);

CREATE TABLE ent_skus (
    merchant_account_id TEXT NOT NULL,
    identifier          TEXT NOT NULL,
    store               TEXT NOT NULL,
    product_id          TEXT NOT NULL,
    kind                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, identifier)
);

CREATE TABLE ent_permission_defs (
    merchant_account_id TEXT NOT NULL,
    identifier          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, identifier)
);

CREATE TABLE ent_permission_skus (
    merchant_account_id TEXT NOT NULL,
    permission          TEXT NOT NULL,
    sku                 TEXT NOT NULL,
    position            INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, permission, sku)
);

-- Per merchant account policies and the customer-token setting of SPEC §5.4.
CREATE TABLE ent_settings (
    merchant_account_id      TEXT PRIMARY KEY,
    grace_days               INTEGER,
    revoke_on_partial_refund INTEGER NOT NULL DEFAULT 0,
    renewal_leeway_secs      INTEGER NOT NULL DEFAULT 7200,
    require_customer_token   INTEGER NOT NULL DEFAULT 0,
    customer_token_secret    TEXT,
    updated_at               INTEGER NOT NULL
);

-- The metadata key that names the customid, per connection (default `customid`).
CREATE TABLE ent_connection_settings (
    connection_id         TEXT PRIMARY KEY,
    customid_metadata_key TEXT NOT NULL,
    updated_at            INTEGER NOT NULL
);

-- The read model of GET /v1/permissions: one row per (customer, permission) ever touched.
-- Times in unix milliseconds; valid_until: held until then at most (NULL: no end known).
CREATE TABLE ent_permissions (
    merchant_account_id TEXT NOT NULL,
    customid            TEXT NOT NULL,
    identifier          TEXT NOT NULL,
    is_valid            INTEGER NOT NULL,
    entitlement         INTEGER NOT NULL,
    expires_at          INTEGER,
    valid_until         INTEGER,
    skus                TEXT NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (merchant_account_id, customid, identifier)
);
CREATE INDEX ent_permissions_due ON ent_permissions (valid_until);
