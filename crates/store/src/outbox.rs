//! Outbound webhooks (SPEC §7): subscriptions, the transactional outbox of deliveries and the
//! delivery log.
//!
//! [`enqueue`] writes one delivery row per matching active subscription inside the caller's
//! database transaction, so an event exists exactly when the change that caused it committed.
//! The worker claims due rows with [`claim_due`] (a lease: `next_attempt_at` moves to the lease
//! end and a claim token is set; PostgreSQL adds `FOR UPDATE SKIP LOCKED` so servers sharing
//! the database never claim the same row) and writes what happened with [`record`], which only
//! touches rows still holding its token.

use serde_json::{Value, json};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Arguments, Executor, Row};

use crate::{Backend, Result, Store, Tx};

/// Every event name Tollgate emits (SPEC §7).
pub const EVENT_NAMES: &[&str] = &[
    "transaction.authorized",
    "transaction.captured",
    "transaction.capture-pending",
    "transaction.declined",
    "transaction.failed",
    "transaction.void-pending",
    "transaction.voided",
    "refund.processing",
    "refund.succeeded",
    "refund.failed",
    "refund.declined",
    "refund.voided",
    "permission.granted",
    "permission.renewed",
    "permission.revoked",
    "permission.expired",
    "customer.linked",
    "customer.state_changed",
    "balance.low",
    "balance.depleted",
    "webhook.test",
];

/// The name prefixes a `prefix.*` filter may name.
pub const EVENT_GROUPS: &[&str] = &["transaction", "refund", "permission", "customer", "balance"];

/// Whether `filter` (an exact name, `group.*` or `*`) is one this server knows.
pub fn valid_filter(filter: &str) -> bool {
    if filter == "*" || EVENT_NAMES.contains(&filter) {
        return true;
    }
    filter
        .strip_suffix(".*")
        .is_some_and(|g| EVENT_GROUPS.contains(&g))
}

/// Whether an event `name` matches any of `filters`.
pub fn matches(filters: &[String], name: &str) -> bool {
    filters.iter().any(|f| {
        f == "*"
            || f == name
            || f.strip_suffix(".*").is_some_and(|g| {
                name.len() > g.len() && name.starts_with(g) && name.as_bytes()[g.len()] == b'.'
            })
    })
}

/// RFC 3339 in UTC with microseconds, as the API writes timestamps.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// A new event id (`evt_` and a time-ordered UUID); the `webhook-id` of every delivery of it.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

// ---- subscriptions --------------------------------------------------------------------------

#[derive(Clone)]
pub struct SubscriptionRow {
    pub id: String,
    pub merchant_account_id: String,
    pub url: String,
    /// JSON array of filters.
    pub events: String,
    pub description: Option<String>,
    pub active: bool,
    /// AEAD-sealed; never leaves the server in clear after creation.
    pub secret_enc: Vec<u8>,
    pub secret_hint: String,
    pub old_secret_enc: Option<Vec<u8>>,
    pub old_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

impl std::fmt::Debug for SubscriptionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRow")
            .field("id", &self.id)
            .field("merchant_account_id", &self.merchant_account_id)
            .field("url", &self.url)
            .field("secret_hint", &self.secret_hint)
            .finish_non_exhaustive()
    }
}

impl SubscriptionRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            url: r.try_get("url")?,
            events: r.try_get("events")?,
            description: r.try_get("description")?,
            active: r.try_get::<i64, _>("active")? != 0,
            secret_enc: r.try_get("secret_enc")?,
            secret_hint: r.try_get("secret_hint")?,
            old_secret_enc: r.try_get("old_secret_enc")?,
            old_secret_expires_at: r.try_get("old_secret_expires_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            deleted_at: r.try_get("deleted_at")?,
        })
    }

    /// The filters (an unreadable list matches nothing).
    pub fn filters(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

pub async fn insert_subscription<'c, E: Executor<'c, Database = Any>>(
    db: E,
    s: &SubscriptionRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_subscriptions (id, merchant_account_id, url, events, description,
            active, secret_enc, secret_hint, old_secret_enc, old_secret_expires_at, created_at,
            updated_at, deleted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&s.id)
    .bind(&s.merchant_account_id)
    .bind(&s.url)
    .bind(&s.events)
    .bind(&s.description)
    .bind(s.active as i64)
    .bind(&s.secret_enc)
    .bind(&s.secret_hint)
    .bind(&s.old_secret_enc)
    .bind(s.old_secret_expires_at)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(s.deleted_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Rewrites every mutable column (the server changes a loaded row and saves it).
pub async fn update_subscription<'c, E: Executor<'c, Database = Any>>(
    db: E,
    s: &SubscriptionRow,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET url = $2, events = $3, description = $4, active = $5,
            secret_enc = $6, secret_hint = $7, old_secret_enc = $8, old_secret_expires_at = $9,
            updated_at = $10, deleted_at = $11
         WHERE id = $1",
    )
    .bind(&s.id)
    .bind(&s.url)
    .bind(&s.events)
    .bind(&s.description)
    .bind(s.active as i64)
    .bind(&s.secret_enc)
    .bind(&s.secret_hint)
    .bind(&s.old_secret_enc)
    .bind(s.old_secret_expires_at)
    .bind(s.updated_at)
    .bind(s.deleted_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A subscription of a merchant account (deleted ones are gone). `lock`: `store.for_update()`.
pub async fn get_subscription<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
    lock: &str,
) -> Result<Option<SubscriptionRow>> {
    let sql = format!(
        "SELECT * FROM webhook_subscriptions WHERE merchant_account_id = $1 AND id = $2
            AND deleted_at IS NULL{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(merchant_account_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(SubscriptionRow::from_row).transpose()
}

/// A page of a merchant account's subscriptions, newest first (`limit + 1` rows at most).
/// `cursor`: `(created_at, id, after)` as for transactions.
pub async fn list_subscriptions<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    cursor: Option<&(i64, String, bool)>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>> {
    let mut args = AnyArguments::default();
    let _ = args.add(merchant_account_id.to_string());
    let mut sql = String::from(
        "SELECT * FROM webhook_subscriptions WHERE merchant_account_id = $1 AND deleted_at IS NULL",
    );
    let ascending = push_cursor(&mut sql, &mut args, 1, cursor);
    let rows = fetch_page(db, sql, args, ascending, limit).await?;
    let mut out = rows
        .iter()
        .map(SubscriptionRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    if ascending {
        out.truncate(limit as usize + 1);
        out.reverse();
    }
    Ok(out)
}

/// Subscriptions by id, deleted ones included (the worker needs to know they are gone).
pub async fn subscriptions_by_ids<'c, E: Executor<'c, Database = Any>>(
    db: E,
    ids: &[String],
) -> Result<Vec<SubscriptionRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = AnyArguments::default();
    let mut sql = String::from("SELECT * FROM webhook_subscriptions WHERE id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", i + 1));
        let _ = args.add(id.clone());
    }
    sql.push(')');
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(db)
        .await?;
    rows.iter().map(SubscriptionRow::from_row).collect()
}

// ---- the outbox -----------------------------------------------------------------------------

/// The event as delivered: `{type: "event", id, name, created_at, merchant_account_id, target}`.
pub fn event_payload(
    event_id: &str,
    name: &str,
    merchant_account_id: &str,
    target: &Value,
    now: i64,
) -> Value {
    json!({
        "type": "event",
        "id": event_id,
        "name": name,
        "created_at": rfc3339(now),
        "merchant_account_id": merchant_account_id,
        "target": target,
    })
}

/// Writes event `name` about `target` (the resource exactly as the API returns it) for every
/// active subscription of the merchant account whose filters match, inside `tx`: the
/// transaction that makes the change, so the event exists if and only if the change commits.
/// Returns the event id when at least one subscription wants it.
pub async fn enqueue(
    tx: &mut Tx<'_>,
    merchant_account_id: &str,
    name: &str,
    target: &Value,
    now: i64,
) -> Result<Option<String>> {
    let subs = active_subscriptions(tx, merchant_account_id).await?;
    enqueue_to(tx, &subs, merchant_account_id, name, target, now).await
}

/// A merchant account's active subscriptions: (id, event filters).
pub type Subscriptions = Vec<(String, Vec<String>)>;

/// The active subscriptions [`enqueue_to`] writes for, read inside `tx`.
pub async fn active_subscriptions(
    tx: &mut Tx<'_>,
    merchant_account_id: &str,
) -> Result<Subscriptions> {
    let rows = sqlx::query(
        "SELECT id, events FROM webhook_subscriptions
         WHERE merchant_account_id = $1 AND active = 1 AND deleted_at IS NULL",
    )
    .bind(merchant_account_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut subs = Vec::with_capacity(rows.len());
    for r in &rows {
        let events: String = r.try_get("events")?;
        let filters: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        subs.push((r.try_get::<String, _>("id")?, filters));
    }
    Ok(subs)
}

/// [`enqueue`] with the subscriptions already read in `tx` (a writer emitting many events in
/// one transaction reads them once).
pub async fn enqueue_to(
    tx: &mut Tx<'_>,
    subs: &Subscriptions,
    merchant_account_id: &str,
    name: &str,
    target: &Value,
    now: i64,
) -> Result<Option<String>> {
    let wanted: Vec<&String> = subs
        .iter()
        .filter(|(_, filters)| matches(filters, name))
        .map(|(id, _)| id)
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let event_id = new_event_id();
    let payload = event_payload(&event_id, name, merchant_account_id, target, now).to_string();
    for sub in wanted {
        insert_delivery(
            &mut **tx,
            merchant_account_id,
            sub,
            &event_id,
            name,
            &payload,
            now,
        )
        .await?;
    }
    Ok(Some(event_id))
}

/// One delivery row (pending, due now). [`enqueue`] is the way events are made; this is its
/// step per subscription.
pub async fn insert_delivery<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    subscription_id: &str,
    event_id: &str,
    name: &str,
    payload: &str,
    now: i64,
) -> Result<String> {
    let id = crate::new_id();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, merchant_account_id, subscription_id, event_id,
            event_name, payload, status, attempts, round_attempts, round_started_at,
            next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 0, $7, $7, $7, $7)",
    )
    .bind(&id)
    .bind(merchant_account_id)
    .bind(subscription_id)
    .bind(event_id)
    .bind(name)
    .bind(payload)
    .bind(now)
    .execute(db)
    .await?;
    Ok(id)
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub merchant_account_id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_name: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub round_attempts: i64,
    pub round_started_at: i64,
    pub next_attempt_at: i64,
    pub lease_token: Option<String>,
    pub locked_until: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DeliveryRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            subscription_id: r.try_get("subscription_id")?,
            event_id: r.try_get("event_id")?,
            event_name: r.try_get("event_name")?,
            payload: r.try_get("payload")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            round_attempts: r.try_get("round_attempts")?,
            round_started_at: r.try_get("round_started_at")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            lease_token: r.try_get("lease_token")?,
            locked_until: r.try_get("locked_until")?,
            last_status_code: r.try_get("last_status_code")?,
            last_error: r.try_get("last_error")?,
            delivered_at: r.try_get("delivered_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// Whether any delivery is due (a cheap read before a claim, which writes).
pub async fn any_due<'c, E: Executor<'c, Database = Any>>(db: E, now: i64) -> Result<bool> {
    let row = sqlx::query(
        "SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'failed')
            AND next_attempt_at <= $1 LIMIT 1",
    )
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Claims up to `limit` due deliveries for `lease_ms` under the claim token `token`: their
/// `next_attempt_at` moves to the lease end, so a worker that dies leaves them due again then.
/// One statement; on PostgreSQL rows another server holds are skipped (`SKIP LOCKED`).
pub async fn claim_due(
    store: &Store,
    token: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    let skip = match store.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET lease_token = $1, locked_until = $2, next_attempt_at = $2
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE status IN ('pending', 'failed') AND next_attempt_at <= $3
                      ORDER BY next_attempt_at LIMIT $4{skip})
         RETURNING *"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(token)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(store.writer())
        .await?;
    rows.iter().map(DeliveryRow::from_row).collect()
}

/// One attempt as the log keeps it.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub id: String,
    pub delivery_id: String,
    pub attempt: i64,
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
}

impl AttemptRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            delivery_id: r.try_get("delivery_id")?,
            attempt: r.try_get("attempt")?,
            attempted_at: r.try_get("attempted_at")?,
            status_code: r.try_get("status_code")?,
            latency_ms: r.try_get("latency_ms")?,
            response_excerpt: r.try_get("response_excerpt")?,
            error: r.try_get("error")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
        })
    }
}

/// What became of a claimed delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Failed; tried again at `next_attempt_at`.
    Retry { next_attempt_at: i64 },
    /// Failed for the last time (too old), or can never succeed (subscription deleted).
    Dead,
    /// Not attempted (subscription inactive): due again at `next_attempt_at`.
    Postponed { next_attempt_at: i64 },
}

/// The result of one claimed delivery.
#[derive(Debug, Clone)]
pub struct Finished {
    pub delivery_id: String,
    pub lease_token: String,
    pub outcome: Outcome,
    /// The attempt made (none when postponed or ended without one).
    pub attempt: Option<AttemptRow>,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub at: i64,
}

/// Writes a batch of results in one database transaction: the attempts into the log, and each
/// delivery's new state if it still holds the claim (a resend meanwhile wins).
pub async fn record(store: &Store, results: &[Finished]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    // The log, many rows per statement.
    let attempts: Vec<&AttemptRow> = results.iter().filter_map(|r| r.attempt.as_ref()).collect();
    for chunk in attempts.chunks(200) {
        let mut sql = String::from(
            "INSERT INTO webhook_delivery_attempts (id, delivery_id, attempt, attempted_at,
                status_code, latency_ms, response_excerpt, error, next_attempt_at) VALUES ",
        );
        let mut args = AnyArguments::default();
        for (i, a) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 9;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
            let _ = args.add(a.id.clone());
            let _ = args.add(a.delivery_id.clone());
            let _ = args.add(a.attempt);
            let _ = args.add(a.attempted_at);
            let _ = args.add(a.status_code);
            let _ = args.add(a.latency_ms);
            let _ = args.add(a.response_excerpt.clone());
            let _ = args.add(a.error.clone());
            let _ = args.add(a.next_attempt_at);
        }
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    // Deliveries that succeeded with the same status code and claim: one statement each group.
    let mut delivered: std::collections::BTreeMap<(String, Option<i64>), Vec<&Finished>> =
        Default::default();
    for r in results {
        let (status, next, counted, keep_status) = match &r.outcome {
            Outcome::Delivered => {
                delivered
                    .entry((r.lease_token.clone(), r.status_code))
                    .or_default()
                    .push(r);
                continue;
            }
            Outcome::Retry { next_attempt_at } => ("failed", *next_attempt_at, true, false),
            Outcome::Dead => ("dead", r.at, r.attempt.is_some(), false),
            // Not attempted: the status stays (pending or failed).
            Outcome::Postponed { next_attempt_at } => ("failed", *next_attempt_at, false, true),
        };
        let status = if keep_status { "" } else { status };
        let sql = "UPDATE webhook_deliveries SET status = COALESCE(NULLIF($3, ''), status),
                next_attempt_at = $4,
                attempts = attempts + $5, round_attempts = round_attempts + $5,
                last_status_code = COALESCE($6, last_status_code),
                last_error = COALESCE($7, last_error), lease_token = NULL,
                locked_until = NULL, updated_at = $8
             WHERE id = $1 AND lease_token = $2";
        sqlx::query(sql)
            .bind(&r.delivery_id)
            .bind(&r.lease_token)
            .bind(status)
            .bind(next)
            .bind(counted as i64)
            .bind(r.status_code)
            .bind(&r.error)
            .bind(r.at)
            .execute(&mut *tx)
            .await?;
    }
    for ((token, code), group) in delivered {
        for chunk in group.chunks(500) {
            let mut args = AnyArguments::default();
            let _ = args.add(token.clone());
            let _ = args.add(code);
            let at = chunk.iter().map(|r| r.at).max().unwrap_or_default();
            let _ = args.add(at);
            let mut sql = String::from(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                    round_attempts = round_attempts + 1, last_status_code = $2,
                    last_error = NULL, delivered_at = $3, next_attempt_at = $3,
                    lease_token = NULL, locked_until = NULL, updated_at = $3
                 WHERE lease_token = $1 AND id IN (",
            );
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 4));
                let _ = args.add(r.delivery_id.clone());
            }
            sql.push(')');
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(&mut *tx)
                .await?;
        }
    }
    crate::commit(tx).await
}

/// Filters of `GET /webhook-deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub merchant_account_id: String,
    pub statuses: Vec<String>,
    pub subscription_id: Option<String>,
    pub event_names: Vec<String>,
    pub event_id: Option<String>,
    pub cursor: Option<(i64, String, bool)>,
    pub limit: i64,
}

/// A page of deliveries, newest first (`limit + 1` rows at most).
pub async fn list_deliveries<'c, E: Executor<'c, Database = Any>>(
    db: E,
    f: &DeliveryFilter,
) -> Result<Vec<DeliveryRow>> {
    let mut args = AnyArguments::default();
    let _ = args.add(f.merchant_account_id.clone());
    let mut n = 1;
    let mut sql = String::from("SELECT * FROM webhook_deliveries WHERE merchant_account_id = $1");
    for (column, values) in [("status", &f.statuses), ("event_name", &f.event_names)] {
        if !values.is_empty() {
            sql.push_str(&format!(" AND {column} IN ("));
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&format!("${n}"));
                let _ = args.add(v.clone());
            }
            sql.push(')');
        }
    }
    for (column, value) in [
        ("subscription_id", &f.subscription_id),
        ("event_id", &f.event_id),
    ] {
        if let Some(v) = value {
            n += 1;
            sql.push_str(&format!(" AND {column} = ${n}"));
            let _ = args.add(v.clone());
        }
    }
    let ascending = push_cursor(&mut sql, &mut args, n, f.cursor.as_ref());
    let rows = fetch_page(db, sql, args, ascending, f.limit).await?;
    let mut out = rows
        .iter()
        .map(DeliveryRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    if ascending {
        out.truncate(f.limit as usize + 1);
        out.reverse();
    }
    Ok(out)
}

pub async fn get_delivery<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
) -> Result<Option<DeliveryRow>> {
    let row =
        sqlx::query("SELECT * FROM webhook_deliveries WHERE merchant_account_id = $1 AND id = $2")
            .bind(merchant_account_id)
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.as_ref().map(DeliveryRow::from_row).transpose()
}

/// The delivery log of one delivery, oldest attempt first.
pub async fn attempts_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    delivery_id: &str,
) -> Result<Vec<AttemptRow>> {
    let rows = sqlx::query(
        "SELECT * FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt, id",
    )
    .bind(delivery_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(AttemptRow::from_row).collect()
}

/// An endpoint's recent health: its last attempt and how many attempts in a row have failed.
#[derive(Debug, Clone, Default)]
pub struct EndpointHealth {
    /// The most recent attempt of any of its recent deliveries.
    pub last_attempt: Option<AttemptRow>,
    /// Failed attempts since the last 2xx answer (counted among the last 100 attempts of its
    /// last 100 deliveries; `100` means "100 or more").
    pub failure_streak: i64,
}

/// [`EndpointHealth`] of one subscription, from its last 100 deliveries' attempts.
pub async fn endpoint_health<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    subscription_id: &str,
) -> Result<EndpointHealth> {
    let rows = sqlx::query(
        "SELECT * FROM webhook_delivery_attempts WHERE delivery_id IN (
            SELECT id FROM webhook_deliveries WHERE subscription_id = $1
                AND merchant_account_id = $2 ORDER BY created_at DESC, id DESC LIMIT 100)
         ORDER BY attempted_at DESC, id DESC LIMIT 100",
    )
    .bind(subscription_id)
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    let attempts = rows
        .iter()
        .map(AttemptRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    let failure_streak = attempts
        .iter()
        .take_while(|a| !a.status_code.is_some_and(|c| (200..300).contains(&c)))
        .count() as i64;
    Ok(EndpointHealth {
        last_attempt: attempts.into_iter().next(),
        failure_streak,
    })
}

/// What a resend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resend {
    /// Due now again (a new round of attempts of the same event id).
    Queued,
    /// A worker is attempting it right now.
    InFlight,
    NotFound,
}

/// Makes a delivery due now again, whatever its status, with a fresh retry round.
pub async fn resend<'c, E: Executor<'c, Database = Any> + Copy>(
    db: E,
    merchant_account_id: &str,
    id: &str,
    now: i64,
) -> Result<Resend> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', round_attempts = 0,
            round_started_at = $3, next_attempt_at = $3, lease_token = NULL, locked_until = NULL,
            updated_at = $3
         WHERE merchant_account_id = $1 AND id = $2
            AND (lease_token IS NULL OR locked_until IS NULL OR locked_until < $3)",
    )
    .bind(merchant_account_id)
    .bind(id)
    .bind(now)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Resend::Queued);
    }
    Ok(match get_delivery(db, merchant_account_id, id).await? {
        Some(_) => Resend::InFlight,
        None => Resend::NotFound,
    })
}

// ---- pagination helpers ---------------------------------------------------------------------

/// Appends the keyset condition of `cursor` (newest-first order); returns whether the page is
/// read oldest-first (a "previous" page).
fn push_cursor(
    sql: &mut String,
    args: &mut AnyArguments,
    bound: usize,
    cursor: Option<&(i64, String, bool)>,
) -> bool {
    match cursor {
        Some((created, id, after)) => {
            let op = if *after { "<" } else { ">" };
            sql.push_str(&format!(
                " AND (created_at {op} ${a} OR (created_at = ${a} AND id {op} ${b}))",
                a = bound + 1,
                b = bound + 2
            ));
            let _ = args.add(*created);
            let _ = args.add(id.clone());
            !*after
        }
        None => false,
    }
}

async fn fetch_page<'c, E: Executor<'c, Database = Any>>(
    db: E,
    mut sql: String,
    args: AnyArguments,
    ascending: bool,
    limit: i64,
) -> Result<Vec<AnyRow>> {
    let dir = if ascending { "ASC" } else { "DESC" };
    sql.push_str(&format!(
        " ORDER BY created_at {dir}, id {dir} LIMIT {}",
        limit + 1
    ));
    Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&f(&["transaction.*"]), "transaction.captured"));
        assert!(!matches(&f(&["transaction.*"]), "refund.succeeded"));
        assert!(!matches(&f(&["trans.*"]), "transaction.captured"));
        assert!(matches(&f(&["*"]), "customer.linked"));
        assert!(matches(
            &f(&["refund.failed", "customer.linked"]),
            "customer.linked"
        ));
        assert!(valid_filter("permission.*"));
        assert!(valid_filter("transaction.capture-pending"));
        assert!(!valid_filter("transaction.nope"));
        assert!(!valid_filter("nope.*"));
    }
}
