//! The dashboard's transactions, search and login (issue 25): amounts typed as decimals in the
//! payment's currency ("5.00" EUR refunds 500, "1299" JPY) and confirmed before anything is
//! sent, refused amounts kept with the message next to the field, refunded payments in words
//! with their net amount, the search box finding each kind of id, and a failed login keeping
//! the username.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Db, TestServer, now_ms, wait_for};
use crate::dashboard_session::{get_with, operator, post_form, session, try_login_as};

crate::both_dbs!(
    a_decimal_refund_is_confirmed_then_refunds_minor_units,
    bad_amounts_keep_the_form_with_the_message,
    refunded_payments_show_in_words_with_their_net_amount,
    search_finds_each_kind_of_id,
    a_failed_login_keeps_the_username,
    a_void_needs_its_box_ticked,
);

/// A payment of `amount` in `currency` paid with a Visa card and captured; `reference` is its
/// external_identifier.
async fn captured(s: &TestServer, amount: i64, currency: &str, reference: &str) -> Value {
    let tx = s
        .post(
            "/transactions",
            json!({
                "amount": amount, "currency": currency, "intent": "authorize",
                "external_identifier": reference, "customid": format!("buyer-{reference}"),
                "payment_method": {"method": "stripe", "redirect_url": "https://example.com/back"},
            }),
        )
        .await
        .expect(201);
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let id = tx["id"].as_str().unwrap();
    s.sync(id).await;
    let tx = s
        .post(&format!("/transactions/{id}/capture"), json!({}))
        .await
        .expect(200);
    assert_eq!(tx["status"], "capture_succeeded", "{tx}");
    tx
}

/// The text of the element with `data-testid="{id}"` (its first text node).
fn testid_text(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("data-testid=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id} in {html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].to_string()
}

async fn a_decimal_refund_is_confirmed_then_refunds_minor_units(db: Db) {
    let s = TestServer::start(db).await;
    let (cookie, token) = session(&s).await;
    let tx = captured(&s, 8900, "EUR", "order-eur").await;
    let id = tx["id"].as_str().unwrap();
    let path = format!("/dashboard/transactions/{id}/refund");
    // First the page says what will happen, and nothing is refunded yet.
    let r = post_form(&s, &path, &cookie, &[("csrf", &token), ("amount", "5.00")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        testid_text(&r.text, "confirm-sentence"),
        "Refund €5.00 of €89.00 captured."
    );
    assert!(r.text.contains("Refund €5.00</button>"), "{}", r.text);
    assert_eq!(s.get_tx(id).await["refunded_amount"], 0);
    // Confirmed: 500 cents go back.
    let r = post_form(
        &s,
        &path,
        &cookie,
        &[("csrf", &token), ("amount", "5.00"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(s.get_tx(id).await["refunded_amount"], 500);
    let refunds = s
        .get(&format!("/transactions/{id}/refunds"))
        .await
        .expect(200);
    assert_eq!(refunds["items"][0]["amount"], 500, "{refunds}");
    // The page now says partly refunded, with the net amount.
    let page = get_with(&s, &format!("/dashboard/transactions/{id}"), &cookie).await;
    assert_eq!(testid_text(&page.text, "status"), "Partially refunded");
    assert_eq!(testid_text(&page.text, "net"), "€84.00");
    // A decimal comma is read too; JPY has no decimals: "1299" is ¥1,299.
    let jpy = captured(&s, 5000, "JPY", "order-jpy").await;
    let jid = jpy["id"].as_str().unwrap();
    let r = post_form(
        &s,
        &format!("/dashboard/transactions/{jid}/refund"),
        &cookie,
        &[("csrf", &token), ("amount", "1299"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(s.get_tx(jid).await["refunded_amount"], 1299);
    // A capture is typed and confirmed the same way.
    let auth = s.authorized(8900).await;
    let aid = auth["id"].as_str().unwrap();
    let cpath = format!("/dashboard/transactions/{aid}/capture");
    let r = post_form(&s, &cpath, &cookie, &[("csrf", &token), ("amount", "50")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        testid_text(&r.text, "confirm-sentence")
            .starts_with("Capture $50.00 of $89.00 authorized."),
        "{}",
        r.text
    );
    let r = post_form(
        &s,
        &cpath,
        &cookie,
        &[("csrf", &token), ("amount", "50.00"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(s.get_tx(aid).await["captured_amount"], 5000);
}

async fn bad_amounts_keep_the_form_with_the_message(db: Db) {
    let s = TestServer::start(db).await;
    let (cookie, token) = session(&s).await;
    let tx = captured(&s, 8900, "EUR", "order-bad").await;
    let id = tx["id"].as_str().unwrap();
    let path = format!("/dashboard/transactions/{id}/refund");
    for (typed, message) in [
        ("5.001", "EUR has 2 decimal places at most, such as 12.99."),
        ("abc", "Type the amount as a number, such as 12.99."),
        ("100", "At most €89.00 can be refunded."),
        ("0", "The amount must be more than zero."),
    ] {
        for confirm in ["", "yes"] {
            let r = post_form(
                &s,
                &path,
                &cookie,
                &[
                    ("csrf", &token),
                    ("amount", typed),
                    ("reason", "asked <nicely>"),
                    ("confirm", confirm),
                ],
            )
            .await;
            assert_eq!(r.status, 422, "{typed}: {}", r.text);
            // The typed value is kept, the message is next to the field and named by it.
            assert!(
                r.text.contains(&format!(
                    "name=\"amount\" inputmode=\"decimal\" autocomplete=\"off\" value=\"{typed}\""
                )),
                "{typed} kept: {}",
                r.text
            );
            assert!(
                r.text
                    .contains("aria-invalid=\"true\" aria-describedby=\"refund_amount-error\""),
                "{}",
                r.text
            );
            assert_eq!(testid_text_id(&r.text, "refund_amount-error"), message);
            assert!(
                r.text.contains("value=\"asked &#60;nicely&#62;\""),
                "{}",
                r.text
            );
            assert!(!r.text.contains("Not done"));
        }
    }
    assert_eq!(s.get_tx(id).await["refunded_amount"], 0);
    // A refund of an unpaid payment is refused in place too.
    let unpaid = s.create_redirect(500, "capture").await;
    let r = post_form(
        &s,
        &format!(
            "/dashboard/transactions/{}/refund",
            unpaid["id"].as_str().unwrap()
        ),
        &cookie,
        &[("csrf", &token), ("amount", "1"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("Only a captured payment can be refunded"),
        "{}",
        r.text
    );
    // The list's amount filters are decimals in the chosen currency.
    let r = get_with(&s, "/dashboard/transactions?currency=EUR&min=abc", &cookie).await;
    assert_eq!(r.status, 422);
    assert!(
        r.text.contains("aria-describedby=\"min-error\""),
        "{}",
        r.text
    );
    assert!(r.text.contains("value=\"abc\""));
    let r = get_with(
        &s,
        "/dashboard/transactions?currency=EUR&min=89.00&max=89",
        &cookie,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(id), "{}", r.text);
    let r = get_with(
        &s,
        "/dashboard/transactions?currency=EUR&min=89.01",
        &cookie,
    )
    .await;
    assert!(!r.text.contains(id));
    let r = get_with(&s, "/dashboard/transactions?currency=USD", &cookie).await;
    assert!(!r.text.contains(id));
}

/// The text of the element with `id="{id}"`.
fn testid_text_id(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].to_string()
}

async fn refunded_payments_show_in_words_with_their_net_amount(db: Db) {
    let s = TestServer::start(db).await;
    let (cookie, _) = session(&s).await;
    let full = captured(&s, 8900, "USD", "order-full").await;
    let fid = full["id"].as_str().unwrap();
    s.post(&format!("/transactions/{fid}/refunds"), json!({}))
        .await
        .expect(201);
    let part = captured(&s, 8900, "USD", "order-part").await;
    let pid = part["id"].as_str().unwrap();
    s.post(
        &format!("/transactions/{pid}/refunds"),
        json!({"amount": 900}),
    )
    .await
    .expect(201);
    let paid = captured(&s, 1299, "USD", "order-paid").await;
    let list = get_with(&s, "/dashboard/transactions", &cookie).await;
    assert_eq!(list.status, 200);
    let row = |id: &str| {
        let at = list
            .text
            .find(&format!("data-id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} listed: {}", list.text));
        let rest = &list.text[at..];
        rest[..rest.find("</tr>").unwrap()].to_string()
    };
    let f = row(fid);
    assert_eq!(testid_text(&f, "tx-status"), "Refunded");
    assert_eq!(testid_text(&f, "tx-net"), "$0.00");
    assert!(f.contains("of $89.00 paid"), "{f}");
    assert!(!f.contains("Paid<"), "never a paid badge: {f}");
    assert!(f.contains("Visa •••• 4242"), "the card: {f}");
    let p = row(pid);
    assert_eq!(testid_text(&p, "tx-status"), "Partially refunded");
    assert_eq!(testid_text(&p, "tx-net"), "$80.00");
    let ok = row(paid["id"].as_str().unwrap());
    assert_eq!(testid_text(&ok, "tx-status"), "Paid");
    assert_eq!(testid_text(&ok, "tx-net"), "$12.99");
    // The status groups the overview links to.
    let refunded = get_with(&s, "/dashboard/transactions?status=refunded", &cookie).await;
    assert!(refunded.text.contains(fid) && refunded.text.contains(pid));
    assert!(!refunded.text.contains(paid["id"].as_str().unwrap()));
    let fully = get_with(&s, "/dashboard/transactions?status=fully_refunded", &cookie).await;
    assert!(fully.text.contains(fid) && !fully.text.contains(pid));
    let auth = s.authorized(700).await;
    let authorized = get_with(&s, "/dashboard/transactions?status=authorized", &cookie).await;
    let a = authorized.text.clone();
    assert!(a.contains(auth["id"].as_str().unwrap()) && !a.contains(fid));
    assert!(a.contains("Authorized, awaiting capture"));
    let today = &tollgate_server::clock::rfc3339(now_ms())[..10];
    let dated = get_with(
        &s,
        &format!("/dashboard/transactions?status=approved&from={today}&to={today}&currency=USD"),
        &cookie,
    )
    .await;
    assert_eq!(dated.status, 200, "{}", dated.text);
    assert!(dated.text.contains(fid) && dated.text.contains(auth["id"].as_str().unwrap()));
    let r = get_with(&s, "/dashboard/transactions?status=nonsense", &cookie).await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("status-error"));
}

async fn search_finds_each_kind_of_id(db: Db) {
    let s = TestServer::start_with_webhooks(db).await;
    let (cookie, _) = session(&s).await;
    let tx = captured(&s, 2500, "USD", "order-search-1").await;
    let id = tx["id"].as_str().unwrap();
    let pi = tx["additional_identifiers"]["payment_id"].as_str().unwrap();
    let refund = s
        .post(
            &format!("/transactions/{id}/refunds"),
            json!({"amount": 100}),
        )
        .await
        .expect(201);
    let re = refund["payment_service_refund_id"].as_str().unwrap();
    let ch = s.stripe_get(&format!("/v1/payment_intents/{pi}")).await["latest_charge"]
        .as_str()
        .unwrap()
        .to_string();
    let tx_page = format!("/dashboard/transactions/{id}");
    let search = |q: String| {
        let s = &s;
        let cookie = cookie.clone();
        async move {
            let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
            get_with(s, &format!("/dashboard/search?q={q}"), &cookie).await
        }
    };
    let secret = tx["payment_service_transaction_id"].as_str().unwrap_or(pi);
    for q in [
        id.to_string(),
        "order-search-1".to_string(),
        pi.to_string(),
        secret.to_string(),
        ch.clone(),
        re.to_string(),
    ] {
        let r = search(q.clone()).await;
        assert_eq!(r.status, 303, "{q}: {}", r.text);
        assert_eq!(r.header("location"), Some(tx_page.as_str()), "{q}");
    }
    // Customers: by a customid prefix and by their Stripe customer.
    let mut cus = Vec::new();
    for customid in ["vip_1%", "vip_2"] {
        let c = s
            .stripe_post("/v1/customers", &[("email", "buyer@example.com")])
            .await;
        let c = c["id"].as_str().unwrap().to_string();
        s.post(
            "/v1/connect_stripe",
            json!({"customid": customid, "customerid": c}),
        )
        .await
        .expect(200);
        cus.push(c);
    }
    let r = search(cus[1].clone()).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("/dashboard/customers/vip_2"));
    let r = search("vip_1".into()).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("/dashboard/customers/vip_1%25"));
    let r = search("vip".into()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text.matches("data-testid=\"search-customer\"").count(), 2);
    // LIKE's wildcards are literal: "vip%" is no prefix of either, "vip_" (an underscore) is.
    let r = search("vip%".into()).await;
    assert!(r.text.contains("data-testid=\"search-none\""), "{}", r.text);
    let r = search("VIP".into()).await;
    assert!(
        r.text.contains("data-testid=\"search-none\""),
        "case matters: {}",
        r.text
    );
    // A Stripe event received.
    let evt = wait_for(
        Duration::from_secs(20),
        "a Stripe event received",
        || async {
            let listed = s.get("/webhook-events?limit=100").await.expect(200);
            listed["items"]
                .as_array()
                .and_then(|items| {
                    items.iter().find(|e| {
                        e["stripe_event_id"]
                            .as_str()
                            .is_some_and(|x| x.starts_with("evt_"))
                    })
                })
                .map(|e| {
                    (
                        e["id"].as_str().unwrap().to_string(),
                        e["stripe_event_id"].as_str().unwrap().to_string(),
                    )
                })
        },
    )
    .await;
    let r = search(evt.1.clone()).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some(format!("/dashboard/webhooks/{}", evt.0).as_str())
    );
    // Several transactions with one reference: listed, grouped by kind.
    captured(&s, 700, "USD", "order-twice").await;
    captured(&s, 800, "USD", "order-twice").await;
    let r = search("order-twice".into()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text.matches("data-testid=\"search-transaction\"").count(),
        2
    );
    assert!(r.text.contains("<h2>Transactions</h2>"));
    // Nothing: a page that says so; another account's ids are not found.
    let r = search("pi_doesnotexist".into()).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Nothing matches"), "{}", r.text);
}

async fn a_failed_login_keeps_the_username(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let r = try_login_as(&s, "admin", "wrong password!", None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.text
            .contains("id=\"login-username\" name=\"username\" value=\"admin\""),
        "{}",
        r.text
    );
    assert!(r.text.contains("aria-describedby=\"login-error\""));
    assert_eq!(
        testid_text(&r.text, "login-error"),
        "Wrong username or password."
    );
    // What is typed is escaped.
    let r = try_login_as(&s, "<b>x</b>", "wrong password!", None).await;
    assert!(
        r.text.contains("value=\"&#60;b&#62;x&#60;/b&#62;\""),
        "{}",
        r.text
    );
}

async fn a_void_needs_its_box_ticked(db: Db) {
    let s = TestServer::start(db).await;
    let (cookie, token) = session(&s).await;
    let tx = s.authorized(8900).await;
    let id = tx["id"].as_str().unwrap();
    let page = get_with(&s, &format!("/dashboard/transactions/{id}"), &cookie).await;
    assert_eq!(
        testid_text(&page.text, "status"),
        "Authorized, awaiting capture"
    );
    let path = format!("/dashboard/transactions/{id}/void");
    let r = post_form(&s, &path, &cookie, &[("csrf", &token)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("aria-describedby=\"void_confirm-error\""),
        "{}",
        r.text
    );
    assert_eq!(
        testid_text_id(&r.text, "void_confirm-error"),
        "Tick the box to confirm the void."
    );
    assert_eq!(s.get_tx(id).await["status"], "authorization_succeeded");
    let r = post_form(&s, &path, &cookie, &[("csrf", &token), ("confirm", "yes")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let page = get_with(&s, &format!("/dashboard/transactions/{id}"), &cookie).await;
    assert_eq!(testid_text(&page.text, "status"), "Voided");
    assert_eq!(s.get_tx(id).await["status"], "authorization_voided");
    // A second void is refused in place: the page no longer offers it.
    let r = post_form(&s, &path, &cookie, &[("csrf", &token), ("confirm", "yes")]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("data-testid=\"action-problem\""),
        "{}",
        r.text
    );
}
