//! Sending a test event to an outbound webhook endpoint (`POST /webhook-subscriptions/{id}/test`),
//! what the dashboard's "Send test event" uses: a real delivery through the outbox.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Db, TestServer, assert_error, wait_for};
use crate::outbound::{Receiver, fast};

crate::both_dbs!(
    a_test_event_is_delivered_whatever_the_filters,
    a_test_event_is_refused_for_inactive_or_unknown_subscriptions,
);

async fn a_test_event_is_delivered_whatever_the_filters(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let rx = Receiver::start().await;
    // Subscribed to refunds only: the test event still goes to it, and to it alone.
    let sub = s
        .post(
            "/webhook-subscriptions",
            json!({"url": rx.url(), "events": ["refund.*"]}),
        )
        .await
        .expect(201);
    let other = Receiver::start().await;
    s.post(
        "/webhook-subscriptions",
        json!({"url": other.url(), "events": ["*"]}),
    )
    .await
    .expect(201);
    let id = sub["id"].as_str().unwrap_or_default().to_string();

    let d = s
        .post_empty(&format!("/webhook-subscriptions/{id}/test"))
        .await
        .expect(202);
    assert_eq!(d["type"], "webhook-delivery");
    assert_eq!(d["event_name"], "webhook.test");
    assert_eq!(d["subscription_id"], id);
    assert_eq!(d["status"], "pending");
    let delivery_id = d["id"].as_str().unwrap_or_default().to_string();

    let got = wait_for(Duration::from_secs(20), "the test event", || async {
        rx.all().into_iter().find(|g| g.answered == 200)
    })
    .await;
    assert_eq!(got.body["name"], "webhook.test");
    assert_eq!(got.body["type"], "event");
    assert_eq!(got.body["target"]["type"], "webhook-subscription");
    assert_eq!(got.body["target"]["id"], id);
    assert!(got.body["target"].get("secret").is_none());
    assert_eq!(got.id, d["event_id"]);
    assert!(got.signature.starts_with("v1,"), "{}", got.signature);

    // In the delivery log, found by its event name; delivered.
    let delivered: Value = wait_for(Duration::from_secs(20), "delivered", || async {
        let one = s
            .get(&format!("/webhook-deliveries/{delivery_id}"))
            .await
            .expect(200);
        (one["status"] == "delivered").then_some(one)
    })
    .await;
    assert_eq!(delivered["attempt_log"][0]["status_code"], 200);
    let listed = s
        .get("/webhook-deliveries?event_name=webhook.test")
        .await
        .expect(200);
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], delivery_id.as_str());
    assert!(other.all().is_empty(), "only the endpoint tested gets it");

    // Each test is a new event.
    let again = s
        .post_empty(&format!("/webhook-subscriptions/{id}/test"))
        .await
        .expect(202);
    assert_ne!(again["event_id"], d["event_id"]);
}

async fn a_test_event_is_refused_for_inactive_or_unknown_subscriptions(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let sub = s
        .post(
            "/webhook-subscriptions",
            json!({"url": "https://shop.example/hooks", "active": false}),
        )
        .await
        .expect(201);
    let id = sub["id"].as_str().unwrap_or_default().to_string();
    let r = s
        .post_empty(&format!("/webhook-subscriptions/{id}/test"))
        .await;
    let body = assert_error(&r, 400, "bad_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("inactive"),
        "{body}"
    );
    let r = s
        .post_empty("/webhook-subscriptions/no-such-subscription/test")
        .await;
    assert_error(&r, 404, "not_found");
    let r = s
        .post(
            &format!("/webhook-subscriptions/{id}/test"),
            json!({"event": "transaction.captured"}),
        )
        .await;
    assert_error(&r, 400, "bad_request");
    let none = s
        .get("/webhook-deliveries?event_name=webhook.test")
        .await
        .expect(200);
    assert_eq!(none["items"], json!([]));
}
