//! The operators' dashboard (SPEC §10): server-rendered pages under `/dashboard`, assets
//! embedded in the binary, a strict Content-Security-Policy (no inline script or style).
//!
//! No second path: every action calls the JSON API's own handler functions with a [`Caller`]
//! standing for the signed-in operator (an operator-level secret caller for the session's
//! merchant account), so validation, state machines, events and outbound webhooks are exactly
//! the API's. API keys have no API endpoint; the dashboard uses the functions the CLI uses.
//!
//! The API itself never reads cookies ([`crate::auth::Caller`] takes bearer keys only), so the
//! dashboard's session cookie cannot authenticate an API call.

mod catalogue;
mod common;
mod connections;
mod customers;
mod keys;
pub mod layout;
mod outbound;
pub mod overview;
mod search;
pub mod session;
mod transactions;
pub mod view;
mod webhooks;

use axum::Router;
use axum::routing::{get, post};

use crate::ApiContext;
use crate::auth::{Caller, KeyKind};

pub use session::{Session, create_operator};

/// The caller the API handlers see for a dashboard action.
pub fn caller(s: &Session) -> Caller {
    Caller {
        key_id: format!("dashboard:{}", s.operator_id),
        kind: KeyKind::Secret,
        merchant_account_id: s.merchant_account_id.clone(),
        operator: true,
    }
}

pub fn router(ctx: &ApiContext) -> Router<ApiContext> {
    let protected = Router::new()
        .route("/dashboard", get(common::home))
        .route("/dashboard/", get(common::home))
        .route("/dashboard/overview", get(overview::overview))
        .route("/dashboard/logout", post(session::logout))
        .route("/dashboard/account", post(common::switch_account))
        .route(
            "/dashboard/connections",
            get(connections::connections).post(connections::connection_create),
        )
        .route("/dashboard/connections/{id}", get(connections::connection))
        .route(
            "/dashboard/connections/{id}/webhook-secret",
            post(connections::connection_webhook_secret),
        )
        .route("/dashboard/search", get(search::search))
        .route("/dashboard/transactions", get(transactions::transactions))
        .route(
            "/dashboard/transactions/{id}",
            get(transactions::transaction),
        )
        .route(
            "/dashboard/transactions/{id}/capture",
            post(transactions::transaction_capture),
        )
        .route(
            "/dashboard/transactions/{id}/void",
            post(transactions::transaction_void),
        )
        .route(
            "/dashboard/transactions/{id}/refund",
            post(transactions::transaction_refund),
        )
        .route("/dashboard/webhooks", get(webhooks::webhooks))
        .route("/dashboard/webhooks/{id}", get(webhooks::webhook))
        .route(
            "/dashboard/webhooks/{id}/replay",
            post(webhooks::webhook_replay),
        )
        .route(
            "/dashboard/outbound",
            get(outbound::endpoints).post(outbound::endpoint_create),
        )
        .route(
            "/dashboard/outbound/{id}/active",
            post(outbound::endpoint_active),
        )
        .route(
            "/dashboard/outbound/{id}/rotate-secret",
            post(outbound::endpoint_rotate),
        )
        .route(
            "/dashboard/outbound/{id}/test",
            post(outbound::endpoint_test),
        )
        .route("/dashboard/outbound/deliveries", get(outbound::deliveries))
        .route(
            "/dashboard/outbound/deliveries/{id}",
            get(outbound::delivery),
        )
        .route(
            "/dashboard/outbound/deliveries/{id}/resend",
            post(outbound::delivery_resend),
        )
        .route("/dashboard/deliveries", get(outbound::old_deliveries))
        .route("/dashboard/deliveries/{id}", get(outbound::old_delivery))
        .route("/dashboard/customers", get(customers::customers))
        .route("/dashboard/customers/{customid}", get(customers::customer))
        .route(
            "/dashboard/customers/{customid}/grants",
            post(customers::grant_create),
        )
        .route(
            "/dashboard/customers/{customid}/grants/{id}/revoke",
            post(customers::grant_revoke),
        )
        .route(
            "/dashboard/customers/{customid}/adjustments",
            post(customers::adjust),
        )
        .route("/dashboard/catalogue", get(catalogue::catalogue))
        .route("/dashboard/skus", post(catalogue::sku_create))
        .route("/dashboard/skus/{id}", post(catalogue::sku_update))
        .route("/dashboard/permissions", post(catalogue::permission_create))
        .route(
            "/dashboard/permissions/{id}",
            post(catalogue::permission_update),
        )
        .route("/dashboard/keys", get(keys::keys).post(keys::key_create))
        .route("/dashboard/keys/{id}/revoke", post(keys::key_revoke))
        // Any other dashboard path also needs a session before it answers (even its 404).
        .route(
            "/dashboard/{*rest}",
            get(common::not_found).post(common::not_found),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            session::require_session,
        ));
    Router::new()
        .route(
            "/dashboard/login",
            get(session::login_page)
                .post(session::login)
                .layer(axum::Extension(session::PasswordChecks::new(
                    ctx.config.dashboard_hash_concurrency,
                ))),
        )
        .route(
            "/dashboard/assets/dashboard.css",
            get(|| {
                crate::page::asset(
                    include_str!("../../assets/dashboard.css"),
                    "text/css; charset=utf-8",
                )
            }),
        )
        .route(
            "/dashboard/assets/dashboard.js",
            get(|| {
                crate::page::asset(
                    include_str!("../../assets/dashboard.js"),
                    "application/javascript; charset=utf-8",
                )
            }),
        )
        .merge(protected)
}
