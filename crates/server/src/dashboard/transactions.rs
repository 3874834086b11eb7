//! The dashboard's transactions: the filtered list, one transaction's page, and capture, void
//! and refund with amounts typed as people write them ("5.00" EUR, "1299" JPY), shown back in
//! a confirmation step before anything is sent to Stripe.
//!
//! Status groups the list (and the overview's links) accept besides the statuses themselves:
//! `pending`, `authorized`, `captured`, `refunded`, `partially_refunded`, `fully_refunded`,
//! `declined`, `voided`, `approved`, `disputed` (see [`GROUPS`]).

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tollgate_domain::Currency;

use super::common::{Form, Params, notice_text, param, query_string, seg};
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, When, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::render::{RefundOut, TransactionEvent, TransactionOut};
use crate::error::ApiError;
use crate::page::format_money;

// ---- words for statuses ----------------------------------------------------------------------

/// A status as people read it, with the colour it is shown in: `ok` (money received), `warn`
/// (needs someone: authorized awaiting capture, partly refunded), `info` (under way), `bad`
/// (declined, failed, disputed), `muted` (ended without money: voided), `refund` (all given
/// back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLabel {
    pub text: &'static str,
    pub tone: &'static str,
}

const fn lbl(text: &'static str, tone: &'static str) -> StatusLabel {
    StatusLabel { text, tone }
}

/// The words for a bare status name (no amounts known).
pub fn status_words(status: &str) -> StatusLabel {
    match status {
        "processing" => lbl("Processing", "info"),
        "buyer_approval_pending" => lbl("Awaiting buyer", "info"),
        "authorization_succeeded" => lbl("Authorized, awaiting capture", "warn"),
        "authorization_declined" => lbl("Declined", "bad"),
        "authorization_failed" => lbl("Failed", "bad"),
        "authorization_void_pending" => lbl("Voiding", "muted"),
        "authorization_voided" => lbl("Voided", "muted"),
        "capture_pending" => lbl("Capturing", "info"),
        "capture_succeeded" => lbl("Paid", "ok"),
        _ => lbl("Unknown", "muted"),
    }
}

/// The words for a transaction: a captured payment whose money all went back is "Refunded",
/// part of it "Partially refunded"; a dispute outranks everything.
pub fn transaction_label(t: &TransactionOut) -> StatusLabel {
    if t.disputed {
        return lbl("Disputed", "bad");
    }
    if t.status == "capture_succeeded" && t.refunded_amount > 0 {
        if t.refunded_amount >= t.captured_amount {
            return lbl("Refunded", "refund");
        }
        return lbl("Partially refunded", "warn");
    }
    status_words(&t.status)
}

fn refund_words(status: &str) -> StatusLabel {
    match status {
        "processing" => lbl("Processing", "info"),
        "succeeded" => lbl("Refunded", "refund"),
        "failed" => lbl("Failed", "bad"),
        "declined" => lbl("Declined by Stripe", "bad"),
        "voided" => lbl("Canceled", "muted"),
        _ => lbl("Unknown", "muted"),
    }
}

/// What the list's status filter offers: a group of statuses (and flags), or one status.
pub struct Group {
    pub key: &'static str,
    pub label: &'static str,
    pub statuses: &'static [&'static str],
    /// `has_refunds`: Some(true) only with refunds, Some(false) only without.
    pub refunds: Option<bool>,
    pub disputed: Option<bool>,
    /// Refunded in full (true) or in part (false); applied to the page's rows.
    pub fully: Option<bool>,
}

const APPROVED: &[&str] = &[
    "authorization_succeeded",
    "authorization_void_pending",
    "authorization_voided",
    "capture_pending",
    "capture_succeeded",
];

/// The groups the filter (and the overview's links) use.
pub const GROUPS: &[Group] = &[
    Group {
        key: "pending",
        label: "In progress",
        statuses: &["processing", "buyer_approval_pending", "capture_pending"],
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "authorized",
        label: "Authorized, awaiting capture",
        statuses: &["authorization_succeeded"],
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "captured",
        label: "Paid (refunded or not)",
        statuses: &["capture_succeeded"],
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "refunded",
        label: "Refunded, fully or partly",
        statuses: &["capture_succeeded"],
        refunds: Some(true),
        disputed: None,
        fully: None,
    },
    Group {
        key: "fully_refunded",
        label: "Refunded in full",
        statuses: &["capture_succeeded"],
        refunds: Some(true),
        disputed: None,
        fully: Some(true),
    },
    Group {
        key: "partially_refunded",
        label: "Partially refunded",
        statuses: &["capture_succeeded"],
        refunds: Some(true),
        disputed: None,
        fully: Some(false),
    },
    Group {
        key: "declined",
        label: "Declined or failed",
        statuses: &["authorization_declined", "authorization_failed"],
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "voided",
        label: "Voided",
        statuses: &["authorization_void_pending", "authorization_voided"],
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "approved",
        label: "Approved (authorized or paid)",
        statuses: APPROVED,
        refunds: None,
        disputed: None,
        fully: None,
    },
    Group {
        key: "disputed",
        label: "Disputed",
        statuses: &[],
        refunds: None,
        disputed: Some(true),
        fully: None,
    },
];

// ---- the list --------------------------------------------------------------------------------

pub struct SelectOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct ListRow {
    pub href: String,
    pub id: String,
    pub created: When,
    pub label: StatusLabel,
    /// What the payment is worth now: captured − refunded, or the amount not yet captured.
    pub net: String,
    /// The original amount when it differs, or what the amount is (authorized, not charged).
    pub secondary: Option<String>,
    pub card: Option<String>,
    pub who: Option<String>,
}

/// The filter form's fields as typed (shown back as they were).
#[derive(Default)]
pub struct Filters {
    pub status: String,
    pub from: String,
    pub to: String,
    pub min: String,
    pub max: String,
    pub currency: String,
    pub customid: String,
}

#[derive(Template)]
#[template(path = "dashboard/transactions/list.html")]
struct ListPage {
    frame: Frame,
    f: Filters,
    statuses: Vec<SelectOption>,
    errors: FieldErrors,
    /// A problem with the whole query (not one field).
    problem: Option<String>,
    rows: Vec<ListRow>,
    newer: Option<String>,
    older: Option<String>,
}

fn valid_date(d: &str) -> bool {
    d.len() == 10
        && d.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A `from`/`to` filter: a day (`2026-12-07`, its start or its end in UTC) or an RFC 3339 time
/// as it is.
fn day_bound(v: &str, end: bool) -> Option<String> {
    if valid_date(v) {
        let time = if end { "T23:59:59.999Z" } else { "T00:00:00Z" };
        return Some(format!("{v}{time}"));
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|_| v.to_string())
}

/// Reads the filter form into the API's list query; refused fields get their message.
fn list_query(
    params: &[(String, String)],
    f: &Filters,
    errors: &mut FieldErrors,
) -> (api::transactions::TransactionListQuery, Option<bool>) {
    let mut q = api::transactions::TransactionListQuery {
        limit: Some("25".into()),
        cursor: param(params, "cursor").map(str::to_string),
        ..Default::default()
    };
    let mut fully = None;
    if !f.status.is_empty() {
        if let Some(g) = GROUPS.iter().find(|g| g.key == f.status) {
            q.status = g.statuses.iter().map(|s| s.to_string()).collect();
            q.has_refunds = g.refunds.map(|b| b.to_string());
            q.disputed = g.disputed.map(|b| b.to_string());
            fully = g.fully;
        } else if tollgate_domain::TransactionStatus::NAMES.contains(&f.status.as_str()) {
            q.status = vec![f.status.clone()];
        } else {
            errors.insert("status".into(), "Choose a status from the list.".into());
        }
    }
    for (key, v, end) in [("from", &f.from, false), ("to", &f.to, true)] {
        if v.is_empty() {
            continue;
        }
        match day_bound(v, end) {
            Some(t) if end => q.created_at_lte = Some(t),
            Some(t) => q.created_at_gte = Some(t),
            None => {
                errors.insert(key.into(), "Type a date as YYYY-MM-DD.".into());
            }
        }
    }
    let currency = if f.currency.is_empty() {
        None
    } else {
        match Currency::parse(&f.currency) {
            Ok(c) => {
                q.currency = vec![c.code().to_string()];
                Some(c)
            }
            Err(_) => {
                errors.insert(
                    "currency".into(),
                    "Type a three-letter currency code, such as EUR.".into(),
                );
                None
            }
        }
    };
    for (key, v) in [("min", &f.min), ("max", &f.max)] {
        if v.is_empty() {
            continue;
        }
        let Some(c) = currency else {
            if !errors.contains_key("currency") {
                errors.insert(
                    key.into(),
                    "Choose a currency too: the amount is read in its units.".into(),
                );
            }
            continue;
        };
        match c.parse_decimal(v) {
            Ok(minor) if key == "min" => q.amount_gte = Some(minor.to_string()),
            Ok(minor) => q.amount_lte = Some(minor.to_string()),
            Err(e) => {
                errors.insert(key.into(), e.to_string());
            }
        }
    }
    if !f.customid.is_empty() {
        q.customid = Some(f.customid.clone());
    }
    (q, fully)
}

/// The net amount of a transaction and what to say beside it.
fn amounts(t: &TransactionOut) -> (String, Option<String>) {
    let m = |v: i64| format_money(v, &t.currency);
    match t.status.as_str() {
        "capture_succeeded" => {
            let net = t.captured_amount - t.refunded_amount;
            let secondary = if t.refunded_amount > 0 {
                Some(format!("of {} paid", m(t.captured_amount)))
            } else if t.captured_amount != t.amount {
                Some(format!("of {} asked", m(t.amount)))
            } else {
                None
            };
            (m(net), secondary)
        }
        "authorization_succeeded" | "capture_pending" => (
            m(t.authorized_amount.max(t.amount)),
            Some("authorized, not yet charged".into()),
        ),
        "authorization_declined"
        | "authorization_failed"
        | "authorization_voided"
        | "authorization_void_pending" => (m(t.amount), Some("not charged".into())),
        _ => (m(t.amount), Some("not yet paid".into())),
    }
}

fn list_row(t: &TransactionOut, card: Option<String>, now: i64) -> ListRow {
    let (net, secondary) = amounts(t);
    ListRow {
        href: format!("/dashboard/transactions/{}", seg(&t.id)),
        id: t.id.clone(),
        created: When::from_rfc3339(&t.created_at, now),
        label: transaction_label(t),
        net,
        secondary,
        card,
        who: t.customid.clone().or_else(|| t.external_identifier.clone()),
    }
}

/// "Visa •••• 4242" from a brand and last 4 digits.
pub fn card_text(brand: &str, last4: &str) -> String {
    let brand = match brand {
        "visa" => "Visa".to_string(),
        "mastercard" => "Mastercard".to_string(),
        "amex" => "American Express".to_string(),
        "discover" => "Discover".to_string(),
        "diners" => "Diners Club".to_string(),
        "jcb" => "JCB".to_string(),
        "unionpay" => "UnionPay".to_string(),
        "cartes_bancaires" => "Cartes Bancaires".to_string(),
        other => {
            let mut c = other.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => "Card".to_string(),
            }
        }
    };
    format!("{brand} •••• {last4}")
}

async fn cards_of(ctx: &ApiContext, merchant: &str, ids: &[String]) -> Vec<(String, String)> {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    tollgate_store::search::cards_of(&ctx.store, merchant, &refs)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.transaction_id, card_text(&c.brand, &c.last4)))
        .collect()
}

pub async fn transactions(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let get = |k: &str| param(&params, k).unwrap_or_default().to_string();
    let f = Filters {
        status: get("status"),
        from: get("from"),
        to: get("to"),
        min: get("min"),
        max: get("max"),
        currency: get("currency").to_ascii_uppercase(),
        customid: get("customid"),
    };
    let mut errors = FieldErrors::new();
    let (q, fully) = list_query(&params, &f, &mut errors);
    let mut statuses: Vec<SelectOption> = GROUPS
        .iter()
        .map(|g| SelectOption {
            value: g.key.into(),
            label: g.label.into(),
            selected: g.key == f.status,
        })
        .collect();
    statuses.extend(
        tollgate_domain::TransactionStatus::NAMES
            .iter()
            .map(|n| SelectOption {
                value: n.to_string(),
                label: format!("Status: {}", status_words(n).text),
                selected: *n == f.status,
            }),
    );
    let frame = Frame::new(&ctx, &s, "Transactions", "transactions")
        .await
        .notice(notice_text(&params));
    let mut page = ListPage {
        frame,
        f,
        statuses,
        errors,
        problem: None,
        rows: Vec::new(),
        newer: None,
        older: None,
    };
    if !page.errors.is_empty() {
        return render(REFUSED, &page);
    }
    let listed = api::transactions::list(
        State(ctx.clone()),
        super::caller(&s),
        api::transactions::ListParams(q),
    )
    .await;
    let listed = match listed {
        Ok(j) => j.0,
        Err(e) => {
            let status = status_of(&e);
            if status.is_server_error() {
                tracing::error!(cause = %e, "dashboard: listing transactions");
            }
            page.problem = Some(e.envelope().message);
            return render(status, &page);
        }
    };
    let now = ctx.now();
    let ids: Vec<String> = listed.items.iter().map(|t| t.id.clone()).collect();
    let cards = cards_of(&ctx, &s.merchant_account_id, &ids).await;
    page.rows = listed
        .items
        .iter()
        .filter(|t| match fully {
            Some(true) => t.refunded_amount >= t.captured_amount,
            Some(false) => t.refunded_amount < t.captured_amount,
            None => true,
        })
        .map(|t| {
            let card = cards
                .iter()
                .find(|(id, _)| *id == t.id)
                .map(|(_, c)| c.clone());
            list_row(t, card, now)
        })
        .collect();
    let link = |cursor: &Option<String>| {
        cursor.as_ref().map(|c| {
            let mut pairs: Vec<(&str, String)> = [
                ("status", &page.f.status),
                ("from", &page.f.from),
                ("to", &page.f.to),
                ("min", &page.f.min),
                ("max", &page.f.max),
                ("currency", &page.f.currency),
                ("customid", &page.f.customid),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.clone()))
            .collect();
            pairs.push(("cursor", c.clone()));
            format!("/dashboard/transactions?{}", query_string(&pairs))
        })
    };
    page.newer = link(&listed.previous_cursor);
    page.older = link(&listed.next_cursor);
    render(StatusCode::OK, &page)
}

// ---- one transaction -------------------------------------------------------------------------

pub struct Fact {
    pub term: &'static str,
    pub value: String,
    /// Shown as code (ids).
    pub code: bool,
    pub href: Option<String>,
}

pub struct RefundRow {
    pub created: When,
    pub label: StatusLabel,
    pub amount: String,
    pub stripe_id: Option<String>,
    pub reason: Option<String>,
}

pub struct TimelineItem {
    pub when: When,
    pub what: String,
    pub details: String,
}

/// What the action forms show: the values typed, their messages, the amounts in words.
#[derive(Default)]
pub struct ActionForms {
    pub can_capture: bool,
    pub can_refund: bool,
    pub capture_amount: String,
    pub refund_amount: String,
    pub refund_reason: String,
    /// "€89.00"
    pub authorized: String,
    /// "€84.00"
    pub refundable: String,
    /// "12.99"
    pub example: String,
    pub errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "dashboard/transactions/detail.html")]
struct DetailPage {
    frame: Frame,
    id: String,
    path: String,
    label: StatusLabel,
    net: String,
    secondary: Option<String>,
    facts: Vec<Fact>,
    forms: ActionForms,
    /// Messages of a form the page no longer shows (the transaction moved on).
    orphans: Vec<String>,
    refunds: Vec<RefundRow>,
    timeline: Vec<TimelineItem>,
}

#[derive(Template)]
#[template(path = "dashboard/transactions/problem.html")]
struct ProblemPage {
    frame: Frame,
    message: String,
}

async fn problem(ctx: &ApiContext, s: &Session, e: ApiError) -> Response {
    let status = status_of(&e);
    if status.is_server_error() {
        tracing::error!(cause = %e, "dashboard: transactions");
    }
    let title = if status == StatusCode::NOT_FOUND {
        "Transaction not found"
    } else {
        "Transaction not available"
    };
    let message = if status == StatusCode::NOT_FOUND {
        "There is no such transaction in this merchant account.".to_string()
    } else {
        e.envelope().message
    };
    let frame = Frame::new(ctx, s, title, "transactions").await;
    render(status, &ProblemPage { frame, message })
}

fn event_words(e: &TransactionEvent) -> String {
    let from_to = |k: &str| e.context[k].as_str().map(|s| status_words(s).text);
    match e.name.as_str() {
        "transaction.created" => "Created".into(),
        "transaction.payment_intent_created" => "Sent to Stripe".into(),
        "transaction.status_changed" => match (from_to("from"), from_to("to")) {
            (Some(a), Some(b)) => format!("{a} → {b}"),
            _ => "Status changed".into(),
        },
        "transaction.error_recorded" => "Stripe reported an error".into(),
        "transaction.amounts_changed" => "Amounts changed".into(),
        "transaction.refund_status_changed" => "A refund changed".into(),
        "transaction.dispute_changed" => "Dispute changed".into(),
        "transaction.update_ignored" => "An older update from Stripe was ignored".into(),
        other => other
            .trim_start_matches("transaction.")
            .replace(['_', '.'], " "),
    }
}

fn refundable(t: &TransactionOut) -> i64 {
    if t.status == "capture_succeeded" {
        (t.captured_amount - t.refunded_amount).max(0)
    } else {
        0
    }
}

/// Loads everything the transaction's page shows and builds it with `forms`' values.
async fn detail_page(
    ctx: &ApiContext,
    s: &Session,
    id: &str,
    notice: Option<&'static str>,
    mut forms: ActionForms,
) -> Result<DetailPage, ApiError> {
    let c = || super::caller(s);
    let st = || State(ctx.clone());
    let t = api::transactions::get(st(), c(), Path(id.to_string()))
        .await?
        .0;
    let events = api::transactions::events(st(), c(), Path(id.to_string()))
        .await?
        .0;
    let refunds = api::refunds::list(st(), c(), Path(id.to_string())).await?.0;
    let now = ctx.now();
    let cur = Currency::parse(&t.currency).unwrap_or(Currency::USD);
    let m = |v: i64| format_money(v, &t.currency);
    let card = cards_of(ctx, &s.merchant_account_id, std::slice::from_ref(&t.id))
        .await
        .into_iter()
        .next()
        .map(|(_, c)| c);
    let (net, secondary) = amounts(&t);
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut facts = vec![
        Fact {
            term: "Amount",
            value: m(t.amount),
            code: false,
            href: None,
        },
        Fact {
            term: "Captured",
            value: m(t.captured_amount),
            code: false,
            href: None,
        },
        Fact {
            term: "Refunded",
            value: m(t.refunded_amount),
            code: false,
            href: None,
        },
        Fact {
            term: "Payment method",
            value: card.unwrap_or_else(|| match t.method.as_str() {
                "stripe" => "Stripe (any method)".into(),
                other => other.replace('_', " "),
            }),
            code: false,
            href: None,
        },
        Fact {
            term: "Intent",
            value: match t.intent.as_str() {
                "authorize" => "Authorize, capture later".into(),
                _ => "Charge at once".into(),
            },
            code: false,
            href: None,
        },
    ];
    if let Some(cid) = &t.customid {
        facts.push(Fact {
            term: "Customer",
            value: cid.clone(),
            code: false,
            href: Some(format!("/dashboard/customers/{}", seg(cid))),
        });
    }
    if let Some(ext) = &t.external_identifier {
        facts.push(Fact {
            term: "Reference",
            value: ext.clone(),
            code: false,
            href: None,
        });
    }
    if let Some(pi) = &t.additional_identifiers.payment_id {
        facts.push(Fact {
            term: "Stripe PaymentIntent",
            value: pi.clone(),
            code: true,
            href: None,
        });
    }
    facts.push(Fact {
        term: "Connection",
        value: t.payment_service.id.clone(),
        code: true,
        href: Some(format!(
            "/dashboard/connections/{}",
            seg(&t.payment_service.id)
        )),
    });
    let err = [opt(&t.error_code), opt(&t.raw_response_description)]
        .join(" ")
        .trim()
        .to_string();
    if !err.is_empty() {
        facts.push(Fact {
            term: "Error",
            value: err.replace('_', " "),
            code: false,
            href: None,
        });
    }
    let left = refundable(&t);
    forms.can_capture = t.status == "authorization_succeeded";
    forms.can_refund = left > 0;
    forms.authorized = m(t.authorized_amount.max(t.amount));
    forms.refundable = m(left);
    forms.example = cur.example();
    let orphans = forms
        .errors
        .iter()
        .filter(|(k, _)| {
            let capture = k.as_str() == "capture_amount" || k.as_str() == "void_confirm";
            if capture {
                !forms.can_capture
            } else {
                !forms.can_refund
            }
        })
        .map(|(_, v)| v.clone())
        .collect();
    Ok(DetailPage {
        frame: Frame::new(
            ctx,
            s,
            &format!("Transaction {}", m(t.amount)),
            "transactions",
        )
        .await
        .notice(notice),
        id: t.id.clone(),
        path: format!("/dashboard/transactions/{}", seg(&t.id)),
        label: transaction_label(&t),
        net,
        secondary,
        facts,
        forms,
        orphans,
        refunds: refunds
            .items
            .iter()
            .map(|r: &RefundOut| RefundRow {
                created: When::from_rfc3339(&r.created_at, now),
                label: refund_words(&r.status),
                amount: format_money(r.amount, &r.currency),
                stripe_id: r.payment_service_refund_id.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        timeline: events
            .items
            .iter()
            .map(|e| TimelineItem {
                when: When::from_rfc3339(&e.created_at, now),
                what: event_words(e),
                details: serde_json::to_string_pretty(&e.context).unwrap_or_default(),
            })
            .collect(),
    })
}

pub async fn transaction(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let forms = ActionForms {
        refund_amount: param(&params, "refund_amount")
            .unwrap_or_default()
            .to_string(),
        capture_amount: param(&params, "capture_amount")
            .unwrap_or_default()
            .to_string(),
        refund_reason: param(&params, "reason").unwrap_or_default().to_string(),
        ..Default::default()
    };
    match detail_page(&ctx, &s, &id, notice_text(&params), forms).await {
        Ok(p) => render(StatusCode::OK, &p),
        Err(e) => problem(&ctx, &s, e).await,
    }
}

/// The transaction's page again with what was typed and a message next to `field` (422).
async fn refused(
    ctx: &ApiContext,
    s: &Session,
    id: &str,
    forms: ActionForms,
    field: &str,
    message: String,
) -> Response {
    shown_again(ctx, s, id, forms, REFUSED, field, message).await
}

/// The transaction's page again after the API refused the action: its message next to the field
/// it names (else next to `field`), with the API's status as the page's ([`status_of`]).
async fn api_refused(
    ctx: &ApiContext,
    s: &Session,
    id: &str,
    forms: ActionForms,
    e: &ApiError,
    field: &str,
) -> Response {
    let (at, message) = api_message(e, field);
    shown_again(ctx, s, id, forms, status_of(e), &at, message).await
}

async fn shown_again(
    ctx: &ApiContext,
    s: &Session,
    id: &str,
    mut forms: ActionForms,
    status: StatusCode,
    field: &str,
    message: String,
) -> Response {
    forms.errors.insert(field.to_string(), message);
    match detail_page(ctx, s, id, None, forms).await {
        Ok(p) => render(status, &p),
        Err(e) => problem(ctx, s, e).await,
    }
}

/// An API error of an action: its `/reason` detail next to the refund's reason, anything else
/// next to `field` (the form's amount, or its box).
fn api_message(e: &ApiError, field: &str) -> (String, String) {
    let env = e.envelope();
    match env.details.first() {
        Some(d) if d.pointer == "/reason" => ("refund_reason".to_string(), d.message.clone()),
        Some(d) => (field.to_string(), d.message.clone()),
        None => (field.to_string(), env.message),
    }
}

#[derive(Template)]
#[template(path = "dashboard/transactions/confirm.html")]
struct ConfirmPage {
    frame: Frame,
    path: String,
    /// `capture` or `refund`
    action: &'static str,
    sentence: String,
    /// "Refund €5.00"
    button: String,
    amount: String,
    reason: String,
}

fn confirmed(form: &[(String, String)]) -> bool {
    param(form, "confirm") == Some("yes")
}

/// Reads a typed amount (empty: `None`, all of it) in the transaction's currency, at most
/// `max`.
fn typed_amount(cur: Currency, typed: &str, max: i64, what: &str) -> Result<Option<i64>, String> {
    if typed.trim().is_empty() {
        return Ok(None);
    }
    let minor = cur.parse_decimal(typed).map_err(|e| e.to_string())?;
    if minor > max {
        return Err(format!(
            "At most {} can be {what}.",
            format_money(max, cur.code())
        ));
    }
    Ok(Some(minor))
}

pub async fn transaction_capture(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let typed = param(&form, "amount").unwrap_or_default().to_string();
    let forms = || ActionForms {
        capture_amount: typed.clone(),
        ..Default::default()
    };
    let t = match api::transactions::get(State(ctx.clone()), super::caller(&s), Path(id.clone()))
        .await
    {
        Ok(j) => j.0,
        Err(e) => return problem(&ctx, &s, e).await,
    };
    if t.status != "authorization_succeeded" {
        let words = transaction_label(&t).text.to_lowercase();
        return refused(
            &ctx,
            &s,
            &id,
            forms(),
            "capture_amount",
            format!("Only an authorized payment can be captured; this one is {words}."),
        )
        .await;
    }
    let cur = Currency::parse(&t.currency).unwrap_or(Currency::USD);
    let authorized = t.authorized_amount.max(t.amount);
    let amount = match typed_amount(cur, &typed, authorized, "captured") {
        Ok(a) => a,
        Err(m) => return refused(&ctx, &s, &id, forms(), "capture_amount", m).await,
    };
    let take = amount.unwrap_or(authorized);
    if !confirmed(&form) {
        let m = |v: i64| format_money(v, &t.currency);
        let mut sentence = format!("Capture {} of {} authorized.", m(take), m(authorized));
        if take < authorized {
            sentence.push_str(&format!(
                " Stripe releases the remaining {}: it cannot be captured later.",
                m(authorized - take)
            ));
        }
        let frame = Frame::new(&ctx, &s, "Confirm the capture", "transactions").await;
        return render(
            StatusCode::OK,
            &ConfirmPage {
                frame,
                path: format!("/dashboard/transactions/{}", seg(&id)),
                action: "capture",
                sentence,
                button: format!("Capture {}", m(take)),
                amount: cur.to_decimal(take),
                reason: String::new(),
            },
        );
    }
    let done = crate::transactions::capture(
        &ctx,
        &super::caller(&s),
        &id,
        amount.map(serde_json::Value::from).as_ref(),
    )
    .await;
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=captured",
            seg(&id)
        )),
        Err(e) => api_refused(&ctx, &s, &id, forms(), &e, "capture_amount").await,
    }
}

pub async fn transaction_void(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    if !confirmed(&form) {
        return refused(
            &ctx,
            &s,
            &id,
            ActionForms::default(),
            "void_confirm",
            "Tick the box to confirm the void.".into(),
        )
        .await;
    }
    match crate::transactions::void(&ctx, &super::caller(&s), &id).await {
        Ok(_) => see_other(&format!("/dashboard/transactions/{}?done=voided", seg(&id))),
        Err(e @ ApiError::NotFound(_)) => problem(&ctx, &s, e).await,
        Err(e) => api_refused(&ctx, &s, &id, ActionForms::default(), &e, "void_confirm").await,
    }
}

pub async fn transaction_refund(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let typed = param(&form, "amount").unwrap_or_default().to_string();
    let reason = param(&form, "reason").unwrap_or_default().to_string();
    let forms = || ActionForms {
        refund_amount: typed.clone(),
        refund_reason: reason.clone(),
        ..Default::default()
    };
    let t = match api::transactions::get(State(ctx.clone()), super::caller(&s), Path(id.clone()))
        .await
    {
        Ok(j) => j.0,
        Err(e) => return problem(&ctx, &s, e).await,
    };
    let left = refundable(&t);
    if left == 0 {
        let message = if t.status == "capture_succeeded" {
            "Everything captured has been refunded already.".to_string()
        } else {
            let words = transaction_label(&t).text.to_lowercase();
            format!("Only a captured payment can be refunded; this one is {words}.")
        };
        return refused(&ctx, &s, &id, forms(), "refund_amount", message).await;
    }
    if reason.chars().count() > 200 {
        return refused(
            &ctx,
            &s,
            &id,
            forms(),
            "refund_reason",
            "Keep the reason to 200 characters or fewer.".into(),
        )
        .await;
    }
    let cur = Currency::parse(&t.currency).unwrap_or(Currency::USD);
    let amount = match typed_amount(cur, &typed, left, "refunded") {
        Ok(a) => a,
        Err(m) => return refused(&ctx, &s, &id, forms(), "refund_amount", m).await,
    };
    let give = amount.unwrap_or(left);
    if !confirmed(&form) {
        let m = |v: i64| format_money(v, &t.currency);
        let mut sentence = format!("Refund {} of {} captured.", m(give), m(t.captured_amount));
        if t.refunded_amount > 0 {
            sentence.push_str(&format!(" {} was refunded before.", m(t.refunded_amount)));
        }
        let frame = Frame::new(&ctx, &s, "Confirm the refund", "transactions").await;
        return render(
            StatusCode::OK,
            &ConfirmPage {
                frame,
                path: format!("/dashboard/transactions/{}", seg(&id)),
                action: "refund",
                sentence,
                button: format!("Refund {}", m(give)),
                amount: cur.to_decimal(give),
                reason,
            },
        );
    }
    let body = api::refunds::RefundCreate {
        amount: Some(give),
        reason: (!reason.is_empty()).then(|| reason.clone()),
        ..Default::default()
    };
    let done = api::refunds::create(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        HeaderMap::new(),
        api::typed::Body(body),
    )
    .await;
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=refunded",
            seg(&id)
        )),
        Err(e) => api_refused(&ctx, &s, &id, forms(), &e, "refund_amount").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_bound_the_list() {
        assert_eq!(
            day_bound("2026-12-07", false).as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            day_bound("2026-12-07", true).as_deref(),
            Some("2026-12-07T23:59:59.999Z")
        );
        assert_eq!(
            day_bound("2026-12-07T10:00:00Z", false).as_deref(),
            Some("2026-12-07T10:00:00Z")
        );
        assert_eq!(day_bound("yesterday", false), None);
    }

    #[test]
    fn amounts_are_typed_in_the_currency() {
        assert_eq!(
            typed_amount(Currency::EUR, "5.00", 8900, "refunded"),
            Ok(Some(500))
        );
        assert_eq!(
            typed_amount(Currency::JPY, "1299", 5000, "refunded"),
            Ok(Some(1299))
        );
        assert_eq!(typed_amount(Currency::EUR, "", 8900, "refunded"), Ok(None));
        assert!(typed_amount(Currency::EUR, "5.001", 8900, "refunded").is_err());
        assert!(typed_amount(Currency::EUR, "abc", 8900, "refunded").is_err());
        assert_eq!(
            typed_amount(Currency::EUR, "100", 8900, "refunded"),
            Err("At most €89.00 can be refunded.".into())
        );
    }
}
