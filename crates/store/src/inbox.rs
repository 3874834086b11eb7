//! The inbox of Stripe events (SPEC §4): rows written before the webhook is answered, claimed
//! by workers (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite), applied
//! once, retried with backoff, dead-lettered, listed and replayed.
//!
//! An event is stored in `webhook_events` (its status and outcome) and, while it waits to be
//! applied (`received` or `failed`), in `webhook_waiting` (its next attempt, lease and attempt
//! count): claims lease rows there, and an event's waiting row goes away in the commit that
//! gives it a final status. So `webhook_events` is written once per attempt and no index of it
//! reads a column that changes: on PostgreSQL each update stays on its page (heap-only) and
//! needs no VACUUM. What is read of an event (attempts, next attempt, lease) comes from its
//! waiting row while it has one ([`READ`]).

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Arguments, Executor, Row};

use crate::query::Filtered;
use crate::{Backend, Result};

/// Event statuses. `received` and `failed` rows are due for a worker.
pub const RECEIVED: &str = "received";
pub const APPLIED: &str = "applied";
pub const IGNORED: &str = "ignored";
pub const FAILED: &str = "failed";
pub const DEAD: &str = "dead";
pub const STATUSES: [&str; 5] = [RECEIVED, APPLIED, IGNORED, FAILED, DEAD];

#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: String,
    pub connection_id: String,
    pub merchant_account_id: String,
    pub stripe_account: String,
    pub stripe_event_id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub source: String,
    /// Kept in `webhook_event_payloads`; empty where a statement did not read it
    /// ([`claim`]: see [`payloads`]).
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub locked_until: Option<i64>,
    pub note: Option<String>,
    pub stripe_created: Option<i64>,
    pub received_at: i64,
    pub applied_at: Option<i64>,
    pub updated_at: i64,
}

impl InboxRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            connection_id: r.try_get("connection_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            stripe_account: r.try_get("stripe_account")?,
            stripe_event_id: r.try_get("stripe_event_id")?,
            event_type: r.try_get("event_type")?,
            api_version: r.try_get("api_version")?,
            source: r.try_get("source")?,
            payload: match r.try_get("payload") {
                Ok(p) => p,
                Err(sqlx::Error::ColumnNotFound(_)) => String::new(),
                Err(e) => return Err(e.into()),
            },
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            locked_until: r.try_get("locked_until")?,
            note: r.try_get("note")?,
            stripe_created: r.try_get("stripe_created")?,
            received_at: r.try_get("received_at")?,
            applied_at: r.try_get("applied_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, connection_id, merchant_account_id, stripe_account, stripe_event_id, \
    event_type, api_version, source, status, attempts, next_attempt_at, locked_until, \
    note, stripe_created, received_at, applied_at, updated_at";

/// An inbox row's columns as read: the attempt count, next attempt and lease of an event
/// still waiting are its waiting row's (`w`), which claims and retries change.
const READ: &str = "id, e.connection_id, e.merchant_account_id, e.stripe_account, \
    e.stripe_event_id, e.event_type, e.api_version, e.source, e.status, \
    COALESCE(w.attempts, e.attempts) AS attempts, \
    COALESCE(w.next_attempt_at, e.next_attempt_at) AS next_attempt_at, w.locked_until, \
    e.note, e.stripe_created, e.received_at, e.applied_at, e.updated_at";

/// An inbox row with its payload.
fn with_payload() -> String {
    format!(
        "SELECT {READ}, p.payload FROM webhook_events e JOIN webhook_event_payloads p USING (id)
         LEFT JOIN webhook_waiting w USING (id)"
    )
}

/// Rows per multi-row statement at most on PostgreSQL (see [`crate::query::row_chunks`]): a
/// group commit's new events in one statement, outcomes 100 at a time.
const MAX_GROUP_ROWS: usize = 512;
const MAX_ROWS: usize = 100;

/// Stores many events (a group commit's rows) with their payloads, inside the caller's
/// transaction. Returns, per row, whether it is new (`false`: the same event id is stored
/// already for the same connection, or comes earlier in `rows`). Each connection is its own
/// namespace: two connections to one Stripe account (of one merchant account or of two) each
/// store and apply the event Stripe delivers to both, and nothing in the event's body (such as
/// its `account`) chooses where it is deduplicated.
///
/// On SQLite the stored duplicates are read first, in one statement that returns one row
/// (the keys found, as a JSON array), and only the new rows are inserted. A `RETURNING` of
/// the inserted ids came back as a row per event, each handed over from SQLite's connection
/// thread on its own, which cost the writer more than the insert. Nothing can insert between
/// the read and the insert: SQLite has one writer, and a write from another process after
/// the read fails this transaction's insert (which then stores the events one by one). On
/// PostgreSQL, where several writers insert at once, `ON CONFLICT DO NOTHING RETURNING id`, and up to
/// [`ONE_STATEMENT_ROWS`] rows are stored, with their waiting rows and payloads, by one
/// statement, atomic on its own (see [`insert_at_once`]).
pub async fn insert_many(db: &mut crate::Conn, rows: &[&InboxRow]) -> Result<Vec<bool>> {
    let backend = crate::Backend::of(db);
    if backend == Backend::Postgres {
        let mut inserted = std::collections::HashSet::with_capacity(rows.len());
        for chunk in crate::query::row_chunks(backend, rows, ONE_STATEMENT_ROWS) {
            inserted.extend(insert_at_once(db, chunk).await?);
        }
        return Ok(rows.iter().map(|r| inserted.contains(&r.id)).collect());
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let stored = stored_keys(db, rows).await?;
    // A key is new once: stored keys and those seen earlier in `rows` are not.
    let mut seen: std::collections::HashSet<(&str, &str)> = stored
        .iter()
        .map(|(a, e)| (a.as_str(), e.as_str()))
        .collect();
    let news: Vec<bool> = rows
        .iter()
        .map(|r| seen.insert((r.connection_id.as_str(), r.stripe_event_id.as_str())))
        .collect();
    let new: Vec<&InboxRow> = rows
        .iter()
        .zip(&news)
        .filter(|(_, new)| **new)
        .map(|(r, _)| *r)
        .collect();
    for chunk in crate::query::row_chunks(backend, &new, MAX_GROUP_ROWS) {
        insert_rows(db, chunk).await?;
    }
    insert_waiting(db, &new).await?;
    for chunk in crate::query::row_chunks(backend, &new, MAX_GROUP_ROWS) {
        let mut sql = String::from("INSERT INTO webhook_event_payloads (id, payload) VALUES ");
        let mut args = AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 2));
        for e in chunk {
            let _ = args.add(e.id.clone());
            let _ = args.add(e.payload.clone());
        }
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(&mut *db)
            .await?;
    }
    Ok(news)
}

/// The waiting rows of the new events `rows` that are due to be applied (with them, in the
/// caller's transaction).
async fn insert_waiting(db: &mut crate::Conn, rows: &[&InboxRow]) -> Result<()> {
    let backend = crate::Backend::of(db);
    let waiting: Vec<&InboxRow> = rows
        .iter()
        .filter(|r| r.status == RECEIVED || r.status == FAILED)
        .copied()
        .collect();
    for chunk in crate::query::row_chunks(backend, &waiting, MAX_GROUP_ROWS) {
        let mut sql = String::from(
            "INSERT INTO webhook_waiting (id, next_attempt_at, locked_until, attempts) VALUES ",
        );
        let mut args = AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 4));
        for e in chunk {
            let _ = args.add(e.id.clone());
            let _ = args.add(e.next_attempt_at);
            let _ = args.add(e.locked_until);
            let _ = args.add(e.attempts);
        }
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(crate::query::keeps_shapes(backend))
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

/// The most rows [`insert_many`] stores in one statement on PostgreSQL.
pub const ONE_STATEMENT_ROWS: usize = MAX_GROUP_ROWS;

/// PostgreSQL: inserts the new ones of `rows`, their waiting rows (those to apply) and their
/// payloads, in one statement (data-modifying `WITH`s over one `VALUES` list); the ids
/// inserted. On its own, outside a transaction, it is a group commit in one round trip, where
/// `BEGIN`, three inserts and `COMMIT` took five, and one text to parse and plan instead of
/// three.
async fn insert_at_once(db: &mut crate::Conn, rows: &[&InboxRow]) -> Result<Vec<String>> {
    let backend = crate::Backend::of(db);
    let mut args = AnyArguments::default();
    let mut sql = format!("WITH v ({COLUMNS}, payload) AS (VALUES ");
    sql.push_str(&crate::query::value_rows(backend, rows.len(), 18));
    sql.push_str(&format!(
        "), e AS (INSERT INTO webhook_events ({COLUMNS}) SELECT {COLUMNS} FROM v
              ON CONFLICT (connection_id, stripe_event_id) DO NOTHING RETURNING id),
            w AS (INSERT INTO webhook_waiting (id, next_attempt_at, locked_until, attempts)
              SELECT v.id, v.next_attempt_at, v.locked_until, v.attempts FROM v JOIN e USING (id)
              WHERE v.status IN ('{RECEIVED}', '{FAILED}')),
            p AS (INSERT INTO webhook_event_payloads (id, payload)
              SELECT v.id, v.payload FROM v JOIN e USING (id))
         SELECT id FROM e"
    ));
    for e in rows {
        add_row(&mut args, e);
        let _ = args.add(e.payload.clone());
    }
    // Placeholders only (and our own constants); every value is bound. Not kept prepared:
    // its text changes with the number of rows.
    Ok(sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
        .persistent(false)
        .fetch_all(&mut *db)
        .await?)
}

/// Binds the inbox columns of `e` ([`COLUMNS`], in order).
fn add_row(args: &mut AnyArguments, e: &InboxRow) {
    let _ = args.add(e.id.clone());
    let _ = args.add(e.connection_id.clone());
    let _ = args.add(e.merchant_account_id.clone());
    let _ = args.add(e.stripe_account.clone());
    let _ = args.add(e.stripe_event_id.clone());
    let _ = args.add(e.event_type.clone());
    let _ = args.add(e.api_version.clone());
    let _ = args.add(e.source.clone());
    let _ = args.add(e.status.clone());
    let _ = args.add(e.attempts);
    let _ = args.add(e.next_attempt_at);
    let _ = args.add(e.locked_until);
    let _ = args.add(e.note.clone());
    let _ = args.add(e.stripe_created);
    let _ = args.add(e.received_at);
    let _ = args.add(e.applied_at);
    let _ = args.add(e.updated_at);
}

/// SQLite: inserts `rows` (without payloads) in one statement.
async fn insert_rows(db: &mut crate::Conn, rows: &[&InboxRow]) -> Result<()> {
    let backend = crate::Backend::of(db);
    let mut sql = format!("INSERT INTO webhook_events ({COLUMNS}) VALUES ");
    let mut args = AnyArguments::default();
    sql.push_str(&crate::query::value_rows(backend, rows.len(), 17));
    for e in rows {
        add_row(&mut args, e);
    }
    // Placeholders only; every value is bound.
    sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// SQLite: which of `rows`' (connection, event id) keys are stored already, read in one
/// statement through the dedupe index that returns one row.
async fn stored_keys(db: &mut crate::Conn, rows: &[&InboxRow]) -> Result<Vec<(String, String)>> {
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.connection_id.as_str(), r.stripe_event_id.as_str()))
        .collect();
    // Pairs of strings always serialise.
    let keys = serde_json::to_string(&keys).unwrap_or_default();
    let found: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(connection_id, stripe_event_id)) FROM webhook_events
         WHERE (connection_id, stripe_event_id) IN
             (SELECT value ->> 0, value ->> 1 FROM json_each($1))",
    )
    .bind(keys)
    .fetch_one(&mut *db)
    .await?;
    crate::query::json_array(&found, "stored inbox keys")
}

/// [`claimed`]'s statement, its list of ids to fill in (`{list}`).
fn claimed_sql(backend: Backend) -> String {
    // A row without its payload (none is written apart from its row) gets an empty one, which
    // is read as not JSON.
    //
    // On PostgreSQL each event's waiting row is looked up by its key (a lateral subquery that
    // `OFFSET 0` keeps from being merged into a join): as a join, the planner read the whole
    // waiting table and hashed it for every batch (11 ms for 256 events with 11,000 waiting;
    // its cost grew with the backlog).
    let waiting = match backend {
        Backend::Sqlite => "LEFT JOIN webhook_waiting w USING (id)",
        Backend::Postgres => {
            "LEFT JOIN LATERAL (SELECT x.attempts, x.next_attempt_at, x.locked_until
                 FROM webhook_waiting x WHERE x.id = e.id OFFSET 0) w ON true"
        }
    };
    format!(
        "SELECT {READ}, COALESCE(p.payload, '') AS payload FROM webhook_events e
         LEFT JOIN webhook_event_payloads p USING (id) {waiting}
         WHERE id IN ({{list}})"
    )
}

/// The rows `ids` with their payloads, in the order Stripe created their events (a claim
/// returns ids only: the rows are read here, off the writer).
pub async fn claimed(db: &mut crate::Conn, ids: &[&str]) -> Result<Vec<InboxRow>> {
    let sql = claimed_sql(crate::Backend::of(db));
    let rows = crate::query::rows_in_list(db, &sql, &[], ids, 500).await?;
    let mut out = rows
        .iter()
        .map(InboxRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| (a.stripe_created, &a.id).cmp(&(b.stripe_created, &b.id)));
    Ok(out)
}

/// Of `ids`, those still waiting to be applied (with a waiting row), locked inside the caller's
/// transaction (a second worker whose lease ran out finds them done and skips them: applied
/// exactly once).
pub async fn lock_due<'c, E: Executor<'c, Database = Any>>(
    db: E,
    backend: Backend,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    // On SQLite one row holding every id rather than a row per id: sqlx hands SQLite's rows
    // over from its connection thread one at a time, and a batch's few hundred rows cost that
    // thread more in hand-offs than the lookups themselves (measured: 3.9 ms against 2.5 ms
    // per 256 ids). On PostgreSQL a row per id, each locked.
    let (column, lock) = match backend {
        Backend::Sqlite => ("json_group_array(id)", ""),
        Backend::Postgres => ("id", backend.for_update()),
    };
    let list = crate::query::List::new(backend, ids);
    let (sql, args) = list.fill(
        &format!("SELECT {column} FROM webhook_waiting WHERE id IN ({{list}}){lock}"),
        &[],
    );
    let q = sqlx::query_scalar_with::<_, String, _>(sqlx::AssertSqlSafe(sql), args)
        .persistent(list.persistent());
    let due: Vec<String> = match backend {
        Backend::Sqlite => crate::query::json_array(&q.fetch_one(db).await?, "due inbox rows")?,
        Backend::Postgres => q.fetch_all(db).await?,
    };
    Ok(due.into_iter().collect())
}

/// One row's outcome for [`finish_each`]: its id, status, note, next attempt and the number
/// of attempts made (the claim's count).
pub type Outcome<'a> = (&'a str, &'static str, Option<&'a str>, i64, i64);

/// [`finish`] for many rows, each with its own outcome, in [`crate::query::row_chunks`]: each
/// event's row gets its status and outcome; a final one's waiting row is deleted, a failed
/// one's waits for its next attempt, unleased.
pub async fn finish_each(db: &mut crate::Conn, outcomes: &[Outcome<'_>], now: i64) -> Result<()> {
    let backend = crate::Backend::of(db);
    let shapes = crate::query::keeps_shapes(backend);
    for chunk in crate::query::row_chunks(backend, outcomes, MAX_ROWS) {
        let mut sql = String::from(
            "WITH v (id, status, note, next_attempt_at, applied_at, attempts) AS (VALUES ",
        );
        let mut args = AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 6));
        for (id, status, note, next, attempts) in chunk.iter() {
            let applied_at = (*status == APPLIED || *status == IGNORED).then_some(now);
            let _ = args.add(id.to_string());
            let _ = args.add(status.to_string());
            let _ = args.add(note.map(str::to_string));
            let _ = args.add(*next);
            let _ = args.add(applied_at);
            let _ = args.add(*attempts);
        }
        // No index of `webhook_events` reads a column written here: on PostgreSQL the update
        // stays on the row's page (heap-only).
        sql.push_str(&format!(
            ") UPDATE webhook_events SET status = v.status, note = v.note,
                next_attempt_at = v.next_attempt_at,
                applied_at = COALESCE(v.applied_at, webhook_events.applied_at),
                attempts = v.attempts, locked_until = NULL, updated_at = {}
             FROM v WHERE webhook_events.id = v.id",
            crate::query::positional(backend, chunk.len() * 6 + 1, 1)
        ));
        let _ = args.add(now);
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(shapes)
            .execute(&mut *db)
            .await?;

        let done: Vec<&str> = chunk
            .iter()
            .filter(|o| o.1 != FAILED && o.1 != RECEIVED)
            .map(|o| o.0)
            .collect();
        if !done.is_empty() {
            let list = crate::query::List::new(backend, &done);
            let (sql, args) = list.fill("DELETE FROM webhook_waiting WHERE id IN ({list})", &[]);
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .persistent(list.persistent())
                .execute(&mut *db)
                .await?;
        }
        let again: Vec<&Outcome> = chunk
            .iter()
            .filter(|o| o.1 == FAILED || o.1 == RECEIVED)
            .collect();
        for part in crate::query::row_chunks(backend, &again, MAX_ROWS) {
            let mut sql = String::from("WITH v (id, next_attempt_at) AS (VALUES ");
            let mut args = AnyArguments::default();
            sql.push_str(&crate::query::value_rows(backend, part.len(), 2));
            for o in part {
                let _ = args.add(o.0.to_string());
                let _ = args.add(o.3);
            }
            sql.push_str(
                ") UPDATE webhook_waiting SET next_attempt_at = v.next_attempt_at,
                    locked_until = NULL
                 FROM v WHERE webhook_waiting.id = v.id",
            );
            // Placeholders only; every value is bound.
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .persistent(shapes)
                .execute(&mut *db)
                .await?;
        }
    }
    Ok(())
}

/// Claims up to `limit` due rows for `lease_ms`: they are invisible to other workers until
/// the lease ends (a crashed worker's rows come back then). Counts the attempt. Returns the
/// rows' ids; [`claimed`] reads the rows.
///
/// On SQLite the claim is two statements that each return one row: the ids as a JSON array
/// (`json_group_array`), then the update of those rows. SQLite's rows come back from its connection
/// thread one by one through a channel, and a batch's rows with every column cost the writer
/// more than the update itself (the writer is the one thing every SQLite write waits for).
/// Nothing else writes between the two statements: they run on the one write connection, and
/// a second process on the same file could only claim a row twice, which the batch's own
/// check ([`lock_due`]) turns into one application. On PostgreSQL one statement with
/// `FOR UPDATE SKIP LOCKED`, returning the ids.
pub async fn claim(
    db: &mut crate::Conn,
    backend: Backend,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<String>> {
    let until = now + lease_ms;
    // Only our own fixed fragments are formatted in; values are bound.
    let ids = match backend {
        Backend::Postgres => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(claim_sql_postgres()))
                .bind(until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *db)
                .await?
        }
        Backend::Sqlite => {
            let sql = format!(
                "SELECT json_group_array(id) FROM ({})",
                waiting_sql(backend, 1, 2)
            );
            let list: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(limit)
                .fetch_one(&mut *db)
                .await?;
            let ids: Vec<String> = crate::query::json_array(&list, "claimed inbox rows")?;
            if !ids.is_empty() {
                // The update reads the same JSON array of ids.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{CLAIM_UPDATE} WHERE id IN (SELECT value FROM json_each($2))"
                )))
                .bind(until)
                .bind(list)
                .execute(&mut *db)
                .await?;
            }
            ids
        }
    };
    Ok(ids)
}

/// The ids of the first `LIMIT ${limit}` rows due at `${now}`, in claim order.
/// A claim's change: only the waiting row, in columns no index reads (heap-only on
/// PostgreSQL).
const CLAIM_UPDATE: &str = "UPDATE webhook_waiting SET locked_until = $1, attempts = attempts + 1";

/// PostgreSQL's claim, one statement: `$1` the lease's end, `$2` now, `$3` the most rows.
///
/// `= ANY(ARRAY(…))`: the ids are found first, then each row by its primary key. With
/// `IN (…)` the planner joined the two, reading the whole waiting table (a sequential scan
/// and a hash) on every claim, so each claim cost more the larger the backlog (7.9 ms against
/// 2.5 ms with 14,000 events waiting; a long run leaves hundreds of thousands waiting).
fn claim_sql_postgres() -> String {
    format!(
        "{CLAIM_UPDATE} WHERE id = ANY(ARRAY({})) RETURNING id",
        waiting_sql(Backend::Postgres, 2, 3)
    )
}

fn waiting_sql(backend: Backend, now: usize, limit: usize) -> String {
    // The waiting rows in claim order (`webhook_waiting_due`): the claim stops after `limit`
    // of them instead of sorting the whole backlog. SQLite has no statistics to prefer it over
    // the primary key by itself, so it is named there.
    let (index, lock) = match backend {
        Backend::Postgres => ("", " FOR UPDATE SKIP LOCKED"),
        Backend::Sqlite => (" INDEXED BY webhook_waiting_due", ""),
    };
    format!(
        "SELECT id FROM webhook_waiting{index}
         WHERE next_attempt_at <= ${now}
           AND (locked_until IS NULL OR locked_until <= ${now})
         ORDER BY next_attempt_at, id LIMIT ${limit}{lock}"
    )
}

/// Records the outcome of an attempt, the `attempts`th: `applied`/`ignored` (final), or
/// `failed`/`dead` with the time of the next attempt. One commit of its own.
pub async fn finish(
    db: &sqlx::AnyPool,
    id: &str,
    status: &'static str,
    note: Option<&str>,
    next_attempt_at: i64,
    attempts: i64,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    finish_each(
        &mut tx,
        &[(id, status, note, next_attempt_at, attempts)],
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Queues a row to be applied again from its first attempt (replay). One commit of its own.
pub async fn replay(db: &sqlx::AnyPool, id: &str, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    let found = sqlx::query(
        "UPDATE webhook_events SET status = 'received', attempts = 0, next_attempt_at = $1,
            locked_until = NULL, note = NULL, updated_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if found.rows_affected() > 0 {
        sqlx::query(
            "INSERT INTO webhook_waiting (id, next_attempt_at, locked_until, attempts)
             VALUES ($1, $2, NULL, 0)
             ON CONFLICT (id) DO UPDATE SET next_attempt_at = excluded.next_attempt_at,
                locked_until = NULL, attempts = 0",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn get<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    id: &str,
) -> Result<Option<InboxRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{} WHERE id = $1 AND merchant_account_id = $2",
        with_payload()
    )))
    .bind(id)
    .bind(merchant_account_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(InboxRow::from_row).transpose()
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub merchant_account_id: String,
    pub statuses: Vec<String>,
    pub connection_id: Option<String>,
    pub event_type: Option<String>,
    pub stripe_event_id: Option<String>,
    /// Keyset position: ids strictly after (`true`) or before (`false`) this one, newest first.
    pub cursor: Option<(String, bool)>,
    pub limit: i64,
}

/// A page of inbox rows, newest first (ids are time-ordered). Returns `limit + 1` rows at most.
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    db: E,
    f: &ListFilter,
) -> Result<Vec<InboxRow>> {
    let mut q = Filtered::new(&format!("{} WHERE ", with_payload()));
    q.bind_str("merchant_account_id = ?", &f.merchant_account_id);
    q.any_of("status", &f.statuses);
    if let Some(c) = &f.connection_id {
        q.bind_str(" AND connection_id = ?", c);
    }
    if let Some(t) = &f.event_type {
        q.bind_str(" AND event_type = ?", t);
    }
    if let Some(e) = &f.stripe_event_id {
        q.bind_str(" AND stripe_event_id = ?", e);
    }
    let mut order = "DESC";
    if let Some((id, after)) = &f.cursor {
        if *after {
            q.bind_str(" AND id < ?", id);
        } else {
            q.bind_str(" AND id > ?", id);
            order = "ASC";
        }
    }
    q.push(&format!(" ORDER BY id {order} LIMIT {}", f.limit + 1));
    let (sql, args) = q.finish();
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(db)
        .await?;
    let mut out = rows
        .iter()
        .map(InboxRow::from_row)
        .collect::<Result<Vec<_>>>()?;
    if order == "ASC" {
        out.reverse();
    }
    Ok(out)
}

/// How many rows are in each status (metrics, benchmarks, tests).
pub async fn counts<'c, E: Executor<'c, Database = Any>>(db: E) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM webhook_events GROUP BY status")
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
        .collect()
}

/// Deletes final rows received before `cutoff` (rows still waiting are kept).
pub async fn prune<'c, E: Executor<'c, Database = Any>>(db: E, cutoff: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM webhook_events WHERE received_at < $1 AND status IN ('applied', 'ignored', 'dead')",
    )
    .bind(cutoff)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// PostgreSQL: removes the dead versions of deleted and retried waiting rows, and their index
/// entries, from `webhook_waiting` (a `VACUUM` of that table alone, which holds the events
/// waiting to be applied and those deleted since the last one: its cost follows the backlog and
/// the time between two calls, not the size of the inbox), and updates the planner's figures
/// for it. With `events`, the inbox's own tables too (after [`prune`] deleted rows from them).
/// Nothing on SQLite, whose deleted rows leave no versions behind.
pub async fn vacuum(store: &crate::Store, events: bool) -> Result<()> {
    if store.backend() != Backend::Postgres {
        return Ok(());
    }
    let sql = match events {
        false => "VACUUM (ANALYZE) webhook_waiting",
        true => "VACUUM (ANALYZE) webhook_waiting, webhook_events, webhook_event_payloads",
    };
    // `VACUUM` cannot run inside a transaction block, nor as a prepared statement's portal in
    // some drivers: sent as a simple query.
    sqlx::raw_sql(sql).execute(store.writer()).await?;
    Ok(())
}

/// Reconcile's resume point for one connection.
#[derive(Debug, Clone)]
pub struct SyncCursor {
    pub connection_id: String,
    pub last_event_at: Option<i64>,
    pub last_event_id: Option<String>,
    pub last_sync_at: i64,
    pub last_report: String,
}

pub async fn get_cursor<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
) -> Result<Option<SyncCursor>> {
    let row = sqlx::query("SELECT * FROM connection_sync WHERE connection_id = $1")
        .bind(connection_id)
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        Ok(SyncCursor {
            connection_id: r.try_get("connection_id")?,
            last_event_at: r.try_get("last_event_at")?,
            last_event_id: r.try_get("last_event_id")?,
            last_sync_at: r.try_get("last_sync_at")?,
            last_report: r.try_get("last_report")?,
        })
    })
    .transpose()
}

pub async fn put_cursor<'c, E: Executor<'c, Database = Any>>(db: E, c: &SyncCursor) -> Result<()> {
    sqlx::query(
        "INSERT INTO connection_sync (connection_id, last_event_at, last_event_id, last_sync_at, last_report)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (connection_id) DO UPDATE SET last_event_at = excluded.last_event_at,
            last_event_id = excluded.last_event_id, last_sync_at = excluded.last_sync_at,
            last_report = excluded.last_report",
    )
    .bind(&c.connection_id)
    .bind(c.last_event_at)
    .bind(&c.last_event_id)
    .bind(c.last_sync_at)
    .bind(&c.last_report)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A migrated SQLite store in a temporary directory (kept while the directory lives).
    async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    /// A claim reads the first waiting rows in order and stops: it never sorts the backlog
    /// (which made each claim cost more the more rows were waiting).
    #[tokio::test]
    async fn a_claim_reads_the_waiting_rows_in_order_without_sorting_them() {
        let (_dir, store) = sqlite_store().await;
        let mut conn = store.hold_reader().await.unwrap();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            waiting_sql(Backend::Sqlite, 1, 2)
        )))
        .bind(1_i64)
        .bind(256_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let steps: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let steps = steps.join(" | ");
        assert!(steps.contains("USING INDEX webhook_waiting_due"), "{steps}");
        assert!(!steps.contains("TEMP B-TREE"), "{steps}");
    }

    /// PostgreSQL: a claim, and the read of the claimed batch, go through the waiting table's
    /// indexes whatever the backlog (the first due rows in order, then each by its primary
    /// key), never read all of it.
    #[tokio::test]
    async fn a_postgres_claim_never_reads_the_whole_backlog() {
        let Some((_store, mut conn)) = postgres_writer().await else {
            return;
        };
        // A backlog of 5,000 waiting events, with the planner's statistics up to date.
        let rows: Vec<InboxRow> = (1..=5000)
            .map(|n| {
                let mut r = row(&format!("w{n}"));
                r.next_attempt_at = n;
                r
            })
            .collect();
        for chunk in rows.chunks(500) {
            let chunk: Vec<&InboxRow> = chunk.iter().collect();
            insert_many(&mut conn, &chunk).await.unwrap();
        }
        sqlx::raw_sql("ANALYZE webhook_waiting, webhook_events, webhook_event_payloads")
            .execute(&mut *conn)
            .await
            .unwrap();
        // PostgreSQL's plan of `sql` with `args`, a line per step.
        async fn plan_of(conn: &mut crate::Conn, sql: String, args: AnyArguments) -> String {
            let lines: Vec<String> =
                sqlx::query_scalar_with(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")), args)
                    .fetch_all(conn)
                    .await
                    .unwrap();
            lines.join("\n")
        }
        let mut args = AnyArguments::default();
        for v in [10_000_i64, 6_000, 256] {
            args.add(v).unwrap();
        }
        let plan = plan_of(&mut conn, claim_sql_postgres(), args).await;
        assert!(!plan.contains("Seq Scan on webhook_waiting"), "{plan}");
        assert!(plan.contains("webhook_waiting_due"), "{plan}");
        assert!(plan.contains("webhook_waiting_pkey"), "{plan}");
        // It claims the first 256 in order...
        let ids = claim(&mut conn, Backend::Postgres, 6_000, 100, 256)
            .await
            .unwrap();
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| id[1..].parse::<i64>().unwrap());
        let first: Vec<String> = (1..=256).map(|n| format!("w{n}")).collect();
        assert_eq!(sorted, first);
        // ... and the batch is read by its keys.
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let list = crate::query::List::new(Backend::Postgres, &ids);
        let (sql, args) = list.fill(&claimed_sql(Backend::Postgres), &[]);
        let plan = plan_of(&mut conn, sql, args).await;
        assert!(!plan.contains("Seq Scan on webhook_waiting"), "{plan}");
        assert!(plan.contains("webhook_waiting_pkey"), "{plan}");
        let batch = claimed(&mut conn, &ids).await.unwrap();
        assert_eq!(batch.len(), 256);
        assert!(
            batch
                .iter()
                .all(|r| r.attempts == 1 && r.locked_until == Some(6_100))
        );
    }

    /// The write connection of a migrated SQLite store, without foreign keys: the rows'
    /// connection and merchant are not what these tests are about.
    async fn sqlite_writer() -> (tempfile::TempDir, crate::HeldConn) {
        let (dir, store) = sqlite_store().await;
        let mut conn = store.hold_writer().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .unwrap();
        (dir, conn)
    }

    fn row(id: &str) -> InboxRow {
        InboxRow {
            id: id.into(),
            connection_id: "conn".into(),
            merchant_account_id: "acct".into(),
            stripe_account: "acct_1".into(),
            stripe_event_id: format!("evt_{id}"),
            event_type: "charge.succeeded".into(),
            api_version: None,
            source: "webhook".into(),
            payload: format!("{{\"id\": \"evt_{id}\"}}"),
            status: RECEIVED.into(),
            attempts: 0,
            next_attempt_at: 1,
            locked_until: None,
            note: None,
            stripe_created: None,
            received_at: 1,
            applied_at: None,
            updated_at: 1,
        }
    }

    /// A list of ids (`IN (…)`) is one parameter on SQLite, so its statement's text is the same
    /// for any number of ids; it finds exactly the ids given, through the table's index.
    #[tokio::test]
    async fn an_id_list_finds_exactly_its_ids_through_the_index() {
        let (_dir, mut conn) = sqlite_writer().await;
        let new = insert_many(&mut conn, &[&row("a"), &row("b"), &row("c")])
            .await
            .unwrap();
        assert_eq!(new, [true, true, true]);

        let due = lock_due(&mut *conn, Backend::Sqlite, &["a", "zz", "c", "c"])
            .await
            .unwrap();
        let mut due: Vec<String> = due.into_iter().collect();
        due.sort();
        assert_eq!(due, ["a", "c"]);
        let found = claimed(&mut conn, &["c", "b", "zz"]).await.unwrap();
        let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(found[0].payload, "{\"id\": \"evt_b\"}");
        assert_eq!(found[0].stripe_event_id, "evt_b");

        let one = crate::query::List::new(Backend::Sqlite, &["a"]);
        let three = crate::query::List::new(Backend::Sqlite, &["a", "b", "c"]);
        assert_eq!(one.sql(1), three.sql(1));
        let args = three.args(&[]);
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT id FROM webhook_events WHERE id IN ({})",
            three.sql(1)
        );
        let plan: Vec<String> = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("SEARCH webhook_events USING"), "{plan}");
        assert!(!plan.contains("SCAN webhook_events"), "{plan}");
    }

    /// A claim takes the first due rows in order, counts the attempt and leases them: the next
    /// claim takes the rows after them, and the lease's end gives them back.
    #[tokio::test]
    async fn a_claim_leases_the_first_due_rows_and_counts_the_attempt() {
        let (_dir, mut conn) = sqlite_writer().await;
        let mut later = row("a");
        later.next_attempt_at = 5;
        insert_many(&mut conn, &[&later, &row("c"), &row("b")])
            .await
            .unwrap();

        let first = claim(&mut conn, Backend::Sqlite, 1, 100, 2).await.unwrap();
        assert_eq!(first, ["b", "c"]);
        // "a" is not due until 5.
        assert!(
            claim(&mut conn, Backend::Sqlite, 2, 100, 2)
                .await
                .unwrap()
                .is_empty()
        );
        let second = claim(&mut conn, Backend::Sqlite, 5, 100, 2).await.unwrap();
        assert_eq!(second, ["a"]);
        let rows = claimed(&mut conn, &["a", "b", "c"]).await.unwrap();
        for r in &rows {
            assert_eq!(r.attempts, 1, "{}", r.id);
        }
        assert_eq!(
            rows.iter().find(|r| r.id == "b").unwrap().locked_until,
            Some(101)
        );
        // The leases end at 101 and 105.
        assert!(
            claim(&mut conn, Backend::Sqlite, 100, 100, 5)
                .await
                .unwrap()
                .is_empty()
        );
        let again = claim(&mut conn, Backend::Sqlite, 105, 100, 5)
            .await
            .unwrap();
        assert_eq!(again, ["b", "c", "a"]);
    }

    /// A group's event is new unless its (connection, event id) is stored already or comes
    /// earlier in the group; only new events are stored, each with its payload. The Stripe
    /// account an event names does not choose its namespace.
    #[tokio::test]
    async fn a_group_stores_each_event_once() {
        let (_dir, mut conn) = sqlite_writer().await;
        stores_each_event_once(&mut conn).await;
        if let Some((_store, mut conn)) = postgres_writer().await {
            stores_each_event_once(&mut conn).await;
        }
    }

    async fn stores_each_event_once(conn: &mut crate::Conn) {
        let new = insert_many(&mut *conn, &[&row("a"), &row("b")])
            .await
            .unwrap();
        assert_eq!(new, [true, true]);

        // "b" again under another row id; "c" twice in the group; "a" for another connection;
        // "b" again naming another Stripe account.
        let mut b_again = row("b2");
        b_again.stripe_event_id = "evt_b".into();
        let mut c_again = row("c2");
        c_again.stripe_event_id = "evt_c".into();
        let mut a_elsewhere = row("a2");
        a_elsewhere.stripe_event_id = "evt_a".into();
        a_elsewhere.connection_id = "conn_2".into();
        let mut b_other_account = row("b3");
        b_other_account.stripe_event_id = "evt_b".into();
        b_other_account.stripe_account = "acct_2".into();
        let group = [
            &b_again,
            &row("c"),
            &c_again,
            &a_elsewhere,
            &b_other_account,
        ];
        let new = insert_many(&mut *conn, &group).await.unwrap();
        assert_eq!(new, [false, true, false, true, false]);

        let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(stored, ["a", "a2", "b", "c"]);
        let payloads: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_event_payloads")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(payloads, 4);
        let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_waiting")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(waiting, 4);
    }

    /// The write connection keeps a larger page cache than SQLite's default (2 MiB): 8 MiB,
    /// and checkpoints inside its own commits only past 100,000 pages of log (SQLite's
    /// default: 1,000); readers keep 1 MiB each (issue 30's memory bound) and the default log.
    #[tokio::test]
    async fn the_write_connection_has_a_larger_page_cache_and_log() {
        async fn pragma(conn: &mut crate::Conn, sql: &'static str) -> i64 {
            sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
        }
        let (_dir, store) = sqlite_store().await;
        let mut writer = store.hold_writer().await.unwrap();
        assert_eq!(pragma(&mut writer, "PRAGMA cache_size").await, -8192);
        assert_eq!(
            pragma(&mut writer, "PRAGMA wal_autocheckpoint").await,
            100_000
        );
        let mut reader = store.hold_reader().await.unwrap();
        assert_eq!(pragma(&mut reader, "PRAGMA cache_size").await, -1024);
        assert_eq!(pragma(&mut reader, "PRAGMA wal_autocheckpoint").await, 1000);
    }

    /// A migrated PostgreSQL store in a database of its own (`None` when PostgreSQL is
    /// skipped), and its write connection with foreign keys off: the rows' connection and
    /// merchant are not what these tests are about.
    async fn postgres_writer() -> Option<(Store, crate::HeldConn)> {
        if std::env::var("TOLLGATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
            return None;
        }
        let base = std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = Store::connect(&base)
            .await
            .expect("PostgreSQL (set TOLLGATE_TEST_SKIP_POSTGRES=1 to skip)");
        let name = format!("tg_inbox_{}", crate::new_id().replace('-', ""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.writer())
            .await
            .unwrap();
        admin.close().await;
        let (head, _) = base.rsplit_once('/').unwrap();
        let store = Store::connect(&format!("{head}/{name}")).await.unwrap();
        store.migrate().await.unwrap();
        let mut conn = store.hold_writer().await.unwrap();
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut *conn)
            .await
            .unwrap();
        Some((store, conn))
    }

    async fn waiting(conn: &mut crate::Conn) -> Vec<(String, i64, Option<i64>, i64)> {
        sqlx::query_as(
            "SELECT id, next_attempt_at, locked_until, attempts FROM webhook_waiting ORDER BY id",
        )
        .fetch_all(conn)
        .await
        .unwrap()
    }

    /// An event waits in `webhook_waiting` from its insert until its outcome is final: applied,
    /// ignored and dead events leave no waiting row, a failed one keeps its row, unleased, with
    /// its next attempt and attempt count, and is claimed again then; a replay queues an event
    /// again from its first attempt. What is read of each row says the same.
    async fn outcomes_keep_only_the_events_still_to_apply(conn: &mut crate::Conn) {
        let backend = Backend::of(conn);
        insert_many(conn, &[&row("a"), &row("b"), &row("c"), &row("d")])
            .await
            .unwrap();
        assert_eq!(
            waiting(conn).await,
            [
                ("a".to_string(), 1, None, 0),
                ("b".to_string(), 1, None, 0),
                ("c".to_string(), 1, None, 0),
                ("d".to_string(), 1, None, 0),
            ]
        );
        let mut taken = claim(conn, backend, 1, 100, 10).await.unwrap();
        taken.sort();
        assert_eq!(taken, ["a", "b", "c", "d"]);
        finish_each(
            conn,
            &[
                ("a", APPLIED, None, 2, 1),
                ("b", FAILED, Some("Stripe did not answer"), 500, 1),
                ("c", DEAD, Some("gave up"), 2, 1),
                ("d", IGNORED, Some("not ours"), 2, 1),
            ],
            2,
        )
        .await
        .unwrap();
        assert_eq!(waiting(conn).await, [("b".to_string(), 500, None, 1)]);
        let rows = claimed(conn, &["a", "b", "c", "d"]).await.unwrap();
        let of = |id: &str| rows.iter().find(|r| r.id == id).unwrap().clone();
        let (a, b, c, d) = (of("a"), of("b"), of("c"), of("d"));
        assert_eq!(
            (a.status.as_str(), a.attempts, a.locked_until),
            (APPLIED, 1, None)
        );
        assert_eq!(a.applied_at, Some(2));
        assert_eq!(
            (b.status.as_str(), b.attempts, b.next_attempt_at),
            (FAILED, 1, 500)
        );
        assert_eq!(b.locked_until, None);
        assert_eq!(b.note.as_deref(), Some("Stripe did not answer"));
        assert_eq!((c.status.as_str(), c.attempts), (DEAD, 1));
        assert_eq!((d.status.as_str(), d.applied_at), (IGNORED, Some(2)));
        let mut due: Vec<String> = lock_due(&mut *conn, backend, &["a", "b", "c", "d"])
            .await
            .unwrap()
            .into_iter()
            .collect();
        due.sort();
        assert_eq!(due, ["b"]);

        // The failed event is not due before its next attempt, then is claimed once more.
        assert!(claim(conn, backend, 499, 100, 10).await.unwrap().is_empty());
        assert_eq!(claim(conn, backend, 500, 100, 10).await.unwrap(), ["b"]);
        assert_eq!(waiting(conn).await, [("b".to_string(), 500, Some(600), 2)]);
        let b = claimed(conn, &["b"]).await.unwrap().remove(0);
        assert_eq!((b.attempts, b.locked_until), (2, Some(600)));
        finish_each(conn, &[("b", APPLIED, None, 550, 2)], 550)
            .await
            .unwrap();
        assert!(waiting(conn).await.is_empty());
        let counted: std::collections::BTreeMap<String, i64> =
            counts(&mut *conn).await.unwrap().into_iter().collect();
        assert_eq!(counted.get(APPLIED), Some(&2));
        assert_eq!(counted.get(RECEIVED), None);
    }

    #[tokio::test]
    async fn outcomes_keep_only_the_events_still_to_apply_on_sqlite() {
        let (_dir, mut conn) = sqlite_writer().await;
        outcomes_keep_only_the_events_still_to_apply(&mut conn).await;
    }

    #[tokio::test]
    async fn outcomes_keep_only_the_events_still_to_apply_on_postgres() {
        let Some((_store, mut conn)) = postgres_writer().await else {
            return;
        };
        outcomes_keep_only_the_events_still_to_apply(&mut conn).await;
    }

    /// A replay puts a finished event back in the queue from its first attempt, on SQLite and
    /// PostgreSQL; a replay of an event still waiting restarts it.
    #[tokio::test]
    async fn a_replay_queues_the_event_again() {
        let (_dir, store) = sqlite_store().await;
        let mut stores = vec![(None, store)];
        if let Some((pg, conn)) = postgres_writer().await {
            drop(conn);
            stores.push((Some(()), pg));
        }
        for (_, store) in stores {
            let mut conn = store.hold_writer().await.unwrap();
            if store.backend() == Backend::Sqlite {
                sqlx::query("PRAGMA foreign_keys = OFF")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            } else {
                sqlx::query("SET session_replication_role = replica")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            insert_many(&mut conn, &[&row("a"), &row("b")])
                .await
                .unwrap();
            claim(&mut conn, store.backend(), 1, 100, 10).await.unwrap();
            finish_each(&mut conn, &[("a", DEAD, Some("gave up"), 2, 1)], 2)
                .await
                .unwrap();
            drop(conn);
            replay(store.writer(), "a", 700).await.unwrap();
            replay(store.writer(), "b", 700).await.unwrap();
            replay(store.writer(), "zz", 700).await.unwrap();
            let mut conn = store.hold_writer().await.unwrap();
            assert_eq!(
                waiting(&mut conn).await,
                [
                    ("a".to_string(), 700, None, 0),
                    ("b".to_string(), 700, None, 0)
                ],
                "{:?}",
                store.backend()
            );
            let a = claimed(&mut conn, &["a"]).await.unwrap().remove(0);
            assert_eq!((a.status.as_str(), a.attempts, a.note), (RECEIVED, 0, None));
        }
    }

    /// PostgreSQL: once stored, an event's row is only ever updated heap-only (its new version
    /// stays on its page, adds no index entry and needs no VACUUM), and so is the lease of its
    /// waiting row. Read from the transaction's own statistics.
    #[tokio::test]
    async fn postgres_updates_the_inbox_heap_only() {
        let Some((_store, mut conn)) = postgres_writer().await else {
            return;
        };
        let mut tx = crate::begin_on(&mut conn, Backend::Postgres).await.unwrap();
        // Rows of the size the server writes: ids of 36 characters, a Stripe event's id, type
        // and API version.
        let (conn_id, merchant) = (crate::new_id(), crate::new_id());
        let mut rows: Vec<InboxRow> = (0..200).map(|_| row(&crate::new_id())).collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        for (i, r) in rows.iter_mut().enumerate() {
            r.connection_id = conn_id.clone();
            r.merchant_account_id = merchant.clone();
            r.stripe_event_id = format!("evt_1QExample{i:012}");
            r.event_type = "payment_intent.succeeded".into();
            r.api_version = Some("2024-06-20".into());
        }
        let refs: Vec<&InboxRow> = rows.iter().collect();
        insert_many(&mut tx, &refs).await.unwrap();
        let taken = claim(&mut tx, Backend::Postgres, 1, 100, 500)
            .await
            .unwrap();
        assert_eq!(taken.len(), 200);
        let outcomes: Vec<Outcome> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let status = if i % 10 == 0 { FAILED } else { APPLIED };
                (r.id.as_str(), status, Some(NOTE), 5_000, 1)
            })
            .collect();
        finish_each(&mut tx, &outcomes, 2).await.unwrap();
        let (updated, hot): (i64, i64) = sqlx::query_as(
            "SELECT pg_stat_get_xact_tuples_updated('webhook_events'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('webhook_events'::regclass)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!((updated, hot), (200, 200));
        let (updated, hot): (i64, i64) = sqlx::query_as(
            "SELECT pg_stat_get_xact_tuples_updated('webhook_waiting'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('webhook_waiting'::regclass)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        // The claim's 200 leases are heap-only; the 20 retries move their next attempt, which
        // the claim's index reads.
        assert_eq!((updated, hot), (220, 200));
    }

    const NOTE: &str = "nothing new for the transaction";
}
