//! Rendering objects in older Stripe API versions.
//!
//! The sandbox keeps every object in the current API shape. A webhook endpoint pinned to an
//! older `api_version` receives each event rendered into that version's shape (once per distinct
//! version, when the event is created; see `webhooks::emit`). The changes rendered are the ones
//! SPEC §4 lists:
//!
//! before 2025-03-31 (basil)
//! - `subscription.current_period_start/end` on the subscription, not on its items;
//! - `invoice.subscription` (and `subscription_details`) instead of `invoice.parent`;
//! - `invoice.paid`, `invoice.paid_out_of_band`, `invoice.charge`, `invoice.payment_intent`
//!   (from the invoice's default invoice payment);
//! - `charge.invoice` and `payment_intent.invoice`;
//! - invoice lines priced by `price` (the price object) with `type`, `proration`,
//!   `subscription_item`, `invoice_item`, instead of `pricing.price_details` and `parent`;
//! - `credit_note.refund` (one id) instead of `credit_note.refunds[]`; `tax_amounts`;
//! - invoice items priced by `price` with `subscription`, `subscription_item`, `unit_amount`,
//!   instead of `pricing` and `parent`;
//!
//! before 2022-11-15
//! - `payment_intent.charges` (a list of the intent's charges);
//! - `charge.refunds` always present as an expanded list.
//!
//! Objects are walked parent first, so a subscription reads its items' periods before the items
//! lose them, and lists inserted by a rendering are rendered in turn.

use serde_json::{Map, Value, json};

use crate::list_object;
use crate::resources::previous;
use crate::state::Account;

const BASIL: &str = "2025-03-31";
const CHARGES_ON_INTENT_UNTIL: &str = "2022-11-15";

/// Whether `version` is older than `date` (`YYYY-MM-DD`, compared on the date part).
fn before(version: &str, date: &str) -> bool {
    version.get(..10).unwrap_or(version) < date
}

/// Whether objects look different in `version` than in the current API.
pub fn differs(version: &str) -> bool {
    before(version, BASIL)
}

/// `obj` (current shape) as `version` shows it; related objects are read from `acct`.
pub fn render(acct: Option<&Account>, obj: &Value, version: &str) -> Value {
    let mut v = obj.clone();
    if differs(version) {
        walk(acct, &mut v, version, 0);
    }
    v
}

/// `previous_attributes` as `version` shows them: the object before the change is rebuilt from
/// the current-shape previous attributes, both sides are rendered, and compared again.
pub fn render_previous(
    acct: Option<&Account>,
    after: &Value,
    prev: &Value,
    version: &str,
) -> Value {
    if !differs(version) {
        return prev.clone();
    }
    let mut before_obj = after.clone();
    if let (Some(b), Some(p)) = (before_obj.as_object_mut(), prev.as_object()) {
        for (k, v) in p {
            if k == "metadata"
                && let (Some(bm), Some(pm)) = (
                    b.get_mut("metadata").and_then(Value::as_object_mut),
                    v.as_object(),
                )
            {
                for (mk, mv) in pm {
                    if mv.as_str() == Some("") {
                        bm.remove(mk);
                    } else {
                        bm.insert(mk.clone(), mv.clone());
                    }
                }
                continue;
            }
            b.insert(k.clone(), v.clone());
        }
    }
    let a = render(acct, after, version);
    let b = render(acct, &before_obj, version);
    previous(&b, &a)
}

fn walk(acct: Option<&Account>, v: &mut Value, version: &str, depth: usize) {
    if depth > 12 {
        return;
    }
    match v {
        Value::Object(_) => {
            transform(acct, v, version);
            if let Value::Object(m) = v {
                for (_, child) in m.iter_mut() {
                    walk(acct, child, version, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(acct, item, version, depth + 1);
            }
        }
        _ => {}
    }
}

fn get<'a>(acct: Option<&'a Account>, kind: &str, id: &str) -> Option<&'a Value> {
    acct?.get(kind, id)
}

/// The invoice an intent pays, if any.
fn invoice_of_intent(acct: Option<&Account>, pi: &Value) -> Value {
    pi.as_str()
        .and_then(|pi| get(acct, crate::resources::invoices::PI_INVOICE, pi))
        .map(|l| l["invoice"].clone())
        .unwrap_or(Value::Null)
}

fn transform(acct: Option<&Account>, v: &mut Value, version: &str) {
    let Some(kind) = v["object"].as_str().map(str::to_string) else {
        return;
    };
    let Some(m) = v.as_object_mut() else {
        return;
    };
    match kind.as_str() {
        "subscription" => {
            let item = m
                .get("items")
                .and_then(|i| i["data"].as_array())
                .and_then(|d| d.first())
                .cloned()
                .unwrap_or(Value::Null);
            insert_sorted(m, "current_period_end", item["current_period_end"].clone());
            insert_sorted(
                m,
                "current_period_start",
                item["current_period_start"].clone(),
            );
            insert_sorted(m, "discount", Value::Null);
        }
        "subscription_item" => {
            m.remove("current_period_end");
            m.remove("current_period_start");
        }
        "invoice" => {
            let parent = m.remove("parent").unwrap_or(Value::Null);
            let sd = &parent["subscription_details"];
            insert_sorted(m, "subscription", sd["subscription"].clone());
            insert_sorted(
                m,
                "subscription_details",
                if sd.is_object() {
                    json!({"metadata": sd["metadata"]})
                } else {
                    Value::Null
                },
            );
            let id = m
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let paid = m.get("status").and_then(Value::as_str) == Some("paid");
            insert_sorted(m, "paid", json!(paid));
            let oob = get(acct, "_invoice_oob", &id).is_some();
            insert_sorted(m, "paid_out_of_band", json!(oob));
            let payment = acct
                .and_then(|a| a.collection("invoice_payment"))
                .and_then(|c| {
                    c.ids
                        .iter()
                        .rev()
                        .filter_map(|i| c.objects.get(i))
                        .find(|p| p["invoice"] == id.as_str() && p["is_default"] == true)
                });
            let pi = payment
                .map(|p| p["payment"]["payment_intent"].clone())
                .unwrap_or(Value::Null);
            let charge = pi
                .as_str()
                .and_then(|pi| get(acct, "payment_intent", pi))
                .map(|pi| pi["latest_charge"].clone())
                .unwrap_or(Value::Null);
            insert_sorted(m, "payment_intent", pi);
            insert_sorted(m, "charge", charge);
            for k in [
                "application_fee_amount",
                "discount",
                "quote",
                "rendering_options",
                "tax",
                "transfer_data",
            ] {
                insert_sorted(m, k, Value::Null);
            }
            insert_sorted(m, "total_tax_amounts", json!([]));
        }
        "line_item" if m.contains_key("pricing") || m.contains_key("parent") => {
            let pricing = m.remove("pricing").unwrap_or(Value::Null);
            let parent = m.remove("parent").unwrap_or(Value::Null);
            let price = pricing["price_details"]["price"]
                .as_str()
                .and_then(|p| get(acct, "price", p))
                .cloned()
                .unwrap_or(Value::Null);
            let sid = &parent["subscription_item_details"];
            let iid = &parent["invoice_item_details"];
            let is_sub = parent["type"] == "subscription_item_details";
            let proration = if is_sub {
                &sid["proration"]
            } else {
                &iid["proration"]
            };
            insert_sorted(m, "price", price);
            insert_sorted(m, "proration", json!(proration.as_bool().unwrap_or(false)));
            insert_sorted(m, "proration_details", json!({"credited_items": null}));
            insert_sorted(
                m,
                "type",
                json!(if is_sub {
                    "subscription"
                } else {
                    "invoiceitem"
                }),
            );
            // The subscription item: a subscription line's own, or that of the (proration)
            // invoice item; absent when there is none (not nullable in those versions).
            let si = if is_sub {
                sid["subscription_item"].as_str().map(str::to_string)
            } else {
                iid["invoice_item"]
                    .as_str()
                    .and_then(|ii| get(acct, "invoiceitem", ii))
                    .and_then(|ii| {
                        ii["parent"]["subscription_details"]["subscription_item"]
                            .as_str()
                            .map(str::to_string)
                    })
            };
            if let Some(si) = si {
                insert_sorted(m, "subscription_item", json!(si));
            }
            // Present only on invoice-item lines (not nullable in those versions).
            if let Some(ii) = iid["invoice_item"].as_str() {
                insert_sorted(m, "invoice_item", json!(ii));
            }
            let amount = m.get("amount").cloned().unwrap_or(json!(0));
            insert_sorted(m, "amount_excluding_tax", amount);
            insert_sorted(
                m,
                "unit_amount_excluding_tax",
                pricing["unit_amount_decimal"].clone(),
            );
            insert_sorted(m, "tax_amounts", json!([]));
            insert_sorted(m, "tax_rates", json!([]));
        }
        "invoiceitem" if m.contains_key("pricing") || m.contains_key("parent") => {
            let pricing = m.remove("pricing").unwrap_or(Value::Null);
            let parent = m.remove("parent").unwrap_or(Value::Null);
            let price = pricing["price_details"]["price"]
                .as_str()
                .and_then(|p| get(acct, "price", p))
                .cloned()
                .unwrap_or(Value::Null);
            let sd = &parent["subscription_details"];
            insert_sorted(m, "price", price);
            insert_sorted(m, "subscription", sd["subscription"].clone());
            // Present only on items of a subscription item (not nullable in those versions).
            if let Some(si) = sd["subscription_item"].as_str() {
                insert_sorted(m, "subscription_item", json!(si));
            }
            let unit = pricing["unit_amount_decimal"].clone();
            insert_sorted(
                m,
                "unit_amount",
                unit.as_str()
                    .and_then(|u| u.parse::<i64>().ok())
                    .map_or(Value::Null, |u| json!(u)),
            );
            insert_sorted(m, "unit_amount_decimal", unit);
        }
        "charge" => {
            let inv = invoice_of_intent(acct, m.get("payment_intent").unwrap_or(&Value::Null));
            insert_sorted(m, "invoice", inv);
            if before(version, CHARGES_ON_INTENT_UNTIL) && !m.contains_key("refunds") {
                let id = m
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let refunds = children(acct, "refund", "charge", &id);
                insert_sorted(
                    m,
                    "refunds",
                    list_object(&format!("/v1/charges/{id}/refunds"), refunds, false),
                );
            }
        }
        "payment_intent" => {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            insert_sorted(m, "invoice", invoice_of_intent(acct, &id));
            if before(version, CHARGES_ON_INTENT_UNTIL) {
                let id = id.as_str().unwrap_or_default().to_string();
                let charges = children(acct, "charge", "payment_intent", &id);
                insert_sorted(
                    m,
                    "charges",
                    list_object(&format!("/v1/charges?payment_intent={id}"), charges, false),
                );
            }
        }
        "credit_note" => {
            let refunds = m.remove("refunds").unwrap_or(Value::Null);
            insert_sorted(m, "refund", refunds[0]["refund"].clone());
            insert_sorted(m, "tax_amounts", json!([]));
        }
        "credit_note_line_item" => {
            insert_sorted(m, "tax_amounts", json!([]));
        }
        _ => {}
    }
}

/// Objects of `kind` whose `field` is `id`, newest first (at most 100).
fn children(acct: Option<&Account>, kind: &str, field: &str, id: &str) -> Vec<Value> {
    acct.and_then(|a| a.collection(kind))
        .map(|c| {
            c.ids
                .iter()
                .rev()
                .filter_map(|i| c.objects.get(i))
                .filter(|o| o[field] == id)
                .take(100)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Inserts `key` keeping Stripe's field order (`id`, `object`, then alphabetical), replacing
/// any value already there.
fn insert_sorted(m: &mut Map<String, Value>, key: &str, value: Value) {
    if let Some(slot) = m.get_mut(key) {
        *slot = value;
        return;
    }
    let old = std::mem::take(m);
    let mut placed = false;
    for (k, v) in old {
        if !placed && k != "id" && k != "object" && k.as_str() > key {
            m.insert(key.to_string(), value.clone());
            placed = true;
        }
        m.insert(k, v);
    }
    if !placed {
        m.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        assert!(differs("2022-11-15"));
        assert!(differs("2025-02-24.acacia"));
        assert!(!differs("2025-03-31.basil"));
        assert!(!differs(crate::CURRENT_API_VERSION));
        assert!(before("2020-08-27", CHARGES_ON_INTENT_UNTIL));
        assert!(!before("2022-11-15", CHARGES_ON_INTENT_UNTIL));
    }

    #[test]
    fn subscription_periods_move_up() {
        let sub = json!({"id": "sub_1", "object": "subscription", "customer": "cus_1",
            "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                "current_period_end": 20, "current_period_start": 10}], "has_more": false,
                "url": "/v1/subscription_items?subscription=sub_1"}});
        let old = render(None, &sub, "2022-11-15");
        assert_eq!(old["current_period_start"], 10);
        assert_eq!(old["current_period_end"], 20);
        assert!(old["items"]["data"][0].get("current_period_end").is_none());
        let keys: Vec<&String> = old
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys[0], "id");
        assert_eq!(keys[1], "object");
        let cur = render(None, &sub, crate::CURRENT_API_VERSION);
        assert_eq!(cur, sub);
    }

    #[test]
    fn previous_attributes_follow_the_shape() {
        let after = json!({"id": "in_1", "object": "invoice", "status": "paid",
                           "parent": null, "metadata": {"a": "1"}});
        let prev = json!({"status": "open", "metadata": {"a": ""}});
        let p = render_previous(None, &after, &prev, "2022-11-15");
        assert_eq!(p["status"], "open");
        assert_eq!(p["paid"], false);
        assert_eq!(p["metadata"]["a"], "");
    }
}
