//! Stripe webhooks in (SPEC §4): the sandbox's real, signed deliveries move transactions
//! without a sync; forged, altered, stale, future, oversized and foreign events change
//! nothing; a rotated secret keeps verifying; accepted events go through the durable inbox
//! (deduplicated, applied by workers, dead-lettered, replayable, listable); payloads of old
//! API versions are understood; reconcile applies what webhooks missed.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_server::clock::Clock;
use tollgate_stripe::signature;

use crate::common::{Db, TestServer, assert_bad_field, assert_error, now_ms, wait_for};

crate::both_dbs!(
    sandbox_deliveries_drive_transactions,
    signatures_are_checked,
    foreign_account_events_are_ignored,
    another_merchants_event_changes_nothing,
    old_api_versions_are_understood,
    failing_events_are_dead_lettered_and_replayable,
    the_inbox_is_listable,
    sync_applies_what_webhooks_missed,
    a_deleted_connection_refuses_at_once,
    a_replaced_secret_stops_verifying_when_it_expires,
    a_connection_with_only_events_can_be_deleted,
    one_failing_read_holds_back_no_other_event,
    the_server_vacuums_and_analyzes_postgres_tables
);

const SECRET: &str = "whsec_testsecret1234567890";

async fn sandbox_deliveries_drive_transactions(db: Db) {
    let s = TestServer::start_with_webhooks(db).await;
    let tx = s.create_redirect(1500, "authorize").await;
    s.approve(&tx, "pm_card_visa").await.expect(200);
    // No sync: the sandbox's signed `payment_intent.amount_capturable_updated` does it.
    let id = tx["id"].as_str().unwrap().to_string();
    let got = wait_for(Duration::from_secs(10), "the webhook to apply", || async {
        let t = s.get_tx(&id).await;
        (t["status"] == "authorization_succeeded").then_some(t)
    })
    .await;
    assert_eq!(got["authorized_amount"], 1500);
}

/// A server whose "live" Stripe is its own sandbox, a connection with a known webhook secret
/// and a transaction on it, approved at the sandbox (not yet synced).
async fn setup(db: Db) -> (TestServer, String, Value, Value) {
    let s = TestServer::start_with(db, |c| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
    })
    .await;
    let conn_id = connection(&s, "webhooktests1234").await;
    let mut body = TestServer::redirect_body(900, "authorize");
    body["payment_service_id"] = json!(conn_id);
    let tx = s.post("/transactions", body).await.expect(201);
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let pi = s
        .stripe_get(&format!(
            "/v1/payment_intents/{}",
            tx["additional_identifiers"]["payment_id"].as_str().unwrap()
        ))
        .await;
    let event = json!({"id": "evt_test_1", "object": "event", "api_version": "2026-10-28.endive",
                       "created": now_ms() / 1000, "type": "payment_intent.amount_capturable_updated",
                       "data": {"object": pi}, "livemode": false, "pending_webhooks": 1,
                       "request": {"id": null, "idempotency_key": null}});
    (s, conn_id, tx, event)
}

/// A new connection with keys `sk_test_{keys}` / `pk_test_{keys}` and webhook secret
/// [`SECRET`]: its id.
async fn connection(s: &TestServer, keys: &str) -> String {
    let conn = s
        .post(
            "/connections",
            json!({"secret_key": format!("sk_test_{keys}"), "publishable_key": format!("pk_test_{keys}"),
                   "webhook_secret": SECRET}),
        )
        .await
        .expect(201);
    conn["id"].as_str().unwrap().to_string()
}

async fn send(
    s: &TestServer,
    conn_id: &str,
    body: &[u8],
    header: Option<String>,
) -> crate::common::Resp {
    let mut rb = s
        .http
        .post(s.url(&format!("/webhooks/stripe/{conn_id}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(h) = header {
        rb = rb.header("stripe-signature", h);
    }
    s.send(rb).await
}

async fn signatures_are_checked(db: Db) {
    let (s, conn_id, tx, event) = setup(db).await;
    let body = serde_json::to_vec(&event).unwrap();
    let now = now_ms() / 1000;
    let before = s.db_snapshot().await;
    let refused = [
        None,
        Some(signature::header(&["whsec_wrong"], now, &body)),
        Some(format!(
            "t={now},v0={}",
            signature::sign(SECRET, now, &body)
        )),
        Some(signature::header(&[SECRET], now - 1000, &body)),
        Some(signature::header(&[SECRET], now + 1000, &body)),
        Some("garbage".to_string()),
    ];
    for header in refused {
        let r = send(&s, &conn_id, &body, header.clone()).await;
        assert_eq!(r.status, 400, "{header:?}: {}", r.text);
        assert_eq!(r.body["type"], "error");
    }
    // One byte changed: the signature no longer matches.
    let mut altered = body.clone();
    let at = altered.iter().position(|b| *b == b'9').unwrap();
    altered[at] = b'8';
    let r = send(
        &s,
        &conn_id,
        &altered,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &s,
        "no-such-connection",
        &body,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400);
    // A connection still awaiting its webhook secret refuses every event.
    let waiting = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_nosecretyet12345"}),
        )
        .await
        .expect(201);
    assert_eq!(waiting["status"], "awaiting_webhook_secret");
    let r = send(
        &s,
        waiting["id"].as_str().unwrap(),
        &body,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let not_event = br#"{"hello": "world"}"#;
    let r = send(
        &s,
        &conn_id,
        not_event,
        Some(signature::header(&[SECRET], now, not_event)),
    )
    .await;
    assert_eq!(r.status, 400);
    // Not JSON (signed all the same).
    let r = send(
        &s,
        &conn_id,
        b"not json",
        Some(signature::header(&[SECRET], now, b"not json")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // Re-serialised: the same JSON with other bytes no longer matches the signature.
    let reserialised = serde_json::to_vec_pretty(&event).unwrap();
    let r = send(
        &s,
        &conn_id,
        &reserialised,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400);
    // Over 1 MiB: 413 in the error envelope.
    let mut big = event.clone();
    big["data"]["object"]["metadata"]["padding"] = json!("x".repeat(1024 * 1024));
    let big = serde_json::to_vec(&big).unwrap();
    let big_header = signature::header(&[SECRET], now, &big);
    let r = s
        .send_oversized(|| {
            s.http
                .post(s.url(&format!("/webhooks/stripe/{conn_id}")))
                .header("content-type", "application/json")
                .header("stripe-signature", big_header.clone())
                .body(big.clone())
        })
        .await;
    assert_error(&r, 413, "bad_request");
    assert_eq!(
        s.db_snapshot().await,
        before,
        "refused events change nothing"
    );
    // Any of several v1 signatures may match.
    let two = format!(
        "t={now},v1={},v1={}",
        signature::sign("whsec_other", now, &body),
        signature::sign(SECRET, now, &body)
    );
    let r = send(&s, &conn_id, &body, Some(two)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["duplicate"], false);
    let id = tx["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), "the event to apply", || async {
        (s.get_tx(&id).await["status"] == "authorization_succeeded").then_some(())
    })
    .await;

    // Rotation: the previous secret still verifies.
    let rb = s
        .request(reqwest::Method::PATCH, &format!("/connections/{conn_id}"))
        .json(&json!({"webhook_secret": "whsec_rotated0987654321"}));
    s.send(rb).await.expect(200);
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A duplicate (signed with the new secret) answers 200 and is not stored or applied again.
    assert_eq!(r.body["duplicate"], true, "{}", r.text);
    let settled = s.db_snapshot().await;
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&["whsec_rotated0987654321"], now, &body)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.db_snapshot().await, settled);
    assert_eq!(settled.inbox, 1);
    let rows = s
        .get("/webhook-events?stripe_event_id=evt_test_1")
        .await
        .expect(200);
    assert_eq!(rows["items"].as_array().unwrap().len(), 1);
    assert_eq!(rows["items"][0]["status"], "applied");
    assert_eq!(rows["items"][0]["attempts"], 1);
}

async fn foreign_account_events_are_ignored(db: Db) {
    let (s, conn_id, tx, mut event) = setup(db).await;
    event["account"] = json!("acct_someoneelse");
    let body = serde_json::to_vec(&event).unwrap();
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&[SECRET], now_ms() / 1000, &body)),
    )
    .await;
    assert_eq!(r.status, 200);
    // Stored, then marked ignored; the transaction does not move.
    let row = wait_for(
        Duration::from_secs(10),
        "the event to be ignored",
        || async {
            let rows = s.get("/webhook-events?status=ignored").await.expect(200);
            rows["items"].as_array().unwrap().first().cloned()
        },
    )
    .await;
    assert_eq!(row["stripe_account"], "acct_someoneelse");
    // The note names both accounts: the event's and the connection's.
    let note = row["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("Stripe account acct_someoneelse") && note.contains("the platform account"),
        "{note}"
    );
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["status"],
        "buyer_approval_pending"
    );
}

/// Signs `event` with `secret` and sends it to connection `conn_id`; asserts 200.
async fn deliver(s: &TestServer, conn_id: &str, secret: &str, event: &Value) -> Value {
    let body = serde_json::to_vec(event).unwrap();
    let r = send(
        s,
        conn_id,
        &body,
        Some(signature::header(&[secret], now_ms() / 1000, &body)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn event_of(id: &str, kind: &str, version: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "api_version": version, "created": now_ms() / 1000,
           "type": kind, "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
           "request": {"id": null, "idempotency_key": null}})
}

/// The inbox row of Stripe event `evt`, once it is no longer waiting.
async fn settled(s: &TestServer, evt: &str) -> Value {
    wait_for(Duration::from_secs(15), "the event to settle", || async {
        let rows = s
            .get(&format!("/webhook-events?stripe_event_id={evt}"))
            .await
            .expect(200);
        rows["items"]
            .as_array()
            .unwrap()
            .first()
            .filter(|r| r["status"] != "received")
            .cloned()
    })
    .await
}

/// Merchant B's connection receives a validly signed event about merchant A's PaymentIntent
/// naming A's transaction in its metadata: it is stored for B and ignored; nothing of A moves.
async fn another_merchants_event_changes_nothing(db: Db) {
    let (s, _conn_a, tx, event) = setup(db).await;
    let key_b = s.merchant_account("merchant-b").await;
    let rb = s
        .http
        .post(s.url("/connections"))
        .bearer_auth(&key_b)
        .json(&json!({"secret_key": "sk_test_merchantb12345678", "webhook_secret": "whsec_merchantb_secret"}));
    let conn_b = s.send(rb).await.expect(201);
    let conn_b = conn_b["id"].as_str().unwrap();
    let before = s.db_snapshot().await;
    let mut event = event;
    event["id"] = json!("evt_from_b");
    assert_eq!(
        event["data"]["object"]["metadata"]["tollgate_transaction_id"], tx["id"],
        "the payload names A's transaction"
    );
    deliver(&s, conn_b, "whsec_merchantb_secret", &event).await;
    let rb = s
        .http
        .get(s.url("/webhook-events?stripe_event_id=evt_from_b"))
        .bearer_auth(&key_b);
    let row = wait_for(Duration::from_secs(10), "B's event to settle", || async {
        let rows = s.send(rb.try_clone().unwrap()).await.expect(200);
        rows["items"]
            .as_array()
            .unwrap()
            .first()
            .filter(|r| r["status"] != "received")
            .cloned()
    })
    .await;
    assert_eq!(row["status"], "ignored", "{row}");
    // A's key does not see B's inbox.
    let mine = s
        .get("/webhook-events?stripe_event_id=evt_from_b")
        .await
        .expect(200);
    assert_eq!(mine["items"].as_array().unwrap().len(), 0, "{mine}");
    let after = s.db_snapshot().await;
    assert_eq!(
        after.transactions, before.transactions,
        "A's transaction did not move"
    );
    assert_eq!(after.events, before.events);
}

/// The shapes of 2020-08-27 (`payment_intent.charges` embedded, `charge.refunds` expanded),
/// 2022-11-15 (`latest_charge`) and the current version move transactions alike.
async fn old_api_versions_are_understood(db: Db) {
    let (s, conn_id, _tx, _event) = setup(db).await;
    for (n, version) in ["2020-08-27", "2022-11-15", "2026-10-28.endive"]
        .into_iter()
        .enumerate()
    {
        let mut body = TestServer::redirect_body(2000, "authorize");
        body["payment_service_id"] = json!(conn_id);
        let tx = s.post("/transactions", body).await.expect(201);
        let id = tx["id"].as_str().unwrap().to_string();
        let pi_id = tx["additional_identifiers"]["payment_id"]
            .as_str()
            .unwrap()
            .to_string();
        s.approve(&tx, "pm_card_visa").await.expect(200);
        let pi = s
            .stripe_get(&format!(
                "/v1/payment_intents/{pi_id}?expand[]=latest_charge"
            ))
            .await;
        let charge = pi["latest_charge"].clone();
        let shaped = |mut pi: Value| -> Value {
            if version == "2020-08-27" {
                let lc = pi["latest_charge"].clone();
                pi.as_object_mut().unwrap().remove("latest_charge");
                pi["charges"] = json!({"object": "list", "data": [lc], "has_more": false,
                                       "url": format!("/v1/charges?payment_intent={pi_id}")});
            } else {
                pi["latest_charge"] = json!(charge["id"]);
            }
            pi
        };
        deliver(
            &s,
            &conn_id,
            SECRET,
            &event_of(
                &format!("evt_auth_{n}"),
                "payment_intent.amount_capturable_updated",
                version,
                shaped(pi),
            ),
        )
        .await;
        assert_eq!(
            settled(&s, &format!("evt_auth_{n}")).await["status"],
            "applied"
        );
        assert_eq!(
            s.get_tx(&id).await["status"],
            "authorization_succeeded",
            "{version}"
        );

        // Captured and partly refunded at Stripe behind Tollgate's back.
        s.stripe_post(
            &format!("/v1/payment_intents/{pi_id}/capture"),
            &[] as &[(&str, &str)],
        )
        .await;
        s.stripe_post(
            "/v1/refunds",
            &[("payment_intent", pi_id.as_str()), ("amount", "500")],
        )
        .await;
        let pi = s
            .stripe_get(&format!(
                "/v1/payment_intents/{pi_id}?expand[]=latest_charge"
            ))
            .await;
        deliver(
            &s,
            &conn_id,
            SECRET,
            &event_of(
                &format!("evt_cap_{n}"),
                "payment_intent.succeeded",
                version,
                shaped(pi),
            ),
        )
        .await;
        let mut ch = s
            .stripe_get(&format!(
                "/v1/charges/{}?expand[]=refunds",
                charge["id"].as_str().unwrap()
            ))
            .await;
        if version != "2020-08-27" {
            ch.as_object_mut().unwrap().remove("refunds");
        } else {
            assert_eq!(
                ch["refunds"]["data"].as_array().map(Vec::len),
                Some(1),
                "{ch}"
            );
        }
        deliver(
            &s,
            &conn_id,
            SECRET,
            &event_of(&format!("evt_ref_{n}"), "charge.refunded", version, ch),
        )
        .await;
        settled(&s, &format!("evt_ref_{n}")).await;
        let t = s.get_tx(&id).await;
        assert_eq!(t["status"], "capture_succeeded", "{version}: {t}");
        assert_eq!(t["captured_amount"], 2000, "{version}");
        assert_eq!(
            t["refunded_amount"], 500,
            "{version}: cumulative, from the charge"
        );
    }
}

/// An event whose handler keeps failing is retried with backoff, then dead-lettered; after the
/// cause is fixed, a replay applies it.
async fn failing_events_are_dead_lettered_and_replayable(db: Db) {
    let s = TestServer::start_with(db, |c| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
        c.inbox_max_attempts = 3;
        c.inbox_retry_base_ms = 30;
    })
    .await;
    let conn = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_webhooktests1234", "webhook_secret": SECRET}),
        )
        .await
        .expect(201);
    let conn_id = conn["id"].as_str().unwrap();
    let mut body = TestServer::redirect_body(700, "authorize");
    body["payment_service_id"] = json!(conn_id);
    let tx = s.post("/transactions", body).await.expect(201);
    let id = tx["id"].as_str().unwrap();
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let pi = s
        .stripe_get(&format!(
            "/v1/payment_intents/{}",
            tx["additional_identifiers"]["payment_id"].as_str().unwrap()
        ))
        .await;
    // Break the stored state so applying fails (as a bug or a bad migration would).
    let good: String = sqlx::query_scalar("SELECT state FROM transactions WHERE id = $1")
        .bind(id)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE transactions SET state = 'broken' WHERE id = $1")
        .bind(id)
        .execute(&s.pool)
        .await
        .unwrap();
    deliver(
        &s,
        conn_id,
        SECRET,
        &event_of(
            "evt_dead",
            "payment_intent.amount_capturable_updated",
            "2026-10-28.endive",
            pi,
        ),
    )
    .await;
    let row = wait_for(Duration::from_secs(15), "the event to die", || async {
        let rows = s.get("/webhook-events?status=dead").await.expect(200);
        rows["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(row["stripe_event_id"], "evt_dead");
    assert_eq!(row["attempts"], 3, "{row}");
    assert!(row["note"].as_str().unwrap_or_default().len() > 3, "{row}");
    let row_id = row["id"].as_str().unwrap();
    let full = s
        .get(&format!("/webhook-events/{row_id}"))
        .await
        .expect(200);
    assert_eq!(full["payload"]["id"], "evt_dead");
    sqlx::query("UPDATE transactions SET state = $1 WHERE id = $2")
        .bind(&good)
        .bind(id)
        .execute(&s.pool)
        .await
        .unwrap();
    let replayed = s
        .post_empty(&format!("/webhook-events/{row_id}/replay"))
        .await
        .expect(200);
    assert_eq!(replayed["id"], row_id);
    let row = settled(&s, "evt_dead").await;
    assert_eq!(row["status"], "applied", "{row}");
    assert_eq!(row["attempts"], 1);
    assert_eq!(s.get_tx(id).await["status"], "authorization_succeeded");
    assert_error(
        &s.post_empty("/webhook-events/nope/replay").await,
        404,
        "not_found",
    );
}

async fn the_inbox_is_listable(db: Db) {
    let (s, conn_id, _tx, event) = setup(db).await;
    for n in 0..5 {
        let mut e = event.clone();
        e["id"] = json!(format!("evt_list_{n}"));
        e["type"] = json!(if n % 2 == 0 {
            "product.created"
        } else {
            "payment_intent.amount_capturable_updated"
        });
        deliver(&s, &conn_id, SECRET, &e).await;
    }
    settled(&s, "evt_list_4").await;
    wait_for(Duration::from_secs(10), "every event to settle", || async {
        let r = s
            .get("/webhook-events?status=received&status=failed")
            .await
            .expect(200);
        r["items"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let ignored = s.get("/webhook-events?status=ignored").await.expect(200);
    assert_eq!(ignored["items"].as_array().unwrap().len(), 3, "{ignored}");
    let by_type = s
        .get("/webhook-events?type=payment_intent.amount_capturable_updated")
        .await
        .expect(200);
    assert_eq!(by_type["items"].as_array().unwrap().len(), 2);
    // Pages of two, newest first, walk all five rows and back.
    let p1 = s.get("/webhook-events?limit=2").await.expect(200);
    let p2 = s
        .get(&format!(
            "/webhook-events?limit=2&cursor={}",
            p1["next_cursor"].as_str().unwrap()
        ))
        .await
        .expect(200);
    let p3 = s
        .get(&format!(
            "/webhook-events?limit=2&cursor={}",
            p2["next_cursor"].as_str().unwrap()
        ))
        .await
        .expect(200);
    let ids: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["stripe_event_id"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        ids,
        [
            "evt_list_4",
            "evt_list_3",
            "evt_list_2",
            "evt_list_1",
            "evt_list_0"
        ]
    );
    assert!(p3["next_cursor"].is_null());
    let back = s
        .get(&format!(
            "/webhook-events?limit=2&cursor={}",
            p2["previous_cursor"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(back["items"], p1["items"]);
    assert!(
        p1["items"][0].get("payload").is_none(),
        "lists leave the payload out"
    );
    assert_error(
        &s.get("/webhook-events?status=nope").await,
        400,
        "bad_request",
    );
    assert_error(
        &s.get("/webhook-events?colour=red").await,
        400,
        "bad_request",
    );
    assert_error(
        &s.get("/webhook-events/00000000-0000-0000-0000-000000000000")
            .await,
        404,
        "not_found",
    );
}

/// No webhook reaches this server (the default test set-up): reconcile reads the sandbox's
/// events and lists and applies them; a second run finds nothing new.
async fn sync_applies_what_webhooks_missed(db: Db) {
    let s = TestServer::start(db).await;
    let a = s.create_redirect(1100, "authorize").await;
    let c = s.create_redirect(1200, "capture").await;
    s.approve(&a, "pm_card_visa").await.expect(200);
    s.approve(&c, "pm_card_visa").await.expect(200);
    let conn_id = a["payment_service"]["id"].as_str().unwrap();
    let report = s
        .post(&format!("/connections/{conn_id}/sync"), json!({}))
        .await
        .expect(200);
    assert_eq!(report["events"]["status"], "read", "{report}");
    assert!(report["events"]["new"].as_u64().unwrap() >= 4, "{report}");
    assert_eq!(
        report["lists"]["payment_intents"]["status"], "read",
        "{report}"
    );
    assert_eq!(
        s.get_tx(a["id"].as_str().unwrap()).await["status"],
        "authorization_succeeded"
    );
    assert_eq!(
        s.get_tx(c["id"].as_str().unwrap()).await["status"],
        "capture_succeeded"
    );
    let again = s
        .post(&format!("/connections/{conn_id}/sync"), json!({}))
        .await
        .expect(200);
    assert_eq!(again["events"]["new"], 0, "{again}");
    assert_eq!(again["lists"]["payment_intents"]["new"], 0, "{again}");
    let synced = s
        .get("/webhook-events?type=payment_intent.synced")
        .await
        .expect(200);
    assert!(!synced["items"].as_array().unwrap().is_empty());
    let bad = s
        .post(
            &format!("/connections/{conn_id}/sync"),
            json!({"since": "yesterday"}),
        )
        .await;
    assert_eq!(
        crate::common::assert_bad_field(&bad, "body", "/since")["code"],
        "bad_request"
    );
    assert_error(
        &s.post("/connections/nope/sync", json!({})).await,
        404,
        "not_found",
    );
}

/// The receiver keeps a connection whose secret verified an event for a moment (a database
/// read less per event). A connection deleted through the API refuses the next event at once.
async fn a_deleted_connection_refuses_at_once(db: Db) {
    let s = TestServer::start(db).await;
    let conn_id = connection(&s, "webhookcache1234").await;
    // Signed right but not an event: verified (so the connection is kept), then refused, so
    // nothing is stored and the connection can still be deleted.
    let body = br#"{"hello": "world"}"#.to_vec();
    let signed = || Some(signature::header(&[SECRET], now_ms() / 1000, &body));
    let r = send(&s, &conn_id, &body, signed()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("not a Stripe event"), "{}", r.text);
    let rb = s.request(reqwest::Method::DELETE, &format!("/connections/{conn_id}"));
    assert_eq!(s.send(rb).await.status, 204);
    let r = send(&s, &conn_id, &body, signed()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("unknown connection"), "{}", r.text);
}

/// Sends a signed `balance.available` event `evt` to `conn_id`, signed with `secret` at the
/// server's time (which a test may have moved forward).
async fn signed_at_server_time(
    s: &TestServer,
    conn_id: &str,
    secret: &str,
    evt: &str,
) -> crate::common::Resp {
    let now = s.clock.now_ms() / 1000;
    let event = json!({"id": evt, "object": "event", "api_version": "2026-10-28.endive",
                       "created": now, "type": "balance.available",
                       "data": {"object": {"object": "balance", "available": [], "pending": [],
                                           "livemode": false}},
                       "livemode": false, "pending_webhooks": 1,
                       "request": {"id": null, "idempotency_key": null}});
    let body = serde_json::to_vec(&event).unwrap();
    send(
        s,
        conn_id,
        &body,
        Some(signature::header(&[secret], now, &body)),
    )
    .await
}

async fn patch_connection(s: &TestServer, conn_id: &str, body: Value) -> crate::common::Resp {
    s.send(
        s.request(reqwest::Method::PATCH, &format!("/connections/{conn_id}"))
            .json(&body),
    )
    .await
}

#[track_caller]
fn assert_refused_signature(r: &crate::common::Resp) {
    assert_error(r, 400, "bad_request");
    assert!(r.text.contains("bad signature"), "{}", r.text);
}

/// A rotated-out webhook secret verifies for 24 hours by default, or as long as the rotation
/// says (`previous_webhook_secret_expires_in`, 0: not at all), and a later PATCH may end it
/// early; then only the current secret verifies.
async fn a_replaced_secret_stops_verifying_when_it_expires(db: Db) {
    let s = TestServer::start(db).await;
    let conn_id = connection(&s, "rotationends1234").await;
    const NEW: &str = "whsec_rotatedsecret0001";
    let before = s.clock.now_ms();
    let c = patch_connection(&s, &conn_id, json!({"webhook_secret": NEW}))
        .await
        .expect(200);
    let after = s.clock.now_ms();
    assert_eq!(c["has_previous_webhook_secret"], true, "{c}");
    let ends = tollgate_server::clock::parse_rfc3339(
        c["previous_webhook_secret_expires_at"].as_str().unwrap(),
    )
    .unwrap();
    let day = 24 * 3600 * 1000;
    assert!(
        before + day - 1 <= ends && ends <= after + day,
        "24 hours by default: {c}"
    );
    for (secret, evt) in [(SECRET, "evt_rot_1"), (NEW, "evt_rot_2")] {
        let r = signed_at_server_time(&s, &conn_id, secret, evt).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // A day and a second later the replaced secret is refused (the receiver's cached
    // connection included); the current one goes on.
    s.clock.advance_ms(day + 1000);
    assert_refused_signature(&signed_at_server_time(&s, &conn_id, SECRET, "evt_rot_3").await);
    let r = signed_at_server_time(&s, &conn_id, NEW, "evt_rot_3").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = s.get(&format!("/connections/{conn_id}")).await.expect(200);
    assert_eq!(c["has_previous_webhook_secret"], false, "{c}");
    assert_eq!(c["previous_webhook_secret_expires_at"], Value::Null, "{c}");

    // Expiring at once.
    const THIRD: &str = "whsec_rotatedsecret0003";
    let c = patch_connection(
        &s,
        &conn_id,
        json!({"webhook_secret": THIRD, "previous_webhook_secret_expires_in": 0}),
    )
    .await
    .expect(200);
    assert_eq!(c["has_previous_webhook_secret"], false, "{c}");
    assert_refused_signature(&signed_at_server_time(&s, &conn_id, NEW, "evt_rot_4").await);
    let r = signed_at_server_time(&s, &conn_id, THIRD, "evt_rot_4").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // An hour, ended early by a PATCH of the expiry alone.
    const FOURTH: &str = "whsec_rotatedsecret0004";
    patch_connection(
        &s,
        &conn_id,
        json!({"webhook_secret": FOURTH, "previous_webhook_secret_expires_in": 3600}),
    )
    .await
    .expect(200);
    let r = signed_at_server_time(&s, &conn_id, THIRD, "evt_rot_5").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = patch_connection(
        &s,
        &conn_id,
        json!({"previous_webhook_secret_expires_in": 0}),
    )
    .await
    .expect(200);
    assert_eq!(c["has_previous_webhook_secret"], false, "{c}");
    assert_refused_signature(&signed_at_server_time(&s, &conn_id, THIRD, "evt_rot_6").await);
    let r = signed_at_server_time(&s, &conn_id, FOURTH, "evt_rot_6").await;
    assert_eq!(r.status, 200, "{}", r.text);

    for bad in [json!(-1), json!(604_801), json!("3600"), json!(1.5)] {
        let r = patch_connection(
            &s,
            &conn_id,
            json!({"webhook_secret": "whsec_rotatedsecret0005", "previous_webhook_secret_expires_in": bad}),
        )
        .await;
        assert_bad_field(&r, "body", "/previous_webhook_secret_expires_in");
    }
}

/// The Stripe events a connection received (and where its sync stopped) do not keep it: it is
/// deleted with them. Transactions do, and the 409 says so.
async fn a_connection_with_only_events_can_be_deleted(db: Db) {
    let s = TestServer::start(db).await;
    let conn_id = connection(&s, "onlyevents123456").await;
    let r = signed_at_server_time(&s, &conn_id, SECRET, "evt_only_1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    settled(&s, "evt_only_1").await;
    sqlx::query(
        "INSERT INTO connection_sync (connection_id, last_sync_at, last_report) VALUES ($1, 0, '{}')",
    )
    .bind(&conn_id)
    .execute(&s.pool)
    .await
    .unwrap();
    let del = s
        .send(s.request(reqwest::Method::DELETE, &format!("/connections/{conn_id}")))
        .await;
    assert_eq!(del.status, 204, "{}", del.text);
    let rows = s
        .get("/webhook-events?stripe_event_id=evt_only_1")
        .await
        .expect(200);
    assert_eq!(rows["items"], json!([]), "{rows}");
    assert_eq!(s.db_snapshot().await.inbox, 0);

    // The sandbox connection, once a transaction was made through it, stays.
    let tx = s.create_redirect(1000, "authorize").await;
    let sandbox_id = tx["payment_service"]["id"].as_str().unwrap().to_string();
    let del = s
        .send(s.request(
            reqwest::Method::DELETE,
            &format!("/connections/{sandbox_id}"),
        ))
        .await;
    let b = assert_error(&del, 409, "duplicate_record");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("1 transaction was made through it"),
        "{b}"
    );
    s.get(&format!("/connections/{sandbox_id}"))
        .await
        .expect(200);
}

/// Head-of-line (issue 30): a Checkout Session whose line items cannot be read from Stripe (a
/// sandbox fault on that one session) sits in the same inbox batch as 1,000 subscription
/// events of the same connection. The 1,000 are applied at their first attempt; only the
/// session's event fails, with a note naming it and its session; once Stripe answers for the
/// session again, its retry applies it. The events are stored and applied through a context of
/// the test's own (the server's workers sleep), so which events share a batch is fixed.
async fn one_failing_read_holds_back_no_other_event(db: Db) {
    const OTHERS: usize = 1_000;
    let s = TestServer::start_with(db, |c| {
        c.inbox_poll_ms = 600_000;
        c.inbox_batch = 1_024;
        // A failed event waits an hour: only this test makes it due again.
        c.inbox_retry_base_ms = 3_600_000;
    })
    .await;
    let ctx = tollgate_server::context(
        s.config.clone(),
        std::sync::Arc::new(tollgate_server::clock::SystemClock),
        Some(format!("{}/sandbox/stripe", s.base)),
    )
    .await
    .expect("context");
    let conn = tollgate_store::connections::default_for(ctx.store.reader(), "default")
        .await
        .expect("connections")
        .expect("the sandbox connection");
    let (product, price) = s.stripe_product_price("Lifetime", 4900).await;
    let cs = s
        .stripe_post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", "https://merchant.example/done"),
                ("client_reference_id", "user-hol"),
                ("line_items[0][price]", price.as_str()),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let cs_id = cs["id"].as_str().unwrap().to_string();
    let mut cs = s
        .stripe_get(&format!("/v1/checkout/sessions/{cs_id}"))
        .await;
    cs["status"] = json!("complete");
    cs["payment_status"] = json!("paid");
    assert!(cs["line_items"].is_null(), "{cs}");

    let now = now_ms() / 1000;
    let sub = |i: usize| {
        json!({
            "id": format!("sub_hol_{i}"), "object": "subscription", "customer": format!("cus_hol_{i}"),
            "status": "active", "cancel_at": null, "cancel_at_period_end": false, "canceled_at": null,
            "created": now, "ended_at": null, "latest_invoice": null, "livemode": false,
            "metadata": {"customid": format!("user-hol-{i}")}, "test_clock": null, "trial_end": null,
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_hol_{i}"), "object": "subscription_item", "created": now,
                "current_period_start": now, "current_period_end": now + 30 * 86_400, "quantity": 1,
                "price": {"id": "price_hol", "object": "price", "product": "prod_hol",
                          "recurring": {"interval": "month", "interval_count": 1}, "unit_amount": 999},
                "subscription": format!("sub_hol_{i}"), "discounts": [], "metadata": {}
            }]}
        })
    };
    // The session's event in the middle of the others.
    let mut events: Vec<Value> = (0..OTHERS)
        .map(|i| {
            event_of(
                &format!("evt_hol_{i}"),
                "customer.subscription.created",
                "2026-10-28.endive",
                sub(i),
            )
        })
        .collect();
    events.insert(
        OTHERS / 2,
        event_of(
            "evt_hol_cs",
            "checkout.session.completed",
            "2026-10-28.endive",
            cs,
        ),
    );
    for e in &events {
        let text = serde_json::to_string(e).unwrap();
        let head = tollgate_server::inbox::EventHead::parse(&text).expect("an event");
        let row = tollgate_server::inbox::row_for(&conn, &head, text, "webhook", ctx.now());
        assert!(ctx.inbox.accept(row).await.expect("stored"));
    }

    // Stripe fails every read of this one session's line items, and only those.
    s.sandbox_control(
        "/faults",
        json!({"kind": "500", "rate": 1.0, "path": format!("{cs_id}/line_items")}),
    )
    .await;
    // The fault is that session's alone: the product still reads, the line items do not.
    s.stripe_get(&format!("/v1/products/{product}")).await;
    let rb = s
        .http
        .get(s.url(&format!(
            "/sandbox/stripe/v1/checkout/sessions/{cs_id}/line_items"
        )))
        .bearer_auth(s.sandbox.secret_key());
    assert_eq!(s.send(rb).await.status, 500);
    // One batch takes them all.
    let taken = tollgate_server::inbox::run_once(&ctx)
        .await
        .expect("a pass");
    assert_eq!(taken, OTHERS + 1);

    for i in 0..OTHERS {
        let evt = format!("evt_hol_{i}");
        let rows = s
            .get(&format!("/webhook-events?stripe_event_id={evt}"))
            .await
            .expect(200);
        let row = &rows["items"][0];
        assert_eq!(row["status"], "applied", "{row}");
        assert_eq!(row["attempts"], 1, "applied at the first attempt: {row}");
    }
    let rows = s
        .get("/webhook-events?stripe_event_id=evt_hol_cs")
        .await
        .expect(200);
    let row = rows["items"][0].clone();
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["attempts"], 1, "{row}");
    let note = row["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("evt_hol_cs") && note.contains(&cs_id),
        "the note names the event and its session: {note}"
    );
    assert!(!note.contains("transaction"), "{note}");

    // Stripe answers for the session again, and its retry comes: it is applied.
    s.faults_off().await;
    sqlx::query(
        "UPDATE webhook_waiting SET next_attempt_at = 0
         WHERE id IN (SELECT id FROM webhook_events WHERE stripe_event_id = 'evt_hol_cs')",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    let row = wait_for(Duration::from_secs(15), "the retry to apply", || async {
        tollgate_server::inbox::run_once(&ctx)
            .await
            .expect("a pass");
        let rows = s
            .get("/webhook-events?stripe_event_id=evt_hol_cs")
            .await
            .expect(200);
        rows["items"]
            .get(0)
            .filter(|r| r["status"] == "applied")
            .cloned()
    })
    .await;
    assert_eq!(row["attempts"], 2, "{row}");
}

/// Issue 30: with autovacuum off (as on the machines these tests run on), applying events
/// slowed round after round on PostgreSQL, as the tables the apply path updates kept their
/// dead row versions and their planner statistics from when they were small. The server does
/// autovacuum's work itself: a table whose rows changed is analyzed, one with enough dead row
/// versions is vacuumed. Shown on a table of the test's own in the server's schema: only a
/// manual `VACUUM`/`ANALYZE` sets `last_vacuum`/`last_analyze` (autovacuum sets its own
/// columns). On SQLite there is nothing to do, and nothing is done.
async fn the_server_vacuums_and_analyzes_postgres_tables(db: Db) {
    let s = TestServer::start(db).await;
    let store = tollgate_store::Store::connect(&s.config.database_url())
        .await
        .expect("store");
    let rule = tollgate_store::upkeep::Upkeep {
        vacuum_min: 1,
        vacuum_share: 0.0,
        analyze_min: 1,
        analyze_share: 0.0,
    };
    if db == Db::Sqlite {
        let done = tollgate_store::upkeep::maintain(&store, rule, &[]).await;
        assert_eq!(done.expect("upkeep"), vec![]);
        return;
    }
    let mut conn = s.pool.acquire().await.unwrap();
    // Runs `sql` on the test's connection, then has its statistics flushed for the server to
    // read, and waits until the probe's row satisfies `done`: (analyzed, vacuumed, dead rows).
    let mut step = async |sql: &'static str, what: &str, done: fn(&(i32, i32, i64)) -> bool| {
        for sql in [sql, "SELECT pg_stat_force_next_flush()", "SELECT 1"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let probe = "SELECT (last_analyze IS NOT NULL)::INT, (last_vacuum IS NOT NULL)::INT,
                            n_dead_tup
                     FROM pg_stat_user_tables
                     WHERE schemaname = current_schema() AND relname = 'upkeep_probe'";
        wait_for(Duration::from_secs(30), what, || async {
            let r: (i32, i32, i64) = sqlx::query_as(probe).fetch_one(&s.pool).await.unwrap();
            done(&r).then_some(r)
        })
        .await
    };
    step(
        "CREATE TABLE upkeep_probe (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        "the table",
        |_| true,
    )
    .await;
    // 3,000 rows inserted: analyzed by the server, not vacuumed (no dead rows).
    let (analyzed, vacuumed, _) = step(
        "INSERT INTO upkeep_probe SELECT i, 0 FROM generate_series(1, 3000) AS i",
        "an analysis",
        |r| r.0 == 1,
    )
    .await;
    assert_eq!((analyzed, vacuumed), (1, 0));
    // Every row updated: 3,000 dead versions, which the server's vacuum removes.
    let (_, _, dead) = step("UPDATE upkeep_probe SET v = 1", "a vacuum", |r| r.1 == 1).await;
    assert!(
        dead < 1_000,
        "{dead} dead row versions left after the vacuum"
    );
    // The store's own upkeep with a rule that takes every table: nothing is refused.
    tollgate_store::upkeep::maintain(&store, rule, &[])
        .await
        .expect("upkeep of every table");
}
