//! Metered permissions (issue 27): consume atomically, reserve then settle, adjust, the ledger;
//! Stripe purchases and paid periods grant units, renewals reset them, refunds claw them back.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::both_dbs;
use crate::common::*;

both_dbs!(
    sixty_four_concurrent_consumers_never_overdraw,
    consume_reject_cap_replay_and_validation,
    a_keyed_consume_keeps_its_answer_in_its_own_commit,
    concurrent_consumers_over_many_customers_add_up,
    reservations_hold_commit_release_and_expire,
    definitions_of_metered_permissions,
);

/// A metered permission `ai_credits` (one subscription SKU, one pack SKU).
pub(crate) async fn metered_catalog(s: &TestServer, monthly_product: &str, pack_product: &str) {
    for (id, prod, kind) in [
        ("credits_monthly", monthly_product, "subscription"),
        ("credits_pack", pack_product, "one_time"),
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
        json!({"identifier": "ai_credits", "kind": "metered", "low_balance_threshold": 10,
               "skus": [{"identifier": "credits_monthly", "units": 1000, "per": "period"},
                        {"identifier": "credits_pack", "units": 500, "per": "purchase"}]}),
    )
    .await
    .expect(201);
}

async fn give(s: &TestServer, customid: &str, units: i64) -> Value {
    s.post(
        "/v1/permissions/ai_credits/adjustments",
        json!({"customid": customid, "units": units, "reason": "test"}),
    )
    .await
    .expect(201)
}

async fn balance_of(s: &TestServer, customid: &str) -> Value {
    let b = s
        .get(&format!("/v1/subscribers/{customid}/balances"))
        .await
        .expect(200);
    b["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["permission"] == "ai_credits").cloned())
        .unwrap_or(Value::Null)
}

/// Every row of a customer's ledger, oldest first.
async fn ledger_of(s: &TestServer, customid: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/subscribers/{customid}/ledger?limit=100&cursor={c}"),
            None => format!("/v1/subscribers/{customid}/ledger?limit=100"),
        };
        let page = s.get(&path).await.expect(200);
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    out.reverse();
    out
}

/// The balance is the sum of the ledger, and each row's `balance_after` is the running sum.
async fn assert_ledger_adds_up(s: &TestServer, customid: &str) -> i64 {
    let rows = ledger_of(s, customid).await;
    let mut sum = 0;
    for r in &rows {
        sum += r["units"].as_i64().unwrap();
        assert_eq!(r["balance_after"].as_i64(), Some(sum), "{rows:#?}");
    }
    let b = balance_of(s, customid).await;
    assert_eq!(b["balance"].as_i64(), Some(sum), "{b} {rows:#?}");
    sum
}

async fn sixty_four_concurrent_consumers_never_overdraw(db: Db) {
    let s = Arc::new(TestServer::start(db).await);
    metered_catalog(&s, "prod_m", "prod_p").await;
    give(&s, "hot", 100).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post_idem(
                "/v1/permissions/ai_credits/consume",
                Some(&json!({"customid": "hot", "units": 2})),
                &format!("consume-{i}"),
            )
            .await
        }));
    }
    let (mut ok, mut short) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => ok += 1,
            402 => {
                let b = assert_error(&r, 402, "insufficient_balance");
                assert!(b["balance"].as_i64().is_some_and(|b| b < 2), "{b}");
                short += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!((ok, short), (50, 14));
    assert_eq!(balance_of(&s, "hot").await["balance"], 0);
    assert_eq!(assert_ledger_adds_up(&s, "hot").await, 0);
    // Replaying every key changes nothing.
    for i in 0..64 {
        let r = s
            .post_idem(
                "/v1/permissions/ai_credits/consume",
                Some(&json!({"customid": "hot", "units": 2})),
                &format!("consume-{i}"),
            )
            .await;
        assert!(r.status == 200 || r.status == 402, "{}", r.text);
    }
    assert_eq!(ledger_of(&s, "hot").await.len(), 51);
}

async fn consume_reject_cap_replay_and_validation(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    // No balance yet: 402 with balance 0.
    let r = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u1", "units": 1}),
        )
        .await;
    assert_eq!(assert_error(&r, 402, "insufficient_balance")["balance"], 0);
    // Not metered, unknown: 404.
    let r = s
        .post(
            "/v1/permissions/nope/consume",
            json!({"customid": "u1", "units": 1}),
        )
        .await;
    assert_error(&r, 404, "not_found");
    give(&s, "u1", 30).await;
    let c = s
        .post_idem(
            "/v1/permissions/ai_credits/consume",
            Some(&json!({"customid": "u1", "units": 12, "metadata": {"job": "a"}})),
            "k1",
        )
        .await
        .expect(200);
    assert_eq!(
        (c["balance"].as_i64(), c["consumed"].as_i64()),
        (Some(18), Some(12))
    );
    // The same key again: the same answer, nothing consumed.
    let again = s
        .post_idem(
            "/v1/permissions/ai_credits/consume",
            Some(&json!({"customid": "u1", "units": 12, "metadata": {"job": "a"}})),
            "k1",
        )
        .await
        .expect(200);
    assert_eq!(again, c);
    assert_eq!(balance_of(&s, "u1").await["balance"], 18);
    // reject (default): 402 naming the balance; cap: what is left.
    let r = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u1", "units": 20}),
        )
        .await;
    let e = assert_error(&r, 402, "insufficient_balance");
    assert_eq!(e["balance"], 18);
    let c = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u1", "units": 20, "overage": "cap"}),
        )
        .await
        .expect(200);
    assert_eq!(
        (c["balance"].as_i64(), c["consumed"].as_i64()),
        (Some(0), Some(18))
    );
    let r = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u1", "units": 1, "overage": "cap"}),
        )
        .await;
    assert_error(&r, 402, "insufficient_balance");
    // Bad input: 400 naming the field.
    for (body, pointer) in [
        (json!({"customid": "u1", "units": 0}), "/units"),
        (json!({"customid": "u1", "units": -3}), "/units"),
        (json!({"customid": "u1", "units": 1.5}), "/units"),
        (json!({"customid": "u1", "units": "2"}), "/units"),
        (json!({"customid": "", "units": 2}), "/customid"),
        (json!({"units": 2}), "/customid"),
        (
            json!({"customid": "u1", "units": 2, "overage": "all"}),
            "/overage",
        ),
        (json!({"customid": "u1", "units": 2, "extra": 1}), "/extra"),
    ] {
        let r = s.post("/v1/permissions/ai_credits/consume", body).await;
        assert_bad_field(&r, "body", pointer);
    }
    // An adjustment may not take more than is available.
    let r = s
        .post(
            "/v1/permissions/ai_credits/adjustments",
            json!({"customid": "u1", "units": -1, "reason": "oops"}),
        )
        .await;
    assert_error(&r, 402, "insufficient_balance");
    let rows = ledger_of(&s, "u1").await;
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["adjustment", "consume", "consume"]);
    assert_eq!(rows[1]["metadata"], json!({"job": "a"}));
    assert_eq!(rows[0]["reason"], "test");
    assert_eq!(assert_ledger_adds_up(&s, "u1").await, 0);
}

async fn reservations_hold_commit_release_and_expire(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    give(&s, "u2", 100).await;
    let r = s
        .post(
            "/v1/permissions/ai_credits/reservations",
            json!({"customid": "u2", "units": 60, "expires_in": 60}),
        )
        .await
        .expect(201);
    assert_eq!(
        (r["status"].as_str(), r["available"].as_i64()),
        (Some("held"), Some(40))
    );
    let id = r["id"].as_str().unwrap().to_string();
    // The hold lowers what a consumption may take.
    let e = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u2", "units": 41}),
        )
        .await;
    assert_eq!(
        assert_error(&e, 402, "insufficient_balance")["balance"],
        100
    );
    // More than held: 400; then commit 37 of 60.
    let e = s
        .post(
            &format!("/v1/permissions/ai_credits/reservations/{id}/commit"),
            json!({"units": 61}),
        )
        .await;
    assert_bad_field(&e, "body", "/units");
    let c = s
        .post(
            &format!("/v1/permissions/ai_credits/reservations/{id}/commit"),
            json!({"units": 37}),
        )
        .await
        .expect(200);
    assert_eq!(c["status"], "committed");
    assert_eq!(c["committed_units"], 37);
    assert_eq!(
        (c["balance"].as_i64(), c["available"].as_i64()),
        (Some(63), Some(63))
    );
    // Once only.
    let e = s
        .post(
            &format!("/v1/permissions/ai_credits/reservations/{id}/release"),
            json!({}),
        )
        .await;
    assert_error(&e, 409, "duplicate_record");
    // Release gives the units back.
    let r = s
        .post(
            "/v1/permissions/ai_credits/reservations",
            json!({"customid": "u2", "units": 63}),
        )
        .await
        .expect(201);
    let id2 = r["id"].as_str().unwrap().to_string();
    let e = s
        .post(
            "/v1/permissions/ai_credits/reservations",
            json!({"customid": "u2", "units": 1}),
        )
        .await;
    assert_error(&e, 402, "insufficient_balance");
    let rel = s
        .post(
            &format!("/v1/permissions/ai_credits/reservations/{id2}/release"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(
        (rel["status"].as_str(), rel["available"].as_i64()),
        (Some("released"), Some(63))
    );
    // A hold left alone ends by the clock and its units come back.
    let r = s
        .post(
            "/v1/permissions/ai_credits/reservations",
            json!({"customid": "u2", "units": 50, "expires_in": 30}),
        )
        .await
        .expect(201);
    let id3 = r["id"].as_str().unwrap().to_string();
    s.clock.advance_ms(31_000);
    let c = s
        .post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u2", "units": 63}),
        )
        .await
        .expect(200);
    assert_eq!(c["balance"], 0);
    let e = s
        .post(
            &format!("/v1/permissions/ai_credits/reservations/{id3}/commit"),
            json!({}),
        )
        .await;
    assert_error(&e, 409, "duplicate_record");
    let e = s
        .post(
            "/v1/permissions/ai_credits/reservations/rsv_nope/commit",
            json!({}),
        )
        .await;
    assert_error(&e, 404, "not_found");
    assert_eq!(assert_ledger_adds_up(&s, "u2").await, 0);
}

async fn definitions_of_metered_permissions(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    let d = s
        .get("/v1/permissions/definitions/ai_credits")
        .await
        .expect(200);
    assert_eq!(d["kind"], "metered");
    assert_eq!(d["skus"], json!(["credits_monthly", "credits_pack"]));
    assert_eq!(d["metering"]["skus"][0]["units"], 1000);
    assert_eq!(d["metering"]["skus"][0]["per"], "period");
    assert_eq!(d["metering"]["low_balance_threshold"], 10);
    // An access permission stays as it was.
    let a = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "premium", "skus": ["credits_monthly"]}),
        )
        .await
        .expect(201);
    assert_eq!(a["kind"], "access");
    assert!(a.get("metering").is_none(), "{a}");
    // A metered SKU must name its units; units are for metered permissions.
    let r = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "m2", "kind": "metered", "skus": ["credits_pack"]}),
        )
        .await;
    assert_bad_field(&r, "body", "/skus/0");
    let r = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "m3", "skus": [{"identifier": "credits_pack", "units": 5}]}),
        )
        .await;
    assert_bad_field(&r, "body", "/skus/0");
    let r = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "m4", "kind": "metered",
                   "skus": [{"identifier": "credits_pack", "units": 0}]}),
        )
        .await;
    assert_bad_field(&r, "body", "/skus/0/units");
    let r = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "m5", "kind": "counted", "skus": []}),
        )
        .await;
    assert_bad_field(&r, "body", "/kind");
    let r = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "m6", "skus": [7]}),
        )
        .await;
    assert_bad_field(&r, "body", "/skus/0");
    // PATCH keeps the kind and may change the units.
    let d = s
        .send(
            s.request(
                reqwest::Method::PATCH,
                "/v1/permissions/definitions/ai_credits",
            )
            .json(&json!({"skus": [{"identifier": "credits_pack", "units": 250}]})),
        )
        .await
        .expect(200);
    assert_eq!(d["kind"], "metered");
    assert_eq!(
        d["metering"]["skus"],
        json!([{"identifier": "credits_pack", "units": 250, "per": "purchase", "expires_in": null}])
    );
    let list = s.get("/v1/permissions/definitions").await.expect(200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
}

both_dbs!(stripe_periods_grant_and_reset_and_refunds_claw_back);

/// Stripe events through the entitlement evaluator: a monthly subscription grants 1,000 units
/// per paid period and its renewal resets them; a pack bought through Checkout adds 500; a
/// full refund of the pack claws back what it still holds, a lost dispute likewise.
async fn stripe_periods_grant_and_reset_and_refunds_claw_back(db: Db) {
    use crate::entitlements::{CURRENT, DAY, charge, checkout, event, inbox, subscription};
    use tollgate_server::entitlements::on_stripe_event;
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_monthly", "prod_life").await;
    let (ctx, conn) = inbox(&s).await;
    let t = now_ms() / 1000;
    let feed = |id: &str, kind: &str, at: i64, obj: Value| event(id, kind, at, obj, CURRENT);
    let sub = subscription("sub_A", "cus_A", "active", "prod_monthly", t, t + 30 * DAY);
    on_stripe_event(
        &ctx,
        &conn,
        &feed("e1", "customer.subscription.created", t, sub.clone()),
    )
    .await
    .expect("applied");
    assert_eq!(balance_of(&s, "user-sub").await["balance"], 1000);
    // The same event again grants nothing more.
    on_stripe_event(
        &ctx,
        &conn,
        &feed("e1", "customer.subscription.created", t, sub),
    )
    .await
    .expect("applied");
    assert_eq!(balance_of(&s, "user-sub").await["balance"], 1000);
    // A pack through Checkout adds 500.
    for ev in [
        feed(
            "e2",
            "checkout.session.completed",
            t,
            checkout("cs_1", "user-sub", "pi_1", t),
        ),
        feed(
            "e3",
            "charge.succeeded",
            t,
            charge("ch_1", "pi_1", 0, false),
        ),
    ] {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    let b = balance_of(&s, "user-sub").await;
    assert_eq!(
        (b["balance"].as_i64(), b["granted"].as_i64()),
        (Some(1500), Some(1500))
    );
    // 300 consumed: from the monthly units first (they end first).
    s.post(
        "/v1/permissions/ai_credits/consume",
        json!({"customid": "user-sub", "units": 300}),
    )
    .await
    .expect(200);
    // Renewal: the next period resets the monthly units to 1,000 (the 700 left end).
    let renewed = subscription(
        "sub_A",
        "cus_A",
        "active",
        "prod_monthly",
        t + 30 * DAY,
        t + 60 * DAY,
    );
    on_stripe_event(
        &ctx,
        &conn,
        &feed("e4", "customer.subscription.updated", t + 30 * DAY, renewed),
    )
    .await
    .expect("applied");
    let b = balance_of(&s, "user-sub").await;
    assert_eq!(b["balance"], 1500, "{b}");
    assert_eq!(b["consumed"], 0, "{b}");
    let rows = ledger_of(&s, "user-sub").await;
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["grant", "grant", "consume", "expiry", "grant"],
        "{rows:#?}"
    );
    assert_eq!(rows[3]["units"], -700);
    // 600 more: 600 of the new period's units. Then the pack is refunded in full: its 500,
    // untouched, are clawed back.
    s.post(
        "/v1/permissions/ai_credits/consume",
        json!({"customid": "user-sub", "units": 600}),
    )
    .await
    .expect(200);
    on_stripe_event(
        &ctx,
        &conn,
        &feed(
            "e5",
            "charge.refunded",
            t + 31 * DAY,
            charge("ch_1", "pi_1", 4900, false),
        ),
    )
    .await
    .expect("applied");
    let b = balance_of(&s, "user-sub").await;
    assert_eq!(b["balance"], 400, "{b}");
    let rows = ledger_of(&s, "user-sub").await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["units"].as_i64()),
        (Some("clawback"), Some(-500))
    );
    assert_eq!(last["shortfall"], 0);
    assert_eq!(last["source"], "cs_1");
    // Replaying the refund takes nothing more.
    on_stripe_event(
        &ctx,
        &conn,
        &feed(
            "e5",
            "charge.refunded",
            t + 31 * DAY,
            charge("ch_1", "pi_1", 4900, false),
        ),
    )
    .await
    .expect("applied");
    assert_eq!(assert_ledger_adds_up(&s, "user-sub").await, 400);

    // A second pack, mostly consumed, then refunded: the rest is clawed back, the consumed
    // part recorded as the shortfall; the balance never goes below zero.
    for ev in [
        feed(
            "e6",
            "checkout.session.completed",
            t,
            checkout("cs_2", "guest-2", "pi_2", t),
        ),
        feed(
            "e7",
            "charge.succeeded",
            t,
            charge("ch_2", "pi_2", 0, false),
        ),
    ] {
        on_stripe_event(&ctx, &conn, &ev).await.expect("applied");
    }
    s.post(
        "/v1/permissions/ai_credits/consume",
        json!({"customid": "guest-2", "units": 450}),
    )
    .await
    .expect(200);
    on_stripe_event(
        &ctx,
        &conn,
        &feed(
            "e8",
            "charge.refunded",
            t + 60,
            charge("ch_2", "pi_2", 4900, false),
        ),
    )
    .await
    .expect("applied");
    let rows = ledger_of(&s, "guest-2").await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last["units"].as_i64(), last["shortfall"].as_i64()),
        (Some(-50), Some(450))
    );
    assert_eq!(assert_ledger_adds_up(&s, "guest-2").await, 0);
}

both_dbs!(
    low_and_depleted_balances_are_announced,
    concurrent_consumes_announce_low_and_depleted_once,
);

/// The metered catalogue and a webhook subscription to every `balance.*` event.
async fn metered_with_balance_hooks(s: &TestServer) {
    metered_catalog(s, "prod_m", "prod_p").await;
    s.post(
        "/webhook-subscriptions",
        json!({"url": "https://shop.example/hooks", "events": ["balance.*"]}),
    )
    .await
    .expect(201);
}

/// `balance.low` when a consumption takes a balance to the definition's threshold or below,
/// `balance.depleted` when it reaches zero; each once per crossing.
async fn low_and_depleted_balances_are_announced(db: Db) {
    let s = TestServer::start(db).await;
    metered_with_balance_hooks(&s).await;
    give(&s, "u3", 30).await;
    for units in [15, 4, 6, 2, 3] {
        s.post(
            "/v1/permissions/ai_credits/consume",
            json!({"customid": "u3", "units": units}),
        )
        .await
        .expect(200);
    }
    // 30 → 15 → 11 → 5 (low) → 3 → 0 (depleted)
    assert_eq!(
        delivered_event_names(&s).await,
        ["balance.depleted", "balance.low"]
    );
}

/// A keyed consume writes its key's record in the commit of its work: answered, sealed, no
/// claim left behind; replays (also of a refusal) answer the same and change nothing; another
/// body is a mismatch; a 400 is not kept; a record of a request still running is a 409 until
/// its lease lapses, then the retry runs; an expired record is replaced.
async fn a_keyed_consume_keeps_its_answer_in_its_own_commit(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    give(&s, "u1", 100).await;
    let path = "/v1/permissions/ai_credits/consume";
    let five = json!({"customid": "u1", "units": 5});
    let first = s.post_idem(path, Some(&five), "a").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let row: (Option<i64>, Option<String>, Option<Vec<u8>>, Option<String>) = sqlx::query_as(
        "SELECT status_code, response, response_enc, lease_owner FROM idempotency_keys
          WHERE idem_key = 'a'",
    )
    .fetch_one(&s.pool)
    .await
    .expect("the key's record");
    assert_eq!(row.0, Some(200));
    assert_eq!(row.1, None, "the answer is not kept in clear");
    let sealed = row.2.expect("sealed answer");
    assert!(!String::from_utf8_lossy(&sealed).contains("ledger_id"));
    assert_eq!(row.3, None, "no claim left");
    let again = s.post_idem(path, Some(&five), "a").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text);
    assert_eq!(balance_of(&s, "u1").await["balance"], 95);
    let r = s
        .post_idem(path, Some(&json!({"customid": "u1", "units": 6})), "a")
        .await;
    assert_error(&r, 409, "idempotency_key_mismatch");

    // A refusal is kept too: the same key replays it after the balance has grown.
    let big = json!({"customid": "u1", "units": 500});
    let refused = s.post_idem(path, Some(&big), "b").await;
    assert_eq!(
        assert_error(&refused, 402, "insufficient_balance")["balance"],
        95
    );
    give(&s, "u1", 1000).await;
    let r = s.post_idem(path, Some(&big), "b").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(r.text, refused.text);
    assert_eq!(balance_of(&s, "u1").await["balance"], 1095);

    // Input refused before any work is not kept: the key may be sent with a corrected body.
    let r = s
        .post_idem(path, Some(&json!({"customid": "u1", "units": 0})), "c")
        .await;
    assert_bad_field(&r, "body", "/units");
    s.post_idem(path, Some(&five), "c").await.expect(200);

    // A record of a request still running (as an earlier version's claim leaves it).
    let set_claim = |key: &'static str, lease_expires_at: i64| {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = NULL, response = NULL, response_enc = NULL,
                    lease_owner = 'a-request-still-running', lease_expires_at = $1
              WHERE idem_key = $2",
        )
        .bind(lease_expires_at)
        .bind(key)
        .execute(&s.pool)
    };
    let d = s.post_idem(path, Some(&five), "d").await.expect(200);
    set_claim("d", now_ms() + 3_600_000).await.unwrap();
    let r = s.post_idem(path, Some(&five), "d").await;
    assert_error(&r, 409, "concurrent_request");
    set_claim("d", now_ms() - 1).await.unwrap();
    let retry = s.post_idem(path, Some(&five), "d").await.expect(200);
    assert_ne!(retry["ledger_id"], d["ledger_id"]);
    let r = s.post_idem(path, Some(&five), "d").await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));

    // An expired record is replaced, whatever its body was.
    sqlx::query("UPDATE idempotency_keys SET expires_at = $1 WHERE idem_key = 'a'")
        .bind(now_ms() - 1)
        .execute(&s.pool)
        .await
        .unwrap();
    let r = s
        .post_idem(path, Some(&json!({"customid": "u1", "units": 6})), "a")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("idempotent-replayed"), None);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'a'")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// 64 concurrent keyed consumers over 8 customers (the group commit on SQLite puts many of
/// them in one commit), each key sent twice at once: every customer's balance is what was
/// given less two units per key, and equals its ledger.
async fn concurrent_consumers_over_many_customers_add_up(db: Db) {
    let s = Arc::new(TestServer::start(db).await);
    metered_catalog(&s, "prod_m", "prod_p").await;
    for c in 0..8 {
        give(&s, &format!("m{c}"), 1000).await;
    }
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..5 {
                let body = json!({"customid": format!("m{}", (i + n) % 8), "units": 2});
                let key = format!("many-{i}-{n}");
                let (a, b) = tokio::join!(
                    s.post_idem("/v1/permissions/ai_credits/consume", Some(&body), &key),
                    s.post_idem("/v1/permissions/ai_credits/consume", Some(&body), &key),
                );
                answers.push((a.status, a.text, b.status, b.text));
            }
            answers
        }));
    }
    let mut ledger_ids = std::collections::HashSet::new();
    for t in tasks {
        for (sa, ta, sb, tb) in t.await.expect("task") {
            // Both copies answer the one consume, or the second finds the first still
            // running (PostgreSQL: it waits for the first's commit and replays it).
            let ok: Vec<&String> = [(sa, &ta), (sb, &tb)]
                .into_iter()
                .filter(|(st, _)| *st == 200)
                .map(|(_, t)| t)
                .collect();
            for (st, t) in [(sa, &ta), (sb, &tb)] {
                assert!(st == 200 || st == 409, "{st}: {t}");
            }
            assert!(!ok.is_empty(), "{ta} {tb}");
            let ids: std::collections::HashSet<String> = ok
                .iter()
                .map(|t| serde_json::from_str::<Value>(t).unwrap()["ledger_id"].to_string())
                .collect();
            assert_eq!(ids.len(), 1, "{ta} {tb}");
            ledger_ids.extend(ids);
        }
    }
    assert_eq!(ledger_ids.len(), 64 * 5);
    let mut consumed = 0;
    for c in 0..8 {
        let customid = format!("m{c}");
        let sum = assert_ledger_adds_up(&s, &customid).await;
        consumed += 1000 - sum;
    }
    assert_eq!(consumed, 64 * 5 * 2);
}

/// 64 concurrent consumes of 2 units against 100 (on SQLite most of them in a few group
/// commits, where the consume that crosses the threshold and the one that empties the balance
/// are applied among the others): `balance.low` and `balance.depleted` are each sent once, and
/// the ledger adds up row by row.
async fn concurrent_consumes_announce_low_and_depleted_once(db: Db) {
    let s = Arc::new(TestServer::start(db).await);
    metered_with_balance_hooks(&s).await;
    give(&s, "crowd", 100).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post_idem(
                "/v1/permissions/ai_credits/consume",
                Some(&json!({"customid": "crowd", "units": 2, "metadata": {"n": i}})),
                &format!("crowd-{i}"),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(assert_ledger_adds_up(&s, "crowd").await, 0);
    let rows = ledger_of(&s, "crowd").await;
    let with_metadata = rows.iter().filter(|r| r["metadata"]["n"].is_i64()).count();
    assert_eq!(with_metadata, 50, "{rows:#?}");
    assert_eq!(
        delivered_event_names(&s).await,
        ["balance.depleted", "balance.low"]
    );
}

/// The event names of the outbound deliveries made so far, sorted.
async fn delivered_event_names(s: &TestServer) -> Vec<String> {
    let page = s.get("/webhook-deliveries?limit=100").await.expect(200);
    let mut names: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["event_name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}
