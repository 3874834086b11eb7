//! Liveness, readiness, metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::ApiContext;

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
    body.push_str("# HELP tollgate_permission_cache_total Permission checks answered from the in-process cache (hit) or the database (miss).\n");
    body.push_str("# TYPE tollgate_permission_cache_total counter\n");
    body.push_str(&format!(
        "tollgate_permission_cache_total{{result=\"hit\"}} {hits}\ntollgate_permission_cache_total{{result=\"miss\"}} {misses}\n"
    ));
    body.push_str("# HELP tollgate_permission_cache_followed_seq The last permission change-log entry (SQLite) or sync marker (PostgreSQL) the permission cache has followed.\n");
    body.push_str("# TYPE tollgate_permission_cache_followed_seq gauge\n");
    body.push_str(&format!(
        "tollgate_permission_cache_followed_seq {}\n",
        ctx.entitlements.followed()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
