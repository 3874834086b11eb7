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

pub mod layout;
pub mod pages;
pub mod session;

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
        .route("/dashboard", get(pages::home))
        .route("/dashboard/", get(pages::home))
        .route("/dashboard/logout", post(session::logout))
        .route("/dashboard/account", post(pages::switch_account))
        .route(
            "/dashboard/connections",
            get(pages::connections).post(pages::connection_create),
        )
        .route("/dashboard/connections/{id}", get(pages::connection))
        .route(
            "/dashboard/connections/{id}/webhook-secret",
            post(pages::connection_webhook_secret),
        )
        .route("/dashboard/transactions", get(pages::transactions))
        .route("/dashboard/transactions/{id}", get(pages::transaction))
        .route(
            "/dashboard/transactions/{id}/capture",
            post(pages::transaction_capture),
        )
        .route(
            "/dashboard/transactions/{id}/void",
            post(pages::transaction_void),
        )
        .route(
            "/dashboard/transactions/{id}/refund",
            post(pages::transaction_refund),
        )
        .route("/dashboard/webhooks", get(pages::webhooks))
        .route("/dashboard/webhooks/{id}", get(pages::webhook))
        .route(
            "/dashboard/webhooks/{id}/replay",
            post(pages::webhook_replay),
        )
        .route("/dashboard/deliveries", get(pages::deliveries))
        .route("/dashboard/deliveries/{id}", get(pages::delivery))
        .route(
            "/dashboard/deliveries/{id}/resend",
            post(pages::delivery_resend),
        )
        .route("/dashboard/customers", get(pages::customers))
        .route("/dashboard/customers/{customid}", get(pages::customer))
        .route(
            "/dashboard/customers/{customid}/grants",
            post(pages::grant_create),
        )
        .route(
            "/dashboard/customers/{customid}/grants/{id}/revoke",
            post(pages::grant_revoke),
        )
        .route("/dashboard/catalogue", get(pages::catalogue))
        .route("/dashboard/skus", post(pages::sku_create))
        .route("/dashboard/skus/{id}", post(pages::sku_update))
        .route("/dashboard/permissions", post(pages::permission_create))
        .route(
            "/dashboard/permissions/{id}",
            post(pages::permission_update),
        )
        .route("/dashboard/keys", get(pages::keys).post(pages::key_create))
        .route("/dashboard/keys/{id}/revoke", post(pages::key_revoke))
        // Any other dashboard path also needs a session before it answers (even its 404).
        .route(
            "/dashboard/{*rest}",
            get(pages::not_found).post(pages::not_found),
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
