//! The entitlements API's typed contract (issue 24): bodies read as Rust types list every
//! unknown field at once, a field of the wrong type is named by its pointer, bad query values
//! of the permission check and the history are named, and the served document carries the
//! check's conditional and rate-limit answers.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;

use crate::common::{Db, Resp, TestServer, assert_bad_field};

crate::both_dbs!(
    every_unknown_field_is_listed,
    a_wrong_type_names_its_pointer,
    absent_and_null_differ_where_they_should,
    bad_query_values_are_named,
    the_document_derives_the_check,
);

/// The `(location, pointer)` of every detail of a 400, each "Unknown field.".
fn unknown(r: &Resp) -> Vec<String> {
    let b = crate::common::assert_error(r, 400, "bad_request");
    b["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["message"], "Unknown field.", "{b}");
            assert_eq!(d["location"], "body", "{b}");
            d["pointer"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn patch(s: &TestServer, path: &str, body: Value) -> Resp {
    s.send(s.request(Method::PATCH, path).json(&body)).await
}

async fn every_unknown_field_is_listed(db: Db) {
    let s = TestServer::start(db).await;
    let r = s
        .post(
            "/v1/skus",
            json!({"identifier": "pro", "product_id": "prod_1", "kind": "one_time",
                   "colour": 1, "size": "xl", "shade": null}),
        )
        .await;
    assert_eq!(unknown(&r), ["/colour", "/size", "/shade"]);
    assert_eq!(
        s.get("/v1/skus").await.expect(200)["items"],
        json!([]),
        "nothing was made"
    );

    s.post(
        "/v1/skus",
        json!({"identifier": "pro", "product_id": "prod_1", "kind": "one_time"}),
    )
    .await
    .expect(201);
    let r = patch(
        &s,
        "/v1/skus/pro",
        json!({"product_id": "prod_2", "price": 5, "name": "Pro"}),
    )
    .await;
    assert_eq!(unknown(&r), ["/price", "/name"]);
    assert_eq!(
        s.get("/v1/skus/pro").await.expect(200)["product_id"],
        "prod_1"
    );

    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["pro"]}),
    )
    .await
    .expect(201);
    let r = patch(
        &s,
        "/v1/permissions/definitions/premium",
        json!({"skus": [], "sku": "pro", "label": "Premium"}),
    )
    .await;
    assert_eq!(unknown(&r), ["/sku", "/label"]);
    assert_eq!(
        s.get("/v1/permissions/definitions/premium")
            .await
            .expect(200)["skus"],
        json!(["pro"])
    );

    let r = patch(
        &s,
        "/v1/entitlements/settings",
        json!({"grace_days": 3, "grace": 3, "leeway": 1}),
    )
    .await;
    assert_eq!(unknown(&r), ["/grace", "/leeway"]);
    let r = s
        .post(
            "/v1/connect_stripe",
            json!({"customid": "u1", "customerid": "cus_1", "email": "a@b.c", "name": "A"}),
        )
        .await;
    assert_eq!(unknown(&r), ["/email", "/name"]);
    let r = s
        .post(
            "/v1/subscribers/u1/grants",
            json!({"permission": "premium", "reason": "x", "until": 1, "by": "me"}),
        )
        .await;
    assert_eq!(unknown(&r), ["/until", "/by"]);
}

async fn a_wrong_type_names_its_pointer(db: Db) {
    let s = TestServer::start(db).await;
    let cases: Vec<(Method, &str, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/skus",
            json!({"identifier": 5, "product_id": "prod_1", "kind": "one_time"}),
            "/identifier",
        ),
        (
            Method::POST,
            "/v1/skus",
            json!({"identifier": "a", "product_id": ["prod_1"], "kind": "one_time"}),
            "/product_id",
        ),
        (
            Method::POST,
            "/v1/skus",
            json!({"identifier": "a", "product_id": "prod_1"}),
            "/kind",
        ),
        (
            Method::POST,
            "/v1/connect_stripe",
            json!({"customid": "u1", "customerid": "cus_1", "force": "yes"}),
            "/force",
        ),
        (
            Method::PATCH,
            "/v1/entitlements/settings",
            json!({"grace_days": "3"}),
            "/grace_days",
        ),
        (
            Method::PATCH,
            "/v1/entitlements/settings",
            json!({"renewal_leeway_secs": 1.5}),
            "/renewal_leeway_secs",
        ),
        (
            Method::PATCH,
            "/v1/entitlements/settings",
            json!({"revoke_on_fraud_warning": 1}),
            "/revoke_on_fraud_warning",
        ),
        (
            Method::POST,
            "/v1/subscribers/u1/grants",
            json!({"permission": {"id": "premium"}, "reason": "x"}),
            "/permission",
        ),
    ];
    for (method, path, body, pointer) in cases {
        let r = s.send(s.request(method.clone(), path).json(&body)).await;
        assert_bad_field(&r, "body", pointer);
    }
}

/// `grace_days: null` means "while Stripe retries" (not "unchanged"); the renewal leeway has
/// no null; other fields' null leaves them as they are.
async fn absent_and_null_differ_where_they_should(db: Db) {
    let s = TestServer::start(db).await;
    let set = patch(
        &s,
        "/v1/entitlements/settings",
        json!({"grace_days": 3, "revoke_on_dispute": "opened"}),
    )
    .await
    .expect(200);
    assert_eq!(set["grace_days"], 3);
    let kept = patch(
        &s,
        "/v1/entitlements/settings",
        json!({"revoke_on_dispute": null}),
    )
    .await
    .expect(200);
    assert_eq!(
        (&kept["grace_days"], &kept["revoke_on_dispute"]),
        (&json!(3), &json!("opened"))
    );
    let cleared = patch(&s, "/v1/entitlements/settings", json!({"grace_days": null}))
        .await
        .expect(200);
    assert_eq!(cleared["grace_days"], Value::Null);
    assert_bad_field(
        &patch(
            &s,
            "/v1/entitlements/settings",
            json!({"renewal_leeway_secs": null}),
        )
        .await,
        "body",
        "/renewal_leeway_secs",
    );
}

async fn bad_query_values_are_named(db: Db) {
    let s = TestServer::start(db).await;
    let public = s.bound_key(KeyKind::Public, "default").await;
    let check = |q: &str| {
        s.http
            .get(s.url(&format!("/v1/permissions{q}")))
            .bearer_auth(&public)
    };
    s.send(check("?customid=user-7")).await.expect(200);
    assert_bad_field(&s.send(check("")).await, "query", "/customid");
    assert_bad_field(&s.send(check("?customid=")).await, "query", "/customid");
    // `at` with a secret key: a moment it cannot read, or none at all, is named.
    for at in ["yesterday", ""] {
        let r = s
            .get(&format!("/v1/permissions?customid=user-7&at={at}"))
            .await;
        assert_bad_field(&r, "query", "/at");
    }
    s.get("/v1/permissions?customid=user-7&at=2026-01-01T00:00:00Z")
        .await
        .expect(200);

    let history = "/v1/subscribers/user-7/history";
    s.get(history).await.expect(200);
    for q in ["limit=0", "limit=101", "limit=abc", "limit="] {
        assert_bad_field(&s.get(&format!("{history}?{q}")).await, "query", "/limit");
    }
    assert_bad_field(
        &s.get(&format!("{history}?cursor=not-ours")).await,
        "query",
        "/cursor",
    );
    let page = s
        .get(&format!("{history}?limit=5&cursor="))
        .await
        .expect(200);
    assert_eq!(page["limit"], 5);
}

async fn the_document_derives_the_check(db: Db) {
    let s = TestServer::start(db).await;
    let doc = s.get("/openapi.json").await.expect(200);
    let check = &doc["paths"]["/v1/permissions"]["get"];
    assert_eq!(check["operationId"], "check_permissions");
    let responses = &check["responses"];
    assert!(responses["200"]["headers"]["ETag"].is_object(), "{check}");
    assert!(responses["304"]["headers"]["ETag"].is_object(), "{check}");
    assert!(
        responses["429"]["headers"]["Retry-After"].is_object(),
        "{check}"
    );
    let names: Vec<&str> = check["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["customid", "at", "If-None-Match", "X-Customer-Token"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // The Glassfy permission keeps its field names, every one of them always written.
    let permission = &doc["components"]["schemas"]["Permission"];
    let mut required: Vec<&str> = permission["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort();
    assert_eq!(
        required,
        [
            "entitlement",
            "expires_at",
            "expires_date",
            "identifier",
            "is_valid",
            "skuarray"
        ]
    );
}
