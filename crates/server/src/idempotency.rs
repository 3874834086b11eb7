//! `Idempotency-Key` on API POSTs (SPEC §8): scoped to (merchant account, API key, method,
//! path, key) with a hash of the body, kept for a configurable time. A replay returns the first
//! answer; the same key while the first request runs is 409 `concurrent_request`; the same key
//! with another body is 409 `idempotency_key_mismatch`. 5xx answers are not kept, so a retry
//! resumes the work (handlers derive their Stripe idempotency keys from our ids, so resuming
//! never makes a second PaymentIntent).

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tollgate_store::idempotency::{self, Claim, Scope};

use crate::ApiContext;
use crate::api::MAX_BODY;
use crate::auth::Caller;
use crate::error::ApiError;

/// Marks an answer that shows a secret once (a webhook subscription's signing secret): the
/// copy kept for replays has `secret` set to null, so the secret is neither stored in clear nor
/// shown a second time.
#[derive(Debug, Clone, Copy)]
pub struct ShownOnce;

pub async fn middleware(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    if key.is_empty() || key.len() > 255 {
        return ApiError::BadRequest {
            message: "The Idempotency-Key header must be 1 to 255 characters.".into(),
            details: vec![crate::error::Detail {
                location: "header",
                pointer: "/idempotency-key".into(),
                message: "1 to 255 characters".into(),
                kind: "value_error",
            }],
        }
        .into_response();
    }
    let (mut parts, body) = req.into_parts();
    // Authentication decides the scope; an unauthenticated request fails here as it would in
    // the handler.
    let caller = match Caller::from_request_parts(&mut parts, &ctx).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::bad_request(format!(
                "The request body could not be read or is larger than {MAX_BODY} bytes."
            ))
            .into_response();
        }
    };
    let scope = Scope {
        merchant_account_id: caller.merchant_account_id.clone(),
        key_id: caller.key_id.clone(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        idem_key: key.clone(),
    };
    let body_hash = hex::encode(Sha256::digest(&bytes));
    let now = ctx.now();
    let ttl = ctx.config.idempotency_ttl_secs as i64 * 1000;
    let claim = match idempotency::claim(ctx.store.writer(), &scope, &body_hash, now, ttl).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match claim {
        Claim::Mismatch => return ApiError::IdempotencyKeyMismatch.into_response(),
        Claim::InProgress => return ApiError::ConcurrentRequest.into_response(),
        Claim::Replay { status, body } => {
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return r;
        }
        Claim::Started => {}
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        if let Err(e) = idempotency::release(ctx.store.writer(), &scope).await {
            tracing::error!(error = %e, "releasing an idempotency key");
        }
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            let _ = idempotency::release(ctx.store.writer(), &scope).await;
            return ApiError::Internal("reading a response body".into()).into_response();
        }
    };
    let mut text = String::from_utf8_lossy(&bytes).to_string();
    if parts.extensions.get::<ShownOnce>().is_some() {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("secret".into(), serde_json::Value::Null);
        }
        text = v.to_string();
    }
    if let Err(e) = idempotency::finish(ctx.store.writer(), &scope, status.as_u16(), &text).await {
        tracing::error!(error = %e, "saving an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The key a handler derives its own ids from, so that a retried request resumes the same
/// transaction: `Some((api key id, Idempotency-Key))` when the request carries one.
pub fn request_key(headers: &axum::http::HeaderMap, caller: &Caller) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| {
            format!(
                "{}\u{0}{}\u{0}{k}",
                caller.merchant_account_id, caller.key_id
            )
        })
}
