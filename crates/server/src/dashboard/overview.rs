//! The dashboard's overview (the landing page): for a range of UTC days and a currency, the
//! money taken, approvals, refunds and disputes, subscribers and MRR, and the health of Stripe
//! events received and outbound deliveries; charts drawn on the server as SVG. Every figure
//! links to the list behind it.
//!
//! The figures come from one grouped query per panel (`tollgate_store::overview`); the
//! subscriptions' amounts are read from the Stripe objects the entitlements side keeps.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::{Date, OffsetDateTime};
use tollgate_domain::Currency;
use tollgate_store::overview::{self as store, DAY_MS, TxDay};
use tollgate_store::{Store, StoreError};

use super::session::Session;
use super::view::{FieldErrors, Frame, REFUSED, When, render};
use crate::ApiContext;
use crate::page::format_money;

/// The longest custom range, in days.
const MAX_DAYS: i64 = 366;

/// The ranges offered besides custom dates: key, label, days.
const RANGES: &[(&str, &str, i64)] = &[
    ("today", "Today", 1),
    ("7d", "Last 7 days", 7),
    ("30d", "Last 30 days", 30),
];

/// The page's query, as typed by the user (kept to show the form again).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct OverviewQuery {
    #[serde(default)]
    pub range: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// The days shown: `[from_day, to_day]`, inclusive, as days since 1970-01-01 (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_day: i64,
    pub to_day: i64,
}

impl Range {
    pub fn from_ms(self) -> i64 {
        self.from_day * DAY_MS
    }
    pub fn to_ms(self) -> i64 {
        (self.to_day + 1) * DAY_MS
    }
    fn days(self) -> i64 {
        self.to_day - self.from_day + 1
    }
}

/// `YYYY-MM-DD` of a day since 1970-01-01 (UTC).
pub fn date_of_day(day: i64) -> String {
    OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

fn day_of_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let d = Date::parse(text.trim(), &format).ok()?;
    Some(
        d.midnight()
            .assume_utc()
            .unix_timestamp()
            .div_euclid(86_400),
    )
}

/// The range the query asks for (the last 7 days unless it says otherwise), the key of the
/// chosen range, and the fields it got wrong.
pub fn range_of(q: &OverviewQuery, now_ms: i64) -> (Range, String, FieldErrors) {
    let today = now_ms.div_euclid(DAY_MS);
    let mut errors = FieldErrors::new();
    let preset = |days: i64| Range {
        from_day: today - days + 1,
        to_day: today,
    };
    let key = q.range.as_deref().unwrap_or("").trim();
    if let Some((k, _, days)) = RANGES.iter().find(|(k, _, _)| *k == key) {
        return (preset(*days), k.to_string(), errors);
    }
    let custom = key == "custom"
        || (key.is_empty()
            && (q.from.as_deref().is_some_and(|v| !v.trim().is_empty())
                || q.to.as_deref().is_some_and(|v| !v.trim().is_empty())));
    if !key.is_empty() && key != "custom" {
        errors.insert(
            "range".into(),
            "Choose today, the last 7 or 30 days, or your own dates.".into(),
        );
    }
    if !custom {
        return (preset(7), "7d".into(), errors);
    }
    let read = |name: &str, v: Option<&str>, errors: &mut FieldErrors| -> Option<i64> {
        let v = v.map(str::trim).unwrap_or_default();
        if v.is_empty() {
            errors.insert(name.into(), "Enter a date (YYYY-MM-DD).".into());
            return None;
        }
        let d = day_of_date(v);
        if d.is_none() {
            errors.insert(
                name.into(),
                format!("'{v}' is not a date; write it as YYYY-MM-DD."),
            );
        }
        d
    };
    let from = read("from", q.from.as_deref(), &mut errors);
    let to = read("to", q.to.as_deref(), &mut errors);
    match (from, to) {
        (Some(f), Some(t)) if t < f => {
            errors.insert("to".into(), "Must be on or after the start date.".into());
        }
        (Some(f), Some(t)) if t - f + 1 > MAX_DAYS => {
            errors.insert("to".into(), format!("Choose at most {MAX_DAYS} days."));
        }
        (Some(f), Some(t)) => {
            return (
                Range {
                    from_day: f,
                    to_day: t,
                },
                "custom".into(),
                errors,
            );
        }
        _ => {}
    }
    (preset(7), "custom".into(), errors)
}

// ---- figures ---------------------------------------------------------------------------------

/// The transactions panel's totals (transactions created in the range, one currency).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxTotals {
    pub count: i64,
    pub approved: i64,
    pub declined: i64,
    pub captured: i64,
    pub refunded: i64,
    pub refunded_count: i64,
    pub disputed_count: i64,
    pub disputed_amount: i64,
}

impl TxTotals {
    fn of(days: &[TxDay]) -> TxTotals {
        let mut t = TxTotals::default();
        for d in days {
            t.count += d.count;
            t.approved += d.approved;
            t.declined += d.declined;
            t.captured += d.captured;
            t.refunded += d.refunded;
            t.refunded_count += d.refunded_count;
            t.disputed_count += d.disputed_count;
            t.disputed_amount += d.disputed_amount;
        }
        t
    }

    /// Captured, net of refunds.
    pub fn net(&self) -> i64 {
        self.captured - self.refunded
    }
}

/// Approved out of approved + declined/failed, as a percentage with one decimal ("—" without
/// any decided).
fn rate_text(approved: i64, declined: i64) -> String {
    let decided = approved + declined;
    if decided == 0 {
        return "—".into();
    }
    format!("{:.1}%", approved as f64 * 100.0 / decided as f64)
}

/// A subscription as the overview needs it (Stripe's field names, every API version).
#[derive(Debug, Deserialize, Default)]
struct Sub {
    #[serde(default)]
    status: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    ended_at: Option<i64>,
    #[serde(default)]
    items: Option<SubItems>,
    /// The oldest API versions: one plan on the subscription itself.
    #[serde(default)]
    plan: Option<Plan>,
    #[serde(default)]
    quantity: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
struct SubItems {
    #[serde(default)]
    data: Vec<SubItem>,
}

#[derive(Debug, Deserialize, Default)]
struct SubItem {
    #[serde(default)]
    quantity: Option<i64>,
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    plan: Option<Plan>,
}

#[derive(Debug, Deserialize, Default)]
struct Price {
    #[serde(default)]
    currency: String,
    #[serde(default)]
    unit_amount: Option<i64>,
    #[serde(default)]
    recurring: Option<Recurring>,
}

#[derive(Debug, Deserialize, Default)]
struct Recurring {
    #[serde(default)]
    interval: String,
    #[serde(default)]
    interval_count: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
struct Plan {
    #[serde(default)]
    currency: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    interval_count: Option<i64>,
}

/// What a price of `amount` every `count` `interval`s is worth per month.
pub fn monthly(amount: i64, interval: &str, count: i64) -> f64 {
    let count = count.max(1) as f64;
    let a = amount as f64;
    match interval {
        "day" => a * 365.0 / 12.0 / count,
        "week" => a * 52.0 / 12.0 / count,
        "month" => a / count,
        "year" => a / 12.0 / count,
        _ => 0.0,
    }
}

/// Statuses of a subscription that is someone's now.
const SUB_ACTIVE: &[&str] = &["active", "trialing", "past_due"];
/// Statuses whose subscription pays now (MRR): trials pay nothing yet.
const SUB_PAYING: &[&str] = &["active", "past_due"];

/// The subscriptions panel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubFigures {
    /// Distinct customers with an active, trialing or past-due subscription now.
    pub active: i64,
    /// Subscriptions started in the range.
    pub new: i64,
    /// Subscriptions ended in the range.
    pub churned: i64,
    /// Monthly recurring revenue per currency (minor units), largest first.
    pub mrr: Vec<(String, i64)>,
    /// Active subscribers at the end of each day of the range (up to today).
    pub per_day: Vec<(i64, i64)>,
}

fn subscription_figures(rows: &[store::SubscriptionData], range: Range, today: i64) -> SubFigures {
    let (from_s, to_s) = (range.from_ms() / 1000, range.to_ms() / 1000);
    let mut out = SubFigures::default();
    let mut active_keys: std::collections::HashSet<String> = Default::default();
    let mut mrr: BTreeMap<String, f64> = BTreeMap::new();
    // Per subscriber: the [created, ended) spans of their subscriptions, in seconds.
    let mut spans: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for (n, r) in rows.iter().enumerate() {
        let Ok(sub) = serde_json::from_str::<Sub>(&r.data) else {
            continue;
        };
        let key = r
            .stripe_customer_id
            .clone()
            .or_else(|| r.customid.clone())
            .unwrap_or_else(|| format!("#{n}"));
        if SUB_ACTIVE.contains(&sub.status.as_str()) {
            active_keys.insert(key.clone());
        }
        let created = sub.created.unwrap_or(0);
        if (from_s..to_s).contains(&created) {
            out.new += 1;
        }
        if let Some(e) = sub.ended_at
            && (from_s..to_s).contains(&e)
        {
            out.churned += 1;
        }
        if !matches!(sub.status.as_str(), "incomplete" | "incomplete_expired") {
            spans
                .entry(key)
                .or_default()
                .push((created, sub.ended_at.unwrap_or(i64::MAX)));
        }
        if SUB_PAYING.contains(&sub.status.as_str()) {
            let items = sub.items.map(|i| i.data).unwrap_or_default();
            if items.is_empty()
                && let Some(p) = &sub.plan
            {
                let q = sub.quantity.unwrap_or(1);
                *mrr.entry(p.currency.to_ascii_uppercase()).or_default() += monthly(
                    p.amount.unwrap_or(0) * q,
                    &p.interval,
                    p.interval_count.unwrap_or(1),
                );
            }
            for it in items {
                let q = it.quantity.unwrap_or(1);
                if let Some(p) = &it.price
                    && let Some(rec) = &p.recurring
                {
                    *mrr.entry(p.currency.to_ascii_uppercase()).or_default() += monthly(
                        p.unit_amount.unwrap_or(0) * q,
                        &rec.interval,
                        rec.interval_count.unwrap_or(1),
                    );
                } else if let Some(p) = &it.plan {
                    *mrr.entry(p.currency.to_ascii_uppercase()).or_default() += monthly(
                        p.amount.unwrap_or(0) * q,
                        &p.interval,
                        p.interval_count.unwrap_or(1),
                    );
                }
            }
        }
    }
    out.active = active_keys.len() as i64;
    let mut mrr: Vec<(String, i64)> = mrr
        .into_iter()
        .filter(|(c, _)| !c.is_empty())
        .map(|(c, v)| (c, v.round() as i64))
        .collect();
    mrr.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.mrr = mrr;
    let last = range.to_day.min(today);
    if last >= range.from_day {
        let mut counts = vec![0i64; (last - range.from_day + 1) as usize];
        for s in spans.values() {
            for (i, c) in counts.iter_mut().enumerate() {
                let end = (range.from_day + i as i64 + 1) * 86_400;
                if s.iter().any(|(a, b)| *a < end && *b >= end) {
                    *c += 1;
                }
            }
        }
        out.per_day = counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (range.from_day + i as i64, c))
            .collect();
    }
    out
}

/// Stripe events received through one connection in the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionHealth {
    pub id: String,
    pub name: String,
    pub received: i64,
    pub failed: i64,
    pub dead: i64,
    pub last_received_at: Option<i64>,
}

/// Outbound deliveries created in the range, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryHealth {
    pub delivered: i64,
    /// Failed at least once, another attempt scheduled (`failed`).
    pub retrying: i64,
    /// Not attempted yet.
    pub pending: i64,
    /// Given up.
    pub dead: i64,
}

/// Everything the overview shows, before formatting.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub currency: String,
    /// The account's currencies, the most used first.
    pub currencies: Vec<String>,
    pub days: Vec<TxDay>,
    pub tx: TxTotals,
    pub subs: SubFigures,
    pub connections: Vec<ConnectionHealth>,
    pub deliveries: DeliveryHealth,
}

/// The overview's figures for an account: `currency` None is the most used one.
pub async fn figures(
    db: &Store,
    merchant_account_id: &str,
    range: Range,
    currency: Option<&str>,
    now_ms: i64,
) -> Result<Figures, StoreError> {
    let r = db.reader();
    let (from, to) = (range.from_ms(), range.to_ms());
    // The panels' queries run at once, each on a connection of the read pool; the
    // transactions' days follow the currencies (without a choice, the most used one).
    let transactions = async {
        let currencies: Vec<String> = store::currencies(r, merchant_account_id)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let currency = currency
            .map(str::to_string)
            .or_else(|| currencies.first().cloned())
            .unwrap_or_else(|| "USD".into());
        let days = store::transaction_days(r, merchant_account_id, &currency, from, to).await?;
        Ok::<_, StoreError>((currencies, currency, days))
    };
    let ((currencies, currency, days), subs, inbox, conns, deliveries) = tokio::try_join!(
        transactions,
        store::subscriptions(r, merchant_account_id),
        store::inbox_counts(r, merchant_account_id, from, to),
        store::connections_last_received(r, merchant_account_id),
        store::delivery_counts(r, merchant_account_id, from, to),
    )?;

    let mut connections: Vec<ConnectionHealth> = conns
        .into_iter()
        .map(|c| ConnectionHealth {
            id: c.id,
            name: c.display_name,
            last_received_at: c.last_received_at,
            ..Default::default()
        })
        .collect();
    for c in inbox {
        let Some(h) = connections.iter_mut().find(|h| h.id == c.connection_id) else {
            continue;
        };
        h.received += c.count;
        match c.status.as_str() {
            "failed" => h.failed += c.count,
            "dead" => h.dead += c.count,
            _ => {}
        }
    }
    let mut d = DeliveryHealth::default();
    for (status, n) in deliveries {
        match status.as_str() {
            "delivered" => d.delivered += n,
            "failed" => d.retrying += n,
            "pending" => d.pending += n,
            "dead" => d.dead += n,
            _ => {}
        }
    }
    Ok(Figures {
        tx: TxTotals::of(&days),
        subs: subscription_figures(&subs, range, now_ms.div_euclid(DAY_MS)),
        currency,
        currencies,
        days,
        connections,
        deliveries: d,
    })
}

// ---- charts ----------------------------------------------------------------------------------

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 160.0;

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
}

/// A chart drawn on the server: bars or a line, with its figures as a table for screen readers.
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub summary: String,
    pub bars: Vec<Bar>,
    /// `x,y x,y …` of a line chart (empty: a bar chart).
    pub line: String,
    /// The points of a short line chart, drawn as dots too (a single day is a dot).
    pub dots: Vec<(String, String)>,
    pub top: String,
    pub first: String,
    pub last: String,
    /// Day, value as shown.
    pub rows: Vec<(String, String)>,
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

fn bar_chart(
    id: &'static str,
    title: String,
    summary: String,
    points: &[(i64, Option<f64>, String)],
    top: f64,
    top_text: String,
) -> Chart {
    let n = points.len().max(1) as f64;
    let slot = CHART_W / n;
    let w = (slot * 0.8).clamp(1.0, 48.0);
    let bars = points
        .iter()
        .enumerate()
        .filter_map(|(i, (_, v, _))| {
            let v = (*v)?;
            let h = if top > 0.0 {
                (v / top * CHART_H).clamp(0.0, CHART_H)
            } else {
                0.0
            };
            Some(Bar {
                x: px(i as f64 * slot + (slot - w) / 2.0),
                y: px(CHART_H - h),
                w: px(w),
                h: px(h.max(if v > 0.0 { 1.0 } else { 0.0 })),
            })
        })
        .collect();
    chart_common(id, title, summary, points, bars, String::new(), top_text)
}

fn line_chart(
    id: &'static str,
    title: String,
    summary: String,
    points: &[(i64, Option<f64>, String)],
    top: f64,
    top_text: String,
) -> Chart {
    let n = points.len();
    let step = if n > 1 { CHART_W / (n - 1) as f64 } else { 0.0 };
    let xy: Vec<(String, String)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, (_, v, _))| {
            let v = (*v)?;
            let y = if top > 0.0 {
                CHART_H - (v / top * CHART_H).clamp(0.0, CHART_H)
            } else {
                CHART_H
            };
            let x = if n > 1 {
                i as f64 * step
            } else {
                CHART_W / 2.0
            };
            Some((px(x), px(y.max(3.0))))
        })
        .collect();
    let line = xy
        .iter()
        .map(|(x, y)| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = chart_common(id, title, summary, points, Vec::new(), line, top_text);
    if xy.len() <= 31 {
        c.dots = xy;
    }
    c
}

fn chart_common(
    id: &'static str,
    title: String,
    summary: String,
    points: &[(i64, Option<f64>, String)],
    bars: Vec<Bar>,
    line: String,
    top: String,
) -> Chart {
    Chart {
        id,
        title,
        summary,
        bars,
        line,
        dots: Vec::new(),
        top,
        first: points.first().map(|p| date_of_day(p.0)).unwrap_or_default(),
        last: points.last().map(|p| date_of_day(p.0)).unwrap_or_default(),
        rows: points
            .iter()
            .map(|(d, _, text)| (date_of_day(*d), text.clone()))
            .collect(),
    }
}

// ---- the page --------------------------------------------------------------------------------

/// A figure as shown: its text, its exact value (minor units or a count, for tests and
/// scripts: `data-value`) and the list behind it.
pub struct Figure {
    pub id: &'static str,
    pub label: &'static str,
    pub text: String,
    pub value: i64,
    pub href: String,
    pub note: String,
}

pub struct ConnectionLine {
    pub id: String,
    pub name: String,
    pub received: i64,
    pub received_href: String,
    pub failed: i64,
    pub failed_href: String,
    pub dead: i64,
    pub dead_href: String,
    pub last: When,
}

pub struct RangeOption {
    pub key: &'static str,
    pub label: &'static str,
    pub current: bool,
}

pub struct CurrencyOption {
    pub code: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "dashboard/overview/overview.html")]
pub struct OverviewPage {
    pub frame: Frame,
    pub errors: FieldErrors,
    pub ranges: Vec<RangeOption>,
    pub custom: bool,
    pub from: String,
    pub to: String,
    pub range_text: String,
    pub currencies: Vec<CurrencyOption>,
    pub currency: String,
    pub has_transactions: bool,
    pub payments: Vec<Figure>,
    pub subscribers: Vec<Figure>,
    pub mrr: Vec<Figure>,
    pub deliveries: Vec<Figure>,
    pub connections: Vec<ConnectionLine>,
    pub charts: Vec<Chart>,
}

fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    format!("{path}?{}", q.finish())
}

/// The overview page's body for `figures` (the frame, the form's state and errors given).
pub fn page(
    frame: Frame,
    q: &OverviewQuery,
    range: Range,
    range_key: &str,
    errors: FieldErrors,
    f: &Figures,
    now_ms: i64,
) -> OverviewPage {
    let (from, to) = (date_of_day(range.from_day), date_of_day(range.to_day));
    let cur = f.currency.as_str();
    let money = |v: i64| format_money(v, cur);
    let tx = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("currency", cur),
        ];
        pairs.extend_from_slice(extra);
        link("/dashboard/transactions", &pairs)
    };
    let t = &f.tx;
    let payments = vec![
        Figure {
            id: "volume-net",
            label: "Volume, net of refunds",
            text: money(t.net()),
            value: t.net(),
            href: tx(&[("status", "captured")]),
            note: format!("{} captured", money(t.captured)),
        },
        Figure {
            id: "approved",
            label: "Approved payments",
            text: t.approved.to_string(),
            value: t.approved,
            href: tx(&[("status", "approved")]),
            note: format!("of {} payments started", t.count),
        },
        Figure {
            id: "success-rate",
            label: "Approval rate",
            text: rate_text(t.approved, t.declined),
            value: if t.approved + t.declined > 0 {
                t.approved * 1000 / (t.approved + t.declined)
            } else {
                0
            },
            href: tx(&[("status", "declined")]),
            note: format!("{} declined or failed", t.declined),
        },
        Figure {
            id: "refunds",
            label: "Refunded",
            text: money(t.refunded),
            value: t.refunded,
            href: tx(&[("status", "refunded")]),
            note: format!(
                "{} payment{} refunded",
                t.refunded_count,
                if t.refunded_count == 1 { "" } else { "s" }
            ),
        },
        Figure {
            id: "disputes",
            label: "Disputed",
            text: money(t.disputed_amount),
            value: t.disputed_amount,
            href: tx(&[("status", "disputed")]),
            note: format!(
                "{} payment{} disputed",
                t.disputed_count,
                if t.disputed_count == 1 { "" } else { "s" }
            ),
        },
    ];
    let s = &f.subs;
    let subscribers = vec![
        Figure {
            id: "subscribers-active",
            label: "Active subscribers",
            text: s.active.to_string(),
            value: s.active,
            href: link("/dashboard/customers", &[("status", "active")]),
            note: "now: active, trialing or past due".into(),
        },
        Figure {
            id: "subscribers-new",
            label: "New subscriptions",
            text: s.new.to_string(),
            value: s.new,
            href: link("/dashboard/customers", &[("status", "active")]),
            note: "started in the range".into(),
        },
        Figure {
            id: "subscribers-churned",
            label: "Churned subscriptions",
            text: s.churned.to_string(),
            value: s.churned,
            href: link("/dashboard/customers", &[("status", "inactive")]),
            note: "ended in the range".into(),
        },
    ];
    let mrr = s
        .mrr
        .iter()
        .map(|(c, v)| Figure {
            id: "mrr",
            label: "Monthly recurring revenue",
            text: format_money(*v, c),
            value: *v,
            href: link("/dashboard/customers", &[("status", "active")]),
            note: c.clone(),
        })
        .collect();
    let d = &f.deliveries;
    let dl = |status: &str| link("/dashboard/outbound/deliveries", &[("status", status)]);
    let deliveries = vec![
        Figure {
            id: "deliveries-delivered",
            label: "Delivered",
            text: d.delivered.to_string(),
            value: d.delivered,
            href: dl("delivered"),
            note: String::new(),
        },
        Figure {
            id: "deliveries-retrying",
            label: "Retrying",
            text: d.retrying.to_string(),
            value: d.retrying,
            href: dl("failed"),
            note: "failed at least once; will be tried again".into(),
        },
        Figure {
            id: "deliveries-pending",
            label: "Waiting to be sent",
            text: d.pending.to_string(),
            value: d.pending,
            href: dl("pending"),
            note: String::new(),
        },
        Figure {
            id: "deliveries-dead",
            label: "Given up",
            text: d.dead.to_string(),
            value: d.dead,
            href: dl("dead"),
            note: "no more attempts; resend them from the list".into(),
        },
    ];
    let wh = |id: &str, status: Option<&str>| {
        let mut pairs = vec![("connection", id)];
        if let Some(s) = status {
            pairs.push(("status", s));
        }
        link("/dashboard/webhooks", &pairs)
    };
    let connections = f
        .connections
        .iter()
        .map(|c| ConnectionLine {
            id: c.id.clone(),
            name: c.name.clone(),
            received: c.received,
            received_href: wh(&c.id, None),
            failed: c.failed,
            failed_href: wh(&c.id, Some("failed")),
            dead: c.dead,
            dead_href: wh(&c.id, Some("dead")),
            last: c
                .last_received_at
                .map(|ms| When::from_ms(ms, now_ms))
                .unwrap_or_default(),
        })
        .collect();
    let charts = charts(f, range, now_ms);
    OverviewPage {
        frame,
        errors,
        ranges: RANGES
            .iter()
            .map(|(key, label, _)| RangeOption {
                key,
                label,
                current: *key == range_key,
            })
            .collect(),
        custom: range_key == "custom",
        // Custom dates as typed (kept when refused); a preset shows its own dates.
        from: match range_key {
            "custom" => q.from.clone().unwrap_or_else(|| from.clone()),
            _ => from.clone(),
        },
        to: match range_key {
            "custom" => q.to.clone().unwrap_or_else(|| to.clone()),
            _ => to.clone(),
        },
        range_text: if range.days() == 1 {
            format!("{from} (UTC)")
        } else {
            format!("{from} to {to} (UTC)")
        },
        currencies: {
            let mut list: Vec<String> = f.currencies.clone();
            if !list.contains(&f.currency) {
                list.push(f.currency.clone());
            }
            list.into_iter()
                .map(|code| CurrencyOption {
                    current: code == f.currency,
                    code,
                })
                .collect()
        },
        currency: f.currency.clone(),
        has_transactions: !f.currencies.is_empty(),
        payments,
        subscribers,
        mrr,
        deliveries,
        connections,
        charts,
    }
}

fn charts(f: &Figures, range: Range, now_ms: i64) -> Vec<Chart> {
    let today = now_ms.div_euclid(DAY_MS);
    let last = range.to_day.min(today).max(range.from_day);
    let by_day: HashMap<i64, &TxDay> = f.days.iter().map(|d| (d.day, d)).collect();
    let cur = f.currency.as_str();
    let days: Vec<i64> = (range.from_day..=last).collect();
    let volume: Vec<(i64, Option<f64>, String)> = days
        .iter()
        .map(|d| {
            let net = by_day.get(d).map(|x| x.captured - x.refunded).unwrap_or(0);
            (*d, Some(net.max(0) as f64), format_money(net, cur))
        })
        .collect();
    let vtop = volume.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
    let rate: Vec<(i64, Option<f64>, String)> = days
        .iter()
        .map(|d| {
            let (a, x) = by_day
                .get(d)
                .map(|t| (t.approved, t.declined))
                .unwrap_or((0, 0));
            let v = (a + x > 0).then(|| a as f64 * 100.0 / (a + x) as f64);
            (*d, v, rate_text(a, x))
        })
        .collect();
    let subs: Vec<(i64, Option<f64>, String)> = f
        .subs
        .per_day
        .iter()
        .map(|(d, n)| (*d, Some(*n as f64), n.to_string()))
        .collect();
    let stop = subs.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
    vec![
        bar_chart(
            "chart-volume",
            format!("Volume per day, net of refunds ({cur})"),
            format!(
                "{} net over {} day{}; highest day {}.",
                format_money(f.tx.net(), cur),
                days.len(),
                if days.len() == 1 { "" } else { "s" },
                format_money(vtop as i64, cur)
            ),
            &volume,
            vtop,
            format_money(vtop as i64, cur),
        ),
        bar_chart(
            "chart-rate",
            "Approval rate per day".into(),
            format!(
                "{} over the range; days without decided payments are left empty.",
                rate_text(f.tx.approved, f.tx.declined)
            ),
            &rate,
            100.0,
            "100%".into(),
        ),
        line_chart(
            "chart-subscribers",
            "Active subscribers per day".into(),
            format!("{} active now.", f.subs.active),
            &subs,
            stop.max(1.0),
            format!("{}", stop as i64),
        ),
    ]
}

/// `GET /dashboard/overview`.
pub async fn overview(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    // Read leniently (a repeated or unknown parameter is no error): the last value counts.
    let last = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let q = OverviewQuery {
        range: last("range"),
        from: last("from"),
        to: last("to"),
        currency: last("currency"),
    };
    let now = ctx.now();
    let (range, key, mut errors) = range_of(&q, now);
    let currency = match q
        .currency
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        None => None,
        Some(c) => match Currency::parse(c) {
            Ok(c) => Some(c.code().to_string()),
            Err(_) => {
                errors.insert(
                    "currency".into(),
                    format!("'{c}' is not a currency code (USD, EUR, JPY, …)."),
                );
                None
            }
        },
    };
    let frame = Frame::new(&ctx, &s, "Overview", "overview").await;
    let f = match figures(
        &ctx.store,
        &s.merchant_account_id,
        range,
        currency.as_deref(),
        now,
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(cause = %e, "overview figures failed");
            return super::layout::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The overview is not available",
                "The database did not answer. Try again in a moment.",
            );
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        REFUSED
    };
    render(status, &page(frame, &q, range, &key, errors, &f, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_become_months() {
        assert_eq!(monthly(1200, "year", 1), 100.0);
        assert_eq!(monthly(1000, "month", 1), 1000.0);
        assert_eq!(monthly(1000, "month", 3).round(), 333.0);
        assert_eq!(monthly(300, "week", 1), 1300.0);
        assert_eq!(monthly(100, "fortnight", 1), 0.0);
    }

    #[test]
    fn ranges() {
        let now = 20_000 * DAY_MS + 5_000;
        let q = |range: &str, from: &str, to: &str| OverviewQuery {
            range: Some(range.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            currency: None,
        };
        let (r, k, e) = range_of(&OverviewQuery::default(), now);
        assert_eq!((r.from_day, r.to_day, k.as_str()), (19_994, 20_000, "7d"));
        assert!(e.is_empty());
        let (r, _, _) = range_of(&q("today", "", ""), now);
        assert_eq!((r.from_day, r.to_day), (20_000, 20_000));
        let (r, k, e) = range_of(&q("custom", "2024-01-01", "2024-01-31"), now);
        assert_eq!(r.days(), 31);
        assert_eq!(k, "custom");
        assert!(e.is_empty());
        let (_, _, e) = range_of(&q("custom", "2024-02-01", "2024-01-31"), now);
        assert!(e.contains_key("to"));
        let (_, _, e) = range_of(&q("custom", "yesterday", "2024-01-31"), now);
        assert!(e.contains_key("from"));
        let (_, _, e) = range_of(&q("custom", "2020-01-01", "2024-01-31"), now);
        assert!(e.contains_key("to"));
    }

    #[test]
    fn mrr_normalises_and_counts_subscribers_once() {
        let sub = |cus: &str, status: &str, amount: i64, interval: &str, created: i64| {
            store::SubscriptionData {
                customid: None,
                stripe_customer_id: Some(cus.into()),
                data: serde_json::json!({
                    "status": status, "created": created,
                    "items": {"data": [{"quantity": 1, "price": {"currency": "usd",
                        "unit_amount": amount, "recurring": {"interval": interval, "interval_count": 1}}}]}
                })
                .to_string(),
            }
        };
        let range = Range {
            from_day: 10,
            to_day: 12,
        };
        let rows = vec![
            sub("cus_a", "active", 1000, "month", 11 * 86_400),
            sub("cus_a", "active", 12_000, "year", 0),
            sub("cus_b", "trialing", 500, "month", 0),
            sub("cus_c", "canceled", 500, "month", 0),
        ];
        let f = subscription_figures(&rows, range, 12);
        assert_eq!(f.active, 2);
        assert_eq!(f.new, 1);
        assert_eq!(f.mrr, vec![("USD".to_string(), 2000)]);
        assert_eq!(f.per_day.len(), 3);
    }
}
