//! Stripe JSON → the domain's purchase records ([`tollgate_domain::entitlements::Record`]).
//! The only place that knows Stripe's field names for subscriptions, invoices, checkout
//! sessions, credit notes, invoice payments, disputes and (for entitlements) payment intents
//! and charges, in every Stripe API version from 2020-08-27 on:
//!
//! | what | up to 2025-02 | from 2025-03-31 (basil) |
//! |---|---|---|
//! | subscription period | `current_period_start/end` on the subscription | on each item |
//! | invoice → subscription | `invoice.subscription` | `invoice.parent.subscription_details.subscription` |
//! | invoice line product | `line.price.product` (or `plan.product`) | `line.pricing.price_details.product` |
//! | invoice → payment | `invoice.payment_intent` / `invoice.charge`, `charge.invoice` | `invoice.payments` / `/v1/invoice_payments` |
//! | credit note → refund | `credit_note.refund` | `credit_note.refunds[]` |
//!
//! and before 2022-11-15 a PaymentIntent embeds its charges (`charges.data`).
//!
//! Ids may come as strings or as expanded objects everywhere; both are read.
//!
//! And the other way, the read model → the Glassfy-compatible answer: [`Permission`] (one
//! permission as the check, `POST /v1/connect_stripe`, the subscriber and the
//! `customer.state_changed` notice show it) and [`Permissions`] (the check's answer).

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_domain::entitlements::{
    ChargeRec, CheckoutRec, CreditNoteRec, DisputeRec, FraudWarningRec, InvoicePaymentRec,
    InvoiceRec, PaymentIntentRec, Record, SubStatus, SubscriptionRec,
};
use tollgate_store::credits::BalanceRow;
use tollgate_store::entitlements::PermissionRow;
use utoipa::ToSchema;

use super::runtime::CustomerRows;

/// An id field: a string, or an expanded object's `id`.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn i(v: &Value) -> Option<i64> {
    v.as_i64()
}

fn list(v: &Value) -> &[Value] {
    // A list object (`{data: [...]}`) or a bare array.
    v.get("data")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The product a price-bearing line names: `price.product` (old), `pricing.price_details.product`
/// (basil invoice lines), `plan.product` (oldest).
fn product_of_line(line: &Value) -> Option<String> {
    id_of(&line["price"]["product"])
        .or_else(|| id_of(&line["pricing"]["price_details"]["product"]))
        .or_else(|| id_of(&line["plan"]["product"]))
}

/// The Stripe customer an object belongs to (`customer`, string or expanded).
pub fn customer_of(obj: &Value) -> Option<String> {
    if obj["object"] == "customer" {
        return s(&obj["id"]);
    }
    id_of(&obj["customer"])
}

/// The customid an object names: `metadata[key]`, or a Checkout Session's
/// `client_reference_id`.
pub fn customid_of(obj: &Value, key: &str) -> Option<String> {
    let from_meta = obj["metadata"][key]
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(v) = from_meta {
        return Some(v.to_string());
    }
    if obj["object"] == "checkout.session" {
        return obj["client_reference_id"]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
    }
    None
}

/// The test clock an object's customer is on (`test_clock` on customers, subscriptions,
/// invoices).
pub fn test_clock_of(obj: &Value) -> Option<String> {
    id_of(&obj["test_clock"])
}

fn subscription(o: &Value) -> SubscriptionRec {
    let items = list(&o["items"]);
    let products: BTreeSet<String> = items.iter().filter_map(product_of_line).collect();
    // Basil: periods live on the items; the subscription's is the widest of them.
    let item_start = items
        .iter()
        .filter_map(|it| i(&it["current_period_start"]))
        .min();
    let item_end = items
        .iter()
        .filter_map(|it| i(&it["current_period_end"]))
        .max();
    SubscriptionRec {
        id: s(&o["id"]).unwrap_or_default(),
        status: SubStatus::parse(o["status"].as_str().unwrap_or_default()),
        products,
        current_period_start: i(&o["current_period_start"]).or(item_start),
        current_period_end: i(&o["current_period_end"]).or(item_end),
        cancel_at_period_end: o["cancel_at_period_end"].as_bool().unwrap_or(false),
        cancel_at: i(&o["cancel_at"]),
        ended_at: i(&o["ended_at"]),
        trial_end: i(&o["trial_end"]),
        cancellation_reason: s(&o["cancellation_details"]["reason"]),
        latest_invoice: id_of(&o["latest_invoice"]),
        created: i(&o["created"]).unwrap_or(0),
    }
}

/// A Checkout Session; `line_items` are the session's line items read separately (the event
/// does not carry them), or `None` to use an expanded `line_items` if present.
fn checkout(o: &Value, line_items: Option<&[Value]>) -> CheckoutRec {
    let lines = line_items.unwrap_or_else(|| list(&o["line_items"]));
    CheckoutRec {
        id: s(&o["id"]).unwrap_or_default(),
        mode: s(&o["mode"]).unwrap_or_default(),
        status: s(&o["status"]).unwrap_or_default(),
        payment_status: s(&o["payment_status"]).unwrap_or_default(),
        products: lines.iter().filter_map(product_of_line).collect(),
        sku: s(&o["metadata"]["sku"]),
        payment_intent: id_of(&o["payment_intent"]),
        invoice: id_of(&o["invoice"]),
        created: i(&o["created"]).unwrap_or(0),
    }
}

/// `invoice.subscription` (up to 2025-02) or `parent.subscription_details.subscription`.
pub fn invoice_subscription(o: &Value) -> Option<String> {
    id_of(&o["subscription"])
        .or_else(|| id_of(&o["parent"]["subscription_details"]["subscription"]))
}

fn invoice(o: &Value) -> InvoiceRec {
    let mut payment_intents: BTreeSet<String> = id_of(&o["payment_intent"]).into_iter().collect();
    // Basil: `payments` (expanded list of invoice payments).
    for p in list(&o["payments"]) {
        if let Some(pi) = id_of(&p["payment"]["payment_intent"]) {
            payment_intents.insert(pi);
        }
    }
    let status = match s(&o["status"]) {
        Some(st) => st,
        // Very old invoices: only `paid`.
        None if o["paid"].as_bool() == Some(true) => "paid".into(),
        None => "open".into(),
    };
    InvoiceRec {
        id: s(&o["id"]).unwrap_or_default(),
        subscription: invoice_subscription(o),
        status,
        total: i(&o["total"]).unwrap_or(0),
        amount_paid: i(&o["amount_paid"]).unwrap_or(0),
        products: list(&o["lines"])
            .iter()
            .filter_map(product_of_line)
            .collect(),
        payment_intents,
        charge: id_of(&o["charge"]),
        next_payment_attempt: i(&o["next_payment_attempt"]),
        created: i(&o["created"]).unwrap_or(0),
    }
}

fn payment_intent(o: &Value) -> PaymentIntentRec {
    PaymentIntentRec {
        id: s(&o["id"]).unwrap_or_default(),
        status: s(&o["status"]).unwrap_or_default(),
        amount: i(&o["amount"]).unwrap_or(0),
        amount_received: i(&o["amount_received"]).unwrap_or(0),
        sku: o["metadata"]["sku"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        invoice: id_of(&o["invoice"]),
        created: i(&o["created"]).unwrap_or(0),
    }
}

fn charge(o: &Value) -> ChargeRec {
    let amount = i(&o["amount"]).unwrap_or(0);
    let captured = o["captured"].as_bool().unwrap_or(false);
    ChargeRec {
        id: s(&o["id"]).unwrap_or_default(),
        payment_intent: id_of(&o["payment_intent"]),
        invoice: id_of(&o["invoice"]),
        status: s(&o["status"]).unwrap_or_default(),
        amount,
        amount_captured: i(&o["amount_captured"]).unwrap_or(if captured { amount } else { 0 }),
        amount_refunded: i(&o["amount_refunded"]).unwrap_or(0),
        refunded: o["refunded"].as_bool().unwrap_or(false),
        disputed: o["disputed"].as_bool().unwrap_or(false),
    }
}

fn dispute(o: &Value) -> DisputeRec {
    DisputeRec {
        id: s(&o["id"]).unwrap_or_default(),
        charge: id_of(&o["charge"]),
        payment_intent: id_of(&o["payment_intent"])
            .or_else(|| id_of(&o["charge"]["payment_intent"])),
        status: s(&o["status"]).unwrap_or_default(),
    }
}

fn credit_note(o: &Value) -> CreditNoteRec {
    CreditNoteRec {
        id: s(&o["id"]).unwrap_or_default(),
        invoice: id_of(&o["invoice"]),
        status: s(&o["status"]).unwrap_or_else(|| "issued".into()),
        amount: i(&o["amount"]).or_else(|| i(&o["total"])).unwrap_or(0),
    }
}

/// The refunds a credit note made: `refund` (old) or `refunds[].refund` (basil).
pub fn credit_note_refunds(o: &Value) -> Vec<String> {
    let mut out: Vec<String> = id_of(&o["refund"]).into_iter().collect();
    if let Some(arr) = o["refunds"].as_array() {
        out.extend(
            arr.iter()
                .filter_map(|r| id_of(&r["refund"]).or_else(|| id_of(r))),
        );
    }
    out
}

fn invoice_payment(o: &Value) -> InvoicePaymentRec {
    InvoicePaymentRec {
        id: s(&o["id"]).unwrap_or_default(),
        invoice: id_of(&o["invoice"]),
        payment_intent: id_of(&o["payment"]["payment_intent"]),
        charge: id_of(&o["payment"]["charge"]),
        status: s(&o["status"]).unwrap_or_default(),
    }
}

/// Everything a Stripe object teaches: its own record, and the records of objects it embeds
/// (a pre-2022-11-15 PaymentIntent's `charges.data`, an expanded `latest_charge`, an old
/// charge's expanded dispute…). Objects entitlements do not use give nothing.
pub fn records_of(o: &Value, line_items: Option<&[Value]>) -> Vec<Record> {
    let mut out = Vec::new();
    if s(&o["id"]).is_none() {
        return out;
    }
    match o["object"].as_str().unwrap_or_default() {
        "subscription" => out.push(Record::Subscription(subscription(o))),
        "checkout.session" => out.push(Record::Checkout(checkout(o, line_items))),
        "invoice" => {
            out.push(Record::Invoice(invoice(o)));
            for key in ["charge", "payment_intent"] {
                if o[key].is_object() {
                    out.extend(records_of(&o[key], None));
                }
            }
        }
        "payment_intent" => {
            out.push(Record::PaymentIntent(payment_intent(o)));
            for c in list(&o["charges"]) {
                out.push(Record::Charge(charge(c)));
            }
            if o["latest_charge"].is_object() {
                out.push(Record::Charge(charge(&o["latest_charge"])));
            }
        }
        "charge" => {
            out.push(Record::Charge(charge(o)));
            if o["dispute"].is_object() {
                out.push(Record::Dispute(dispute(&o["dispute"])));
            }
        }
        "dispute" => out.push(Record::Dispute(dispute(o))),
        "radar.early_fraud_warning" => out.push(Record::FraudWarning(FraudWarningRec {
            id: s(&o["id"]).unwrap_or_default(),
            charge: id_of(&o["charge"]),
            payment_intent: id_of(&o["payment_intent"])
                .or_else(|| id_of(&o["charge"]["payment_intent"])),
            actionable: o["actionable"].as_bool().unwrap_or(true),
        })),
        "credit_note" => out.push(Record::CreditNote(credit_note(o))),
        "invoice_payment" => out.push(Record::InvoicePayment(invoice_payment(o))),
        _ => {}
    }
    out
}

/// The objects a record is attached to: where a dispute, charge, credit note or invoice
/// payment leads to the purchase (and its customer).
pub fn refs_of(r: &Record) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match r {
        Record::Subscription(s) => out.extend(s.latest_invoice.clone()),
        Record::Checkout(c) => {
            out.extend(c.payment_intent.clone());
            out.extend(c.invoice.clone());
        }
        Record::Invoice(i) => {
            out.extend(i.subscription.clone());
            out.extend(i.payment_intents.iter().cloned());
            out.extend(i.charge.clone());
        }
        Record::PaymentIntent(p) => out.extend(p.invoice.clone()),
        Record::Charge(c) => {
            out.extend(c.payment_intent.clone());
            out.extend(c.invoice.clone());
        }
        Record::Dispute(d) => {
            out.extend(d.charge.clone());
            out.extend(d.payment_intent.clone());
        }
        Record::CreditNote(c) => out.extend(c.invoice.clone()),
        Record::FraudWarning(w) => {
            out.extend(w.charge.clone());
            out.extend(w.payment_intent.clone());
        }
        Record::InvoicePayment(p) => {
            out.extend(p.invoice.clone());
            out.extend(p.payment_intent.clone());
            out.extend(p.charge.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---- Glassfy-compatible rendering -------------------------------------------------------------

/// One SKU of the catalogue as it is stored with a permission (`PermissionRow::skus`): read
/// borrowing from the stored JSON (identifiers have nothing to unescape).
#[derive(Deserialize)]
struct StoredSku<'a> {
    #[serde(borrow, default)]
    identifier: Cow<'a, str>,
    #[serde(borrow, default)]
    product_id: Cow<'a, str>,
    #[serde(default)]
    trial: bool,
}

/// A SKU that grants a permission, as Glassfy's SDKs read it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SkuUse)]
pub struct SkuUse<'a> {
    /// The SKU's identifier.
    #[schema(value_type = String, example = "web_monthly")]
    pub identifier: Cow<'a, str>,
    /// Its Stripe product id (`prod_…`).
    #[schema(value_type = String, example = "prod_Example")]
    pub productid: Cow<'a, str>,
    /// 4: Stripe (Glassfy's store code).
    #[schema(value_type = i64, minimum = 4, maximum = 4, example = 4)]
    pub store: u8,
    /// The purchase that grants it is in a trial.
    pub istrial: bool,
    /// Always false (Stripe has no introductory offers).
    pub isinintrooffer: bool,
}

/// One permission of a customer, as Glassfy's SDKs read it. A held permission past its
/// `valid_until` (not yet re-evaluated by the expiry job) is shown lapsed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Permission)]
pub struct Permission<'a> {
    /// The permission's identifier.
    #[schema(value_type = String, example = "premium")]
    pub identifier: &'a str,
    /// Whether the customer holds it now.
    pub is_valid: bool,
    /// 5 renewing, 4 canceling at period end, 3 lifetime, 2 granted by hand, 1 grace, 0
    /// incomplete, -1 grace over, -2 payment failed, -5 expired/canceled,
    /// -8 refunded/credited/disputed/revoked, -9 never bought, -10 paused.
    #[schema(example = 5)]
    pub entitlement: i64,
    /// Epoch seconds, never null (Glassfy's SDK needs a number): the expiry; 253402300799
    /// (9999-12-31T23:59:59Z) for a permission held with no end; 0 for one not held with no
    /// expiry.
    #[schema(example = 1767225600)]
    pub expires_date: i64,
    /// The expiry in RFC 3339 (whole seconds); null when there is none.
    #[schema(format = DateTime, required = true, example = "2026-01-01T00:00:00Z")]
    pub expires_at: Option<String>,
    /// The SKUs that grant it.
    pub skuarray: Vec<SkuUse<'a>>,
    /// Metered permissions only (absent on the others): the units available now, the ledger's
    /// balance less the units open reservations hold. `is_valid` is `balance > 0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, example = 995)]
    pub balance: Option<i64>,
    /// Metered permissions only: the units of the lots still open (granted by purchases, paid
    /// periods, grants and adjustments, and not yet ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, example = 1000)]
    pub granted: Option<i64>,
    /// Metered permissions only: the units of those lots consumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, example = 5)]
    pub consumed: Option<i64>,
    /// Metered permissions only: epoch seconds (as `expires_date`) when the next lot ends (a
    /// period's units reset, a grant or a pack expires); null when nothing resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, example = 1767225600)]
    pub resets_at: Option<Option<i64>>,
}

impl<'a> Permission<'a> {
    /// The permission `r` at `now_ms`.
    pub fn of(r: &'a PermissionRow, now_ms: i64) -> Self {
        let lapsed = r.is_valid && r.valid_until.is_some_and(|v| now_ms >= v);
        let skuarray = serde_json::from_str::<Vec<StoredSku<'a>>>(&r.skus)
            .unwrap_or_default()
            .into_iter()
            .map(|s| SkuUse {
                identifier: s.identifier,
                productid: s.product_id,
                store: 4,
                istrial: s.trial,
                isinintrooffer: false,
            })
            .collect();
        let expires_secs = r.expires_at.map(|ms| ms.div_euclid(1000));
        let is_valid = r.is_valid && !lapsed;
        Permission {
            identifier: &r.identifier,
            is_valid,
            entitlement: if lapsed {
                i64::from(tollgate_domain::entitlements::code::EXPIRED)
            } else {
                r.entitlement
            },
            expires_date: super::expires_date(expires_secs, is_valid),
            expires_at: expires_secs.map(super::rfc3339_secs),
            skuarray,
            balance: None,
            granted: None,
            consumed: None,
            resets_at: None,
        }
    }

    /// The metered permission of balance `b` at `now_ms`, with its permission row `r` when the
    /// customer has one (the purchases or grants that give it): valid while units are
    /// available; without a row (units given by adjustments alone) its code is 2, granted by
    /// hand.
    pub fn metered(r: Option<&'a PermissionRow>, b: &'a BalanceRow, now_ms: i64) -> Self {
        let mut p = match r {
            Some(r) => Permission::of(r, now_ms),
            None => Permission {
                identifier: &b.permission,
                is_valid: false,
                entitlement: i64::from(tollgate_domain::entitlements::code::GRANTED),
                expires_date: 0,
                expires_at: None,
                skuarray: Vec::new(),
                balance: None,
                granted: None,
                consumed: None,
                resets_at: None,
            },
        };
        let available = b.available().max(0);
        p.is_valid = available > 0;
        let expires_secs = r.and_then(|r| r.expires_at).map(|ms| ms.div_euclid(1000));
        p.expires_date = super::expires_date(expires_secs, p.is_valid);
        p.balance = Some(available);
        p.granted = Some(b.granted.max(0));
        p.consumed = Some(b.consumed.max(0));
        p.resets_at = Some(b.resets_at.map(|ms| ms.div_euclid(1000)));
        p
    }

    /// Every permission of a customer at `now_ms`, as the check lists them: its permission rows
    /// in their order, metered ones with their balance, then balances of metered permissions it
    /// has no row of (units given by adjustments alone) that hold or held units.
    pub fn all(c: &'a CustomerRows, now_ms: i64) -> Vec<Permission<'a>> {
        if c.balances.is_empty() {
            return c
                .permissions
                .iter()
                .map(|r| Permission::of(r, now_ms))
                .collect();
        }
        let balance = |id: &str| c.balances.iter().find(|b| b.permission == id);
        let mut out: Vec<Permission<'a>> = c
            .permissions
            .iter()
            .map(|r| match balance(&r.identifier) {
                Some(b) => Permission::metered(Some(r), b, now_ms),
                None => Permission::of(r, now_ms),
            })
            .collect();
        out.extend(
            c.balances
                .iter()
                .filter(|b| !c.permissions.iter().any(|r| r.identifier == b.permission))
                .filter(|b| b.balance != 0 || b.granted != 0 || b.consumed != 0)
                .map(|b| Permission::metered(None, b, now_ms)),
        );
        out
    }
}

/// What the balances of a customer add to the check's ETag: a digest of the figures the check
/// shows (FNV-1a), `None` without balances (the ETag is then the state version alone, as
/// before).
pub fn balances_tag(balances: &[BalanceRow]) -> Option<String> {
    if balances.is_empty() {
        return None;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for b in balances {
        eat(b.permission.as_bytes());
        eat(&[0]);
        for n in [b.balance, b.held, b.granted, b.consumed] {
            eat(&n.to_le_bytes());
        }
        eat(&b.resets_at.unwrap_or(-1).to_le_bytes());
    }
    Some(format!("{h:016x}"))
}

/// The permission check's answer: the customid and every permission it was ever given (one
/// never bought is absent).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Permissions)]
pub struct Permissions<'a> {
    /// The business's own id of its user.
    #[schema(value_type = String, example = "user-7")]
    pub customid: &'a str,
    pub permissions: Vec<Permission<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(skus: &str, valid_until: Option<i64>) -> PermissionRow {
        PermissionRow {
            identifier: "premium".into(),
            is_valid: true,
            entitlement: 5,
            expires_at: Some(1_767_225_600_000),
            valid_until,
            skus: skus.into(),
            updated_at: 0,
            version: 3,
        }
    }

    /// The Glassfy permission, byte for byte as the check wrote it with `json!` before it was a
    /// struct (field order, names, the store code, a lapse by the clock).
    #[test]
    fn permissions_render_as_glassfy_reads_them() {
        let r = row(
            r#"[{"identifier":"web_monthly","product_id":"prod_1","trial":true}]"#,
            Some(1_767_225_600_000),
        );
        let held = serde_json::to_string(&Permission::of(&r, 0)).unwrap();
        assert_eq!(
            held,
            r#"{"identifier":"premium","is_valid":true,"entitlement":5,"expires_date":1767225600,"expires_at":"2026-01-01T00:00:00Z","skuarray":[{"identifier":"web_monthly","productid":"prod_1","store":4,"istrial":true,"isinintrooffer":false}]}"#
        );
        let lapsed = Permission::of(&r, 1_767_225_600_000);
        assert_eq!((lapsed.is_valid, lapsed.entitlement), (false, -5));
        // Held with no end: `expires_date` is 9999-12-31T23:59:59Z, `expires_at` null; stored
        // SKUs that cannot be read are none.
        let mut forever = row("not json", None);
        forever.expires_at = None;
        let answer = Permissions {
            customid: "user-7",
            permissions: vec![Permission::of(&forever, 0)],
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"customid":"user-7","permissions":[{"identifier":"premium","is_valid":true,"entitlement":5,"expires_date":253402300799,"expires_at":null,"skuarray":[]}]}"#
        );
    }

    fn balance(permission: &str, balance: i64, held: i64, resets_at: Option<i64>) -> BalanceRow {
        BalanceRow {
            customid: "user-7".into(),
            permission: permission.into(),
            balance,
            held,
            granted: 1000,
            consumed: 1000 - balance,
            due_at: resets_at,
            resets_at,
            low_threshold: None,
            updated_at: 0,
        }
    }

    /// A metered permission carries its amounts after the Glassfy fields (a non-metered one
    /// beside it renders as before); `is_valid` follows the available units, not the purchase.
    #[test]
    fn metered_permissions_show_their_amounts() {
        let mut credits = row(
            r#"[{"identifier":"credits_monthly","product_id":"prod_1","trial":false}]"#,
            Some(1_767_225_600_000),
        );
        credits.identifier = "ai_credits".into();
        let premium = row("[]", None);
        let c = CustomerRows {
            permissions: vec![credits, premium],
            balances: vec![balance("ai_credits", 995, 45, Some(1_767_225_600_000))],
        };
        let answer = Permissions {
            customid: "user-7",
            permissions: Permission::all(&c, 0),
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"customid":"user-7","permissions":[{"identifier":"ai_credits","is_valid":true,"entitlement":5,"expires_date":1767225600,"expires_at":"2026-01-01T00:00:00Z","skuarray":[{"identifier":"credits_monthly","productid":"prod_1","store":4,"istrial":false,"isinintrooffer":false}],"balance":950,"granted":1000,"consumed":5,"resets_at":1767225600},{"identifier":"premium","is_valid":true,"entitlement":5,"expires_date":1767225600,"expires_at":"2026-01-01T00:00:00Z","skuarray":[]}]}"#
        );
        // Everything held by a reservation: not valid, though the purchase holds.
        let c = CustomerRows {
            permissions: c.permissions.clone(),
            balances: vec![balance("ai_credits", 40, 40, None)],
        };
        let all = Permission::all(&c, 0);
        assert_eq!((all[0].is_valid, all[0].balance), (false, Some(0)));
        assert_eq!(all[0].resets_at, Some(None));
        // Units given by an adjustment alone (no permission row): listed after the rows, code 2,
        // no end; an untouched zero balance is not listed.
        let c = CustomerRows {
            permissions: Vec::new(),
            balances: vec![balance("bonus", 100, 0, None), {
                let mut z = balance("zero", 0, 0, None);
                (z.granted, z.consumed) = (0, 0);
                z
            }],
        };
        assert_eq!(
            serde_json::to_string(&Permission::all(&c, 0)).unwrap(),
            r#"[{"identifier":"bonus","is_valid":true,"entitlement":2,"expires_date":253402300799,"expires_at":null,"skuarray":[],"balance":100,"granted":1000,"consumed":900,"resets_at":null}]"#
        );
        // The ETag changes with every figure the check shows, and only customers with balances
        // have a balance part.
        assert_eq!(balances_tag(&[]), None);
        let a = balances_tag(&[balance("ai_credits", 995, 0, None)]);
        let b = balances_tag(&[balance("ai_credits", 995, 5, None)]);
        let c = balances_tag(&[balance("ai_credits", 994, 0, None)]);
        assert!(a.is_some() && a != b && a != c && b != c);
    }

    /// A subscription as API version 2022-11-15 renders it: the period on the subscription.
    fn sub_2022() -> Value {
        json!({
            "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs", "object": "subscription",
            "cancel_at": null, "cancel_at_period_end": false, "canceled_at": null,
            "collection_method": "charge_automatically", "created": 1679609767,
            "current_period_end": 1682288167, "current_period_start": 1679609767,
            "customer": "cus_Na6dX7aXxi11N4", "ended_at": null,
            "items": {"object": "list", "data": [{
                "id": "si_Na6dzxczY5fwHx", "object": "subscription_item", "created": 1679609768,
                "metadata": {},
                "plan": {"id": "price_1MowQULkdIwHu7ixraBm864M", "object": "plan", "product": "prod_Na6dGcTsmU0I4R", "interval": "month"},
                "price": {"id": "price_1MowQULkdIwHu7ixraBm864M", "object": "price", "product": "prod_Na6dGcTsmU0I4R", "recurring": {"interval": "month"}, "unit_amount": 1000},
                "quantity": 1, "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs"
            }]},
            "latest_invoice": "in_1MowQWLkdIwHu7ixuzkSPfKd", "livemode": false,
            "metadata": {"customid": "user-7"}, "status": "active", "trial_end": null,
            "test_clock": null
        })
    }

    /// The same subscription as basil and later render it: periods on the items,
    /// `cancellation_details`, `billing_mode`.
    fn sub_current() -> Value {
        json!({
            "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs", "object": "subscription",
            "billing_cycle_anchor": 1679609767, "billing_mode": {"type": "classic"},
            "cancel_at": null, "cancel_at_period_end": false, "canceled_at": null,
            "cancellation_details": {"comment": null, "feedback": null, "reason": null},
            "collection_method": "charge_automatically", "created": 1679609767,
            "customer": "cus_Na6dX7aXxi11N4", "ended_at": null,
            "items": {"object": "list", "data": [{
                "id": "si_Na6dzxczY5fwHx", "object": "subscription_item", "created": 1679609768,
                "current_period_end": 1682288167, "current_period_start": 1679609767,
                "discounts": [], "metadata": {},
                "price": {"id": "price_1MowQULkdIwHu7ixraBm864M", "object": "price", "product": "prod_Na6dGcTsmU0I4R", "recurring": {"interval": "month"}, "unit_amount": 1000},
                "quantity": 1, "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs"
            }]},
            "latest_invoice": "in_1MowQWLkdIwHu7ixuzkSPfKd", "livemode": false,
            "metadata": {"customid": "user-7"}, "status": "active", "trial_end": null,
            "test_clock": null
        })
    }

    #[test]
    fn subscriptions_of_both_versions_give_the_same_record() {
        let old = records_of(&sub_2022(), None);
        let new = records_of(&sub_current(), None);
        assert_eq!(old, new);
        let Record::Subscription(s) = &old[0] else {
            panic!("{old:?}")
        };
        assert_eq!(s.current_period_end, Some(1682288167));
        assert_eq!(s.current_period_start, Some(1679609767));
        assert_eq!(s.status, SubStatus::Active);
        assert!(s.products.contains("prod_Na6dGcTsmU0I4R"));
        assert_eq!(
            customer_of(&sub_2022()).as_deref(),
            Some("cus_Na6dX7aXxi11N4")
        );
        assert_eq!(
            customid_of(&sub_current(), "customid").as_deref(),
            Some("user-7")
        );
        assert_eq!(customid_of(&sub_current(), "user_id"), None);

        let mut canceled = sub_current();
        canceled["status"] = json!("canceled");
        canceled["cancellation_details"]["reason"] = json!("payment_failed");
        let Record::Subscription(c) = &records_of(&canceled, None)[0] else {
            panic!()
        };
        assert_eq!(c.cancellation_reason.as_deref(), Some("payment_failed"));
    }

    fn invoice_2022() -> Value {
        json!({
            "id": "in_1MtHbELkdIwHu7ixl4OzzPMv", "object": "invoice",
            "amount_due": 999, "amount_paid": 999, "amount_remaining": 0,
            "billing_reason": "subscription_cycle", "charge": "ch_3MtHbELkdIwHu7ix0Xkqa0Px",
            "created": 1680644467, "customer": "cus_NeZwdNtLEOXuvB",
            "lines": {"object": "list", "data": [{
                "id": "il_1MtHbELkdIwHu7ixtK2LYyoX", "object": "line_item", "amount": 999,
                "price": {"id": "price_1", "object": "price", "product": "prod_NWjs8kKbJWmuuc"},
                "plan": {"id": "price_1", "product": "prod_NWjs8kKbJWmuuc"},
                "subscription": "sub_1MtHb", "type": "subscription"
            }]},
            "next_payment_attempt": null, "paid": true,
            "payment_intent": "pi_3MtHbELkdIwHu7ix0jb0JBo1",
            "status": "paid", "subscription": "sub_1MtHb", "total": 999
        })
    }

    fn invoice_current() -> Value {
        json!({
            "id": "in_1MtHbELkdIwHu7ixl4OzzPMv", "object": "invoice",
            "amount_due": 999, "amount_overpaid": 0, "amount_paid": 999, "amount_remaining": 0,
            "billing_reason": "subscription_cycle", "created": 1680644467,
            "customer": "cus_NeZwdNtLEOXuvB", "issuer": {"type": "self"},
            "lines": {"object": "list", "data": [{
                "id": "il_1MtHbELkdIwHu7ixtK2LYyoX", "object": "line_item", "amount": 999,
                "parent": {"type": "subscription_item_details",
                           "subscription_item_details": {"subscription": "sub_1MtHb", "subscription_item": "si_1", "proration": false}},
                "pricing": {"type": "price_details", "price_details": {"price": "price_1", "product": "prod_NWjs8kKbJWmuuc"}, "unit_amount_decimal": "999"}
            }]},
            "next_payment_attempt": null,
            "parent": {"type": "subscription_details", "quote_details": null,
                       "subscription_details": {"metadata": {}, "subscription": "sub_1MtHb"}},
            "payments": {"object": "list", "data": [{
                "id": "inpay_1", "object": "invoice_payment", "invoice": "in_1MtHbELkdIwHu7ixl4OzzPMv",
                "payment": {"type": "payment_intent", "payment_intent": "pi_3MtHbELkdIwHu7ix0jb0JBo1"},
                "status": "paid"
            }]},
            "status": "paid", "total": 999
        })
    }

    #[test]
    fn invoices_of_both_versions() {
        let Record::Invoice(old) = &records_of(&invoice_2022(), None)[0] else {
            panic!()
        };
        let Record::Invoice(new) = &records_of(&invoice_current(), None)[0] else {
            panic!()
        };
        assert_eq!(old.subscription.as_deref(), Some("sub_1MtHb"));
        assert_eq!(new.subscription, old.subscription);
        assert_eq!(old.products, new.products);
        assert!(new.products.contains("prod_NWjs8kKbJWmuuc"));
        assert_eq!(old.payment_intents, new.payment_intents);
        assert_eq!(old.charge.as_deref(), Some("ch_3MtHbELkdIwHu7ix0Xkqa0Px"));
        assert_eq!(new.status, "paid");
        // A very old invoice with `paid` only.
        let mut ancient = invoice_2022();
        ancient.as_object_mut().map(|o| o.remove("status"));
        let Record::Invoice(a) = &records_of(&ancient, None)[0] else {
            panic!()
        };
        assert_eq!(a.status, "paid");
    }

    #[test]
    fn credit_notes_invoice_payments_and_disputes() {
        let old = json!({"id": "cn_1", "object": "credit_note", "amount": 999, "invoice": "in_1",
                         "customer": "cus_1", "refund": "re_1", "status": "issued", "total": 999});
        let new = json!({"id": "cn_1", "object": "credit_note", "amount": 999, "invoice": "in_1",
                         "customer": "cus_1", "refunds": [{"amount_refunded": 999, "refund": "re_1"}],
                         "status": "issued", "total": 999});
        assert_eq!(records_of(&old, None), records_of(&new, None));
        assert_eq!(credit_note_refunds(&old), vec!["re_1"]);
        assert_eq!(credit_note_refunds(&new), vec!["re_1"]);

        let ip = json!({"id": "inpay_1", "object": "invoice_payment", "invoice": "in_1",
                        "payment": {"type": "charge", "charge": "ch_1"}, "status": "paid"});
        let r = records_of(&ip, None);
        assert_eq!(refs_of(&r[0]), vec!["ch_1", "in_1"]);

        let dp = json!({"id": "dp_1", "object": "dispute", "charge": "ch_1",
                        "payment_intent": "pi_1", "status": "lost", "amount": 1000});
        let r = records_of(&dp, None);
        assert_eq!(
            r[0],
            Record::Dispute(DisputeRec {
                id: "dp_1".into(),
                charge: Some("ch_1".into()),
                payment_intent: Some("pi_1".into()),
                status: "lost".into()
            })
        );
    }

    #[test]
    fn payment_intents_old_with_charges_and_current_with_latest_charge() {
        let old = json!({
            "id": "pi_1", "object": "payment_intent", "amount": 500, "amount_received": 500,
            "status": "succeeded", "customer": "cus_1", "metadata": {"sku": "lifetime"},
            "invoice": null, "created": 1,
            "charges": {"object": "list", "data": [{
                "id": "ch_1", "object": "charge", "amount": 500, "amount_captured": 500,
                "amount_refunded": 500, "refunded": true, "captured": true, "disputed": false,
                "payment_intent": "pi_1", "status": "succeeded",
                "refunds": {"object": "list", "data": [{"id": "re_1", "object": "refund", "amount": 500}]}
            }]}
        });
        let r = records_of(&old, None);
        assert_eq!(r.len(), 2);
        let Record::PaymentIntent(p) = &r[0] else {
            panic!()
        };
        assert_eq!(p.sku.as_deref(), Some("lifetime"));
        let Record::Charge(c) = &r[1] else { panic!() };
        assert!(c.refunded);
        assert_eq!(c.amount_refunded, 500);

        let new = json!({
            "id": "pi_1", "object": "payment_intent", "amount": 500, "amount_received": 500,
            "status": "succeeded", "customer": {"id": "cus_1", "object": "customer"},
            "metadata": {}, "latest_charge": "ch_1", "created": 1
        });
        let r = records_of(&new, None);
        assert_eq!(r.len(), 1);
        assert_eq!(customer_of(&new).as_deref(), Some("cus_1"));
    }

    #[test]
    fn checkout_sessions_with_line_items_and_client_reference_id() {
        let cs = json!({
            "id": "cs_test_1", "object": "checkout.session", "mode": "payment",
            "status": "complete", "payment_status": "paid", "customer": null,
            "client_reference_id": "user-9", "payment_intent": "pi_1", "invoice": null,
            "metadata": {}, "created": 5
        });
        let items = vec![
            json!({"id": "li_1", "object": "item", "price": {"id": "price_1", "product": "prod_life"}, "quantity": 1}),
        ];
        let r = records_of(&cs, Some(&items));
        let Record::Checkout(c) = &r[0] else { panic!() };
        assert!(c.products.contains("prod_life"));
        assert_eq!(c.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(customid_of(&cs, "customid").as_deref(), Some("user-9"));
        assert_eq!(customer_of(&cs), None);
        // Expanded line items in the object are read when none are given.
        let mut expanded = cs.clone();
        expanded["line_items"] = json!({"object": "list", "data": items});
        assert_eq!(records_of(&expanded, None), r);
    }
}
