//! The dashboard's list of a merchant account's customers (customids): everyone Tollgate knows
//! of (a linked Stripe customer, a Stripe object, a permission, a grant or a credit balance),
//! in customid order, a page at a time, filtered by a customid prefix or by whether they hold
//! anything now.

use sqlx::{Any, Executor, Row};

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

impl Holding {
    fn as_str(self) -> &'static str {
        match self {
            Holding::Any => "",
            Holding::Active => "active",
            Holding::Inactive => "inactive",
        }
    }
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

/// A page of customers after `after` (a customid; `None`: from the start), `limit` of them at
/// most, whose customid starts with `prefix` (`""`: any), held now (at `now_ms`) as `holding`
/// says.
pub async fn page<'c, E: Executor<'c, Database = Any>>(
    db: E,
    merchant_account_id: &str,
    prefix: &str,
    after: Option<&str>,
    holding: Holding,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<CustomerSummary>> {
    // `substr(customid, 1, length($2)) = $2` is a prefix test with the same answer on both
    // databases (LIKE differs in case rules and needs escaping); `customid > ''` is always true.
    let sql = "WITH ids AS (
            SELECT customid FROM ent_customers WHERE merchant_account_id = $1 AND customid > $3
            UNION SELECT customid FROM ent_stripe_objects
                WHERE merchant_account_id = $1 AND customid IS NOT NULL AND customid > $3
            UNION SELECT customid FROM ent_permissions WHERE merchant_account_id = $1 AND customid > $3
            UNION SELECT customid FROM ent_grants WHERE merchant_account_id = $1 AND customid > $3
            UNION SELECT customid FROM credit_balances WHERE merchant_account_id = $1 AND customid > $3
        ), summary AS (
            SELECT i.customid,
                (SELECT COUNT(*) FROM ent_permissions p
                  WHERE p.merchant_account_id = $1 AND p.customid = i.customid AND p.is_valid <> 0
                    AND (p.valid_until IS NULL OR p.valid_until > $5)
                    AND NOT EXISTS (SELECT 1 FROM credit_balances b
                        WHERE b.merchant_account_id = $1 AND b.customid = i.customid
                          AND b.permission = p.identifier))
                + (SELECT COUNT(*) FROM credit_balances b
                  WHERE b.merchant_account_id = $1 AND b.customid = i.customid
                    AND b.balance - b.held > 0) AS held,
                (SELECT MIN(c.stripe_customer_id) FROM ent_customers c
                  WHERE c.merchant_account_id = $1 AND c.customid = i.customid) AS stripe_customer,
                (SELECT COUNT(*) FROM ent_customers c
                  WHERE c.merchant_account_id = $1 AND c.customid = i.customid) AS stripe_customers
            FROM ids i
            WHERE substr(i.customid, 1, length($2)) = $2
        )
        SELECT customid, held, stripe_customer, stripe_customers FROM summary
        WHERE $4 = '' OR ($4 = 'active' AND held > 0) OR ($4 = 'inactive' AND held = 0)
        ORDER BY customid
        LIMIT $6";
    let rows = sqlx::query(sql)
        .bind(merchant_account_id)
        .bind(prefix)
        .bind(after.unwrap_or(""))
        .bind(holding.as_str())
        .bind(now_ms)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CustomerSummary {
                customid: r.try_get("customid")?,
                held: r.try_get("held")?,
                stripe_customer: r.try_get("stripe_customer")?,
                stripe_customers: r.try_get("stripe_customers")?,
            })
        })
        .collect()
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
