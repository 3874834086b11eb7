//! Entitlements (issue 7): the catalogue with its validation, the public permission check
//! (what a public key may do, the rate limit, the customer token), linking by API (404, 409,
//! force, earlier purchases counted), and permissions after realistic Stripe events fed through
//! `entitlements::on_stripe_event` as the webhook inbox feeds them.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::ApiContext;
use tollgate_server::auth::KeyKind;
use tollgate_server::clock::SystemClock;
use tollgate_server::entitlements::{on_stripe_event, on_stripe_events};
use tollgate_store::ConnectionRow;

use crate::common::{Db, Resp, TestServer, assert_bad_field, assert_error, now_ms};

crate::both_dbs!(
    catalog_crud_and_validation,
    public_keys_read_permissions_and_nothing_else,
    public_reads_are_rate_limited,
    customer_token_is_required_when_set,
    connect_stripe_404_409_force,
    purchase_before_link_counts_after_connect_stripe,
    subscription_events_grant_and_revoke,
    one_time_purchases_refunds_and_disputes,
    old_and_current_payloads_give_the_same_permissions,
    events_in_any_order_give_the_same_permissions,
    the_expiry_job_expires_at_period_end,
    the_permission_cache_follows_every_change,
    checkout_line_items_are_read_from_stripe_once_per_session,
);

pub(crate) const DAY: i64 = 86_400;

pub(crate) async fn catalog(s: &TestServer) {
    for (id, prod, kind) in [
        ("web_monthly", "prod_monthly", "subscription"),
        ("web_yearly", "prod_yearly", "subscription"),
        ("lifetime", "prod_life", "one_time"),
    ] {
        s.post(
            "/v1/skus",
            json!({"identifier": id, "store": "stripe", "product_id": prod, "kind": kind}),
        )
        .await
        .expect(201);
    }
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["web_monthly", "web_yearly", "lifetime"]}),
    )
    .await
    .expect(201);
}

async fn catalog_crud_and_validation(db: Db) {
    let s = TestServer::start(db).await;
    let sku = s
        .post(
            "/v1/skus",
            json!({"identifier": "web_monthly", "store": "stripe", "product_id": "prod_123", "kind": "subscription"}),
        )
        .await
        .expect(201);
    assert_eq!(sku["identifier"], "web_monthly");
    assert_eq!(sku["store"], "stripe");
    assert_eq!(sku["product_id"], "prod_123");
    let dup = s
        .post(
            "/v1/skus",
            json!({"identifier": "web_monthly", "product_id": "prod_9", "kind": "one_time"}),
        )
        .await;
    let b = assert_error(&dup, 409, "duplicate_record");
    assert!(b["message"].as_str().unwrap().contains("identifier"), "{b}");
    assert_bad_field(
        &s.post(
            "/v1/skus",
            json!({"identifier": "x", "product_id": "price_1", "kind": "one_time"}),
        )
        .await,
        "body",
        "/product_id",
    );
    assert_bad_field(
        &s.post(
            "/v1/skus",
            json!({"identifier": "x", "product_id": "prod_1", "kind": "forever"}),
        )
        .await,
        "body",
        "/kind",
    );
    assert_bad_field(
        &s.post(
            "/v1/skus",
            json!({"identifier": "x", "product_id": "prod_1", "kind": "one_time", "store": "apple"}),
        )
        .await,
        "body",
        "/store",
    );
    assert_bad_field(
        &s.post(
            "/v1/skus",
            json!({"identifier": "has space", "product_id": "prod_1", "kind": "one_time"}),
        )
        .await,
        "body",
        "/identifier",
    );
    assert_bad_field(
        &s.post(
            "/v1/skus",
            json!({"identifier": "y", "product_id": "prod_1", "kind": "one_time", "colour": 1}),
        )
        .await,
        "body",
        "/colour",
    );
    s.post(
        "/v1/skus",
        json!({"identifier": "life", "product_id": "prod_life", "kind": "one_time"}),
    )
    .await
    .expect(201);
    let list = s.get("/v1/skus").await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // Permission definitions: unknown SKU named by its position, duplicates refused.
    let bad = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "premium", "skus": ["web_monthly", "nope"]}),
        )
        .await;
    assert_bad_field(&bad, "body", "/skus/1");
    assert_bad_field(
        &s.post(
            "/v1/permissions/definitions",
            json!({"identifier": "premium"}),
        )
        .await,
        "body",
        "/skus",
    );
    let d = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "premium", "skus": ["web_monthly"]}),
        )
        .await
        .expect(201);
    assert_eq!(d["skus"], json!(["web_monthly"]));
    assert_error(
        &s.post(
            "/v1/permissions/definitions",
            json!({"identifier": "premium", "skus": []}),
        )
        .await,
        409,
        "duplicate_record",
    );
    let d = s
        .send(
            s.request(Method::PATCH, "/v1/permissions/definitions/premium")
                .json(&json!({"skus": ["web_monthly", "life"]})),
        )
        .await
        .expect(200);
    assert_eq!(d["skus"], json!(["web_monthly", "life"]));
    assert_eq!(
        s.get("/v1/permissions/definitions").await.expect(200)["items"][0]["identifier"],
        "premium"
    );
    // A SKU in use is not deleted.
    let r = s.send(s.request(Method::DELETE, "/v1/skus/life")).await;
    assert_error(&r, 409, "duplicate_record");
    let sku = s
        .send(
            s.request(Method::PATCH, "/v1/skus/life")
                .json(&json!({"product_id": "prod_life2"})),
        )
        .await
        .expect(200);
    assert_eq!(sku["product_id"], "prod_life2");
    assert_eq!(
        s.send(s.request(Method::DELETE, "/v1/permissions/definitions/premium"))
            .await
            .status,
        204
    );
    assert_error(
        &s.get("/v1/permissions/definitions/premium").await,
        404,
        "not_found",
    );
    assert_eq!(
        s.send(s.request(Method::DELETE, "/v1/skus/life"))
            .await
            .status,
        204
    );
    assert_error(&s.get("/v1/skus/life").await, 404, "not_found");
}

pub(crate) async fn get_with(s: &TestServer, key: &str, path: &str) -> Resp {
    s.send(s.http.get(s.url(path)).bearer_auth(key)).await
}

async fn public_keys_read_permissions_and_nothing_else(db: Db) {
    let s = TestServer::start(db).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let r = get_with(&s, &pk, "/v1/permissions?customid=user-1").await;
    let b = r.expect(200);
    assert_eq!(b, json!({"customid": "user-1", "permissions": []}));
    for path in [
        "/v1/skus",
        "/transactions",
        "/connections",
        "/v1/subscribers/user-1",
    ] {
        assert_error(&get_with(&s, &pk, path).await, 403, "forbidden");
    }
    let r = s
        .send(
            s.http
                .post(s.url("/v1/connect_stripe"))
                .bearer_auth(&pk)
                .json(&json!({"customid": "u", "customerid": "cus_1"})),
        )
        .await;
    assert_error(&r, 403, "forbidden");
    assert_error(
        &s.send(s.http.get(s.url("/v1/permissions?customid=user-1")))
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &get_with(&s, "tg_pk_nope_nope", "/v1/permissions?customid=user-1").await,
        401,
        "unauthorized",
    );
    assert_bad_field(
        &get_with(&s, &pk, "/v1/permissions").await,
        "query",
        "/customid",
    );
    assert_bad_field(
        &get_with(&s, &pk, "/v1/permissions?customid=a&x=1").await,
        "query",
        "/x",
    );
    // A public key of another account cannot name this one.
    s.merchant_account("other").await;
    let other_pk = s.bound_key(KeyKind::Public, "other").await;
    let r = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user-1"))
                .bearer_auth(&other_pk)
                .header("x-merchant-account-id", "default"),
        )
        .await;
    assert_error(&r, 403, "forbidden");
}

async fn public_reads_are_rate_limited(db: Db) {
    let s = TestServer::start_with(db, |c| {
        c.permissions_rate_per_sec = 1;
        c.permissions_burst = 3;
    })
    .await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    for _ in 0..3 {
        get_with(&s, &pk, "/v1/permissions?customid=u")
            .await
            .expect(200);
    }
    let r = get_with(&s, &pk, "/v1/permissions?customid=u").await;
    assert_error(&r, 429, "too_many_requests");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // Another key has its own bucket.
    let pk2 = s.bound_key(KeyKind::Public, "default").await;
    get_with(&s, &pk2, "/v1/permissions?customid=u")
        .await
        .expect(200);
}

async fn customer_token_is_required_when_set(db: Db) {
    let s = TestServer::start(db).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    assert_bad_field(
        &s.send(
            s.request(Method::PATCH, "/v1/entitlements/settings")
                .json(&json!({"require_customer_token": true})),
        )
        .await,
        "body",
        "/require_customer_token",
    );
    let secret = "a-long-customer-token-secret";
    let st = s
        .send(
            s.request(Method::PATCH, "/v1/entitlements/settings")
                .json(&json!({"customer_token_secret": secret, "require_customer_token": true})),
        )
        .await
        .expect(200);
    assert_eq!(st["require_customer_token"], true);
    assert!(st.get("customer_token_secret").is_none());
    // The settings cache of the check lasts at most a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_error(
        &get_with(&s, &pk, "/v1/permissions?customid=user-7").await,
        401,
        "unauthorized",
    );
    let token = tollgate_server::api::entitlements::customer_token(secret, "user-7");
    let ok = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user-7"))
                .bearer_auth(&pk)
                .header("x-customer-token", &token),
        )
        .await;
    ok.expect(200);
    let wrong = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user-8"))
                .bearer_auth(&pk)
                .header("x-customer-token", &token),
        )
        .await;
    assert_error(&wrong, 401, "unauthorized");
}

/// A customer at the sandbox.
async fn sandbox_customer(s: &TestServer, metadata: &[(&str, &str)]) -> String {
    let mut form: Vec<(String, String)> = vec![("email".into(), "buyer@example.com".into())];
    for (k, v) in metadata {
        form.push((format!("metadata[{k}]"), v.to_string()));
    }
    let r = s.stripe_post("/v1/customers", &form).await;
    r["id"].as_str().unwrap().to_string()
}

async fn connect(s: &TestServer, customid: &str, customer: &str, force: Option<bool>) -> Resp {
    let mut body = json!({"customid": customid, "customerid": customer});
    if let Some(f) = force {
        body["force"] = json!(f);
    }
    s.post("/v1/connect_stripe", body).await
}

async fn connect_stripe_404_409_force(db: Db) {
    let s = TestServer::start(db).await;
    assert_error(
        &connect(&s, "user-a", "cus_doesnotexist", None).await,
        404,
        "not_found",
    );
    assert_bad_field(
        &connect(&s, "user-a", "acct_1", None).await,
        "body",
        "/customerid",
    );
    assert_bad_field(&connect(&s, "", "cus_1", None).await, "body", "/customid");
    let cus = sandbox_customer(&s, &[]).await;
    let b = connect(&s, "user-a", &cus, None).await.expect(200);
    assert_eq!(b["customid"], "user-a");
    assert_eq!(b["customerid"], cus.as_str());
    // Linking again to the same customid is fine.
    connect(&s, "user-a", &cus, None).await.expect(200);
    let r = connect(&s, "user-b", &cus, None).await;
    let e = assert_error(&r, 409, "duplicate_record");
    assert!(e["message"].as_str().unwrap().contains("force"), "{e}");
    let b = connect(&s, "user-b", &cus, Some(true)).await.expect(200);
    assert_eq!(b["moved_from"], "user-a");
    let sub = s.get("/v1/subscribers/user-b").await.expect(200);
    assert_eq!(sub["stripe_customers"][0]["id"], cus.as_str());
    assert_eq!(sub["stripe_customers"][0]["linked_by"], "api");
    assert_error(&s.get("/v1/subscribers/user-a").await, 404, "not_found");
}

/// A succeeded bare PaymentIntent of `customer` selling `sku` (`metadata.sku`), at the sandbox.
async fn paid_intent(s: &TestServer, customer: &str, sku: &str, amount: i64) -> Value {
    let r = s
        .stripe_post(
            "/v1/payment_intents",
            &[
                ("amount", amount.to_string()),
                ("currency", "usd".into()),
                ("customer", customer.into()),
                ("metadata[sku]", sku.into()),
                ("payment_method", "pm_card_visa".into()),
                ("confirm", "true".into()),
                ("return_url", "https://example.com/r".into()),
            ],
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    r
}

async fn purchase_before_link_counts_after_connect_stripe(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let cus = sandbox_customer(&s, &[]).await;
    paid_intent(&s, &cus, "lifetime", 4900).await;
    let before = get_with(&s, &pk, "/v1/permissions?customid=user-7")
        .await
        .expect(200);
    assert_eq!(before["permissions"], json!([]));
    let b = connect(&s, "user-7", &cus, None).await.expect(200);
    assert_eq!(b["permissions"][0]["identifier"], "premium", "{b}");
    let p = get_with(&s, &pk, "/v1/permissions?customid=user-7")
        .await
        .expect(200);
    assert_eq!(p["customid"], "user-7");
    let perm = &p["permissions"][0];
    assert_eq!(perm["identifier"], "premium");
    assert_eq!(perm["is_valid"], true);
    assert_eq!(perm["entitlement"], 3);
    // Glassfy's SDK needs a number: a lifetime purchase never expires.
    assert_eq!(perm["expires_date"], 253_402_300_799_i64);
    assert_eq!(perm["expires_at"], Value::Null);
    assert_eq!(
        perm["skuarray"],
        json!([{"identifier": "lifetime", "productid": "prod_life", "store": 4,
                "istrial": false, "isinintrooffer": false}])
    );
    let sub = s.get("/v1/subscribers/user-7").await.expect(200);
    assert_eq!(sub["purchases"][0]["object"], "payment_intent", "{sub}");
    assert_eq!(sub["purchases"][0]["is_valid"], true);
}

// ---- events through the inbox's entry point --------------------------------------------------

/// A context on the test server's database (as the inbox worker has) and its sandbox
/// connection.
pub(crate) async fn inbox(s: &TestServer) -> (ApiContext, ConnectionRow) {
    let ctx = tollgate_server::context(
        s.config.clone(),
        Arc::new(SystemClock),
        Some(format!("{}/sandbox/stripe", s.base)),
    )
    .await
    .expect("context");
    let conn = tollgate_store::connections::default_for(ctx.store.reader(), "default")
        .await
        .expect("connections")
        .expect("the sandbox connection");
    (ctx, conn)
}

pub(crate) fn event(id: &str, kind: &str, created: i64, object: Value, version: &str) -> Value {
    json!({"id": id, "object": "event", "api_version": version, "created": created,
           "type": kind, "livemode": false, "pending_webhooks": 1,
           "request": {"id": null, "idempotency_key": null},
           "data": {"object": object}})
}

pub(crate) const CURRENT: &str = "2026-10-28.endive";
const OLD: &str = "2022-11-15";

/// A subscription in the current shape (periods on the items).
pub(crate) fn subscription(
    id: &str,
    customer: &str,
    status: &str,
    product: &str,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "billing_mode": {"type": "classic"}, "cancel_at": null, "cancel_at_period_end": false,
        "canceled_at": null, "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "created": start, "ended_at": null, "latest_invoice": null, "livemode": false,
        "metadata": {"customid": "user-sub"}, "test_clock": null, "trial_end": null,
        "items": {"object": "list", "has_more": false, "data": [{
            "id": format!("si_{id}"), "object": "subscription_item", "created": start,
            "current_period_start": start, "current_period_end": end, "quantity": 1,
            "price": {"id": "price_m", "object": "price", "product": product,
                      "recurring": {"interval": "month", "interval_count": 1}, "unit_amount": 999},
            "subscription": id, "discounts": [], "metadata": {}
        }]}
    })
}

/// The same subscription as 2022-11-15 renders it.
fn subscription_old(current: &Value) -> Value {
    let mut o = current.clone();
    let item = &current["items"]["data"][0];
    o["current_period_start"] = item["current_period_start"].clone();
    o["current_period_end"] = item["current_period_end"].clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("billing_mode");
        m.remove("cancellation_details");
    }
    if let Some(it) = o["items"]["data"][0].as_object_mut() {
        it.remove("current_period_start");
        it.remove("current_period_end");
        it.insert(
            "plan".into(),
            json!({"id": "price_m", "object": "plan", "product": item["price"]["product"]}),
        );
    }
    o
}

/// The permission check, once the server has followed every permission change committed so far
/// (the tests write through a context of their own: another process, for the server's cache).
pub(crate) async fn permissions_of(s: &TestServer, pk: &str, customid: &str) -> Vec<Value> {
    followed(s).await;
    check_now(s, pk, customid).await
}

/// The permission check, at once.
pub(crate) async fn check_now(s: &TestServer, pk: &str, customid: &str) -> Vec<Value> {
    get_with(s, pk, &format!("/v1/permissions?customid={customid}"))
        .await
        .expect(200)["permissions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the server's permission cache has heard of every permission change committed so
/// far: on SQLite it has followed the change log to its end; on PostgreSQL it has heard a sync
/// marker sent now (notifications arrive in commit order).
pub(crate) async fn followed(s: &TestServer) {
    let target: i64 = match s.db {
        Db::Sqlite => {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM ent_permission_changes")
                    .fetch_one(&s.pool)
                    .await
                    .expect("change log");
            last.unwrap_or(0)
        }
        Db::Postgres => {
            // Above every marker sent before (the server shows the last one it heard): a
            // random offset could sort below an earlier marker and end the wait at once.
            static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let now = now_ms() * 1000;
            let n = LAST
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |last| Some(now.max(last + 1)),
                )
                .map_or(now, |last| now.max(last + 1));
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_notify({}, $1)",
                tollgate_store::entitlements::PERMISSION_CHANNEL_SQL
            )))
            .bind(json!({ "sync": n }).to_string())
            .execute(&s.pool)
            .await
            .expect("marker");
            n
        }
    };
    crate::common::wait_for(
        std::time::Duration::from_secs(10),
        "the permission cache to hear every change",
        || async {
            let seq = metric(s, "tollgate_permission_cache_followed_seq").await?;
            (seq >= target).then_some(())
        },
    )
    .await;
}

/// A sample of the server's `/metrics` (`name` with its labels, if any).
async fn metric(s: &TestServer, name: &str) -> Option<i64> {
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))?
        .trim()
        .parse()
        .ok()
}

/// What another process writing the read model does besides the write: on SQLite the
/// change-log entry, on PostgreSQL the notification.
async fn announce(s: &TestServer, merchant: &str, customid: &str) {
    use tollgate_store::entitlements as es;
    match s.db {
        Db::Sqlite => es::note_permission_change(&s.pool, merchant, customid, 0).await,
        Db::Postgres => es::notify_permission_change(&s.pool, merchant, customid).await,
    }
    .expect("announcing the change");
}

async fn subscription_events_grant_and_revoke(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let now = now_ms() / 1000;
    let end = now + 30 * DAY;
    let sub = subscription("sub_A", "cus_A", "active", "prod_monthly", now, end);
    let ev = event(
        "evt_1",
        "customer.subscription.created",
        now,
        sub.clone(),
        CURRENT,
    );
    assert!(on_stripe_event(&ctx, &conn, &ev).await.expect("applied"));
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["is_valid"], true);
    assert_eq!(p[0]["entitlement"], 5);
    assert_eq!(p[0]["expires_date"], end);
    assert!(p[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    // The same event again changes nothing.
    assert!(on_stripe_event(&ctx, &conn, &ev).await.expect("applied"));
    assert_eq!(permissions_of(&s, &pk, "user-sub").await, p);
    // An event of a type entitlements do not read is not relevant.
    let other = event(
        "evt_x",
        "payout.paid",
        now,
        json!({"id": "po_1", "object": "payout"}),
        CURRENT,
    );
    assert!(!on_stripe_event(&ctx, &conn, &other).await.expect("ignored"));

    // Cancel at period end: still valid, code 4.
    let mut canceling = sub.clone();
    canceling["cancel_at_period_end"] = json!(true);
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_2",
            "customer.subscription.updated",
            now + 5,
            canceling,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p[0]["is_valid"], true);
    assert_eq!(p[0]["entitlement"], 4);

    // Payment failed → past_due, held in grace (code 1).
    let mut past_due = sub.clone();
    past_due["status"] = json!("past_due");
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_3",
            "customer.subscription.updated",
            now + 10,
            past_due,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p[0]["is_valid"], true);
    assert_eq!(p[0]["entitlement"], 1);

    // Deleted after failed payments → revoked (-2).
    let mut canceled = sub.clone();
    canceled["status"] = json!("canceled");
    canceled["ended_at"] = json!(now + 20);
    canceled["cancellation_details"]["reason"] = json!("payment_failed");
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_4",
            "customer.subscription.deleted",
            now + 20,
            canceled,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p[0]["is_valid"], false);
    assert_eq!(p[0]["entitlement"], -2);
    // A late, older `updated` does not bring it back.
    on_stripe_event(
        &ctx,
        &conn,
        &event(
            "evt_1b",
            "customer.subscription.updated",
            now + 1,
            sub,
            CURRENT,
        ),
    )
    .await
    .expect("applied");
    assert_eq!(permissions_of(&s, &pk, "user-sub").await, p);
    // The subscriber view lists the link made by metadata and the purchase.
    let sb = s.get("/v1/subscribers/user-sub").await.expect(200);
    assert_eq!(sb["stripe_customers"][0]["id"], "cus_A");
    assert_eq!(sb["stripe_customers"][0]["linked_by"], "metadata");
    assert_eq!(sb["purchases"][0]["id"], "sub_A");
}

/// A paid one-time Checkout Session of a guest (no customer) with its line items expanded.
pub(crate) fn checkout(id: &str, customid: &str, pi: &str, created: i64) -> Value {
    json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "complete",
        "payment_status": "paid", "customer": null, "client_reference_id": customid,
        "payment_intent": pi, "invoice": null, "metadata": {}, "created": created,
        "amount_total": 4900, "currency": "usd", "livemode": false,
        "line_items": {"object": "list", "has_more": false, "data": [
            {"id": "li_1", "object": "item", "amount_total": 4900, "quantity": 1,
             "price": {"id": "price_life", "object": "price", "product": "prod_life", "unit_amount": 4900}}
        ]}
    })
}

pub(crate) fn charge(id: &str, pi: &str, refunded: i64, disputed: bool) -> Value {
    json!({
        "id": id, "object": "charge", "amount": 4900, "amount_captured": 4900,
        "amount_refunded": refunded, "captured": true, "customer": null,
        "disputed": disputed, "paid": true, "payment_intent": pi,
        "refunded": refunded >= 4900, "status": "succeeded", "livemode": false
    })
}

async fn one_time_purchases_refunds_and_disputes(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let t = now_ms() / 1000;
    let feed = |id: &str, kind: &str, at: i64, obj: Value| event(id, kind, at, obj, CURRENT);

    // Partial refund: kept (the default policy).
    for ev in [
        feed(
            "e1",
            "checkout.session.completed",
            t,
            checkout("cs_1", "guest-1", "pi_1", t),
        ),
        feed(
            "e2",
            "charge.succeeded",
            t,
            charge("ch_1", "pi_1", 0, false),
        ),
        feed(
            "e3",
            "charge.refunded",
            t + 60,
            charge("ch_1", "pi_1", 1000, false),
        ),
    ] {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    let p = permissions_of(&s, &pk, "guest-1").await;
    assert_eq!(p[0]["is_valid"], true, "{p:?}");
    assert_eq!(p[0]["entitlement"], 3);
    // Full refund: revoked.
    on_stripe_event(
        &ctx,
        &conn,
        &feed(
            "e4",
            "charge.refunded",
            t + 120,
            charge("ch_1", "pi_1", 4900, false),
        ),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "guest-1").await;
    assert_eq!(p[0]["is_valid"], false);
    assert_eq!(p[0]["entitlement"], -8);

    // A dispute: kept while open and when won, revoked when lost. The dispute carries no
    // customer: it reaches the purchase through its charge.
    let dispute = |status: &str| {
        json!({"id": "dp_2", "object": "dispute", "amount": 4900, "charge": "ch_2",
               "payment_intent": "pi_2", "status": status, "livemode": false})
    };
    for ev in [
        feed(
            "f1",
            "checkout.session.completed",
            t,
            checkout("cs_2", "guest-2", "pi_2", t),
        ),
        feed(
            "f2",
            "charge.succeeded",
            t,
            charge("ch_2", "pi_2", 0, false),
        ),
        feed(
            "f3",
            "charge.dispute.created",
            t + 10,
            dispute("needs_response"),
        ),
    ] {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    assert_eq!(
        permissions_of(&s, &pk, "guest-2").await[0]["is_valid"],
        true
    );
    on_stripe_event(
        &ctx,
        &conn,
        &feed("f4", "charge.dispute.closed", t + 20, dispute("lost")),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "guest-2").await;
    assert_eq!(p[0]["is_valid"], false);
    assert_eq!(p[0]["entitlement"], -8);

    // An unpaid (async) session grants nothing; its async success does.
    let mut unpaid = checkout("cs_3", "guest-3", "pi_3", t);
    unpaid["payment_status"] = json!("unpaid");
    on_stripe_event(
        &ctx,
        &conn,
        &feed("g1", "checkout.session.completed", t, unpaid),
    )
    .await
    .expect("applied");
    assert_eq!(
        permissions_of(&s, &pk, "guest-3").await,
        Vec::<Value>::new()
    );
    on_stripe_event(
        &ctx,
        &conn,
        &feed(
            "g2",
            "checkout.session.async_payment_succeeded",
            t + 30,
            checkout("cs_3", "guest-3", "pi_3", t),
        ),
    )
    .await
    .expect("applied");
    assert_eq!(
        permissions_of(&s, &pk, "guest-3").await[0]["entitlement"],
        3
    );
}

/// A subscription bought, renewed, refunded by a credit note: rendered in the 2022-11-15 and
/// the current shapes, each fed to a customid of its own; the permissions match.
async fn old_and_current_payloads_give_the_same_permissions(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let now = now_ms() / 1000;
    for (version, cus, customid) in [
        (OLD, "cus_old", "user-old"),
        (CURRENT, "cus_new", "user-new"),
    ] {
        let mut sub = subscription(
            &format!("sub_{cus}"),
            cus,
            "active",
            "prod_yearly",
            now,
            now + 365 * DAY,
        );
        sub["metadata"]["customid"] = json!(customid);
        sub["latest_invoice"] = json!(format!("in_{cus}"));
        let invoice = if version == OLD {
            json!({"id": format!("in_{cus}"), "object": "invoice", "customer": cus, "status": "paid",
                   "paid": true, "total": 9900, "amount_paid": 9900, "created": now,
                   "subscription": format!("sub_{cus}"), "charge": format!("ch_{cus}"),
                   "payment_intent": format!("pi_{cus}"),
                   "lines": {"object": "list", "data": [{"id": "il_1", "object": "line_item", "amount": 9900,
                             "price": {"id": "price_y", "product": "prod_yearly"}}]}})
        } else {
            json!({"id": format!("in_{cus}"), "object": "invoice", "customer": cus, "status": "paid",
                   "total": 9900, "amount_paid": 9900, "created": now,
                   "parent": {"type": "subscription_details", "subscription_details": {"subscription": format!("sub_{cus}")}},
                   "lines": {"object": "list", "data": [{"id": "il_1", "object": "line_item", "amount": 9900,
                             "pricing": {"type": "price_details", "price_details": {"price": "price_y", "product": "prod_yearly"}}}]}})
        };
        let sub_payload = if version == OLD {
            subscription_old(&sub)
        } else {
            sub
        };
        for ev in [
            event(
                &format!("{cus}_1"),
                "customer.subscription.created",
                now,
                sub_payload,
                version,
            ),
            event(&format!("{cus}_2"), "invoice.paid", now, invoice, version),
        ] {
            on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
        }
    }
    let old = permissions_of(&s, &pk, "user-old").await;
    let new = permissions_of(&s, &pk, "user-new").await;
    assert_eq!(old[0]["is_valid"], true);
    assert_eq!(old[0]["expires_date"], now + 365 * DAY);
    assert_eq!(old, new);
    // A credit note for the whole invoice revokes, in both shapes.
    for (version, cus) in [(OLD, "cus_old"), (CURRENT, "cus_new")] {
        let mut cn = json!({"id": format!("cn_{cus}"), "object": "credit_note", "customer": cus,
                            "invoice": format!("in_{cus}"), "amount": 9900, "total": 9900,
                            "status": "issued", "created": now + 5});
        if version == OLD {
            cn["refund"] = json!(format!("re_{cus}"));
        } else {
            cn["refunds"] = json!([{"amount_refunded": 9900, "refund": format!("re_{cus}")}]);
        }
        on_stripe_event(
            &ctx,
            &conn,
            &event(
                &format!("{cus}_3"),
                "credit_note.created",
                now + 5,
                cn,
                version,
            ),
        )
        .await
        .expect("applied");
    }
    let old = permissions_of(&s, &pk, "user-old").await;
    assert_eq!(old[0]["is_valid"], false);
    assert_eq!(old[0]["entitlement"], -8);
    assert_eq!(old, permissions_of(&s, &pk, "user-new").await);
}

/// The same lifecycle fed in order, reversed and with duplicates: the same permissions.
async fn events_in_any_order_give_the_same_permissions(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let now = now_ms() / 1000;
    let life = |cus: &str, customid: &str| -> Vec<Value> {
        let id = format!("sub_{cus}");
        let mut created = subscription(
            &id,
            cus,
            "incomplete",
            "prod_monthly",
            now - 40 * DAY,
            now - 10 * DAY,
        );
        created["metadata"]["customid"] = json!(customid);
        let mut active = created.clone();
        active["status"] = json!("active");
        let mut renewed = subscription(
            &id,
            cus,
            "active",
            "prod_monthly",
            now - 10 * DAY,
            now + 20 * DAY,
        );
        renewed["metadata"]["customid"] = json!(customid);
        let mut canceling = renewed.clone();
        canceling["cancel_at_period_end"] = json!(true);
        vec![
            event(
                "a",
                "customer.subscription.created",
                now - 40 * DAY,
                created,
                CURRENT,
            ),
            event(
                "b",
                "customer.subscription.updated",
                now - 40 * DAY,
                active,
                CURRENT,
            ),
            event(
                "c",
                "customer.subscription.updated",
                now - 10 * DAY,
                renewed,
                CURRENT,
            ),
            event(
                "d",
                "customer.subscription.updated",
                now - DAY,
                canceling,
                CURRENT,
            ),
        ]
    };
    for ev in life("cus_in", "user-in") {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    let mut shuffled = life("cus_sh", "user-sh");
    shuffled.reverse();
    let dup = shuffled[1].clone();
    shuffled.insert(0, dup);
    shuffled.push(shuffled[2].clone());
    for ev in shuffled {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    let a = permissions_of(&s, &pk, "user-in").await;
    let b = permissions_of(&s, &pk, "user-sh").await;
    assert_eq!(a[0]["entitlement"], 4, "{a:?}");
    assert_eq!(a[0]["expires_date"], now + 20 * DAY);
    // The SKU array names the same SKU; everything else is equal too.
    assert_eq!(a, b);
}

/// Canceled at period end: held until then, and the expiry job writes the expiry into the read
/// model once the period is over (the check answers it lapsed even before).
async fn the_expiry_job_expires_at_period_end(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    // Outbound webhooks of the account: the permission's events reach the outbox.
    s.post(
        "/webhook-subscriptions",
        json!({"url": "https://merchant.example/hooks", "events": ["permission.*", "customer.linked"]}),
    )
    .await
    .expect(201);
    let now = now_ms() / 1000;
    let mut sub = subscription(
        "sub_E",
        "cus_E",
        "active",
        "prod_monthly",
        now - 30 * DAY,
        now + 2,
    );
    sub["metadata"]["customid"] = json!("user-exp");
    sub["cancel_at_period_end"] = json!(true);
    on_stripe_event(
        &ctx,
        &conn,
        &event("evt_e", "customer.subscription.updated", now, sub, CURRENT),
    )
    .await
    .expect("applied");
    let p = permissions_of(&s, &pk, "user-exp").await;
    assert_eq!(p[0]["is_valid"], true);
    assert_eq!(p[0]["entitlement"], 4);
    let row = crate::common::wait_for(
        std::time::Duration::from_secs(15),
        "the expiry job",
        || async {
            let r: (i64, i64) = sqlx::query_as(
                "SELECT is_valid, entitlement FROM ent_permissions WHERE customid = 'user-exp'",
            )
            .fetch_one(&s.pool)
            .await
            .expect("read model");
            (r.0 == 0).then_some(r)
        },
    )
    .await;
    assert_eq!(row.1, -5);
    let p = permissions_of(&s, &pk, "user-exp").await;
    assert_eq!(p[0]["is_valid"], false);
    assert_eq!(p[0]["entitlement"], -5);
    // Not held and no expiry: 0 (Glassfy's SDK refuses a null), `expires_at` null.
    assert_eq!(p[0]["expires_date"], 0);
    assert_eq!(p[0]["expires_at"], Value::Null);
    // No Stripe event came: the expiry job alone emitted `permission.expired`, after the
    // `permission.granted` and `customer.linked` of the subscription.
    for name in [
        "customer.linked",
        "permission.granted",
        "permission.expired",
    ] {
        let d = s
            .get(&format!("/webhook-deliveries?event_name={name}"))
            .await
            .expect(200);
        let items = d["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{name}: {d}");
    }
    let d = s
        .get("/webhook-deliveries?event_name=permission.expired")
        .await
        .expect(200);
    let id = d["items"][0]["id"].as_str().expect("delivery id");
    let full = s
        .get(&format!("/webhook-deliveries/{id}"))
        .await
        .expect(200);
    assert_eq!(full["event"]["target"]["customid"], "user-exp", "{full}");
    assert_eq!(full["event"]["target"]["identifier"], p[0]["identifier"]);
    assert_eq!(full["event"]["target"]["is_valid"], false);
}

/// The permission cache (docs/entitlements.md): a change made by the server itself shows at the
/// very next check; a change committed by another process shows once the server has heard of it
/// (SQLite: its change-log entry; PostgreSQL: its notification); a write that announces nothing
/// is not seen (the cache does serve).
async fn the_permission_cache_follows_every_change(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let now = now_ms() / 1000;
    let sub = subscription(
        "sub_C",
        "cus_C",
        "active",
        "prod_monthly",
        now,
        now + 30 * DAY,
    );
    on_stripe_event(
        &ctx,
        &conn,
        &event("evt_c1", "customer.subscription.updated", now, sub, CURRENT),
    )
    .await
    .expect("applied");
    // Another process's change, followed: every check from here on may be served from memory.
    for _ in 0..3 {
        let p = permissions_of(&s, &pk, "user-sub").await;
        assert_eq!(p[0]["entitlement"], 5, "{p:?}");
    }

    // The server itself re-evaluates (a catalogue change): the very next check sees it, without
    // waiting for the change log.
    let patch = |skus: Value| {
        s.http
            .patch(format!("{}/v1/permissions/definitions/premium", s.base))
            .bearer_auth(&s.key)
            .json(&json!({ "skus": skus }))
            .send()
    };
    let r = patch(json!(["web_yearly", "lifetime"]))
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    assert_eq!(check_now(&s, &pk, "user-sub").await, Vec::<Value>::new());
    let r = patch(json!(["web_monthly", "web_yearly", "lifetime"]))
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    assert_eq!(check_now(&s, &pk, "user-sub").await[0]["entitlement"], 5);
    assert_eq!(
        permissions_of(&s, &pk, "user-sub").await[0]["entitlement"],
        5
    );

    // Another process writes the read model and announces nothing.
    sqlx::query(
        "UPDATE ent_permissions SET is_valid = 0, entitlement = -8 WHERE customid = 'user-sub'",
    )
    .execute(&s.pool)
    .await
    .expect("update");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p[0]["entitlement"], 5, "served from the cache: {p:?}");
    // ... and announced, as every writer of the read model does.
    announce(&s, "default", "user-sub").await;
    let p = permissions_of(&s, &pk, "user-sub").await;
    assert_eq!(p[0]["entitlement"], -8, "{p:?}");
    if s.db == Db::Sqlite {
        let logged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ent_permission_changes WHERE customid = 'user-sub'",
        )
        .fetch_one(&s.pool)
        .await
        .expect("count");
        // The grant, the two catalogue changes and the other process's entry.
        assert_eq!(logged, 4);
    }
    let hits = metric(&s, "tollgate_permission_cache_total{result=\"hit\"}")
        .await
        .expect("hit counter");
    assert!(hits >= 3, "{hits} hits");
}

/// A paid Checkout Session in `payment` mode for `customid`, as its `completed` event carries
/// it: without line items (the sandbox's own session, read back).
async fn paid_session(s: &TestServer, price: &str, customid: &str) -> Value {
    let cs = s
        .stripe_post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", "https://merchant.example/done"),
                ("client_reference_id", customid),
                ("line_items[0][price]", price),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let mut cs = s
        .stripe_get(&format!(
            "/v1/checkout/sessions/{}",
            cs["id"].as_str().unwrap()
        ))
        .await;
    cs["status"] = json!("complete");
    cs["payment_status"] = json!("paid");
    assert!(cs["line_items"].is_null(), "{cs}");
    cs
}

/// A purchase's line items are not in its event: they are read from Stripe, for several
/// sessions of one batch together, and once a session is stored complete they are not read
/// again (a replay, a second event of the session) — so applying those works while Stripe
/// does not answer.
async fn checkout_line_items_are_read_from_stripe_once_per_session(db: Db) {
    let s = TestServer::start(db).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (ctx, conn) = inbox(&s).await;
    let (product, price) = s.stripe_product_price("Lifetime", 4900).await;
    s.post(
        "/v1/skus",
        json!({"identifier": "life", "store": "stripe", "product_id": product, "kind": "one_time"}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["life"]}),
    )
    .await
    .expect(201);
    let t = now_ms() / 1000;

    // Three sessions in one batch: each one's line items are read, and each buyer is granted.
    let mut sessions = Vec::new();
    for (i, user) in ["cs-a", "cs-b", "cs-c"].iter().enumerate() {
        let cs = paid_session(&s, &price, user).await;
        sessions.push(event(
            &format!("evt_cs_{i}"),
            "checkout.session.completed",
            t,
            cs,
            CURRENT,
        ));
    }
    let refs: Vec<&Value> = sessions.iter().collect();
    let read = on_stripe_events(&ctx, &conn, &refs).await.expect("applied");
    assert_eq!(read, vec![true, true, true]);
    for user in ["cs-a", "cs-b", "cs-c"] {
        let p = permissions_of(&s, &pk, user).await;
        assert_eq!(p.len(), 1, "{user}: {p:?}");
        assert_eq!(p[0]["identifier"], "premium", "{user}: {p:?}");
        assert_eq!(p[0]["is_valid"], true, "{user}: {p:?}");
    }

    // Stripe stops answering. The stored sessions are complete: a replay of their events
    // needs no read.
    s.faults("500", 1.0, 0).await;
    let replayed = on_stripe_events(&ctx, &conn, &refs)
        .await
        .expect("applied without Stripe");
    assert_eq!(replayed, vec![true, true, true]);
    let p = permissions_of(&s, &pk, "cs-a").await;
    assert_eq!(p[0]["is_valid"], true, "{p:?}");
    // A session not stored yet must be read: its event fails (the inbox retries it).
    s.faults_off().await;
    let new = paid_session(&s, &price, "cs-d").await;
    s.faults("500", 1.0, 0).await;
    let new = event("evt_cs_d", "checkout.session.completed", t, new, CURRENT);
    assert!(on_stripe_event(&ctx, &conn, &new).await.is_err());
    s.faults_off().await;
    assert!(on_stripe_event(&ctx, &conn, &new).await.expect("applied"));
    let p = permissions_of(&s, &pk, "cs-d").await;
    assert_eq!(p[0]["is_valid"], true, "{p:?}");
}

/// PostgreSQL: one batch's customers are locked in one order, all before any link is read, so
/// two workers' batches that share customers wait for each other instead of deadlocking
/// (PostgreSQL breaks a deadlock only after `deadlock_timeout`, a second, and fails one side).
/// Here another transaction holds customer A's lock while a batch of B's then A's objects
/// arrives: the batch must wait for A without holding B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_locks_its_customers_in_one_order_on_postgres() {
    if crate::common::skip_postgres() {
        return;
    }
    let s = TestServer::start(Db::Postgres).await;
    let (ctx, conn) = inbox(&s).await;
    let key = |cus: &str| format!("link\u{1f}{}\u{1f}{cus}", conn.id);
    let t = now_ms() / 1000;

    let mut holder = ctx.store.begin().await.expect("a transaction");
    tollgate_store::entitlements::lock_stripe_customer(&mut holder, &conn.id, "cus_lock_a")
        .await
        .expect("A's lock");
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .expect("the holder's backend");
    let events = [
        event(
            "evt_lock_b",
            "customer.subscription.updated",
            t,
            subscription(
                "sub_lock_b",
                "cus_lock_b",
                "active",
                "prod_lock",
                t,
                t + 30 * DAY,
            ),
            CURRENT,
        ),
        event(
            "evt_lock_a",
            "customer.subscription.updated",
            t,
            subscription(
                "sub_lock_a",
                "cus_lock_a",
                "active",
                "prod_lock",
                t,
                t + 30 * DAY,
            ),
            CURRENT,
        ),
    ];
    let batch = {
        let (ctx, conn) = (ctx.clone(), conn.clone());
        tokio::spawn(async move {
            let refs: Vec<&Value> = events.iter().collect();
            on_stripe_events(&ctx, &conn, &refs).await
        })
    };
    // Until the batch waits for A's lock (other tests share the server: only a wait on this
    // holder counts).
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder_pid)
        .fetch_one(&s.pool)
        .await
        .expect("pg_locks");
        if waiting > 0 {
            break;
        }
        assert!(!batch.is_finished(), "the batch did not wait for A's lock");
        assert!(started.elapsed().as_secs() < 10, "the batch never waited");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // B's lock is free: the batch waits for A before taking it.
    let mut other = ctx.store.begin().await.expect("a transaction");
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
        .bind(key("cus_lock_b"))
        .fetch_one(&mut *other)
        .await
        .expect("try B's lock");
    assert!(free, "the batch took B's lock before A's");
    other.rollback().await.expect("rollback");
    holder.rollback().await.expect("rollback");
    let read = batch
        .await
        .expect("the batch's task")
        .expect("the batch applied");
    assert_eq!(read, vec![true, true]);
}
