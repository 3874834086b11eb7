//! The dashboard's search: one text finds a transaction (our id, `external_identifier`, its
//! PaymentIntent, charge or refund at Stripe), a customer (customid prefix, `cus_…`) or a Stripe
//! event received (`evt_…`). Every lookup reads an index; a customid prefix is a `LIKE 'abc%'`
//! with `%`, `_` and `\` escaped (on SQLite also bounded as a range, so its index serves it).
//! Also the card a transaction was paid with ([`put_charge`], [`cards_of`]).

use sqlx::{Any, Executor, Row};

use crate::{Backend, Result, Store};

/// At most this many hits of one kind.
pub const LIMIT: i64 = 20;

/// How a transaction matched the search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionHit {
    pub id: String,
    /// `id`, `external_identifier`, `payment_intent`, `charge`, `refund`.
    pub matched: &'static str,
}

/// A Stripe event received, as the search lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHit {
    pub id: String,
    pub stripe_event_id: String,
    pub event_type: String,
    pub status: String,
    pub received_at: i64,
}

/// `LIKE` pattern for values starting with `prefix` (escape character `\`).
pub fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Transactions of `merchant` whose id, `external_identifier`, PaymentIntent id, charge id or
/// Stripe refund id is exactly `q`.
pub async fn transactions(store: &Store, merchant: &str, q: &str) -> Result<Vec<TransactionHit>> {
    let sql = "SELECT id, 'id' AS matched FROM transactions
                 WHERE merchant_account_id = $1 AND id = $2
               UNION ALL
               SELECT id, 'external_identifier' FROM transactions
                 WHERE merchant_account_id = $1 AND external_identifier = $2
               UNION ALL
               SELECT id, 'payment_intent' FROM transactions
                 WHERE merchant_account_id = $1 AND payment_intent_id = $2
               UNION ALL
               SELECT transaction_id, 'charge' FROM transaction_charges
                 WHERE merchant_account_id = $1 AND charge_id = $2
               UNION ALL
               SELECT transaction_id, 'refund' FROM refunds
                 WHERE stripe_refund_id = $2 AND merchant_account_id = $1
               LIMIT 50";
    let rows = sqlx::query(sql)
        .bind(merchant)
        .bind(q)
        .fetch_all(store.reader())
        .await?;
    let mut out: Vec<TransactionHit> = Vec::new();
    for r in rows {
        let id: String = r.try_get(0)?;
        let matched: String = r.try_get(1)?;
        let matched = match matched.as_str() {
            "id" => "id",
            "external_identifier" => "external_identifier",
            "payment_intent" => "payment_intent",
            "charge" => "charge",
            _ => "refund",
        };
        if !out.iter().any(|h| h.id == id) && out.len() < LIMIT as usize {
            out.push(TransactionHit { id, matched });
        }
    }
    Ok(out)
}

/// The customids of `merchant` that start with `prefix` (linked to Stripe, granted by hand, or
/// named by a purchase), sorted, at most [`LIMIT`] + 1 (more than [`LIMIT`]: there are more).
pub async fn customers_by_prefix(
    store: &Store,
    merchant: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    let pattern = like_prefix(prefix);
    // SQLite's LIKE is case-insensitive and does not use the index: bound it by a range too
    // (which also makes the match case-sensitive, as on PostgreSQL).
    let (range, upper) = match store.backend() {
        Backend::Sqlite => (
            " AND customid >= $3 AND customid < $4",
            format!("{prefix}\u{10FFFF}"),
        ),
        Backend::Postgres => ("", String::new()),
    };
    let one = |table: &str| {
        format!(
            "SELECT customid FROM {table} WHERE merchant_account_id = $1
               AND customid LIKE $2 ESCAPE '\\'{range}"
        )
    };
    let sql = format!(
        "SELECT customid FROM ({} UNION {} UNION {}) AS c ORDER BY customid LIMIT {}",
        one("ent_customers"),
        one("ent_grants"),
        one("ent_stripe_objects"),
        LIMIT + 1
    );
    let mut query = sqlx::query_scalar::<Any, String>(sqlx::AssertSqlSafe(sql))
        .bind(merchant)
        .bind(pattern);
    if store.backend() == Backend::Sqlite {
        query = query.bind(prefix).bind(upper);
    }
    Ok(query.fetch_all(store.reader()).await?)
}

/// The customids linked to Stripe customer `cus` in `merchant`.
pub async fn customers_by_stripe_id(
    store: &Store,
    merchant: &str,
    cus: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT customid FROM ent_customers
          WHERE merchant_account_id = $1 AND stripe_customer_id = $2 ORDER BY customid",
    )
    .bind(merchant)
    .bind(cus)
    .fetch_all(store.reader())
    .await?)
}

/// The Stripe events with id `evt` received for `merchant` (one per connection that got it).
pub async fn events_by_stripe_id(
    store: &Store,
    merchant: &str,
    evt: &str,
) -> Result<Vec<EventHit>> {
    let rows = sqlx::query(
        "SELECT id, stripe_event_id, event_type, status, received_at FROM webhook_events
          WHERE merchant_account_id = $1 AND stripe_event_id = $2 ORDER BY received_at, id
          LIMIT 20",
    )
    .bind(merchant)
    .bind(evt)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventHit {
                id: r.try_get("id")?,
                stripe_event_id: r.try_get("stripe_event_id")?,
                event_type: r.try_get("event_type")?,
                status: r.try_get("status")?,
                received_at: r.try_get("received_at")?,
            })
        })
        .collect()
}

/// The card a transaction was paid with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub transaction_id: String,
    pub brand: String,
    pub last4: String,
}

/// Records a transaction's Stripe charge and, when Stripe gave them, its card's brand and last
/// 4 digits (a later charge of the same transaction replaces it; a charge without card details
/// keeps the card already known).
pub async fn put_charge<'c, E: Executor<'c, Database = Any>>(
    db: E,
    transaction_id: &str,
    merchant: &str,
    charge_id: &str,
    card: Option<(&str, &str)>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO transaction_charges
           (transaction_id, merchant_account_id, charge_id, card_brand, card_last4, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (transaction_id) DO UPDATE SET
           charge_id = excluded.charge_id,
           card_brand = COALESCE(excluded.card_brand, transaction_charges.card_brand),
           card_last4 = COALESCE(excluded.card_last4, transaction_charges.card_last4),
           updated_at = excluded.updated_at",
    )
    .bind(transaction_id)
    .bind(merchant)
    .bind(charge_id)
    .bind(card.map(|c| c.0.to_string()))
    .bind(card.map(|c| c.1.to_string()))
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The cards of these transactions of `merchant` (those paid by card that Stripe described).
pub async fn cards_of(
    store: &Store,
    merchant: &str,
    transaction_ids: &[&str],
) -> Result<Vec<Card>> {
    if transaction_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = store.hold_reader().await?;
    let sql = "SELECT transaction_id, card_brand, card_last4 FROM transaction_charges
                WHERE merchant_account_id = $1 AND card_brand IS NOT NULL
                  AND card_last4 IS NOT NULL AND transaction_id IN ({list})";
    let rows =
        crate::query::rows_in_list(&mut conn, sql, &[merchant], transaction_ids, 500).await?;
    rows.iter()
        .map(|r| {
            Ok(Card {
                transaction_id: r.try_get(0)?,
                brand: r.try_get(1)?,
                last4: r.try_get(2)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn prefixes_escape_like_wildcards() {
        assert_eq!(like_prefix("user"), "user%");
        assert_eq!(like_prefix("50%_off\\"), "50\\%\\_off\\\\%");
    }
}
