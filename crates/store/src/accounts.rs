//! Merchant accounts, API keys and server settings.

use sqlx::{Any, Executor};

use crate::Result;
use crate::rows::{ApiKeyRow, MerchantAccountRow};

pub async fn insert_merchant_account<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    display_name: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO merchant_accounts (id, display_name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(display_name)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn get_merchant_account<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<MerchantAccountRow>> {
    let row = sqlx::query("SELECT * FROM merchant_accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(MerchantAccountRow::from_row).transpose()
}

pub async fn list_merchant_accounts<'c, E: Executor<'c, Database = Any>>(
    db: E,
) -> Result<Vec<MerchantAccountRow>> {
    let rows = sqlx::query("SELECT * FROM merchant_accounts ORDER BY created_at, id")
        .fetch_all(db)
        .await?;
    rows.iter().map(MerchantAccountRow::from_row).collect()
}

pub async fn insert_api_key<'c, E: Executor<'c, Database = Any>>(
    db: E,
    k: &ApiKeyRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, merchant_account_id, kind, secret_hash, display_name, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.id)
    .bind(&k.merchant_account_id)
    .bind(&k.kind)
    .bind(&k.secret_hash)
    .bind(&k.display_name)
    .bind(k.created_at)
    .bind(k.revoked_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_api_key<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<ApiKeyRow>> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(ApiKeyRow::from_row).transpose()
}

pub async fn list_api_keys<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: Option<&str>,
) -> Result<Vec<ApiKeyRow>> {
    let rows = match merchant_account_id {
        Some(m) => {
            sqlx::query(
                "SELECT * FROM api_keys WHERE merchant_account_id = $1 ORDER BY created_at, id",
            )
            .bind(m)
            .fetch_all(db)
            .await?
        }
        None => {
            sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
                .fetch_all(db)
                .await?
        }
    };
    rows.iter().map(ApiKeyRow::from_row).collect()
}

/// Revokes a key; `false` when there is no such (unrevoked) key.
pub async fn revoke_api_key<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    now: i64,
) -> Result<bool> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_setting<'c, E: Executor<'c, Database = Any>>(
    db: E,
    key: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?,
    )
}

/// Sets a setting, replacing any value it had.
pub async fn put_setting<'c, E: Executor<'c, Database = Any>>(
    db: E,
    key: &str,
    value: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(db)
    .await?;
    Ok(())
}

/// Sets a setting if it is not set yet; returns the value now stored.
pub async fn init_setting<'c, E: Executor<'c, Database = Any> + Copy>(
    db: E,
    key: &str,
    value: &str,
) -> Result<String> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(db)
        .await?;
    Ok(get_setting(db, key)
        .await?
        .unwrap_or_else(|| value.to_string()))
}
