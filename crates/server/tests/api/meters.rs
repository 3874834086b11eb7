//! Overage of a metered permission billed through Stripe Billing Meters: a permission naming a
//! meter accepts consumption beyond its balance with `overage: "allow"`; the units beyond are on
//! the ledger row (`shortfall`) and reach the sandbox's meter as events whose identifiers are the
//! ledger rows' ids, exactly once (a resend under the same identifier counts nothing more).

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_store::meter_outbox as mo;

use crate::common::{Db, TestServer, assert_bad_field, now_ms};
use crate::entitlements::inbox;

crate::both_dbs!(overage_beyond_the_balance_reaches_the_stripe_meter_once);

/// A meter summing `event_name` at the sandbox: its id.
pub(crate) async fn sandbox_meter(s: &TestServer, event_name: &str) -> String {
    let m = s
        .stripe_post(
            "/v1/billing/meters",
            &[
                ("display_name", "Generations beyond the plan"),
                ("event_name", event_name),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await;
    m["id"].as_str().expect("a meter id").to_string()
}

/// The meter's sum for `customer` over the last and the next hour.
pub(crate) async fn meter_sum(s: &TestServer, meter: &str, customer: &str) -> i64 {
    let start = (now_ms() / 1000 / 3600) * 3600 - 3600;
    let end = start + 3 * 3600;
    let page = s
        .stripe_get(&format!(
            "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}&end_time={end}"
        ))
        .await;
    page["data"][0]["aggregated_value"].as_i64().unwrap_or(-1)
}

async fn overage_beyond_the_balance_reaches_the_stripe_meter_once(db: Db) {
    let s = TestServer::start(db).await;
    let meter = sandbox_meter(&s, "ai_generations").await;
    let cus = s
        .stripe_post("/v1/customers", &[("email", "meter@example.com")])
        .await["id"]
        .as_str()
        .expect("a customer id")
        .to_string();
    s.post(
        "/v1/connect_stripe",
        json!({"customid": "user-m", "customerid": cus}),
    )
    .await
    .expect(200);
    let (prod, _) = s.stripe_product_price("Plan", 900).await;
    s.post(
        "/v1/skus",
        json!({"identifier": "plan_monthly", "store": "stripe", "product_id": prod, "kind": "subscription"}),
    )
    .await
    .expect(201);
    // meter_event_name: metered permissions only, a Stripe event name.
    let bad = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "plain", "skus": ["plan_monthly"], "meter_event_name": "x"}),
        )
        .await;
    assert_bad_field(&bad, "body", "/meter_event_name");
    let bad = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "gens", "kind": "metered", "meter_event_name": "",
                   "skus": [{"identifier": "plan_monthly", "units": 1000, "per": "period"}]}),
        )
        .await;
    assert_bad_field(&bad, "body", "/meter_event_name");
    let def = s
        .post(
            "/v1/permissions/definitions",
            json!({"identifier": "gens", "kind": "metered", "meter_event_name": "ai_generations",
                   "skus": [{"identifier": "plan_monthly", "units": 1000, "per": "period"}]}),
        )
        .await
        .expect(201);
    assert_eq!(def["metering"]["meter_event_name"], "ai_generations");
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "nometer", "kind": "metered",
               "skus": [{"identifier": "plan_monthly", "units": 10, "per": "period"}]}),
    )
    .await
    .expect(201);
    // `allow` needs a meter.
    let r = s
        .post(
            "/v1/permissions/nometer/consume",
            json!({"customid": "user-m", "units": 1, "overage": "allow"}),
        )
        .await;
    assert_bad_field(&r, "body", "/overage");

    // A 1,000-unit plan (granted by hand here), then 1,200 consumed.
    s.post(
        "/v1/permissions/gens/adjustments",
        json!({"customid": "user-m", "units": 1000, "reason": "plan"}),
    )
    .await
    .expect(201);
    let consume = |units: i64| {
        s.post(
            "/v1/permissions/gens/consume",
            json!({"customid": "user-m", "units": units, "overage": "allow"}),
        )
    };
    let a = consume(700).await.expect(200);
    assert_eq!(
        (a["balance"].as_i64(), a["consumed"].as_i64()),
        (Some(300), Some(700))
    );
    let b = consume(400).await.expect(200);
    assert_eq!(
        (b["balance"].as_i64(), b["consumed"].as_i64()),
        (Some(0), Some(400))
    );
    let c = consume(100).await.expect(200);
    assert_eq!(
        (c["balance"].as_i64(), c["consumed"].as_i64()),
        (Some(0), Some(100))
    );
    // Without `allow` an empty balance still refuses.
    s.post(
        "/v1/permissions/gens/consume",
        json!({"customid": "user-m", "units": 1}),
    )
    .await
    .expect(402);

    // The ledger: the overage on the consumption rows, the balance never below zero.
    let ledger = s
        .get("/v1/subscribers/user-m/ledger?limit=100")
        .await
        .expect(200);
    let rows: Vec<Value> = ledger["items"].as_array().cloned().unwrap_or_default();
    let over: Vec<(i64, i64, String)> = rows
        .iter()
        .filter(|r| r["shortfall"].as_i64().unwrap_or(0) > 0)
        .map(|r| {
            (
                r["units"].as_i64().unwrap_or(0),
                r["shortfall"].as_i64().unwrap_or(0),
                r["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut amounts: Vec<(i64, i64)> = over.iter().map(|(u, o, _)| (*u, *o)).collect();
    amounts.sort();
    assert_eq!(amounts, [(-300, 100), (0, 100)], "{rows:#?}");
    assert!(rows.iter().all(|r| r["balance_after"].as_i64() >= Some(0)));

    // The worker reports both, identifiers = ledger ids.
    let mut sum = 0;
    for _ in 0..200 {
        sum = meter_sum(&s, &meter, &cus).await;
        if sum == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sum, 200);
    let (ctx, _) = inbox(&s).await;
    let queued = mo::of_customer(ctx.store.reader(), "default", "user-m")
        .await
        .expect("outbox");
    let mut ids: Vec<&str> = queued.iter().map(|q| q.ledger_id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = over.iter().map(|(_, _, id)| id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want);
    for _ in 0..200 {
        let q = mo::of_customer(ctx.store.reader(), "default", "user-m")
            .await
            .expect("outbox");
        if q.iter().all(|r| r.status == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Sent again (as after a lost answer): Stripe keeps one event per identifier.
    for id in &want {
        assert!(
            mo::requeue(ctx.store.writer(), id, 0)
                .await
                .expect("requeue")
        );
    }
    tollgate_server::credits_meter::send_due(&ctx)
        .await
        .expect("a pass");
    let q = mo::of_customer(ctx.store.reader(), "default", "user-m")
        .await
        .expect("outbox");
    assert!(q.iter().all(|r| r.status == "sent"), "{q:#?}");
    assert_eq!(meter_sum(&s, &meter, &cus).await, 200);
    // And refused by identifier without the Idempotency-Key: still once.
    let r = s
        .send(
            s.http
                .post(s.url("/sandbox/stripe/v1/billing/meter_events"))
                .bearer_auth(s.sandbox.secret_key())
                .form(&[
                    ("event_name", "ai_generations"),
                    ("identifier", want[0]),
                    ("payload[stripe_customer_id]", cus.as_str()),
                    ("payload[value]", "100"),
                ]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(meter_sum(&s, &meter, &cus).await, 200);
}
