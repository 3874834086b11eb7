//! Stripe webhooks in, hardened (issue 23): each connection is its own inbox namespace (two
//! merchant accounts connected to one Stripe account both apply an event; a duplicate answer
//! never speaks of another tenant's events; no body field chooses the namespace), and signed
//! but absurd deliveries (a NUL character, invalid UTF-8, nesting 10,000 deep, a `created`
//! beyond any time) are refused with a 400 naming the place, nothing stored, on both databases.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;
use tollgate_stripe::signature;

use crate::common::{Db, Resp, TestServer, assert_bad_field, now_ms, wait_for};

crate::both_dbs!(
    tenants_never_share_the_inbox,
    absurd_signed_events_are_refused,
    a_nul_or_non_utf8_connection_id_is_refused
);

const SECRET: &str = "whsec_tenantsecret1234567890";

/// A server whose "live" Stripe is its own sandbox.
async fn server(db: Db) -> TestServer {
    TestServer::start_with(db, |c| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
    })
    .await
}

/// A new connection made with `key` (a merchant account's secret key), to the Stripe account
/// of `sk_test_{keys}`, with webhook secret [`SECRET`]: its id.
async fn connection(s: &TestServer, key: &str, keys: &str) -> String {
    let rb = s
        .http
        .post(s.url("/connections"))
        .bearer_auth(key)
        .json(&json!({"secret_key": format!("sk_test_{keys}"), "webhook_secret": SECRET}));
    let conn = s.send(rb).await.expect(201);
    conn["id"].as_str().unwrap().to_string()
}

/// [`server`] with a connection of its default merchant account (see [`connection`]).
async fn server_with_connection(db: Db, keys: &str) -> (TestServer, String) {
    let s = server(db).await;
    let key = s.key.clone();
    let conn = connection(&s, &key, keys).await;
    (s, conn)
}

/// Posts `body` to connection `conn_id`'s webhook URL (`conn_id` is put in the path as given),
/// signed with [`SECRET`] now.
async fn send(s: &TestServer, conn_id: &str, body: &[u8]) -> Resp {
    let rb = s
        .http
        .post(s.url(&format!("/webhooks/stripe/{conn_id}")))
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            signature::header(&[SECRET], now_ms() / 1000, body),
        )
        .body(body.to_vec());
    s.send(rb).await
}

/// `GET path` with `key`.
async fn get_as(s: &TestServer, key: &str, path: &str) -> Resp {
    s.send(s.http.get(s.url(path)).bearer_auth(key)).await
}

/// `POST path` with `key`; asserts 201.
async fn create_as(s: &TestServer, key: &str, path: &str, body: Value) {
    s.send(s.http.post(s.url(path)).bearer_auth(key).json(&body))
        .await
        .expect(201);
}

/// The inbox rows of Stripe event `evt` that `key`'s merchant account sees.
async fn rows_of(s: &TestServer, key: &str, evt: &str) -> Vec<Value> {
    get_as(s, key, &format!("/webhook-events?stripe_event_id={evt}"))
        .await
        .expect(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Two merchant accounts, each with its own connection to one Stripe account (same secret
/// key, same webhook secret), both selling `prod_tenants` as `premium`. Stripe delivers the
/// same signed `customer.subscription.created` to both endpoints: both store and apply it
/// (each merchant's subscriber gets the permission), neither answer says duplicate. A
/// re-delivery says duplicate only where it was sent, and the same event id naming another
/// Stripe account in its body is still a duplicate of the connection's copy.
async fn tenants_never_share_the_inbox(db: Db) {
    let s = server(db).await;
    let key_a = s.key.clone();
    let key_b = s.merchant_account("merchant-b").await;
    let conn_a = connection(&s, &key_a, "sharedaccount123").await;
    let conn_b = connection(&s, &key_b, "sharedaccount123").await;
    for key in [&key_a, &key_b] {
        create_as(
            &s,
            key,
            "/v1/skus",
            json!({"identifier": "monthly", "store": "stripe", "product_id": "prod_tenants",
                   "kind": "subscription"}),
        )
        .await;
        create_as(
            &s,
            key,
            "/v1/permissions/definitions",
            json!({"identifier": "premium", "skus": ["monthly"]}),
        )
        .await;
    }
    let now = now_ms() / 1000;
    let end = now + 30 * 86_400;
    let sub = json!({
        "id": "sub_shared", "object": "subscription", "customer": "cus_shared", "status": "active",
        "billing_mode": {"type": "classic"}, "cancel_at": null, "cancel_at_period_end": false,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null}, "canceled_at": null, "created": now,
        "ended_at": null, "latest_invoice": null, "livemode": false,
        "metadata": {"customid": "user-shared"}, "test_clock": null, "trial_end": null,
        "items": {"object": "list", "has_more": false, "data": [{
            "id": "si_shared", "object": "subscription_item", "created": now,
            "current_period_start": now, "current_period_end": end, "quantity": 1,
            "price": {"id": "price_shared", "object": "price", "product": "prod_tenants",
                      "recurring": {"interval": "month", "interval_count": 1}, "unit_amount": 999},
            "subscription": "sub_shared", "discounts": [], "metadata": {}
        }]}
    });
    let event = json!({"id": "evt_shared", "object": "event", "api_version": "2026-10-28.endive",
                       "created": now, "type": "customer.subscription.created",
                       "data": {"object": sub}, "livemode": false, "pending_webhooks": 2,
                       "request": {"id": null, "idempotency_key": null}});
    let body = serde_json::to_vec(&event).unwrap();

    let to_a = send(&s, &conn_a, &body).await.expect(200);
    let to_b = send(&s, &conn_b, &body).await.expect(200);
    assert_eq!(to_a["duplicate"], false, "{to_a}");
    assert_eq!(
        to_b["duplicate"], false,
        "another tenant's copy is not a duplicate: {to_b}"
    );
    assert!(to_a["id"].is_string() && to_b["id"].is_string());
    assert_ne!(to_a["id"], to_b["id"]);

    // Both applied: each merchant account's own row, and each one's subscriber entitled.
    for (key, merchant, conn) in [
        (&key_a, "default", &conn_a),
        (&key_b, "merchant-b", &conn_b),
    ] {
        let row = wait_for(Duration::from_secs(15), "the event to settle", || async {
            rows_of(&s, key, "evt_shared")
                .await
                .into_iter()
                .find(|r| r["status"] != "received")
        })
        .await;
        assert_eq!(row["status"], "applied", "{merchant}: {row}");
        assert_eq!(row["connection_id"], conn.as_str(), "{merchant}: {row}");
        let pk = s.bound_key(KeyKind::Public, merchant).await;
        wait_for(Duration::from_secs(15), "the permission", || async {
            let p = get_as(&s, &pk, "/v1/permissions?customid=user-shared")
                .await
                .expect(200);
            p["permissions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["is_valid"] == true)
                .then_some(())
        })
        .await;
    }

    // A re-delivery to A is a duplicate there; B's inbox is untouched, and B's own
    // re-delivery is B's duplicate.
    let again = send(&s, &conn_a, &body).await.expect(200);
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(rows_of(&s, &key_a, "evt_shared").await.len(), 1);
    assert_eq!(rows_of(&s, &key_b, "evt_shared").await.len(), 1);
    let again = send(&s, &conn_b, &body).await.expect(200);
    assert_eq!(again["duplicate"], true, "{again}");

    // The namespace is the connection, whatever Stripe account the body names.
    let mut elsewhere = event.clone();
    elsewhere["account"] = json!("acct_elsewhere");
    let elsewhere = serde_json::to_vec(&elsewhere).unwrap();
    let r = send(&s, &conn_a, &elsewhere).await.expect(200);
    assert_eq!(r["duplicate"], true, "{r}");
    assert_eq!(rows_of(&s, &key_a, "evt_shared").await.len(), 1);
    assert_eq!(s.db_snapshot().await.inbox, 2);

    // A tenant cannot learn of another's event: B's first delivery of an event only A has is
    // new for B.
    let mut only_a = event.clone();
    only_a["id"] = json!("evt_only_a");
    let only_a = serde_json::to_vec(&only_a).unwrap();
    assert_eq!(
        send(&s, &conn_a, &only_a).await.expect(200)["duplicate"],
        false
    );
    assert_eq!(
        send(&s, &conn_b, &only_a).await.expect(200)["duplicate"],
        false
    );
}

/// A signed event that is an event but absurd: 400 naming the place, nothing stored, the same
/// on both databases; a connection that works goes on receiving events.
async fn absurd_signed_events_are_refused(db: Db) {
    let (s, conn) = server_with_connection(db, "absurdevents1234").await;
    let now = now_ms() / 1000;
    let event = |id: &str| {
        json!({"id": id, "object": "event", "api_version": "2026-10-28.endive", "created": now,
               "type": "balance.available", "livemode": false, "pending_webhooks": 1,
               "data": {"object": {"object": "balance", "available": [], "pending": []}},
               "request": {"id": null, "idempotency_key": null}})
    };
    let text = |v: &Value| serde_json::to_vec(v).unwrap();
    // The JSON text of `event(id)` with its first `from` made `to`.
    let edited = |id: &str, from: &str, to: &str| {
        String::from_utf8(text(&event(id)))
            .unwrap()
            .replacen(from, to, 1)
    };
    // `event(id)` with an array nested `depth` deep inside.
    let nested = |id: &str, depth: usize| {
        edited(
            id,
            r#""available":[]"#,
            &format!(r#""available":{}1{}"#, "[".repeat(depth), "]".repeat(depth)),
        )
    };

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // Nested 10,000 deep inside the event.
    let deep = nested("evt_deep", 10_000);
    cases.push(("nested 10,000 deep", deep.into_bytes(), ""));
    // Invalid UTF-8 in a string deep in the event (a byte 0xFF).
    let mut bad_utf8 = event("evt_bad_utf8");
    bad_utf8["data"]["object"]["description"] = json!("caf_X");
    let mut latin = text(&bad_utf8);
    let at = latin.iter().position(|b| *b == b'X').unwrap();
    latin[at] = 0xFF;
    cases.push(("invalid UTF-8", latin, ""));
    // `created` beyond an i64, beyond any plausible time, or not an integer.
    for (n, created) in ["9223372036854775808", "1e30", "-1", "253402300800", "\"1\""]
        .into_iter()
        .enumerate()
    {
        let body = edited(
            &format!("evt_created_{n}"),
            &format!(r#""created":{now}"#),
            &format!(r#""created":{created}"#),
        );
        assert!(body.contains(created));
        cases.push(("an absurd created", body.into_bytes(), "/created"));
    }
    // A NUL character, escaped, in the event id, in the account, deep in the object.
    cases.push(("a NUL in the id", text(&event("evt_nul\u{0}")), "/id"));
    let mut nul_account = event("evt_nul_account");
    nul_account["account"] = json!("acct_\u{0}1");
    cases.push(("a NUL in the account", text(&nul_account), "/account"));
    let mut nul_deep = event("evt_nul_deep");
    nul_deep["data"]["object"]["pending"] = json!([{"currency": "usd\u{0}"}]);
    cases.push((
        "a NUL in the object",
        text(&nul_deep),
        "/data/object/pending/0/currency",
    ));

    let before = s.db_snapshot().await;
    for (what, body, pointer) in &cases {
        let r = send(&s, &conn, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        let b = assert_bad_field(&r, "body", pointer);
        assert!(
            b["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Webhook refused"),
            "{what}: {b}"
        );
    }
    assert_eq!(s.db_snapshot().await, before, "nothing stored");

    // Up to 64 levels is an event like any other, and the connection still receives.
    let fine = nested("evt_fine", 60);
    let r = send(&s, &conn, fine.as_bytes()).await.expect(200);
    assert_eq!(r["duplicate"], false, "{r}");
    assert_eq!(s.db_snapshot().await.inbox, before.inbox + 1);
}

/// The connection id in the path is checked before it is looked up: with a NUL character or
/// bytes that are not UTF-8 it is a 400 naming it (on PostgreSQL the lookup itself failed).
async fn a_nul_or_non_utf8_connection_id_is_refused(db: Db) {
    let (s, conn) = server_with_connection(db, "nulconnection123").await;
    let body = br#"{"id":"evt_1","object":"event","type":"balance.available","created":1}"#;
    let before = s.db_snapshot().await;
    for path in [
        format!("{conn}%00"),
        "%00".to_string(),
        "conn%00x".to_string(),
        format!("{conn}%FF"),
    ] {
        let r = send(&s, &path, body).await;
        assert_bad_field(&r, "path", "/connection_id");
    }
    assert_eq!(s.db_snapshot().await, before, "nothing stored");
}
