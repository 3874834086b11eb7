//! The Stripe charge of a transaction and the card it was paid with (brand and last 4 digits,
//! from the charge's `payment_method_details.card`), kept for the dashboard: shown beside the
//! payment and searchable by the charge's id. A display copy of what Stripe says, written
//! after each read of the charge; a failure to write it is logged and changes nothing else.

use serde_json::Value;
use tollgate_store::TransactionRow;

use crate::ApiContext;

/// The charge id and, for a card payment, (brand, last 4) of a Stripe charge object.
pub fn charge_card(ch: &Value) -> Option<(&str, Option<(&str, &str)>)> {
    let id = ch["id"].as_str()?;
    let card = &ch["payment_method_details"]["card"];
    let brand = card["display_brand"]
        .as_str()
        .filter(|b| !b.is_empty())
        .or_else(|| card["brand"].as_str());
    let details = match (brand, card["last4"].as_str()) {
        (Some(b), Some(l)) if !b.is_empty() && !l.is_empty() => Some((b, l)),
        _ => None,
    };
    Some((id, details))
}

/// Records the charge `ch` (an expanded Stripe charge) of transaction `t`.
pub async fn remember_charge(ctx: &ApiContext, t: &TransactionRow, ch: &Value) {
    let Some((id, card)) = charge_card(ch) else {
        return;
    };
    if let Err(e) = tollgate_store::search::put_charge(
        ctx.store.writer(),
        &t.id,
        &t.merchant_account_id,
        id,
        card,
        ctx.now(),
    )
    .await
    {
        tracing::warn!(error = %e, transaction = %t.id, "recording a transaction's charge");
    }
}

/// Records the latest charge of PaymentIntent `pi` when the answer expands it (or, before
/// 2022-11-15, embeds it in `charges.data`).
pub async fn remember_intent(ctx: &ApiContext, t: &TransactionRow, pi: &Value) {
    let lc = &pi["latest_charge"];
    if lc.is_object() {
        remember_charge(ctx, t, lc).await;
    } else if let Some(first) = pi["charges"]["data"].as_array().and_then(|d| d.first()) {
        remember_charge(ctx, t, first).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::charge_card;

    #[test]
    fn cards_come_from_payment_method_details() {
        let ch = json!({"id": "ch_1", "payment_method_details": {"type": "card",
            "card": {"brand": "visa", "display_brand": "visa", "last4": "4242"}}});
        assert_eq!(charge_card(&ch), Some(("ch_1", Some(("visa", "4242")))));
        let bank = json!({"id": "py_1", "payment_method_details": {"type": "sepa_debit"}});
        assert_eq!(charge_card(&bank), Some(("py_1", None)));
        assert_eq!(charge_card(&json!({})), None);
    }
}
