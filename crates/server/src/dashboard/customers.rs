//! The dashboard's customers: a paged, searchable list, and a customer's page (permissions in
//! words, the Stripe purchases behind them, manual grants, and the credit balances, ledger and
//! adjustments of metered permissions). Every read goes through the API handlers' typed
//! answers; every change through the same functions the API uses.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;
use tollgate_store::customers::{self as store_customers, Holding};

use super::common::{Form, Params, confirmed, notice_text, param, seg};
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, When, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::credits::{AdjustRequest, BalanceOut, LedgerEntryOut, LedgerQuery};
use crate::api::entitlements::{GrantCreate, GrantOut, SubscriberOut};
use crate::api::typed::{Body, Params as ApiParams};
use crate::entitlements::map::Permission;
use crate::error::ApiError;
use tollgate_domain::entitlements::code;

/// Customers a list page shows.
const PAGE: i64 = 25;
/// Ledger rows a customer page shows.
const LEDGER_PAGE: i64 = 20;

// ---- words -----------------------------------------------------------------------------------

/// A state in words with a colour that means something: `ok` (held), `wait` (held, but look),
/// `bad` (lost by a refund or a failed payment), `off` (not held, nothing wrong).
pub struct Label {
    pub text: String,
    pub tone: &'static str,
}

fn label(text: impl Into<String>, tone: &'static str) -> Label {
    Label {
        text: text.into(),
        tone,
    }
}

/// `12 Jan 2027` (UTC).
pub fn day(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{} {} {}",
            t.day(),
            MONTHS[(t.month() as usize).saturating_sub(1) % 12],
            t.year()
        ),
        Err(_) => secs.to_string(),
    }
}

/// An entitlement code (as the permission check answers it) in words, with its expiry in
/// seconds when it has one. `revoked`: the permission was lost by a revoked grant, not a
/// refund.
pub fn entitlement_words(entitlement: i64, expires: Option<i64>, revoked: bool) -> Label {
    let until = |prefix: &str| match expires {
        Some(e) if e < 253_402_300_799 => format!("{prefix} {}", day(e)),
        _ => String::new(),
    };
    match i32::try_from(entitlement).unwrap_or(i32::MIN) {
        code::RENEWING => label("renewing", "ok"),
        code::CANCELING => match expires {
            Some(_) => label(format!("cancelled, {}", until("access until")), "wait"),
            None => label("cancelled", "wait"),
        },
        code::LIFETIME => label("lifetime", "ok"),
        code::GRANTED => {
            let u = until(", until");
            label(format!("granted by hand{u}"), "ok")
        }
        code::GRACE => match expires {
            Some(_) => label(format!("in grace period {}", until("until")), "wait"),
            None => label("in grace period", "wait"),
        },
        code::INCOMPLETE => label("payment incomplete", "wait"),
        code::GRACE_OVER => label("grace period over", "bad"),
        code::PAYMENT_FAILED => label("payment failed", "bad"),
        code::EXPIRED => label("expired", "off"),
        code::REVOKED if revoked => label("revoked", "bad"),
        code::REVOKED => label("refunded", "bad"),
        code::NEVER => label("never bought", "off"),
        code::PAUSED => label("paused", "off"),
        _ => label(format!("state {entitlement}"), "off"),
    }
}

fn object_words(object: &str) -> &'static str {
    match object {
        "subscription" => "Subscription",
        "checkout.session" => "Checkout",
        "invoice" => "Invoice",
        "payment_intent" => "Payment",
        "charge" => "Charge",
        "credit_note" => "Credit note",
        "dispute" => "Dispute",
        _ => "Grant by hand",
    }
}

fn ledger_kind_words(kind: &str) -> &'static str {
    match kind {
        "grant" => "Granted",
        "consume" => "Consumed",
        "expiry" => "Ended",
        "clawback" => "Taken back",
        "adjustment" => "Adjusted",
        _ => "Changed",
    }
}

fn units_text(units: i64) -> String {
    let digits = group(units.unsigned_abs());
    if units > 0 {
        format!("+{digits}")
    } else if units < 0 {
        format!("−{digits}")
    } else {
        digits
    }
}

/// `12,345`
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn customer_href(customid: &str) -> String {
    format!("/dashboard/customers/{}", seg(customid))
}

// ---- the list --------------------------------------------------------------------------------

struct ListRow {
    customid: String,
    href: String,
    stripe_customer: Option<String>,
    more_stripe: i64,
    state: Label,
}

#[derive(Template)]
#[template(path = "dashboard/customers/list.html")]
struct ListPage {
    frame: Frame,
    q: String,
    status: &'static str,
    rows: Vec<ListRow>,
    next: Option<String>,
    first: Option<String>,
    empty: String,
}

fn list_href(q: &str, status: &str, after: Option<&str>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if !q.is_empty() {
        s.append_pair("q", q);
    }
    if !status.is_empty() {
        s.append_pair("status", status);
    }
    if let Some(a) = after {
        s.append_pair("after", a);
    }
    let qs = s.finish();
    if qs.is_empty() {
        "/dashboard/customers".into()
    } else {
        format!("/dashboard/customers?{qs}")
    }
}

/// `GET /dashboard/customers?q=&status=&after=`: `q` is a customid prefix or a Stripe
/// customer (`cus_…`); `status` is `active` (holding a permission now; also `active=1`) or
/// `inactive`; `after` is the last customid of the page before.
pub async fn customers(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let merchant = s.merchant_account_id.clone();
    let q = param(&params, "q").unwrap_or_default().to_string();
    let (holding, status) = match (param(&params, "status"), param(&params, "active")) {
        (Some("active"), _) | (None, Some("1" | "true")) => (Holding::Active, "active"),
        (Some("inactive"), _) | (None, Some("0" | "false")) => (Holding::Inactive, "inactive"),
        _ => (Holding::Any, ""),
    };
    let after = param(&params, "after").map(str::to_string);
    let now = ctx.now();
    let found = if q.starts_with("cus_") {
        match store_customers::by_stripe_customer(ctx.store.reader(), &merchant, &q).await {
            Ok(ids) => {
                let mut rows = Vec::new();
                for id in ids {
                    match store_customers::page(
                        ctx.store.reader(),
                        &merchant,
                        &id,
                        None,
                        holding,
                        now,
                        PAGE,
                    )
                    .await
                    {
                        Ok(page) => {
                            rows.extend(page.items.into_iter().filter(|c| c.customid == id))
                        }
                        Err(e) => return problem(&ctx, &s, e.into()).await,
                    }
                }
                Ok(store_customers::CustomerPage {
                    items: rows,
                    scanned_to: None,
                })
            }
            Err(e) => Err(e),
        }
    } else {
        store_customers::page(
            ctx.store.reader(),
            &merchant,
            &q,
            after.as_deref(),
            holding,
            now,
            PAGE + 1,
        )
        .await
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => return problem(&ctx, &s, e.into()).await,
    };
    let mut items = found.items;
    // One more than a page: there is a next one. A page cut short (too many customers looked
    // at for a filter) goes on after the last one looked at.
    let next_after = if items.len() as i64 > PAGE {
        items.truncate(PAGE as usize);
        items.last().map(|c| c.customid.clone())
    } else {
        found.scanned_to
    };
    let next = next_after.map(|a| list_href(&q, status, Some(&a)));
    let empty = if q.starts_with("cus_") {
        format!("No customer is linked to the Stripe customer {q}.")
    } else if !q.is_empty() {
        format!("No customer's id starts with “{q}”.")
    } else if holding != Holding::Any || after.is_some() {
        "No customers match.".to_string()
    } else {
        "No customers yet: they appear when a Stripe customer is linked, a purchase is seen or a permission is granted.".to_string()
    };
    let rows = items
        .into_iter()
        .map(|c| ListRow {
            href: customer_href(&c.customid),
            state: if c.held > 0 {
                label(
                    if c.held == 1 {
                        "holds 1 permission".to_string()
                    } else {
                        format!("holds {} permissions", c.held)
                    },
                    "ok",
                )
            } else {
                label("holds nothing now", "off")
            },
            customid: c.customid,
            stripe_customer: c.stripe_customer,
            more_stripe: (c.stripe_customers - 1).max(0),
        })
        .collect();
    let frame = Frame::new(&ctx, &s, "Customers", "customers").await;
    render(
        StatusCode::OK,
        &ListPage {
            frame,
            first: after.as_ref().map(|_| list_href(&q, status, None)),
            q,
            status,
            rows,
            next,
            empty,
        },
    )
}

#[derive(Template)]
#[template(path = "dashboard/customers/problem.html")]
struct ProblemPage {
    frame: Frame,
    message: String,
}

/// A failure that is not a form's: said in a sentence, the cause in the log.
async fn problem(ctx: &ApiContext, s: &Session, e: ApiError) -> Response {
    let status = status_of(&e);
    let message = match &e {
        ApiError::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error (dashboard customers)");
            "This page could not be shown. The error is in the server's log.".to_string()
        }
        other => other.to_string(),
    };
    let frame = Frame::new(ctx, s, "Customers", "customers").await;
    render(status, &ProblemPage { frame, message })
}

// ---- one customer ----------------------------------------------------------------------------

struct PermissionView {
    identifier: String,
    state: Label,
    /// The entitlement code, shown second.
    code: i64,
    held: bool,
    expires: When,
    skus: String,
    /// Metered permissions: units available now.
    balance: Option<String>,
}

struct PurchaseView {
    id: String,
    anchor: String,
    kind: &'static str,
    sku: String,
    products: String,
    state: Label,
    code: i32,
    expires: When,
    trial: bool,
    gives: String,
}

struct GrantView {
    id: String,
    anchor: String,
    permission: String,
    units: Option<String>,
    starts: When,
    expires: When,
    reason: String,
    created_by: String,
    revoked: Option<(When, String)>,
    revoke_action: String,
}

struct LinkedView {
    id: String,
    linked_by: String,
    linked: When,
}

struct BalanceView {
    permission: String,
    available: String,
    held: String,
    granted: String,
    consumed: String,
    resets: When,
}

struct LedgerView {
    when: When,
    permission: String,
    kind: &'static str,
    units: String,
    negative: bool,
    balance_after: String,
    reason: String,
    cause: Option<Cause>,
}

/// What a ledger row links to: a purchase or grant on this page, a payment found by search,
/// or only its words.
struct Cause {
    text: String,
    href: Option<String>,
}

/// The grant form as typed.
#[derive(Default)]
struct GrantInput {
    permission: String,
    expires_at: String,
    reason: String,
    units: String,
}

/// The adjustment form as typed.
#[derive(Default)]
struct AdjustInput {
    permission: String,
    units: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "dashboard/customers/detail.html")]
struct CustomerPage {
    frame: Frame,
    customid: String,
    path: String,
    transactions_href: String,
    known: bool,
    evaluated: When,
    billing_issue: When,
    permissions: Vec<PermissionView>,
    purchases: Vec<PurchaseView>,
    grants: Vec<GrantView>,
    linked: Vec<LinkedView>,
    balances: Vec<BalanceView>,
    ledger: Vec<LedgerView>,
    ledger_next: Option<String>,
    ledger_newer: Option<String>,
    /// Every defined permission (the grant form's choices), metered ones marked.
    definitions: Vec<(String, bool)>,
    /// Metered permissions (the adjustment form's choices) with the customer's balance.
    metered: Vec<(String, i64)>,
    grant: GrantInput,
    grant_errors: FieldErrors,
    grant_problem: Option<String>,
    adjust: AdjustInput,
    adjust_errors: FieldErrors,
    adjust_problem: Option<String>,
    /// A sentence saying what the adjustment form will do, shown back when it was refused.
    adjust_preview: Option<String>,
}

/// What a refused form brings back to the page.
enum Refused {
    None,
    Grant(GrantInput, FieldErrors, Option<String>),
    Adjust(AdjustInput, FieldErrors, Option<String>),
}

pub async fn customer(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
    Query(params): Params,
) -> Response {
    let ledger_cursor = param(&params, "ledger").map(str::to_string);
    let notice = notice_text(&params).or(match param(&params, "done") {
        Some("granted") => Some("Permission granted."),
        Some("revoked") => Some("Grant revoked."),
        Some("adjusted") => Some("Balance adjusted."),
        _ => None,
    });
    customer_page(
        &ctx,
        &s,
        &customid,
        ledger_cursor,
        notice,
        StatusCode::OK,
        Refused::None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn customer_page(
    ctx: &ApiContext,
    s: &Session,
    customid: &str,
    ledger_cursor: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
    refused: Refused,
) -> Response {
    let caller = super::caller(s);
    let now = ctx.now();
    let (sub, known): (Option<SubscriberOut>, bool) = match api::entitlements::subscriber(
        State(ctx.clone()),
        caller.clone(),
        Path(customid.to_string()),
    )
    .await
    {
        Ok(j) => (Some(j.0), true),
        Err(ApiError::NotFound(_)) => (None, false),
        Err(e) => return problem(ctx, s, e).await,
    };
    let defs = match api::definitions::definition_list(State(ctx.clone()), caller.clone()).await {
        Ok(j) => j.0.items,
        Err(e) => return problem(ctx, s, e).await,
    };
    let balances: Vec<BalanceOut> = if known {
        match api::credits::balances(
            State(ctx.clone()),
            caller.clone(),
            Path(customid.to_string()),
        )
        .await
        {
            Ok(j) => j.0.items,
            Err(e) => return problem(ctx, s, e).await,
        }
    } else {
        Vec::new()
    };
    let ledger_page = |cursor: Option<String>| {
        api::credits::ledger(
            State(ctx.clone()),
            caller.clone(),
            Path(customid.to_string()),
            ApiParams(LedgerQuery {
                limit: Some(LEDGER_PAGE),
                cursor,
            }),
        )
    };
    let (ledger_rows, ledger_next, ledger_newer) = if !known {
        (Vec::new(), None, None)
    } else {
        let page = match ledger_page(ledger_cursor.clone()).await {
            Ok(j) => Ok(j.0),
            // A cursor this page did not make: the newest rows instead.
            Err(ApiError::BadRequest { .. }) => ledger_page(None).await.map(|j| j.0),
            Err(e) => Err(e),
        };
        match page {
            Ok(p) => {
                let base = customer_href(customid);
                (
                    p.items,
                    p.next_cursor
                        .map(|c| format!("{base}?ledger={}#ledger", seg(&c))),
                    ledger_cursor.map(|_| format!("{base}#ledger")),
                )
            }
            Err(e) => return problem(ctx, s, e).await,
        }
    };

    let metered: Vec<(String, i64)> = defs
        .iter()
        .filter(|d| d.kind == "metered")
        .map(|d| {
            let balance = balances
                .iter()
                .find(|b| b.permission == d.identifier)
                .map(|b| b.balance)
                .unwrap_or(0);
            (d.identifier.clone(), balance)
        })
        .collect();
    let definitions: Vec<(String, bool)> = defs
        .iter()
        .map(|d| (d.identifier.clone(), d.kind == "metered"))
        .collect();

    let mut page = CustomerPage {
        frame: Frame::new(ctx, s, &format!("Customer {customid}"), "customers")
            .await
            .notice(notice),
        customid: customid.to_string(),
        path: customer_href(customid),
        transactions_href: format!(
            "/dashboard/transactions?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("customid", customid)
                .finish()
        ),
        known,
        evaluated: When::default(),
        billing_issue: When::default(),
        permissions: Vec::new(),
        purchases: Vec::new(),
        grants: Vec::new(),
        linked: Vec::new(),
        balances: balances.iter().map(balance_view).collect(),
        ledger: Vec::new(),
        ledger_next,
        ledger_newer,
        definitions,
        metered,
        grant: GrantInput::default(),
        grant_errors: FieldErrors::new(),
        grant_problem: None,
        adjust: AdjustInput::default(),
        adjust_errors: FieldErrors::new(),
        adjust_problem: None,
        adjust_preview: None,
    };
    if let Some(sub) = &sub {
        fill_subscriber(&mut page, sub, now);
    }
    page.ledger = ledger_rows
        .iter()
        .map(|e| ledger_view(e, &page.purchases, &page.grants, now))
        .collect();
    match refused {
        Refused::None => {}
        Refused::Grant(input, errors, p) => {
            page.grant = input;
            page.grant_errors = errors;
            page.grant_problem = p;
        }
        Refused::Adjust(input, errors, p) => {
            page.adjust_preview = adjust_preview(&input, &balances);
            page.adjust = input;
            page.adjust_errors = errors;
            page.adjust_problem = p;
        }
    }
    let status = if !known && status == StatusCode::OK {
        StatusCode::NOT_FOUND
    } else {
        status
    };
    render(status, &page)
}

fn fill_subscriber(page: &mut CustomerPage, sub: &SubscriberOut, now: i64) {
    page.evaluated = When::from_rfc3339(&sub.evaluated_at, now);
    page.billing_issue = When::opt_rfc3339(sub.billing_issue_detected_at.as_deref(), now);
    page.linked = sub
        .stripe_customers
        .iter()
        .map(|c| LinkedView {
            id: c.id.clone(),
            linked_by: match c.linked_by.as_str() {
                "api" => "linked through the API".to_string(),
                "metadata" => "customid in its Stripe metadata".to_string(),
                other => other.to_string(),
            },
            linked: When::from_rfc3339(&c.linked_at, now),
        })
        .collect();
    let perms = Permission::all(&sub.permissions.rows, sub.permissions.now_ms);
    page.purchases = sub
        .purchases
        .iter()
        .map(|p| {
            let gives: Vec<&str> = perms
                .iter()
                .filter(|perm| {
                    perm.skuarray.iter().any(|u| {
                        p.products.contains(u.productid.as_ref())
                            || p.sku.as_deref() == Some(u.identifier.as_ref())
                    })
                })
                .map(|perm| perm.identifier)
                .collect();
            let grant = p.object == "unknown";
            PurchaseView {
                anchor: format!("purchase-{}", p.id),
                id: p.id.clone(),
                kind: object_words(p.object),
                // The SKU named in the purchase's metadata, else the one selling its product.
                sku: p
                    .sku
                    .clone()
                    .or_else(|| {
                        perms
                            .iter()
                            .flat_map(|perm| perm.skuarray.iter())
                            .find(|u| p.products.contains(u.productid.as_ref()))
                            .map(|u| u.identifier.to_string())
                    })
                    .unwrap_or_default(),
                products: p.products.iter().cloned().collect::<Vec<_>>().join(", "),
                state: entitlement_words(i64::from(p.entitlement), p.expires_date, grant),
                code: p.entitlement,
                expires: p
                    .expires_date
                    .filter(|e| *e < 253_402_300_799)
                    .map(|e| When::from_secs(e, now))
                    .unwrap_or_default(),
                trial: p.istrial,
                gives: gives.join(", "),
            }
        })
        .collect();
    page.grants = sub
        .grants
        .iter()
        .map(|g| grant_view(g, &page.path, now))
        .collect();
    page.permissions = perms
        .iter()
        .map(|p| {
            // Lost with code -8: by a revoked grant when no Stripe purchase gave it.
            let from_stripe = sub.purchases.iter().any(|pu| {
                pu.object != "unknown"
                    && p.skuarray.iter().any(|u| {
                        pu.products.contains(u.productid.as_ref())
                            || pu.sku.as_deref() == Some(u.identifier.as_ref())
                    })
            });
            let revoked_grant = sub
                .grants
                .iter()
                .any(|g| g.permission == p.identifier && g.revoked_at.is_some());
            let expires = (p.expires_date > 0 && p.expires_at.is_some()).then_some(p.expires_date);
            let mut state =
                entitlement_words(p.entitlement, expires, revoked_grant && !from_stripe);
            if p.balance == Some(0) && state.tone == "ok" {
                state = label(format!("{}, no units left", state.text), "wait");
            }
            PermissionView {
                identifier: p.identifier.to_string(),
                state,
                code: p.entitlement,
                held: p.is_valid,
                expires: When::opt_rfc3339(p.expires_at.as_deref(), now),
                skus: p
                    .skuarray
                    .iter()
                    .map(|u| u.identifier.as_ref())
                    .collect::<Vec<_>>()
                    .join(", "),
                balance: p.balance.map(|b| group(b.max(0) as u64)),
            }
        })
        .collect();
}

fn grant_view(g: &GrantOut, path: &str, now: i64) -> GrantView {
    GrantView {
        anchor: format!("grant-{}", g.id),
        revoke_action: format!("{path}/grants/{}/revoke", seg(&g.id)),
        id: g.id.clone(),
        permission: g.permission.clone(),
        units: g.units.map(|u| group(u.max(0) as u64)),
        starts: When::from_rfc3339(&g.starts_at, now),
        expires: When::opt_rfc3339(g.expires_at.as_deref(), now),
        reason: g.reason.clone(),
        created_by: actor_words(&g.created_by),
        revoked: g.revoked_at.as_deref().map(|at| {
            (
                When::from_rfc3339(at, now),
                g.revoked_by.as_deref().map(actor_words).unwrap_or_default(),
            )
        }),
    }
}

/// `operator:ana` → `ana (dashboard)`; `key:…` → `API key …`.
fn actor_words(by: &str) -> String {
    if let Some(name) = by.strip_prefix("operator:") {
        format!("{name} (dashboard)")
    } else if let Some(key) = by.strip_prefix("key:dashboard:") {
        format!("dashboard operator {key}")
    } else if let Some(key) = by.strip_prefix("key:") {
        format!("API key {key}")
    } else {
        by.to_string()
    }
}

fn balance_view(b: &BalanceOut) -> BalanceView {
    let n = |v: i64| {
        if v < 0 {
            format!("−{}", group(v.unsigned_abs()))
        } else {
            group(v as u64)
        }
    };
    BalanceView {
        permission: b.permission.clone(),
        available: n(b.available),
        held: n(b.held),
        granted: n(b.granted),
        consumed: n(b.consumed),
        resets: When::opt_rfc3339(b.resets_at.as_deref(), 0),
    }
}

fn ledger_view(
    e: &LedgerEntryOut,
    purchases: &[PurchaseView],
    grants: &[GrantView],
    now: i64,
) -> LedgerView {
    let cause = e.source.as_deref().map(|src| {
        if let Some(p) = purchases.iter().find(|p| p.id == src) {
            Cause {
                text: format!("{} {src}", p.kind),
                href: Some(format!("#{}", p.anchor)),
            }
        } else if let Some(g) = grants.iter().find(|g| g.id == src) {
            Cause {
                text: format!("grant of {}", g.permission),
                href: Some(format!("#{}", g.anchor)),
            }
        } else if ["pi_", "ch_", "re_", "in_", "sub_", "cs_"]
            .iter()
            .any(|p| src.starts_with(p))
        {
            Cause {
                text: src.to_string(),
                href: Some(format!(
                    "/dashboard/search?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("q", src)
                        .finish()
                )),
            }
        } else {
            Cause {
                text: actor_words(src),
                href: None,
            }
        }
    });
    let cause = cause.or_else(|| {
        e.reservation_id.as_ref().map(|r| Cause {
            text: format!("reservation {r}"),
            href: None,
        })
    });
    LedgerView {
        when: When::from_rfc3339(&e.created_at, now),
        permission: e.permission.clone(),
        kind: ledger_kind_words(&e.entry_kind),
        units: units_text(e.units),
        negative: e.units < 0,
        balance_after: group(e.balance_after.max(0) as u64),
        reason: e.reason.clone().unwrap_or_default(),
        cause,
    }
}

/// "Add 50 units of ai_credits (balance 120 → 170)".
fn adjust_preview(input: &AdjustInput, balances: &[BalanceOut]) -> Option<String> {
    let units = parse_units(&input.units).ok()?;
    let current = balances
        .iter()
        .find(|b| b.permission == input.permission)
        .map(|b| b.balance)
        .unwrap_or(0);
    let verb = if units > 0 { "Add" } else { "Take" };
    Some(format!(
        "{verb} {} units {} {} (balance {} → {}).",
        group(units.unsigned_abs()),
        if units > 0 { "to" } else { "from" },
        input.permission,
        group(current.max(0) as u64),
        group((current + units).max(0) as u64)
    ))
}

/// Units as people type them: `50`, `+50`, `-10`, `1,000`, `1 000`.
fn parse_units(text: &str) -> Result<i64, &'static str> {
    let t: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | ' ' | '_' | '\u{a0}'))
        .map(|c| if c == '−' { '-' } else { c })
        .collect();
    let t = t.strip_prefix('+').unwrap_or(&t);
    if t.is_empty() {
        return Err("Enter a number of units, such as 50 to add or -10 to take away.");
    }
    match t.parse::<i64>() {
        Ok(0) => Err("Enter a number other than 0."),
        Ok(n) if n.abs() <= 1_000_000_000_000 => Ok(n),
        Ok(_) => Err("At most 1,000,000,000,000 units at a time."),
        Err(_) => Err("Enter a whole number of units, such as 50 to add or -10 to take away."),
    }
}

/// The field errors of an API error, by the form's field names; what names no field is the
/// form's problem.
fn field_errors(
    e: &ApiError,
    prefix: &str,
    fields: &[&str],
    errors: &mut FieldErrors,
) -> Option<String> {
    let message = match e {
        ApiError::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error (dashboard customers)");
            return Some("This could not be done. The error is in the server's log.".into());
        }
        ApiError::InsufficientBalance { message, .. } => {
            errors.insert(format!("{prefix}units"), message.clone());
            return None;
        }
        other => other.to_string(),
    };
    let mut named = false;
    if let ApiError::BadRequest { details, .. } = e {
        for d in details {
            let field = d.pointer.trim_start_matches('/');
            if fields.contains(&field) {
                errors.insert(format!("{prefix}{field}"), sentence(&d.message));
                named = true;
            }
        }
    }
    (!named).then_some(message)
}

/// The API's field message as a sentence for the form.
fn sentence(m: &str) -> String {
    m.trim_start_matches("Request failed validation: ")
        .to_string()
}

/// The dashboard's grant: given by the operator of the session.
pub async fn grant_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let input = GrantInput {
        permission: param(&form, "permission").unwrap_or_default().to_string(),
        expires_at: param(&form, "expires_at").unwrap_or_default().to_string(),
        reason: param(&form, "reason").unwrap_or_default().to_string(),
        units: param(&form, "units").unwrap_or_default().to_string(),
    };
    let mut errors = FieldErrors::new();
    if input.permission.is_empty() {
        errors.insert("grant_permission".into(), "Choose a permission.".into());
    }
    if input.reason.is_empty() {
        errors.insert(
            "grant_reason".into(),
            "Say why (kept with the grant and shown in the history).".into(),
        );
    }
    let units = if input.units.is_empty() {
        None
    } else {
        match parse_units(&input.units) {
            Ok(u) if u > 0 => Some(u),
            Ok(_) => {
                errors.insert(
                    "grant_units".into(),
                    "A grant gives units: enter a number above 0.".into(),
                );
                None
            }
            Err(m) => {
                errors.insert("grant_units".into(), m.into());
                None
            }
        }
    };
    // `datetime-local` sends `2026-12-31T00:00`: UTC, seconds added.
    let expires_at = (!input.expires_at.is_empty()).then(|| match input.expires_at.len() {
        16 => format!("{}:00Z", input.expires_at),
        _ => input.expires_at.clone(),
    });
    if !errors.is_empty() {
        return customer_page(
            &ctx,
            &s,
            &customid,
            None,
            None,
            REFUSED,
            Refused::Grant(input, errors, None),
        )
        .await;
    }
    let body = GrantCreate {
        permission: input.permission.clone(),
        expires_at,
        reason: input.reason.clone(),
    };
    let created_by = format!("operator:{}", s.username);
    match api::entitlements::grant_units(
        &ctx,
        &s.merchant_account_id,
        &customid,
        body,
        units,
        created_by,
    )
    .await
    {
        Ok(g) => {
            tracing::info!(grant = %g.id, operator = %s.username, "permission granted in the dashboard");
            see_other(&format!("{}?done=granted", customer_href(&customid)))
        }
        Err(e) => {
            let status = status_of(&e);
            let p = field_errors(
                &e,
                "grant_",
                &["permission", "expires_at", "reason", "units"],
                &mut errors,
            );
            customer_page(
                &ctx,
                &s,
                &customid,
                None,
                None,
                status,
                Refused::Grant(input, errors, p),
            )
            .await
        }
    }
}

pub async fn grant_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path((customid, id)): Path<(String, String)>,
    axum::Form(form): Form,
) -> Response {
    if confirmed(&form).is_err() {
        return customer_page(
            &ctx,
            &s,
            &customid,
            None,
            Some("Nothing revoked: tick “sure” next to the grant's Revoke button to revoke it."),
            REFUSED,
            Refused::None,
        )
        .await;
    }
    let by = format!("operator:{}", s.username);
    match api::entitlements::revoke(&ctx, &s.merchant_account_id, &customid, &id, &by).await {
        Ok(_) => {
            tracing::info!(grant = %id, operator = %s.username, "grant revoked in the dashboard");
            see_other(&format!("{}?done=revoked", customer_href(&customid)))
        }
        Err(ApiError::NotFound(_)) => {
            customer_page(
                &ctx,
                &s,
                &customid,
                None,
                Some("Nothing revoked: this customer has no such grant."),
                StatusCode::NOT_FOUND,
                Refused::None,
            )
            .await
        }
        Err(e) => problem(&ctx, &s, e).await,
    }
}

/// `POST /dashboard/customers/{customid}/adjustments`: units added or taken by hand, with a
/// reason, through the credits API (one ledger row in the commit of the change).
pub async fn adjust(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let input = AdjustInput {
        permission: param(&form, "permission").unwrap_or_default().to_string(),
        units: form
            .iter()
            .rev()
            .find(|(k, _)| k == "units")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
        reason: param(&form, "reason").unwrap_or_default().to_string(),
    };
    let mut errors = FieldErrors::new();
    if input.permission.is_empty() {
        errors.insert(
            "adjust_permission".into(),
            "Choose a metered permission.".into(),
        );
    }
    let units = match parse_units(&input.units) {
        Ok(u) => Some(u),
        Err(m) => {
            errors.insert("adjust_units".into(), m.into());
            None
        }
    };
    if input.reason.is_empty() {
        errors.insert(
            "adjust_reason".into(),
            "Say why: the reason is shown in the ledger.".into(),
        );
    }
    let (Some(units), true) = (units, errors.is_empty()) else {
        return customer_page(
            &ctx,
            &s,
            &customid,
            None,
            None,
            REFUSED,
            Refused::Adjust(input, errors, None),
        )
        .await;
    };
    let body = AdjustRequest {
        customid: customid.clone(),
        units,
        reason: input.reason.clone(),
    };
    match api::credits::adjust(
        State(ctx.clone()),
        super::caller(&s),
        Path(input.permission.clone()),
        Body(body),
    )
    .await
    {
        Ok((_, entry)) => {
            tracing::info!(ledger = %entry.0.id, operator = %s.username, "balance adjusted in the dashboard");
            see_other(&format!(
                "{}?done=adjusted#ledger",
                customer_href(&customid)
            ))
        }
        Err(e) => {
            let status = status_of(&e);
            let mut p = field_errors(&e, "adjust_", &["units", "reason", "customid"], &mut errors);
            if let (ApiError::NotFound(_), Some(_)) = (&e, &p) {
                errors.insert(
                    "adjust_permission".into(),
                    format!("{} is not a metered permission.", input.permission),
                );
                p = None;
            }
            customer_page(
                &ctx,
                &s,
                &customid,
                None,
                None,
                status,
                Refused::Adjust(input, errors, p),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_words() {
        let jan12 = 1_799_712_000; // 2027-01-12
        assert_eq!(entitlement_words(5, Some(jan12), false).text, "renewing");
        assert_eq!(
            entitlement_words(4, Some(jan12), false).text,
            "cancelled, access until 12 Jan 2027"
        );
        assert_eq!(entitlement_words(-8, None, false).text, "refunded");
        assert_eq!(entitlement_words(-8, None, true).text, "revoked");
        assert_eq!(
            entitlement_words(1, Some(jan12), false).text,
            "in grace period until 12 Jan 2027"
        );
        assert_eq!(entitlement_words(-5, None, false).text, "expired");
    }

    #[test]
    fn units_as_typed() {
        assert_eq!(parse_units("+50"), Ok(50));
        assert_eq!(parse_units("-10"), Ok(-10));
        assert_eq!(parse_units("1,000"), Ok(1000));
        assert!(parse_units("abc").is_err());
        assert!(parse_units("0").is_err());
        assert!(parse_units("").is_err());
        assert!(parse_units("2.5").is_err());
    }
}
