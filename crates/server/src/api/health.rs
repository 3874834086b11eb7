//! Liveness, readiness, metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::ApiContext;
use crate::metrics::family;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
