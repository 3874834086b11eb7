//! Idempotency records of the API (SPEC §8): scoped to (merchant account, key id, method,
//! path, key), with a hash of the body; a row without a status is a request still running.

use sqlx::{Any, Executor};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub merchant_account_id: String,
    pub key_id: String,
    pub method: String,
    pub path: String,
    pub idem_key: String,
}

/// A statement whose `$1`…`$5` are the scope's columns, bound here once.
fn scoped<'q>(
    sql: &'static str,
    scope: &'q Scope,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    sqlx::query(sql)
        .bind(scope.merchant_account_id.as_str())
        .bind(scope.key_id.as_str())
        .bind(scope.method.as_str())
        .bind(scope.path.as_str())
        .bind(scope.idem_key.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No record existed: this request runs and must [`finish`] or [`release`] it.
    Started,
    /// Same key, same body, finished: replay this answer.
    Replay { status: u16, body: String },
    /// Same key, same body, still running.
    InProgress,
    /// Same key, another body.
    Mismatch,
}

/// Claims `scope` for a request with `body_hash`. Expired records are replaced.
pub async fn claim<'c, E: Executor<'c, Database = Any> + Copy>(
    db: E,
    scope: &Scope,
    body_hash: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Claim> {
    scoped(
        "DELETE FROM idempotency_keys WHERE merchant_account_id = $1 AND key_id = $2 AND method = $3
            AND path = $4 AND idem_key = $5 AND expires_at <= $6",
        scope,
    )
    .bind(now)
    .execute(db)
    .await?;
    let inserted = scoped(
        "INSERT INTO idempotency_keys (merchant_account_id, key_id, method, path, idem_key, body_hash,
            status_code, response, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8)
         ON CONFLICT (merchant_account_id, key_id, method, path, idem_key) DO NOTHING",
        scope,
    )
    .bind(body_hash)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Started);
    }
    let row: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT body_hash, status_code, response FROM idempotency_keys WHERE merchant_account_id = $1
            AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5",
    )
    .bind(&scope.merchant_account_id)
    .bind(&scope.key_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.idem_key)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        // Deleted between our insert and read (expired and pruned): treat as running.
        None => Claim::InProgress,
        Some((hash, _, _)) if hash != body_hash => Claim::Mismatch,
        // A 5xx left the work unfinished: the same request resumes it, exactly one retry at a
        // time (the UPDATE is the lock).
        Some((_, Some(RESUMABLE), _)) => {
            let taken = scoped(
                "UPDATE idempotency_keys SET status_code = NULL WHERE merchant_account_id = $1
                    AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5 AND status_code = $6",
                scope,
            )
            .bind(RESUMABLE)
            .execute(db)
            .await?;
            if taken.rows_affected() == 1 {
                Claim::Started
            } else {
                Claim::InProgress
            }
        }
        Some((_, Some(status), Some(body))) => Claim::Replay {
            status: status as u16,
            body,
        },
        Some(_) => Claim::InProgress,
    })
}

/// Stores the answer of a finished request under its key.
pub async fn finish<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    status: u16,
    body: &str,
) -> Result<()> {
    scoped(
        "UPDATE idempotency_keys SET status_code = $6, response = $7 WHERE merchant_account_id = $1
            AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5",
        scope,
    )
    .bind(status as i64)
    .bind(body)
    .execute(db)
    .await?;
    Ok(())
}

/// Status stored for a request that ended in a 5xx: its answer is not kept, and the same
/// request (same body) may run again to resume the work; another body is still a mismatch.
const RESUMABLE: i64 = 0;

/// Marks a claim resumable (5xx answers are not stored, so a retry resumes the work).
pub async fn release<'c, E: Executor<'c, Database = Any>>(db: E, scope: &Scope) -> Result<()> {
    scoped(
        "UPDATE idempotency_keys SET status_code = $6, response = NULL WHERE merchant_account_id = $1
            AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5",
        scope,
    )
    .bind(RESUMABLE)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes expired records.
pub async fn prune<'c, E: Executor<'c, Database = Any>>(db: E, now: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE expires_at <= $1 AND status_code IS NOT NULL",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
