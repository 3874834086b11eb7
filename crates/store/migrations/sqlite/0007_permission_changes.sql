-- Every rewrite of a customer's permissions (ent_permissions) appends a row here in the same
-- transaction. A server's permission cache follows this log to forget what another process
-- (or a transaction it saw begin) has changed. On SQLite writers are serialised, so `seq`
-- order is commit order. AUTOINCREMENT: a seq is never reused once pruned.
CREATE TABLE ent_permission_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_account_id TEXT NOT NULL,
    customid TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
