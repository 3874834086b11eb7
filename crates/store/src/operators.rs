//! Dashboard operators, their sessions and failed-login counters (SPEC §10).
//!
//! Sessions are stored under the SHA-256 of their id (the cookie), so a copy of the database
//! does not let anyone take over a live session.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::Result;

#[derive(Debug, Clone)]
pub struct OperatorRow {
    pub id: String,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OperatorRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            password_hash: r.try_get("password_hash")?,
            failed_logins: r.try_get("failed_logins")?,
            locked_until: r.try_get::<Option<i64>, _>("locked_until")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id_hash: String,
    pub operator_id: String,
    pub merchant_account_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

impl SessionRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id_hash: r.try_get("id_hash")?,
            operator_id: r.try_get("operator_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            created_at: r.try_get("created_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            expires_at: r.try_get("expires_at")?,
        })
    }
}

pub async fn insert_operator<'c, E: Executor<'c, Database = Any>>(
    db: E,
    o: &OperatorRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO operators (id, username, password_hash, failed_logins, locked_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&o.id)
    .bind(&o.username)
    .bind(&o.password_hash)
    .bind(o.failed_logins)
    .bind(o.locked_until)
    .bind(o.created_at)
    .bind(o.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Replaces an operator's password hash and lifts any lockout; `false` when there is no such
/// operator.
pub async fn set_password<'c, E: Executor<'c, Database = Any>>(
    db: E,
    username: &str,
    password_hash: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE operators SET password_hash = $2, failed_logins = 0, locked_until = NULL,
             updated_at = $3 WHERE username = $1",
    )
    .bind(username)
    .bind(password_hash)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn by_username<'c, E: Executor<'c, Database = Any>>(
    db: E,
    username: &str,
) -> Result<Option<OperatorRow>> {
    let row = sqlx::query("SELECT * FROM operators WHERE username = $1")
        .bind(username)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(OperatorRow::from_row).transpose()
}

pub async fn get<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<OperatorRow>> {
    let row = sqlx::query("SELECT * FROM operators WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(OperatorRow::from_row).transpose()
}

pub async fn list<'c, E: Executor<'c, Database = Any>>(db: E) -> Result<Vec<OperatorRow>> {
    let rows = sqlx::query("SELECT * FROM operators ORDER BY username")
        .fetch_all(db)
        .await?;
    rows.iter().map(OperatorRow::from_row).collect()
}

/// Counts a login attempt of the operator before its password is checked, in one statement, so
/// that simultaneous attempts each count and none slips past the limit. The attempt is refused
/// (`None`) while the operator is locked; the `max`-th consecutive attempt locks the operator
/// until `lock_until` (a successful one then lifts it with [`reset_failures`]). Returns the
/// attempt's number among the consecutive ones.
pub async fn reserve_attempt<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    max: i64,
    lock_until: i64,
    now: i64,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        "UPDATE operators SET failed_logins = failed_logins + 1,
             locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END,
             updated_at = $4
         WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $4)
         RETURNING failed_logins",
    )
    .bind(id)
    .bind(max)
    .bind(lock_until)
    .bind(now)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok(Some(r.try_get("failed_logins")?)),
        None => Ok(None),
    }
}

pub async fn reset_failures<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE operators SET failed_logins = 0, locked_until = NULL, updated_at = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The failures counted for a client address: (failures, window start, locked until).
pub async fn address_failures<'c, E: Executor<'c, Database = Any>>(
    db: E,
    address: &str,
) -> Result<Option<(i64, i64, Option<i64>)>> {
    let row = sqlx::query(
        "SELECT failures, window_start, locked_until FROM login_failures WHERE address = $1",
    )
    .bind(address)
    .fetch_optional(db)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((
            r.try_get("failures")?,
            r.try_get("window_start")?,
            r.try_get::<Option<i64>, _>("locked_until")?,
        ))),
    }
}

/// Counts a login attempt from `address` before its password is checked, in one statement (so
/// that simultaneous attempts each count: no read-modify-write to lose updates). A window of
/// `window_ms` starts at the first attempt; the `max`-th attempt within it locks the address
/// for `window_ms`, and attempts go on being counted while it is locked. Returns the attempt's
/// number in its window: above `max`, the attempt must be refused.
pub async fn count_address_attempt<'c, E: Executor<'c, Database = Any>>(
    db: E,
    address: &str,
    now: i64,
    window_ms: i64,
    max: i64,
) -> Result<i64> {
    // `fresh`: the window is over and no lock holds, so this attempt starts a new window.
    const FRESH: &str = "(login_failures.window_start + $3 <= $2
        AND (login_failures.locked_until IS NULL OR login_failures.locked_until <= $2))";
    let sql = format!(
        "INSERT INTO login_failures (address, failures, window_start, locked_until)
         VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $2 + $3 ELSE NULL END)
         ON CONFLICT (address) DO UPDATE SET
             failures = CASE WHEN {FRESH} THEN 1 ELSE login_failures.failures + 1 END,
             window_start = CASE WHEN {FRESH} THEN $2 ELSE login_failures.window_start END,
             locked_until = CASE
                 WHEN {FRESH} THEN CASE WHEN 1 >= $4 THEN $2 + $3 ELSE NULL END
                 WHEN login_failures.locked_until > $2 THEN login_failures.locked_until
                 WHEN login_failures.failures + 1 >= $4 THEN $2 + $3
                 ELSE login_failures.locked_until END
         RETURNING failures"
    );
    // Built from constants only.
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address)
        .bind(now)
        .bind(window_ms)
        .bind(max)
        .fetch_one(db)
        .await?;
    Ok(row.try_get("failures")?)
}

/// Takes back an attempt counted by [`count_address_attempt`] that turned out to be a successful
/// login (only failures count against an address); a lock that only it caused is lifted.
pub async fn forgive_address_attempt<'c, E: Executor<'c, Database = Any>>(
    db: E,
    address: &str,
    max: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE login_failures SET failures = failures - 1,
             locked_until = CASE WHEN failures - 1 >= $2 THEN locked_until ELSE NULL END
         WHERE address = $1 AND failures > 0",
    )
    .bind(address)
    .bind(max)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_session<'c, E: Executor<'c, Database = Any>>(
    db: E,
    s: &SessionRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO operator_sessions (id_hash, operator_id, merchant_account_id, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.id_hash)
    .bind(&s.operator_id)
    .bind(&s.merchant_account_id)
    .bind(s.created_at)
    .bind(s.last_seen_at)
    .bind(s.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_session<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id_hash: &str,
) -> Result<Option<SessionRow>> {
    let row = sqlx::query("SELECT * FROM operator_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(SessionRow::from_row).transpose()
}

/// Marks the session used now (its idle timeout starts again).
pub async fn touch_session<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id_hash: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE operator_sessions SET last_seen_at = $2 WHERE id_hash = $1")
        .bind(id_hash)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_session_account<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id_hash: &str,
    merchant_account_id: &str,
) -> Result<()> {
    sqlx::query("UPDATE operator_sessions SET merchant_account_id = $2 WHERE id_hash = $1")
        .bind(id_hash)
        .bind(merchant_account_id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete_session<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id_hash: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM operator_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Removes sessions past their absolute end or idle for longer than `idle_ms`.
pub async fn prune_sessions<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
    idle_ms: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM operator_sessions WHERE expires_at <= $1 OR last_seen_at + $2 <= $1",
    )
    .bind(now)
    .bind(idle_ms)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
