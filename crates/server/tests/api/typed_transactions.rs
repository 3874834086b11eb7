//! Transactions and refunds read as typed requests and answered as typed objects (issue 24):
//! every unknown field listed, wrong types named by their full pointer, bad list parameters
//! named, and the answers' fields in the order Gr4vy's SDK has always been given them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Db, REDIRECT_URL, Resp, TestServer, assert_bad_field, assert_error};

crate::both_dbs!(
    every_unknown_field_of_a_create_is_listed,
    wrong_types_in_nested_fields_name_their_pointer,
    capture_and_refund_bodies_are_typed,
    list_parameters_are_named_when_bad,
    answers_keep_their_fields_in_order,
);

/// The `(location, pointer, message)` of every detail of a 400.
fn details(r: &Resp) -> Vec<(String, String, String)> {
    let b = assert_error(r, 400, "bad_request");
    b["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["location"].as_str().unwrap_or_default().to_string(),
                d["pointer"].as_str().unwrap_or_default().to_string(),
                d["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn nothing_created(s: &TestServer) {
    let list = s.get("/transactions").await.expect(200);
    assert_eq!(
        list["items"],
        json!([]),
        "a refused create made a transaction"
    );
}

async fn every_unknown_field_of_a_create_is_listed(db: Db) {
    let s = TestServer::start(db).await;
    let mut body = TestServer::redirect_body(1000, "authorize");
    body["bogus"] = json!(1);
    body["colour"] = json!("red");
    body["payment_method"]["no_such_field"] = json!(true);
    body["z~/"] = json!(null);
    // Listed in the body's order (`payment_method` comes before the others).
    let r = s.post("/transactions", body).await;
    let d = details(&r);
    let pointers: Vec<&str> = d.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/payment_method/no_such_field",
            "/bogus",
            "/colour",
            "/z~0~1"
        ],
        "{}",
        r.text
    );
    assert!(
        d.iter()
            .all(|(l, _, m)| l == "body" && m == "Unknown field."),
        "{d:?}"
    );
    nothing_created(&s).await;
    // Gr4vy's own create fields are still accepted (and ignored), null or not.
    let mut body = TestServer::redirect_body(1000, "authorize");
    body["cart_items"] = json!([{"name": "mug"}]);
    body["previous_scheme_transaction_id"] = json!(null);
    body["buyer"] = json!({"display_name": "Ada"});
    s.post("/transactions", body).await.expect(201);
}

/// A change made to a good create body.
type Change = Box<dyn Fn(&mut Value)>;

async fn wrong_types_in_nested_fields_name_their_pointer(db: Db) {
    let s = TestServer::start(db).await;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|b| b["payment_method"]["country"] = json!(5)),
            "/payment_method/country",
        ),
        (
            Box::new(|b| b["payment_method"]["method"] = json!(["stripe"])),
            "/payment_method/method",
        ),
        (
            Box::new(|b| b["payment_method"]["redirect_url"] = json!({"url": REDIRECT_URL})),
            "/payment_method/redirect_url",
        ),
        (Box::new(|b| b["metadata"]["k"] = json!(5)), "/metadata/k"),
        (Box::new(|b| b["intent"] = json!(5)), "/intent"),
        (
            Box::new(|b| b["integration_client"] = json!("tv")),
            "/integration_client",
        ),
        (
            Box::new(|b| b["payment_method"] = json!("stripe")),
            "/payment_method",
        ),
        (Box::new(|b| b["amount"] = json!(1e3)), "/amount"),
    ];
    for (change, pointer) in cases {
        let mut body = TestServer::redirect_body(1000, "authorize");
        change(&mut body);
        let r = s.post("/transactions", body.clone()).await;
        let d = details(&r);
        assert_eq!(d.len(), 1, "{body}: {}", r.text);
        assert_eq!(
            (d[0].0.as_str(), d[0].1.as_str()),
            ("body", pointer),
            "{body}"
        );
    }
    // A missing required field is named and "Required.".
    let mut body = TestServer::redirect_body(1000, "authorize");
    body.as_object_mut().expect("an object").remove("currency");
    let d = details(&s.post("/transactions", body).await);
    assert_eq!(d, [("body".into(), "/currency".into(), "Required.".into())]);
    nothing_created(&s).await;
}

async fn capture_and_refund_bodies_are_typed(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let id = tx["id"].as_str().expect("an id");
    let capture = format!("/transactions/{id}/capture");
    // Every unknown field at once, and a wrong type named.
    let r = s
        .post(&capture, json!({"x": 1, "y": 2, "amount": 100}))
        .await;
    let pointers: Vec<String> = details(&r).into_iter().map(|d| d.1).collect();
    assert_eq!(pointers, ["/x", "/y"]);
    let r = s.post(&capture, json!({"final": "yes"})).await;
    assert_bad_field(&r, "body", "/final");
    for amount in [json!("100"), json!(1.5), json!(1e2)] {
        let r = s.post(&capture, json!({"amount": amount})).await;
        assert_bad_field(&r, "body", "/amount");
    }
    assert_eq!(s.get_tx(id).await["status"], "authorization_succeeded");
    // Gr4vy's capture fields are accepted.
    let captured = s
        .post(
            &capture,
            json!({"amount": 300, "final": true, "airline": {"legs": []}, "tracking": null}),
        )
        .await
        .expect(200);
    assert_eq!(captured["captured_amount"], 300);
    let refunds = format!("/transactions/{id}/refunds");
    let r = s.post(&refunds, json!({"reason": 5})).await;
    assert_bad_field(&r, "body", "/reason");
    let r = s.post(&refunds, json!({"bogus": 1, "amount": "1"})).await;
    assert_eq!(
        details(&r),
        [("body".into(), "/bogus".into(), "Unknown field.".into())]
    );
    assert_eq!(s.get(&refunds).await.expect(200)["items"], json!([]));
    let refund = s
        .post(
            &refunds,
            json!({"amount": 100, "target_type": "payment-method"}),
        )
        .await
        .expect(201);
    assert_eq!(refund["amount"], 100);
    // Void, cancel and sync take no body, but any JSON object is accepted.
    let r = s
        .send(
            s.request(Method::POST, &format!("/transactions/{id}/sync"))
                .json(&json!({"anything": [1, 2]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn list_parameters_are_named_when_bad(db: Db) {
    let s = TestServer::start(db).await;
    s.create_redirect(100, "authorize").await;
    for (query, pointer) in [
        ("limit=0", "/limit"),
        ("limit=101", "/limit"),
        ("limit=ten", "/limit"),
        ("cursor=not-a-cursor", "/cursor"),
        ("status=paid", "/status"),
        ("status=processing&status[]=nope", "/status"),
        ("created_at_gte=yesterday", "/created_at_gte"),
        ("amount_eq=1.5", "/amount_eq"),
        ("has_refunds=maybe", "/has_refunds"),
        ("colour=red", "/colour"),
    ] {
        let r = s.get(&format!("/transactions?{query}")).await;
        let d = details(&r);
        assert_eq!(d.len(), 1, "{query}: {}", r.text);
        assert_eq!(
            (d[0].0.as_str(), d[0].1.as_str()),
            ("query", pointer),
            "{query}"
        );
    }
    // Good values, repeated keys and `key[]` still filter.
    let page = s
        .get("/transactions?limit=1&status=buyer_approval_pending&status[]=processing&currency[]=usd")
        .await
        .expect(200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["limit"], 1);
}

/// The keys of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

async fn answers_keep_their_fields_in_order(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(1000, "authorize").await;
    let expected = [
        "type",
        "id",
        "reconciliation_id",
        "merchant_account_id",
        "status",
        "intent",
        "intent_outcome",
        "amount",
        "currency",
        "country",
        "authorized_amount",
        "captured_amount",
        "refunded_amount",
        "settled_amount",
        "settled_currency",
        "settled",
        "external_identifier",
        "metadata",
        "customid",
        "buyer",
        "method",
        "instrument_type",
        "payment_method",
        "payment_service",
        "payment_service_transaction_id",
        "additional_identifiers",
        "extra_xids",
        "error_code",
        "raw_response_code",
        "raw_response_description",
        "session_token",
        "integration_client",
        "gift_card_redemptions",
        "disputed",
        "payment_source",
        "merchant_initiated",
        "is_subsequent_payment",
        "multi_tender",
        "account_funding_transaction",
        "pending_review",
        "approval_expires_at",
        "created_at",
        "updated_at",
        "authorized_at",
        "captured_at",
        "voided_at",
    ];
    assert_eq!(keys(&tx), expected);
    assert_eq!(
        keys(&tx["payment_method"]),
        [
            "type",
            "method",
            "mode",
            "approval_url",
            "redirect_url",
            "country",
            "currency"
        ]
    );
    assert_eq!(tx["settled_currency"], Value::Null);
    assert_eq!(tx["buyer"], Value::Null);
    assert!(
        tx["additional_identifiers"]["payment_id"].is_string(),
        "{tx}"
    );
    let id = tx["id"].as_str().expect("an id");
    let events = s
        .get(&format!("/transactions/{id}/events"))
        .await
        .expect(200);
    assert_eq!(
        keys(&events),
        ["items", "limit", "next_cursor", "previous_cursor"]
    );
    assert_eq!(
        keys(&events["items"][0]),
        [
            "type",
            "id",
            "name",
            "transaction_id",
            "created_at",
            "context"
        ]
    );
    let refunds = s
        .get(&format!("/transactions/{id}/refunds"))
        .await
        .expect(200);
    assert_eq!(
        refunds["limit"], 1,
        "an empty list's limit stays 1: {refunds}"
    );
    let canceled = s
        .post(&format!("/transactions/{id}/cancel"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        keys(&canceled),
        [
            "type",
            "status",
            "code",
            "raw_response_code",
            "raw_response_description",
            "transaction"
        ]
    );
    assert_eq!(keys(&canceled["transaction"]), expected);
}
