//! Entitlements (SPEC §5.3): from everything known about one customer's Stripe purchases, the
//! catalogue, the merchant's policies and "now", the permissions the customer holds.
//!
//! Two pieces, both pure:
//!
//! - **[`Ledger`]**: the order-proof memory of Stripe objects. Every object (subscription,
//!   checkout session, invoice, payment intent, charge, dispute, credit note, invoice payment)
//!   is kept at its newest version, judged by a [`Stamp`] (the observation's time, then the
//!   object's own progress, then its content), so any order and any number of copies of the
//!   observations leave the same ledger. Refunds, disputes and credit notes are facts carried
//!   by their own objects with absolute figures (`amount_refunded` is cumulative), never added.
//! - **[`evaluate`]**: the table of SPEC §5.3 over a ledger: per purchase a [`Grant`], per
//!   permission the union (held while any purchase is, latest expiry, best code).
//!
//! Nothing here knows Stripe's JSON: the server maps payloads of every API version to the
//! records below.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// `entitlement` codes of SPEC §5.3.
pub mod code {
    pub const GRACE: i32 = 1;
    /// Held by a manual grant (support, promotions): non-renewing, with or without an end.
    pub const GRANTED: i32 = 2;
    pub const LIFETIME: i32 = 3;
    pub const CANCELING: i32 = 4;
    pub const RENEWING: i32 = 5;
    pub const INCOMPLETE: i32 = 0;
    pub const GRACE_OVER: i32 = -1;
    pub const PAYMENT_FAILED: i32 = -2;
    pub const EXPIRED: i32 = -5;
    pub const REVOKED: i32 = -8;
    pub const NEVER: i32 = -9;
    pub const PAUSED: i32 = -10;
}

// ---- records --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubStatus {
    Incomplete,
    Trialing,
    Active,
    PastDue,
    Paused,
    Unpaid,
    Canceled,
    IncompleteExpired,
    Other,
}

impl SubStatus {
    pub fn parse(s: &str) -> SubStatus {
        match s {
            "incomplete" => SubStatus::Incomplete,
            "trialing" => SubStatus::Trialing,
            "active" => SubStatus::Active,
            "past_due" => SubStatus::PastDue,
            "paused" => SubStatus::Paused,
            "unpaid" => SubStatus::Unpaid,
            "canceled" => SubStatus::Canceled,
            "incomplete_expired" => SubStatus::IncompleteExpired,
            _ => SubStatus::Other,
        }
    }

    /// How far along a subscription's life this status is: breaks ties between two versions
    /// observed in the same second (a subscription never comes back from `canceled`).
    fn progress(self) -> i64 {
        match self {
            SubStatus::Incomplete => 0,
            SubStatus::Other => 0,
            SubStatus::Trialing | SubStatus::Active | SubStatus::PastDue | SubStatus::Paused => 1,
            SubStatus::Unpaid => 2,
            SubStatus::Canceled | SubStatus::IncompleteExpired => 3,
        }
    }
}

/// A subscription as Stripe last described it. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubscriptionRec {
    pub id: String,
    pub status: SubStatus,
    /// Product ids of its items.
    pub products: BTreeSet<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub trial_end: Option<i64>,
    /// `cancellation_details.reason` (`cancellation_requested`, `payment_failed`, …).
    pub cancellation_reason: Option<String>,
    pub latest_invoice: Option<String>,
    pub created: i64,
}

/// A Checkout Session. `products` come from its line items (read separately).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CheckoutRec {
    pub id: String,
    /// `payment`, `subscription` or `setup`.
    pub mode: String,
    /// `complete`, `open`, `expired`.
    pub status: String,
    /// `paid`, `unpaid`, `no_payment_required`.
    pub payment_status: String,
    pub products: BTreeSet<String>,
    /// `metadata.sku`.
    pub sku: Option<String>,
    pub payment_intent: Option<String>,
    pub invoice: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoiceRec {
    pub id: String,
    /// `invoice.subscription` (old) or `parent.subscription_details.subscription` (basil).
    pub subscription: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible`, `void`.
    pub status: String,
    pub total: i64,
    pub amount_paid: i64,
    /// Products of its lines (`price.product` or `pricing.price_details.product`).
    pub products: BTreeSet<String>,
    /// Payment intents known to have paid it (old `payment_intent`, expanded `payments`).
    pub payment_intents: BTreeSet<String>,
    /// Old `charge`.
    pub charge: Option<String>,
    pub next_payment_attempt: Option<i64>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PaymentIntentRec {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub amount_received: i64,
    /// `metadata.sku`: a bare PaymentIntent selling a SKU.
    pub sku: Option<String>,
    /// Old `invoice` (the intent belongs to an invoice, not a bare purchase).
    pub invoice: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChargeRec {
    pub id: String,
    pub payment_intent: Option<String>,
    /// Old `charge.invoice`.
    pub invoice: Option<String>,
    pub status: String,
    pub amount: i64,
    pub amount_captured: i64,
    /// Cumulative.
    pub amount_refunded: i64,
    pub refunded: bool,
    pub disputed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DisputeRec {
    pub id: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    /// `warning_needs_response`, `needs_response`, `under_review`, `won`, `lost`, …
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CreditNoteRec {
    pub id: String,
    pub invoice: Option<String>,
    /// `issued` or `void`.
    pub status: String,
    pub amount: i64,
}

/// A Radar early fraud warning (`radar.early_fraud_warning.*`): the card issuer reported the
/// charge as fraudulent; a dispute or a refund usually follows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FraudWarningRec {
    pub id: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    /// `false` once the charge was refunded or disputed (Stripe's `actionable`).
    pub actionable: bool,
}

/// `/v1/invoice_payments` (basil): which payment intent or charge paid which invoice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoicePaymentRec {
    pub id: String,
    pub invoice: Option<String>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    pub status: String,
}

/// One Stripe object as the domain knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "object", rename_all = "snake_case")]
pub enum Record {
    Subscription(SubscriptionRec),
    Checkout(CheckoutRec),
    Invoice(InvoiceRec),
    PaymentIntent(PaymentIntentRec),
    Charge(ChargeRec),
    Dispute(DisputeRec),
    CreditNote(CreditNoteRec),
    InvoicePayment(InvoicePaymentRec),
    FraudWarning(FraudWarningRec),
}

impl Record {
    pub fn id(&self) -> &str {
        match self {
            Record::Subscription(r) => &r.id,
            Record::Checkout(r) => &r.id,
            Record::Invoice(r) => &r.id,
            Record::PaymentIntent(r) => &r.id,
            Record::Charge(r) => &r.id,
            Record::Dispute(r) => &r.id,
            Record::CreditNote(r) => &r.id,
            Record::InvoicePayment(r) => &r.id,
            Record::FraudWarning(r) => &r.id,
        }
    }

    /// The object type as Stripe names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Subscription(_) => "subscription",
            Record::Checkout(_) => "checkout.session",
            Record::Invoice(_) => "invoice",
            Record::PaymentIntent(_) => "payment_intent",
            Record::Charge(_) => "charge",
            Record::Dispute(_) => "dispute",
            Record::CreditNote(_) => "credit_note",
            Record::InvoicePayment(_) => "invoice_payment",
            Record::FraudWarning(_) => "radar.early_fraud_warning",
        }
    }

    /// How far along its life the object is, for versions observed in the same second. Every
    /// figure here only grows in a real history.
    pub fn progress(&self) -> i64 {
        match self {
            Record::Subscription(s) => s.status.progress(),
            Record::Checkout(c) => match (c.status.as_str(), c.payment_status.as_str()) {
                ("complete", "paid" | "no_payment_required") => 3,
                ("complete", _) => 2,
                ("expired", _) => 1,
                _ => 0,
            },
            Record::Invoice(i) => match i.status.as_str() {
                "draft" => 0,
                "open" => 1,
                "paid" | "uncollectible" | "void" => 2,
                _ => 0,
            },
            Record::PaymentIntent(p) => match p.status.as_str() {
                "succeeded" | "canceled" => 2,
                "processing" | "requires_capture" => 1,
                _ => 0,
            },
            // Refunds only add up; a dispute only closes.
            Record::Charge(c) => c.amount_refunded.saturating_mul(4) + i64::from(c.disputed),
            Record::Dispute(d) => i64::from(matches!(d.status.as_str(), "won" | "lost")),
            Record::CreditNote(c) => i64::from(c.status == "void"),
            Record::InvoicePayment(p) => i64::from(p.status == "paid"),
            // Only stops being actionable.
            Record::FraudWarning(w) => i64::from(!w.actionable),
        }
    }
}

/// When an observation was made: the event's `created` (or the re-read's time), in seconds.
/// Versions compare by time, then by the object's progress, then by content: a total order
/// that does not depend on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub at: i64,
    pub progress: i64,
}

impl Stamp {
    pub fn of(at: i64, record: &Record) -> Stamp {
        Stamp {
            at,
            progress: record.progress(),
        }
    }
}

/// Whether `(new_stamp, new)` should replace `(old_stamp, old)`: the newest version wins; equal
/// stamps are broken by content, so the result is the same in any order.
pub fn supersedes(new_stamp: Stamp, new: &Record, old_stamp: Stamp, old: &Record) -> bool {
    (new_stamp, new) > (old_stamp, old)
}

/// The order-proof memory of one customer's Stripe objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    objects: BTreeMap<(&'static str, String), (Stamp, Record)>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Keeps `record` if it is newer than what is known of the same object; returns whether it
    /// changed the ledger.
    pub fn observe(&mut self, at: i64, record: Record) -> bool {
        let stamp = Stamp::of(at, &record);
        let key = (record.kind(), record.id().to_string());
        match self.objects.get(&key) {
            Some((s, r)) if !supersedes(stamp, &record, *s, r) => false,
            _ => {
                self.objects.insert(key, (stamp, record));
                true
            }
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.objects.values().map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

impl FromIterator<(i64, Record)> for Ledger {
    fn from_iter<T: IntoIterator<Item = (i64, Record)>>(iter: T) -> Self {
        let mut l = Ledger::new();
        for (at, r) in iter {
            l.observe(at, r);
        }
        l
    }
}

// ---- catalogue and policies ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku {
    pub identifier: String,
    pub product_id: String,
    /// `subscription` or `one_time`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    pub identifier: String,
    /// SKU identifiers.
    pub skus: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub skus: Vec<Sku>,
    pub permissions: Vec<PermissionDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "days")]
pub enum Grace {
    /// Held while Stripe keeps retrying (until the subscription becomes `unpaid`/`canceled`).
    WhileRetrying,
    /// Held for this many days after the payment failed.
    Days(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub grace: Grace,
    /// A partial refund revokes (default: kept).
    pub revoke_on_partial_refund: bool,
    /// Seconds an active, renewing subscription stays held past its stored period end (webhook
    /// lag at renewal). Default 2 h.
    pub renewal_leeway_secs: i64,
    /// A dispute revokes as soon as it opens (restored if it is won), not only once lost.
    pub revoke_on_dispute_open: bool,
    /// An actionable early fraud warning revokes.
    pub revoke_on_fraud_warning: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace: Grace::WhileRetrying,
            revoke_on_partial_refund: false,
            renewal_leeway_secs: 2 * 3600,
            revoke_on_dispute_open: false,
            revoke_on_fraud_warning: false,
        }
    }
}

// ---- evaluation ----------------------------------------------------------------------------

/// What one purchase gives at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The object that is the purchase (`sub_`, `cs_`, `in_`, `pi_`), or a manual grant's id.
    pub source: String,
    /// A manual grant's permission (it names its permission, not a product).
    pub permission: Option<String>,
    pub products: BTreeSet<String>,
    pub sku: Option<String>,
    pub held: bool,
    /// Shown expiry (seconds); `None`: never (or not held).
    pub expires: Option<i64>,
    /// Held until this moment at the latest (seconds), when earlier than "never": the read
    /// model treats the grant as lapsed afterwards even before a re-evaluation.
    pub valid_until: Option<i64>,
    pub code: i32,
    pub trial: bool,
    /// When the state began or will end; orders non-held purchases (latest wins).
    pub as_of: i64,
}

/// One permission of one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionState {
    pub identifier: String,
    pub is_valid: bool,
    pub entitlement: i32,
    /// Seconds; `None` never expires (or not held).
    pub expires: Option<i64>,
    /// Seconds; after this the permission is lapsed even if not re-evaluated yet.
    pub valid_until: Option<i64>,
    /// The SKUs that give it (held ones when held, else those ever bought).
    pub skus: Vec<SkuUse>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkuUse {
    pub identifier: String,
    pub product_id: String,
    pub trial: bool,
}

/// Refund, dispute and credit-note facts of one payment.
struct PaymentFacts {
    revoked: bool,
}

struct Index<'a> {
    charges: Vec<&'a ChargeRec>,
    disputes: Vec<&'a DisputeRec>,
    warnings: Vec<&'a FraudWarningRec>,
    credit_notes: Vec<&'a CreditNoteRec>,
    invoices: BTreeMap<&'a str, &'a InvoiceRec>,
    invoice_payments: Vec<&'a InvoicePaymentRec>,
}

impl<'a> Index<'a> {
    fn new(ledger: &'a Ledger) -> Self {
        let mut ix = Index {
            charges: Vec::new(),
            disputes: Vec::new(),
            warnings: Vec::new(),
            credit_notes: Vec::new(),
            invoices: BTreeMap::new(),
            invoice_payments: Vec::new(),
        };
        for r in ledger.records() {
            match r {
                Record::Charge(c) => ix.charges.push(c),
                Record::Dispute(d) => ix.disputes.push(d),
                Record::FraudWarning(w) => ix.warnings.push(w),
                Record::CreditNote(c) => ix.credit_notes.push(c),
                Record::Invoice(i) => {
                    ix.invoices.insert(&i.id, i);
                }
                Record::InvoicePayment(p) => ix.invoice_payments.push(p),
                _ => {}
            }
        }
        ix
    }

    /// Payment intents and charges that paid `invoice`.
    fn invoice_payments(&self, invoice: &str) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
        let mut pis = BTreeSet::new();
        let mut chs = BTreeSet::new();
        if let Some(i) = self.invoices.get(invoice) {
            pis.extend(i.payment_intents.iter().map(String::as_str));
            chs.extend(i.charge.as_deref());
        }
        for p in &self.invoice_payments {
            if p.invoice.as_deref() == Some(invoice) {
                pis.extend(p.payment_intent.as_deref());
                chs.extend(p.charge.as_deref());
            }
        }
        (pis, chs)
    }

    /// Whether the payment made of these intents/charges/invoice was taken back: fully refunded
    /// (or partially, under that policy), lost in a dispute, or fully credited.
    fn facts(
        &self,
        pis: &BTreeSet<&str>,
        chs: &BTreeSet<&str>,
        invoice: Option<&str>,
        policy: &Policy,
    ) -> PaymentFacts {
        let mut revoked = false;
        let mut charge_ids: BTreeSet<&str> = chs.clone();
        for c in &self.charges {
            let ours = chs.contains(c.id.as_str())
                || c.payment_intent.as_deref().is_some_and(|p| pis.contains(p))
                || (invoice.is_some() && c.invoice.as_deref() == invoice);
            if !ours {
                continue;
            }
            charge_ids.insert(&c.id);
            let basis = if c.amount_captured > 0 {
                c.amount_captured
            } else {
                c.amount
            };
            if c.amount_refunded > 0 {
                let full = c.refunded || c.amount_refunded >= basis;
                if full || policy.revoke_on_partial_refund {
                    revoked = true;
                }
            }
        }
        for d in &self.disputes {
            let ours = d.charge.as_deref().is_some_and(|c| charge_ids.contains(c))
                || d.payment_intent.as_deref().is_some_and(|p| pis.contains(p));
            if ours && dispute_revokes(&d.status, policy) {
                revoked = true;
            }
        }
        if policy.revoke_on_fraud_warning {
            for w in &self.warnings {
                let ours = w.charge.as_deref().is_some_and(|c| charge_ids.contains(c))
                    || w.payment_intent.as_deref().is_some_and(|p| pis.contains(p));
                if ours && w.actionable {
                    revoked = true;
                }
            }
        }
        if let Some(inv) = invoice {
            let credited: i64 = self
                .credit_notes
                .iter()
                .filter(|c| c.invoice.as_deref() == Some(inv) && c.status != "void")
                .map(|c| c.amount)
                .sum();
            if credited > 0 {
                let total = self.invoices.get(inv).map(|i| i.total.max(i.amount_paid));
                match total {
                    Some(t) if credited >= t => revoked = true,
                    Some(_) if policy.revoke_on_partial_refund => revoked = true,
                    Some(_) => {}
                    // The invoice itself is unknown: the credit note cannot be judged whole.
                    None => {}
                }
            }
        }
        PaymentFacts { revoked }
    }
}

/// Whether a dispute in `status` takes its payment back: once lost, or under
/// [`Policy::revoke_on_dispute_open`] while it is open (`needs_response`, `under_review`; an
/// inquiry, `warning_*`, is not a dispute yet). A won dispute gives the payment back.
fn dispute_revokes(status: &str, policy: &Policy) -> bool {
    match status {
        "lost" => true,
        "needs_response" | "under_review" => policy.revoke_on_dispute_open,
        _ => false,
    }
}

fn revoked_grant(source: &str, products: BTreeSet<String>, sku: Option<String>, at: i64) -> Grant {
    Grant {
        source: source.to_string(),
        permission: None,
        products,
        sku,
        held: false,
        expires: None,
        valid_until: None,
        code: code::REVOKED,
        trial: false,
        as_of: at,
    }
}

fn subscription_grant(s: &SubscriptionRec, ix: &Index, policy: &Policy, now: i64) -> Grant {
    let mut g = Grant {
        source: s.id.clone(),
        permission: None,
        products: s.products.clone(),
        sku: None,
        held: false,
        expires: None,
        valid_until: None,
        code: code::NEVER,
        trial: s.status == SubStatus::Trialing,
        as_of: s.current_period_end.unwrap_or(s.created),
    };
    // A refunded, credited or lost-disputed latest invoice takes the subscription back.
    if let Some(inv) = &s.latest_invoice {
        let (pis, chs) = ix.invoice_payments(inv);
        if ix.facts(&pis, &chs, Some(inv), policy).revoked {
            return revoked_grant(&s.id, s.products.clone(), None, g.as_of);
        }
    }
    let end = s.current_period_end;
    match s.status {
        SubStatus::Active | SubStatus::Trialing => {
            let ending = s.cancel_at_period_end || s.cancel_at.is_some();
            let period_end = match (end, s.cancel_at) {
                (Some(e), Some(c)) => Some(e.min(c)),
                (e, c) => e.or(c),
            };
            let period_end = if s.status == SubStatus::Trialing {
                period_end.or(s.trial_end)
            } else {
                period_end
            };
            match period_end {
                None => {
                    g.held = true;
                    g.code = if ending {
                        code::CANCELING
                    } else {
                        code::RENEWING
                    };
                }
                Some(pe) if ending => {
                    g.expires = Some(pe);
                    if now < pe {
                        g.held = true;
                        g.code = code::CANCELING;
                        g.valid_until = Some(pe);
                    } else {
                        g.code = code::EXPIRED;
                        g.as_of = pe;
                    }
                }
                Some(pe) => {
                    let until = pe.saturating_add(policy.renewal_leeway_secs);
                    if now < until {
                        g.held = true;
                        g.code = code::RENEWING;
                        g.expires = Some(pe);
                        g.valid_until = Some(until);
                    } else {
                        g.code = code::EXPIRED;
                        g.as_of = pe;
                    }
                }
            }
        }
        SubStatus::PastDue => {
            let failed_invoice = s.latest_invoice.as_deref().and_then(|i| ix.invoices.get(i));
            let since = failed_invoice
                .map(|i| i.created)
                .or(s.current_period_start)
                .unwrap_or(s.created);
            match policy.grace {
                Grace::WhileRetrying => {
                    g.held = true;
                    g.code = code::GRACE;
                    let retry = failed_invoice.and_then(|i| i.next_payment_attempt);
                    g.expires = match (retry, end) {
                        (Some(r), Some(e)) => Some(r.max(e)),
                        (r, e) => r.or(e),
                    };
                }
                Grace::Days(days) => {
                    let grace_end = since.saturating_add(days.saturating_mul(86_400));
                    if now < grace_end {
                        g.held = true;
                        g.code = code::GRACE;
                        g.expires = Some(grace_end);
                        g.valid_until = Some(grace_end);
                    } else {
                        g.code = code::GRACE_OVER;
                        g.as_of = grace_end;
                    }
                }
            }
        }
        SubStatus::Unpaid => g.code = code::PAYMENT_FAILED,
        SubStatus::Canceled => {
            let failed = matches!(
                s.cancellation_reason.as_deref(),
                Some("payment_failed") | Some("payment_disputed")
            );
            g.code = if failed {
                code::PAYMENT_FAILED
            } else {
                code::EXPIRED
            };
            g.as_of = s.ended_at.or(end).unwrap_or(s.created);
        }
        SubStatus::Paused => g.code = code::PAUSED,
        SubStatus::Incomplete | SubStatus::IncompleteExpired | SubStatus::Other => {
            g.code = code::INCOMPLETE
        }
    }
    g
}

fn one_time(
    source: &str,
    products: BTreeSet<String>,
    sku: Option<String>,
    facts: PaymentFacts,
    created: i64,
) -> Grant {
    if facts.revoked {
        return revoked_grant(source, products, sku, created);
    }
    Grant {
        source: source.to_string(),
        permission: None,
        products,
        sku,
        held: true,
        expires: None,
        valid_until: None,
        code: code::LIFETIME,
        trial: false,
        as_of: created,
    }
}

/// Every purchase in the ledger with what it gives at `now` (seconds).
pub fn grants(ledger: &Ledger, policy: &Policy, now: i64) -> Vec<Grant> {
    let ix = Index::new(ledger);
    let mut out = Vec::new();
    let none = BTreeSet::new();
    for r in ledger.records() {
        match r {
            Record::Subscription(s) => out.push(subscription_grant(s, &ix, policy, now)),
            Record::Checkout(c) => {
                let paid = c.status == "complete"
                    && matches!(c.payment_status.as_str(), "paid" | "no_payment_required");
                if c.mode != "payment" || !paid {
                    continue;
                }
                let pis: BTreeSet<&str> = c.payment_intent.iter().map(String::as_str).collect();
                let facts = ix.facts(&pis, &none, c.invoice.as_deref(), policy);
                out.push(one_time(
                    &c.id,
                    c.products.clone(),
                    c.sku.clone(),
                    facts,
                    c.created,
                ));
            }
            Record::Invoice(i) => {
                // Subscription invoices are the subscription's business; a paid one-off
                // invoice sells its lines.
                if i.subscription.is_some() || i.status != "paid" || i.products.is_empty() {
                    continue;
                }
                let (pis, chs) = ix.invoice_payments(&i.id);
                let facts = ix.facts(&pis, &chs, Some(&i.id), policy);
                out.push(one_time(&i.id, i.products.clone(), None, facts, i.created));
            }
            Record::PaymentIntent(p) => {
                let Some(sku) = &p.sku else { continue };
                if p.status != "succeeded" {
                    continue;
                }
                let pis: BTreeSet<&str> = [p.id.as_str()].into();
                let facts = ix.facts(&pis, &none, p.invoice.as_deref(), policy);
                out.push(one_time(
                    &p.id,
                    BTreeSet::new(),
                    Some(sku.clone()),
                    facts,
                    p.created,
                ));
            }
            _ => {}
        }
    }
    out
}

/// A permission given by hand (support desk, promotion), one more purchase source: held from
/// `starts_at` while not expired and not revoked. Times in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualGrant {
    pub id: String,
    pub permission: String,
    pub starts_at: i64,
    /// `None`: no end.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a manual grant gives at `now`; `None` before it starts (it did not exist yet).
pub fn manual_grant(m: &ManualGrant, now: i64) -> Option<Grant> {
    if m.starts_at > now {
        return None;
    }
    let mut g = Grant {
        source: m.id.clone(),
        permission: Some(m.permission.clone()),
        products: BTreeSet::new(),
        sku: None,
        held: false,
        expires: None,
        valid_until: None,
        code: code::GRANTED,
        trial: false,
        as_of: m.starts_at,
    };
    let revoked = m.revoked_at.filter(|r| *r <= now);
    let expired = m.expires_at.filter(|e| *e <= now);
    match (revoked, expired) {
        (Some(r), e) if e.is_none_or(|e| r <= e) => {
            g.code = code::REVOKED;
            g.as_of = r;
        }
        (_, Some(e)) => {
            g.code = code::EXPIRED;
            g.as_of = e;
        }
        (_, None) => {
            g.held = true;
            g.expires = m.expires_at;
            g.valid_until = m.expires_at;
            g.as_of = m.expires_at.unwrap_or(m.starts_at);
        }
    }
    Some(g)
}

/// Rank of a held code: the best one names a permission held by several purchases
/// (3 > 5 > 4 > 2 > 1).
fn held_rank(code: i32) -> i32 {
    match code {
        code::LIFETIME => 5,
        code::RENEWING => 4,
        code::CANCELING => 3,
        code::GRANTED => 2,
        code::GRACE => 1,
        _ => 0,
    }
}

/// The permissions a customer with these purchases holds at `now` (seconds): one entry per
/// permission of the catalogue any purchase touches (a permission never bought is absent).
pub fn evaluate(
    ledger: &Ledger,
    catalog: &Catalog,
    policy: &Policy,
    now: i64,
) -> Vec<PermissionState> {
    evaluate_with(ledger, &[], catalog, policy, now)
}

/// [`evaluate`] with manual grants besides the Stripe purchases: a grant is one more purchase
/// of its permission (a permission not in the catalogue gives nothing).
pub fn evaluate_with(
    ledger: &Ledger,
    manual: &[ManualGrant],
    catalog: &Catalog,
    policy: &Policy,
    now: i64,
) -> Vec<PermissionState> {
    let grants = grants(ledger, policy, now);
    let manual: Vec<Grant> = manual.iter().filter_map(|m| manual_grant(m, now)).collect();
    // Manual grants name no SKU: they are listed with no SKU in `skus`.
    let no_sku = Sku {
        identifier: String::new(),
        product_id: String::new(),
        kind: String::new(),
    };
    let mut out = Vec::new();
    for def in &catalog.permissions {
        let skus: Vec<&Sku> = catalog
            .skus
            .iter()
            .filter(|s| def.skus.contains(&s.identifier))
            .collect();
        // (grant, sku) pairs of this permission.
        let mut matched: Vec<(&Grant, &Sku)> = Vec::new();
        for g in &grants {
            for s in &skus {
                let by_product = g.products.contains(&s.product_id);
                let by_sku = g
                    .sku
                    .as_deref()
                    .is_some_and(|k| k == s.identifier || k == s.product_id);
                if by_product || by_sku {
                    matched.push((g, s));
                }
            }
        }
        for g in &manual {
            if g.permission.as_deref() == Some(def.identifier.as_str()) {
                matched.push((g, &no_sku));
            }
        }
        if matched.is_empty() {
            continue;
        }
        let held: Vec<&(&Grant, &Sku)> = matched.iter().filter(|(g, _)| g.held).collect();
        let state = if held.is_empty() {
            // The latest purchase's state names why it is not held.
            let (g, _) = matched
                .iter()
                .max_by_key(|(g, _)| (g.as_of, g.code, g.source.clone()))
                .copied()
                .unwrap_or((matched[0].0, matched[0].1));
            let mut used: Vec<SkuUse> = matched
                .iter()
                .filter(|(_, s)| !s.identifier.is_empty())
                .map(|(g, s)| SkuUse {
                    identifier: s.identifier.clone(),
                    product_id: s.product_id.clone(),
                    trial: g.trial,
                })
                .collect();
            used.sort();
            used.dedup();
            PermissionState {
                identifier: def.identifier.clone(),
                is_valid: false,
                entitlement: g.code,
                expires: None,
                valid_until: None,
                skus: used,
            }
        } else {
            let never = held.iter().any(|(g, _)| g.expires.is_none());
            let expires = if never {
                None
            } else {
                held.iter().filter_map(|(g, _)| g.expires).max()
            };
            // Lapses when the last one does; `None` when one has no end.
            let valid_until = if held.iter().any(|(g, _)| g.valid_until.is_none()) {
                None
            } else {
                held.iter().filter_map(|(g, _)| g.valid_until).max()
            };
            let best = held
                .iter()
                .map(|(g, _)| g.code)
                .max_by_key(|c| held_rank(*c))
                .unwrap_or(code::NEVER);
            let mut used: Vec<SkuUse> = held
                .iter()
                .filter(|(_, s)| !s.identifier.is_empty())
                .map(|(g, s)| SkuUse {
                    identifier: s.identifier.clone(),
                    product_id: s.product_id.clone(),
                    trial: g.trial,
                })
                .collect();
            used.sort();
            used.dedup();
            PermissionState {
                identifier: def.identifier.clone(),
                is_valid: true,
                entitlement: best,
                expires,
                valid_until,
                skus: used,
            }
        };
        out.push(state);
    }
    out
}

/// What changed for one permission between two evaluations (outbound `permission.*` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Granted,
    Renewed,
    Revoked,
    Expired,
}

impl ChangeKind {
    pub fn event_name(self) -> &'static str {
        match self {
            ChangeKind::Granted => "permission.granted",
            ChangeKind::Renewed => "permission.renewed",
            ChangeKind::Revoked => "permission.revoked",
            ChangeKind::Expired => "permission.expired",
        }
    }
}

/// The change from `before` (absent: never held) to `after`, if any worth announcing.
pub fn change(before: Option<&PermissionState>, after: &PermissionState) -> Option<ChangeKind> {
    let was = before.is_some_and(|b| b.is_valid);
    match (was, after.is_valid) {
        (false, true) => Some(ChangeKind::Granted),
        (true, false) => Some(if after.entitlement == code::REVOKED {
            ChangeKind::Revoked
        } else if matches!(after.entitlement, code::EXPIRED) {
            ChangeKind::Expired
        } else {
            ChangeKind::Revoked
        }),
        (true, true) => {
            let old = before.and_then(|b| b.expires);
            match (old, after.expires) {
                (Some(o), Some(n)) if n > o => Some(ChangeKind::Renewed),
                (Some(_), None) => Some(ChangeKind::Renewed),
                _ => None,
            }
        }
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn catalog() -> Catalog {
        Catalog {
            skus: vec![
                Sku {
                    identifier: "web_monthly".into(),
                    product_id: "prod_monthly".into(),
                    kind: "subscription".into(),
                },
                Sku {
                    identifier: "web_yearly".into(),
                    product_id: "prod_yearly".into(),
                    kind: "subscription".into(),
                },
                Sku {
                    identifier: "lifetime".into(),
                    product_id: "prod_life".into(),
                    kind: "one_time".into(),
                },
            ],
            permissions: vec![PermissionDef {
                identifier: "premium".into(),
                skus: vec!["web_monthly".into(), "web_yearly".into(), "lifetime".into()],
            }],
        }
    }

    fn sub(id: &str, status: &str, product: &str, end: i64) -> SubscriptionRec {
        SubscriptionRec {
            id: id.into(),
            status: SubStatus::parse(status),
            products: [product.to_string()].into(),
            current_period_start: Some(end - 30 * DAY),
            current_period_end: Some(end),
            cancel_at_period_end: false,
            cancel_at: None,
            ended_at: None,
            trial_end: None,
            cancellation_reason: None,
            latest_invoice: None,
            created: end - 30 * DAY,
        }
    }

    fn eval(records: Vec<Record>, policy: &Policy, now: i64) -> PermissionState {
        let ledger: Ledger = records.into_iter().map(|r| (1, r)).collect();
        let mut out = evaluate(&ledger, &catalog(), policy, now);
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn active_subscription_valid_to_period_end() {
        let p = eval(
            vec![Record::Subscription(sub(
                "sub_1",
                "active",
                "prod_monthly",
                NOW + DAY,
            ))],
            &Policy::default(),
            NOW,
        );
        assert!(p.is_valid);
        assert_eq!(p.entitlement, code::RENEWING);
        assert_eq!(p.expires, Some(NOW + DAY));
        assert_eq!(p.skus[0].identifier, "web_monthly");
    }

    #[test]
    fn renewal_leeway_then_expired() {
        let policy = Policy::default();
        let s = Record::Subscription(sub("sub_1", "active", "prod_monthly", NOW));
        let p = eval(vec![s.clone()], &policy, NOW + 3600);
        assert!(p.is_valid, "inside the leeway");
        assert_eq!(p.valid_until, Some(NOW + 7200));
        let p = eval(vec![s], &policy, NOW + 7200);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::EXPIRED);
    }

    #[test]
    fn cancel_at_period_end_then_expired() {
        let mut s = sub("sub_1", "active", "prod_monthly", NOW + DAY);
        s.cancel_at_period_end = true;
        let p = eval(
            vec![Record::Subscription(s.clone())],
            &Policy::default(),
            NOW,
        );
        assert!(p.is_valid);
        assert_eq!(p.entitlement, code::CANCELING);
        let p = eval(vec![Record::Subscription(s)], &Policy::default(), NOW + DAY);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::EXPIRED);
    }

    #[test]
    fn past_due_grace_policies() {
        let s = Record::Subscription(sub("sub_1", "past_due", "prod_monthly", NOW + 29 * DAY));
        let p = eval(vec![s.clone()], &Policy::default(), NOW);
        assert!(p.is_valid);
        assert_eq!(p.entitlement, code::GRACE);
        let fixed = Policy {
            grace: Grace::Days(3),
            ..Policy::default()
        };
        // The period began a day ago: two days of grace left.
        let p = eval(vec![s.clone()], &fixed, NOW);
        assert!(p.is_valid);
        assert_eq!(p.expires, Some(NOW - DAY + 3 * DAY));
        let p = eval(vec![s], &fixed, NOW + 3 * DAY);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::GRACE_OVER);
    }

    #[test]
    fn canceled_unpaid_incomplete_paused() {
        let policy = Policy::default();
        let mut c = sub("sub_1", "canceled", "prod_monthly", NOW - DAY);
        c.ended_at = Some(NOW - DAY);
        assert_eq!(
            eval(vec![Record::Subscription(c.clone())], &policy, NOW).entitlement,
            code::EXPIRED
        );
        c.cancellation_reason = Some("payment_failed".into());
        assert_eq!(
            eval(vec![Record::Subscription(c)], &policy, NOW).entitlement,
            code::PAYMENT_FAILED
        );
        for (status, want) in [
            ("unpaid", code::PAYMENT_FAILED),
            ("incomplete", code::INCOMPLETE),
            ("incomplete_expired", code::INCOMPLETE),
            ("paused", code::PAUSED),
        ] {
            let p = eval(
                vec![Record::Subscription(sub(
                    "sub_1",
                    status,
                    "prod_monthly",
                    NOW + DAY,
                ))],
                &policy,
                NOW,
            );
            assert!(!p.is_valid, "{status}");
            assert_eq!(p.entitlement, want, "{status}");
        }
    }

    fn checkout(id: &str, payment_status: &str, pi: &str) -> CheckoutRec {
        CheckoutRec {
            id: id.into(),
            mode: "payment".into(),
            status: "complete".into(),
            payment_status: payment_status.into(),
            products: ["prod_life".to_string()].into(),
            sku: None,
            payment_intent: Some(pi.into()),
            invoice: None,
            created: NOW - DAY,
        }
    }

    fn charge(pi: &str, refunded: i64) -> ChargeRec {
        ChargeRec {
            id: format!("ch_{pi}"),
            payment_intent: Some(pi.into()),
            invoice: None,
            status: "succeeded".into(),
            amount: 1000,
            amount_captured: 1000,
            amount_refunded: refunded,
            refunded: refunded >= 1000,
            disputed: false,
        }
    }

    #[test]
    fn one_time_lifetime_refunds_and_disputes() {
        let policy = Policy::default();
        let cs = Record::Checkout(checkout("cs_1", "paid", "pi_1"));
        let p = eval(vec![cs.clone()], &policy, NOW);
        assert!(p.is_valid);
        assert_eq!(p.entitlement, code::LIFETIME);
        assert_eq!(p.expires, None);

        let p = eval(
            vec![cs.clone(), Record::Charge(charge("pi_1", 400))],
            &policy,
            NOW,
        );
        assert!(p.is_valid, "partial refund kept by default");
        let strict = Policy {
            revoke_on_partial_refund: true,
            ..policy
        };
        assert!(
            !eval(
                vec![cs.clone(), Record::Charge(charge("pi_1", 400))],
                &strict,
                NOW
            )
            .is_valid
        );

        let p = eval(
            vec![cs.clone(), Record::Charge(charge("pi_1", 1000))],
            &policy,
            NOW,
        );
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::REVOKED);

        let dispute = |status: &str| {
            Record::Dispute(DisputeRec {
                id: "dp_1".into(),
                charge: Some("ch_pi_1".into()),
                payment_intent: None,
                status: status.into(),
            })
        };
        let p = eval(
            vec![
                cs.clone(),
                Record::Charge(charge("pi_1", 0)),
                dispute("lost"),
            ],
            &policy,
            NOW,
        );
        assert_eq!(p.entitlement, code::REVOKED);
        let p = eval(
            vec![cs, Record::Charge(charge("pi_1", 0)), dispute("won")],
            &policy,
            NOW,
        );
        assert!(p.is_valid);
    }

    #[test]
    fn unpaid_checkout_never_grants() {
        let ledger: Ledger = [(1, Record::Checkout(checkout("cs_1", "unpaid", "pi_1")))]
            .into_iter()
            .collect();
        assert!(evaluate(&ledger, &catalog(), &Policy::default(), NOW).is_empty());
    }

    #[test]
    fn bare_payment_intent_with_sku_and_credit_noted_invoice() {
        let pi = Record::PaymentIntent(PaymentIntentRec {
            id: "pi_9".into(),
            status: "succeeded".into(),
            amount: 500,
            amount_received: 500,
            sku: Some("lifetime".into()),
            invoice: None,
            created: NOW,
        });
        assert!(eval(vec![pi], &Policy::default(), NOW).is_valid);

        let inv = Record::Invoice(InvoiceRec {
            id: "in_1".into(),
            subscription: None,
            status: "paid".into(),
            total: 1000,
            amount_paid: 1000,
            products: ["prod_life".to_string()].into(),
            payment_intents: BTreeSet::new(),
            charge: None,
            next_payment_attempt: None,
            created: NOW,
        });
        let cn = |amount| {
            Record::CreditNote(CreditNoteRec {
                id: format!("cn_{amount}"),
                invoice: Some("in_1".into()),
                status: "issued".into(),
                amount,
            })
        };
        assert!(eval(vec![inv.clone(), cn(300)], &Policy::default(), NOW).is_valid);
        let p = eval(vec![inv, cn(300), cn(700)], &Policy::default(), NOW);
        assert_eq!(p.entitlement, code::REVOKED);
    }

    #[test]
    fn several_subscriptions_latest_expiry_best_code() {
        let a = sub("sub_a", "active", "prod_monthly", NOW + DAY);
        let mut b = sub("sub_b", "active", "prod_yearly", NOW + 300 * DAY);
        b.cancel_at_period_end = true;
        let p = eval(
            vec![Record::Subscription(a), Record::Subscription(b)],
            &Policy::default(),
            NOW,
        );
        assert!(p.is_valid);
        assert_eq!(p.expires, Some(NOW + 300 * DAY));
        assert_eq!(p.entitlement, code::RENEWING);
        assert_eq!(p.skus.len(), 2);
    }

    #[test]
    fn ledger_keeps_the_newest_version_in_any_order() {
        let old = Record::Subscription(sub("sub_1", "active", "prod_monthly", NOW));
        let new = Record::Subscription(sub("sub_1", "canceled", "prod_monthly", NOW));
        let a: Ledger = [(5, old.clone()), (6, new.clone())].into_iter().collect();
        let b: Ledger = [(6, new.clone()), (5, old.clone())].into_iter().collect();
        assert_eq!(a, b);
        // Same second: progress decides.
        let c: Ledger = [(5, new.clone()), (5, old.clone())].into_iter().collect();
        let d: Ledger = [(5, old), (5, new.clone())].into_iter().collect();
        assert_eq!(c, d);
        assert_eq!(c.records().next(), Some(&new));
    }

    #[test]
    fn manual_grants_are_one_more_purchase() {
        let grant = |id: &str, expires: Option<i64>, revoked: Option<i64>| ManualGrant {
            id: id.into(),
            permission: "premium".into(),
            starts_at: NOW,
            expires_at: expires,
            revoked_at: revoked,
        };
        let ledger = Ledger::new();
        let eval_at = |grants: &[ManualGrant], now: i64| {
            evaluate_with(&ledger, grants, &catalog(), &Policy::default(), now)
        };
        // Before it starts it does not exist.
        assert!(eval_at(&[grant("g1", Some(NOW + DAY), None)], NOW - 1).is_empty());
        let p = eval_at(&[grant("g1", Some(NOW + DAY), None)], NOW).remove(0);
        assert!(p.is_valid);
        assert_eq!(p.entitlement, code::GRANTED);
        assert_eq!(p.expires, Some(NOW + DAY));
        assert_eq!(p.valid_until, Some(NOW + DAY));
        assert!(p.skus.is_empty());
        // Expired by the clock, revoked by hand.
        let p = eval_at(&[grant("g1", Some(NOW + DAY), None)], NOW + DAY).remove(0);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::EXPIRED);
        let p = eval_at(&[grant("g1", None, Some(NOW + 5))], NOW + 5).remove(0);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::REVOKED);
        assert!(eval_at(&[grant("g1", None, Some(NOW + 5))], NOW + 4)[0].is_valid);
        // Combined with a subscription: latest expiry, best code.
        let sub = Record::Subscription(sub("sub_1", "active", "prod_monthly", NOW + DAY));
        let ledger: Ledger = [(1, sub)].into_iter().collect();
        let p = evaluate_with(
            &ledger,
            &[grant("g1", Some(NOW + 9 * DAY), None)],
            &catalog(),
            &Policy::default(),
            NOW,
        )
        .remove(0);
        assert_eq!(p.entitlement, code::RENEWING);
        assert_eq!(p.expires, Some(NOW + 9 * DAY));
        assert_eq!(p.skus.len(), 1);
        // A grant of a permission the catalogue does not define gives nothing.
        let mut other = grant("g2", None, None);
        other.permission = "gold".into();
        assert!(eval_at(&[other], NOW).is_empty());
    }

    #[test]
    fn dispute_policy_and_fraud_warnings() {
        let cs = Record::Checkout(checkout("cs_1", "paid", "pi_1"));
        let dispute = |status: &str| {
            Record::Dispute(DisputeRec {
                id: "dp_1".into(),
                charge: Some("ch_pi_1".into()),
                payment_intent: None,
                status: status.into(),
            })
        };
        let opened = Policy {
            revoke_on_dispute_open: true,
            ..Policy::default()
        };
        let ch = Record::Charge(charge("pi_1", 0));
        let with = |d: Record, policy: &Policy| eval(vec![cs.clone(), ch.clone(), d], policy, NOW);
        assert!(with(dispute("needs_response"), &Policy::default()).is_valid);
        let p = with(dispute("needs_response"), &opened);
        assert!(!p.is_valid);
        assert_eq!(p.entitlement, code::REVOKED);
        assert!(!with(dispute("under_review"), &opened).is_valid);
        assert!(with(dispute("warning_needs_response"), &opened).is_valid);
        assert!(with(dispute("won"), &opened).is_valid, "restored when won");
        assert!(!with(dispute("lost"), &opened).is_valid);

        let efw = |actionable| {
            Record::FraudWarning(FraudWarningRec {
                id: "issfr_1".into(),
                charge: Some("ch_pi_1".into()),
                payment_intent: None,
                actionable,
            })
        };
        assert!(
            with(efw(true), &Policy::default()).is_valid,
            "recorded only"
        );
        let strict = Policy {
            revoke_on_fraud_warning: true,
            ..Policy::default()
        };
        assert!(!with(efw(true), &strict).is_valid);
        assert!(with(efw(false), &strict).is_valid);
    }

    #[test]
    fn changes_are_named() {
        let held = PermissionState {
            identifier: "premium".into(),
            is_valid: true,
            entitlement: code::RENEWING,
            expires: Some(10),
            valid_until: Some(10),
            skus: vec![],
        };
        let renewed = PermissionState {
            expires: Some(20),
            ..held.clone()
        };
        let revoked = PermissionState {
            is_valid: false,
            entitlement: code::REVOKED,
            ..held.clone()
        };
        assert_eq!(change(None, &held), Some(ChangeKind::Granted));
        assert_eq!(change(Some(&held), &renewed), Some(ChangeKind::Renewed));
        assert_eq!(change(Some(&held), &held), None);
        assert_eq!(change(Some(&held), &revoked), Some(ChangeKind::Revoked));
    }
}
