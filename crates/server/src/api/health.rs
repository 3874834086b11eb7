//! Liveness, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiContext;
use crate::metrics::family;

/// Health, readiness and metrics, and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$", example = "ok")]
    pub status: &'static str,
}

/// Whether the server can serve requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadinessStatus,
}

/// `ready`: the database answers and every migration is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is up.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready when the database answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready.", body = Readiness),
    ),
)]
pub async fn readyz(State(ctx): State<ApiContext>) -> (StatusCode, Json<Readiness>) {
    if ctx.store.ready().await {
        (
            StatusCode::OK,
            Json(Readiness {
                status: ReadinessStatus::Ready,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: ReadinessStatus::NotReady,
            }),
        )
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    security(()),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4.", body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics(State(ctx): State<ApiContext>) -> impl IntoResponse {
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
