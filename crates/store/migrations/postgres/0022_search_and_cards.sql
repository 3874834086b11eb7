-- The dashboard's search and the card a payment was made with.

-- The Stripe charge of a transaction and the card it was paid with (brand and last 4 digits,
-- as the charge's payment_method_details.card gives them), for display and to find a
-- transaction by its ch_/py_ id.
CREATE TABLE transaction_charges (
    transaction_id      TEXT PRIMARY KEY REFERENCES transactions (id),
    merchant_account_id TEXT NOT NULL,
    charge_id           TEXT NOT NULL,
    card_brand          TEXT,
    card_last4          TEXT,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX transaction_charges_by_charge ON transaction_charges (merchant_account_id, charge_id);

-- Search: a transaction by its PaymentIntent, a Stripe event by evt_, a customer by cus_.
CREATE INDEX transactions_by_payment_intent ON transactions (merchant_account_id, payment_intent_id);
CREATE INDEX webhook_events_by_stripe_event ON webhook_events (merchant_account_id, stripe_event_id);
CREATE INDEX ent_customers_by_stripe_customer ON ent_customers (merchant_account_id, stripe_customer_id);
-- A customid prefix (LIKE 'abc%') reads these indexes whatever the database's collation.
CREATE INDEX ent_customers_customid_prefix ON ent_customers (merchant_account_id, customid text_pattern_ops);
CREATE INDEX ent_grants_customid_prefix ON ent_grants (merchant_account_id, customid text_pattern_ops);
CREATE INDEX ent_objects_customid_prefix ON ent_stripe_objects (merchant_account_id, customid text_pattern_ops);
