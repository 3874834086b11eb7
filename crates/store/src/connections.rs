//! Stripe connections of a merchant account.

use sqlx::{Any, Executor};

use crate::rows::ConnectionRow;
use crate::{Result, Tx};

pub async fn insert<'c, E: Executor<'c, Database = Any>>(db: E, c: &ConnectionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO connections (id, merchant_account_id, kind, display_name, secret_key_enc,
            secret_key_hint, publishable_key, webhook_secret_enc, webhook_secret_old_enc,
            stripe_account, api_version, sandbox, is_default, created_at, updated_at,
            webhook_secret_old_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&c.id)
    .bind(&c.merchant_account_id)
    .bind(&c.kind)
    .bind(&c.display_name)
    .bind(&c.secret_key_enc)
    .bind(&c.secret_key_hint)
    .bind(&c.publishable_key)
    .bind(&c.webhook_secret_enc)
    .bind(&c.webhook_secret_old_enc)
    .bind(&c.stripe_account)
    .bind(&c.api_version)
    .bind(c.sandbox as i64)
    .bind(c.is_default as i64)
    .bind(c.created_at)
    .bind(c.updated_at)
    .bind(c.webhook_secret_old_expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Rewrites every mutable column of a connection (the server changes a loaded row and saves it).
pub async fn update<'c, E: Executor<'c, Database = Any>>(db: E, c: &ConnectionRow) -> Result<()> {
    sqlx::query(
        "UPDATE connections SET display_name = $2, secret_key_enc = $3, secret_key_hint = $4,
            publishable_key = $5, webhook_secret_enc = $6, webhook_secret_old_enc = $7,
            stripe_account = $8, api_version = $9, is_default = $10, updated_at = $11,
            webhook_secret_old_expires_at = $12
         WHERE id = $1",
    )
    .bind(&c.id)
    .bind(&c.display_name)
    .bind(&c.secret_key_enc)
    .bind(&c.secret_key_hint)
    .bind(&c.publishable_key)
    .bind(&c.webhook_secret_enc)
    .bind(&c.webhook_secret_old_enc)
    .bind(&c.stripe_account)
    .bind(&c.api_version)
    .bind(c.is_default as i64)
    .bind(c.updated_at)
    .bind(c.webhook_secret_old_expires_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<ConnectionRow>> {
    let row = sqlx::query("SELECT * FROM connections WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(ConnectionRow::from_row).transpose()
}

pub async fn list<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: Option<&str>,
) -> Result<Vec<ConnectionRow>> {
    let rows =
        match merchant_account_id {
            Some(m) => sqlx::query(
                "SELECT * FROM connections WHERE merchant_account_id = $1 ORDER BY created_at, id",
            )
            .bind(m)
            .fetch_all(db)
            .await?,
            None => {
                sqlx::query("SELECT * FROM connections ORDER BY created_at, id")
                    .fetch_all(db)
                    .await?
            }
        };
    rows.iter().map(ConnectionRow::from_row).collect()
}

pub async fn default_for<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Option<ConnectionRow>> {
    let row = sqlx::query(
        "SELECT * FROM connections WHERE merchant_account_id = $1 AND is_default = 1
         ORDER BY created_at LIMIT 1",
    )
    .bind(merchant_account_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(ConnectionRow::from_row).transpose()
}

/// Makes `id` the only default connection of its merchant account.
pub async fn set_default<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
) -> Result<()> {
    sqlx::query("UPDATE connections SET is_default = CASE WHEN id = $2 THEN 1 ELSE 0 END WHERE merchant_account_id = $1")
        .bind(merchant_account_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// How many transactions were made through a connection (they keep it from being deleted).
pub async fn transaction_count<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<i64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transactions WHERE connection_id = $1")
        .bind(id)
        .fetch_one(db)
        .await?;
    Ok(n)
}

/// Deletes a connection together with the rows only it refers to: the Stripe events it
/// received (inbox rows and their payloads) and its sync position. Transactions keep a
/// connection: with any, the last statement fails on their foreign key, and the caller rolls
/// `tx` back.
pub async fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    sqlx::query(
        "DELETE FROM webhook_event_payloads
          WHERE id IN (SELECT id FROM webhook_events WHERE connection_id = $1)",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM webhook_events WHERE connection_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM connection_sync WHERE connection_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM connections WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether any connection holds live (`sk_live_` / `rk_live_`) keys: then the sandbox is not
/// mounted (SPEC §6).
pub async fn any_live<'c, E: Executor<'c, Database = Any>>(db: E) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM connections WHERE sandbox = 0 AND secret_key_hint LIKE '%\\_live\\_%' ESCAPE '\\'",
    )
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}
