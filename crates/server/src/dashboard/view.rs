//! What every dashboard template shares: the page frame (navigation, search box, account,
//! CSRF token, notice), times shown as people read them, and rendering with the security
//! headers. Templates live in `crates/server/templates/dashboard/` (askama: checked when the
//! crate compiles, every `{{ value }}` HTML-escaped unless marked `|safe`).
//!
//! # The status of a refused form
//!
//! One rule for every dashboard page ([`REFUSED`], [`status_of`]):
//! - **422** when the form (or a list's filters, or a date range) was read and a value in it is
//!   refused, by the page's own checks or by the API behind it (the API's 400 becomes 422 here):
//!   the page comes back with what was typed and the message next to the field. A box left
//!   unticked, a missing choice, an amount that is too large, an unknown permission: all 422.
//! - **400** only for a request that cannot be read at all: a NUL character or text that is not
//!   UTF-8 in the path, the query or a form field, refused before any page runs (`edge.rs`).
//! - Otherwise the status the API gives: 404 when what the form names does not exist, 409 when
//!   it exists already or its state forbids the action (a key already revoked), 502 or 504 when
//!   Stripe did not answer, 503 when the database did not.
//!
//! The API itself never answers 422 (SPEC §8: the seed SDK reads a 422 as another shape); the
//! dashboard's answers are HTML pages for a browser, where 422 says "look at the form again".

use std::collections::BTreeMap;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_store::accounts;

use super::layout::{message, secure};
use super::session::Session;
use crate::ApiContext;
use crate::error::ApiError;

/// The main navigation: key (the page's `active`), link, label.
pub const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/dashboard/overview", "Overview"),
    ("transactions", "/dashboard/transactions", "Transactions"),
    ("customers", "/dashboard/customers", "Customers"),
    ("catalogue", "/dashboard/catalogue", "Catalogue"),
    ("webhooks", "/dashboard/webhooks", "Stripe events"),
    ("outbound", "/dashboard/outbound", "Outbound webhooks"),
    ("connections", "/dashboard/connections", "Connections"),
    ("keys", "/dashboard/keys", "API keys"),
];

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

pub struct AccountOption {
    pub id: String,
    pub name: String,
    pub current: bool,
}

/// The frame around every signed-in page (see `templates/dashboard/base.html`).
pub struct Frame {
    pub title: String,
    pub sandbox: bool,
    pub nav: Vec<NavItem>,
    pub csrf: String,
    pub username: String,
    pub accounts: Vec<AccountOption>,
    /// The merchant account's display name (never its id).
    pub account_name: String,
    /// What the search box shows (the last search).
    pub query: String,
    pub notice: Option<&'static str>,
}

impl Frame {
    pub async fn new(ctx: &ApiContext, s: &Session, title: &str, active: &str) -> Frame {
        let list = accounts::list_merchant_accounts(ctx.store.reader())
            .await
            .unwrap_or_default();
        let account_name = list
            .iter()
            .find(|a| a.id == s.merchant_account_id)
            .map(|a| a.display_name.clone())
            .unwrap_or_else(|| s.merchant_account_id.clone());
        Frame {
            title: title.to_string(),
            sandbox: ctx.sandbox_running(),
            nav: NAV
                .iter()
                .map(|(key, href, label)| NavItem {
                    href,
                    label,
                    current: *key == active,
                })
                .collect(),
            csrf: s.csrf.clone(),
            username: s.username.clone(),
            accounts: list
                .iter()
                .map(|a| AccountOption {
                    id: a.id.clone(),
                    name: a.display_name.clone(),
                    current: a.id == s.merchant_account_id,
                })
                .collect(),
            account_name,
            query: String::new(),
            notice: None,
        }
    }

    pub fn notice(mut self, notice: Option<&'static str>) -> Frame {
        self.notice = notice;
        self
    }

    pub fn query(mut self, q: &str) -> Frame {
        self.query = q.to_string();
        self
    }
}

/// Field name → message, for a refused form shown again with the user's input.
pub type FieldErrors = BTreeMap<String, String>;

/// The status of a page showing a refused form or filter (see the module's rule).
pub const REFUSED: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// The status of a page showing what the API answered: a refused value (the API's 400) is
/// [`REFUSED`]; anything else keeps the API's status (404, 409, 502, …).
pub fn status_of(e: &ApiError) -> StatusCode {
    match e.status() {
        StatusCode::BAD_REQUEST => REFUSED,
        other => other,
    }
}

/// A rendered template as an HTML answer with the dashboard's security headers.
pub fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => secure((status, html).into_response()),
        Err(e) => {
            tracing::error!(cause = %e, "dashboard template failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page could not be shown. The error is in the server's log.",
            )
        }
    }
}

/// A time as people read it: "5 min ago" on the page, the absolute UTC time on hover.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// RFC 3339 (for `<time datetime>`); empty when there is no time.
    pub iso: String,
    /// `2026-11-24 05:07:04 UTC`
    pub abs: String,
    /// `5 min ago`, `in 3 days`
    pub rel: String,
}

impl When {
    /// From unix milliseconds, relative to `now_ms`.
    pub fn from_ms(ms: i64, now_ms: i64) -> When {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
            return When::default();
        };
        When {
            iso: t.format(&Rfc3339).unwrap_or_default(),
            abs: absolute(t),
            rel: relative(ms, now_ms),
        }
    }

    /// From unix seconds (Stripe's and Glassfy's times).
    pub fn from_secs(secs: i64, now_ms: i64) -> When {
        When::from_ms(secs.saturating_mul(1000), now_ms)
    }

    /// From an RFC 3339 text (the API's times); an unreadable text is shown as it is.
    pub fn from_rfc3339(text: &str, now_ms: i64) -> When {
        match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(t) => When::from_ms((t.unix_timestamp_nanos() / 1_000_000) as i64, now_ms),
            Err(_) => When {
                iso: String::new(),
                abs: text.to_string(),
                rel: text.to_string(),
            },
        }
    }

    pub fn opt_rfc3339(text: Option<&str>, now_ms: i64) -> When {
        text.map(|t| When::from_rfc3339(t, now_ms))
            .unwrap_or_default()
    }
}

fn absolute(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// "just now", "12 s ago", "5 min ago", "3 h ago", "2 days ago", "in 4 days", "3 months ago".
pub fn relative(ms: i64, now_ms: i64) -> String {
    let diff = now_ms.saturating_sub(ms);
    let (future, d) = if diff < 0 {
        (true, diff.unsigned_abs() / 1000)
    } else {
        (false, diff as u64 / 1000)
    };
    let words = match d {
        0..=4 => return "just now".to_string(),
        5..=59 => format!("{d} s"),
        60..=3599 => format!("{} min", d / 60),
        3600..=86_399 => format!("{} h", d / 3600),
        86_400..=172_799 => "1 day".to_string(),
        172_800..=5_183_999 => format!("{} days", d / 86_400),
        5_184_000..=63_071_999 => format!("{} months", d / 2_592_000),
        _ => format!("{} years", d / 31_536_000),
    };
    if future {
        format!("in {words}")
    } else {
        format!("{words} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = 1_800_000_000_000;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - 30_000, now), "30 s ago");
        assert_eq!(relative(now - 5 * 60_000, now), "5 min ago");
        assert_eq!(relative(now - 3 * 3_600_000, now), "3 h ago");
        assert_eq!(relative(now - 86_400_000, now), "1 day ago");
        assert_eq!(relative(now + 4 * 86_400_000, now), "in 4 days");
        assert_eq!(relative(now - 90 * 86_400_000, now), "3 months ago");
        let w = When::from_rfc3339("2026-11-24T05:07:04.123Z", now);
        assert_eq!(w.abs, "2026-11-24 05:07:04 UTC");
        assert_eq!(When::from_rfc3339("garbage", now).rel, "garbage");
    }
}
