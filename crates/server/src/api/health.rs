//! Liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;

use crate::ApiContext;
use crate::metrics::family;

/// Health, readiness and metrics, and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route("/healthz", routing::get(healthz))
        .route("/readyz", routing::get(readyz))
        .route("/metrics", routing::get(metrics))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the database answers and every migration is applied.
async fn readyz(State(ctx): State<ApiContext>) -> impl IntoResponse {
    if ctx.store.ready().await {
        (StatusCode::OK, axum::Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready"})),
        )
    }
}

async fn metrics(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let mut body = ctx.metrics.render();
    let (hits, misses) = ctx.entitlements.permission_cache_stats();
    family(
        &mut body,
        ("tollgate_permission_cache_total", "counter"),
        "Permission checks answered from the in-process cache (hit) or the database (miss).",
        &[
            ("result=\"hit\"", hits.to_string()),
            ("result=\"miss\"", misses.to_string()),
        ],
    );
    family(
        &mut body,
        ("tollgate_permission_cache_followed_seq", "gauge"),
        "The last permission change-log entry (SQLite) or sync marker (PostgreSQL) the permission cache has followed.",
        &[("", ctx.entitlements.followed().to_string())],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
