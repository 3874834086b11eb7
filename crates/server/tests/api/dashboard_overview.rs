//! The dashboard's overview shows what the API reports for the same range and currency:
//! volume captured net of refunds, approvals and declines, refunds, disputes, outbound
//! deliveries; a refused choice keeps the form with the message next to the field.

use serde_json::{Value, json};

use crate::common::{Db, TestServer, now_ms};
use crate::dashboard_session::{get_with, login, operator};

crate::both_dbs!(
    overview_figures_equal_the_api,
    overview_refuses_bad_dates_in_place,
);

/// The `data-value` of the element with `data-testid="{id}"`.
fn figure(html: &str, id: &str) -> i64 {
    let marker = format!("data-testid=\"{id}\" data-value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no figure {id} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

/// The `href` of the figure `id`.
fn figure_href(html: &str, id: &str) -> String {
    let at = html.find(&format!("data-testid=\"{id}\"")).unwrap();
    let head = &html[..at];
    let start = head.rfind("href=\"").unwrap() + "href=\"".len();
    let href = &html[start..];
    href[..href.find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Every transaction of `currency` created today (UTC), from the API.
async fn api_transactions(s: &TestServer, currency: &str) -> Vec<Value> {
    let today = now_ms() / 86_400_000 * 86_400;
    let from = time::OffsetDateTime::from_unix_timestamp(today)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let q = format!(
        "/transactions?limit=100&currency={currency}&created_at_gte={}",
        from.replace('+', "%2B")
    );
    s.get(&q).await.expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

const APPROVED: &[&str] = &[
    "authorization_succeeded",
    "authorization_void_pending",
    "authorization_voided",
    "capture_pending",
    "capture_succeeded",
];
const DECLINED: &[&str] = &["authorization_declined", "authorization_failed"];

fn sum(items: &[Value], f: impl Fn(&Value) -> i64) -> i64 {
    items.iter().map(f).sum()
}

fn count(items: &[Value], statuses: &[&str]) -> i64 {
    items
        .iter()
        .filter(|t| statuses.contains(&t["status"].as_str().unwrap_or_default()))
        .count() as i64
}

async fn overview_figures_equal_the_api(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;

    // USD: two captured (one partly refunded), one authorized, one cancelled (failed).
    let a = s.captured(1299).await;
    s.captured(2500).await;
    s.authorized(700).await;
    let cancelled = s.create_redirect(450, "capture").await;
    s.post_empty(&format!(
        "/transactions/{}/cancel",
        cancelled["id"].as_str().unwrap()
    ))
    .await
    .expect(200);
    let refund = s
        .post(
            &format!("/transactions/{}/refunds", a["id"].as_str().unwrap()),
            json!({"amount": 300}),
        )
        .await;
    assert!(refund.status < 300, "{}", refund.text);
    // JPY: one captured.
    let mut body = TestServer::redirect_body(1500, "authorize");
    body["currency"] = json!("JPY");
    body["payment_method"]["currency"] = json!("JPY");
    let jpy = s.post("/transactions", body).await.expect(201);
    s.approve(&jpy, "pm_card_visa").await.expect(200);
    let jid = jpy["id"].as_str().unwrap();
    s.sync(jid).await;
    s.post(&format!("/transactions/{jid}/capture"), json!({}))
        .await
        .expect(200);
    // An outbound endpoint: each event becomes a delivery.
    s.post(
        "/webhook-subscriptions",
        json!({"url": "https://merchant.example/hooks", "events": ["*"]}),
    )
    .await
    .expect(201);
    s.captured(100).await;

    for currency in ["USD", "JPY"] {
        let items = api_transactions(&s, currency).await;
        let page = get_with(
            &s,
            &format!("/dashboard/overview?range=today&currency={currency}"),
            &cookie,
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let html = &page.text;
        let captured = sum(&items, |t| t["captured_amount"].as_i64().unwrap());
        let refunded = sum(&items, |t| t["refunded_amount"].as_i64().unwrap());
        assert_eq!(
            figure(html, "volume-net"),
            captured - refunded,
            "{currency}"
        );
        assert_eq!(figure(html, "refunds"), refunded, "{currency}");
        let approved = count(&items, APPROVED);
        let declined = count(&items, DECLINED);
        assert_eq!(figure(html, "approved"), approved, "{currency}");
        assert_eq!(
            figure(html, "success-rate"),
            approved * 1000 / (approved + declined),
            "{currency}"
        );
        let disputed = sum(&items, |t| {
            if t["disputed"] == true {
                t["captured_amount"].as_i64().unwrap()
            } else {
                0
            }
        });
        assert_eq!(figure(html, "disputes"), disputed, "{currency}");
        if currency == "USD" {
            assert_eq!(captured - refunded, 1299 + 2500 + 100 - 300);
            assert_eq!((approved, declined), (4, 1));
            assert!(html.contains("$35.99"), "net shown as money: {html}");
            // The volume links to the list behind it, filtered the same way.
            let href = figure_href(html, "volume-net");
            assert!(href.starts_with("/dashboard/transactions?from="), "{href}");
            assert!(href.contains("&currency=USD&status=captured"), "{href}");
            let refunds = figure_href(html, "refunds");
            assert!(refunds.ends_with("&status=refunded"), "{refunds}");
        } else {
            assert_eq!(captured - refunded, 1500);
            assert!(html.contains("¥1,500"), "{html}");
        }
    }

    // Without a currency: the most used one (USD), listed with JPY in the select.
    let page = get_with(&s, "/dashboard/overview?range=30d", &cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<option value=\"USD\" selected>"));
    assert!(page.text.contains("<option value=\"JPY\">"));
    // /dashboard lands here.
    let home = get_with(&s, "/dashboard", &cookie).await;
    assert_eq!(home.header("location"), Some("/dashboard/overview"));

    // Outbound deliveries: as many as the API lists for today, by state.
    let listed = s.get("/webhook-deliveries?limit=100").await.expect(200);
    let deliveries = listed["items"].as_array().unwrap();
    assert!(!deliveries.is_empty());
    let html = get_with(&s, "/dashboard/overview?range=today", &cookie)
        .await
        .text;
    let shown: i64 = [
        "deliveries-delivered",
        "deliveries-retrying",
        "deliveries-pending",
        "deliveries-dead",
    ]
    .iter()
    .map(|id| figure(&html, id))
    .sum();
    assert_eq!(shown, deliveries.len() as i64, "{html}");
    // The charts carry their figures as text too.
    for id in ["chart-volume", "chart-rate", "chart-subscribers"] {
        assert!(html.contains(&format!("aria-labelledby=\"{id}-title {id}-desc\"")));
    }
}

async fn overview_refuses_bad_dates_in_place(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;
    let r = get_with(
        &s,
        "/dashboard/overview?range=custom&from=yesterday&to=2026-01-01&currency=XX1",
        &cookie,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("value=\"yesterday\""), "input kept");
    assert!(r.text.contains("aria-describedby=\"from-error\""));
    assert!(r.text.contains("id=\"from-error\""));
    assert!(r.text.contains("not a date"));
    assert!(r.text.contains("id=\"currency-error\""));
    let r = get_with(
        &s,
        "/dashboard/overview?range=custom&from=2026-02-01&to=2026-01-01",
        &cookie,
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("id=\"to-error\""));
    let r = get_with(
        &s,
        "/dashboard/overview?range=custom&from=2026-01-01&to=2026-01-31",
        &cookie,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("2026-01-01 to 2026-01-31 (UTC)"));
}
