//! Overage of metered permissions reported to Stripe Billing Meters: which meter (by
//! `event_name`) a permission reports to (`credit_meters`), and the meter events still to send
//! (`meter_outbox`, one per consumption with overage, keyed by its ledger row's id). Migration
//! `0026_meter_outbox.sql` (SQLite) / `0025_meter_outbox.sql` (PostgreSQL).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::Result;

/// The meter event name `permission` reports its overage to, if any.
pub async fn meter_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    permission: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT meter_event_name FROM credit_meters
         WHERE merchant_account_id = $1 AND permission = $2",
    )
    .bind(merchant)
    .bind(permission)
    .fetch_optional(db)
    .await?)
}

/// Every permission of the merchant that names a meter, with its event name.
pub async fn meters<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT permission, meter_event_name FROM credit_meters WHERE merchant_account_id = $1",
    )
    .bind(merchant)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Sets (`Some`) or removes (`None`) the meter of `permission`.
pub async fn set_meter<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    permission: &str,
    event_name: Option<&str>,
    now: i64,
) -> Result<()> {
    match event_name {
        Some(name) => {
            sqlx::query(
                "INSERT INTO credit_meters (merchant_account_id, permission, meter_event_name,
                    updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (merchant_account_id, permission) DO UPDATE SET
                    meter_event_name = excluded.meter_event_name, updated_at = excluded.updated_at",
            )
            .bind(merchant)
            .bind(permission)
            .bind(name)
            .bind(now)
            .execute(db)
            .await?;
        }
        None => {
            sqlx::query(
                "DELETE FROM credit_meters WHERE merchant_account_id = $1 AND permission = $2",
            )
            .bind(merchant)
            .bind(permission)
            .execute(db)
            .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEventRow {
    /// The ledger row of the consumption: the meter event's identifier.
    pub ledger_id: String,
    pub merchant_account_id: String,
    pub customid: String,
    pub permission: String,
    pub event_name: String,
    /// Units beyond the balance.
    pub units: i64,
    /// Unix ms.
    pub event_time: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    pub created_at: i64,
}

impl MeterEventRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            ledger_id: r.try_get("ledger_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            customid: r.try_get("customid")?,
            permission: r.try_get("permission")?,
            event_name: r.try_get("event_name")?,
            units: r.try_get("units")?,
            event_time: r.try_get("event_time")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            sent_at: r.try_get("sent_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Queues a meter event (in the transaction of its ledger row).
pub async fn enqueue<'c, E: Executor<'c, Database = Any>>(db: E, r: &MeterEventRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO meter_outbox (ledger_id, merchant_account_id, customid, permission,
            event_name, units, event_time, status, attempts, next_attempt_at, last_error,
            sent_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&r.ledger_id)
    .bind(&r.merchant_account_id)
    .bind(&r.customid)
    .bind(&r.permission)
    .bind(&r.event_name)
    .bind(r.units)
    .bind(r.event_time)
    .bind(&r.status)
    .bind(r.attempts)
    .bind(r.next_attempt_at)
    .bind(&r.last_error)
    .bind(r.sent_at)
    .bind(r.created_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Pending events due at `now`, oldest first.
pub async fn due<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
    limit: i64,
) -> Result<Vec<MeterEventRow>> {
    let rows = sqlx::query(
        "SELECT * FROM meter_outbox WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, ledger_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(MeterEventRow::from_row).collect()
}

/// Takes a due event for one attempt: its next attempt moves to `retry_at` (where it stays if
/// this attempt fails or the process dies). `false`: another worker took it, or it was sent.
pub async fn claim<'c, E: Executor<'c, Database = Any>>(
    db: E,
    ledger_id: &str,
    now: i64,
    retry_at: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE meter_outbox SET attempts = attempts + 1, next_attempt_at = $3
         WHERE ledger_id = $1 AND status = 'pending' AND next_attempt_at <= $2",
    )
    .bind(ledger_id)
    .bind(now)
    .bind(retry_at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_sent<'c, E: Executor<'c, Database = Any>>(
    db: E,
    ledger_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE meter_outbox SET status = 'sent', sent_at = $2, last_error = NULL
         WHERE ledger_id = $1",
    )
    .bind(ledger_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn note_failure<'c, E: Executor<'c, Database = Any>>(
    db: E,
    ledger_id: &str,
    error: &str,
) -> Result<()> {
    sqlx::query("UPDATE meter_outbox SET last_error = $2 WHERE ledger_id = $1")
        .bind(ledger_id)
        .bind(error)
        .execute(db)
        .await?;
    Ok(())
}

/// The merchant's meter events of `customid`, oldest first.
pub async fn of_customer<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
) -> Result<Vec<MeterEventRow>> {
    let rows = sqlx::query(
        "SELECT * FROM meter_outbox WHERE merchant_account_id = $1 AND customid = $2
         ORDER BY created_at, ledger_id",
    )
    .bind(merchant)
    .bind(customid)
    .fetch_all(db)
    .await?;
    rows.iter().map(MeterEventRow::from_row).collect()
}

/// Puts a sent event back in the queue, due at `now`: it is sent again under its identifier and
/// Idempotency-Key, which Stripe answers without counting it twice.
pub async fn requeue<'c, E: Executor<'c, Database = Any>>(
    db: E,
    ledger_id: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE meter_outbox SET status = 'pending', next_attempt_at = $2, sent_at = NULL
         WHERE ledger_id = $1",
    )
    .bind(ledger_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
