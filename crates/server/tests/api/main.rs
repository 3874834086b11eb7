//! Black-box tests of the transactions API (issue 3, "Done means"): each test starts the real
//! server on a random port with the in-process Stripe sandbox and a fresh database, and runs
//! once on SQLite and once on PostgreSQL (`name::sqlite`, `name::postgres`).

#[path = "../common/mod.rs"]
pub mod common;

mod bad_input;
mod connections;
mod contract;
mod cors;
mod credits;
mod credits_checks;
mod dashboard;
mod dashboard_customers;
mod dashboard_outbound;
mod dashboard_overview;
mod dashboard_session;
mod dashboard_transactions;
mod entitlements;
mod expiry;
mod flows;
mod grants;
mod idempotency;
mod meters;
mod outage;
mod outbound;
mod portal;
mod stream;
mod stripe_features;
mod typed_connections;
mod typed_entitlements;
mod typed_transactions;
mod typed_webhooks_out;
mod webhooks;
mod webhooks_hardening;
