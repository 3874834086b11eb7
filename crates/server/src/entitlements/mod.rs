//! Entitlements (SPEC §5): Stripe objects in, permissions of the business's users out.
//!
//! - [`on_stripe_event`]: the entry point of the Stripe webhook inbox for the entitlement
//!   half. Stores the event's object(s) at their newest version (tenant-isolated: objects are
//!   found by (connection, Stripe id); metadata only links new customers), and re-evaluates
//!   every customer the object touches, writing the read model in the same transaction.
//! - [`link_customer`]: `POST /v1/connect_stripe`'s work: link, read the customer's earlier
//!   purchases from Stripe, re-evaluate.
//! - [`reevaluate`]: the one place the read model is written.
//! - [`notify`]: the one place permission changes and new links leave the transaction
//!   (outbound webhooks: wired at merge with issue 8).
//! - [`expire_once`] / [`spawn_expiry`]: the expiry job.

pub mod credits;
pub mod features;
pub mod map;
pub mod runtime;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Map, Value, json};
use tollgate_domain::entitlements::{
    self as dom, Catalog, ChangeKind, Grace, Ledger, PermissionDef, PermissionState, Policy,
    Record, Sku, Stamp,
};
use tollgate_store::entitlements::{self as es, LinkRow, ObjectRow, PermissionRow};
use tollgate_store::{Backend, ConnectionRow, Tx};
use tollgate_stripe::client::StripeError;

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};

pub use runtime::{Cached, Runtime};

/// The Stripe event types the entitlement half reads (SPEC §4, issue 7), plus customer and
/// test-clock events that carry links and frozen times.
pub const EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "payment_intent.partially_funded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.updated",
    "invoice.payment_failed",
    "invoice_payment.paid",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_reinstated",
    "charge.dispute.funds_withdrawn",
    "radar.early_fraud_warning.created",
    "radar.early_fraud_warning.updated",
    "credit_note.created",
    "credit_note.updated",
    "credit_note.voided",
    "customer.created",
    "customer.updated",
    "test_helpers.test_clock.ready",
];

/// Whether the entitlement half reads events of this type.
pub fn is_relevant(event_type: &str) -> bool {
    EVENT_TYPES.contains(&event_type) || SYNCED_TYPES.contains(&event_type)
}

/// Objects reconcile read from Stripe's lists (`crate::reconcile`), fed through the inbox.
pub const SYNCED_TYPES: &[&str] = &[
    "checkout.session.synced",
    "payment_intent.synced",
    "customer.subscription.synced",
    "invoice.synced",
    "credit_note.synced",
    "customer.synced",
];

/// What made a re-evaluation: recorded with every permission change in the customer's history
/// (`cause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Stripe events (of one batch); per customer, those of its own objects.
    Stripe(Vec<Origin>),
    /// Objects read again from Stripe (a sync, a renewal check, a tie).
    StripeRead,
    /// A manual grant given (`granted`) or revoked (`revoked`).
    Grant { id: String, action: &'static str },
    /// A Stripe customer linked to (or moved away from) the customid.
    Link {
        connection_id: String,
        stripe_customer_id: String,
    },
    /// The catalogue (SKUs, permission definitions) changed.
    Catalogue,
    /// The account's entitlement settings changed.
    Settings,
    /// Time passed: the expiry job, on the server's clock.
    Clock,
    /// A Stripe test clock moved.
    TestClock(String),
}

/// The Stripe event an object came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub event_id: String,
    pub event_type: String,
    pub object_id: String,
}

impl Cause {
    /// The cause as the history shows it, for one customer whose purchases are `purchases`.
    fn json(&self, purchases: &Purchases) -> Value {
        match self {
            Cause::Stripe(origins) => {
                let ours: Vec<&Origin> = origins
                    .iter()
                    .filter(|o| {
                        purchases.objects.iter().any(|r| r.object_id == o.object_id)
                            || purchases.ledger.records().any(|r| r.id() == o.object_id)
                    })
                    .collect();
                let ours = if ours.is_empty() {
                    origins.iter().collect()
                } else {
                    ours
                };
                let events: Vec<Value> = ours
                    .iter()
                    .map(|o| json!({"id": o.event_id, "type": o.event_type}))
                    .collect();
                match ours.first() {
                    Some(first) => json!({"type": "stripe_event", "event_id": first.event_id,
                        "event_type": first.event_type, "events": events}),
                    None => json!({"type": "stripe_read"}),
                }
            }
            Cause::StripeRead => json!({"type": "stripe_read"}),
            Cause::Grant { id, action } => {
                json!({"type": "grant", "grant_id": id, "action": action})
            }
            Cause::Link {
                connection_id,
                stripe_customer_id,
            } => json!({"type": "link", "connection_id": connection_id,
                        "stripe_customer_id": stripe_customer_id}),
            Cause::Catalogue => json!({"type": "catalogue"}),
            Cause::Settings => json!({"type": "settings"}),
            Cause::Clock => json!({"type": "clock"}),
            Cause::TestClock(id) => json!({"type": "test_clock", "test_clock": id}),
        }
    }
}

/// Something to announce once the transaction that caused it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `permission.granted|renewed|revoked|expired`.
    Permission {
        merchant_account_id: String,
        customid: String,
        change: ChangeKind,
        /// The permission as `GET /v1/permissions` shows it.
        permission: Value,
    },
    /// `customer.linked`.
    CustomerLinked {
        merchant_account_id: String,
        customid: String,
        connection_id: String,
        stripe_customer_id: String,
        linked_by: String,
    },
    /// `customer.state_changed`: the customer's whole permission set at `version`.
    StateChanged {
        merchant_account_id: String,
        customid: String,
        version: i64,
        permissions: Vec<Value>,
    },
}

impl Notice {
    pub fn event_name(&self) -> &'static str {
        match self {
            Notice::Permission { change, .. } => change.event_name(),
            Notice::CustomerLinked { .. } => "customer.linked",
            Notice::StateChanged { .. } => "customer.state_changed",
        }
    }
}

/// Hands the notices of a transaction to the outbound webhooks, inside that transaction
/// (transactional outbox, SPEC §7).
///
/// `permission.*` carry the permission as `GET /v1/permissions` shows it (plus `customid`);
/// `customer.linked` the link.
pub async fn notify(tx: &mut Tx<'_>, notices: &[Notice], now: i64) -> ApiResult<()> {
    for n in notices {
        let (merchant, target) = match n {
            Notice::Permission {
                merchant_account_id,
                customid,
                permission,
                ..
            } => {
                let mut target = permission.clone();
                target["customid"] = json!(customid);
                (merchant_account_id, target)
            }
            Notice::CustomerLinked {
                merchant_account_id,
                customid,
                connection_id,
                stripe_customer_id,
                linked_by,
            } => (
                merchant_account_id,
                json!({"type": "customer-link", "customid": customid,
                       "connection_id": connection_id,
                       "stripe_customer_id": stripe_customer_id, "linked_by": linked_by}),
            ),
            Notice::StateChanged {
                merchant_account_id,
                customid,
                version,
                permissions,
            } => (
                merchant_account_id,
                json!({"type": "customer-state", "customid": customid, "version": version,
                       "permissions": permissions}),
            ),
        };
        tracing::info!(event = n.event_name(), merchant_account_id = %merchant, "entitlement notice");
        // Transactional outbox: the delivery rows commit with the change (SPEC §7).
        crate::outbound::emit(tx, merchant, n.event_name(), &target, now).await?;
    }
    Ok(())
}

// ---- the event entry point -----------------------------------------------------------------

/// Applies one Stripe event of `connection` to entitlements. Returns whether the event is of a
/// type entitlements read (`false`: ignored). Idempotent and order-proof: the object is kept at
/// its newest version and every touched customer is re-evaluated from all they bought, in one
/// database transaction with the read model and the notices.
///
/// Errors are worth retrying (Stripe unreachable while reading a Checkout Session's line items,
/// the database).
pub async fn on_stripe_event(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    event: &Value,
) -> ApiResult<bool> {
    let read = on_stripe_events(ctx, connection, &[event]).await?;
    Ok(read.first().copied().unwrap_or(false))
}

/// [`on_stripe_event`] for several events of one connection: [`prepare_events`], then
/// [`apply_in`] in one database transaction. Returns, per event, whether entitlements read it.
pub async fn on_stripe_events(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    events: &[&Value],
) -> ApiResult<Vec<bool>> {
    let work = prepare_events(ctx, connection, events).await?;
    let read = work.iter().map(Option::is_some).collect();
    let work: Vec<&Work> = work.iter().flatten().collect();
    if !work.is_empty() {
        write(ctx, connection, &work, None).await?;
    }
    Ok(read)
}

/// Stripe stamps events in whole seconds: two versions of one object from the same second
/// (a subscription renewed, then past due) at the same progress cannot be ordered by what they
/// say. Rather than let an arbitrary order keep the older one, the object is read again from
/// Stripe once the tied second is over, and stored stamped with the second of the read: it
/// beats every event of the tied second (all older than the read). A read that ties an event
/// of its own second is read once more; after that what is stored stays (so that a fake clock
/// that does not move cannot loop). Kinds Stripe cannot be asked for alone stay as stored.
pub async fn reread_ties(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    mut ties: Vec<(String, String, i64)>,
) -> ApiResult<()> {
    for round in 0..2 {
        let Some(latest) = ties.iter().map(|t| t.2).max() else {
            return Ok(());
        };
        // Wait (at most a second, only after a tie) until the tied second is over.
        let wait_ms = latest
            .saturating_add(1)
            .saturating_mul(1000)
            .saturating_sub(ctx.now());
        if wait_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms.min(1100) as u64)).await;
        }
        let stripe = ctx.stripe_for(connection)?;
        let mut fresh = Vec::new();
        for (kind, id, at) in &ties {
            let base = match kind.as_str() {
                "subscription" => "/v1/subscriptions",
                "invoice" => "/v1/invoices",
                "payment_intent" => "/v1/payment_intents",
                "charge" => "/v1/charges",
                "dispute" => "/v1/disputes",
                "credit_note" => "/v1/credit_notes",
                "checkout.session" => "/v1/checkout/sessions",
                _ => continue,
            };
            let path = format!("{base}/{}", seg(id));
            match stripe.retrieve(&path).await {
                Ok(object) => fresh.push(((ctx.now() / 1000).max(*at), object)),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(stripe_error(ctx, &e)),
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut objects: Vec<&mut Value> = fresh.iter_mut().map(|(_, o)| o).collect();
        prepare_all(ctx, connection, &mut objects).await?;
        let work: Vec<Work> = fresh
            .into_iter()
            .map(|(at, o)| Work::object(at, o))
            .collect::<ApiResult<_>>()?;
        let refs: Vec<&Work> = work.iter().collect();
        let mut tx = ctx.store.begin().await?;
        let again = apply_because(
            ctx,
            &mut tx,
            connection,
            &refs,
            None,
            Some(Cause::StripeRead),
        )
        .await?
        .ties;
        tollgate_store::commit(tx).await?;
        if round == 1 {
            break;
        }
        ties = again;
    }
    Ok(())
}

/// What one event gives entitlements to write, read before the write transaction opens (the
/// Stripe reads happen here, so no write lock waits for the network).
pub enum Work {
    /// An object to store, at its event's stamp (seconds), with the text stored of it and
    /// the event it came with (none for a read from Stripe).
    Object(i64, Value, String, Option<Origin>),
    /// A test clock that moved (its frozen time already stored by [`prepare_events`]): its
    /// customers are re-evaluated at it. Empty: a clock event with nothing to move.
    Clock(String),
}

impl Work {
    /// An object to store at stamp `at`. Its text is written here, before the write
    /// transaction: on SQLite every write waits for the one writer, so what can be done
    /// before it is done before it.
    pub fn object(at: i64, object: Value) -> ApiResult<Work> {
        let data = serde_json::to_string(&object)
            .map_err(|e| ApiError::Internal(format!("serialising a Stripe object: {e}")))?;
        Ok(Work::Object(at, object, data, None))
    }
}

/// Reads `events` of one connection: per event, `None` when entitlements do not read it, else
/// what it gives them to write.
pub async fn prepare_events(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    events: &[&Value],
) -> ApiResult<Vec<Option<Work>>> {
    let objects = events.iter().filter_map(|e| object_read(connection, e));
    let mut items = line_items_for(ctx, connection, objects).await?;
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        out.push(take(ctx, connection, event, &mut items).await?);
    }
    Ok(out)
}

/// The object of `event` when entitlements read it: a type they read, of this connection's
/// Stripe account (another account's event is not this connection's to apply).
fn object_read<'e>(connection: &ConnectionRow, event: &'e Value) -> Option<&'e Value> {
    if !is_relevant(event["type"].as_str().unwrap_or_default()) {
        return None;
    }
    if let Some(acct) = event["account"].as_str()
        && connection.stripe_account.as_deref() != Some(acct)
    {
        return None;
    }
    Some(&event["data"]["object"]).filter(|o| o.is_object())
}

async fn take(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    event: &Value,
    line_items: &mut LineItems,
) -> ApiResult<Option<Work>> {
    let Some(object) = object_read(connection, event) else {
        return Ok(None);
    };
    let at = event["created"]
        .as_i64()
        .unwrap_or_else(|| ctx.now() / 1000);
    if object["object"] == "test_helpers.test_clock" {
        let (Some(id), Some(frozen)) = (object["id"].as_str(), object["frozen_time"].as_i64())
        else {
            // Nothing to move, but read (the event is not ignored).
            return Ok(Some(Work::Clock(String::new())));
        };
        // The clock moved these customers' "now": a renewing subscription whose period ended
        // more than the renewal leeway ago is re-read before anything expires (SPEC §5.3),
        // exactly as the expiry job does for customers on the real clock, so a renewal webhook
        // that is late never flickers a permission. A failed read fails the event, which the
        // inbox retries. The batch's transaction then re-evaluates them at the new time.
        es::put_clock(ctx.store.writer(), &connection.id, id, frozen, ctx.now()).await?;
        let customids = es::customids_on_clock(ctx.store.reader(), &connection.id, id).await?;
        for c in &customids {
            reread_subscriptions(ctx, &connection.merchant_account_id, c).await?;
        }
        return Ok(Some(Work::Clock(id.to_string())));
    }
    let mut object = object.clone();
    prepare(ctx, connection, &mut object, line_items).await?;
    let origin = Origin {
        event_id: event["id"].as_str().unwrap_or_default().to_string(),
        event_type: event["type"].as_str().unwrap_or_default().to_string(),
        object_id: object["id"].as_str().unwrap_or_default().to_string(),
    };
    let mut work = Work::object(at, object)?;
    if let Work::Object(_, _, _, o) = &mut work {
        *o = Some(origin);
    }
    Ok(Some(work))
}

/// [`prepare`] for several objects: their line items are read first, together.
async fn prepare_all(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    objects: &mut [&mut Value],
) -> ApiResult<()> {
    let mut items = line_items_for(ctx, connection, objects.iter().map(|o| &**o)).await?;
    for o in objects.iter_mut() {
        prepare(ctx, connection, o, &mut items).await?;
    }
    Ok(())
}

/// Reads what an object needs from Stripe before it is stored: a Checkout Session's line items
/// (the event does not carry them; from `line_items` when read already), and its test clock's
/// frozen time if unknown.
async fn prepare(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    object: &mut Value,
    line_items: &mut LineItems,
) -> ApiResult<()> {
    if let Some(id) = needs_line_items(object) {
        let items = match line_items.get(id) {
            Some(items) => items.clone(),
            None => {
                let read = read_line_items(ctx, connection, vec![id.to_string()]).await?;
                line_items.extend(read);
                line_items.get(id).cloned().unwrap_or_default()
            }
        };
        object["line_items"] = json!({"object": "list", "data": items, "has_more": false});
    }
    if let Some(clock) = map::test_clock_of(object)
        && es::get_clock(ctx.store.reader(), &connection.id, &clock)
            .await?
            .is_none()
    {
        fetch_clock(ctx, connection, &clock).await;
    }
    Ok(())
}

/// Reads a test clock's frozen time from Stripe and stores it (best effort: a customer whose
/// clock is unknown is evaluated at the server's "now").
async fn fetch_clock(ctx: &ApiContext, connection: &ConnectionRow, clock: &str) {
    let Ok(stripe) = ctx.stripe_for(connection) else {
        return;
    };
    let path = format!("/v1/test_helpers/test_clocks/{}", seg(clock));
    match stripe.retrieve(&path).await {
        Ok(c) => {
            if let Some(t) = c["frozen_time"].as_i64() {
                let _ =
                    es::put_clock(ctx.store.writer(), &connection.id, clock, t, ctx.now()).await;
            }
        }
        Err(e) => tracing::warn!(clock, error = %e.message(), "reading a test clock failed"),
    }
}

/// Line items of Checkout Sessions, by session id.
type LineItems = HashMap<String, Vec<Value>>;

/// How many line-item reads go to Stripe at once (a batch of events can name many sessions;
/// one after another, each read's round trip held the batch up).
const LINE_ITEM_READS: usize = 8;

/// A Checkout Session's id when its line items must be read: a purchase (`payment` mode) whose
/// object does not carry them (Stripe's events never do).
fn needs_line_items(object: &Value) -> Option<&str> {
    if object["object"] == "checkout.session"
        && object["mode"] == "payment"
        && object["line_items"].is_null()
    {
        object["id"].as_str()
    } else {
        None
    }
}

/// The line items of the sessions among `objects` that need them. A session stored complete
/// or expired keeps the line items stored with it: Stripe changes a session's line items only
/// while it is open, so reading them again (a second event for the session, a replay, a
/// sync) would read the same list. The others are read from Stripe, [`LINE_ITEM_READS`] at a
/// time.
async fn line_items_for<'o>(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    objects: impl Iterator<Item = &'o Value>,
) -> ApiResult<LineItems> {
    let ids: BTreeSet<&str> = objects.filter_map(needs_line_items).collect();
    if ids.is_empty() {
        return Ok(LineItems::new());
    }
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut conn = ctx.store.hold_reader().await?;
    let mut known = LineItems::new();
    for row in es::objects_by_ids(&mut conn, &connection.id, &ids).await? {
        if row.object_type == "checkout.session"
            && let Some(items) = final_line_items(&row.data)
        {
            known.insert(row.object_id, items);
        }
    }
    drop(conn);
    let missing: Vec<String> = ids
        .into_iter()
        .filter(|id| !known.contains_key(*id))
        .map(str::to_string)
        .collect();
    known.extend(read_line_items(ctx, connection, missing).await?);
    Ok(known)
}

/// The whole line-item list stored with a session that is final (complete or expired).
fn final_line_items(stored: &str) -> Option<Vec<Value>> {
    #[derive(serde::Deserialize)]
    struct Session {
        status: Option<String>,
        line_items: Option<List>,
    }
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Value>,
        #[serde(default)]
        has_more: bool,
    }
    let s: Session = serde_json::from_str(stored).ok()?;
    let list = s.line_items.filter(|l| !l.has_more)?;
    matches!(s.status.as_deref(), Some("complete" | "expired")).then_some(list.data)
}

/// Reads the line items of sessions `ids` from Stripe, [`LINE_ITEM_READS`] at a time.
async fn read_line_items(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    ids: Vec<String>,
) -> ApiResult<Vec<(String, Vec<Value>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let stripe = ctx.stripe_for(connection)?;
    let stripe = &stripe;
    stream::iter(ids)
        .map(|id| async move {
            let path = format!("/v1/checkout/sessions/{}/line_items", seg(&id));
            let items = stripe.list_all(&path, &Map::new(), 1000).await?;
            Ok((id, items))
        })
        .buffer_unordered(LINE_ITEM_READS)
        .try_collect()
        .await
        .map_err(|e| stripe_error(ctx, &e))
}

fn seg(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn stripe_error(ctx: &ApiContext, e: &StripeError) -> ApiError {
    crate::transactions::outage(ctx, e, None)
}

/// Stores Stripe objects (each at stamp `at`, seconds) of a connection, links customers named
/// by metadata, re-evaluates every customer touched (plus `also`), notifies, commits: one
/// transaction. Returns the notices.
pub async fn ingest(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    objects: Vec<(i64, Value)>,
    also: Option<&str>,
    cause: Cause,
) -> ApiResult<Vec<Notice>> {
    let work: Vec<Work> = objects
        .into_iter()
        .map(|(at, o)| Work::object(at, o))
        .collect::<ApiResult<_>>()?;
    let refs: Vec<&Work> = work.iter().collect();
    let mut tx = ctx.store.begin().await?;
    let applied = apply_because(ctx, &mut tx, connection, &refs, also, Some(cause)).await?;
    tollgate_store::commit(tx).await?;
    reread_ties(ctx, connection, applied.ties).await?;
    Ok(applied.notices)
}

/// [`apply_in`] in a transaction of its own, committed, then [`reread_ties`]. Returns the
/// notices.
pub async fn write(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    work: &[&Work],
    also: Option<&str>,
) -> ApiResult<Vec<Notice>> {
    let mut tx = ctx.store.begin().await?;
    let applied = apply_in(ctx, &mut tx, connection, work, also).await?;
    tollgate_store::commit(tx).await?;
    reread_ties(ctx, connection, applied.ties).await?;
    Ok(applied.notices)
}

/// What [`apply_in`] did: the notices it emitted, and the objects (kind, id, stamp) whose new
/// version tied the stored one (same second, same progress, different content), for
/// [`reread_ties`] once the transaction has committed.
pub struct Applied {
    pub notices: Vec<Notice>,
    pub ties: Vec<(String, String, i64)>,
}

/// Writes prepared [`Work`] of one connection inside `tx` (the caller commits): objects stored
/// at their newest version, customers named by metadata linked, and every
/// customer touched (plus `also`) re-evaluated, with the notices in the outbox. Returns the
/// notices.
pub async fn apply_in(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    connection: &ConnectionRow,
    work: &[&Work],
    also: Option<&str>,
) -> ApiResult<Applied> {
    apply_because(ctx, tx, connection, work, also, None).await
}

/// [`apply_in`], with the cause recorded in the history: `cause`, else the events the work
/// came with (a test clock's move, or a read from Stripe, when none).
async fn apply_because(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    connection: &ConnectionRow,
    work: &[&Work],
    also: Option<&str>,
    cause: Option<Cause>,
) -> ApiResult<Applied> {
    let cause = cause.unwrap_or_else(|| {
        let origins: Vec<Origin> = work
            .iter()
            .filter_map(|w| match w {
                Work::Object(_, _, _, o) => o.clone(),
                Work::Clock(_) => None,
            })
            .collect();
        let clock = work.iter().find_map(|w| match w {
            Work::Clock(id) if !id.is_empty() => Some(id.clone()),
            _ => None,
        });
        match (origins.is_empty(), clock) {
            (false, _) => Cause::Stripe(origins),
            (true, Some(c)) => Cause::TestClock(c),
            (true, None) => Cause::StripeRead,
        }
    });
    let merchant = connection.merchant_account_id.as_str();
    let now = ctx.now();
    let key = es::customid_key(&mut **tx, &connection.id).await?;
    let mut notices = Vec::new();
    let mut ties = Vec::new();
    let mut touched: BTreeSet<String> = also.into_iter().map(str::to_string).collect();
    let mut touched_ids: BTreeSet<String> = BTreeSet::new();
    let mut links = Links::new(ctx.store.backend());
    let customers: BTreeSet<String> = work
        .iter()
        .filter_map(|w| match w {
            Work::Object(_, object, _, _) => map::customer_of(object),
            Work::Clock(_) => None,
        })
        .collect();
    if ctx.store.backend() == Backend::Postgres {
        // Each customer's link lock before any link is read, all in one order (the set's):
        // two batches that share customers then wait for each other instead of deadlocking
        // (taken object by object, two workers' batches deadlocked, and PostgreSQL broke
        // each deadlock only after `deadlock_timeout`, 1 s).
        let cus: Vec<&str> = customers.iter().map(String::as_str).collect();
        es::lock_stripe_customers(tx, &connection.id, &cus).await?;
        // Then each object written and each object it refers to (see `lock_objects`).
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        let records: Vec<Record> = work
            .iter()
            .filter_map(|w| match w {
                Work::Object(_, object, _, _) => Some(map::records_of(object, None)),
                Work::Clock(_) => None,
            })
            .flatten()
            .collect();
        let refs: Vec<String> = records.iter().flat_map(map::refs_of).collect();
        ids.extend(records.iter().map(Record::id));
        ids.extend(refs.iter().map(String::as_str));
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(es::WALK_CHUNK) {
            lock_objects(tx, &connection.id, chunk).await?;
        }
    }
    links.prefetch(tx, &connection.id, &customers).await?;
    let stored_clocks = links.stored_clocks(tx, &connection.id, &customers).await?;
    let mut objects: Vec<ObjectRow> = Vec::new();
    let mut refs: Vec<(String, String)> = Vec::new();
    for w in work {
        if let Work::Clock(id) = w
            && !id.is_empty()
        {
            touched.extend(es::customids_on_clock(&mut **tx, &connection.id, id).await?);
        }
    }
    for w in work {
        let (at, object, data) = match w {
            Work::Object(at, object, data, _) => (at, object, data),
            Work::Clock(_) => continue,
        };
        let customer = map::customer_of(object);
        let customid = map::customid_of(object, &key);
        // Metadata links a customer not linked yet; it never moves an existing link.
        if let (Some(cus), Some(cid)) = (&customer, &customid) {
            let existing = links.get(tx, &connection.id, cus).await?;
            if existing.is_none() {
                // The customer's test clock decides its "now" and which clock moves it: from
                // the object (customers, subscriptions and invoices carry it), else from what
                // was stored of the customer before the link (a Checkout Session carries no
                // clock, and its subscription's events may have been applied before it).
                let pending_clock = || {
                    objects
                        .iter()
                        .filter(|o| o.stripe_customer_id.as_ref() == Some(cus))
                        .find_map(|o| map::test_clock_of(&parse(&o.data)))
                };
                let test_clock = match map::test_clock_of(object).or_else(pending_clock) {
                    Some(c) => Some(c),
                    None => match &stored_clocks {
                        Some(clocks) => clocks.get(cus).cloned(),
                        None => es::objects_of_customer(&mut **tx, &connection.id, cus)
                            .await?
                            .iter()
                            .find_map(|o| map::test_clock_of(&parse(&o.data))),
                    },
                };
                let link = LinkRow {
                    connection_id: connection.id.clone(),
                    stripe_customer_id: cus.clone(),
                    merchant_account_id: merchant.to_string(),
                    customid: cid.clone(),
                    linked_by: "metadata".into(),
                    test_clock,
                    created_at: now,
                    updated_at: now,
                };
                links.put(tx, &link).await?;
                notices.push(Notice::CustomerLinked {
                    merchant_account_id: merchant.to_string(),
                    customid: cid.clone(),
                    connection_id: connection.id.clone(),
                    stripe_customer_id: cus.clone(),
                    linked_by: "metadata".into(),
                });
            }
        }
        // Any object that names the customer's test clock (not only the customer: its
        // events may have come before the link) records the clock on the link.
        if let (Some(cus), Some(clock)) = (&customer, map::test_clock_of(object))
            && let Some(mut l) = links.get(tx, &connection.id, cus).await?
            && l.test_clock.as_deref() != Some(clock.as_str())
        {
            l.test_clock = Some(clock);
            l.updated_at = now;
            links.put(tx, &l).await?;
        }
        if object["object"] == "customer" {
            if let Some(cus) = &customer {
                touched.extend(links.customid(tx, &connection.id, cus).await?);
            }
            continue;
        }
        let records = map::records_of(object, None);
        let Some(main) = records.first() else {
            continue;
        };
        let row = ObjectRow {
            connection_id: connection.id.clone(),
            object_type: main.kind().to_string(),
            object_id: main.id().to_string(),
            merchant_account_id: merchant.to_string(),
            stamp_at: *at,
            stamp_progress: Stamp::of(*at, main).progress,
            stripe_customer_id: customer.clone(),
            // A direct link only for guest purchases: a customer's objects follow its link.
            customid: if customer.is_none() {
                customid.clone()
            } else {
                None
            },
            data: data.clone(),
            created_at: now,
            updated_at: now,
        };
        for r in &records {
            refs.extend(
                map::refs_of(r)
                    .into_iter()
                    .map(|to| (row.object_id.clone(), to)),
            );
            touched_ids.insert(r.id().to_string());
        }
        objects.push(row);
        if let Some(cus) = &customer
            && let Some(cid) = links.customid(tx, &connection.id, cus).await?
        {
            touched.insert(cid);
        }
        if customer.is_none()
            && let Some(cid) = &customid
        {
            touched.insert(cid.clone());
        }
    }
    // The objects are written together, after the links they need (whose test clock may
    // come from an object of the same batch: see `pending_clock`).
    links.flush(tx).await?;
    let tied = es::put_objects(tx, &connection.id, &objects).await?;
    for (o, tied) in objects.iter().zip(tied) {
        if tied {
            ties.push((o.object_type.clone(), o.object_id.clone(), o.stamp_at));
        }
    }
    es::put_refs(tx, &connection.id, &refs).await?;
    // Objects without a customer of their own (a dispute, a credit note's invoice payment)
    // reach their customers through what they are attached to.
    // The walks share objects (a charge's payment intent, an invoice's subscription); nothing
    // is written between them, so each object is read once.
    touched.extend(owners(tx, ctx.store.backend(), &connection.id, &touched_ids).await?);
    notices.extend(
        reevaluate_all(
            ctx,
            tx,
            merchant,
            touched.iter().map(String::as_str),
            &cause,
        )
        .await?,
    );
    notify(tx, &notices, ctx.now()).await?;
    Ok(Applied { notices, ties })
}

/// The links of one write transaction's Stripe customers as it reads and writes them, read
/// for all of them at once ([`Links::prefetch`]) and then from memory. On SQLite (one writer)
/// nothing else changes them while the transaction runs, so each is also written once, by
/// [`Links::flush`]. On PostgreSQL the transaction holds the link lock of each customer it
/// prefetches (`es::lock_stripe_customers`, taken by every writer of a link), so those stay as
/// read too; writes go to the database at once, and a customer not prefetched is read from
/// the database each time (`FOR UPDATE`).
struct Links {
    memo: HashMap<String, Option<LinkRow>>,
    /// SQLite: the customers whose links changed since the last flush.
    dirty: BTreeSet<String>,
    /// PostgreSQL: writes go to the database at once, and only prefetched (locked) customers
    /// and written links are kept.
    through: bool,
    lock: &'static str,
}

impl Links {
    fn new(backend: Backend) -> Links {
        Links {
            memo: HashMap::new(),
            dirty: BTreeSet::new(),
            through: backend == Backend::Postgres,
            lock: backend.for_update(),
        }
    }

    /// SQLite, after [`Links::prefetch`]: the test clocks that the stored objects of the
    /// `customers` not linked yet give, read at once. `None` on PostgreSQL, where each is read
    /// under its customer's lock when its link is made.
    async fn stored_clocks(
        &self,
        tx: &mut Tx<'_>,
        connection_id: &str,
        customers: &BTreeSet<String>,
    ) -> ApiResult<Option<HashMap<String, String>>> {
        if self.through {
            return Ok(None);
        }
        let unlinked: Vec<&str> = customers
            .iter()
            .filter(|c| matches!(self.memo.get(c.as_str()), Some(None)))
            .map(String::as_str)
            .collect();
        let mut clocks = HashMap::new();
        for o in es::objects_of_customers(tx, connection_id, &unlinked).await? {
            if let (Some(cus), Some(clock)) =
                (o.stripe_customer_id, map::test_clock_of(&parse(&o.data)))
            {
                clocks.entry(cus).or_insert(clock);
            }
        }
        Ok(Some(clocks))
    }

    /// Writes the links changed since the last flush (SQLite: one statement for them all).
    async fn flush(&mut self, tx: &mut Tx<'_>) -> ApiResult<()> {
        let rows: Vec<&LinkRow> = self
            .dirty
            .iter()
            .filter_map(|c| self.memo.get(c).and_then(Option::as_ref))
            .collect();
        es::put_links(tx, &rows).await?;
        self.dirty.clear();
        Ok(())
    }

    /// The customid `customer` is linked to.
    async fn customid(
        &mut self,
        tx: &mut Tx<'_>,
        connection_id: &str,
        customer: &str,
    ) -> ApiResult<Option<String>> {
        Ok(self
            .get(tx, connection_id, customer)
            .await?
            .map(|l| l.customid))
    }

    /// Reads the links of `customers` at once (on PostgreSQL the caller holds their link
    /// locks).
    async fn prefetch(
        &mut self,
        tx: &mut Tx<'_>,
        connection_id: &str,
        customers: &BTreeSet<String>,
    ) -> ApiResult<()> {
        let ids: Vec<&str> = customers
            .iter()
            .map(String::as_str)
            .filter(|c| !self.memo.contains_key(*c))
            .collect();
        let found = es::links_of_customers(tx, connection_id, &ids).await?;
        for c in ids {
            self.memo.insert(c.to_string(), None);
        }
        for l in found {
            self.memo.insert(l.stripe_customer_id.clone(), Some(l));
        }
        Ok(())
    }

    async fn get(
        &mut self,
        tx: &mut Tx<'_>,
        connection_id: &str,
        customer: &str,
    ) -> ApiResult<Option<LinkRow>> {
        if let Some(known) = self.memo.get(customer) {
            return Ok(known.clone());
        }
        let link = es::get_link(&mut **tx, connection_id, customer, self.lock).await?;
        if !self.through {
            self.memo.insert(customer.to_string(), link.clone());
        }
        Ok(link)
    }

    async fn put(&mut self, tx: &mut Tx<'_>, link: &LinkRow) -> ApiResult<()> {
        let customer = link.stripe_customer_id.clone();
        match self.through {
            // The upsert locks the row until the transaction ends: it stays as written.
            true => es::put_link(tx, link).await?,
            false => {
                self.dirty.insert(customer.clone());
            }
        }
        self.memo.insert(customer, Some(link.clone()));
        Ok(())
    }
}

/// The customids owning each of `ids` or anything it is attached to (three hops at most),
/// all walks taken a step at a time together: at each step the owners of every object on a
/// walk's frontier, and the next frontier only for the walks that found none. Two statements
/// per step for all walks, rather than two per object (each statement is a round trip to the
/// database while the write lock is held).
async fn owners(
    tx: &mut Tx<'_>,
    backend: Backend,
    connection_id: &str,
    ids: &BTreeSet<String>,
) -> ApiResult<BTreeSet<String>> {
    struct Walk {
        frontier: Vec<String>,
        seen: BTreeSet<String>,
    }
    let mut walks: Vec<Walk> = ids
        .iter()
        .map(|id| Walk {
            frontier: vec![id.clone()],
            seen: BTreeSet::new(),
        })
        .collect();
    // What each object gave, shared by the walks (nothing is written between them).
    let mut owners_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut around: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = BTreeSet::new();
    for _ in 0..4 {
        for w in &mut walks {
            let seen = &mut w.seen;
            w.frontier.retain(|oid| seen.insert(oid.clone()));
        }
        let need = unknown(
            &walks.iter().flat_map(|w| &w.frontier).collect::<Vec<_>>(),
            &owners_of,
        );
        for chunk in need.chunks(es::WALK_CHUNK) {
            if backend == Backend::Postgres {
                lock_objects(tx, connection_id, chunk).await?;
            }
            for (oid, cid) in es::owners_of_objects(tx, connection_id, chunk).await? {
                owners_of.entry(oid).or_default().push(cid);
            }
        }
        for oid in need {
            owners_of.entry(oid.to_string()).or_default();
        }
        walks.retain(|w| {
            let found: Vec<&String> = w.frontier.iter().flat_map(|o| &owners_of[o]).collect();
            out.extend(found.iter().map(|c| c.to_string()));
            found.is_empty()
        });
        let need = unknown(
            &walks.iter().flat_map(|w| &w.frontier).collect::<Vec<_>>(),
            &around,
        );
        for chunk in need.chunks(es::WALK_CHUNK) {
            for (oid, next) in es::neighbours_of(tx, connection_id, chunk).await? {
                around.entry(oid).or_default().push(next);
            }
        }
        for w in &mut walks {
            w.frontier = w
                .frontier
                .iter()
                .flat_map(|o| around.get(o).into_iter().flatten().cloned())
                .collect();
        }
        walks.retain(|w| !w.frontier.is_empty());
        if walks.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// PostgreSQL: transaction-scoped locks on the Stripe objects `ids` of a connection (at most
/// [`es::WALK_CHUNK`]) and on the links of the Stripe customers their stored versions name,
/// taken in one order (bytewise, as the callers' chunks of sorted ids).
///
/// Two transactions may apply objects of one purchase at once (two inbox workers: the sandbox
/// and Stripe deliver a payment's events and its dispute's together). Without these locks the
/// dispute's transaction walks from the dispute to its charge, does not see the charge (not
/// committed yet) and re-evaluates nobody, while the payment's transaction re-evaluates the
/// customer without the dispute (not committed yet): both commit and the open dispute never
/// revokes. So a transaction locks every object it writes and every object those refer to
/// before writing, and the owners walk locks every object before it reads who owns it (and
/// the links of their customers, which a writer locks with `es::lock_stripe_customer`): a walk
/// that reaches an object another transaction is writing waits for that commit and then sees
/// it, or the writer waits for the walk's commit and its re-evaluation sees what the walk's
/// transaction wrote.
async fn lock_objects(tx: &mut Tx<'_>, connection_id: &str, ids: &[&str]) -> ApiResult<()> {
    Ok(es::lock_objects(tx, connection_id, ids).await?)
}

/// Of `ids`, those `known` has no entry for, once each.
fn unknown<'a, V>(ids: &[&'a String], known: &HashMap<String, V>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|id| !known.contains_key(id.as_str()) && seen.insert(id.as_str()))
        .map(|id| id.as_str())
        .collect()
}

// ---- evaluation ------------------------------------------------------------------------------

/// Everything known about one customer's purchases: the ledger, and whether it is on a Stripe
/// test clock (then its frozen time).
pub struct Purchases {
    pub ledger: Ledger,
    pub links: Vec<LinkRow>,
    pub frozen_time: Option<i64>,
    pub objects: Vec<ObjectRow>,
}

/// Loads a customer's objects: those of its linked Stripe customers, those linked to the
/// customid directly, and everything attached to them (charges, disputes, credit notes, …).
pub async fn load_purchases(
    conn: &mut tollgate_store::Conn,
    merchant: &str,
    customid: &str,
) -> ApiResult<Purchases> {
    let mut all = load_purchases_of(conn, merchant, &[customid]).await?;
    all.pop()
        .ok_or_else(|| ApiError::Internal("no purchases loaded".into()))
}

/// [`load_purchases`] for each of `customids` (in their order), read together: each statement
/// serves every customer (a statement is a round trip, and the inbox writer re-evaluates the
/// customers of a whole batch while it holds the write lock).
pub async fn load_purchases_of(
    conn: &mut tollgate_store::Conn,
    merchant: &str,
    customids: &[&str],
) -> ApiResult<Vec<Purchases>> {
    type Key = (String, String, String);
    /// An object read, with its records (its document is parsed once).
    struct Read {
        row: ObjectRow,
        records: Vec<Record>,
    }
    #[derive(Default)]
    struct Walk {
        links: Vec<LinkRow>,
        objects: BTreeMap<Key, Read>,
        frontier: Vec<(String, String)>,
        seen: BTreeSet<(String, String)>,
    }
    impl Walk {
        // The first version read of an object is kept; what it points at, when it is new.
        fn add(&mut self, o: ObjectRow) -> Option<Vec<(String, String)>> {
            let k = (
                o.connection_id.clone(),
                o.object_type.clone(),
                o.object_id.clone(),
            );
            if self.objects.contains_key(&k) {
                return None;
            }
            let read = Read {
                records: map::records_of(&parse(&o.data), None),
                row: o,
            };
            let ids = ids_of(&read);
            self.objects.insert(k, read);
            Some(ids)
        }
    }
    // What a purchase points at (its payment intent) and what points at it (the intent's
    // charge, the charge's dispute, an invoice's credit notes).
    fn ids_of(o: &Read) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for r in &o.records {
            out.push((o.row.connection_id.clone(), r.id().to_string()));
            for rf in map::refs_of(r) {
                out.push((o.row.connection_id.clone(), rf));
            }
        }
        out
    }
    let mut walks: Vec<Walk> = customids.iter().map(|_| Walk::default()).collect();
    let walk_of: HashMap<&str, usize> =
        customids.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    // A connection's Stripe customer is linked to one customid.
    let mut customers: BTreeMap<String, HashMap<String, usize>> = BTreeMap::new();
    for l in es::links_of_customids(&mut *conn, merchant, customids).await? {
        if let Some(&i) = walk_of.get(l.customid.as_str()) {
            customers
                .entry(l.connection_id.clone())
                .or_default()
                .insert(l.stripe_customer_id.clone(), i);
            walks[i].links.push(l);
        }
    }
    for (conn_id, of) in &customers {
        let ids: Vec<&str> = of.keys().map(String::as_str).collect();
        for o in es::objects_of_customers(&mut *conn, conn_id, &ids).await? {
            if let Some(&i) = o.stripe_customer_id.as_deref().and_then(|c| of.get(c))
                && let Some(ids) = walks[i].add(o)
            {
                walks[i].frontier.extend(ids);
            }
        }
    }
    for o in es::objects_of_customids(&mut *conn, merchant, customids).await? {
        if let Some(&i) = o.customid.as_deref().and_then(|c| walk_of.get(c))
            && let Some(ids) = walks[i].add(o)
        {
            walks[i].frontier.extend(ids);
        }
    }
    // Attached objects, breadth first, every customer's walk a step at a time together.
    for _ in 0..4 {
        let mut need: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for w in &mut walks {
            let seen = &mut w.seen;
            w.frontier.retain(|k| seen.insert(k.clone()));
            for (conn_id, id) in &w.frontier {
                need.entry(conn_id.clone()).or_default().insert(id.clone());
            }
        }
        if need.is_empty() {
            break;
        }
        let mut found: HashMap<(String, String), Vec<ObjectRow>> = HashMap::new();
        for (conn_id, ids) in &need {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            for (via, o) in es::objects_referring_any(&mut *conn, conn_id, &ids).await? {
                found.entry((conn_id.clone(), via)).or_default().push(o);
            }
            for o in es::objects_by_ids(&mut *conn, conn_id, &ids).await? {
                found
                    .entry((conn_id.clone(), o.object_id.clone()))
                    .or_default()
                    .push(o);
            }
        }
        for w in &mut walks {
            let mut next = Vec::new();
            for k in std::mem::take(&mut w.frontier) {
                for o in found.get(&k).into_iter().flatten() {
                    if let Some(ids) = w.add(o.clone()) {
                        next.extend(ids);
                    }
                }
            }
            w.frontier = next;
        }
    }
    let mut out = Vec::with_capacity(walks.len());
    for w in walks {
        let mut ledger = Ledger::new();
        let mut objects = Vec::with_capacity(w.objects.len());
        for o in w.objects.into_values() {
            for r in o.records {
                ledger.observe(o.row.stamp_at, r);
            }
            objects.push(o.row);
        }
        let mut frozen_time = None;
        for l in &w.links {
            if let Some(clock) = &l.test_clock
                && let Some(t) = es::get_clock(&mut *conn, &l.connection_id, clock).await?
            {
                frozen_time = Some(frozen_time.map_or(t, |f: i64| f.max(t)));
            }
        }
        out.push(Purchases {
            ledger,
            links: w.links,
            frozen_time,
            objects,
        });
    }
    Ok(out)
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or(Value::Null)
}

pub async fn catalog(conn: &mut tollgate_store::Conn, merchant: &str) -> ApiResult<Catalog> {
    let skus = es::list_skus(&mut *conn, merchant)
        .await?
        .into_iter()
        .map(|s| Sku {
            identifier: s.identifier,
            product_id: s.product_id,
            kind: s.kind,
        })
        .collect();
    let permissions = es::list_permission_defs(&mut *conn, merchant)
        .await?
        .into_iter()
        .map(|d| PermissionDef {
            identifier: d.identifier,
            skus: d.skus,
        })
        .collect();
    Ok(Catalog { skus, permissions })
}

pub fn policy(s: &es::SettingsRow) -> Policy {
    Policy {
        grace: match s.grace_days {
            Some(d) => Grace::Days(d),
            None => Grace::WhileRetrying,
        },
        revoke_on_partial_refund: s.revoke_on_partial_refund,
        renewal_leeway_secs: s.renewal_leeway_secs,
        revoke_on_dispute_open: s.revoke_on_dispute == "opened",
        revoke_on_fraud_warning: s.revoke_on_fraud_warning,
    }
}

/// Manual grants as the domain evaluates them at `now` (seconds). A customer on a Stripe
/// test clock lives in the clock's time: a grant counts for it from the moment it is given.
pub fn manual_grants(rows: &[es::GrantRow], on_clock: bool, now: i64) -> Vec<dom::ManualGrant> {
    rows.iter()
        .map(|g| {
            let starts = g.starts_at.div_euclid(1000);
            dom::ManualGrant {
                id: g.id.clone(),
                permission: g.permission.clone(),
                starts_at: if on_clock { starts.min(now) } else { starts },
                expires_at: g.expires_at.map(|e| e.div_euclid(1000)),
                revoked_at: g.revoked_at.map(|r| {
                    let r = r.div_euclid(1000);
                    if on_clock { r.min(now) } else { r }
                }),
            }
        })
        .collect()
}

/// A domain permission as a read-model row (times in milliseconds).
fn to_row(p: &PermissionState, on_clock: bool, now: i64) -> PermissionRow {
    let skus: Vec<Value> = p
        .skus
        .iter()
        .map(|s| json!({"identifier": s.identifier, "product_id": s.product_id, "trial": s.trial}))
        .collect();
    PermissionRow {
        identifier: p.identifier.clone(),
        is_valid: p.is_valid,
        entitlement: i64::from(p.entitlement),
        expires_at: p.expires.map(|s| s.saturating_mul(1000)),
        // A customer on a test clock lives in the clock's time: only re-evaluation moves it.
        valid_until: if on_clock || !p.is_valid {
            None
        } else {
            p.valid_until.map(|s| s.saturating_mul(1000))
        },
        skus: Value::Array(skus).to_string(),
        updated_at: now,
        version: 0,
    }
}

fn from_row(r: &PermissionRow) -> PermissionState {
    PermissionState {
        identifier: r.identifier.clone(),
        is_valid: r.is_valid,
        entitlement: r.entitlement as i32,
        expires: r.expires_at.map(|ms| ms / 1000),
        valid_until: r.valid_until.map(|ms| ms / 1000),
        skus: Vec::new(),
    }
}

fn same(a: &PermissionRow, b: &PermissionRow) -> bool {
    a.identifier == b.identifier
        && a.is_valid == b.is_valid
        && a.entitlement == b.entitlement
        && a.expires_at == b.expires_at
        && a.valid_until == b.valid_until
        && a.skus == b.skus
}

/// Re-evaluates one customer from everything it bought and writes the read model, inside
/// `tx`. Returns the permission changes to announce.
pub async fn reevaluate(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    merchant: &str,
    customid: &str,
    cause: &Cause,
) -> ApiResult<Vec<Notice>> {
    reevaluate_all(ctx, tx, merchant, [customid], cause).await
}

/// [`reevaluate`] for several customers of one account, which share one reading of the
/// account's catalogue and policies.
pub async fn reevaluate_all<'a>(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    merchant: &str,
    customids: impl IntoIterator<Item = &'a str>,
    cause: &Cause,
) -> ApiResult<Vec<Notice>> {
    // Sorted: the customers' locks (PostgreSQL) are taken in this order, the same in every
    // transaction, so two that share customers wait for each other instead of deadlocking.
    let mut customids: Vec<&str> = customids.into_iter().collect();
    customids.sort_unstable();
    customids.dedup();
    if customids.is_empty() {
        return Ok(Vec::new());
    }
    let catalog = catalog(tx, merchant).await?;
    let settings = es::get_settings(&mut **tx, merchant).await?;
    let policy = policy(&settings);
    let credit_defs = tollgate_store::credits::definitions(&mut **tx, merchant).await?;
    if ctx.store.backend() == Backend::Postgres {
        es::lock_customers(tx, merchant, &customids).await?;
    }
    let purchases = load_purchases_of(tx, merchant, &customids).await?;
    let mut permissions: HashMap<String, Vec<PermissionRow>> = HashMap::new();
    for (c, p) in es::permissions_of_customids(tx, merchant, &customids).await? {
        permissions.entry(c).or_default().push(p);
    }
    let mut grants: HashMap<String, Vec<es::GrantRow>> = HashMap::new();
    for g in es::grants_of_customids(tx, merchant, &customids).await? {
        grants.entry(g.customid.clone()).or_default().push(g);
    }
    let mut notices = Vec::new();
    let mut histories = Vec::with_capacity(customids.len());
    let now_ms = ctx.now();
    for (customid, purchases) in customids.iter().zip(purchases) {
        let existing = permissions.remove(*customid).unwrap_or_default();
        let grants = grants.remove(*customid).unwrap_or_default();
        let customer = Customer {
            merchant,
            customid,
            purchases,
            grants,
            existing,
            credit_defs: &credit_defs,
        };
        let (n, history) =
            reevaluate_with(ctx, tx, &catalog, &policy, customer, cause, now_ms).await?;
        notices.extend(n);
        histories.push(history);
    }
    write_histories(tx, merchant, histories, now_ms).await?;
    Ok(notices)
}

/// A customer's history as its re-evaluation leaves it to write (see [`write_histories`]).
struct History<'a> {
    customid: &'a str,
    /// The entries that replace its foreseen ones; `None`: keep them (an unchanged customer on
    /// a Stripe test clock, whose time only the clock moves).
    entries: Option<Vec<es::HistoryRow>>,
    /// The version its entries carry; `None`: its current one (its answer did not change).
    version: Option<i64>,
}

/// Writes the re-evaluated customers' histories together, a few statements for all of them
/// rather than four per customer: each one's foreseen entries (after `now_ms`) are replaced by
/// its new ones, and then it is due for the expiry job at its first foreseen change.
async fn write_histories(
    tx: &mut Tx<'_>,
    merchant: &str,
    mut histories: Vec<History<'_>>,
    now_ms: i64,
) -> ApiResult<()> {
    let written: Vec<&str> = histories
        .iter()
        .filter(|h| h.entries.is_some())
        .map(|h| h.customid)
        .collect();
    let unversioned: Vec<&str> = histories
        .iter()
        .filter(|h| h.entries.as_ref().is_some_and(|e| !e.is_empty()) && h.version.is_none())
        .map(|h| h.customid)
        .collect();
    let versions = match unversioned.is_empty() {
        true => HashMap::new(),
        false => es::customer_versions(tx, merchant, &unversioned).await?,
    };
    for h in &mut histories {
        let version = h
            .version
            .unwrap_or_else(|| versions.get(h.customid).copied().unwrap_or(0));
        for e in h.entries.iter_mut().flatten() {
            e.version = version;
        }
    }
    if !written.is_empty() {
        es::forget_foreseen(tx, merchant, &written, now_ms).await?;
    }
    let rows: Vec<(&str, &es::HistoryRow)> = histories
        .iter()
        .flat_map(|h| h.entries.iter().flatten().map(move |e| (h.customid, e)))
        .collect();
    es::insert_history(tx, merchant, &rows).await?;
    let all: Vec<&str> = histories.iter().map(|h| h.customid).collect();
    es::set_next_change(tx, merchant, &all, now_ms).await?;
    Ok(())
}

/// One customer as [`reevaluate_with`] reads it.
struct Customer<'a> {
    merchant: &'a str,
    customid: &'a str,
    purchases: Purchases,
    grants: Vec<es::GrantRow>,
    /// Its permissions in the read model.
    existing: Vec<PermissionRow>,
    /// The account's metered permissions.
    credit_defs: &'a [tollgate_store::credits::CreditDefRow],
}

/// A history entry of `row` at `at` (ms).
fn history_of(row: &PermissionRow, at: i64, removed: bool, cause: &Value) -> es::HistoryRow {
    es::HistoryRow {
        seq: 0,
        identifier: row.identifier.clone(),
        at,
        is_valid: row.is_valid,
        entitlement: row.entitlement,
        expires_at: row.expires_at,
        valid_until: row.valid_until,
        skus: row.skus.clone(),
        removed,
        cause: cause.to_string(),
        version: 0,
    }
}

/// How many coming changes by the clock a re-evaluation foresees at most.
const FORESEEN: usize = 16;

/// The history entries the clock alone will make: at each moment a held purchase or grant
/// ends (`valid_until`, seconds, after `now`), the permissions as they will then evaluate,
/// where they differ from the moment before. `states` are the permissions at `now`.
#[allow(clippy::too_many_arguments)]
fn foresee(
    ledger: &Ledger,
    manual: &[dom::ManualGrant],
    catalog: &Catalog,
    policy: &Policy,
    now: i64,
    states: &[PermissionState],
    now_ms: i64,
) -> Vec<es::HistoryRow> {
    let mut moments: BTreeSet<i64> = dom::grants(ledger, policy, now)
        .into_iter()
        .chain(manual.iter().filter_map(|m| dom::manual_grant(m, now)))
        .filter(|g| g.held)
        .filter_map(|g| g.valid_until)
        .filter(|u| *u > now)
        .collect();
    let clock = json!({"type": "clock"});
    let mut prev: HashMap<String, PermissionRow> = states
        .iter()
        .map(|st| (st.identifier.clone(), to_row(st, false, now_ms)))
        .collect();
    let mut out = Vec::new();
    while let Some(at) = moments.pop_first() {
        if out.len() >= FORESEEN {
            break;
        }
        let at_ms = at.saturating_mul(1000);
        for st in dom::evaluate_with(ledger, manual, catalog, policy, at) {
            let row = to_row(&st, false, at_ms);
            if prev.get(&st.identifier).is_none_or(|p| !same(p, &row)) {
                out.push(history_of(&row, at_ms, false, &clock));
                prev.insert(st.identifier.clone(), row);
            }
        }
    }
    out
}

/// Writes what a customer's purchases and grants now give it, against its permissions in the
/// read model and, when anything changed, takes the next version of its permission set
/// (`customer.state_changed`). Its history (each change, and what the clock will change) is
/// returned for [`write_histories`].
async fn reevaluate_with<'a>(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    catalog: &Catalog,
    policy: &Policy,
    c: Customer<'a>,
    cause: &Cause,
    now_ms: i64,
) -> ApiResult<(Vec<Notice>, History<'a>)> {
    let Customer {
        merchant,
        customid,
        purchases,
        grants,
        existing,
        credit_defs,
    } = c;
    let on_clock = purchases.frozen_time.is_some();
    let now = purchases.frozen_time.unwrap_or(now_ms / 1000);
    let manual = manual_grants(&grants, on_clock, now);
    let states = dom::evaluate_with(&purchases.ledger, &manual, catalog, policy, now);
    // Metered permissions: grants, resets and claw-backs of units, in this transaction.
    credits::apply_purchases(
        ctx,
        tx,
        merchant,
        customid,
        credit_defs,
        &purchases.ledger,
        catalog,
        policy,
        now,
    )
    .await?;
    let cause_json = cause.json(&purchases);
    let mut written: Vec<PermissionRow> = Vec::new();
    let mut history: Vec<es::HistoryRow> = Vec::new();
    let mut notices = Vec::new();
    let mut after: Vec<PermissionRow> = Vec::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for st in &states {
        kept.insert(&st.identifier);
        let row = to_row(st, on_clock, now_ms);
        let before = existing.iter().find(|e| e.identifier == st.identifier);
        if let Some(b) = before.filter(|b| same(b, &row)) {
            after.push(b.clone());
            continue;
        }
        history.push(history_of(&row, now_ms, false, &cause_json));
        let before_state = before.map(from_row);
        if let Some(change) = dom::change(before_state.as_ref(), st) {
            notices.push(Notice::Permission {
                merchant_account_id: merchant.to_string(),
                customid: customid.to_string(),
                change,
                permission: permission_json(&row, now_ms),
            });
        }
        after.push(row.clone());
        written.push(row);
    }
    let mut removed: Vec<&PermissionRow> = Vec::new();
    for e in &existing {
        if kept.contains(e.identifier.as_str()) {
            continue;
        }
        // The permission or its SKUs left the catalogue.
        removed.push(e);
        let mut gone = e.clone();
        gone.is_valid = false;
        gone.entitlement = i64::from(dom::code::REVOKED);
        history.push(history_of(&gone, now_ms, true, &cause_json));
        if e.is_valid {
            notices.push(Notice::Permission {
                merchant_account_id: merchant.to_string(),
                customid: customid.to_string(),
                change: ChangeKind::Revoked,
                permission: permission_json(&gone, now_ms),
            });
        }
    }
    if written.is_empty() && removed.is_empty() {
        // The answer now is unchanged, but what the clock will change may not be (an unpaid
        // subscription beside a grant that still holds: when the grant ends, the permission
        // shows the subscription's code, not the grant's expiry foreseen before it came), so
        // the foreseen entries are written again, under the customer's current version.
        let entries = (!on_clock).then(|| {
            foresee(
                &purchases.ledger,
                &manual,
                catalog,
                policy,
                now,
                &states,
                now_ms,
            )
        });
        let history = History {
            customid,
            entries,
            version: None,
        };
        return Ok((notices, history));
    }
    // The next version of the customer's permission set, in this transaction.
    let version = es::bump_customer_version(tx, merchant, customid, now_ms).await?;
    for row in &mut written {
        row.version = version;
        es::put_permission(&mut **tx, merchant, customid, row).await?;
    }
    for e in &removed {
        es::delete_permission(&mut **tx, merchant, customid, &e.identifier).await?;
    }
    if after.len() > written.len() {
        es::set_permissions_version(&mut **tx, merchant, customid, version).await?;
    }
    // What the clock will change with no event (a period, a grace, a grant ending): the
    // coming entries, replacing those this customer's last change foresaw. Changes the clock
    // already made were foreseen then and stay; an entry equal to the newest one at or before
    // now (the clock's change, now written by the expiry job) is not repeated.
    let foreseen = if on_clock {
        Vec::new()
    } else {
        foresee(
            &purchases.ledger,
            &manual,
            catalog,
            policy,
            now,
            &states,
            now_ms,
        )
    };
    let last = es::history_at(&mut **tx, merchant, customid, now_ms).await?;
    history.retain(|h| {
        !last.iter().any(|l| {
            l.identifier == h.identifier
                && l.removed == h.removed
                && same(&l.permission(), &h.permission())
        })
    });
    history.extend(foreseen);
    after.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    notices.push(Notice::StateChanged {
        merchant_account_id: merchant.to_string(),
        customid: customid.to_string(),
        version,
        permissions: after.iter().map(|r| permission_json(r, now_ms)).collect(),
    });
    // The permission caches' feed (see runtime.rs); marked pending here until it shows.
    match ctx.store.backend() {
        Backend::Sqlite => {
            es::note_permission_change(&mut **tx, merchant, customid, now_ms).await?
        }
        Backend::Postgres => es::notify_permission_change(&mut **tx, merchant, customid).await?,
    }
    ctx.entitlements.invalidate(merchant, customid);
    let history = History {
        customid,
        entries: Some(history),
        version: Some(version),
    };
    Ok((notices, history))
}

/// Re-evaluates one customer in a transaction of its own.
pub async fn reevaluate_now(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    cause: &Cause,
) -> ApiResult<Vec<Notice>> {
    let mut tx = ctx.store.begin().await?;
    let notices = reevaluate(ctx, &mut tx, merchant, customid, cause).await?;
    notify(&mut tx, &notices, ctx.now()).await?;
    tollgate_store::commit(tx).await?;
    Ok(notices)
}

/// Re-evaluates every customer of an account (after the catalogue or the policies changed).
pub async fn reevaluate_account(
    ctx: &ApiContext,
    merchant: &str,
    cause: &Cause,
) -> ApiResult<usize> {
    let ids = es::customids(ctx.store.reader(), merchant).await?;
    for c in &ids {
        reevaluate_now(ctx, merchant, c, cause).await?;
    }
    Ok(ids.len())
}

// ---- rendering -------------------------------------------------------------------------------

/// RFC 3339 in whole seconds (`2026-01-01T00:00:00Z`), as SPEC §5.4 shows `expires_at`.
pub fn rfc3339_secs(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// `expires_date` of the check, never null (Glassfy's Android SDK refuses a permission without
/// one): the expiry when there is one; a permission held with no end (a lifetime purchase, an
/// open-ended grant) [`NEVER_EXPIRES`]; one not held without an expiry (revoked, refunded) 0.
/// `expires_at` stays null when there is no expiry.
pub fn expires_date(expires_secs: Option<i64>, is_valid: bool) -> i64 {
    match expires_secs {
        Some(s) => s,
        None if is_valid => NEVER_EXPIRES,
        None => 0,
    }
}

/// `expires_date` of a permission held with no end: 9999-12-31T23:59:59Z.
pub const NEVER_EXPIRES: i64 = 253_402_300_799;

/// One permission as the check shows it ([`map::Permission`]), as JSON for the notices.
pub fn permission_json(r: &PermissionRow, now_ms: i64) -> Value {
    serde_json::to_value(map::Permission::of(r, now_ms)).unwrap_or(Value::Null)
}

// ---- linking by API --------------------------------------------------------------------------

/// List endpoints read when a customer is linked, with the filters that select its objects.
const LINK_READS: &[(&str, &[(&str, &str)])] = &[
    ("/v1/subscriptions", &[("status", "all")]),
    ("/v1/invoices", &[]),
    ("/v1/checkout/sessions", &[]),
    ("/v1/payment_intents", &[]),
    ("/v1/charges", &[]),
    ("/v1/credit_notes", &[]),
];

/// How many objects of each kind a link reads at most.
const LINK_READ_CAP: usize = 1000;

/// What `POST /v1/connect_stripe` answers with.
pub struct LinkOutcome {
    pub moved_from: Option<String>,
    pub notices: Vec<Notice>,
}

/// Links `customer` of `connection` to `customid` (moving it from another customid only when
/// `force`), reads the customer's purchases from Stripe so earlier ones count, re-evaluates.
pub async fn link_customer(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    customid: &str,
    customer: &str,
    force: bool,
) -> ApiResult<LinkOutcome> {
    let existing = es::get_link(ctx.store.reader(), &connection.id, customer, "").await?;
    if let Some(l) = &existing
        && l.customid != customid
        && !force
    {
        return Err(ApiError::DuplicateRecord(format!(
            "customerid: the Stripe customer {customer} is linked to another customid; send \"force\": true to move it"
        )));
    }
    let stripe = ctx.stripe_for(connection)?;
    let cus = match stripe.retrieve_customer(customer).await {
        Ok(c) if c["deleted"].as_bool() != Some(true) => c,
        Ok(_) => return Err(unknown_customer(customer)),
        Err(e) if e.status() == Some(404) => return Err(unknown_customer(customer)),
        Err(e) => return Err(stripe_error(ctx, &e)),
    };
    let now_secs = ctx.now() / 1000;
    let mut objects: Vec<(i64, Value)> = Vec::new();
    for (path, extra) in LINK_READS {
        let mut params = Map::new();
        params.insert("customer".into(), json!(customer));
        for (k, v) in *extra {
            params.insert((*k).into(), json!(v));
        }
        match stripe.list_all(path, &params, LINK_READ_CAP).await {
            Ok(items) => objects.extend(items.into_iter().map(|o| (now_secs, o))),
            // A restricted key without this resource (or a Stripe stand-in without the
            // endpoint) reads nothing here; events still bring what it misses.
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                tracing::warn!(path, error = %e.message(), "linking: cannot list; skipped")
            }
            Err(e) => return Err(stripe_error(ctx, &e)),
        }
    }
    let mut refs: Vec<&mut Value> = objects.iter_mut().map(|(_, o)| o).collect();
    prepare_all(ctx, connection, &mut refs).await?;
    if let Some(clock) = map::test_clock_of(&cus) {
        fetch_clock(ctx, connection, &clock).await;
    }
    let now = ctx.now();
    let moved_from = existing
        .as_ref()
        .filter(|l| l.customid != customid)
        .map(|l| l.customid.clone());
    // The link and the purchases in one transaction.
    let mut tx = ctx.store.begin().await?;
    if ctx.store.backend() == Backend::Postgres {
        // As the inbox does before it looks a link up (`apply_in`): an object of this customer
        // applied at the same time either commits first (and the re-evaluation after the link
        // reads it) or waits for the link (and re-evaluates the customid itself).
        es::lock_stripe_customer(&mut tx, &connection.id, customer).await?;
    }
    let link = LinkRow {
        connection_id: connection.id.clone(),
        stripe_customer_id: customer.to_string(),
        merchant_account_id: connection.merchant_account_id.clone(),
        customid: customid.to_string(),
        linked_by: "api".into(),
        test_clock: map::test_clock_of(&cus),
        created_at: existing.as_ref().map_or(now, |l| l.created_at),
        updated_at: now,
    };
    es::put_link(&mut tx, &link).await?;
    let mut notices = Vec::new();
    if existing.as_ref().is_none_or(|l| l.customid != customid) {
        notices.push(Notice::CustomerLinked {
            merchant_account_id: connection.merchant_account_id.clone(),
            customid: customid.to_string(),
            connection_id: connection.id.clone(),
            stripe_customer_id: customer.to_string(),
            linked_by: "api".into(),
        });
    }
    let cause = Cause::Link {
        connection_id: connection.id.clone(),
        stripe_customer_id: customer.to_string(),
    };
    if let Some(old) = &moved_from {
        notices
            .extend(reevaluate(ctx, &mut tx, &connection.merchant_account_id, old, &cause).await?);
    }
    notify(&mut tx, &notices, ctx.now()).await?;
    tollgate_store::commit(tx).await?;
    let mut more = ingest(ctx, connection, objects, Some(customid), cause).await?;
    notices.append(&mut more);
    Ok(LinkOutcome {
        moved_from,
        notices,
    })
}

fn unknown_customer(customer: &str) -> ApiError {
    ApiError::NotFound(format!(
        "customerid: there is no Stripe customer {customer} on this connection"
    ))
}

// ---- the expiry job --------------------------------------------------------------------------

/// Re-evaluates customers whose held permissions passed their `valid_until` (a period end
/// plus the renewal leeway, a grace end, a cancel-at-period-end) or whose foreseen change by
/// the clock is due (one of several purchases lapsing while another holds). Subscriptions still active
/// past their period are re-read from Stripe first, so a renewal whose webhook is late never
/// expires a permission. Returns how many customers were re-evaluated.
pub async fn expire_once(ctx: &ApiContext) -> ApiResult<usize> {
    let due = es::due(ctx.store.reader(), ctx.now(), 100).await?;
    let mut done = 0;
    for (merchant, customid) in &due {
        if let Err(e) = reread_subscriptions(ctx, merchant, customid).await {
            tracing::warn!(customid = %customid, error = %e, "re-reading subscriptions failed; will retry");
            continue;
        }
        reevaluate_now(ctx, merchant, customid, &Cause::Clock).await?;
        done += 1;
    }
    // Metered permissions: lots and reservations that ended.
    done += credits::settle_due(ctx).await?;
    Ok(done)
}

async fn reread_subscriptions(ctx: &ApiContext, merchant: &str, customid: &str) -> ApiResult<()> {
    let mut conn = ctx.store.hold_reader().await?;
    let purchases = load_purchases(&mut conn, merchant, customid).await?;
    let leeway = es::get_settings(&mut *conn, merchant)
        .await?
        .renewal_leeway_secs;
    drop(conn);
    // The re-read's stamp is the real time (as events are stamped); whether a period has
    // lapsed is judged in the customer's time (its test clock's, if any).
    let stamp = ctx.now() / 1000;
    let now = purchases.frozen_time.unwrap_or(stamp);
    let mut by_conn: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in &purchases.objects {
        if o.object_type != "subscription" {
            continue;
        }
        let lapsing = map::records_of(&parse(&o.data), None).into_iter().any(|r| {
            matches!(&r, Record::Subscription(s)
                if matches!(s.status, dom::SubStatus::Active | dom::SubStatus::Trialing)
                    && !s.cancel_at_period_end
                    && s.cancel_at.is_none()
                    && s.current_period_end.is_some_and(|e| e.saturating_add(leeway) <= now))
        });
        if !lapsing {
            continue;
        }
        let Some(conn_row) =
            tollgate_store::connections::get(ctx.store.reader(), &o.connection_id).await?
        else {
            continue;
        };
        let stripe = ctx.stripe_for(&conn_row)?;
        let path = format!("/v1/subscriptions/{}", seg(&o.object_id));
        let fresh = stripe.retrieve(&path).await;
        match fresh {
            Ok(fresh) => by_conn
                .entry(o.connection_id.clone())
                .or_default()
                .push(fresh),
            // Stripe has nothing fresher to say: what is stored decides.
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(stripe_error(ctx, &e)),
        }
    }
    for (conn_id, subs) in by_conn {
        if let Some(conn_row) =
            tollgate_store::connections::get(ctx.store.reader(), &conn_id).await?
        {
            ingest(
                ctx,
                &conn_row,
                subs.into_iter().map(|s| (stamp, s)).collect(),
                None,
                Cause::StripeRead,
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs [`expire_once`] every `expiry_interval_ms`.
pub fn spawn_expiry(ctx: ApiContext) {
    tokio::spawn(async move {
        let every = std::time::Duration::from_millis(ctx.config.expiry_interval_ms.max(50));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = expire_once(&ctx).await {
                tracing::warn!(error = %e, "entitlement expiry pass failed");
            }
        }
    });
}

/// Feeds the permission cache (see runtime.rs) with the changes other transactions commit.
///
/// - SQLite: polls the change log every `permission_cache_poll_ms` (its writers are
///   serialised, so the log's order is commit order), and prunes entries older than ten
///   minutes.
/// - PostgreSQL: listens on the schema's permission channel (notifications arrive at commit,
///   in commit order, from every server on the database); whenever the listening connection was lost, the cache
///   empties, as changes may have gone by unheard.
///
/// `permission_cache_poll_ms = 0` turns the cache off. While the feed fails the cache is empty
/// and every check reads the database.
pub fn spawn_cache_feed(ctx: ApiContext) {
    if ctx.config.permission_cache_poll_ms == 0 {
        return;
    }
    match ctx.store.backend() {
        Backend::Sqlite => {
            tokio::spawn(follow_log(ctx));
        }
        Backend::Postgres => {
            tokio::spawn(listen(ctx));
        }
    }
}

async fn follow_log(ctx: ApiContext) {
    let every = std::time::Duration::from_millis(ctx.config.permission_cache_poll_ms);
    let mut seen: Option<i64> = None;
    let mut pruned = std::time::Instant::now();
    loop {
        let step = match seen {
            // Starting (or after a failure, on an emptied cache): from the log's end.
            None => es::last_permission_change(ctx.store.reader())
                .await
                .map(|last| {
                    seen = Some(last);
                    ctx.entitlements.follow(true);
                    ctx.entitlements.followed_to(last);
                }),
            Some(after) => es::permission_changes_after(ctx.store.reader(), after, 10_000)
                .await
                .map(|changes| {
                    ctx.entitlements
                        .changed(changes.iter().map(|(_, m, c)| (m.as_str(), c.as_str())));
                    if let Some((last, _, _)) = changes.last() {
                        seen = Some(*last);
                        ctx.entitlements.followed_to(*last);
                    }
                }),
        };
        if let Err(e) = step {
            // Said once per outage, not once per poll.
            if seen.is_some() {
                tracing::warn!(error = %e, "reading the permission change log failed; permission cache off until it works");
            }
            ctx.entitlements.follow(false);
            seen = None;
        }
        if pruned.elapsed() > std::time::Duration::from_secs(60) {
            pruned = std::time::Instant::now();
            let before = ctx.now() - 600_000;
            if let Err(e) = es::prune_permission_changes(ctx.store.writer(), before).await {
                tracing::warn!(error = %e, "pruning the permission change log failed");
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn listen(ctx: ApiContext) {
    let Some(url) = ctx.config.database_url.clone() else {
        return;
    };
    // Retries once a second; a failure is said once per outage.
    let retry = std::time::Duration::from_secs(1);
    let mut said = false;
    loop {
        let mut listener = match es::PermissionListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                if !said {
                    tracing::warn!(error = %e, "permission cache: listening for changes failed; cache off until it works");
                    said = true;
                }
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        ctx.entitlements.follow(true);
        loop {
            match listener.next().await {
                Ok(es::Heard::Change(m, c)) => ctx.entitlements.changed([(m.as_str(), c.as_str())]),
                Ok(es::Heard::Marker(n)) => ctx.entitlements.followed_to(n),
                Ok(es::Heard::Lost) => {
                    ctx.entitlements.follow(false);
                    ctx.entitlements.follow(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "permission cache: the listener failed; cache off until it works");
                    said = true;
                    ctx.entitlements.follow(false);
                    break;
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}
