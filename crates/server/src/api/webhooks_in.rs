//! `POST /webhooks/stripe/{connection_id}`: Stripe's events, verified on the raw body and
//! stored in the inbox before the answer (SPEC §4); workers apply them later (`crate::inbox`).
//! Nothing is stored for a refused request.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_store::{ConnectionRow, connections};

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::inbox;

const MAX_EVENT_BYTES: usize = 1024 * 1024;

pub async fn receive(
    State(ctx): State<ApiContext>,
    Path(connection_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Received>)> {
    let body = axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "The event is larger than {MAX_EVENT_BYTES} bytes (1 MiB)."
            ))
        })?;
    // The connection as last verified (a cache hit skips a database read per event); read
    // again before anything is refused, so a secret rotated elsewhere is found.
    let verified = match ctx.entitlements.cached_connection(&connection_id) {
        Some(conn) if verify(&ctx, &conn, &headers, &body).is_ok() => conn,
        _ => {
            let conn = connections::get(ctx.store.reader(), &connection_id)
                .await?
                .ok_or_else(|| refused("unknown connection"))?;
            verify(&ctx, &conn, &headers, &body)?;
            ctx.entitlements.put_connection(conn.clone());
            conn
        }
    };
    let conn = &verified;
    let head = inbox::EventHead::parse(&body).ok_or_else(|| refused("the body is not JSON"))?;
    if !head.is_event() {
        return Err(refused("the body is not a Stripe event"));
    }
    let payload = String::from_utf8_lossy(&body).into_owned();
    let row = inbox::row_for(conn, &head, payload, "webhook", ctx.now());
    let id = row.id.clone();
    let new = ctx.inbox.accept(row).await?;
    let counter = if new {
        &ctx.metrics.webhooks_received
    } else {
        &ctx.metrics.webhooks_duplicate
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((
        StatusCode::OK,
        Json(Received {
            received: true,
            duplicate: !new,
            id: new.then_some(id),
        }),
    ))
}

/// The answer to an event: `id` is the inbox row's, for a new event.
#[derive(serde::Serialize)]
pub struct Received {
    received: bool,
    duplicate: bool,
    id: Option<String>,
}

fn refused(why: &str) -> ApiError {
    ApiError::bad_request(format!("Webhook refused: {why}."))
}

/// Checks the Stripe-Signature of `body` against the connection's current and rotated secrets.
fn verify(
    ctx: &ApiContext,
    conn: &ConnectionRow,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let mut secrets = Vec::new();
    let previous = conn.previous_webhook_secret(ctx.now());
    for sealed in [conn.webhook_secret_enc.as_ref(), previous]
        .into_iter()
        .flatten()
    {
        secrets.push(
            ctx.keys
                .open(&conn.id, sealed)
                .map_err(|e| ApiError::Internal(format!("webhook secret of {}: {e}", conn.id)))?,
        );
    }
    if secrets.is_empty() {
        return Err(refused("the connection is awaiting its webhook secret"));
    }
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("no Stripe-Signature header"))?;
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let tolerance = ctx.config.webhook_tolerance_secs as i64;
    tollgate_stripe::signature::verify(&refs, header, body, ctx.now() / 1000, tolerance)
        .map(|_| ())
        .map_err(|e| refused(&format!("bad signature ({e:?})")))
}
