//! Transactions, their refunds and their events (the audit trail).
//!
//! A transaction row changes only through [`update`] with a [`TransactionUpdate`]: the typed
//! list of what may change, each guarded by the row's `version` (optimistic concurrency).

use std::sync::LazyLock;

use sqlx::{Any, Arguments, Executor};
use tollgate_domain::TransactionStatus;

use crate::query::Filtered;
use crate::rows::{EventRow, RefundRow, TransactionRow};
use crate::{Result, StoreError};

pub async fn insert<'c, E: Executor<'c, Database = Any>>(db: E, t: &TransactionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO transactions (id, merchant_account_id, connection_id, status, intent, amount,
            currency, country, authorized_amount, captured_amount, refunded_amount,
            external_identifier, metadata, customid, method, redirect_url, integration_client,
            payment_intent_id, client_secret, error_code, raw_response_code,
            raw_response_description, approval_token_hash, approval_expires_at,
            session_token_hash, session_expires_at, disputed, state, created_at, updated_at,
            authorized_at, captured_at, voided_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
            $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)",
    )
    .bind(&t.id)
    .bind(&t.merchant_account_id)
    .bind(&t.connection_id)
    .bind(&t.status)
    .bind(&t.intent)
    .bind(t.amount)
    .bind(&t.currency)
    .bind(&t.country)
    .bind(t.authorized_amount)
    .bind(t.captured_amount)
    .bind(t.refunded_amount)
    .bind(&t.external_identifier)
    .bind(&t.metadata)
    .bind(&t.customid)
    .bind(&t.method)
    .bind(&t.redirect_url)
    .bind(&t.integration_client)
    .bind(&t.payment_intent_id)
    .bind(&t.client_secret)
    .bind(&t.error_code)
    .bind(&t.raw_response_code)
    .bind(&t.raw_response_description)
    .bind(&t.approval_token_hash)
    .bind(t.approval_expires_at)
    .bind(&t.session_token_hash)
    .bind(t.session_expires_at)
    .bind(t.disputed as i64)
    .bind(&t.state)
    .bind(t.created_at)
    .bind(t.updated_at)
    .bind(t.authorized_at)
    .bind(t.captured_at)
    .bind(t.voided_at)
    .bind(t.version)
    .execute(db)
    .await?;
    Ok(())
}

/// One transaction of a merchant account. `lock` adds `FOR UPDATE` (pass
/// `store.for_update()`), for reads inside a write transaction.
pub async fn get<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
    lock: &str,
) -> Result<Option<TransactionRow>> {
    let sql =
        format!("SELECT * FROM transactions WHERE merchant_account_id = $1 AND id = $2{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(merchant_account_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(TransactionRow::from_row).transpose()
}

/// A transaction by id alone (token-authorised pages and jobs, which know no merchant account).
pub async fn get_any<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    lock: &str,
) -> Result<Option<TransactionRow>> {
    let sql = format!("SELECT * FROM transactions WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(TransactionRow::from_row).transpose()
}

/// The transactions with these ids, read together (`lock`: as [`get_any`]; rows locked in id
/// order, so two writers of shared rows wait for each other instead of deadlocking).
pub async fn get_many(
    db: &mut crate::Conn,
    ids: &[&str],
    lock: &str,
) -> Result<Vec<TransactionRow>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    // Only our own lock clause is formatted in.
    let sql = format!("SELECT * FROM transactions WHERE id IN ({{list}}) ORDER BY id{lock}");
    let rows = crate::query::rows_in_list(db, &sql, &[], &ids, 500).await?;
    rows.iter().map(TransactionRow::from_row).collect()
}

/// The only ways a transaction row changes.
#[derive(Debug, Clone)]
pub enum TransactionUpdate {
    /// The PaymentIntent exists at Stripe; the buyer may now approve.
    PaymentIntentCreated {
        payment_intent_id: String,
        client_secret: String,
        status: String,
        state: String,
    },
    /// What Stripe said (a sync, an action's answer, a webhook) was applied by the domain.
    StateApplied {
        status: String,
        authorized_amount: i64,
        captured_amount: i64,
        refunded_amount: i64,
        disputed: bool,
        error_code: Option<String>,
        raw_response_code: Option<String>,
        raw_response_description: Option<String>,
        state: String,
        authorized_at: Option<i64>,
        captured_at: Option<i64>,
        voided_at: Option<i64>,
    },
    /// The approval and session tokens can no longer be used (the payment completed or ended).
    TokensSpent,
    /// A new approval or session token replaces the old one (whose hash is all we kept), for a
    /// create whose answer never reached the client.
    TokenIssued {
        approval_token_hash: Option<String>,
        session_token_hash: Option<String>,
    },
}

impl TransactionRow {
    /// The row as writing `change` at `now` leaves it, without writing it (`None`: only a
    /// [`TransactionUpdate::StateApplied`] is folded this way). The version is the written
    /// row's business: [`update_many`] moves it once per write.
    pub fn after(&self, change: &TransactionUpdate, now: i64) -> Option<TransactionRow> {
        let TransactionUpdate::StateApplied {
            status,
            authorized_amount,
            captured_amount,
            refunded_amount,
            disputed,
            error_code,
            raw_response_code,
            raw_response_description,
            state,
            authorized_at,
            captured_at,
            voided_at,
        } = change
        else {
            return None;
        };
        let mut row = self.clone();
        row.status = status.clone();
        row.authorized_amount = *authorized_amount;
        row.captured_amount = *captured_amount;
        row.refunded_amount = *refunded_amount;
        row.disputed = *disputed;
        row.error_code = error_code.clone();
        row.raw_response_code = raw_response_code.clone();
        row.raw_response_description = raw_response_description.clone();
        row.state = state.clone();
        row.authorized_at = *authorized_at;
        row.captured_at = *captured_at;
        row.voided_at = *voided_at;
        row.updated_at = now;
        Some(row)
    }
}

/// Writes the state-applied columns of each row (as [`TransactionRow::after`] left them) over
/// the stored row, if that is still at the given version; one statement per
/// [`crate::query::row_chunks`] chunk.
/// [`StoreError::Conflict`] if any row moved meanwhile.
pub async fn update_many(db: &mut crate::Conn, rows: &[(i64, &TransactionRow)]) -> Result<()> {
    let backend = crate::Backend::of(db);
    const COLUMNS: usize = 15;
    for chunk in crate::query::row_chunks(backend, rows, 100) {
        let mut sql = String::from(
            "WITH v (id, version, status, authorized_amount, captured_amount, refunded_amount,
                disputed, error_code, raw_response_code, raw_response_description, state,
                authorized_at, captured_at, voided_at, updated_at) AS (VALUES ",
        );
        let mut args = sqlx::any::AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), COLUMNS));
        for (version, t) in chunk.iter() {
            let _ = args.add(t.id.clone());
            let _ = args.add(*version);
            let _ = args.add(t.status.clone());
            let _ = args.add(t.authorized_amount);
            let _ = args.add(t.captured_amount);
            let _ = args.add(t.refunded_amount);
            let _ = args.add(t.disputed as i64);
            let _ = args.add(t.error_code.clone());
            let _ = args.add(t.raw_response_code.clone());
            let _ = args.add(t.raw_response_description.clone());
            let _ = args.add(t.state.clone());
            let _ = args.add(t.authorized_at);
            let _ = args.add(t.captured_at);
            let _ = args.add(t.voided_at);
            let _ = args.add(t.updated_at);
        }
        sql.push_str(
            ") UPDATE transactions SET status = v.status, authorized_amount = v.authorized_amount,
                captured_amount = v.captured_amount, refunded_amount = v.refunded_amount,
                disputed = v.disputed, error_code = v.error_code,
                raw_response_code = v.raw_response_code,
                raw_response_description = v.raw_response_description, state = v.state,
                authorized_at = v.authorized_at, captured_at = v.captured_at,
                voided_at = v.voided_at, updated_at = v.updated_at,
                version = transactions.version + 1
             FROM v WHERE transactions.id = v.id AND transactions.version = v.version",
        );
        // Placeholders only; every value is bound.
        let done = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(crate::query::keeps_shapes(backend))
            .execute(&mut *db)
            .await?;
        if done.rows_affected() != chunk.len() as u64 {
            return Err(StoreError::Conflict);
        }
    }
    Ok(())
}

/// Applies `change` to the row at `version`; [`StoreError::Conflict`] if it moved meanwhile.
pub async fn update<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    version: i64,
    now: i64,
    change: &TransactionUpdate,
) -> Result<TransactionRow> {
    let done =
        match change {
            TransactionUpdate::PaymentIntentCreated {
                payment_intent_id,
                client_secret,
                status,
                state,
            } => sqlx::query(
                "UPDATE transactions SET payment_intent_id = $3, client_secret = $4, status = $5,
                    state = $6, updated_at = $7, version = version + 1
                 WHERE id = $1 AND version = $2 RETURNING *",
            )
            .bind(id)
            .bind(version)
            .bind(payment_intent_id)
            .bind(client_secret)
            .bind(status)
            .bind(state)
            .bind(now)
            .fetch_optional(db)
            .await?,
            TransactionUpdate::StateApplied {
                status,
                authorized_amount,
                captured_amount,
                refunded_amount,
                disputed,
                error_code,
                raw_response_code,
                raw_response_description,
                state,
                authorized_at,
                captured_at,
                voided_at,
            } => sqlx::query(
                "UPDATE transactions SET status = $3, authorized_amount = $4, captured_amount = $5,
                    refunded_amount = $6, disputed = $7, error_code = $8, raw_response_code = $9,
                    raw_response_description = $10, state = $11, authorized_at = $12,
                    captured_at = $13, voided_at = $14, updated_at = $15, version = version + 1
                 WHERE id = $1 AND version = $2 RETURNING *",
            )
            .bind(id)
            .bind(version)
            .bind(status)
            .bind(authorized_amount)
            .bind(captured_amount)
            .bind(refunded_amount)
            .bind(*disputed as i64)
            .bind(error_code)
            .bind(raw_response_code)
            .bind(raw_response_description)
            .bind(state)
            .bind(authorized_at)
            .bind(captured_at)
            .bind(voided_at)
            .bind(now)
            .fetch_optional(db)
            .await?,
            TransactionUpdate::TokenIssued {
                approval_token_hash,
                session_token_hash,
            } => {
                sqlx::query(
                    "UPDATE transactions SET approval_token_hash = $3, session_token_hash = $4,
                    updated_at = $5, version = version + 1
                 WHERE id = $1 AND version = $2 RETURNING *",
                )
                .bind(id)
                .bind(version)
                .bind(approval_token_hash)
                .bind(session_token_hash)
                .bind(now)
                .fetch_optional(db)
                .await?
            }
            TransactionUpdate::TokensSpent => {
                sqlx::query(
                    "UPDATE transactions SET approval_token_hash = NULL, session_token_hash = NULL,
                    updated_at = $3, version = version + 1
                 WHERE id = $1 AND version = $2 RETURNING *",
                )
                .bind(id)
                .bind(version)
                .bind(now)
                .fetch_optional(db)
                .await?
            }
        };
    match done {
        Some(row) => TransactionRow::from_row(&row),
        None => Err(StoreError::Conflict),
    }
}

/// Filters of `GET /transactions`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub merchant_account_id: String,
    pub statuses: Vec<String>,
    pub created_gte: Option<i64>,
    pub created_lte: Option<i64>,
    pub updated_gte: Option<i64>,
    pub updated_lte: Option<i64>,
    pub external_identifier: Option<String>,
    pub customid: Option<String>,
    /// Matches the PaymentIntent id or its client secret.
    pub payment_service_transaction_id: Option<String>,
    pub amount_gte: Option<i64>,
    pub amount_lte: Option<i64>,
    pub currencies: Vec<String>,
    pub ids: Vec<String>,
    pub countries: Vec<String>,
    pub methods: Vec<String>,
    pub connection_ids: Vec<String>,
    pub error_codes: Vec<String>,
    /// Some refund money went back (`refunded_amount > 0`), or none did.
    pub has_refunds: Option<bool>,
    pub disputed: Option<bool>,
    /// Keyset position: rows strictly after (`after`) or before (`!after`) `(created_at, id)`
    /// in the newest-first order.
    pub cursor: Option<(i64, String, bool)>,
    pub limit: i64,
}

/// A page of transactions, newest first. Returns `limit + 1` rows at most, so the caller can
/// tell whether another page exists.
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    db: E,
    f: &ListFilter,
) -> Result<Vec<TransactionRow>> {
    let mut q = Filtered::new("SELECT * FROM transactions WHERE ");
    q.bind_str("merchant_account_id = ?", &f.merchant_account_id);
    for (column, values) in [
        ("status", &f.statuses),
        ("currency", &f.currencies),
        ("id", &f.ids),
        ("country", &f.countries),
        ("method", &f.methods),
        ("connection_id", &f.connection_ids),
        ("error_code", &f.error_codes),
    ] {
        q.any_of(column, values);
    }
    match f.has_refunds {
        Some(true) => q.push(" AND refunded_amount > 0"),
        Some(false) => q.push(" AND refunded_amount = 0"),
        None => {}
    }
    match f.disputed {
        Some(true) => q.push(" AND disputed = 1"),
        Some(false) => q.push(" AND disputed = 0"),
        None => {}
    }
    if let Some(v) = &f.external_identifier {
        q.bind_str(" AND external_identifier = ?", v);
    }
    if let Some(v) = &f.customid {
        q.bind_str(" AND customid = ?", v);
    }
    if let Some(v) = &f.payment_service_transaction_id {
        q.bind_str(" AND (payment_intent_id = ?", v);
        q.bind_str(" OR client_secret = ?)", v);
    }
    for (clause, v) in [
        (" AND created_at >= ?", f.created_gte),
        (" AND created_at <= ?", f.created_lte),
        (" AND updated_at >= ?", f.updated_gte),
        (" AND updated_at <= ?", f.updated_lte),
        (" AND amount >= ?", f.amount_gte),
        (" AND amount <= ?", f.amount_lte),
    ] {
        if let Some(v) = v {
            q.bind_int(clause, v);
        }
    }
    let ascending = match &f.cursor {
        Some((created, id, after)) => {
            let op = if *after { "<" } else { ">" };
            q.bind_int(&format!(" AND (created_at {op} ?"), *created);
            q.bind_int(" OR (created_at = ?", *created);
            q.bind_str(&format!(" AND id {op} ?))"), id);
            !*after
        }
        None => false,
    };
    let dir = if ascending { "ASC" } else { "DESC" };
    q.push(&format!(
        " ORDER BY created_at {dir}, id {dir} LIMIT {}",
        f.limit + 1
    ));
    let (sql, args) = q.finish();
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(db)
        .await?;
    let mut out = rows
        .iter()
        .map(TransactionRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    if ascending {
        // A "previous page" is read oldest-first from the cursor; present it newest first.
        out.truncate(f.limit as usize + 1);
        out.reverse();
    }
    Ok(out)
}

/// Transactions whose approval window ended while a buyer was still approving.
pub async fn expired_approvals<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    let rows = sqlx::query(
        "SELECT * FROM transactions WHERE status IN ('buyer_approval_pending', 'processing')
            AND approval_expires_at IS NOT NULL AND approval_expires_at <= $1
         ORDER BY approval_expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(TransactionRow::from_row).collect()
}

/// A connection's transactions that Stripe may still move: not in a final status, or with a
/// refund still processing (reconcile re-reads these from their PaymentIntent).
pub async fn unsettled_of_connection<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    // The statuses that are not final, from the domain's one list of statuses.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let open: Vec<String> = TransactionStatus::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!(
            "SELECT * FROM transactions t WHERE connection_id = $1
                AND (status IN ({})
                     OR EXISTS (SELECT 1 FROM refunds r WHERE r.transaction_id = t.id
                                AND r.status = 'processing'))
             ORDER BY created_at LIMIT $2",
            open.join(", ")
        )
    });
    let rows = sqlx::query(SQL.as_str())
        .bind(connection_id)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(TransactionRow::from_row).collect()
}

// ---- refunds ----------------------------------------------------------------------------

pub async fn insert_refund<'c, E: Executor<'c, Database = Any>>(
    db: E,
    r: &RefundRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refunds (id, transaction_id, merchant_account_id, stripe_refund_id, amount,
            currency, status, reason, error_code, raw_response_code, raw_response_description,
            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&r.id)
    .bind(&r.transaction_id)
    .bind(&r.merchant_account_id)
    .bind(&r.stripe_refund_id)
    .bind(r.amount)
    .bind(&r.currency)
    .bind(&r.status)
    .bind(&r.reason)
    .bind(&r.error_code)
    .bind(&r.raw_response_code)
    .bind(&r.raw_response_description)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Records what Stripe said about a refund.
pub async fn update_refund<'c, E: Executor<'c, Database = Any>>(
    db: E,
    r: &RefundRow,
) -> Result<()> {
    sqlx::query(
        "UPDATE refunds SET stripe_refund_id = $2, status = $3, error_code = $4,
            raw_response_code = $5, raw_response_description = $6, updated_at = $7
         WHERE id = $1",
    )
    .bind(&r.id)
    .bind(&r.stripe_refund_id)
    .bind(&r.status)
    .bind(&r.error_code)
    .bind(&r.raw_response_code)
    .bind(&r.raw_response_description)
    .bind(r.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn refunds_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    transaction_id: &str,
) -> Result<Vec<RefundRow>> {
    let rows = sqlx::query(
        "SELECT * FROM refunds WHERE transaction_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(transaction_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(RefundRow::from_row).collect()
}

pub async fn get_refund<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
) -> Result<Option<RefundRow>> {
    let row = sqlx::query("SELECT * FROM refunds WHERE merchant_account_id = $1 AND id = $2")
        .bind(merchant_account_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(RefundRow::from_row).transpose()
}

// ---- events -----------------------------------------------------------------------------

pub async fn insert_event(db: &mut crate::Conn, e: &EventRow) -> Result<()> {
    insert_events(db, std::slice::from_ref(e)).await
}

/// Several events, in [`crate::query::row_chunks`].
pub async fn insert_events(db: &mut crate::Conn, events: &[EventRow]) -> Result<()> {
    let backend = crate::Backend::of(db);
    for chunk in crate::query::row_chunks(backend, events, 100) {
        let values = crate::query::value_rows(backend, chunk.len(), 6);
        let sql = format!(
            "INSERT INTO transaction_events (id, transaction_id, merchant_account_id, name, data, created_at)
             VALUES {values}"
        );
        let mut q =
            sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(crate::query::keeps_shapes(backend));
        for e in chunk {
            q = q
                .bind(&e.id)
                .bind(&e.transaction_id)
                .bind(&e.merchant_account_id)
                .bind(&e.name)
                .bind(&e.data)
                .bind(e.created_at);
        }
        q.execute(&mut *db).await?;
    }
    Ok(())
}

pub async fn events_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    transaction_id: &str,
) -> Result<Vec<EventRow>> {
    let rows =
        sqlx::query("SELECT * FROM transaction_events WHERE transaction_id = $1 ORDER BY id")
            .bind(transaction_id)
            .fetch_all(db)
            .await?;
    rows.iter().map(EventRow::from_row).collect()
}

/// The transaction of a connection's PaymentIntent (webhooks find transactions by the stored
/// Stripe id of their own connection, never by metadata alone).
pub async fn get_by_payment_intent<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    payment_intent_id: &str,
) -> Result<Option<TransactionRow>> {
    let row = sqlx::query(
        "SELECT * FROM transactions WHERE connection_id = $1 AND payment_intent_id = $2",
    )
    .bind(connection_id)
    .bind(payment_intent_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(TransactionRow::from_row).transpose()
}

/// The transactions of `connection_id` with any of `payment_intent_ids` (the inbox plans a
/// batch of events with one read), at most 500 ids per statement.
pub async fn get_by_payment_intents(
    store: &crate::Store,
    connection_id: &str,
    payment_intent_ids: &[&str],
) -> Result<Vec<TransactionRow>> {
    let mut conn = store.hold_reader().await?;
    let sql =
        "SELECT * FROM transactions WHERE connection_id = $1 AND payment_intent_id IN ({list})";
    let rows =
        crate::query::rows_in_list(&mut conn, sql, &[connection_id], payment_intent_ids, 500)
            .await?;
    rows.iter().map(TransactionRow::from_row).collect()
}

/// The refunds with these Stripe ids (webhooks updating refund statuses): one read of a
/// reader per 500 ids.
pub async fn refunds_by_stripe_ids(
    store: &crate::Store,
    stripe_refund_ids: &[&str],
) -> Result<Vec<RefundRow>> {
    let mut conn = store.hold_reader().await?;
    let sql = "SELECT * FROM refunds WHERE stripe_refund_id IN ({list})";
    let rows = crate::query::rows_in_list(&mut conn, sql, &[], stripe_refund_ids, 500).await?;
    rows.iter().map(RefundRow::from_row).collect()
}
