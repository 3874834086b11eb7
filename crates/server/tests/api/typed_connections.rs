//! The typed contract of connections, webhook events and reconcile: every unknown body field is
//! listed at once, a value of the wrong type is named by its pointer, the webhook-events query
//! names a bad value, a PATCH tells a `null` secret from an absent one, and the served document
//! describes the request bodies as the server reads them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Db, Resp, TestServer, assert_bad_field, assert_error};

crate::both_dbs!(
    unknown_fields_are_all_listed,
    wrong_types_name_their_pointer,
    webhook_events_query_names_a_bad_value,
    null_secret_on_the_sandbox_is_not_absent,
    secrets_are_never_echoed,
    document_describes_the_bodies
);

const SK: &str = "sk_test_typedconnection4242";

async fn sandbox_id(s: &TestServer) -> String {
    s.get("/connections").await.expect(200)["items"][0]["id"]
        .as_str()
        .expect("the sandbox connection")
        .to_string()
}

/// The `(pointer, message)` of every detail of a 400.
fn details(r: &Resp) -> Vec<(String, String)> {
    let b = assert_error(r, 400, "bad_request");
    assert!(
        b["details"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["location"] == "body")),
        "{b}"
    );
    b["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["pointer"].as_str().unwrap_or_default().to_string(),
                d["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn unknown(pointers: &[&str]) -> Vec<(String, String)> {
    pointers
        .iter()
        .map(|p| (p.to_string(), "Unknown field.".to_string()))
        .collect()
}

async fn unknown_fields_are_all_listed(db: Db) {
    let s = TestServer::start(db).await;
    let id = sandbox_id(&s).await;

    let r = s
        .post(
            "/connections",
            json!({"secret_key": SK, "colour": "red", "display_name": "A", "webhook": {"url": "x"}}),
        )
        .await;
    // Both unknown fields, in one answer (the first one alone was named before).
    assert_eq!(details(&r), unknown(&["/colour", "/webhook"]), "{}", r.text);
    assert_eq!(
        s.get("/connections").await.expect(200)["items"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "nothing was created"
    );

    let r = s
        .send(
            s.request(Method::PATCH, &format!("/connections/{id}"))
                .json(&json!({"display_name": "Renamed", "a": 1, "b~/": null})),
        )
        .await;
    assert_eq!(details(&r), unknown(&["/a", "/b~0~1"]), "{}", r.text);
    assert_ne!(
        s.get(&format!("/connections/{id}")).await.expect(200)["display_name"],
        "Renamed",
        "nothing was changed"
    );

    // Reconcile and replay bodies too.
    let r = s
        .post(
            &format!("/connections/{id}/sync"),
            json!({"since": 0, "until": 1, "full": true}),
        )
        .await;
    assert_eq!(details(&r), unknown(&["/until", "/full"]), "{}", r.text);
    let r = s
        .post(
            "/webhook-events/0193b0e4-6f5c-7a9e-9c1d-3f1e2d4c5b6a/replay",
            json!({"x": 1, "y": 2}),
        )
        .await;
    assert_eq!(details(&r), unknown(&["/x", "/y"]), "{}", r.text);
}

async fn wrong_types_name_their_pointer(db: Db) {
    let s = TestServer::start(db).await;
    let id = sandbox_id(&s).await;
    for (body, pointer) in [
        (json!({"secret_key": 42}), "/secret_key"),
        (
            json!({"secret_key": SK, "display_name": ["a"]}),
            "/display_name",
        ),
        (json!({"secret_key": SK, "default": "yes"}), "/default"),
        (
            json!({"secret_key": SK, "previous_webhook_secret_expires_in": "60"}),
            "/previous_webhook_secret_expires_in",
        ),
        (
            json!({"secret_key": SK, "previous_webhook_secret_expires_in": 1.5}),
            "/previous_webhook_secret_expires_in",
        ),
    ] {
        let r = s.post("/connections", body.clone()).await;
        let d = details(&r);
        assert_eq!(d.len(), 1, "{body}: {}", r.text);
        assert_eq!(d[0].0, pointer, "{body}: {}", r.text);
    }
    for (body, pointer) in [
        (json!({"default": 1}), "/default"),
        (json!({"api_version": {"v": 1}}), "/api_version"),
    ] {
        let r = s
            .send(
                s.request(Method::PATCH, &format!("/connections/{id}"))
                    .json(&body),
            )
            .await;
        assert_bad_field(&r, "body", pointer);
    }
    // `since` is unix seconds or RFC 3339 text: other JSON types are named, with the words a
    // person can act on.
    for since in [json!(true), json!([1]), json!(-1), json!("yesterday")] {
        let r = s
            .post(
                &format!("/connections/{id}/sync"),
                json!({ "since": since }),
            )
            .await;
        let b = assert_bad_field(&r, "body", "/since");
        assert!(
            b["details"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("unix seconds") && m.contains("RFC 3339")),
            "{since}: {b}"
        );
    }
}

async fn webhook_events_query_names_a_bad_value(db: Db) {
    let s = TestServer::start(db).await;
    for (query, pointer) in [
        ("limit=abc", "/limit"),
        ("limit=0", "/limit"),
        ("limit=101", "/limit"),
        ("status=received&status=nope", "/status"),
        ("status[]=applied&status[]=nope", "/status"),
        ("cursor=not-a-cursor", "/cursor"),
        ("colour=red", "/colour"),
    ] {
        let r = s.get(&format!("/webhook-events?{query}")).await;
        assert_bad_field(&r, "query", pointer);
    }
    let r = s.get("/webhook-events?status=nope").await;
    let b = assert_bad_field(&r, "query", "/status");
    assert_eq!(
        b["details"][0]["message"],
        "'nope' is not one of received, applied, ignored, failed, dead."
    );
    let page = s
        .get("/webhook-events?status=received&status[]=dead&limit=5&type=x")
        .await
        .expect(200);
    assert_eq!(
        page,
        json!({"items": [], "limit": 5, "next_cursor": null, "previous_cursor": null})
    );
}

/// `{"secret_key": null}` names the key on the sandbox connection, whose keys the server
/// manages: a 400, as before, where leaving it out changes nothing.
async fn null_secret_on_the_sandbox_is_not_absent(db: Db) {
    let s = TestServer::start(db).await;
    let id = sandbox_id(&s).await;
    let path = format!("/connections/{id}");
    for body in [json!({"secret_key": null}), json!({"webhook_secret": null})] {
        let r = s.send(s.request(Method::PATCH, &path).json(&body)).await;
        let b: Value = assert_error(&r, 400, "bad_request");
        assert!(
            b["message"]
                .as_str()
                .is_some_and(|m| m.contains("managed by the server")),
            "{body}: {b}"
        );
    }
    let c = s
        .send(
            s.request(Method::PATCH, &path).json(
                &json!({"display_name": "Sandbox", "previous_webhook_secret_expires_in": null}),
            ),
        )
        .await
        .expect(200);
    assert_eq!(c["display_name"], "Sandbox");
    assert_eq!(c["sandbox"], true);
}

/// The connection shows secrets masked, never as sent; `null` where there is none.
async fn secrets_are_never_echoed(db: Db) {
    let s = TestServer::start(db).await;
    let c = s
        .post(
            "/connections",
            json!({"secret_key": SK, "publishable_key": "pk_test_typed4242"}),
        )
        .await
        .expect(201);
    assert_eq!(c["status"], "awaiting_webhook_secret");
    assert_eq!(c["webhook_secret"], Value::Null);
    let id = c["id"].as_str().unwrap().to_string();
    let c = s
        .send(
            s.request(Method::PATCH, &format!("/connections/{id}"))
                .json(&json!({"webhook_secret": "whsec_typedsecret4242"})),
        )
        .await
        .expect(200);
    assert_eq!(c["status"], "active");
    let text = c.to_string();
    assert!(!text.contains("typedconnection"), "{text}");
    assert!(!text.contains("typedsecret"), "{text}");
    assert!(
        c["webhook_secret"]
            .as_str()
            .is_some_and(|w| w.ends_with("4242"))
    );
    // Every field of the object, in its order.
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "type",
            "id",
            "merchant_account_id",
            "kind",
            "display_name",
            "status",
            "secret_key",
            "publishable_key",
            "webhook_secret",
            "has_previous_webhook_secret",
            "previous_webhook_secret_expires_at",
            "stripe_account",
            "api_version",
            "webhook_url",
            "default",
            "sandbox",
            "created_at",
            "updated_at",
        ]
    );
}

/// The request bodies are documented closed (unknown fields are refused), with the types the
/// server reads, and the operations answer what they say.
async fn document_describes_the_bodies(db: Db) {
    let s = TestServer::start(db).await;
    let doc = s.get("/openapi.json").await.expect(200);
    let schemas = &doc["components"]["schemas"];
    for name in [
        "ConnectionCreate",
        "ConnectionUpdate",
        "SyncRequest",
        "NoFields",
    ] {
        assert_eq!(
            schemas[name]["additionalProperties"], false,
            "{name}: {}",
            schemas[name]
        );
    }
    assert_eq!(
        schemas["ConnectionCreate"]["required"],
        json!(["secret_key"])
    );
    let paths = &doc["paths"];
    for (path, method, status) in [
        ("/connections", "post", "201"),
        ("/connections/{id}", "patch", "200"),
        ("/connections/{id}", "delete", "409"),
        ("/connections/{id}/verify", "post", "502"),
        ("/connections/{id}/sync", "post", "504"),
        ("/webhook-events", "get", "400"),
        ("/webhook-events/{id}/replay", "post", "404"),
        ("/webhooks/stripe/{connection_id}", "post", "413"),
        ("/readyz", "get", "503"),
    ] {
        assert!(
            paths[path][method]["responses"][status].is_object(),
            "{method} {path} {status}: {}",
            paths[path][method]
        );
    }
    assert_eq!(
        paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"]["schema"]["type"],
        "string"
    );
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/webhooks/stripe/{connection_id}",
    ] {
        let op = paths[path].as_object().unwrap().values().next().unwrap();
        assert_eq!(op["security"], json!([{}]), "{path} is public");
    }
}
