//! `POST /webhooks/stripe/{connection_id}`: Stripe's events, verified on the raw body and
//! stored in the inbox before the answer; workers apply them later (`crate::inbox`).
//! Nothing is stored for a refused request. What cannot be stored or read back is refused at
//! the edge, identically on both databases: a connection id or event with a NUL character
//! (PostgreSQL's text cannot hold one), a body that is not UTF-8, nested deeper than
//! [`inbox::MAX_DEPTH`], or whose `created` is not a plausible Unix time.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_store::{ConnectionRow, connections};

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiContext;
use crate::error::{ApiError, ApiResult, Detail, ErrorEnvelope};
use crate::inbox;

/// The Stripe webhook endpoint: outside the API's key and Idempotency-Key handling (Stripe
/// signs the body).
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(receive))
}

const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The address to register in Stripe (`webhook_url` of the connection). The `Stripe-Signature`
/// header is verified on the raw body (HMAC-SHA256 of `{t}.{body}` keyed by the connection's
/// current `whsec_` secret or, until it expires, the one it replaced; any `v1` may match; 300 s
/// tolerance both ways). The event is stored in the inbox (unique per connection and event id:
/// two connections to one Stripe account each store and apply it) before the answer, and
/// applied by a background worker to the connection's own transactions (found by their stored
/// PaymentIntent id), forward-only.
///
/// Unknown connection, missing secret, bad signature, stale or future timestamp, not JSON or not
/// an event: 400, nothing stored; over 1 MiB: 413. Also 400, nothing stored, with
/// `details[].pointer` naming the place: a connection id with a NUL character (U+0000) or not
/// UTF-8; a body that is not UTF-8, nests more than 64 levels deep, holds a NUL in any string
/// or key, or whose `created` is not an integer Unix time from 0 to 253402300799.
#[utoipa::path(
    post,
    path = "/webhooks/stripe/{connection_id}",
    operation_id = "receive_stripe_webhook",
    tag = "buyer",
    summary = "Receive a Stripe event",
    security(()),
    params(
        ("connection_id" = String, Path, description = "The connection the events are for (its `webhook_url`)."),
        ("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body: `t={unix seconds},v1={hex HMAC-SHA256}` (several `v1` allowed)."),
    ),
    request_body(
        content = Object,
        content_type = "application/json",
        description = "A Stripe event, exactly as Stripe sent it (the signature covers these bytes; at most 1 MiB).",
        example = json!({"id": "evt_1QExample", "object": "event", "type": "payment_intent.succeeded", "created": 1767225600, "data": {"object": {"id": "pi_1QExample", "object": "payment_intent"}}}),
    ),
    responses(
        (status = 200, description = "Stored (`{received: true, duplicate: false, id}`), or a duplicate of a stored event (`duplicate: true`, not applied again).", body = Received),
        (status = 400, description = "Refused, nothing stored: unknown connection, no webhook secret yet, a missing or bad signature, or a body that is not a Stripe event Tollgate can store (`details` names the place).", body = ErrorEnvelope),
        (status = 413, description = "The event is larger than 1 MiB; nothing stored.", body = ErrorEnvelope),
    ),
)]
pub async fn receive(
    State(ctx): State<ApiContext>,
    connection_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Received>)> {
    // Before any lookup: a NUL would fail the read on PostgreSQL.
    let connection_id = match connection_id {
        Ok(Path(id)) if !id.contains('\0') => id,
        Ok(_) => return Err(bad_path("Must not contain the NUL character (U+0000).")),
        Err(_) => return Err(bad_path("Must be UTF-8 text.")),
    };
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
    let text = std::str::from_utf8(&body)
        .map_err(|_| refused_at("", "the body is not UTF-8 text", "Must be UTF-8 text."))?;
    let head = inbox::EventHead::parse(text).map_err(|unfit| unreadable(unfit, text))?;
    if !head.is_event() {
        return Err(refused("the body is not a Stripe event"));
    }
    if !head.created_fits() {
        return Err(refused_at(
            "/created",
            "`created` is not a Unix time in seconds",
            &format!("Must be an integer from 0 to {}.", inbox::MAX_CREATED),
        ));
    }
    // The signature covered the bytes as sent; what is stored is the same JSON without its
    // indentation (Stripe's events are indented: a third or more of their bytes).
    let payload = compact_json(text);
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

/// The answer to an event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookReceipt)]
pub struct Received {
    /// Always `true`: the event is stored.
    received: bool,
    /// The event was stored before (it is not applied again).
    duplicate: bool,
    /// The inbox row's id, for a new event; `null` for a duplicate.
    #[schema(required = true, format = "uuid")]
    id: Option<String>,
}

fn refused(why: &str) -> ApiError {
    ApiError::bad_request(format!("Webhook refused: {why}."))
}

/// A refusal about one place in the body (`pointer`, a JSON pointer; `""` is the whole body).
fn refused_at(pointer: &str, why: &str, detail: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!("Webhook refused: {why}."),
        details: vec![Detail::body(pointer, detail)],
    }
}

/// The refusal of a connection id in the path.
fn bad_path(detail: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!("Webhook refused: the connection id is not valid. {detail}"),
        details: vec![Detail::path("/connection_id", detail)],
    }
}

/// The refusal of a body the inbox could not store or its workers read back.
fn unreadable(unfit: inbox::Unfit, text: &str) -> ApiError {
    match unfit {
        inbox::Unfit::NotJson => refused_at("", "the body is not JSON", "Must be JSON."),
        inbox::Unfit::TooDeep => refused_at(
            "",
            &format!(
                "the body nests objects and arrays more than {} levels deep",
                inbox::MAX_DEPTH
            ),
            &format!("Must nest at most {} levels deep.", inbox::MAX_DEPTH),
        ),
        inbox::Unfit::Nul => refused_at(
            &inbox::nul_pointer(text),
            "the event contains a NUL character (U+0000)",
            "Must not contain the NUL character (U+0000).",
        ),
    }
}

/// Checks the Stripe-Signature of `body` against the connection's current secret and the one
/// it replaced, until that one expires.
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

/// `json` (valid JSON text) without the whitespace between its tokens: the same JSON, byte for
/// byte inside every string and number. Stripe sends its events indented; the webhook endpoint
/// stores them without the indentation, after the signature was checked on the bytes as sent.
/// Everything that reads a stored payload parses it.
pub fn compact_json(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            out.push(b);
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    // Only ASCII whitespace outside strings was left out, so the bytes are still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::compact_json;
    use serde_json::Value;

    /// Stripe's indentation goes; every string (spaces, escaped quotes and backslashes, line
    /// ends written as escapes, non-ASCII) and number stays byte for byte, so the stored
    /// payload reads back as the same JSON.
    #[test]
    fn a_stored_payload_is_the_same_json() {
        let sent = "{\n  \"id\": \"evt_1 \\\" x\",\n  \"object\": \"event\",\n  \"data\": {\n    \
                    \"object\": {\n      \"description\": \"two  spaces,\\ttab, \\\\\\\" end\\\\\",\n      \
                    \"name\": \"Zoë \\u00e9 ✓\",\n      \"amount\": 12345678901234567890123,\n      \
                    \"rate\": 1.50e-3,\n      \"tags\": [ \"a b\" , null , true, false, [] , {} ]\n    }\n  \
                    },\r\n\t\"created\": 1767225600\n}\n";
        let stored = compact_json(sent);
        assert_eq!(
            stored,
            "{\"id\":\"evt_1 \\\" x\",\"object\":\"event\",\"data\":{\"object\":{\"description\":\
             \"two  spaces,\\ttab, \\\\\\\" end\\\\\",\"name\":\"Zoë \\u00e9 ✓\",\"amount\":\
             12345678901234567890123,\"rate\":1.50e-3,\"tags\":[\"a b\",null,true,false,[],{}]}},\
             \"created\":1767225600}"
        );
        let a: Value = serde_json::from_str(sent).unwrap();
        let b: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(a, b);
    }

    /// The benchmark's events as Stripe indents them: the same JSON in fewer bytes.
    #[test]
    fn pretty_events_shrink() {
        let event = serde_json::json!({"id": "evt_1", "object": "event", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "amount_refunded": 500, "metadata": {"k": "v w"}}}});
        let pretty = serde_json::to_string_pretty(&event).unwrap();
        let stored = compact_json(&pretty);
        assert_eq!(stored, serde_json::to_string(&event).unwrap());
        assert!(stored.len() < pretty.len());
    }
}
