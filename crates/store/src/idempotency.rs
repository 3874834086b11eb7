//! Idempotency records of the API (SPEC §8): scoped to (merchant account, key id, method,
//! path, key), with a hash of the body. A row without a status is a request still running; it
//! holds the key under a lease (`lease_owner`, `lease_expires_at`) that the request renews
//! while it runs, so the claim of a request whose process died lapses and a retry takes it
//! over. Answers are stored sealed by the caller (`response_enc`).

use sqlx::{Any, Executor};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub merchant_account_id: String,
    pub key_id: String,
    pub method: String,
    pub path: String,
    pub idem_key: String,
}

impl Scope {
    /// The record's identity as one string (what a sealed answer is bound to).
    pub fn row_id(&self) -> String {
        format!(
            "idempotency\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.merchant_account_id, self.key_id, self.method, self.path, self.idem_key
        )
    }
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

/// The answer kept for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Sealed by the caller (every answer stored by this version).
    Sealed(Vec<u8>),
    /// In clear: an answer stored before answers were sealed.
    Clear(String),
}

/// body_hash, status_code, response, response_enc, lease_expires_at
type RecordRow = (String, Option<i64>, Option<String>, Option<Vec<u8>>, i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the key (a new record, or one whose earlier request stopped without
    /// an answer): it must [`finish`] or [`release`] it, and [`renew`] the lease meanwhile.
    Started,
    /// Same key, same body, finished: replay this answer.
    Replay { status: u16, body: Stored },
    /// Same key, same body, another request holds it and its lease has not lapsed.
    InProgress,
    /// Same key, another body.
    Mismatch,
}

/// The lease a claim is held under: who holds it, and until when unless renewed.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// Random, one per request.
    pub owner: &'a str,
    /// Unix ms at which it lapses.
    pub until: i64,
}

/// Claims `scope` for a request with `body_hash` under `lease`. Expired records are replaced;
/// a record left without an answer (a 5xx, a request dropped or whose lease lapsed) is taken
/// over by the same request (same body).
pub async fn claim<'c, E: Executor<'c, Database = Any> + Copy>(
    db: E,
    scope: &Scope,
    body_hash: &str,
    lease: Lease<'_>,
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
            status_code, response, created_at, expires_at, lease_owner, lease_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, $9, $10)
         ON CONFLICT (merchant_account_id, key_id, method, path, idem_key) DO NOTHING",
        scope,
    )
    .bind(body_hash)
    .bind(now)
    .bind(now + ttl_ms)
    .bind(lease.owner)
    .bind(lease.until)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Started);
    }
    let row: Option<RecordRow> = sqlx::query_as(
        "SELECT body_hash, status_code, response, response_enc, lease_expires_at
               FROM idempotency_keys WHERE merchant_account_id = $1
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
        Some((hash, ..)) if hash != body_hash => Claim::Mismatch,
        // Left unfinished: a 5xx, a request dropped, or a lease that lapsed (its process
        // died). The same request resumes the work, exactly one retry at a time (the UPDATE
        // is the lock).
        Some((_, status, _, _, lease_expires_at))
            if status == Some(RESUMABLE) || (status.is_none() && lease_expires_at <= now) =>
        {
            let taken = scoped(
                "UPDATE idempotency_keys SET status_code = NULL, lease_owner = $6, lease_expires_at = $7
                  WHERE merchant_account_id = $1 AND key_id = $2 AND method = $3 AND path = $4
                    AND idem_key = $5
                    AND (status_code = $8 OR (status_code IS NULL AND lease_expires_at <= $9))",
                scope,
            )
            .bind(lease.owner)
            .bind(lease.until)
            .bind(RESUMABLE)
            .bind(now)
            .execute(db)
            .await?;
            if taken.rows_affected() == 1 {
                Claim::Started
            } else {
                Claim::InProgress
            }
        }
        Some((_, Some(status), _, Some(sealed), _)) => Claim::Replay {
            status: status as u16,
            body: Stored::Sealed(sealed),
        },
        Some((_, Some(status), Some(body), None, _)) => Claim::Replay {
            status: status as u16,
            body: Stored::Clear(body),
        },
        Some(_) => Claim::InProgress,
    })
}

/// Pushes the lease of a running request to `until`; `false` if `owner` no longer holds the
/// claim (it lapsed and a retry took it over, or it was released).
pub async fn renew<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    owner: &str,
    until: i64,
) -> Result<bool> {
    let done = scoped(
        "UPDATE idempotency_keys SET lease_expires_at = $7 WHERE merchant_account_id = $1
            AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5
            AND lease_owner = $6 AND status_code IS NULL",
        scope,
    )
    .bind(owner)
    .bind(until)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the (sealed) answer of a finished request under its key; `false` if `owner` no
/// longer held the claim (nothing is stored then).
pub async fn finish<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    owner: &str,
    status: u16,
    sealed: &[u8],
) -> Result<bool> {
    let done = scoped(
        "UPDATE idempotency_keys SET status_code = $7, response = NULL, response_enc = $8,
                lease_owner = NULL
          WHERE merchant_account_id = $1 AND key_id = $2 AND method = $3 AND path = $4
            AND idem_key = $5 AND lease_owner = $6 AND status_code IS NULL",
        scope,
    )
    .bind(owner)
    .bind(status as i64)
    .bind(sealed)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Status stored for a request that ended without an answer to keep (a 5xx, or dropped): the
/// same request (same body) may run again to resume the work; another body is still a
/// mismatch.
const RESUMABLE: i64 = 0;

/// Marks a claim resumable (5xx answers are not stored, and a request dropped before its
/// answer leaves none), so a retry resumes the work at once. Only `owner`'s claim.
pub async fn release<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    owner: &str,
) -> Result<()> {
    scoped(
        "UPDATE idempotency_keys SET status_code = $7, response = NULL, response_enc = NULL,
                lease_owner = NULL
          WHERE merchant_account_id = $1 AND key_id = $2 AND method = $3 AND path = $4
            AND idem_key = $5 AND lease_owner = $6 AND status_code IS NULL",
        scope,
    )
    .bind(owner)
    .bind(RESUMABLE)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes expired records: answered ones, and unanswered ones whose lease lapsed too.
pub async fn prune<'c, E: Executor<'c, Database = Any>>(db: E, now: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE expires_at <= $1
            AND (status_code IS NOT NULL OR lease_expires_at <= $1)",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` answers stored in clear (before answers were sealed), with their records.
pub async fn clear_answers<'c, E: Executor<'c, Database = Any>>(
    db: E,
    limit: i64,
) -> Result<Vec<(Scope, String)>> {
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT merchant_account_id, key_id, method, path, idem_key, response
           FROM idempotency_keys WHERE response IS NOT NULL ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(merchant_account_id, key_id, method, path, idem_key, response)| {
                (
                    Scope {
                        merchant_account_id,
                        key_id,
                        method,
                        path,
                        idem_key,
                    },
                    response,
                )
            },
        )
        .collect())
}

/// Replaces an answer kept in clear with its sealed form.
pub async fn seal_answer<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    sealed: &[u8],
) -> Result<()> {
    scoped(
        "UPDATE idempotency_keys SET response = NULL, response_enc = $6
          WHERE merchant_account_id = $1 AND key_id = $2 AND method = $3 AND path = $4
            AND idem_key = $5 AND response IS NOT NULL",
        scope,
    )
    .bind(sealed)
    .execute(db)
    .await?;
    Ok(())
}

/// body_hash, status_code, response, response_enc, lease_expires_at, expires_at
type LookupRow = (
    String,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    i64,
);

/// For a request that writes its answer in the transaction of its work ([`put_answer`]):
/// what the record of `scope` says, read inside that transaction and writing nothing.
/// [`Claim::Started`] means run the work (no record, an expired one, or one left without an
/// answer by an earlier request); the others as [`claim`] gives them.
pub async fn lookup<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    body_hash: &str,
    now: i64,
) -> Result<Claim> {
    let row: Option<LookupRow> = sqlx::query_as(
        "SELECT body_hash, status_code, response, response_enc, lease_expires_at, expires_at
           FROM idempotency_keys WHERE merchant_account_id = $1
            AND key_id = $2 AND method = $3 AND path = $4 AND idem_key = $5",
    )
    .bind(&scope.merchant_account_id)
    .bind(&scope.key_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.idem_key)
    .fetch_optional(db)
    .await?;
    Ok(claim_of(row, body_hash, now))
}

/// What a record read by [`lookup`] says (see there).
fn claim_of(row: Option<LookupRow>, body_hash: &str, now: i64) -> Claim {
    match row {
        None => Claim::Started,
        Some((.., expires_at)) if expires_at <= now => Claim::Started,
        Some((hash, ..)) if hash != body_hash => Claim::Mismatch,
        Some((_, status, _, _, lease_expires_at, _))
            if status == Some(RESUMABLE) || (status.is_none() && lease_expires_at <= now) =>
        {
            Claim::Started
        }
        Some((_, Some(status), _, Some(sealed), ..)) => Claim::Replay {
            status: status as u16,
            body: Stored::Sealed(sealed),
        },
        Some((_, Some(status), Some(body), None, ..)) => Claim::Replay {
            status: status as u16,
            body: Stored::Clear(body),
        },
        Some(_) => Claim::InProgress,
    }
}

/// SQLite: [`lookup`] of several records (each a scope and the hash of its request's body) in
/// one statement that answers one row (the records found, as a JSON array); in order.
pub async fn lookup_many(
    db: &mut crate::Conn,
    keys: &[(&Scope, &str)],
    now: i64,
) -> Result<Vec<Claim>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<[&str; 5]> = keys
        .iter()
        .map(|(s, _)| {
            [
                s.merchant_account_id.as_str(),
                s.key_id.as_str(),
                s.method.as_str(),
                s.path.as_str(),
                s.idem_key.as_str(),
            ]
        })
        .collect();
    let list = serde_json::to_string(&list)
        .map_err(|e| crate::StoreError::Corrupt(format!("idempotency keys: {e}")))?;
    let found: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(k.key, i.body_hash, i.status_code, i.response,
                CASE WHEN i.response_enc IS NULL THEN NULL ELSE hex(i.response_enc) END,
                i.lease_expires_at, i.expires_at))
           FROM json_each($1) k JOIN idempotency_keys i
             ON i.merchant_account_id = k.value ->> 0 AND i.key_id = k.value ->> 1
            AND i.method = k.value ->> 2 AND i.path = k.value ->> 3 AND i.idem_key = k.value ->> 4",
    )
    .bind(list)
    .fetch_one(&mut *db)
    .await?;
    type Found = (
        usize,
        String,
        Option<i64>,
        Option<String>,
        Option<String>,
        i64,
        i64,
    );
    let found: Vec<Found> = crate::query::json_array(&found, "idempotency records")?;
    let mut rows: Vec<Option<LookupRow>> = vec![None; keys.len()];
    for (i, hash, status, response, sealed, lease_expires_at, expires_at) in found {
        let sealed = sealed.map(|h| unhex(&h)).transpose()?;
        if let Some(slot) = rows.get_mut(i) {
            *slot = Some((hash, status, response, sealed, lease_expires_at, expires_at));
        }
    }
    Ok(rows
        .into_iter()
        .zip(keys)
        .map(|(row, (_, body_hash))| claim_of(row, body_hash, now))
        .collect())
}

/// The bytes of SQLite's `hex()`.
fn unhex(text: &str) -> Result<Vec<u8>> {
    let bad = || crate::StoreError::Corrupt("a sealed idempotency answer".into());
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    text.chunks(2)
        .map(|p| Ok((digit(p[0]).ok_or_else(bad)? << 4) | digit(p[1]).ok_or_else(bad)?))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// An answer to keep (see [`put_answers`]).
pub struct Answer<'a> {
    pub scope: &'a Scope,
    pub body_hash: &'a str,
    pub status: u16,
    pub sealed: &'a [u8],
}

/// SQLite: [`put_answer`] of several answers in one statement; how many were kept (fewer than
/// given when a record was there that may not be replaced).
pub async fn put_answers(
    db: &mut crate::Conn,
    answers: &[Answer<'_>],
    now: i64,
    ttl_ms: i64,
) -> Result<u64> {
    if answers.is_empty() {
        return Ok(0);
    }
    let list: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| {
            serde_json::json!([
                a.scope.merchant_account_id,
                a.scope.key_id,
                a.scope.method,
                a.scope.path,
                a.scope.idem_key,
                a.body_hash,
                a.status,
                hex(a.sealed)
            ])
        })
        .collect();
    let list = serde_json::to_string(&list)
        .map_err(|e| crate::StoreError::Corrupt(format!("idempotency answers: {e}")))?;
    let done = sqlx::query(
        "INSERT INTO idempotency_keys (merchant_account_id, key_id, method, path, idem_key, body_hash,
            status_code, response, response_enc, created_at, expires_at, lease_owner,
            lease_expires_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
            value ->> 6, NULL, unhex(value ->> 7), $2, $3, NULL, 0
           FROM json_each($1) WHERE true ORDER BY key
         ON CONFLICT (merchant_account_id, key_id, method, path, idem_key) DO UPDATE SET
            body_hash = excluded.body_hash, status_code = excluded.status_code, response = NULL,
            response_enc = excluded.response_enc, created_at = excluded.created_at,
            expires_at = excluded.expires_at, lease_owner = NULL, lease_expires_at = 0
         WHERE idempotency_keys.expires_at <= $2
            OR (idempotency_keys.body_hash = excluded.body_hash
                AND (idempotency_keys.status_code = $4
                     OR (idempotency_keys.status_code IS NULL
                         AND idempotency_keys.lease_expires_at <= $2)))",
    )
    .bind(list)
    .bind(now)
    .bind(now + ttl_ms)
    .bind(RESUMABLE)
    .execute(&mut *db)
    .await?;
    Ok(done.rows_affected())
}

/// Stores the (sealed) answer of a request whose work ran in this same transaction: a new
/// record, or in place of one [`lookup`] let it run over (expired, or left without an
/// answer). `false` when a record it may not replace is there (on PostgreSQL, another request
/// with the key committed meanwhile): nothing is written, and the caller rolls its work back.
#[allow(clippy::too_many_arguments)]
pub async fn put_answer<'c, E: Executor<'c, Database = Any>>(
    db: E,
    scope: &Scope,
    body_hash: &str,
    status: u16,
    sealed: &[u8],
    now: i64,
    ttl_ms: i64,
) -> Result<bool> {
    let done = scoped(
        "INSERT INTO idempotency_keys (merchant_account_id, key_id, method, path, idem_key, body_hash,
            status_code, response, response_enc, created_at, expires_at, lease_owner,
            lease_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, NULL, 0)
         ON CONFLICT (merchant_account_id, key_id, method, path, idem_key) DO UPDATE SET
            body_hash = excluded.body_hash, status_code = excluded.status_code, response = NULL,
            response_enc = excluded.response_enc, created_at = excluded.created_at,
            expires_at = excluded.expires_at, lease_owner = NULL, lease_expires_at = 0
         WHERE idempotency_keys.expires_at <= $9
            OR (idempotency_keys.body_hash = excluded.body_hash
                AND (idempotency_keys.status_code = $11
                     OR (idempotency_keys.status_code IS NULL
                         AND idempotency_keys.lease_expires_at <= $9)))",
        scope,
    )
    .bind(body_hash)
    .bind(status as i64)
    .bind(sealed)
    .bind(now)
    .bind(now + ttl_ms)
    .bind(RESUMABLE)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
