-- The moment the clock alone next changes a customer's answer (the earliest history entry its
-- last change foresaw; ms, NULL: none), so the expiry job re-evaluates the customer then even
-- when no held permission passed its valid_until (one of several purchases lapsing). Kept
-- column-for-column equal to migrations/postgres.
ALTER TABLE ent_customer_state ADD COLUMN next_change_at INTEGER;
UPDATE ent_customer_state SET next_change_at = (
    SELECT MIN(h.at) FROM ent_permission_history h
    WHERE h.merchant_account_id = ent_customer_state.merchant_account_id
      AND h.customid = ent_customer_state.customid
      AND h.at > ent_customer_state.updated_at);
CREATE INDEX ent_customer_state_by_next_change ON ent_customer_state (next_change_at);
