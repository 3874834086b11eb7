//! The dashboard overview's figures: one grouped query per panel, on both databases, each
//! served by an index of migration `overview_indexes`. Times are unix milliseconds; ranges are
//! `[from, to)`.

use sqlx::{Any, Executor, Row};

use crate::Result;

/// A UTC day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Statuses of a transaction whose authorization was approved (whatever happened after).
pub const APPROVED: &[&str] = &[
    "authorization_succeeded",
    "authorization_void_pending",
    "authorization_voided",
    "capture_pending",
    "capture_succeeded",
];

/// Statuses of a transaction whose authorization was refused or failed.
pub const DECLINED: &[&str] = &["authorization_declined", "authorization_failed"];

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The currencies an account has transactions in, the most used first.
pub async fn currencies<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT currency, COUNT(*) AS n FROM transactions WHERE merchant_account_id = $1
         GROUP BY currency ORDER BY n DESC, currency",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("currency")?, r.try_get("n")?)))
        .collect()
}

/// One UTC day's transactions (created that day) in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxDay {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub count: i64,
    pub approved: i64,
    pub declined: i64,
    pub captured: i64,
    pub refunded: i64,
    /// Transactions with money refunded.
    pub refunded_count: i64,
    pub disputed_count: i64,
    /// Captured amount of the disputed transactions.
    pub disputed_amount: i64,
}

/// Transactions of `currency` created in `[from, to)`, summed per UTC day (days without any
/// are absent).
pub async fn transaction_days<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    currency: &str,
    from: i64,
    to: i64,
) -> Result<Vec<TxDay>> {
    // The status lists are constants of this module; every value from outside is bound.
    let sql = format!(
        "SELECT created_at / {DAY_MS} AS day, COUNT(*) AS n,
            CAST(SUM(CASE WHEN status IN ({approved}) THEN 1 ELSE 0 END) AS BIGINT) AS approved,
            CAST(SUM(CASE WHEN status IN ({declined}) THEN 1 ELSE 0 END) AS BIGINT) AS declined,
            CAST(SUM(captured_amount) AS BIGINT) AS captured,
            CAST(SUM(refunded_amount) AS BIGINT) AS refunded,
            CAST(SUM(CASE WHEN refunded_amount > 0 THEN 1 ELSE 0 END) AS BIGINT) AS refunded_n,
            CAST(SUM(CASE WHEN disputed = 1 THEN 1 ELSE 0 END) AS BIGINT) AS disputed_n,
            CAST(SUM(CASE WHEN disputed = 1 THEN captured_amount ELSE 0 END) AS BIGINT) AS disputed_amount
         FROM transactions
         WHERE merchant_account_id = $1 AND currency = $2 AND created_at >= $3 AND created_at < $4
         GROUP BY created_at / {DAY_MS} ORDER BY day",
        approved = quoted(APPROVED),
        declined = quoted(DECLINED),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(merchant_account_id)
        .bind(currency)
        .bind(from)
        .bind(to)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TxDay {
                day: r.try_get("day")?,
                count: r.try_get("n")?,
                approved: r.try_get("approved")?,
                declined: r.try_get("declined")?,
                captured: r.try_get("captured")?,
                refunded: r.try_get("refunded")?,
                refunded_count: r.try_get("refunded_n")?,
                disputed_count: r.try_get("disputed_n")?,
                disputed_amount: r.try_get("disputed_amount")?,
            })
        })
        .collect()
}

/// Stripe events received in a range: how many per connection and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCount {
    pub connection_id: String,
    pub status: String,
    pub count: i64,
}

pub async fn inbox_counts<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<InboxCount>> {
    let rows = sqlx::query(
        "SELECT connection_id, status, COUNT(*) AS n FROM webhook_events
         WHERE merchant_account_id = $1 AND received_at >= $2 AND received_at < $3
         GROUP BY connection_id, status",
    )
    .bind(merchant_account_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(InboxCount {
                connection_id: r.try_get("connection_id")?,
                status: r.try_get("status")?,
                count: r.try_get("n")?,
            })
        })
        .collect()
}

/// A connection of the account and when it last received a Stripe event (ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLast {
    pub id: String,
    pub display_name: String,
    pub last_received_at: Option<i64>,
}

pub async fn connections_last_received<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<ConnectionLast>> {
    let rows = sqlx::query(
        "SELECT c.id, c.display_name,
            (SELECT MAX(w.received_at) FROM webhook_events w WHERE w.connection_id = c.id) AS last_at
         FROM connections c WHERE c.merchant_account_id = $1 ORDER BY c.created_at, c.id",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ConnectionLast {
                id: r.try_get("id")?,
                display_name: r.try_get("display_name")?,
                last_received_at: r.try_get("last_at")?,
            })
        })
        .collect()
}

/// Outbound deliveries created in a range, per status (`pending`, `failed`, `delivered`,
/// `dead`).
pub async fn delivery_counts<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM webhook_deliveries
         WHERE merchant_account_id = $1 AND created_at >= $2 AND created_at < $3
         GROUP BY status",
    )
    .bind(merchant_account_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
        .collect()
}

/// A subscription Tollgate has seen (Stripe's JSON, at its newest version) and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionData {
    pub customid: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub data: String,
}

pub async fn subscriptions<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<SubscriptionData>> {
    let rows = sqlx::query(
        "SELECT customid, stripe_customer_id, data FROM ent_stripe_objects
         WHERE merchant_account_id = $1 AND object_type = 'subscription'",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SubscriptionData {
                customid: r.try_get("customid")?,
                stripe_customer_id: r.try_get("stripe_customer_id")?,
                data: r.try_get("data")?,
            })
        })
        .collect()
}
