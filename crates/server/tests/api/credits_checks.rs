//! Metered permissions in the permission check: `GET /v1/permissions`, its stream and the
//! subscriber view show `balance` (units available), `granted`, `consumed` and `resets_at`; a
//! consumption, a reservation, a grant, an expiry and an adjustment show in the next check and
//! are pushed to the stream; manual grants give units of a metered permission and revoking one
//! takes back what is left of them.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::ApiContext;
use tollgate_server::auth::KeyKind;
use tollgate_server::clock::{Clock, ManualClock};

use crate::common::{Db, TestServer, assert_bad_field, now_ms};
use crate::credits::metered_catalog;
use crate::entitlements::{catalog, check_now, followed, get_with};

crate::both_dbs!(
    every_change_of_a_balance_shows_in_the_next_check,
    an_expiry_and_a_grant_by_another_server_reach_the_check,
    the_stream_pushes_every_change_of_a_balance,
    manual_grants_give_units_and_revoking_takes_back_what_is_left,
    a_customer_is_served_from_the_cache_again_once_its_changes_are_heard,
    keys_revoked_in_the_dashboard_are_refused_at_once_though_cached,
);

const SEC: Duration = Duration::from_secs(1);

/// The check's entry for `permission`, or `Value::Null`.
fn entry(ps: &[Value], permission: &str) -> Value {
    ps.iter()
        .find(|p| p["identifier"] == permission)
        .cloned()
        .unwrap_or(Value::Null)
}

/// (balance, granted, consumed, is_valid) of a metered entry.
fn amounts(p: &Value) -> (i64, i64, i64, bool) {
    (
        p["balance"].as_i64().unwrap_or(-1),
        p["granted"].as_i64().unwrap_or(-1),
        p["consumed"].as_i64().unwrap_or(-1),
        p["is_valid"].as_bool().unwrap_or(false),
    )
}

async fn metered(s: &TestServer, customid: &str) -> Value {
    let pk = s.bound_key(KeyKind::Public, "default").await;
    entry(&check_now(s, &pk, customid).await, "ai_credits")
}

async fn adjust(s: &TestServer, customid: &str, units: i64) {
    s.post(
        "/v1/permissions/ai_credits/adjustments",
        json!({"customid": customid, "units": units, "reason": "test"}),
    )
    .await
    .expect(201);
}

async fn consume(s: &TestServer, customid: &str, units: i64) -> Value {
    s.post(
        "/v1/permissions/ai_credits/consume",
        json!({"customid": customid, "units": units}),
    )
    .await
    .expect(200)
}

/// A context on the test server's database with a clock of its own, as a second server (or
/// `tollgate` run beside it) has.
async fn other_server(s: &TestServer) -> (ApiContext, Arc<ManualClock>) {
    let clock = ManualClock::new();
    clock.set_ms(now_ms() / 1000 * 1000);
    let ctx = tollgate_server::context(
        s.config.clone(),
        clock.clone(),
        Some(format!("{}/sandbox/stripe", s.base)),
    )
    .await
    .expect("context");
    (ctx, clock)
}

async fn every_change_of_a_balance_shows_in_the_next_check(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    adjust(&s, "u1", 100).await;
    // A grant of `premium` beside it: a permission that is not metered shows as it always did.
    s.post(
        "/v1/subscribers/u1/grants",
        json!({"permission": "premium", "reason": "beside"}),
    )
    .await
    .expect(201);
    followed(&s).await;
    let ps = check_now(&s, &pk, "u1").await;
    let p = entry(&ps, "ai_credits");
    assert_eq!(amounts(&p), (100, 100, 0, true), "{p}");
    assert_eq!(p["resets_at"], Value::Null, "{p}");
    assert_eq!(
        (p["entitlement"].as_i64(), &p["expires_at"]),
        (Some(2), &Value::Null)
    );
    let premium = entry(&ps, "premium");
    let keys: Vec<&str> = premium
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "identifier",
            "is_valid",
            "entitlement",
            "expires_date",
            "expires_at",
            "skuarray"
        ],
        "{premium}"
    );
    // Read again: now from the check's cache. Each change below must show in the very next
    // check, with no wait for the change feed.
    let first = get_with(&s, &pk, "/v1/permissions?customid=u1").await;
    let etag = first.header("etag").unwrap_or_default().to_string();
    assert!(!etag.is_empty());
    assert_eq!(consume(&s, "u1", 30).await["balance"], 70);
    assert_eq!(amounts(&metered(&s, "u1").await), (70, 100, 30, true));
    let r = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=u1"))
                .bearer_auth(&pk)
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(r.status, 200, "a consumption changes the ETag");
    // A reservation holds units: the check shows what is available.
    let rsv = s
        .post(
            "/v1/permissions/ai_credits/reservations",
            json!({"customid": "u1", "units": 70}),
        )
        .await
        .expect(201);
    assert_eq!(amounts(&metered(&s, "u1").await), (0, 100, 30, false));
    let id = rsv["id"].as_str().unwrap();
    s.post(
        &format!("/v1/permissions/ai_credits/reservations/{id}/commit"),
        json!({"units": 20}),
    )
    .await
    .expect(200);
    assert_eq!(amounts(&metered(&s, "u1").await), (50, 100, 50, true));
    // An adjustment.
    adjust(&s, "u1", -50).await;
    assert_eq!(amounts(&metered(&s, "u1").await), (0, 100, 100, false));
    adjust(&s, "u1", 25).await;
    assert_eq!(amounts(&metered(&s, "u1").await), (25, 125, 100, true));
    // A grant with units and an end: `resets_at` is its end, in epoch seconds.
    let until = (now_ms() / 1000 + 30 * 86_400) * 1000;
    s.post(
        "/v1/subscribers/u1/grants",
        json!({"permission": "ai_credits", "reason": "support", "units": 500,
               "expires_at": tollgate_server::clock::rfc3339(until)}),
    )
    .await
    .expect(201);
    let p = metered(&s, "u1").await;
    assert_eq!(amounts(&p), (525, 625, 100, true), "{p}");
    assert_eq!(p["resets_at"].as_i64(), Some(until / 1000), "{p}");
    // The subscriber view shows the same.
    let sub = s.get("/v1/subscribers/u1").await.expect(200);
    let p = entry(sub["permissions"].as_array().unwrap(), "ai_credits");
    assert_eq!(amounts(&p), (525, 625, 100, true), "{p}");
}

async fn an_expiry_and_a_grant_by_another_server_reach_the_check(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    let (ctx, clock) = other_server(&s).await;
    let t0 = clock.now_ms();
    adjust(&s, "u2", 10).await;
    followed(&s).await;
    assert_eq!(amounts(&metered(&s, "u2").await), (10, 10, 0, true));
    // Another server grants 40 units for an hour.
    let body = serde_json::from_value(json!({"permission": "ai_credits", "reason": "trial",
        "expires_at": tollgate_server::clock::rfc3339(t0 + 3_600_000)}))
    .expect("body");
    tollgate_server::api::entitlements::grant_units(
        &ctx,
        "default",
        "u2",
        body,
        Some(40),
        "key:test".into(),
    )
    .await
    .expect("granted");
    followed(&s).await;
    let p = metered(&s, "u2").await;
    assert_eq!(amounts(&p), (50, 50, 0, true), "{p}");
    assert_eq!(p["resets_at"].as_i64(), Some(t0 / 1000 + 3600), "{p}");
    // On its clock the hour passes and its expiry job ends the grant's units.
    clock.advance_ms(2 * 3_600_000);
    let settled = tollgate_server::entitlements::credits::settle_due(&ctx)
        .await
        .expect("settled");
    assert_eq!(settled, 1);
    followed(&s).await;
    let p = metered(&s, "u2").await;
    assert_eq!(amounts(&p), (10, 10, 0, true), "{p}");
    assert_eq!(p["resets_at"], Value::Null, "{p}");
}

async fn the_stream_pushes_every_change_of_a_balance(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    adjust(&s, "u3", 10).await;
    followed(&s).await;
    let mut st = crate::stream::open(&s, &pk, "customid=u3", &[])
        .await
        .expect("the stream");
    let ev = st.next(5 * SEC).await.expect("the first event");
    assert_eq!(
        amounts(&entry(
            ev.data["permissions"].as_array().unwrap(),
            "ai_credits"
        ))
        .0,
        10
    );
    let mut last_id = ev.id.clone();
    for (what, want) in [("consume", 7), ("reserve", 4), ("adjust", 104)] {
        match what {
            "consume" => {
                consume(&s, "u3", 3).await;
            }
            "reserve" => {
                s.post(
                    "/v1/permissions/ai_credits/reservations",
                    json!({"customid": "u3", "units": 3}),
                )
                .await
                .expect(201);
            }
            _ => adjust(&s, "u3", 100).await,
        }
        let ev = st
            .next(10 * SEC)
            .await
            .unwrap_or_else(|| panic!("{what} pushed"));
        let p = entry(ev.data["permissions"].as_array().unwrap(), "ai_credits");
        assert_eq!(p["balance"].as_i64(), Some(want), "{what}: {p}");
        assert_ne!(ev.id, last_id, "{what}: a new event id");
        last_id = ev.id.clone();
    }
}

async fn manual_grants_give_units_and_revoking_takes_back_what_is_left(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    // Units only for metered permissions, and required for them.
    let r = s
        .post(
            "/v1/subscribers/u4/grants",
            json!({"permission": "premium", "reason": "r", "units": 5}),
        )
        .await;
    assert_bad_field(&r, "body", "/units");
    let r = s
        .post(
            "/v1/subscribers/u4/grants",
            json!({"permission": "ai_credits", "reason": "r"}),
        )
        .await;
    assert_bad_field(&r, "body", "/units");
    for bad in [
        json!(0),
        json!(-3),
        json!(1_000_000_000_001_i64),
        json!("5"),
    ] {
        let r = s
            .post(
                "/v1/subscribers/u4/grants",
                json!({"permission": "ai_credits", "reason": "r", "units": bad}),
            )
            .await;
        assert_bad_field(&r, "body", "/units");
    }
    // Nothing was written by the refusals.
    let grants = s.get("/v1/subscribers/u4/grants").await.expect(200);
    assert_eq!(
        grants["items"].as_array().map(Vec::len),
        Some(0),
        "{grants}"
    );
    // A grant of 500 units.
    let g = s
        .post(
            "/v1/subscribers/u4/grants",
            json!({"permission": "ai_credits", "reason": "Goodwill after the outage", "units": 500}),
        )
        .await
        .expect(201);
    assert_eq!(g["units"], 500, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    let premium = s
        .post(
            "/v1/subscribers/u4/grants",
            json!({"permission": "premium", "reason": "beside"}),
        )
        .await
        .expect(201);
    assert_eq!(premium["units"], Value::Null, "{premium}");
    let ledger = s.get("/v1/subscribers/u4/ledger").await.expect(200);
    let row = &ledger["items"][0];
    assert_eq!(
        (&row["kind"], &row["units"], &row["reason"], &row["lot"]),
        (
            &json!("grant"),
            &json!(500),
            &json!("Goodwill after the outage"),
            &json!(id)
        ),
        "{ledger}"
    );
    let p = metered(&s, "u4").await;
    assert_eq!(amounts(&p), (500, 500, 0, true), "{p}");
    assert_eq!(p["entitlement"], 2, "{p}");
    consume(&s, "u4", 200).await;
    // Revoked: the 300 left are taken back, the 200 consumed are the shortfall.
    let r = s
        .send(s.request(Method::DELETE, &format!("/v1/subscribers/u4/grants/{id}")))
        .await;
    let revoked = r.expect(200);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert_eq!(revoked["units"], 500, "{revoked}");
    let ledger = s.get("/v1/subscribers/u4/ledger").await.expect(200);
    let row = &ledger["items"][0];
    assert_eq!(
        (&row["kind"], &row["units"], &row["shortfall"], &row["lot"]),
        (&json!("clawback"), &json!(-300), &json!(200), &json!(id)),
        "{ledger}"
    );
    let p = metered(&s, "u4").await;
    assert_eq!(
        (p["balance"].as_i64(), p["is_valid"].as_bool()),
        (Some(0), Some(false)),
        "{p}"
    );
    // Revoking again takes nothing more.
    s.send(s.request(Method::DELETE, &format!("/v1/subscribers/u4/grants/{id}")))
        .await
        .expect(200);
    let again = s.get("/v1/subscribers/u4/ledger").await.expect(200);
    assert_eq!(again["items"].as_array().map(Vec::len), Some(3), "{again}");
    // The list and the subscriber view show the units.
    let list = s.get("/v1/subscribers/u4/grants").await.expect(200);
    let units: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["units"])
        .collect();
    assert_eq!(units, [&json!(500), &Value::Null], "{list}");
    let sub = s.get("/v1/subscribers/u4").await.expect(200);
    assert_eq!(sub["grants"][0]["units"], 500, "{sub}");
}

/// Permission checks served from the cache so far.
async fn cache_hits(s: &TestServer) -> i64 {
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("tollgate_permission_cache_total{result=\"hit\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A transaction that changes a customer's permissions and balances together (a grant of
/// units: the grant, its ledger row, the re-evaluation) is heard once per change it announced,
/// so the customer is cached again as soon as it is heard (PostgreSQL delivers identical
/// notifications of one transaction once).
async fn a_customer_is_served_from_the_cache_again_once_its_changes_are_heard(db: Db) {
    let s = TestServer::start(db).await;
    metered_catalog(&s, "prod_m", "prod_p").await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    s.post(
        "/v1/subscribers/u5/grants",
        json!({"permission": "ai_credits", "reason": "r", "units": 9}),
    )
    .await
    .expect(201);
    followed(&s).await;
    let before = cache_hits(&s).await;
    for _ in 0..3 {
        assert_eq!(
            amounts(&entry(&check_now(&s, &pk, "u5").await, "ai_credits")),
            (9, 9, 0, true)
        );
    }
    let hits = cache_hits(&s).await - before;
    assert!(hits >= 2, "{hits} of 3 checks from the cache");
}

/// Secret-key requests read the key from the cache the permission check uses (at most
/// `auth_cache_ms` old): a key revoked by another process still works from the cache, one
/// revoked in this server's dashboard is refused by the next request.
async fn keys_revoked_in_the_dashboard_are_refused_at_once_though_cached(db: Db) {
    // A long freshness: whatever the cache holds is served for the whole test.
    let s = TestServer::start_with(db, |c| c.auth_cache_ms = 600_000).await;
    let (cookie, token) = crate::dashboard_session::session(&s).await;
    let sk = s.bound_key(KeyKind::Secret, "default").await;
    let elsewhere = s.bound_key(KeyKind::Secret, "default").await;
    let id_of = |key: &str| {
        key.trim_start_matches("tg_sk_")
            .split('_')
            .next()
            .unwrap()
            .to_string()
    };
    // Both keys are read once, and cached.
    for key in [&sk, &elsewhere] {
        get_with(&s, key, "/transactions").await.expect(200);
        get_with(&s, key, "/v1/permissions?customid=u1")
            .await
            .expect(200);
    }
    // Revoked by another process (straight in the database): still served from the cache.
    assert!(
        tollgate_store::accounts::revoke_api_key(&s.pool, &id_of(&elsewhere), now_ms())
            .await
            .unwrap()
    );
    get_with(&s, &elsewhere, "/transactions").await.expect(200);
    // Revoked in the dashboard: refused at once, on every path.
    let r = crate::dashboard_session::post_form(
        &s,
        &format!("/dashboard/keys/{}/revoke", id_of(&sk)),
        &cookie,
        &[("csrf", &token), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    for path in ["/transactions", "/v1/permissions?customid=u1"] {
        let r = get_with(&s, &sk, path).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text);
    }
    // A wrong secret with a cached id is refused too (the secret is checked every time).
    let forged = format!("tg_sk_{}_{}", id_of(&elsewhere), "x".repeat(43));
    assert_eq!(get_with(&s, &forged, "/transactions").await.status, 401);
    // The key revoked elsewhere, revoked again in the dashboard: already revoked, and this
    // server stops taking it now.
    let r = crate::dashboard_session::post_form(
        &s,
        &format!("/dashboard/keys/{}/revoke", id_of(&elsewhere)),
        &cookie,
        &[("csrf", &token), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(get_with(&s, &elsewhere, "/transactions").await.status, 401);
}
