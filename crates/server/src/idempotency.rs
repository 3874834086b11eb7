//! `Idempotency-Key` on API POSTs (SPEC §8): scoped to (merchant account, API key, method,
//! path, key) with a hash of the body, kept for a configurable time. A replay returns the first
//! answer; the same key while the first request runs is 409 `concurrent_request`; the same key
//! with another body is 409 `idempotency_key_mismatch`.
//!
//! A keyed retry resumes the work of a request that ended without an answer to keep (handlers
//! derive their Stripe idempotency keys and ids from ours, so resuming never makes a second
//! PaymentIntent): a 5xx is not kept; a request dropped before its answer (its client went
//! away, or it panicked) gives its claim back at once; and the claim is a lease that the
//! running request renews, so the claim of a process that died (kill -9, power loss) lapses
//! after `idempotency_lease_secs`.
//!
//! Stored answers are sealed with the master key (they may hold approval URLs and session
//! tokens), bound to their record.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tollgate_store::idempotency::{self, Claim, Lease, Scope, Stored};

use crate::ApiContext;
use crate::api::MAX_BODY;
use crate::auth::Caller;
use crate::error::ApiError;

/// Marks an answer that shows a secret once (a webhook subscription's signing secret): the
/// copy kept for replays has `secret` set to null, so the secret is neither stored in clear nor
/// shown a second time.
#[derive(Debug, Clone, Copy)]
pub struct ShownOnce;

/// Routes whose handler keeps the `Idempotency-Key` itself, written in the transaction of its
/// work (one commit instead of three: claim, work, answer) with the same scope, body hash,
/// sealing and replays as here. The middleware checks their key and passes them on.
pub const OWN_KEY_ROUTES: &[&str] = &["/v1/permissions/{identifier}/consume"];

/// The request's `Idempotency-Key`: `None` without one; a 400 when it is not 1 to 255 visible
/// ASCII characters (a key with other bytes was ignored before, so a retry with it ran the work
/// twice).
pub fn header_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(ApiError::BadRequest {
            message:
                "The Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces)."
                    .into(),
            details: vec![crate::error::Detail {
                location: "header",
                pointer: "/idempotency-key".into(),
                message: "1 to 255 visible ASCII characters (no spaces)".into(),
                kind: "value_error",
            }],
        });
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The hash a record keeps of its request's body.
pub fn body_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How long a record is kept, in ms.
pub fn ttl_ms(ctx: &ApiContext) -> i64 {
    ctx.config.idempotency_ttl_secs as i64 * 1000
}

/// The stored answer of `scope` as its replay: the first status and body, marked
/// `Idempotent-Replayed: true`.
pub fn replay(ctx: &ApiContext, scope: &Scope, status: u16, body: Stored) -> Response {
    let body = match body {
        Stored::Sealed(sealed) => match ctx.keys.open(&scope.row_id(), &sealed) {
            Ok(text) => text,
            Err(e) => {
                return ApiError::Internal(format!("a stored answer: {e}")).into_response();
            }
        },
        Stored::Clear(text) => text,
    };
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

pub async fn middleware(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let key = match header_key(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    if req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| OWN_KEY_ROUTES.contains(&p.as_str()))
    {
        return next.run(req).await;
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
        idem_key: key,
    };
    let body_hash = body_hash(&bytes);
    let now = ctx.now();
    let ttl = ttl_ms(&ctx);
    let lease_ms = lease_ms(&ctx);
    let owner = tollgate_store::new_id();
    let lease = Lease {
        owner: &owner,
        until: now + lease_ms,
    };
    let claim =
        match idempotency::claim(ctx.store.writer(), &scope, &body_hash, lease, now, ttl).await {
            Ok(c) => c,
            Err(e) => return ApiError::from(e).into_response(),
        };
    match claim {
        Claim::Mismatch => return ApiError::IdempotencyKeyMismatch.into_response(),
        Claim::InProgress => return ApiError::ConcurrentRequest.into_response(),
        Claim::Replay { status, body } => return replay(&ctx, &scope, status, body),
        Claim::Started => {}
    }
    // From here until the answer is stored the claim is held: renewed while the handler runs,
    // given back if this future is dropped first.
    let mut held = Held::start(ctx.clone(), scope, owner, lease_ms);
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        held.release().await;
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            held.release().await;
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
    held.finish(status.as_u16(), &text).await;
    Response::from_parts(parts, Body::from(bytes))
}

/// The lease of a claim, in ms (at least a second).
fn lease_ms(ctx: &ApiContext) -> i64 {
    ctx.config.idempotency_lease_secs.max(1) as i64 * 1000
}

/// A claim this request holds. A task renews its lease every third of the lease while the
/// handler runs; dropped before [`Held::finish`] or [`Held::release`] (the client went away
/// and hyper dropped the request, or the handler panicked), it gives the claim back, so a retry
/// resumes at once instead of waiting for the lease to lapse.
struct Held {
    ctx: ApiContext,
    scope: Scope,
    owner: String,
    renewer: tokio::task::JoinHandle<()>,
    settled: bool,
}

impl Held {
    fn start(ctx: ApiContext, scope: Scope, owner: String, lease_ms: i64) -> Held {
        // A task of its own, not a branch beside the handler: on SQLite a handler may hold the
        // one write connection across an await, and a renewal waiting for it there would stop
        // polling the handler that has to give it back.
        let renewer = {
            let (ctx, scope, owner) = (ctx.clone(), scope.clone(), owner.clone());
            let every = std::time::Duration::from_millis((lease_ms / 3).max(1) as u64);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let until = ctx.now() + lease_ms;
                    match idempotency::renew(ctx.store.writer(), &scope, &owner, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                "an idempotency key's claim was lost while its request ran"
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "renewing an idempotency key's claim")
                        }
                    }
                }
            })
        };
        Held {
            ctx,
            scope,
            owner,
            renewer,
            settled: false,
        }
    }

    /// Stores the answer (sealed) for replays.
    async fn finish(&mut self, status: u16, text: &str) {
        self.renewer.abort();
        let sealed = self.ctx.keys.seal(&self.scope.row_id(), text);
        let stored = idempotency::finish(
            self.ctx.store.writer(),
            &self.scope,
            &self.owner,
            status,
            &sealed,
        )
        .await;
        match stored {
            Ok(true) => self.settled = true,
            Ok(false) => {
                self.settled = true;
                tracing::warn!("an idempotent answer was not kept: its claim had been taken over");
            }
            // Left to the drop: the claim is given back, and a retry runs again.
            Err(e) => tracing::error!(error = %e, "saving an idempotent response"),
        }
    }

    /// Gives the claim back without an answer: a retry resumes the work.
    async fn release(&mut self) {
        self.renewer.abort();
        match idempotency::release(self.ctx.store.writer(), &self.scope, &self.owner).await {
            Ok(()) => self.settled = true,
            Err(e) => tracing::error!(error = %e, "releasing an idempotency key"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.settled {
            return;
        }
        // Not settled: dropped mid-request, or storing failed. The release needs the database,
        // so it runs as a task; without a runtime (shutting down) the lease lapses instead.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (ctx, scope, owner) = (
                self.ctx.clone(),
                self.scope.clone(),
                std::mem::take(&mut self.owner),
            );
            rt.spawn(async move {
                if let Err(e) = idempotency::release(ctx.store.writer(), &scope, &owner).await {
                    tracing::error!(error = %e, "releasing the idempotency key of a dropped request");
                }
            });
        }
    }
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

/// Seals the answers kept in clear by versions that did not seal them (they may hold approval
/// URLs and session tokens); returns how many. Run with the pruning of records.
pub async fn seal_clear_answers(ctx: &ApiContext) -> tollgate_store::Result<usize> {
    let mut sealed = 0;
    loop {
        let batch = idempotency::clear_answers(ctx.store.reader(), 100).await?;
        for (scope, text) in &batch {
            let bytes = ctx.keys.seal(&scope.row_id(), text);
            idempotency::seal_answer(ctx.store.writer(), scope, &bytes).await?;
        }
        sealed += batch.len();
        if batch.len() < 100 {
            return Ok(sealed);
        }
    }
}

/// Marks every POST of `doc` as taking an `Idempotency-Key` (the routes under the idempotency
/// middleware): the header, and the 400 for a malformed key and 409 for one in use or reused
/// with another body.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        if let Some(op) = item.post.as_mut() {
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(utoipa::openapi::RefOr::Ref(utoipa::openapi::Ref::new(
                    "#/components/parameters/IdempotencyKey",
                )));
            for (status, name) in [("400", "BadRequest"), ("409", "Conflict")] {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| {
                        utoipa::openapi::RefOr::Ref(utoipa::openapi::Ref::from_response_name(name))
                    });
            }
        }
    }
}
