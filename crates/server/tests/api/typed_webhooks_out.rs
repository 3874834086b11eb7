//! Outbound webhooks read typed requests (issue 24): every unknown body field is listed at once,
//! a field of the wrong type (or null where null is not allowed) is named by its pointer, PATCH
//! tells an absent field from a null one, a bad list query value is named, and the document says
//! what the handlers read.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Db, Resp, TestServer, assert_bad_field, assert_error};

crate::both_dbs!(
    unknown_fields_are_all_listed,
    wrong_types_name_their_pointer,
    patch_tells_absent_from_null,
    bad_list_queries_name_the_parameter,
);

/// The body pointers of a 400's details, in order, each with message "Unknown field.".
#[track_caller]
fn unknown(r: &Resp) -> Vec<String> {
    let b = assert_error(r, 400, "bad_request");
    b["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            assert_eq!(d["location"], "body", "{b}");
            assert_eq!(d["message"], "Unknown field.", "{b}");
            d["pointer"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

async fn subscription(s: &TestServer) -> String {
    s.post(
        "/webhook-subscriptions",
        json!({"url": "https://merchant.example/hook", "events": ["transaction.*"], "description": "orders"}),
    )
    .await
    .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn send(s: &TestServer, method: Method, path: &str, body: Value) -> Resp {
    s.send(s.request(method, path).json(&body)).await
}

async fn count(s: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM webhook_subscriptions")
        .fetch_one(&s.pool)
        .await
        .expect("count")
}

async fn unknown_fields_are_all_listed(db: Db) {
    let s = TestServer::start(db).await;
    let r = s
        .post(
            "/webhook-subscriptions",
            json!({"url": "https://merchant.example/h", "colour": "red", "events": ["*"], "secret": "whsec_x", "retries": 3}),
        )
        .await;
    assert_eq!(unknown(&r), ["/colour", "/secret", "/retries"]);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 unknown fields")
    );
    assert_eq!(count(&s).await, 0, "nothing stored by a refused create");

    let id = subscription(&s).await;
    let before = s
        .get(&format!("/webhook-subscriptions/{id}"))
        .await
        .expect(200);
    let path = format!("/webhook-subscriptions/{id}");
    let r = send(
        &s,
        Method::PUT,
        &path,
        json!({"url": "https://merchant.example/h2", "events": ["*"], "enabled": true, "headers": {}}),
    )
    .await;
    assert_eq!(unknown(&r), ["/enabled", "/headers"]);
    let r = send(
        &s,
        Method::PATCH,
        &path,
        json!({"a": 1, "active": false, "b": null, "c~/": "x"}),
    )
    .await;
    assert_eq!(unknown(&r), ["/a", "/b", "/c~0~1"]);
    assert_eq!(s.get(&path).await.expect(200), before, "nothing changed");

    // The bodiless POSTs take none.
    let r = s
        .post(&format!("{path}/rotate-secret"), json!({"x": 1, "y": 2}))
        .await;
    assert_eq!(unknown(&r), ["/x", "/y"]);
    let r = s
        .post("/webhook-deliveries/nope/resend", json!({"force": true}))
        .await;
    assert_eq!(unknown(&r), ["/force"]);
    s.post(&format!("{path}/rotate-secret"), json!({}))
        .await
        .expect(200);
}

async fn wrong_types_name_their_pointer(db: Db) {
    let s = TestServer::start(db).await;
    let ok = "https://merchant.example/h";
    let cases = [
        (json!({"url": ok, "active": "yes"}), "/active"),
        (json!({"url": ok, "active": null}), "/active"),
        (json!({"url": ok, "events": null}), "/events"),
        (json!({"url": ok, "events": {"0": "*"}}), "/events"),
        (json!({"url": ok, "events": ["*", 5]}), "/events/1"),
        (
            json!({"url": ok, "events": ["*", "refund.*", "nope"]}),
            "/events/2",
        ),
        (json!({"url": ok, "description": 7}), "/description"),
        (
            json!({"url": ok, "description": "x".repeat(501)}),
            "/description",
        ),
        (json!({"url": null}), "/url"),
        (json!({"url": ["https://merchant.example/h"]}), "/url"),
        (
            json!({"url": format!("https://merchant.example/{}", "a".repeat(2048))}),
            "/url",
        ),
    ];
    for (body, pointer) in &cases {
        let r = s.post("/webhook-subscriptions", body.clone()).await;
        let b = assert_bad_field(&r, "body", pointer);
        assert_eq!(
            b["details"].as_array().map(Vec::len),
            Some(1),
            "{body}: {b}"
        );
    }
    let r = s
        .post(
            "/webhook-subscriptions",
            json!({"url": ok, "events": ["*", "nope"]}),
        )
        .await;
    let b = assert_bad_field(&r, "body", "/events/1");
    assert!(
        b["details"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("'nope' is not an event name or filter"),
        "{b}"
    );
    assert_eq!(count(&s).await, 0, "nothing stored by a refused create");

    let id = subscription(&s).await;
    let path = format!("/webhook-subscriptions/{id}");
    // PUT: url and events are required; null is not a value for them.
    let r = send(&s, Method::PUT, &path, json!({"url": ok})).await;
    assert_eq!(
        assert_bad_field(&r, "body", "/events")["details"][0]["message"],
        "Required."
    );
    let r = send(&s, Method::PUT, &path, json!({"events": ["*"]})).await;
    assert_bad_field(&r, "body", "/url");
    let r = send(
        &s,
        Method::PUT,
        &path,
        json!({"url": ok, "events": ["*"], "active": 1}),
    )
    .await;
    assert_bad_field(&r, "body", "/active");
    // PATCH: only present fields are read, with their types.
    for (body, pointer) in [
        (json!({"url": null}), "/url"),
        (json!({"events": null}), "/events"),
        (json!({"events": []}), "/events"),
        (json!({"events": ["transaction.*", true]}), "/events/1"),
        (json!({"active": "false"}), "/active"),
        (json!({"active": null}), "/active"),
        (json!({"description": false}), "/description"),
    ] {
        let r = send(&s, Method::PATCH, &path, body.clone()).await;
        assert_bad_field(&r, "body", pointer);
    }
    let sub = s.get(&path).await.expect(200);
    assert_eq!(
        (&sub["active"], &sub["events"], &sub["description"]),
        (&json!(true), &json!(["transaction.*"]), &json!("orders"))
    );
}

async fn patch_tells_absent_from_null(db: Db) {
    let s = TestServer::start(db).await;
    let id = subscription(&s).await;
    let path = format!("/webhook-subscriptions/{id}");
    // Absent: kept.
    let sub = send(&s, Method::PATCH, &path, json!({"active": false}))
        .await
        .expect(200);
    assert_eq!(sub["description"], "orders");
    assert_eq!(sub["events"], json!(["transaction.*"]));
    assert_eq!(sub["active"], false);
    let sub = send(&s, Method::PATCH, &path, json!({})).await.expect(200);
    assert_eq!(
        (&sub["description"], &sub["active"]),
        (&json!("orders"), &json!(false))
    );
    // Null: removed.
    let sub = send(&s, Method::PATCH, &path, json!({"description": null}))
        .await
        .expect(200);
    assert!(sub["description"].is_null(), "{sub}");
    assert_eq!(sub["active"], false);
    // Duplicate filters are kept once.
    let sub = send(
        &s,
        Method::PATCH,
        &path,
        json!({"events": ["refund.*", "refund.*", "*"], "description": "again"}),
    )
    .await
    .expect(200);
    assert_eq!(sub["events"], json!(["refund.*", "*"]));
    // PUT: what is absent takes its default.
    let sub = send(
        &s,
        Method::PUT,
        &path,
        json!({"url": "https://merchant.example/v2", "events": ["*"]}),
    )
    .await
    .expect(200);
    assert_eq!(
        (&sub["active"], &sub["description"]),
        (&json!(true), &Value::Null)
    );
    assert!(
        sub.get("secret").is_none(),
        "the secret is shown only once: {sub}"
    );
}

async fn bad_list_queries_name_the_parameter(db: Db) {
    let s = TestServer::start(db).await;
    for (path, pointer) in [
        ("/webhook-subscriptions?limit=abc", "/limit"),
        ("/webhook-subscriptions?limit=101", "/limit"),
        ("/webhook-subscriptions?limit=5&cursor=not-ours", "/cursor"),
        ("/webhook-subscriptions?status=pending", "/status"),
        ("/webhook-deliveries?limit=", "/limit"),
        ("/webhook-deliveries?limit=-1", "/limit"),
        ("/webhook-deliveries?status=pending&status=lost", "/status"),
        ("/webhook-deliveries?status[]=dead&status[]=gone", "/status"),
        ("/webhook-deliveries?event_name=refund.*", "/event_name"),
        ("/webhook-deliveries?event_id=evt_1&colour=red", "/colour"),
    ] {
        let b = assert_bad_field(&s.get(path).await, "query", pointer);
        assert_eq!(
            b["details"].as_array().map(Vec::len),
            Some(1),
            "{path}: {b}"
        );
    }
    let b = assert_bad_field(
        &s.get("/webhook-deliveries?status=lost").await,
        "query",
        "/status",
    );
    assert_eq!(
        b["details"][0]["message"],
        "'lost' is not a delivery status (pending, failed, delivered, dead)."
    );
    // Good values, repeated and `key[]` forms, an empty cursor; the last of a repeated
    // single-valued parameter wins.
    for path in [
        "/webhook-deliveries?status=pending&status[]=dead&event_name=refund.succeeded&limit=3&limit=7&cursor=",
        "/webhook-deliveries?subscription_id=x&event_id=evt_1",
        "/webhook-subscriptions?limit=100",
    ] {
        let page = s.get(path).await.expect(200);
        assert_eq!(page["items"], json!([]), "{path}");
        assert!(page["next_cursor"].is_null() && page["previous_cursor"].is_null());
    }
    let page = s
        .get("/webhook-deliveries?limit=3&limit=7")
        .await
        .expect(200);
    assert_eq!(page["limit"], 7);
}
