//! The dashboard's list of a merchant account's customers (customids): everyone Tollgate knows
//! of (a linked Stripe customer, a Stripe object, a permission, a grant or a credit balance),
//! in customid order, a page at a time, filtered by a customid prefix or by whether they hold
//! anything now.

use std::collections::HashMap;

use sqlx::{Any, AnyPool, Executor, Row};

use crate::Result;

/// Which customers a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Holding {
    /// Everyone.
    #[default]
    Any,
    /// Those holding a permission now (or units of a metered one).
    Active,
    /// Those holding nothing now.
    Inactive,
}

/// One customer of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSummary {
    pub customid: String,
    /// Permissions held now (valid and not lapsed), metered ones with units available.
    pub held: i64,
    /// The first linked Stripe customer (`cus_…`), if any.
    pub stripe_customer: Option<String>,
    /// How many Stripe customers are linked.
    pub stripe_customers: i64,
}

/// A page of customers: `items` in customid order; `scanned_to` is set when the page stopped
/// early (too many customers looked at without filling it): the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerPage {
    pub items: Vec<CustomerSummary>,
    pub scanned_to: Option<String>,
}

/// Customids read at a time while a holding filter skips some.
const BATCH: i64 = 250;
/// At most this many customids are looked at for one page (bounded work per request).
const MAX_SCANNED: usize = 25_000;

/// The customids of the account after `after`, starting with `prefix`, in order. Each arm
/// reads an index in customid order, so the union is merged and stops at the limit.
/// `substr(customid, 1, length($2)) = $2` is a prefix test with the same answer on both
/// databases (LIKE differs in case rules and needs escaping); `customid >= $2` lets each arm
/// start at the prefix.
const IDS_SQL: &str = "
    SELECT customid FROM ent_customers
     WHERE merchant_account_id = $1 AND customid > $3 AND customid >= $2
       AND substr(customid, 1, length($2)) = $2
    UNION SELECT customid FROM ent_stripe_objects
     WHERE merchant_account_id = $1 AND customid IS NOT NULL AND customid > $3
       AND customid >= $2 AND substr(customid, 1, length($2)) = $2
    UNION SELECT customid FROM ent_permissions
     WHERE merchant_account_id = $1 AND customid > $3 AND customid >= $2
       AND substr(customid, 1, length($2)) = $2
    UNION SELECT customid FROM ent_grants
     WHERE merchant_account_id = $1 AND customid > $3 AND customid >= $2
       AND substr(customid, 1, length($2)) = $2
    UNION SELECT customid FROM credit_balances
     WHERE merchant_account_id = $1 AND customid > $3 AND customid >= $2
       AND substr(customid, 1, length($2)) = $2
    ORDER BY 1
    LIMIT $4";

/// A page of at most `limit` customers after `after` (a customid; `None`: from the start)
/// whose customid starts with `prefix` (`""`: any), holding something now (at `now_ms`) as
/// `holding` says.
pub async fn page(
    db: &AnyPool,
    merchant_account_id: &str,
    prefix: &str,
    after: Option<&str>,
    holding: Holding,
    now_ms: i64,
    limit: i64,
) -> Result<CustomerPage> {
    let mut out = CustomerPage::default();
    let mut cursor = after.unwrap_or("").to_string();
    let mut scanned = 0usize;
    loop {
        let left = limit - out.items.len() as i64;
        let want = if holding == Holding::Any { left } else { BATCH };
        if left <= 0 || want <= 0 {
            break;
        }
        let ids: Vec<String> = sqlx::query_scalar(IDS_SQL)
            .bind(merchant_account_id)
            .bind(prefix)
            .bind(&cursor)
            .bind(want)
            .fetch_all(db)
            .await?;
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            break;
        };
        let mut summaries = summarize(db, merchant_account_id, first, last, now_ms).await?;
        scanned += ids.len();
        let mut stopped_at = None;
        for id in &ids {
            let s = summaries
                .remove(id.as_str())
                .unwrap_or_else(|| CustomerSummary::nothing(id.clone()));
            let keep = match holding {
                Holding::Any => true,
                Holding::Active => s.held > 0,
                Holding::Inactive => s.held == 0,
            };
            if keep {
                out.items.push(s);
                if out.items.len() as i64 >= limit {
                    stopped_at = Some(id.clone());
                    break;
                }
            }
        }
        if stopped_at.is_some() || (ids.len() as i64) < want {
            break;
        }
        cursor = last.clone();
        if scanned >= MAX_SCANNED {
            out.scanned_to = Some(cursor);
            break;
        }
    }
    Ok(out)
}

impl CustomerSummary {
    fn nothing(customid: String) -> CustomerSummary {
        CustomerSummary {
            customid,
            held: 0,
            stripe_customer: None,
            stripe_customers: 0,
        }
    }
}

fn slot(out: &mut HashMap<String, CustomerSummary>, id: String) -> &mut CustomerSummary {
    out.entry(id.clone())
        .or_insert_with(|| CustomerSummary::nothing(id))
}

/// What the page shows of each customid from `first` to `last` (in the database's order).
async fn summarize(
    db: &AnyPool,
    merchant: &str,
    first: &str,
    last: &str,
    now_ms: i64,
) -> Result<HashMap<String, CustomerSummary>> {
    let mut out: HashMap<String, CustomerSummary> = HashMap::new();
    // Held permissions (metered ones count by their balance, below).
    let rows = sqlx::query(
        "SELECT p.customid, COUNT(*) AS n FROM ent_permissions p
          WHERE p.merchant_account_id = $1 AND p.customid >= $2 AND p.customid <= $3
            AND p.is_valid <> 0 AND (p.valid_until IS NULL OR p.valid_until > $4)
            AND NOT EXISTS (SELECT 1 FROM credit_balances b
                WHERE b.merchant_account_id = $1 AND b.customid = p.customid
                  AND b.permission = p.identifier)
          GROUP BY p.customid",
    )
    .bind(merchant)
    .bind(first)
    .bind(last)
    .bind(now_ms)
    .fetch_all(db)
    .await?;
    for r in rows {
        let id: String = r.try_get("customid")?;
        let n: i64 = r.try_get("n")?;
        slot(&mut out, id).held += n;
    }
    let rows = sqlx::query(
        "SELECT customid, COUNT(*) AS n FROM credit_balances
          WHERE merchant_account_id = $1 AND customid >= $2 AND customid <= $3
            AND balance - held > 0
          GROUP BY customid",
    )
    .bind(merchant)
    .bind(first)
    .bind(last)
    .fetch_all(db)
    .await?;
    for r in rows {
        let id: String = r.try_get("customid")?;
        let n: i64 = r.try_get("n")?;
        slot(&mut out, id).held += n;
    }
    let rows = sqlx::query(
        "SELECT customid, MIN(stripe_customer_id) AS first, COUNT(*) AS n FROM ent_customers
          WHERE merchant_account_id = $1 AND customid >= $2 AND customid <= $3
          GROUP BY customid",
    )
    .bind(merchant)
    .bind(first)
    .bind(last)
    .fetch_all(db)
    .await?;
    for r in rows {
        let id: String = r.try_get("customid")?;
        let first: Option<String> = r.try_get("first")?;
        let n: i64 = r.try_get("n")?;
        let s = slot(&mut out, id);
        s.stripe_customer = first;
        s.stripe_customers = n;
    }
    Ok(out)
}

/// The customids linked to the Stripe customer `stripe_customer_id` on any connection of the
/// merchant account.
pub async fn by_stripe_customer<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    stripe_customer_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT customid FROM ent_customers
         WHERE merchant_account_id = $1 AND stripe_customer_id = $2 ORDER BY customid",
    )
    .bind(merchant_account_id)
    .bind(stripe_customer_id)
    .fetch_all(db)
    .await?)
}
