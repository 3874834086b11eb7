//! Overage of metered permissions billed through Stripe Billing Meters (docs/credits.md).
//!
//! A metered permission may name a Stripe meter by its `meter_event_name`. A consumption with
//! `overage: "allow"` is then accepted beyond the balance: the balance goes to zero and the
//! units beyond are recorded on the consumption's ledger row (its `shortfall`) and queued as one
//! meter event in `meter_outbox`, in the same transaction. The worker here sends each queued
//! event to Stripe with the ledger row's id as the event's `identifier` (and in the
//! Idempotency-Key), retrying with backoff until Stripe takes it. An event is marked sent once
//! Stripe answers it, or refuses it because an event with its identifier already exists (a
//! send whose answer was lost): reported exactly once, even across crashes and several servers.

use std::time::Duration;

use serde_json::{Map, json};
use tollgate_store::entitlements as es;
use tollgate_store::meter_outbox::{self as mo, MeterEventRow};
use tollgate_store::{Tx, connections};
use tollgate_stripe::client::RequestOptions;

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};

/// Attempts after the first wait 2, 4, 8 … seconds, at most an hour.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How often the worker looks for due events.
const POLL: Duration = Duration::from_millis(200);
/// Events sent per pass.
const BATCH: i64 = 50;

/// A meter event name Stripe accepts: 1 to 100 characters, no control characters.
pub fn event_name_ok(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)
}

/// Refuses `overage: "allow"` on a permission that names no meter.
pub async fn require_meter(ctx: &ApiContext, merchant: &str, permission: &str) -> ApiResult<()> {
    match mo::meter_of(ctx.store.reader(), merchant, permission).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::field(
            "/overage",
            "'allow' needs a permission that names a Stripe meter (its definition's meter_event_name).",
        )),
    }
}

/// Queues the meter event of a consumption's overage, in the consumption's transaction.
pub async fn record_overage(
    tx: &mut Tx<'_>,
    merchant: &str,
    permission: &str,
    customid: &str,
    ledger_id: &str,
    units: i64,
    now: i64,
) -> ApiResult<()> {
    let Some(event_name) = mo::meter_of(&mut **tx, merchant, permission).await? else {
        tracing::warn!(%permission, %ledger_id, "overage without a meter: not reported to Stripe");
        return Ok(());
    };
    let row = MeterEventRow {
        ledger_id: ledger_id.to_string(),
        merchant_account_id: merchant.to_string(),
        customid: customid.to_string(),
        permission: permission.to_string(),
        event_name,
        units,
        event_time: now,
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        sent_at: None,
        created_at: now,
    };
    mo::enqueue(&mut **tx, &row).await?;
    Ok(())
}

fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(0, 20) as u32;
    (1000_i64 << exp).min(MAX_BACKOFF_MS)
}

/// Runs the sender in the background.
pub fn spawn(ctx: ApiContext) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = send_due(&ctx).await {
                tracing::warn!(error = %e, "sending meter events failed; will retry");
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

/// Sends the meter events due now; returns how many Stripe took.
pub async fn send_due(ctx: &ApiContext) -> ApiResult<usize> {
    let now = ctx.now();
    let due = mo::due(ctx.store.reader(), now, BATCH).await?;
    let mut sent = 0;
    for ev in due {
        let retry_at = now.saturating_add(backoff_ms(ev.attempts + 1));
        if !mo::claim(ctx.store.writer(), &ev.ledger_id, now, retry_at).await? {
            continue;
        }
        match send_one(ctx, &ev).await {
            Ok(()) => {
                mo::mark_sent(ctx.store.writer(), &ev.ledger_id, ctx.now()).await?;
                sent += 1;
            }
            Err(e) => {
                tracing::warn!(ledger_id = %ev.ledger_id, error = %e, "meter event not sent; will retry");
                mo::note_failure(ctx.store.writer(), &ev.ledger_id, &e).await?;
            }
        }
    }
    Ok(sent)
}

async fn send_one(ctx: &ApiContext, ev: &MeterEventRow) -> Result<(), String> {
    let links = {
        let mut conn = ctx.store.hold_reader().await.map_err(|e| e.to_string())?;
        es::links_of_customids(&mut conn, &ev.merchant_account_id, &[ev.customid.as_str()])
            .await
            .map_err(|e| e.to_string())?
    };
    let link = links.last().ok_or_else(|| {
        format!(
            "The customid {} has no Stripe customer to bill the overage to.",
            ev.customid
        )
    })?;
    let conn = connections::get(ctx.store.reader(), &link.connection_id)
        .await
        .map_err(|e| e.to_string())?
        .filter(|c| c.merchant_account_id == ev.merchant_account_id)
        .ok_or_else(|| "The Stripe connection of the customer is gone.".to_string())?;
    let stripe = ctx.stripe_for(&conn).map_err(|e| e.to_string())?;
    let mut params = Map::new();
    params.insert("event_name".into(), json!(ev.event_name));
    params.insert("identifier".into(), json!(ev.ledger_id));
    params.insert("timestamp".into(), json!(ev.event_time / 1000));
    params.insert(
        "payload".into(),
        json!({"stripe_customer_id": link.stripe_customer_id, "value": ev.units.to_string()}),
    );
    let key = format!("tollgate-meter-{}", ev.ledger_id);
    match stripe
        .request(
            reqwest::Method::POST,
            "/v1/billing/meter_events",
            &params,
            RequestOptions::idempotent(key),
        )
        .await
    {
        Ok(_) => Ok(()),
        // An earlier attempt reached Stripe but its answer was lost: Stripe has the event.
        Err(e)
            if e.status() == Some(400)
                && e.api().and_then(|a| a.param.as_deref()) == Some("identifier") =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
