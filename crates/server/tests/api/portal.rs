//! Stripe's customer portal from Tollgate: `POST /v1/subscribers/{customid}/portal-session`
//! (404 without a Stripe customer, `return_url` checked, public keys refused, the Stripe
//! session's page served by the sandbox), the subscriber's `management_url` (a sealed link that
//! redirects to a fresh session; altered links are refused) and `billing_issue_detected_at`
//! (set while a subscription is past due, cleared once it is paid).

use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;
use tollgate_server::entitlements::on_stripe_event;

use std::time::Duration;

use crate::common::{Db, TestServer, assert_bad_field, assert_error, now_ms, wait_for};
use crate::entitlements::{CURRENT, DAY, event, inbox, subscription};

crate::both_dbs!(
    portal_session_for_a_linked_customer,
    management_url_redirects_to_a_fresh_session,
    billing_issue_detected_at_follows_past_due,
    portal_cancel_at_period_end_turns_the_permission_to_code_4,
);

async fn sandbox_customer(s: &TestServer) -> String {
    let r = s
        .stripe_post("/v1/customers", &[("email", "buyer@example.com")])
        .await;
    r["id"].as_str().expect("a customer id").to_string()
}

async fn link(s: &TestServer, customid: &str, customer: &str) {
    s.post(
        "/v1/connect_stripe",
        json!({"customid": customid, "customerid": customer}),
    )
    .await
    .expect(200);
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

async fn portal_session_for_a_linked_customer(db: Db) {
    let s = TestServer::start(db).await;
    let path = "/v1/subscribers/user-p/portal-session";
    let body = json!({"return_url": "https://example.com/account"});
    // No Stripe customer yet: 404.
    assert_error(&s.post(path, body.clone()).await, 404, "not_found");
    let cus = sandbox_customer(&s).await;
    link(&s, "user-p", &cus).await;
    // return_url: required, an absolute http(s) URL.
    for bad in [
        json!({}),
        json!({"return_url": "example.com/account"}),
        json!({"return_url": "ftp://example.com/"}),
        json!({"return_url": "javascript:alert(1)"}),
        json!({"return_url": "https://exa mple.com/"}),
        json!({"return_url": 7}),
    ] {
        assert_bad_field(&s.post(path, bad).await, "body", "/return_url");
    }
    assert_bad_field(
        &s.post(path, json!({"return_url": "https://example.com", "x": 1}))
            .await,
        "body",
        "/x",
    );
    // A public key may not open anyone's portal.
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let r = s
        .send(s.http.post(s.url(path)).bearer_auth(&pk).json(&body))
        .await;
    assert_error(&r, 403, "forbidden");

    let out = s.post(path, body.clone()).await.expect(200);
    assert_eq!(out["type"], "portal-session");
    assert_eq!(out["customid"], "user-p");
    assert_eq!(out["customerid"], cus.as_str());
    assert_eq!(out["return_url"], "https://example.com/account");
    let url = out["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&format!(
            "{}/sandbox/stripe/_sandbox/billing_portal/",
            s.base
        )),
        "{url}"
    );
    // The session at Stripe: for this customer, with the default configuration.
    let id = out["id"].as_str().expect("id");
    assert!(id.starts_with("bps_"), "{id}");
    let events = s
        .stripe_get("/v1/events?type=billing_portal.session.created")
        .await;
    let session = &events["data"][0]["data"]["object"];
    assert_eq!(session["id"], id);
    assert_eq!(session["customer"], cus.as_str());
    assert_eq!(session["return_url"], "https://example.com/account");
    // The portal page, with its way back.
    let page = reqwest::get(&url).await.expect("the portal page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains("Manage your subscriptions"), "{html}");
    assert!(html.contains("Return to example.com"), "{html}");

    // The same Idempotency-Key answers the same session.
    let a = s
        .post_idem(path, Some(&body), "portal-key-1")
        .await
        .expect(200);
    let b = s
        .post_idem(path, Some(&body), "portal-key-1")
        .await
        .expect(200);
    assert_eq!(a["url"], b["url"]);
    assert_ne!(a["url"], out["url"]);
}

async fn management_url_redirects_to_a_fresh_session(db: Db) {
    let s = TestServer::start(db).await;
    let cus = sandbox_customer(&s).await;
    link(&s, "user-m", &cus).await;
    let sub = s.get("/v1/subscribers/user-m").await.expect(200);
    assert_eq!(sub["billing_issue_detected_at"], Value::Null, "{sub}");
    let url = sub["management_url"]
        .as_str()
        .expect("a management_url")
        .to_string();
    assert!(
        url.starts_with(&format!("{}/manage?token=", s.base)),
        "{url}"
    );
    let http = no_redirects();
    let mut seen = Vec::new();
    for _ in 0..2 {
        // No API key: the link is the credential.
        let r = http.get(&url).send().await.expect("the link");
        assert_eq!(r.status(), 303);
        let to = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a Location")
            .to_string();
        assert!(to.contains("/_sandbox/billing_portal/"), "{to}");
        let page = reqwest::get(&to).await.expect("the portal");
        assert_eq!(page.status(), 200);
        seen.push(to);
    }
    assert_ne!(seen[0], seen[1], "each visit opens a fresh session");
    // An altered, made-up or missing token is refused (a page for the browser).
    let token = url.split("token=").nth(1).unwrap_or_default();
    let mut altered: Vec<char> = token.chars().collect();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    for q in [
        format!("?token={altered}"),
        "?token=nothing".to_string(),
        "?token=".to_string(),
        String::new(),
    ] {
        let r = http
            .get(s.url(&format!("/manage{q}")))
            .send()
            .await
            .expect("the link");
        assert_eq!(r.status(), 404, "{q}");
        let html = r.text().await.unwrap_or_default();
        assert!(html.contains("not valid or has expired"), "{html}");
    }
    // A day later the link has expired.
    s.clock.advance_ms(24 * 3_600_000 + 1_000);
    let r = http.get(&url).send().await.expect("the link");
    assert_eq!(r.status(), 404);
    // A customid without a Stripe customer has no management_url.
    let no_customer = s.get("/v1/subscribers/nobody").await;
    assert_error(&no_customer, 404, "not_found");
}

async fn billing_issue_detected_at_follows_past_due(db: Db) {
    let s = TestServer::start(db).await;
    let (ctx, conn) = inbox(&s).await;
    let now = now_ms() / 1000;
    let start = now - DAY;
    let sub = subscription(
        "sub_B",
        "cus_B",
        "active",
        "prod_monthly",
        start,
        now + 29 * DAY,
    );
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_b1",
            "customer.subscription.created",
            now,
            sub.clone(),
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let out = s.get("/v1/subscribers/user-sub").await.expect(200);
    assert_eq!(out["billing_issue_detected_at"], Value::Null, "{out}");
    // The renewal failed: past due since the failed invoice.
    let mut past_due = sub.clone();
    past_due["status"] = json!("past_due");
    past_due["latest_invoice"] = json!("in_B");
    let invoice = json!({
        "id": "in_B", "object": "invoice", "customer": "cus_B", "status": "open",
        "billing_reason": "subscription_cycle", "created": start + 3600, "total": 999,
        "amount_paid": 0, "amount_due": 999, "currency": "usd", "livemode": false,
        "next_payment_attempt": now + 3 * DAY,
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": "sub_B", "metadata": {}}},
        "lines": {"object": "list", "has_more": false, "data": []},
    });
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_b2",
            "invoice.payment_failed",
            now + 1,
            invoice.clone(),
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_b3",
            "customer.subscription.updated",
            now + 2,
            past_due,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let out = s.get("/v1/subscribers/user-sub").await.expect(200);
    let at = out["billing_issue_detected_at"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        at,
        tollgate_server::entitlements::rfc3339_secs(start + 3600),
        "{out}"
    );
    // Paid: active again, the issue is gone.
    let mut active = sub.clone();
    active["latest_invoice"] = json!("in_B");
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_b4",
            "customer.subscription.updated",
            now + 3,
            active,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let out = s.get("/v1/subscribers/user-sub").await.expect(200);
    assert_eq!(out["billing_issue_detected_at"], Value::Null, "{out}");
}

/// The customid's `premium` permission as the check answers it (None: absent).
async fn premium(s: &TestServer, customid: &str) -> Option<Value> {
    let r = s
        .get(&format!("/v1/permissions?customid={customid}"))
        .await
        .expect(200);
    r["permissions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["identifier"] == "premium").cloned())
}

/// End to end through Stripe's wire protocol: a subscription bought at the sandbox, the portal
/// opened from Tollgate's session URL, "cancel at period end" submitted on the portal page, and
/// the permission turns from renewing (5) to "cancelled, access until the period end" (4),
/// driven only by the webhooks the sandbox sends.
async fn portal_cancel_at_period_end_turns_the_permission_to_code_4(db: Db) {
    let s = TestServer::start_with_webhooks(db).await;
    let product = s
        .stripe_post("/v1/products", &[("name", "Streaming")])
        .await;
    let product = product["id"].as_str().expect("product id").to_string();
    let price = s
        .stripe_post(
            "/v1/prices",
            &[
                ("product", product.as_str()),
                ("currency", "usd"),
                ("unit_amount", "1200"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let price = price["id"].as_str().expect("price id").to_string();
    s.post(
        "/v1/skus",
        json!({"identifier": "streaming_monthly", "store": "stripe", "product_id": product, "kind": "subscription"}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["streaming_monthly"]}),
    )
    .await
    .expect(201);
    let cus = s
        .stripe_post(
            "/v1/customers",
            &[
                ("email", "portal@example.com"),
                ("metadata[customid]", "user-portal"),
                ("payment_method", "pm_card_visa"),
                ("invoice_settings[default_payment_method]", "pm_card_visa"),
            ],
        )
        .await;
    let cus = cus["id"].as_str().expect("customer id").to_string();
    let sub = s
        .stripe_post(
            "/v1/subscriptions",
            &[
                ("customer", cus.as_str()),
                ("items[0][price]", price.as_str()),
            ],
        )
        .await;
    assert_eq!(sub["status"], "active", "{sub}");
    let sub_id = sub["id"].as_str().expect("subscription id").to_string();
    let period_end = sub["items"]["data"][0]["current_period_end"]
        .as_i64()
        .expect("period end");
    wait_for(
        Duration::from_secs(20),
        "the renewing permission",
        || async {
            premium(&s, "user-portal")
                .await
                .filter(|p| p["entitlement"] == 5)
        },
    )
    .await;

    // The buyer opens the portal from Tollgate's session URL and cancels at the period end.
    let out = s
        .post(
            "/v1/subscribers/user-portal/portal-session",
            json!({"return_url": "https://example.com/account"}),
        )
        .await
        .expect(200);
    let url = out["url"].as_str().expect("url").to_string();
    let page = reqwest::get(&url).await.expect("the portal page");
    assert_eq!(page.status(), 200);
    let cancel = format!("{url}/subscriptions/{sub_id}/cancel");
    let form = reqwest::get(&cancel).await.expect("the cancel page");
    assert_eq!(form.status(), 200);
    let done = reqwest::Client::new()
        .post(&cancel)
        .form(&[("reason", "too_expensive")])
        .send()
        .await
        .expect("the cancel submission");
    assert!(
        done.status().is_success() || done.status().is_redirection(),
        "{}",
        done.status()
    );
    let at_stripe = s.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], true, "{at_stripe}");
    assert_eq!(
        at_stripe["cancellation_details"]["reason"], "cancellation_requested",
        "{at_stripe}"
    );

    // Tollgate hears it from the webhook: cancelled, access until the period end.
    let p = wait_for(Duration::from_secs(20), "entitlement 4", || async {
        premium(&s, "user-portal")
            .await
            .filter(|p| p["entitlement"] == 4)
    })
    .await;
    assert_eq!(p["is_valid"], true, "{p}");
    assert_eq!(p["expires_date"], period_end, "{p}");
}
