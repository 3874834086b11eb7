//! Reconcile (SPEC §4 "Missed webhooks"): re-read Stripe with the connection's key and feed
//! what it finds through the same inbox the webhooks use, so a missed, late or never-sent
//! event ends in the same state as a delivered one.
//!
//! 1. `GET /v1/events` since the last event reconcile saw (each event comes rendered in its
//!    own API version, which the handlers read), when the key may read Events; otherwise the
//!    report says so and the other steps still run.
//! 2. The list endpoints over a `created[gte]` window, auto-paginated. Listed objects become
//!    synthetic inbox events `{object}.synced` whose id is the object id plus a hash of its
//!    content: an unchanged object is a duplicate, a changed one a new row. (Stripe objects
//!    have no `updated` stamp, so the content stands in for it.)
//! 3. Every transaction Stripe may still move is re-read from its PaymentIntent.
//!
//! Then the inbox is drained, so the answer reflects the applied state.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_store::inbox::{self, SyncCursor};
use tollgate_store::{ConnectionRow, connections, transactions as store_tx};
use tollgate_stripe::client::StripeError;

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::transactions::sync_row;

/// Stripe keeps events 30 days.
const EVENT_WINDOW_SECS: i64 = 30 * 86_400;
/// Margin before the cursor: events become visible in the list a little after `created`.
const OVERLAP_SECS: i64 = 300;
/// At most this many items per list per run.
const LIST_CAP: usize = 100_000;
/// At most this many transactions re-read per run.
const RESYNC_CAP: i64 = 2_000;

/// Extra query parameters of one list call.
type Extra = &'static [(&'static str, &'static str)];

/// (list path, synthetic event type prefix, extra list parameters).
const LISTS: &[(&str, &str, Extra)] = &[
    (
        "/v1/payment_intents",
        "payment_intent",
        &[("expand[]", "data.latest_charge")],
    ),
    ("/v1/customers", "customer", &[]),
    (
        "/v1/subscriptions",
        "customer.subscription",
        &[("status", "all")],
    ),
    ("/v1/invoices", "invoice", &[]),
    ("/v1/checkout/sessions", "checkout.session", &[]),
    ("/v1/credit_notes", "credit_note", &[]),
];

/// Reconciles one connection; `since` (unix seconds) overrides where reading starts.
pub async fn sync_connection(
    ctx: &ApiContext,
    conn: &ConnectionRow,
    since: Option<i64>,
) -> ApiResult<SyncReport> {
    let started = Instant::now();
    let now_s = ctx.now() / 1000;
    let cursor = inbox::get_cursor(ctx.store.reader(), &conn.id).await?;
    let since = since
        .or_else(|| {
            cursor
                .as_ref()
                .and_then(|c| c.last_event_at)
                .map(|t| t - OVERLAP_SECS)
        })
        .unwrap_or(now_s - EVENT_WINDOW_SECS)
        .max(now_s - EVENT_WINDOW_SECS);
    let stripe = ctx.stripe_for(conn)?;
    let mut window = Map::new();
    window.insert("created[gte]".into(), json!(since));

    // 1. Events.
    let mut newest = cursor.as_ref().and_then(|c| c.last_event_at);
    let mut newest_id = cursor.as_ref().and_then(|c| c.last_event_id.clone());
    let events_report = match stripe.list_all("/v1/events", &window, LIST_CAP).await {
        Ok(events) => {
            let mut new = 0;
            for ev in &events {
                if !(ev["object"] == "event" && ev["id"].is_string() && ev["type"].is_string()) {
                    continue;
                }
                let created = ev["created"].as_i64();
                if created > newest {
                    newest = created;
                    newest_id = ev["id"].as_str().map(str::to_string);
                }
                new += feed(ctx, conn, ev).await? as usize;
            }
            ListRead::Read {
                read: events.len() as u64,
                new: new as u64,
            }
        }
        Err(e) => unavailable(ctx, conn, &e, "/v1/events")?,
    };

    // 2. Objects from the list endpoints.
    let mut lists = std::collections::BTreeMap::new();
    for (path, prefix, extra) in LISTS {
        let mut params = window.clone();
        for (k, v) in *extra {
            params.insert((*k).into(), json!(v));
        }
        let report = match stripe.list_all(path, &params, LIST_CAP).await {
            Ok(objects) => {
                let mut new = 0;
                for obj in &objects {
                    let Some(ev) = synthetic_event(prefix, obj, now_s, conn) else {
                        continue;
                    };
                    new += feed(ctx, conn, &ev).await? as usize;
                }
                ListRead::Read {
                    read: objects.len() as u64,
                    new: new as u64,
                }
            }
            Err(e) => unavailable(ctx, conn, &e, path)?,
        };
        lists.insert(path.trim_start_matches("/v1/").to_string(), report);
    }

    // Apply what was fed before re-reading transactions, so those re-reads start from it.
    drain(ctx).await?;

    // 3. Transactions Stripe may still move.
    let unsettled =
        store_tx::unsettled_of_connection(ctx.store.reader(), &conn.id, RESYNC_CAP).await?;
    let mut resynced = 0;
    let mut resync_errors = Vec::new();
    for t in &unsettled {
        match sync_row(ctx, t).await {
            Ok(_) => resynced += 1,
            Err(e) => resync_errors.push(ResyncError {
                transaction_id: t.id.clone(),
                message: e.to_string(),
            }),
        }
    }

    let report = SyncReport {
        object: "sync-report",
        connection_id: conn.id.clone(),
        since,
        events: events_report,
        lists,
        transactions: Resync {
            checked: unsettled.len() as u64,
            resynced,
            errors: resync_errors,
        },
        duration_ms: started.elapsed().as_millis() as u64,
    };
    inbox::put_cursor(
        ctx.store.writer(),
        &SyncCursor {
            connection_id: conn.id.clone(),
            last_event_at: newest,
            last_event_id: newest_id,
            last_sync_at: ctx.now(),
            last_report: serde_json::to_string(&report).unwrap_or_default(),
        },
    )
    .await?;
    Ok(report)
}

/// A list the key may not read (or that this Stripe does not have) is reported, not fatal;
/// an outage is.
fn unavailable(
    ctx: &ApiContext,
    conn: &ConnectionRow,
    e: &StripeError,
    path: &str,
) -> ApiResult<ListRead> {
    if e.is_retryable_outage() {
        ctx.metrics
            .stripe_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // About the connection being synced: no transaction was saved by this request.
        let next = format!(
            "nothing read so far is lost; sync the connection again (POST /connections/{}/sync) once Stripe answers.",
            conn.id
        );
        return Err(if e.is_timeout() {
            ApiError::GatewayTimeout {
                message: format!("Stripe did not answer in time while reading {path}; {next}"),
                transaction_id: None,
            }
        } else {
            ApiError::BadGateway {
                message: format!(
                    "Stripe could not be reached or failed ({}) while reading {path}; {next}",
                    e.kind().unwrap_or("connection error")
                ),
                transaction_id: None,
            }
        });
    }
    tracing::warn!(path, error = %e.message(), "reconcile: cannot read this list");
    Ok(ListRead::Unavailable {
        message: e.message(),
        http_status: e.status(),
    })
}

/// Stores one event (real or synthetic) in the inbox; `true` when it was new.
async fn feed(ctx: &ApiContext, conn: &ConnectionRow, ev: &Value) -> ApiResult<bool> {
    let payload = serde_json::to_string(ev).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = crate::inbox::row_for(
        conn,
        &crate::inbox::EventHead::of(ev),
        payload,
        "sync",
        ctx.now(),
    );
    ctx.inbox.accept(row).await
}

/// A listed object as an inbox event: `{prefix}.synced`, id `sync_{object id}_{content hash}`.
fn synthetic_event(prefix: &str, obj: &Value, now_s: i64, conn: &ConnectionRow) -> Option<Value> {
    let id = obj["id"].as_str()?;
    let digest = Sha256::digest(obj.to_string().as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut ev = json!({
        "id": format!("sync_{id}_{hash}"),
        "object": "event",
        "type": format!("{prefix}.synced"),
        "created": now_s,
        "api_version": conn.api_version,
        "livemode": obj["livemode"],
        "data": {"object": obj},
    });
    if let Some(acct) = &conn.stripe_account {
        ev["account"] = json!(acct);
    }
    Some(ev)
}

/// Applies due inbox rows until none is left (at most a minute).
pub async fn drain(ctx: &ApiContext) -> ApiResult<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if crate::inbox::run_once(ctx).await? == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// The periodic reconcile of every connection (SPEC §4); off when the interval is 0.
pub fn spawn(ctx: ApiContext) {
    let every = ctx.config.reconcile_interval_secs;
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            let conns = match connections::list(ctx.store.reader(), None).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile: listing connections failed");
                    continue;
                }
            };
            for conn in conns {
                match sync_connection(&ctx, &conn, None).await {
                    Ok(report) => tracing::info!(
                        connection = %conn.id,
                        report = %serde_json::to_string(&report).unwrap_or_default(),
                        "reconcile done"
                    ),
                    Err(e) => tracing::warn!(connection = %conn.id, error = %e, "reconcile failed"),
                }
            }
        }
    });
}

/// What one reconcile read and fed through the inbox. A list the key may not read is reported
/// `unavailable` with Stripe's message; the other steps still run.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SyncReport {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^sync-report$", example = "sync-report")]
    pub object: &'static str,
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// Unix seconds: where reading started.
    pub since: i64,
    /// `GET /v1/events`.
    pub events: ListRead,
    /// Per list endpoint (`payment_intents`, `customers`, `subscriptions`, `invoices`,
    /// `checkout/sessions`, `credit_notes`).
    pub lists: std::collections::BTreeMap<String, ListRead>,
    /// Transactions Stripe may still move, re-read from their PaymentIntent.
    pub transactions: Resync,
    #[schema(minimum = 0)]
    pub duration_ms: u64,
}

/// What reading one Stripe list gave.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
#[schema(as = SyncListRead)]
pub enum ListRead {
    /// Read: how many objects, and how many of them were new to the inbox.
    Read { read: u64, new: u64 },
    /// The key may not read the list, or this Stripe does not have it.
    Unavailable {
        message: String,
        #[schema(required = true)]
        http_status: Option<u16>,
    },
}

/// The transactions a reconcile re-read.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = SyncResync)]
pub struct Resync {
    pub checked: u64,
    pub resynced: u64,
    pub errors: Vec<ResyncError>,
}

/// A transaction that could not be re-read.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = SyncResyncError)]
pub struct ResyncError {
    pub transaction_id: String,
    pub message: String,
}
