//! The dashboard's customers: the list's store query (customid prefix, holding now, cursor,
//! Stripe customer) and the customer page's forms (a refused adjustment keeps the input with
//! the message next to the field; an accepted one commits with its ledger row).

use serde_json::json;
use tollgate_store::customers::{self as store_customers, Holding};

use crate::common::{Db, TestServer, now_ms};
use crate::dashboard_session::{csrf_of, get_with, login, operator, post_form};

crate::both_dbs!(
    the_list_pages_filters_and_finds_stripe_customers,
    adjustments_keep_refused_input_and_commit_with_their_ledger_row,
    the_catalogue_names_products_and_shows_ids_when_stripe_fails,
);

async fn catalogue(s: &TestServer) {
    s.post(
        "/v1/skus",
        json!({"identifier": "pro", "product_id": "prod_pro", "kind": "subscription"}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["pro"]}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "credits", "kind": "metered", "skus": []}),
    )
    .await
    .expect(201);
}

async fn grant(s: &TestServer, customid: &str, expires_at: Option<String>) -> String {
    let g = s
        .post(
            &format!("/v1/subscribers/{customid}/grants"),
            json!({"permission": "premium", "reason": "test", "expires_at": expires_at}),
        )
        .await
        .expect(201);
    g["id"].as_str().unwrap_or_default().to_string()
}

async fn ids(
    s: &TestServer,
    prefix: &str,
    after: Option<&str>,
    holding: Holding,
    now: i64,
    limit: i64,
) -> Vec<String> {
    store_customers::page(&s.pool, "default", prefix, after, holding, now, limit)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.customid)
        .collect()
}

async fn the_list_pages_filters_and_finds_stripe_customers(db: Db) {
    let s = TestServer::start(db).await;
    catalogue(&s).await;
    // user-a1 holds premium for an hour; user-a2's grant is revoked; user-b1 has credits only.
    let in_an_hour = time::OffsetDateTime::from_unix_timestamp(now_ms() / 1000 + 3600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    grant(&s, "user-a1", Some(in_an_hour)).await;
    let g = grant(&s, "user-a2", None).await;
    s.send(s.request(
        reqwest::Method::DELETE,
        &format!("/v1/subscribers/user-a2/grants/{g}"),
    ))
    .await
    .expect(200);
    s.post(
        "/v1/permissions/credits/adjustments",
        json!({"customid": "user-b1", "units": 10, "reason": "welcome"}),
    )
    .await
    .expect(201);
    for i in 0..27 {
        grant(&s, &format!("bulk-{i:02}"), None).await;
    }
    let now = now_ms();

    assert_eq!(
        ids(&s, "user-a", None, Holding::Any, now, 25).await,
        ["user-a1", "user-a2"]
    );
    assert_eq!(
        ids(&s, "user-", None, Holding::Active, now, 25).await,
        ["user-a1", "user-b1"],
        "a grant and units available count as holding"
    );
    assert_eq!(
        ids(&s, "user-", None, Holding::Inactive, now, 25).await,
        ["user-a2"]
    );
    // Two hours on, user-a1's grant has lapsed (before the expiry job rewrites its row).
    assert_eq!(
        ids(&s, "user-", None, Holding::Inactive, now + 7_200_000, 25).await,
        ["user-a1", "user-a2"]
    );
    // The held count: one permission each.
    let page = store_customers::page(&s.pool, "default", "user-", None, Holding::Any, now, 25)
        .await
        .unwrap();
    let held: Vec<i64> = page.items.iter().map(|c| c.held).collect();
    assert_eq!(held, [1, 0, 1]);

    // Pages of 25 by cursor, in customid order, nothing skipped or repeated.
    let first = ids(&s, "bulk-", None, Holding::Any, now, 25).await;
    assert_eq!(first.len(), 25);
    assert_eq!(first[0], "bulk-00");
    let second = ids(
        &s,
        "bulk-",
        first.last().map(String::as_str),
        Holding::Any,
        now,
        25,
    )
    .await;
    assert_eq!(second, ["bulk-25", "bulk-26"]);
    assert_eq!(ids(&s, "", None, Holding::Any, now, 100).await.len(), 30);
    assert_eq!(
        ids(&s, "", None, Holding::Any, now, 2).await,
        ["bulk-00", "bulk-01"]
    );
    // A prefix is a prefix: not a pattern.
    assert!(
        ids(&s, "user-%", None, Holding::Any, now, 25)
            .await
            .is_empty()
    );
    assert!(
        ids(&s, "_ser", None, Holding::Any, now, 25)
            .await
            .is_empty()
    );
    // Another merchant account sees none of them.
    assert!(
        store_customers::page(&s.pool, "other", "", None, Holding::Any, now, 25)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A filter reads the customers a batch at a time: 300 holding nothing, then one holding.
    for i in 0..300 {
        sqlx::query(
            "INSERT INTO credit_balances (merchant_account_id, customid, permission, balance,
                updated_at) VALUES ('default', $1, 'credits', 0, $2)",
        )
        .bind(format!("pad-{i:03}"))
        .bind(now)
        .execute(&s.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO credit_balances (merchant_account_id, customid, permission, balance,
            updated_at) VALUES ('default', 'zz-holder', 'credits', 5, $1)",
    )
    .bind(now)
    .execute(&s.pool)
    .await
    .unwrap();
    let active = ids(&s, "", None, Holding::Active, now, 100).await;
    assert_eq!(active.len(), 30, "{active:?}");
    assert_eq!(active.last().map(String::as_str), Some("zz-holder"));
    let after_bulk = ids(&s, "", Some("bulk-26"), Holding::Active, now, 2).await;
    assert_eq!(after_bulk, ["user-a1", "user-b1"]);
    assert_eq!(
        ids(&s, "pad-", None, Holding::Inactive, now, 500)
            .await
            .len(),
        300
    );

    // A linked Stripe customer: found by its cus_ id, shown on the row.
    sqlx::query(
        "INSERT INTO ent_customers (connection_id, stripe_customer_id, merchant_account_id,
            customid, linked_by, test_clock, created_at, updated_at)
         VALUES ('conn-x', 'cus_Linked', 'default', 'user-b1', 'api', NULL, $1, $1)",
    )
    .bind(now)
    .execute(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        store_customers::by_stripe_customer(&s.pool, "default", "cus_Linked")
            .await
            .unwrap(),
        ["user-b1"]
    );
    let b1 = store_customers::page(&s.pool, "default", "user-b1", None, Holding::Any, now, 25)
        .await
        .unwrap();
    assert_eq!(b1.items[0].stripe_customer.as_deref(), Some("cus_Linked"));
    assert_eq!(b1.items[0].stripe_customers, 1);

    // The dashboard's list: filtered, paged, found by cus_.
    operator(&s).await;
    let cookie = login(&s).await;
    let list = get_with(&s, "/dashboard/customers?q=user-a", &cookie).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains("user-a1") && list.text.contains("user-a2"));
    assert!(!list.text.contains("bulk-00"));
    let list = get_with(&s, "/dashboard/customers?q=bulk-", &cookie).await;
    assert!(list.text.contains("bulk-24") && !list.text.contains("bulk-25"));
    assert!(
        list.text.contains("after=bulk-24"),
        "a link to the next page"
    );
    let list = get_with(&s, "/dashboard/customers?q=bulk-&after=bulk-24", &cookie).await;
    assert!(list.text.contains("bulk-25") && !list.text.contains("bulk-24<"));
    let list = get_with(&s, "/dashboard/customers?q=cus_Linked", &cookie).await;
    assert!(list.text.contains("user-b1") && !list.text.contains("user-a1"));
    let list = get_with(&s, "/dashboard/customers?q=user-&active=1", &cookie).await;
    assert!(list.text.contains("user-a1") && !list.text.contains("user-a2"));
}

async fn adjustments_keep_refused_input_and_commit_with_their_ledger_row(db: Db) {
    let s = TestServer::start(db).await;
    catalogue(&s).await;
    s.post(
        "/v1/permissions/credits/adjustments",
        json!({"customid": "user-7", "units": 10, "reason": "welcome"}),
    )
    .await
    .expect(201);
    operator(&s).await;
    let cookie = login(&s).await;
    let page = get_with(&s, "/dashboard/customers/user-7", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let token = csrf_of(&page.text);

    // Refused: units "abc", no reason. The input is kept, each message next to its field.
    let r = post_form(
        &s,
        "/dashboard/customers/user-7/adjustments",
        &cookie,
        &[
            ("csrf", &token),
            ("permission", "credits"),
            ("units", "abc"),
            ("reason", ""),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("value=\"abc\""), "{}", r.text);
    assert!(r.text.contains("aria-describedby=\"adjust_units-error\""));
    assert!(r.text.contains("id=\"adjust_units-error\""));
    assert!(r.text.contains("aria-describedby=\"adjust_reason-error\""));
    assert!(r.text.contains("Say why"));
    // Taking more than is available: refused by the credits service, said at the units.
    let r = post_form(
        &s,
        "/dashboard/customers/user-7/adjustments",
        &cookie,
        &[
            ("csrf", &token),
            ("permission", "credits"),
            ("units", "-500"),
            ("reason", "too much"),
        ],
    )
    .await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert!(r.text.contains("id=\"adjust_units-error\""), "{}", r.text);
    assert!(r.text.contains("value=\"too much\""));
    let b = s.get("/v1/subscribers/user-7/balances").await.expect(200);
    assert_eq!(b["items"][0]["balance"], 10, "nothing changed");

    // Accepted: +50 with a reason; the balance and the ledger row are there together.
    let r = post_form(
        &s,
        "/dashboard/customers/user-7/adjustments",
        &cookie,
        &[
            ("csrf", &token),
            ("permission", "credits"),
            ("units", "+50"),
            ("reason", "Goodwill after the outage"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let b = s.get("/v1/subscribers/user-7/balances").await.expect(200);
    assert_eq!(b["items"][0]["balance"], 60);
    let l = s.get("/v1/subscribers/user-7/ledger").await.expect(200);
    assert_eq!(l["items"][0]["kind"], "adjustment");
    assert_eq!(l["items"][0]["units"], 50);
    assert_eq!(l["items"][0]["reason"], "Goodwill after the outage");
    let page = get_with(&s, "/dashboard/customers/user-7", &cookie).await;
    assert!(page.text.contains("Goodwill after the outage"));
    assert!(page.text.contains("+50"));
    assert!(page.text.contains("data-testid=\"available-credits\">60<"));

    // A grant of a metered permission without units: refused by the API, said at the units
    // field, the reason kept.
    let r = post_form(
        &s,
        "/dashboard/customers/user-7/grants",
        &cookie,
        &[
            ("csrf", &token),
            ("permission", "credits"),
            ("units", ""),
            ("reason", "Ticket 12"),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("id=\"grant_units-error\""), "{}", r.text);
    assert!(r.text.contains("value=\"Ticket 12\""));
    // With units it is given, one ledger row more.
    let r = post_form(
        &s,
        "/dashboard/customers/user-7/grants",
        &cookie,
        &[
            ("csrf", &token),
            ("permission", "credits"),
            ("units", "25"),
            ("reason", "Ticket 12"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let b = s.get("/v1/subscribers/user-7/balances").await.expect(200);
    assert_eq!(b["items"][0]["balance"], 85);

    // The ledger is paged, newest first: 20 rows, then the rest behind "Older rows".
    for i in 0..20 {
        s.post(
            "/v1/permissions/credits/consume",
            json!({"customid": "user-7", "units": 1, "metadata": {"n": i}}),
        )
        .await
        .expect(200);
    }
    let page = get_with(&s, "/dashboard/customers/user-7", &cookie).await;
    let ledger = &page.text[page.text.find("id=\"ledger\"").unwrap_or(0)..];
    assert_eq!(ledger.matches("<td data-label=\"What\">").count(), 20);
    assert!(
        !ledger.contains("Goodwill after the outage"),
        "older rows come later"
    );
    let at = ledger.find("?ledger=").expect("a link to older rows");
    let href = &ledger[at..];
    let cursor = &href["?ledger=".len()..href.find('#').unwrap_or(href.len())];
    let older = get_with(
        &s,
        &format!("/dashboard/customers/user-7?ledger={cursor}"),
        &cookie,
    )
    .await;
    assert_eq!(older.status, 200);
    let ledger = &older.text[older.text.find("id=\"ledger\"").unwrap_or(0)..];
    assert_eq!(ledger.matches("<td data-label=\"What\">").count(), 3);
    assert!(ledger.contains("Goodwill after the outage") && ledger.contains("welcome"));
    assert!(ledger.contains("Newest rows"));
}

async fn the_catalogue_names_products_and_shows_ids_when_stripe_fails(db: Db) {
    let s = TestServer::start(db).await;
    let product = s
        .stripe_post("/v1/products", &[("name", "Pro monthly")])
        .await;
    let product = product["id"].as_str().unwrap_or_default().to_string();
    s.stripe_post(
        "/v1/prices",
        &[
            ("product", product.as_str()),
            ("currency", "usd"),
            ("unit_amount", "999"),
            ("recurring[interval]", "month"),
        ],
    )
    .await;
    s.post(
        "/v1/skus",
        json!({"identifier": "pro", "product_id": product, "kind": "subscription"}),
    )
    .await
    .expect(201);
    operator(&s).await;
    let cookie = login(&s).await;
    let page = get_with(&s, "/dashboard/catalogue", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Pro monthly"), "{}", page.text);
    assert!(page.text.contains("$9.99 / month"));

    // Stripe failing: the page still answers, with the product id and a hint.
    let s = TestServer::start(db).await;
    s.post(
        "/v1/skus",
        json!({"identifier": "pro", "product_id": "prod_Unreadable", "kind": "subscription"}),
    )
    .await
    .expect(201);
    s.faults("500", 1.0, 0).await;
    operator(&s).await;
    let cookie = login(&s).await;
    let page = get_with(&s, "/dashboard/catalogue", &cookie).await;
    s.faults_off().await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("prod_Unreadable"));
    assert!(
        page.text
            .contains("Product names and prices could not be read from Stripe just now"),
        "{}",
        page.text
    );
}
