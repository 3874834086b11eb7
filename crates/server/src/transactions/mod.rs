//! The transactions service: every change of a transaction goes through
//! [`apply_observations`]: Stripe's answer becomes domain observations, the domain decides
//! (forward-only), and the new state commits with its events in one database transaction.
//! The API handlers (`api::transactions`), the hosted pages, the webhook inbox, the
//! reconciler and the workers all call it.

pub mod cards;
pub mod refunds;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_domain::{
    Amount, Change, Currency, ErrorCode, ErrorInfo, Money, Observation, TransactionState,
    TransactionStatus, apply,
};
use tollgate_store::transactions::{self as store_tx, TransactionUpdate};
use tollgate_store::{ConnectionRow, EventRow, TransactionRow, connections};
use tollgate_stripe::client::{RequestOptions, StripeError};

use crate::ApiContext;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Detail};
use crate::stripe_map;

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn token_matches(presented: &str, stored_hash: Option<&str>) -> bool {
    match stored_hash {
        Some(h) => hash_token(presented).as_bytes().ct_eq(h.as_bytes()).into(),
        None => false,
    }
}

pub(crate) fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
/// Where the completion page sends the buyer: `redirect_url` with `transaction_id` and
/// `transaction_status` added to its query (before any fragment), serialised as a valid
/// `Location`. `None` for a stored URL that is not one (kept from before it was checked).
pub(crate) fn redirect_target(redirect_url: &str, id: &str, status: &str) -> Option<String> {
    let mut url = url::Url::parse(redirect_url).ok()?;
    url.query_pairs_mut()
        .append_pair("transaction_id", id)
        .append_pair("transaction_status", status);
    Some(url.into())
}
/// The id of a transaction created under an Idempotency-Key is derived from it, so a retry
/// after an outage finds (and finishes) the same transaction instead of making another.
pub(crate) fn transaction_id(idem: Option<&str>) -> String {
    match idem {
        Some(k) => {
            let h = Sha256::digest(k.as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[..16]);
            uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
        }
        None => tollgate_store::new_id(),
    }
}

pub async fn connection_for(
    ctx: &ApiContext,
    merchant: &str,
    id: Option<&str>,
) -> ApiResult<ConnectionRow> {
    let conn = match id {
        Some(id) => connections::get(ctx.store.reader(), id)
            .await?
            .filter(|c| c.merchant_account_id == merchant)
            .ok_or_else(|| ApiError::field("/payment_service_id", "No such connection in this merchant account."))?,
        None => connections::default_for(ctx.store.reader(), merchant)
            .await?
            .ok_or_else(|| ApiError::bad_request("This merchant account has no Stripe connection; add one with POST /connections."))?,
    };
    Ok(conn)
}

pub(crate) async fn insert_event(
    tx: &mut tollgate_store::Tx<'_>,
    t: &TransactionRow,
    name: &str,
    data: Value,
    now: i64,
) -> ApiResult<()> {
    store_tx::insert_event(tx, &event_row(t, name, data, now)).await?;
    Ok(())
}

pub(crate) fn event_row(t: &TransactionRow, name: &str, data: Value, now: i64) -> EventRow {
    EventRow {
        id: tollgate_store::new_id(),
        transaction_id: t.id.clone(),
        merchant_account_id: t.merchant_account_id.clone(),
        name: name.to_string(),
        data: data.to_string(),
        created_at: now,
    }
}

/// A Stripe failure as our error: outages are 502/504 carrying the transaction id.
pub fn outage(ctx: &ApiContext, e: &StripeError, transaction_id: Option<&str>) -> ApiError {
    ctx.metrics
        .stripe_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tid = transaction_id.map(str::to_string);
    // What to do next: about the saved transaction when there is one, else just try again.
    let next = if tid.is_some() {
        "the transaction is saved, call POST /transactions/{id}/sync or retry with the same Idempotency-Key."
    } else {
        "try again once Stripe answers."
    };
    if e.is_timeout() {
        ApiError::GatewayTimeout {
            message: format!("Stripe did not answer in time; {next}"),
            transaction_id: tid,
        }
    } else if e.is_retryable_outage() {
        ApiError::BadGateway {
            message: format!(
                "Stripe could not be reached or failed ({}); {next}",
                e.kind().unwrap_or("connection error")
            ),
            transaction_id: tid,
        }
    } else {
        ApiError::BadGateway {
            message: format!("Stripe refused the request: {}", e.message()),
            transaction_id: tid,
        }
    }
}

/// Creates the PaymentIntent of a `processing` transaction (at create, or resumed by sync or a
/// keyed retry) under a Stripe Idempotency-Key derived from the transaction id.
/// Asks Stripe for the PaymentIntent of `t`, under a Stripe Idempotency-Key derived from the
/// transaction id (a retry never makes a second one). Outages are 502/504 carrying the id.
pub(crate) async fn request_payment_intent(
    ctx: &ApiContext,
    t: &TransactionRow,
    conn: &ConnectionRow,
) -> ApiResult<Value> {
    let stripe = ctx.stripe_for(conn)?;
    let currency =
        Currency::parse(&t.currency).map_err(|_| ApiError::Internal("stored currency".into()))?;
    let amount = Amount::new(t.amount).map_err(|_| ApiError::Internal("stored amount".into()))?;
    let stripe_amount = Money::new(amount, currency)
        .to_stripe_amount()
        .map_err(|_| {
            ApiError::field(
                "/amount",
                "This amount cannot be expressed in Stripe's units for this currency.",
            )
        })?;
    let mut p = Map::new();
    p.insert("amount".into(), json!(stripe_amount));
    p.insert("currency".into(), json!(currency.stripe_code()));
    p.insert(
        "capture_method".into(),
        json!(if t.intent == "authorize" {
            "manual"
        } else {
            "automatic"
        }),
    );
    if t.method == "stripe" {
        p.insert("automatic_payment_methods".into(), json!({"enabled": true}));
    } else {
        p.insert("payment_method_types".into(), json!([t.method]));
    }
    let mut md: Map<String, Value> = serde_json::from_str(&t.metadata).unwrap_or_default();
    md.insert("tollgate_transaction_id".into(), json!(t.id));
    md.insert(
        "tollgate_merchant_account_id".into(),
        json!(t.merchant_account_id),
    );
    if let Some(c) = &t.customid {
        md.insert("customid".into(), json!(c));
    }
    p.insert("metadata".into(), Value::Object(md));
    let key = format!("tollgate-{}-create", t.id);
    let pi = stripe
        .create_payment_intent(&p, Some(&key))
        .await
        .map_err(|e| {
            if e.is_retryable_outage() {
                outage(ctx, &e, Some(&t.id))
            } else {
                let param = e.api().and_then(|a| a.param.clone()).unwrap_or_default();
                ApiError::BadRequest {
                    message: format!("Stripe refused the payment: {}", e.message()),
                    details: vec![Detail::body(&format!("/{param}"), e.message())],
                }
            }
        })?;
    Ok(pi)
}

/// Creates the PaymentIntent of a saved `processing` transaction (resumed by sync or a keyed
/// retry after an outage) and records it.
pub(crate) async fn create_payment_intent(
    ctx: &ApiContext,
    t: &TransactionRow,
    conn: &ConnectionRow,
) -> ApiResult<TransactionRow> {
    let pi = request_payment_intent(ctx, t, conn).await?;
    let pi_id = pi["id"].as_str().unwrap_or_default().to_string();
    let secret = pi["client_secret"].as_str().unwrap_or_default().to_string();
    let now = ctx.now();
    let mut state: TransactionState =
        serde_json::from_str(&t.state).map_err(|e| ApiError::Internal(format!("state: {e}")))?;
    state.approval_issued = true;
    state.status = TransactionStatus::BuyerApprovalPending;
    let update = TransactionUpdate::PaymentIntentCreated {
        payment_intent_id: pi_id.clone(),
        client_secret: secret,
        status: TransactionStatus::BuyerApprovalPending.as_str().to_string(),
        state: serde_json::to_string(&state).unwrap_or_default(),
    };
    let mut tx = ctx.store.begin().await?;
    let current = store_tx::get_any(&mut *tx, &t.id, ctx.store.for_update())
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    if current.payment_intent_id.is_none() {
        store_tx::update(&mut *tx, &t.id, current.version, now, &update).await?;
        insert_event(
            &mut tx,
            &current,
            "transaction.payment_intent_created",
            json!({"payment_intent": pi_id}),
            now,
        )
        .await?;
    }
    let row = store_tx::get_any(&mut *tx, &t.id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    tollgate_store::commit(tx).await?;
    // A PaymentIntent created together with a server-side confirmation could already be past
    // approval; reading it back applies that.
    if pi["status"] != "requires_payment_method" {
        return apply_observations(ctx, &row, stripe_map::observations_of_intent(&pi, now)).await;
    }
    Ok(row)
}

/// The domain's changes as audit events.
pub(crate) fn event_of(change: &Change) -> (&'static str, Value) {
    let data = serde_json::to_value(change).unwrap_or(Value::Null);
    let name = match change {
        Change::StatusChanged { .. } => "transaction.status_changed",
        Change::ErrorChanged { .. } => "transaction.error_recorded",
        Change::AmountsChanged { .. } => "transaction.amounts_changed",
        Change::RefundStatusChanged { .. } => "transaction.refund_status_changed",
        Change::DisputeChanged { .. } => "transaction.dispute_changed",
        Change::Ignored { .. } => "transaction.update_ignored",
    };
    (name, data)
}

/// Applies what Stripe said to a transaction, forward-only, committing the state with its
/// events. Retries when the row moved meanwhile (another request or worker applied something).
pub async fn apply_observations(
    ctx: &ApiContext,
    t: &TransactionRow,
    observations: Vec<Observation>,
) -> ApiResult<TransactionRow> {
    // Most observations teach nothing new (a duplicate event, a re-read of an unchanged
    // intent): find that out with a plain read, without taking the write lock.
    if let Some(current) = store_tx::get_any(ctx.store.reader(), &t.id, "").await? {
        let state: TransactionState = serde_json::from_str(&current.state)
            .map_err(|e| ApiError::Internal(format!("state: {e}")))?;
        let mut probe = state;
        let mut any = false;
        for o in &observations {
            let out = apply(&probe, o);
            any |= !out.changes.is_empty();
            probe = out.state;
        }
        if !any {
            return Ok(current);
        }
    }
    for _attempt in 0..5 {
        let mut tx = ctx.store.begin().await?;
        match apply_locked(ctx, &mut tx, &t.id, &observations, ctx.now()).await {
            Ok(changed) => {
                if changed {
                    tollgate_store::commit(tx).await?;
                } else {
                    tx.rollback()
                        .await
                        .map_err(tollgate_store::StoreError::from)?;
                }
                return load_any(ctx, &t.id).await;
            }
            Err(ApiError::ConcurrentRequest) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::ConcurrentRequest)
}

/// Applies `observations` to transaction `id` inside the write transaction `tx` (row locked on
/// PostgreSQL, the single writer on SQLite), writing its events. Returns whether anything
/// changed.
pub(crate) async fn apply_locked(
    ctx: &ApiContext,
    tx: &mut tollgate_store::Tx<'_>,
    id: &str,
    observations: &[Observation],
    now: i64,
) -> ApiResult<bool> {
    let current = store_tx::get_any(&mut **tx, id, ctx.store.for_update())
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    let Some((update, events)) = decide(&current, observations, now)? else {
        return Ok(false);
    };
    let row = store_tx::update(&mut **tx, &current.id, current.version, now, &update).await?;
    store_tx::insert_events(tx, &events).await?;
    // Its outbound event commits with it (transactional outbox, SPEC §7).
    crate::outbound::transaction_changed(tx, &current.status, &row, now).await?;
    Ok(true)
}

/// What `observations` change in the row `current` (pure): the update to write and the events
/// for the audit trail, or `None` when nothing changes. The caller writes both, with the
/// outbound event of a new status (the inbox folds a whole batch's changes before writing).
pub(crate) fn decide(
    current: &TransactionRow,
    observations: &[Observation],
    now: i64,
) -> ApiResult<Option<(TransactionUpdate, Vec<EventRow>)>> {
    let mut state: TransactionState = serde_json::from_str(&current.state)
        .map_err(|e| ApiError::Internal(format!("state: {e}")))?;
    let mut changes = Vec::new();
    for o in observations {
        let out = apply(&state, o);
        state = out.state;
        changes.extend(out.changes);
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let status = state.status;
    let error = state.error();
    let became = |s: TransactionStatus| status == s && current.status != s.as_str();
    let authorized_at = current.authorized_at.or_else(|| {
        (became(TransactionStatus::AuthorizationSucceeded)
            || became(TransactionStatus::CaptureSucceeded))
        .then_some(now)
    });
    let captured_at = current
        .captured_at
        .or_else(|| became(TransactionStatus::CaptureSucceeded).then_some(now));
    let voided_at = current
        .voided_at
        .or_else(|| became(TransactionStatus::AuthorizationVoided).then_some(now));
    let update = TransactionUpdate::StateApplied {
        status: status.as_str().to_string(),
        authorized_amount: state.authorized_amount,
        captured_amount: state.captured_amount,
        refunded_amount: state.refunded_amount,
        disputed: state.disputed,
        error_code: error.as_ref().map(|e| e.error_code.as_str().to_string()),
        raw_response_code: error.as_ref().and_then(|e| e.raw_response_code.clone()),
        raw_response_description: error
            .as_ref()
            .and_then(|e| e.raw_response_description.clone()),
        state: serde_json::to_string(&state).unwrap_or_default(),
        authorized_at,
        captured_at,
        voided_at,
    };
    let events: Vec<EventRow> = changes
        .iter()
        .map(|c| {
            let (name, data) = event_of(c);
            event_row(current, name, data, now)
        })
        .collect();
    Ok(Some((update, events)))
}

/// A Tollgate-side outcome with no Stripe object to observe (a cancel before any PaymentIntent
/// existed): moves the status if the table allows.
pub(crate) async fn end_locally(
    ctx: &ApiContext,
    t: &TransactionRow,
    to: TransactionStatus,
    code: ErrorCode,
) -> ApiResult<TransactionRow> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let current = store_tx::get_any(&mut *tx, &t.id, ctx.store.for_update())
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    let mut state: TransactionState = serde_json::from_str(&current.state)
        .map_err(|e| ApiError::Internal(format!("state: {e}")))?;
    if !tollgate_domain::allowed(state.status, to) {
        tx.rollback()
            .await
            .map_err(tollgate_store::StoreError::from)?;
        return Ok(current);
    }
    let from = state.status;
    state.status = to;
    state.error_code = Some(code);
    let update = TransactionUpdate::StateApplied {
        status: to.as_str().to_string(),
        authorized_amount: state.authorized_amount,
        captured_amount: state.captured_amount,
        refunded_amount: state.refunded_amount,
        disputed: state.disputed,
        error_code: Some(code.as_str().to_string()),
        raw_response_code: None,
        raw_response_description: None,
        state: serde_json::to_string(&state).unwrap_or_default(),
        authorized_at: current.authorized_at,
        captured_at: current.captured_at,
        voided_at: current.voided_at,
    };
    store_tx::update(&mut *tx, &current.id, current.version, now, &update).await?;
    let change = Change::StatusChanged { from, to };
    let (name, data) = event_of(&change);
    insert_event(&mut tx, &current, name, data, now).await?;
    let _ = ErrorInfo::code(code);
    let row = store_tx::get_any(&mut *tx, &current.id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    crate::outbound::transaction_changed(&mut tx, &current.status, &row, now).await?;
    tollgate_store::commit(tx).await?;
    Ok(row)
}

pub(crate) async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<TransactionRow> {
    store_tx::get(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}

pub(crate) async fn connection_of(
    ctx: &ApiContext,
    t: &TransactionRow,
) -> ApiResult<ConnectionRow> {
    connections::get(ctx.store.reader(), &t.connection_id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "connection {} of transaction {} is gone",
                t.connection_id, t.id
            ))
        })
}

/// Re-reads the PaymentIntent (charge expanded) and applies it; creates it first when an
/// outage left the transaction without one.
pub async fn sync_row(ctx: &ApiContext, t: &TransactionRow) -> ApiResult<TransactionRow> {
    let conn = connection_of(ctx, t).await?;
    let Some(pi_id) = t.payment_intent_id.clone() else {
        if t.status == "processing" {
            return create_payment_intent(ctx, t, &conn).await;
        }
        return Ok(t.clone());
    };
    let stripe = ctx.stripe_for(&conn)?;
    let opts = RequestOptions {
        expand: vec!["latest_charge".into()],
        ..RequestOptions::default()
    };
    let pi = stripe
        .request(
            axum::http::Method::GET,
            &format!("/v1/payment_intents/{pi_id}"),
            &Map::new(),
            opts,
        )
        .await
        .map_err(|e| outage(ctx, &e, Some(&t.id)))?;
    let row =
        apply_observations(ctx, t, stripe_map::observations_of_intent(&pi, ctx.now())).await?;
    cards::remember_intent(ctx, &row, &pi).await;
    refunds::sync_refunds(ctx, &row, &stripe).await?;
    load_any(ctx, &row.id).await
}

pub(crate) async fn load_any(ctx: &ApiContext, id: &str) -> ApiResult<TransactionRow> {
    store_tx::get_any(ctx.store.reader(), id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}
/// Cancels the PaymentIntent with `reason` and applies the answer.
pub(crate) async fn cancel_intent(
    ctx: &ApiContext,
    t: &TransactionRow,
    reason: &str,
    key: &str,
) -> ApiResult<TransactionRow> {
    let conn = connection_of(ctx, t).await?;
    let stripe = ctx.stripe_for(&conn)?;
    let pi_id = t.payment_intent_id.clone().unwrap_or_default();
    match stripe
        .cancel_payment_intent(
            &pi_id,
            Some(reason),
            Some(&format!("tollgate-{}-{key}", t.id)),
        )
        .await
    {
        Ok(pi) => {
            let row =
                apply_observations(ctx, t, stripe_map::observations_of_intent(&pi, ctx.now()))
                    .await?;
            // The answer names its latest charge without expanding it; when the outcome
            // (voided or failed) hangs on that charge, the re-read with it expanded decides.
            if row.status == t.status && pi["latest_charge"].is_string() {
                return sync_row(ctx, &row).await;
            }
            Ok(row)
        }
        Err(e) if e.is_retryable_outage() => Err(outage(ctx, &e, Some(&t.id))),
        // Refused (the buyer paid meanwhile, or it is already canceled): re-read and apply.
        Err(_) => sync_row(ctx, t).await,
    }
}

/// Marks the approval/session tokens spent (the payment reached a final state).
pub async fn spend_tokens(ctx: &ApiContext, t: &TransactionRow) -> ApiResult<()> {
    let mut tx = ctx.store.begin().await?;
    let current = store_tx::get_any(&mut *tx, &t.id, ctx.store.for_update()).await?;
    if let Some(c) = current {
        store_tx::update(
            &mut *tx,
            &c.id,
            c.version,
            ctx.now(),
            &TransactionUpdate::TokensSpent,
        )
        .await?;
    }
    tollgate_store::commit(tx).await?;
    Ok(())
}

/// Ends an approval that ran out of time (the expiry job). The buyer may have paid at the last
/// second with nothing telling us yet, and Stripe cancels an authorized (`requires_capture`)
/// PaymentIntent by releasing the money, so the PaymentIntent is read first and canceled only
/// while it still awaits the buyer; if Stripe refuses the cancel, the re-sync applies what
/// happened.
pub async fn expire_approval(ctx: &ApiContext, t: &TransactionRow) -> ApiResult<TransactionRow> {
    if t.payment_intent_id.is_some() {
        let t = sync_row(ctx, t).await?;
        if !matches!(t.status.as_str(), "processing" | "buyer_approval_pending") {
            return Ok(t);
        }
        cancel_intent(ctx, &t, "abandoned", "expire").await
    } else {
        end_locally(
            ctx,
            t,
            TransactionStatus::AuthorizationFailed,
            ErrorCode::IncompleteBuyerApproval,
        )
        .await
    }
}

/// Captures an authorized transaction: all of it, or `amount` (minor units, as the request gave
/// it: a positive integer up to the authorized amount), then applies Stripe's answer.
pub async fn capture(
    ctx: &ApiContext,
    caller: &Caller,
    id: &str,
    amount: Option<&Value>,
) -> ApiResult<TransactionRow> {
    let t = load(ctx, caller, id).await?;
    if t.status != "authorization_succeeded" {
        return Err(ApiError::bad_request(format!(
            "Only an authorized transaction can be captured; this one is {}.",
            t.status
        )));
    }
    let amount = match amount {
        None | Some(Value::Null) => t.authorized_amount,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|a| a > 0) => n.as_i64().unwrap_or(0),
        Some(_) => return Err(ApiError::field("/amount", "Must be a positive integer.")),
    };
    if amount > t.authorized_amount {
        return Err(ApiError::field(
            "/amount",
            format!(
                "Must not exceed the authorized amount ({}).",
                t.authorized_amount
            ),
        ));
    }
    let conn = connection_of(ctx, &t).await?;
    let stripe = ctx.stripe_for(&conn)?;
    let pi_id = t.payment_intent_id.clone().unwrap_or_default();
    let currency =
        Currency::parse(&t.currency).map_err(|_| ApiError::Internal("stored currency".into()))?;
    let stripe_amount = Money::new(
        Amount::new(amount).map_err(|_| ApiError::field("/amount", "Must be positive."))?,
        currency,
    )
    .to_stripe_amount()
    .map_err(|_| ApiError::field("/amount", "Not expressible in Stripe's units."))?;
    let result = stripe
        .capture_payment_intent(
            &pi_id,
            Some(stripe_amount),
            Some(&format!("tollgate-{}-capture", t.id)),
        )
        .await;
    let pi = match result {
        Ok(pi) => pi,
        Err(e) if e.is_retryable_outage() => return Err(outage(ctx, &e, Some(&t.id))),
        Err(_) => {
            // Stripe refused (e.g. already captured elsewhere): our view may be stale.
            let row = sync_row(ctx, &t).await?;
            return Err(ApiError::bad_request(format!(
                "Stripe refused the capture; the transaction is now {}.",
                row.status
            )));
        }
    };
    let mut obs = stripe_map::observations_of_intent(&pi, ctx.now());
    if let Some(ch_id) = pi["latest_charge"].as_str()
        && let Ok(ch) = stripe.retrieve_charge(ch_id).await
    {
        cards::remember_charge(ctx, &t, &ch).await;
        obs.push(Observation::Charge(stripe_map::charge(&ch, ctx.now())));
    }
    apply_observations(ctx, &t, obs).await
}

/// Voids an authorized, uncaptured transaction (cancels its PaymentIntent).
pub async fn void(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<TransactionRow> {
    let t = load(ctx, caller, id).await?;
    if t.status != "authorization_succeeded" {
        return Err(ApiError::bad_request(format!(
            "Only an authorized, uncaptured transaction can be voided; this one is {}.",
            t.status
        )));
    }
    cancel_intent(ctx, &t, "requested_by_customer", "void").await
}
