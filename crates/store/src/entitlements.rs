//! Entitlements storage (SPEC §5): customer links, the Stripe objects seen, the catalogue,
//! per-account policies and the permissions read model.

use sqlx::any::AnyRow;
use sqlx::{Any, Arguments, Executor, Row};

use crate::Result;

// ---- customer links --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub connection_id: String,
    pub stripe_customer_id: String,
    pub merchant_account_id: String,
    pub customid: String,
    pub linked_by: String,
    pub test_clock: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl LinkRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            connection_id: r.try_get("connection_id")?,
            stripe_customer_id: r.try_get("stripe_customer_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            customid: r.try_get("customid")?,
            linked_by: r.try_get("linked_by")?,
            test_clock: r.try_get("test_clock")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub async fn get_link<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    customer: &str,
    lock: &str,
) -> Result<Option<LinkRow>> {
    let sql = format!(
        "SELECT * FROM ent_customers WHERE connection_id = $1 AND stripe_customer_id = $2{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(connection_id)
        .bind(customer)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(LinkRow::from_row).transpose()
}

/// Inserts the link, or moves an existing one to `l.customid`.
pub async fn put_link(db: &mut crate::Conn, l: &LinkRow) -> Result<()> {
    put_links(db, &[l]).await
}

/// [`put_link`] for many links (each customer once), 100 per statement.
pub async fn put_links(db: &mut crate::Conn, links: &[&LinkRow]) -> Result<()> {
    let backend = crate::Backend::of(db);
    for chunk in links.chunks(100) {
        let mut sql = String::from(
            "INSERT INTO ent_customers (connection_id, stripe_customer_id, merchant_account_id,
                customid, linked_by, test_clock, created_at, updated_at) VALUES ",
        );
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 8));
        sql.push_str(
            " ON CONFLICT (connection_id, stripe_customer_id) DO UPDATE SET
                customid = excluded.customid, linked_by = excluded.linked_by,
                test_clock = COALESCE(excluded.test_clock, ent_customers.test_clock),
                updated_at = excluded.updated_at",
        );
        let mut args = sqlx::any::AnyArguments::default();
        for l in chunk {
            let _ = args.add(l.connection_id.clone());
            let _ = args.add(l.stripe_customer_id.clone());
            let _ = args.add(l.merchant_account_id.clone());
            let _ = args.add(l.customid.clone());
            let _ = args.add(l.linked_by.clone());
            let _ = args.add(l.test_clock.clone());
            let _ = args.add(l.created_at);
            let _ = args.add(l.updated_at);
        }
        // Placeholders only; every value is bound. A single link's statement is always the
        // same text, so it is kept in the statement cache.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(chunk.len() == 1)
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

/// The customids whose customers are on test clock `clock` of a connection.
pub async fn customids_on_clock<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    clock: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT customid FROM ent_customers WHERE connection_id = $1 AND test_clock = $2",
    )
    .bind(connection_id)
    .bind(clock)
    .fetch_all(db)
    .await?)
}

pub async fn put_clock<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    id: &str,
    frozen_time: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_test_clocks (connection_id, id, frozen_time, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, id) DO UPDATE SET frozen_time = excluded.frozen_time,
            updated_at = excluded.updated_at
         WHERE excluded.frozen_time >= ent_test_clocks.frozen_time",
    )
    .bind(connection_id)
    .bind(id)
    .bind(frozen_time)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_clock<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    id: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT frozen_time FROM ent_test_clocks WHERE connection_id = $1 AND id = $2",
    )
    .bind(connection_id)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

// ---- Stripe objects --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub connection_id: String,
    pub object_type: String,
    pub object_id: String,
    pub merchant_account_id: String,
    pub stamp_at: i64,
    pub stamp_progress: i64,
    pub stripe_customer_id: Option<String>,
    pub customid: Option<String>,
    pub data: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ObjectRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            connection_id: r.try_get("connection_id")?,
            object_type: r.try_get("object_type")?,
            object_id: r.try_get("object_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            stamp_at: r.try_get("stamp_at")?,
            stamp_progress: r.try_get("stamp_progress")?,
            stripe_customer_id: r.try_get("stripe_customer_id")?,
            customid: r.try_get("customid")?,
            data: r.try_get("data")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// Stores versions of a connection's objects as upserting them one after another would: a
/// version replaces the stored one only if it is newer (stamp, then progress, then contents),
/// and a Stripe customer or customid once known is kept. Returns, per row, whether it tied:
/// the version before it had the same stamp but other contents (two versions of one object
/// from the same second: see the inbox's re-reading of ties).
///
/// One read of what is stored and one upsert per [`WALK_CHUNK`] objects, rather than a read
/// and a write per version (each statement is a round trip while the write lock is held).
pub async fn put_objects(
    db: &mut crate::Conn,
    connection_id: &str,
    rows: &[ObjectRow],
) -> Result<Vec<bool>> {
    let backend = crate::Backend::of(db);
    type Key = (String, String);
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|o| o.object_id.as_str()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let sql = "SELECT * FROM ent_stripe_objects WHERE connection_id = $1 AND object_id IN ({list})";
    let mut current: std::collections::BTreeMap<Key, ObjectRow> = std::collections::BTreeMap::new();
    for r in rows_over_ids(db, sql, connection_id, &ids).await? {
        let o = ObjectRow::from_row(&r)?;
        current.insert((o.object_type.clone(), o.object_id.clone()), o);
    }
    let mut changed: std::collections::BTreeSet<Key> = std::collections::BTreeSet::new();
    let mut ties = Vec::with_capacity(rows.len());
    for o in rows {
        let key = (o.object_type.clone(), o.object_id.clone());
        let Some(c) = current.get_mut(&key) else {
            current.insert(key.clone(), o.clone());
            changed.insert(key);
            ties.push(false);
            continue;
        };
        ties.push(
            c.stamp_at == o.stamp_at && c.stamp_progress == o.stamp_progress && c.data != o.data,
        );
        // Text compares bytewise here and on SQLite; PostgreSQL's collation may order two
        // same-stamp contents otherwise, which its upsert below then decides (a tie, re-read).
        if (o.stamp_at, o.stamp_progress, o.data.as_str())
            > (c.stamp_at, c.stamp_progress, c.data.as_str())
        {
            c.stamp_at = o.stamp_at;
            c.stamp_progress = o.stamp_progress;
            c.stripe_customer_id = o.stripe_customer_id.clone().or(c.stripe_customer_id.take());
            c.customid = o.customid.clone().or(c.customid.take());
            c.data = o.data.clone();
            c.updated_at = o.updated_at;
            changed.insert(key);
        }
    }
    // In key order, so two PostgreSQL writers lock shared rows in one order.
    let finals: Vec<&ObjectRow> = changed.iter().filter_map(|k| current.get(k)).collect();
    for chunk in finals.chunks(WALK_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO ent_stripe_objects (connection_id, object_type, object_id,
                merchant_account_id, stamp_at, stamp_progress, stripe_customer_id, customid, data,
                created_at, updated_at) VALUES ",
        );
        let mut args = sqlx::any::AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 11));
        for o in chunk.iter() {
            let _ = args.add(o.connection_id.clone());
            let _ = args.add(o.object_type.clone());
            let _ = args.add(o.object_id.clone());
            let _ = args.add(o.merchant_account_id.clone());
            let _ = args.add(o.stamp_at);
            let _ = args.add(o.stamp_progress);
            let _ = args.add(o.stripe_customer_id.clone());
            let _ = args.add(o.customid.clone());
            let _ = args.add(o.data.clone());
            let _ = args.add(o.created_at);
            let _ = args.add(o.updated_at);
        }
        sql.push_str(
            " ON CONFLICT (connection_id, object_type, object_id) DO UPDATE SET
                stamp_at = excluded.stamp_at, stamp_progress = excluded.stamp_progress,
                stripe_customer_id = COALESCE(excluded.stripe_customer_id, ent_stripe_objects.stripe_customer_id),
                customid = COALESCE(excluded.customid, ent_stripe_objects.customid),
                data = excluded.data, updated_at = excluded.updated_at
             WHERE (excluded.stamp_at, excluded.stamp_progress, excluded.data)
                 > (ent_stripe_objects.stamp_at, ent_stripe_objects.stamp_progress, ent_stripe_objects.data)",
        );
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(false)
            .execute(&mut *db)
            .await?;
    }
    Ok(ties)
}

pub async fn objects_of_customer<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    customer: &str,
) -> Result<Vec<ObjectRow>> {
    let rows = sqlx::query(
        "SELECT * FROM ent_stripe_objects WHERE connection_id = $1 AND stripe_customer_id = $2",
    )
    .bind(connection_id)
    .bind(customer)
    .fetch_all(db)
    .await?;
    rows.iter().map(ObjectRow::from_row).collect()
}

/// Ids per statement in the owners walk's queries.
pub const WALK_CHUNK: usize = 200;

/// Rows of `sql` (`$1` is `scope`, `{list}` the inside of an `IN (…)` of some of `ids`) over
/// all of `ids`, [`WALK_CHUNK`] ids per statement.
async fn rows_over_ids(
    db: &mut crate::Conn,
    sql: &str,
    scope: &str,
    ids: &[&str],
) -> Result<Vec<AnyRow>> {
    crate::query::rows_in_list(db, sql, &[scope], ids, WALK_CHUNK).await
}

/// The links of a connection's Stripe `customers` (those linked).
pub async fn links_of_customers(
    db: &mut crate::Conn,
    connection_id: &str,
    customers: &[&str],
) -> Result<Vec<LinkRow>> {
    let sql =
        "SELECT * FROM ent_customers WHERE connection_id = $1 AND stripe_customer_id IN ({list})";
    let rows = rows_over_ids(db, sql, connection_id, customers).await?;
    rows.iter().map(LinkRow::from_row).collect()
}

/// The links of each of `customids`, oldest first.
pub async fn links_of_customids(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<Vec<LinkRow>> {
    let sql = "SELECT * FROM ent_customers WHERE merchant_account_id = $1 AND customid IN ({list})
               ORDER BY created_at, connection_id, stripe_customer_id";
    let rows = rows_over_ids(db, sql, merchant_account_id, customids).await?;
    rows.iter().map(LinkRow::from_row).collect()
}

/// The objects of a connection's Stripe `customers`.
pub async fn objects_of_customers(
    db: &mut crate::Conn,
    connection_id: &str,
    customers: &[&str],
) -> Result<Vec<ObjectRow>> {
    let sql = "SELECT * FROM ent_stripe_objects
               WHERE connection_id = $1 AND stripe_customer_id IN ({list})";
    let rows = rows_over_ids(db, sql, connection_id, customers).await?;
    rows.iter().map(ObjectRow::from_row).collect()
}

/// The objects linked directly to any of `customids` (guest purchases, metadata without a
/// customer).
pub async fn objects_of_customids(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<Vec<ObjectRow>> {
    let sql =
        "SELECT * FROM ent_stripe_objects WHERE merchant_account_id = $1 AND customid IN ({list})";
    let rows = rows_over_ids(db, sql, merchant_account_id, customids).await?;
    rows.iter().map(ObjectRow::from_row).collect()
}

/// The objects of a connection with any of these Stripe ids (any type).
pub async fn objects_by_ids(
    db: &mut crate::Conn,
    connection_id: &str,
    object_ids: &[&str],
) -> Result<Vec<ObjectRow>> {
    let sql = "SELECT * FROM ent_stripe_objects WHERE connection_id = $1 AND object_id IN ({list})";
    let rows = rows_over_ids(db, sql, connection_id, object_ids).await?;
    rows.iter().map(ObjectRow::from_row).collect()
}

/// The objects attached to any of `ref_ids` (disputes of a charge, credit notes of an
/// invoice, …), each with the id it is attached to.
pub async fn objects_referring_any(
    db: &mut crate::Conn,
    connection_id: &str,
    ref_ids: &[&str],
) -> Result<Vec<(String, ObjectRow)>> {
    // CROSS JOIN: SQLite then always starts from the refs' (connection, ref_id) index instead
    // of scanning the connection's objects; PostgreSQL plans it as any join.
    let sql = "SELECT r.ref_id AS via_ref, o.* FROM ent_object_refs r
               CROSS JOIN ent_stripe_objects o
               WHERE r.connection_id = $1 AND r.ref_id IN ({list})
                 AND o.connection_id = $1 AND o.object_id = r.object_id";
    let rows = rows_over_ids(db, sql, connection_id, ref_ids).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("via_ref")?, ObjectRow::from_row(r)?)))
        .collect()
}

/// For each of `object_ids` (at most [`WALK_CHUNK`]), the customids its stored objects name:
/// their own `customid` (guest purchases) or their Stripe customer's link, as
/// `(object id, customid)` pairs. One statement for a whole step of the owners walk.
pub async fn owners_of_objects(
    db: &mut crate::Conn,
    connection_id: &str,
    object_ids: &[&str],
) -> Result<Vec<(String, String)>> {
    pairs_over_ids(
        db,
        "SELECT object_id AS a, customid AS b FROM ent_stripe_objects
         WHERE connection_id = $1 AND object_id IN ({list}) AND customid IS NOT NULL
         UNION ALL
         SELECT o.object_id, c.customid FROM ent_stripe_objects o
         JOIN ent_customers c
           ON c.connection_id = o.connection_id AND c.stripe_customer_id = o.stripe_customer_id
         WHERE o.connection_id = $1 AND o.object_id IN ({list})",
        connection_id,
        object_ids,
    )
    .await
}

/// For each of `object_ids` (at most [`WALK_CHUNK`]), the objects next to it: what it refers
/// to, and the stored objects referring to it (a charge's dispute, an invoice's credit
/// notes), as `(object id, neighbour id)` pairs in one statement.
pub async fn neighbours_of(
    db: &mut crate::Conn,
    connection_id: &str,
    object_ids: &[&str],
) -> Result<Vec<(String, String)>> {
    pairs_over_ids(
        db,
        "SELECT object_id AS a, ref_id AS b FROM ent_object_refs
         WHERE connection_id = $1 AND object_id IN ({list})
         UNION ALL
         SELECT r.ref_id, r.object_id FROM ent_object_refs r
         WHERE r.connection_id = $1 AND r.ref_id IN ({list}) AND EXISTS
             (SELECT 1 FROM ent_stripe_objects o
              WHERE o.connection_id = $1 AND o.object_id = r.object_id)",
        connection_id,
        object_ids,
    )
    .await
}

/// Runs `sql` (`$1` the connection, each `{list}` the inside of an `IN (…)` of `ids`) for its
/// pairs of text columns, named `a` and `b`.
///
/// On SQLite the pairs come back as one row, a JSON array of them: SQLite's rows are handed
/// over from its connection thread one at a time, and in the writer's transaction (the owners
/// walk) these statements returned more rows than any other, two per event on average in the
/// webhooks benchmark.
async fn pairs_over_ids(
    db: &mut crate::Conn,
    sql: &str,
    connection_id: &str,
    ids: &[&str],
) -> Result<Vec<(String, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = crate::Backend::of(db);
    let list = crate::query::List::new(backend, ids);
    // Placeholders only; every value is bound.
    let (sql, args) = list.fill(sql, &[connection_id]);
    match backend {
        crate::Backend::Sqlite => {
            let sql = format!("SELECT json_group_array(json_array(a, b)) FROM ({sql})");
            let pairs: String = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
                .persistent(list.persistent())
                .fetch_one(db)
                .await?;
            crate::query::json_array(&pairs, "pairs of stored ids")
        }
        crate::Backend::Postgres => Ok(sqlx::query_as_with::<_, (String, String), _>(
            sqlx::AssertSqlSafe(sql),
            args,
        )
        .persistent(list.persistent())
        .fetch_all(db)
        .await?),
    }
}

/// Stores that each `(object id, ref id)` pair's object refers to its ref, a few hundred
/// pairs per statement.
pub async fn put_refs(
    db: &mut crate::Conn,
    connection_id: &str,
    pairs: &[(String, String)],
) -> Result<()> {
    let backend = crate::Backend::of(db);
    for chunk in pairs.chunks(WALK_CHUNK) {
        let mut sql =
            String::from("INSERT INTO ent_object_refs (connection_id, object_id, ref_id) VALUES ");
        let mut args = sqlx::any::AnyArguments::default();
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 3));
        for (object_id, ref_id) in chunk.iter() {
            let _ = args.add(connection_id.to_string());
            let _ = args.add(object_id.clone());
            let _ = args.add(ref_id.clone());
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(false)
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

// ---- catalogue -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuRow {
    pub merchant_account_id: String,
    pub identifier: String,
    pub store: String,
    pub product_id: String,
    pub kind: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SkuRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            merchant_account_id: r.try_get("merchant_account_id")?,
            identifier: r.try_get("identifier")?,
            store: r.try_get("store")?,
            product_id: r.try_get("product_id")?,
            kind: r.try_get("kind")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub async fn insert_sku<'c, E: Executor<'c, Database = Any>>(db: E, s: &SkuRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_skus (merchant_account_id, identifier, store, product_id, kind,
            created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.merchant_account_id)
    .bind(&s.identifier)
    .bind(&s.store)
    .bind(&s.product_id)
    .bind(&s.kind)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn update_sku<'c, E: Executor<'c, Database = Any>>(db: E, s: &SkuRow) -> Result<()> {
    sqlx::query(
        "UPDATE ent_skus SET store = $3, product_id = $4, kind = $5, updated_at = $6
         WHERE merchant_account_id = $1 AND identifier = $2",
    )
    .bind(&s.merchant_account_id)
    .bind(&s.identifier)
    .bind(&s.store)
    .bind(&s.product_id)
    .bind(&s.kind)
    .bind(s.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_sku<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    identifier: &str,
) -> Result<Option<SkuRow>> {
    let row =
        sqlx::query("SELECT * FROM ent_skus WHERE merchant_account_id = $1 AND identifier = $2")
            .bind(merchant_account_id)
            .bind(identifier)
            .fetch_optional(db)
            .await?;
    row.as_ref().map(SkuRow::from_row).transpose()
}

pub async fn list_skus<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<SkuRow>> {
    let rows =
        sqlx::query("SELECT * FROM ent_skus WHERE merchant_account_id = $1 ORDER BY identifier")
            .bind(merchant_account_id)
            .fetch_all(db)
            .await?;
    rows.iter().map(SkuRow::from_row).collect()
}

pub async fn delete_sku<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    identifier: &str,
) -> Result<bool> {
    let done =
        sqlx::query("DELETE FROM ent_skus WHERE merchant_account_id = $1 AND identifier = $2")
            .bind(merchant_account_id)
            .bind(identifier)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Permission identifiers that use a SKU.
pub async fn permissions_using_sku<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    sku: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT permission FROM ent_permission_skus WHERE merchant_account_id = $1 AND sku = $2
         ORDER BY permission",
    )
    .bind(merchant_account_id)
    .bind(sku)
    .fetch_all(db)
    .await?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDefRow {
    pub identifier: String,
    pub skus: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert_permission_def<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    identifier: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_permission_defs (merchant_account_id, identifier, created_at, updated_at)
         VALUES ($1, $2, $3, $3)",
    )
    .bind(merchant_account_id)
    .bind(identifier)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn touch_permission_def<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    identifier: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE ent_permission_defs SET updated_at = $3 WHERE merchant_account_id = $1 AND identifier = $2",
    )
    .bind(merchant_account_id)
    .bind(identifier)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_permission_def<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    identifier: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM ent_permission_defs WHERE merchant_account_id = $1 AND identifier = $2",
    )
    .bind(merchant_account_id)
    .bind(identifier)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn clear_permission_skus<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    permission: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM ent_permission_skus WHERE merchant_account_id = $1 AND permission = $2",
    )
    .bind(merchant_account_id)
    .bind(permission)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn add_permission_sku<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    permission: &str,
    sku: &str,
    position: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_permission_skus (merchant_account_id, permission, sku, position)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(merchant_account_id)
    .bind(permission)
    .bind(sku)
    .bind(position)
    .execute(db)
    .await?;
    Ok(())
}

/// Every permission definition of an account with its SKUs in order.
pub async fn list_permission_defs<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<PermissionDefRow>> {
    let rows = sqlx::query(
        "SELECT d.identifier, d.created_at, d.updated_at, s.sku
         FROM ent_permission_defs d LEFT JOIN ent_permission_skus s
           ON s.merchant_account_id = d.merchant_account_id AND s.permission = d.identifier
         WHERE d.merchant_account_id = $1
         ORDER BY d.identifier, s.position",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?;
    let mut out: Vec<PermissionDefRow> = Vec::new();
    for r in &rows {
        let id: String = r.try_get("identifier")?;
        let sku: Option<String> = r.try_get("sku")?;
        match out.last_mut() {
            Some(last) if last.identifier == id => last.skus.extend(sku),
            _ => out.push(PermissionDefRow {
                identifier: id,
                skus: sku.into_iter().collect(),
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            }),
        }
    }
    Ok(out)
}

// ---- settings --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsRow {
    pub merchant_account_id: String,
    /// `None`: grace while Stripe retries.
    pub grace_days: Option<i64>,
    pub revoke_on_partial_refund: bool,
    pub renewal_leeway_secs: i64,
    pub require_customer_token: bool,
    pub customer_token_secret: Option<String>,
    /// `lost` (default) or `opened`.
    pub revoke_on_dispute: String,
    pub revoke_on_fraud_warning: bool,
    pub updated_at: i64,
}

impl SettingsRow {
    pub fn default_for(merchant_account_id: &str) -> Self {
        Self {
            merchant_account_id: merchant_account_id.to_string(),
            grace_days: None,
            revoke_on_partial_refund: false,
            renewal_leeway_secs: 7200,
            require_customer_token: false,
            customer_token_secret: None,
            revoke_on_dispute: "lost".into(),
            revoke_on_fraud_warning: false,
            updated_at: 0,
        }
    }
}

pub async fn get_settings<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<SettingsRow> {
    let row = sqlx::query("SELECT * FROM ent_settings WHERE merchant_account_id = $1")
        .bind(merchant_account_id)
        .fetch_optional(db)
        .await?;
    match row {
        None => Ok(SettingsRow::default_for(merchant_account_id)),
        Some(r) => Ok(SettingsRow {
            merchant_account_id: r.try_get("merchant_account_id")?,
            grace_days: r.try_get("grace_days")?,
            revoke_on_partial_refund: r.try_get::<i64, _>("revoke_on_partial_refund")? != 0,
            renewal_leeway_secs: r.try_get("renewal_leeway_secs")?,
            require_customer_token: r.try_get::<i64, _>("require_customer_token")? != 0,
            customer_token_secret: r.try_get("customer_token_secret")?,
            revoke_on_dispute: r.try_get("revoke_on_dispute")?,
            revoke_on_fraud_warning: r.try_get::<i64, _>("revoke_on_fraud_warning")? != 0,
            updated_at: r.try_get("updated_at")?,
        }),
    }
}

pub async fn put_settings<'c, E: Executor<'c, Database = Any>>(
    db: E,
    s: &SettingsRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_settings (merchant_account_id, grace_days, revoke_on_partial_refund,
            renewal_leeway_secs, require_customer_token, customer_token_secret, updated_at,
            revoke_on_dispute, revoke_on_fraud_warning)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (merchant_account_id) DO UPDATE SET grace_days = excluded.grace_days,
            revoke_on_partial_refund = excluded.revoke_on_partial_refund,
            renewal_leeway_secs = excluded.renewal_leeway_secs,
            require_customer_token = excluded.require_customer_token,
            customer_token_secret = excluded.customer_token_secret,
            updated_at = excluded.updated_at, revoke_on_dispute = excluded.revoke_on_dispute,
            revoke_on_fraud_warning = excluded.revoke_on_fraud_warning",
    )
    .bind(&s.merchant_account_id)
    .bind(s.grace_days)
    .bind(s.revoke_on_partial_refund as i64)
    .bind(s.renewal_leeway_secs)
    .bind(s.require_customer_token as i64)
    .bind(&s.customer_token_secret)
    .bind(s.updated_at)
    .bind(&s.revoke_on_dispute)
    .bind(s.revoke_on_fraud_warning as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// The metadata key naming the customid on this connection's objects (default `customid`).
pub async fn customid_key<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
) -> Result<String> {
    let key: Option<String> = sqlx::query_scalar(
        "SELECT customid_metadata_key FROM ent_connection_settings WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_optional(db)
    .await?;
    Ok(key.unwrap_or_else(|| "customid".to_string()))
}

pub async fn put_customid_key<'c, E: Executor<'c, Database = Any>>(
    db: E,
    connection_id: &str,
    key: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_connection_settings (connection_id, customid_metadata_key, updated_at)
         VALUES ($1, $2, $3)
         ON CONFLICT (connection_id) DO UPDATE SET customid_metadata_key = excluded.customid_metadata_key,
            updated_at = excluded.updated_at",
    )
    .bind(connection_id)
    .bind(key)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

// ---- the read model --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRow {
    pub identifier: String,
    pub is_valid: bool,
    pub entitlement: i64,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    pub valid_until: Option<i64>,
    /// JSON array of `{identifier, product_id, trial}`.
    pub skus: String,
    pub updated_at: i64,
    /// The customer's state version when this row was last written (see
    /// [`bump_customer_version`]); every row of a customer carries the newest.
    pub version: i64,
}

/// The check query: one customer's permissions (primary-key range scan).
pub const PERMISSIONS_SQL: &str =
    "SELECT identifier, is_valid, entitlement, expires_at, valid_until, skus, updated_at, version
     FROM ent_permissions WHERE merchant_account_id = $1 AND customid = $2 ORDER BY identifier";

pub async fn permissions_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
) -> Result<Vec<PermissionRow>> {
    let rows = sqlx::query(PERMISSIONS_SQL)
        .bind(merchant_account_id)
        .bind(customid)
        .fetch_all(db)
        .await?;
    rows.iter().map(permission_of).collect()
}

fn permission_of(r: &AnyRow) -> Result<PermissionRow> {
    Ok(PermissionRow {
        identifier: r.try_get("identifier")?,
        is_valid: r.try_get::<i64, _>("is_valid")? != 0,
        entitlement: r.try_get("entitlement")?,
        expires_at: r.try_get("expires_at")?,
        valid_until: r.try_get("valid_until")?,
        skus: r.try_get("skus")?,
        updated_at: r.try_get("updated_at")?,
        version: r.try_get("version")?,
    })
}

/// The permissions of each of `customids` (as [`permissions_of`]), with their customid.
pub async fn permissions_of_customids(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<Vec<(String, PermissionRow)>> {
    let sql = "SELECT customid, identifier, is_valid, entitlement, expires_at, valid_until, skus,
                      updated_at, version
               FROM ent_permissions WHERE merchant_account_id = $1 AND customid IN ({list})
               ORDER BY customid, identifier";
    let rows = rows_over_ids(db, sql, merchant_account_id, customids).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("customid")?, permission_of(r)?)))
        .collect()
}

pub async fn put_permission<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    p: &PermissionRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_permissions (merchant_account_id, customid, identifier, is_valid,
            entitlement, expires_at, valid_until, skus, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (merchant_account_id, customid, identifier) DO UPDATE SET
            is_valid = excluded.is_valid, entitlement = excluded.entitlement,
            expires_at = excluded.expires_at, valid_until = excluded.valid_until,
            skus = excluded.skus, updated_at = excluded.updated_at, version = excluded.version",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(&p.identifier)
    .bind(p.is_valid as i64)
    .bind(p.entitlement)
    .bind(p.expires_at)
    .bind(p.valid_until)
    .bind(&p.skus)
    .bind(p.updated_at)
    .bind(p.version)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete_permission<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    identifier: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM ent_permissions WHERE merchant_account_id = $1 AND customid = $2 AND identifier = $3",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(identifier)
    .execute(db)
    .await?;
    Ok(())
}

/// Appends to the permission change log (SQLite; see migration 0007): `customid`'s
/// permissions were rewritten in this transaction.
pub async fn note_permission_change<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_permission_changes (merchant_account_id, customid, changed_at)
         VALUES ($1, $2, $3)",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The PostgreSQL channel of permission changes, one per schema (servers on another schema of
/// the same database are another installation): `tollgate_perm_` and the MD5 of the schema name
/// (a channel name has at most 63 bytes). Payloads: JSON `[merchant, customid]` for a change,
/// `{"sync": n}` for a marker (see [`Heard::Marker`]).
pub const PERMISSION_CHANNEL_SQL: &str = "'tollgate_perm_' || md5(current_schema())";

/// PostgreSQL: tells every server listening on this schema's permission channel that
/// `customid`'s permissions were rewritten in this transaction (delivered when it commits, not
/// if it rolls back).
pub async fn notify_permission_change<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
) -> Result<()> {
    let payload = serde_json::json!([merchant_account_id, customid]).to_string();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_notify({PERMISSION_CHANNEL_SQL}, $1)"
    )))
    .bind(payload)
    .execute(db)
    .await?;
    Ok(())
}

/// As [`notify_permission_change`], for a writer that may announce the same customer more than
/// once in one transaction and needs each announcement heard: PostgreSQL delivers identical
/// notifications of a transaction once, so `nth` (distinct among the calls of a transaction)
/// makes the payload differ, as trailing JSON whitespace (spaces and tabs) its readers ignore.
pub async fn notify_permission_change_nth<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    nth: u16,
) -> Result<()> {
    let mut payload = serde_json::json!([merchant_account_id, customid]).to_string();
    payload.extend((0..16).map(|i| if (nth >> i) & 1 == 1 { '\t' } else { ' ' }));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_notify({PERMISSION_CHANNEL_SQL}, $1)"
    )))
    .bind(payload)
    .execute(db)
    .await?;
    Ok(())
}

/// What a [`PermissionListener`] heard.
pub enum Heard {
    /// (merchant, customid) whose permissions a committed transaction rewrote.
    Change(String, String),
    /// `{"sync": n}`: notifications arrive in commit order, so every change committed before
    /// this marker was sent has been heard (`/metrics` shows the last marker; tests wait on it).
    Marker(i64),
    /// The connection was lost (it listens again now): changes may have gone by unheard.
    Lost,
}

/// PostgreSQL: a connection listening on this schema's permission channel.
pub struct PermissionListener(sqlx::postgres::PgListener);

impl PermissionListener {
    pub async fn connect(url: &str) -> Result<PermissionListener> {
        let mut l = sqlx::postgres::PgListener::connect(url).await?;
        let channel: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {PERMISSION_CHANNEL_SQL}"
        )))
        .fetch_one(&mut l)
        .await?;
        l.listen(&channel).await?;
        Ok(PermissionListener(l))
    }

    /// The next change or marker (payloads that are neither are skipped).
    pub async fn next(&mut self) -> Result<Heard> {
        #[derive(serde::Deserialize)]
        struct Sync {
            sync: i64,
        }
        loop {
            match self.0.try_recv().await? {
                None => return Ok(Heard::Lost),
                Some(n) => {
                    if let Ok((m, c)) = serde_json::from_str::<(String, String)>(n.payload()) {
                        return Ok(Heard::Change(m, c));
                    }
                    if let Ok(Sync { sync }) = serde_json::from_str::<Sync>(n.payload()) {
                        return Ok(Heard::Marker(sync));
                    }
                }
            }
        }
    }
}

/// The newest entry of the permission change log (0 when it is empty).
pub async fn last_permission_change<'c, E: Executor<'c, Database = Any>>(db: E) -> Result<i64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM ent_permission_changes")
        .fetch_one(db)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// Entries of the permission change log after `seq`, oldest first: (seq, merchant, customid).
pub async fn permission_changes_after<'c, E: Executor<'c, Database = Any>>(
    db: E,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, String, String)>> {
    let rows = sqlx::query(
        "SELECT seq, merchant_account_id, customid FROM ent_permission_changes
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("seq")?,
                r.try_get("merchant_account_id")?,
                r.try_get("customid")?,
            ))
        })
        .collect()
}

/// Forgets change log entries older than `before` (Unix ms).
pub async fn prune_permission_changes<'c, E: Executor<'c, Database = Any>>(
    db: E,
    before: i64,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM ent_permission_changes WHERE changed_at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Customers the clock has changed since their last re-evaluation (the expiry job): a held
/// permission whose `valid_until` has passed, or a foreseen change that is due (one of several
/// purchases of a permission lapsing while another still holds it).
pub async fn due<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT merchant_account_id, customid FROM ent_permissions
         WHERE valid_until IS NOT NULL AND valid_until <= $1 AND is_valid = 1
         UNION
         SELECT merchant_account_id, customid FROM ent_customer_state
         WHERE next_change_at IS NOT NULL AND next_change_at <= $1
         ORDER BY 1, 2 LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Every customid of an account known to entitlements (links, direct objects, read model).
pub async fn customids<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT customid FROM ent_customers WHERE merchant_account_id = $1
         UNION SELECT customid FROM ent_stripe_objects WHERE merchant_account_id = $1 AND customid IS NOT NULL
         UNION SELECT customid FROM ent_permissions WHERE merchant_account_id = $1
         UNION SELECT customid FROM ent_grants WHERE merchant_account_id = $1
         ORDER BY 1",
    )
    .bind(merchant_account_id)
    .fetch_all(db)
    .await?)
}

/// PostgreSQL: takes the transaction-scoped lock of one Stripe customer's link. A transaction
/// that applies an object of that customer takes it before it looks for the link, and one that
/// creates the link holds it until it commits: otherwise an object applied while the link was
/// being made (neither transaction seeing the other's writes) would be evaluated by neither.
pub async fn lock_stripe_customer(
    db: &mut crate::Conn,
    connection_id: &str,
    stripe_customer_id: &str,
) -> Result<()> {
    lock_stripe_customers(db, connection_id, &[stripe_customer_id]).await
}

/// [`lock_stripe_customer`] for several customers in one statement, in bytewise order of
/// their ids (the order every transaction takes them in).
pub async fn lock_stripe_customers(
    db: &mut crate::Conn,
    connection_id: &str,
    stripe_customer_ids: &[&str],
) -> Result<()> {
    let keys: Vec<String> = stripe_customer_ids
        .iter()
        .map(|c| format!("link\u{1f}{connection_id}\u{1f}{c}"))
        .collect();
    lock_keys(db, keys).await
}

/// PostgreSQL: transaction-scoped advisory locks on `keys`, taken in one statement per
/// [`WALK_CHUNK`] keys, in bytewise order of the keys (each statement takes its keys in that
/// order, and the chunks follow each other in it): the order of one lock statement per key,
/// without a round trip each.
async fn lock_keys(db: &mut crate::Conn, mut keys: Vec<String>) -> Result<()> {
    keys.sort_unstable();
    keys.dedup();
    for chunk in keys.chunks(WALK_CHUNK) {
        let list: Vec<String> = (0..chunk.len()).map(|i| format!("(${})", i + 1)).collect();
        let sql = format!(
            "SELECT COUNT(*) FROM (
               SELECT pg_advisory_xact_lock(hashtext(k)) FROM (
                 SELECT k FROM (VALUES {}) AS v(k) ORDER BY k COLLATE \"C\"
               ) AS sorted
             ) AS locked",
            list.join(", ")
        );
        // Placeholders only; every value is bound.
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).persistent(false);
        for k in chunk {
            q = q.bind(k.clone());
        }
        q.fetch_one(&mut *db).await?;
    }
    Ok(())
}

/// Postgres: transaction-scoped advisory locks on the Stripe objects `ids` of a connection and
/// on the links (as [`lock_stripe_customer`] takes them) of the Stripe customers their stored
/// versions name, in one statement, taken in bytewise order of their keys. Callers with more
/// than one chunk of ids pass them sorted, chunk after chunk.
pub async fn lock_objects(db: &mut crate::Conn, connection_id: &str, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = (0..ids.len()).map(|i| format!("(${})", i + 2)).collect();
    let list = list.join(", ");
    let sql = format!(
        "SELECT COUNT(*) FROM (
           SELECT pg_advisory_xact_lock(hashtext(k)) FROM (
             SELECT k FROM (
               SELECT 'object' || chr(31) || $1 || chr(31) || v.id AS k
               FROM (VALUES {list}) AS v(id)
               UNION
               SELECT 'link' || chr(31) || $1 || chr(31) || o.stripe_customer_id
               FROM ent_stripe_objects o
               WHERE o.connection_id = $1 AND o.stripe_customer_id IS NOT NULL
                 AND o.object_id IN (SELECT w.id FROM (VALUES {list}) AS w(id))
             ) AS u ORDER BY k COLLATE \"C\"
           ) AS sorted
         ) AS locked"
    );
    // Placeholders only; every value is bound.
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(connection_id.to_string());
    for id in ids {
        q = q.bind((*id).to_string());
    }
    q.fetch_one(&mut *db).await?;
    Ok(())
}

/// Postgres: serialises re-evaluations of each of `customids` (transaction-scoped advisory
/// locks), taken in one statement in bytewise order of the customids (the order every
/// transaction takes them in).
pub async fn lock_customers(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<()> {
    let keys: Vec<String> = customids
        .iter()
        .map(|c| format!("{merchant_account_id}\u{1f}{c}"))
        .collect();
    lock_keys(db, keys).await
}

// ---- manual grants ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    pub merchant_account_id: String,
    pub customid: String,
    pub permission: String,
    /// Unix milliseconds.
    pub starts_at: i64,
    pub expires_at: Option<i64>,
    pub reason: String,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl GrantRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            customid: r.try_get("customid")?,
            permission: r.try_get("permission")?,
            starts_at: r.try_get("starts_at")?,
            expires_at: r.try_get("expires_at")?,
            reason: r.try_get("reason")?,
            created_by: r.try_get("created_by")?,
            revoked_at: r.try_get("revoked_at")?,
            revoked_by: r.try_get("revoked_by")?,
        })
    }
}

pub async fn insert_grant<'c, E: Executor<'c, Database = Any>>(db: E, g: &GrantRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO ent_grants (id, merchant_account_id, customid, permission, starts_at,
            expires_at, reason, created_by, revoked_at, revoked_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&g.id)
    .bind(&g.merchant_account_id)
    .bind(&g.customid)
    .bind(&g.permission)
    .bind(g.starts_at)
    .bind(g.expires_at)
    .bind(&g.reason)
    .bind(&g.created_by)
    .bind(g.revoked_at)
    .bind(&g.revoked_by)
    .execute(db)
    .await?;
    Ok(())
}

/// A customer's grants, oldest first.
pub async fn grants_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
) -> Result<Vec<GrantRow>> {
    let rows = sqlx::query(
        "SELECT * FROM ent_grants WHERE merchant_account_id = $1 AND customid = $2
         ORDER BY starts_at, id",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .fetch_all(db)
    .await?;
    rows.iter().map(GrantRow::from_row).collect()
}

/// The grants of each of `customids`.
pub async fn grants_of_customids(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<Vec<GrantRow>> {
    let sql = "SELECT * FROM ent_grants WHERE merchant_account_id = $1 AND customid IN ({list})
               ORDER BY starts_at, id";
    let rows = rows_over_ids(db, sql, merchant_account_id, customids).await?;
    rows.iter().map(GrantRow::from_row).collect()
}

/// Marks a grant revoked (once: a revoked grant keeps its first revocation). Returns whether
/// it was revoked now.
pub async fn revoke_grant<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    id: &str,
    at: i64,
    by: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE ent_grants SET revoked_at = $4, revoked_by = $5
         WHERE merchant_account_id = $1 AND customid = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(id)
    .bind(at)
    .bind(by)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---- history and versions ------------------------------------------------------------------

/// One change of one permission as the check answers it (see migration 0014 on SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub seq: i64,
    pub identifier: String,
    /// Unix milliseconds.
    pub at: i64,
    pub is_valid: bool,
    pub entitlement: i64,
    pub expires_at: Option<i64>,
    pub valid_until: Option<i64>,
    pub skus: String,
    /// The permission left the answer.
    pub removed: bool,
    /// JSON.
    pub cause: String,
    pub version: i64,
}

impl HistoryRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            seq: r.try_get("seq")?,
            identifier: r.try_get("identifier")?,
            at: r.try_get("at")?,
            is_valid: r.try_get::<i64, _>("is_valid")? != 0,
            entitlement: r.try_get("entitlement")?,
            expires_at: r.try_get("expires_at")?,
            valid_until: r.try_get("valid_until")?,
            skus: r.try_get("skus")?,
            removed: r.try_get::<i64, _>("removed")? != 0,
            cause: r.try_get("cause")?,
            version: r.try_get("version")?,
        })
    }

    /// The permission this entry left in the read model.
    pub fn permission(&self) -> PermissionRow {
        PermissionRow {
            identifier: self.identifier.clone(),
            is_valid: self.is_valid,
            entitlement: self.entitlement,
            expires_at: self.expires_at,
            valid_until: self.valid_until,
            skus: self.skus.clone(),
            updated_at: self.at,
            version: self.version,
        }
    }
}

/// Appends history entries, each of its customer (`seq` of each is ignored).
pub async fn insert_history(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    rows: &[(&str, &HistoryRow)],
) -> Result<()> {
    let backend = crate::Backend::of(db);
    for chunk in crate::query::row_chunks(backend, rows, 50) {
        let mut sql = String::from(
            "INSERT INTO ent_permission_history (merchant_account_id, customid, identifier, at,
                is_valid, entitlement, expires_at, valid_until, skus, removed, cause, version)
             VALUES ",
        );
        sql.push_str(&crate::query::value_rows(backend, chunk.len(), 12));
        let mut args = sqlx::any::AnyArguments::default();
        for (customid, h) in chunk {
            let _ = args.add(merchant_account_id.to_string());
            let _ = args.add(customid.to_string());
            let _ = args.add(h.identifier.clone());
            let _ = args.add(h.at);
            let _ = args.add(h.is_valid as i64);
            let _ = args.add(h.entitlement);
            let _ = args.add(h.expires_at);
            let _ = args.add(h.valid_until);
            let _ = args.add(h.skus.clone());
            let _ = args.add(h.removed as i64);
            let _ = args.add(h.cause.clone());
            let _ = args.add(h.version);
        }
        // Placeholders only; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(crate::query::keeps_shapes(backend))
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

/// A page of a customer's history up to `now` (ms; later entries are foreseen, not happened),
/// newest first (by `at`, then `seq`): entries before the cursor `(at, seq)` when given.
pub async fn history_page<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    before: Option<(i64, i64)>,
    now: i64,
    limit: i64,
) -> Result<Vec<HistoryRow>> {
    let (at, seq) = before.unwrap_or((now, i64::MAX));
    let (at, seq) = if at > now { (now, i64::MAX) } else { (at, seq) };
    let rows = sqlx::query(
        "SELECT * FROM ent_permission_history
         WHERE merchant_account_id = $1 AND customid = $2
           AND (at < $3 OR (at = $3 AND seq < $4))
         ORDER BY at DESC, seq DESC LIMIT $5",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(at)
    .bind(seq)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(HistoryRow::from_row).collect()
}

/// Forgets the foreseen history entries (those after `now`, ms) of `customids`: a
/// re-evaluation writes them again from what it knows.
pub async fn forget_foreseen(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
    now: i64,
) -> Result<()> {
    let sql = "DELETE FROM ent_permission_history
               WHERE merchant_account_id = $1 AND at > $2 AND customid IN ({list})";
    crate::query::execute_in_list(db, sql, merchant_account_id, now, customids, WALK_CHUNK).await
}

/// Per permission, the newest history entry at or before `at` (ms), by identifier.
pub async fn history_at<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    at: i64,
) -> Result<Vec<HistoryRow>> {
    let rows = sqlx::query(
        "SELECT * FROM ent_permission_history
         WHERE merchant_account_id = $1 AND customid = $2 AND at <= $3
         ORDER BY identifier, at DESC, seq DESC",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(at)
    .fetch_all(db)
    .await?;
    let mut out: Vec<HistoryRow> = Vec::new();
    for r in &rows {
        let h = HistoryRow::from_row(r)?;
        if out.last().is_none_or(|l| l.identifier != h.identifier) {
            out.push(h);
        }
    }
    Ok(out)
}

/// Takes the next version of a customer's permission set (1 for the first change), inside the
/// transaction that changes it.
pub async fn bump_customer_version(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customid: &str,
    now: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO ent_customer_state (merchant_account_id, customid, version, updated_at)
         VALUES ($1, $2, 1, $3)
         ON CONFLICT (merchant_account_id, customid) DO UPDATE SET
            version = ent_customer_state.version + 1, updated_at = excluded.updated_at
         RETURNING version",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(now)
    .fetch_one(&mut *db)
    .await?)
}

/// Sets when the clock alone next changes the answer of each of `customids`: its earliest
/// history entry after `now` (ms; entries after now are foreseen), or none.
pub async fn set_next_change(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
    now: i64,
) -> Result<()> {
    let sql = "UPDATE ent_customer_state SET next_change_at = (
                   SELECT MIN(h.at) FROM ent_permission_history h
                   WHERE h.merchant_account_id = ent_customer_state.merchant_account_id
                     AND h.customid = ent_customer_state.customid AND h.at > $2)
               WHERE merchant_account_id = $1 AND customid IN ({list})";
    crate::query::execute_in_list(db, sql, merchant_account_id, now, customids, WALK_CHUNK).await
}

/// Writes `version` on every read-model row of a customer.
pub async fn set_permissions_version<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    customid: &str,
    version: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE ent_permissions SET version = $3 WHERE merchant_account_id = $1 AND customid = $2",
    )
    .bind(merchant_account_id)
    .bind(customid)
    .bind(version)
    .execute(db)
    .await?;
    Ok(())
}

/// The current state version of each of `customids` that ever changed (the others: 0).
pub async fn customer_versions(
    db: &mut crate::Conn,
    merchant_account_id: &str,
    customids: &[&str],
) -> Result<std::collections::HashMap<String, i64>> {
    let sql = "SELECT customid, version FROM ent_customer_state
               WHERE merchant_account_id = $1 AND customid IN ({list})";
    let rows = rows_over_ids(db, sql, merchant_account_id, customids).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("customid")?, r.try_get("version")?)))
        .collect()
}
