//! Metered permissions: which permissions are metered, the append-only credit ledger, the
//! balances derived from it and the reservations that hold units (see the domain's
//! `credits` module for the rules).
//!
//! The hot path is [`try_consume`]: one conditional `UPDATE` of the balance row, which can
//! never take a balance below what reservations hold, whatever runs beside it (SQLite has one
//! writer; on PostgreSQL a concurrent update re-checks the condition on the row it waited for).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::{Result, StoreError};

// ---- definitions -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSkuRow {
    pub sku: String,
    pub units: i64,
    pub per: String,
    pub expires_in_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditDefRow {
    pub permission: String,
    pub rollover: bool,
    pub low_balance_threshold: Option<i64>,
    pub skus: Vec<CreditSkuRow>,
}

/// Writes (or replaces) the metered part of a permission definition.
pub async fn put_definition(db: &mut crate::Conn, merchant: &str, d: &CreditDefRow) -> Result<()> {
    delete_definition(&mut *db, merchant, &d.permission).await?;
    sqlx::query(
        "INSERT INTO credit_definitions (merchant_account_id, permission, rollover, low_balance_threshold)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(merchant)
    .bind(&d.permission)
    .bind(i64::from(d.rollover))
    .bind(d.low_balance_threshold)
    .execute(&mut *db)
    .await?;
    // The balances' copy of the threshold (read by the hot path).
    sqlx::query(
        "UPDATE credit_balances SET low_threshold = $3
         WHERE merchant_account_id = $1 AND permission = $2",
    )
    .bind(merchant)
    .bind(&d.permission)
    .bind(d.low_balance_threshold)
    .execute(&mut *db)
    .await?;
    for s in &d.skus {
        sqlx::query(
            "INSERT INTO credit_skus (merchant_account_id, permission, sku, units, per, expires_in_secs)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(merchant)
        .bind(&d.permission)
        .bind(&s.sku)
        .bind(s.units)
        .bind(&s.per)
        .bind(s.expires_in_secs)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Makes a permission unmetered (no-op when it was not).
pub async fn delete_definition(
    db: &mut crate::Conn,
    merchant: &str,
    permission: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM credit_skus WHERE merchant_account_id = $1 AND permission = $2")
        .bind(merchant)
        .bind(permission)
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "DELETE FROM credit_definitions WHERE merchant_account_id = $1 AND permission = $2",
    )
    .bind(merchant)
    .bind(permission)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// The metered permissions of an account (by identifier), with what each SKU grants.
pub async fn definitions<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
) -> Result<Vec<CreditDefRow>> {
    let rows = sqlx::query(
        "SELECT d.permission, d.rollover, d.low_balance_threshold, s.sku, s.units, s.per,
                s.expires_in_secs
         FROM credit_definitions d LEFT JOIN credit_skus s
           ON s.merchant_account_id = d.merchant_account_id AND s.permission = d.permission
         WHERE d.merchant_account_id = $1 ORDER BY d.permission, s.sku",
    )
    .bind(merchant)
    .fetch_all(db)
    .await?;
    let mut out: Vec<CreditDefRow> = Vec::new();
    for r in &rows {
        let permission: String = r.try_get("permission")?;
        let sku: Option<String> = r.try_get("sku")?;
        let sku = match sku {
            Some(sku) => Some(CreditSkuRow {
                sku,
                units: r.try_get::<Option<i64>, _>("units")?.unwrap_or(0),
                per: r.try_get::<Option<String>, _>("per")?.unwrap_or_default(),
                expires_in_secs: r.try_get("expires_in_secs")?,
            }),
            None => None,
        };
        match out.last_mut() {
            Some(last) if last.permission == permission => last.skus.extend(sku),
            _ => out.push(CreditDefRow {
                permission,
                rollover: r.try_get::<i64, _>("rollover")? != 0,
                low_balance_threshold: r.try_get("low_balance_threshold")?,
                skus: sku.into_iter().collect(),
            }),
        }
    }
    Ok(out)
}

/// One metered permission's definition.
pub async fn definition<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    permission: &str,
) -> Result<Option<CreditDefRow>> {
    Ok(definitions(db, merchant)
        .await?
        .into_iter()
        .find(|d| d.permission == permission))
}

/// The low-balance threshold of a metered permission; `None` when it is not metered.
pub async fn threshold<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    permission: &str,
) -> Result<Option<Option<i64>>> {
    let row = sqlx::query(
        "SELECT low_balance_threshold FROM credit_definitions
         WHERE merchant_account_id = $1 AND permission = $2",
    )
    .bind(merchant)
    .bind(permission)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.try_get("low_balance_threshold"))
        .transpose()
        .map_err(StoreError::from)
}

// ---- balances --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRow {
    pub customid: String,
    pub permission: String,
    pub balance: i64,
    pub held: i64,
    pub granted: i64,
    pub consumed: i64,
    pub due_at: Option<i64>,
    pub resets_at: Option<i64>,
    pub low_threshold: Option<i64>,
    pub updated_at: i64,
}

impl BalanceRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            customid: r.try_get("customid")?,
            permission: r.try_get("permission")?,
            balance: r.try_get("balance")?,
            held: r.try_get("held")?,
            granted: r.try_get("granted")?,
            consumed: r.try_get("consumed")?,
            due_at: r.try_get("due_at")?,
            resets_at: r.try_get("resets_at")?,
            low_threshold: r.try_get("low_threshold")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// Units a consumption or a reservation may take.
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }
}

/// One balance; `lock` is `Store::for_update()` inside a write transaction.
pub async fn get_balance<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    permission: &str,
    lock: &str,
) -> Result<Option<BalanceRow>> {
    let sql = format!(
        "SELECT * FROM credit_balances
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(merchant)
        .bind(customid)
        .bind(permission)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(BalanceRow::from_row).transpose()
}

/// A customer's balances, by permission.
pub async fn balances_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
) -> Result<Vec<BalanceRow>> {
    let rows = sqlx::query(
        "SELECT * FROM credit_balances WHERE merchant_account_id = $1 AND customid = $2
         ORDER BY permission",
    )
    .bind(merchant)
    .bind(customid)
    .fetch_all(db)
    .await?;
    rows.iter().map(BalanceRow::from_row).collect()
}

/// Creates the balance row at zero when it does not exist.
pub async fn ensure_balance<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    permission: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO credit_balances (merchant_account_id, customid, permission, updated_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(merchant)
    .bind(customid)
    .bind(permission)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Writes every field of a balance row (after a settlement, a grant, a claw-back).
pub async fn put_balance<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    b: &BalanceRow,
) -> Result<()> {
    sqlx::query(
        "UPDATE credit_balances SET balance = $4, held = $5, granted = $6, consumed = $7,
             due_at = $8, resets_at = $9, low_threshold = $10, updated_at = $11
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3",
    )
    .bind(merchant)
    .bind(&b.customid)
    .bind(&b.permission)
    .bind(b.balance)
    .bind(b.held)
    .bind(b.granted)
    .bind(b.consumed)
    .bind(b.due_at)
    .bind(b.resets_at)
    .bind(b.low_threshold)
    .bind(b.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The hot path: takes `units` from the balance if that leaves at least what reservations hold
/// and nothing is due (no lot or hold has ended unsettled). Returns the balance after, or
/// `None` when the condition did not hold (the caller settles or refuses).
pub async fn try_consume<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    permission: &str,
    units: i64,
    now: i64,
) -> Result<Option<(i64, Option<i64>)>> {
    let row = sqlx::query(
        "UPDATE credit_balances SET balance = balance - $4, consumed = consumed + $4, updated_at = $5
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3
           AND balance - held >= $4 AND (due_at IS NULL OR due_at > $5)
         RETURNING balance, low_threshold",
    )
    .bind(merchant)
    .bind(customid)
    .bind(permission)
    .bind(units)
    .bind(now)
    .fetch_optional(db)
    .await?;
    row.map(|r| Ok((r.try_get("balance")?, r.try_get("low_threshold")?)))
        .transpose()
}

/// Balances with something due at `now` (a lot or a hold ended), oldest first.
pub async fn due_balances<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
    limit: i64,
) -> Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT merchant_account_id, customid, permission FROM credit_balances
         WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("merchant_account_id")?,
                r.try_get("customid")?,
                r.try_get("permission")?,
            ))
        })
        .collect()
}

// ---- the ledger ------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerRow {
    pub seq: i64,
    pub id: String,
    pub customid: String,
    pub permission: String,
    pub kind: String,
    pub units: i64,
    pub balance_after: i64,
    pub lot: Option<String>,
    pub expires_at: Option<i64>,
    pub shortfall: i64,
    pub source: Option<String>,
    pub reservation_id: Option<String>,
    pub reason: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub created_at: i64,
}

impl LedgerRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            seq: r.try_get("seq")?,
            id: r.try_get("id")?,
            customid: r.try_get("customid")?,
            permission: r.try_get("permission")?,
            kind: r.try_get("kind")?,
            units: r.try_get("units")?,
            balance_after: r.try_get("balance_after")?,
            lot: r.try_get("lot")?,
            expires_at: r.try_get("expires_at")?,
            shortfall: r.try_get("shortfall")?,
            source: r.try_get("source")?,
            reservation_id: r.try_get("reservation_id")?,
            reason: r.try_get("reason")?,
            metadata: r.try_get("metadata")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Appends a ledger row (its `seq` is given by the database).
pub async fn insert_entry<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    e: &LedgerRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO credit_ledger (id, merchant_account_id, customid, permission, kind, units,
             balance_after, lot, expires_at, shortfall, source, reservation_id, reason, metadata,
             created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&e.id)
    .bind(merchant)
    .bind(&e.customid)
    .bind(&e.permission)
    .bind(&e.kind)
    .bind(e.units)
    .bind(e.balance_after)
    .bind(&e.lot)
    .bind(e.expires_at)
    .bind(e.shortfall)
    .bind(&e.source)
    .bind(&e.reservation_id)
    .bind(&e.reason)
    .bind(&e.metadata)
    .bind(e.created_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Every row of one balance, in order.
pub async fn entries<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    permission: &str,
) -> Result<Vec<LedgerRow>> {
    let rows = sqlx::query(
        "SELECT * FROM credit_ledger
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3 ORDER BY seq",
    )
    .bind(merchant)
    .bind(customid)
    .bind(permission)
    .fetch_all(db)
    .await?;
    rows.iter().map(LedgerRow::from_row).collect()
}

/// A customer's rows, newest first: those before `before` (a seq), at most `limit`.
pub async fn ledger_page<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<LedgerRow>> {
    let rows = sqlx::query(
        "SELECT * FROM credit_ledger
         WHERE merchant_account_id = $1 AND customid = $2 AND seq < $3
         ORDER BY seq DESC LIMIT $4",
    )
    .bind(merchant)
    .bind(customid)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(LedgerRow::from_row).collect()
}

/// The whole ledger of an account (the sums of every balance, for checks).
pub async fn ledger_sums<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT customid, permission, SUM(units) AS total FROM credit_ledger
         WHERE merchant_account_id = $1 GROUP BY customid, permission",
    )
    .bind(merchant)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("customid")?,
                r.try_get("permission")?,
                r.try_get("total")?,
            ))
        })
        .collect()
}

// ---- reservations ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    pub id: String,
    pub customid: String,
    pub permission: String,
    pub units: i64,
    pub status: String,
    pub expires_at: i64,
    pub committed_units: Option<i64>,
    pub ledger_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ReservationRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            customid: r.try_get("customid")?,
            permission: r.try_get("permission")?,
            units: r.try_get("units")?,
            status: r.try_get("status")?,
            expires_at: r.try_get("expires_at")?,
            committed_units: r.try_get("committed_units")?,
            ledger_id: r.try_get("ledger_id")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub async fn insert_reservation<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    r: &ReservationRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO credit_reservations (id, merchant_account_id, customid, permission, units,
             status, expires_at, committed_units, ledger_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&r.id)
    .bind(merchant)
    .bind(&r.customid)
    .bind(&r.permission)
    .bind(r.units)
    .bind(&r.status)
    .bind(r.expires_at)
    .bind(r.committed_units)
    .bind(&r.ledger_id)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_reservation<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    permission: &str,
    id: &str,
) -> Result<Option<ReservationRow>> {
    let row = sqlx::query(
        "SELECT * FROM credit_reservations
         WHERE merchant_account_id = $1 AND permission = $2 AND id = $3",
    )
    .bind(merchant)
    .bind(permission)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(ReservationRow::from_row).transpose()
}

/// Closes a held reservation (`committed`, `released`); `false` when it was no longer held.
pub async fn close_reservation<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    id: &str,
    status: &str,
    committed_units: Option<i64>,
    ledger_id: Option<&str>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE credit_reservations SET status = $3, committed_units = $4, ledger_id = $5,
             updated_at = $6
         WHERE merchant_account_id = $1 AND id = $2 AND status = 'held'",
    )
    .bind(merchant)
    .bind(id)
    .bind(status)
    .bind(committed_units)
    .bind(ledger_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the holds of a balance that ended by `now` expired; returns the units they held.
pub async fn expire_holds(
    db: &mut crate::Conn,
    merchant: &str,
    customid: &str,
    permission: &str,
    now: i64,
) -> Result<i64> {
    let rows = sqlx::query(
        "UPDATE credit_reservations SET status = 'expired', updated_at = $4
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3
           AND status = 'held' AND expires_at <= $4
         RETURNING units",
    )
    .bind(merchant)
    .bind(customid)
    .bind(permission)
    .bind(now)
    .fetch_all(&mut *db)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("units").map_err(StoreError::from))
        .sum()
}

/// The earliest end of a held reservation of a balance (ms).
pub async fn next_hold_end<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant: &str,
    customid: &str,
    permission: &str,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        "SELECT MIN(expires_at) AS next FROM credit_reservations
         WHERE merchant_account_id = $1 AND customid = $2 AND permission = $3 AND status = 'held'",
    )
    .bind(merchant)
    .bind(customid)
    .bind(permission)
    .fetch_one(db)
    .await?;
    Ok(row.try_get("next")?)
}

// ---- the group commit of consumes (SQLite) ---------------------------------------------------
//
// SQLite's consumes are applied in groups by its one writer (see the server's consumes). Each
// statement there is a round trip to the connection's thread, and each row another: a group
// reads and writes all its balances, ledger rows and change-log rows in a few statements, each
// taking its rows as one JSON array and answering at most one row.

/// What a consume of a group needs of a balance (see [`hot_balances`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotBalance {
    pub balance: i64,
    pub held: i64,
    pub due_at: Option<i64>,
    pub low_threshold: Option<i64>,
}

/// A balance as a group of consumes leaves it: its new `balance` after `consumed` more units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed<'a> {
    pub merchant: &'a str,
    pub customid: &'a str,
    pub permission: &'a str,
    pub balance: i64,
    pub consumed: i64,
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("a JSON list: {e}")))
}

/// SQLite: the balances of `keys` (merchant account, customid, permission), in order, read
/// in one statement; `None` where there is no balance row.
pub async fn hot_balances(
    db: &mut crate::Conn,
    keys: &[(&str, &str, &str)],
) -> Result<Vec<Option<HotBalance>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let found: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(k.key, b.balance, b.held, b.due_at, b.low_threshold))
         FROM json_each($1) k JOIN credit_balances b
           ON b.merchant_account_id = k.value ->> 0 AND b.customid = k.value ->> 1
          AND b.permission = k.value ->> 2",
    )
    .bind(json_text(&keys)?)
    .fetch_one(&mut *db)
    .await?;
    type Found = (usize, i64, i64, Option<i64>, Option<i64>);
    let found: Vec<Found> = crate::query::json_array(&found, "credit balances")?;
    let mut out = vec![None; keys.len()];
    for (i, balance, held, due_at, low_threshold) in found {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(HotBalance {
                balance,
                held,
                due_at,
                low_threshold,
            });
        }
    }
    Ok(out)
}

/// SQLite: writes a group's consumptions, in three statements: the balances' new figures,
/// the ledger rows (in order) and, for the permission cache, a change-log row per customer
/// (the rows `entitlements::note_permission_change` writes, one per `changed` customer).
pub async fn put_consumed(
    db: &mut crate::Conn,
    balances: &[Consumed<'_>],
    rows: &[(&str, &LedgerRow)],
    changed: &[(&str, &str)],
    now: i64,
) -> Result<()> {
    if !balances.is_empty() {
        let list: Vec<(&str, &str, &str, i64, i64)> = balances
            .iter()
            .map(|b| (b.merchant, b.customid, b.permission, b.balance, b.consumed))
            .collect();
        sqlx::query(
            "UPDATE credit_balances AS b
                SET balance = j.value ->> 3, consumed = b.consumed + (j.value ->> 4), updated_at = $2
               FROM json_each($1) j
              WHERE b.merchant_account_id = j.value ->> 0 AND b.customid = j.value ->> 1
                AND b.permission = j.value ->> 2",
        )
        .bind(json_text(&list)?)
        .bind(now)
        .execute(&mut *db)
        .await?;
    }
    if !rows.is_empty() {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(merchant, e)| {
                serde_json::json!([
                    e.id,
                    merchant,
                    e.customid,
                    e.permission,
                    e.kind,
                    e.units,
                    e.balance_after,
                    e.lot,
                    e.expires_at,
                    e.shortfall,
                    e.source,
                    e.reservation_id,
                    e.reason,
                    e.metadata,
                    e.created_at
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO credit_ledger (id, merchant_account_id, customid, permission, kind, units,
                 balance_after, lot, expires_at, shortfall, source, reservation_id, reason, metadata,
                 created_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                 value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11,
                 value ->> 12, value ->> 13, value ->> 14
             FROM json_each($1) ORDER BY key",
        )
        .bind(json_text(&list)?)
        .execute(&mut *db)
        .await?;
    }
    if !changed.is_empty() {
        sqlx::query(
            "INSERT INTO ent_permission_changes (merchant_account_id, customid, changed_at)
             SELECT value ->> 0, value ->> 1, $2 FROM json_each($1) ORDER BY key",
        )
        .bind(json_text(&changed)?)
        .bind(now)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}
