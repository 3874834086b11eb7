//! Stripe Features imported as permissions: per connection, whether the import runs by itself
//! and what it found last (`ent_feature_sync`), and which permission definition each imported
//! feature manages (`ent_imported_features`). Migration `0018_stripe_features.sql` (SQLite) /
//! `0017_stripe_features.sql` (PostgreSQL).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow {
    pub connection_id: String,
    pub merchant_account_id: String,
    pub automatic: bool,
    /// Unix milliseconds of the last import (`None`: never).
    pub imported_at: Option<i64>,
    /// The last import's report (JSON text).
    pub report: Option<String>,
    pub updated_at: i64,
}

impl SyncRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        let automatic: i64 = r.try_get("automatic")?;
        Ok(Self {
            connection_id: r.try_get("connection_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            automatic: automatic != 0,
            imported_at: r.try_get("imported_at")?,
            report: r.try_get("report")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub async fn get_sync<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
) -> Result<Option<SyncRow>> {
    let row = sqlx::query("SELECT * FROM ent_feature_sync WHERE connection_id = $1")
        .bind(connection_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(SyncRow::from_row).transpose()
}

pub async fn put_sync<'c, E: Executor<'c, Database = Any>>(db: E, s: &SyncRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_feature_sync (connection_id, merchant_account_id, automatic, imported_at,
            report, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (connection_id) DO UPDATE SET merchant_account_id = excluded.merchant_account_id,
            automatic = excluded.automatic, imported_at = excluded.imported_at,
            report = excluded.report, updated_at = excluded.updated_at",
    )
    .bind(&s.connection_id)
    .bind(&s.merchant_account_id)
    .bind(i64::from(s.automatic))
    .bind(s.imported_at)
    .bind(&s.report)
    .bind(s.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRow {
    pub connection_id: String,
    pub feature_id: String,
    pub merchant_account_id: String,
    pub permission: String,
    pub updated_at: i64,
}

impl ImportedRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            connection_id: r.try_get("connection_id")?,
            feature_id: r.try_get("feature_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            permission: r.try_get("permission")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// Every feature a merchant account's connections imported.
pub async fn imported_of_account<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<ImportedRow>> {
    let rows = sqlx::query(
        "SELECT * FROM ent_imported_features WHERE merchant_account_id = $1
         ORDER BY connection_id, feature_id",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(ImportedRow::from_row).collect()
}

pub async fn put_imported<'c, E: Executor<'c, Database = Any>>(
    db: E,
    r: &ImportedRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_imported_features (connection_id, feature_id, merchant_account_id,
            permission, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (connection_id, feature_id) DO UPDATE SET
            merchant_account_id = excluded.merchant_account_id,
            permission = excluded.permission, updated_at = excluded.updated_at",
    )
    .bind(&r.connection_id)
    .bind(&r.feature_id)
    .bind(&r.merchant_account_id)
    .bind(&r.permission)
    .bind(r.updated_at)
    .execute(db)
    .await?;
    Ok(())
}
