//! Stripe Features imported as permissions (docs/stripe-entitlements.md), end to end with the
//! sandbox delivering its webhooks: the import makes each feature's lookup_key a permission
//! whose SKUs are the products carrying it; a subscriber of such a product holds it; detaching
//! the feature from the product (which Stripe announces only with the customer's
//! entitlement-summary event) takes it away under the automatic import.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Db, TestServer, assert_bad_field, assert_error, wait_for};

crate::both_dbs!(
    imported_feature_grants_subscribers_and_detaching_takes_it_away,
    import_leaves_hand_made_definitions_alone,
);

async fn sandbox_connection(s: &TestServer) -> String {
    let list = s.get("/connections").await.expect(200);
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["sandbox"] == true))
        .and_then(|c| c["id"].as_str())
        .expect("the sandbox connection")
        .to_string()
}

/// A product with a monthly price at the sandbox: (product, price).
async fn monthly_plan(s: &TestServer, name: &str) -> (String, String) {
    let product = s.stripe_post("/v1/products", &[("name", name)]).await;
    let product = product["id"].as_str().expect("product id").to_string();
    let price = s
        .stripe_post(
            "/v1/prices",
            &[
                ("product", product.as_str()),
                ("unit_amount", "900"),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    (product, price["id"].as_str().expect("price id").to_string())
}

async fn stripe_feature(s: &TestServer, key: &str) -> String {
    let f = s
        .stripe_post(
            "/v1/entitlements/features",
            &[("name", key), ("lookup_key", key)],
        )
        .await;
    f["id"].as_str().expect("feature id").to_string()
}

async fn attach(s: &TestServer, product: &str, feature: &str) -> String {
    let pf = s
        .stripe_post(
            &format!("/v1/products/{product}/features"),
            &[("entitlement_feature", feature)],
        )
        .await;
    pf["id"].as_str().expect("product feature id").to_string()
}

/// The customid's permission `identifier` as the check answers it (None: absent).
async fn permission(s: &TestServer, customid: &str, identifier: &str) -> Option<Value> {
    let r = s
        .get(&format!("/v1/permissions?customid={customid}"))
        .await
        .expect(200);
    r["permissions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["identifier"] == identifier).cloned())
}

async fn until_valid(s: &TestServer, customid: &str, identifier: &str, valid: bool, what: &str) {
    wait_for(Duration::from_secs(20), what, || async {
        let p = permission(s, customid, identifier).await;
        let held = p.as_ref().is_some_and(|p| p["is_valid"] == true);
        (held == valid).then_some(())
    })
    .await
}

async fn imported_feature_grants_subscribers_and_detaching_takes_it_away(db: Db) {
    let s = TestServer::start_with_webhooks(db).await;
    let conn = sandbox_connection(&s).await;
    let (product, price) = monthly_plan(&s, "Pro").await;
    let (other, _) = monthly_plan(&s, "Team").await;
    let analytics = stripe_feature(&s, "analytics").await;
    let pf = attach(&s, &product, &analytics).await;
    attach(&s, &other, &analytics).await;

    // Nothing imported yet.
    let state = s
        .get(&format!("/v1/connections/{conn}/import-features"))
        .await
        .expect(200);
    assert_eq!(state["automatic"], false);
    assert_eq!(state["imported_at"], Value::Null);

    let report = s
        .post(
            &format!("/v1/connections/{conn}/import-features"),
            json!({"automatic": true}),
        )
        .await
        .expect(200);
    assert_eq!(report["type"], "feature-import");
    assert_eq!(report["automatic"], true);
    assert_eq!(report["catalogue_changed"], true);
    let f = &report["features"][0];
    assert_eq!(f["feature_id"], analytics.as_str());
    assert_eq!(f["status"], "imported");
    assert_eq!(f["permission"], "analytics");
    let mut products = vec![product.clone(), other.clone()];
    products.sort();
    assert_eq!(f["products"], json!(products));
    assert_eq!(f["skus"], json!(products), "SKUs named by the product ids");
    assert_eq!(report["skus_created"], json!(products));
    // The catalogue has them.
    let def = s
        .get("/v1/permissions/definitions/analytics")
        .await
        .expect(200);
    assert_eq!(def["skus"], json!(products));
    let sku = s.get(&format!("/v1/skus/{product}")).await.expect(200);
    assert_eq!(sku["product_id"], product.as_str());
    // Importing again changes nothing.
    let again = s
        .post(
            &format!("/v1/connections/{conn}/import-features"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(again["catalogue_changed"], false);
    assert_eq!(again["automatic"], true, "the mode is kept when not given");
    assert_eq!(again["skus_created"], json!([]));

    // A subscriber of the product holds the permission.
    let cus = s
        .stripe_post(
            "/v1/customers",
            &[
                ("metadata[customid]", "user-feat"),
                ("payment_method", "pm_card_visa"),
                ("invoice_settings[default_payment_method]", "pm_card_visa"),
            ],
        )
        .await;
    let cus = cus["id"].as_str().expect("customer id").to_string();
    let sub = s
        .stripe_post(
            "/v1/subscriptions",
            &[
                ("customer", cus.as_str()),
                ("items[0][price]", price.as_str()),
            ],
        )
        .await;
    assert_eq!(sub["status"], "active", "{sub}");
    until_valid(
        &s,
        "user-feat",
        "analytics",
        true,
        "the feature's permission",
    )
    .await;
    let p = permission(&s, "user-feat", "analytics")
        .await
        .expect("held");
    assert_eq!(p["entitlement"], 5, "a renewing subscription: {p}");

    // Detaching the feature from the product takes it away: Stripe says so only with the
    // customer's entitlement summary, which makes the automatic import read the features again.
    let gone = s
        .send(
            s.http
                .delete(s.url(&format!(
                    "/sandbox/stripe/v1/products/{product}/features/{pf}"
                )))
                .bearer_auth(s.sandbox.secret_key()),
        )
        .await
        .expect(200);
    assert_eq!(gone["deleted"], true);
    until_valid(&s, "user-feat", "analytics", false, "the permission to go").await;
    let def = s
        .get("/v1/permissions/definitions/analytics")
        .await
        .expect(200);
    assert_eq!(def["skus"], json!([other.clone()]));
    let state = s
        .get(&format!("/v1/connections/{conn}/import-features"))
        .await
        .expect(200);
    assert_eq!(state["features"][0]["products"], json!([other]));
    assert!(state["imported_at"].is_string(), "{state}");

    // Archiving the feature leaves its definition without SKUs.
    s.stripe_post(
        &format!("/v1/entitlements/features/{analytics}"),
        &[("active", "false")],
    )
    .await;
    let report = s
        .post(
            &format!("/v1/connections/{conn}/import-features"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(report["features"][0]["status"], "archived", "{report}");
    let def = s
        .get("/v1/permissions/definitions/analytics")
        .await
        .expect(200);
    assert_eq!(def["skus"], json!([]));
}

async fn import_leaves_hand_made_definitions_alone(db: Db) {
    let s = TestServer::start(db).await;
    let conn = sandbox_connection(&s).await;
    let (product, _) = monthly_plan(&s, "Pro").await;
    for key in ["premium", "reports", "has space"] {
        let f = stripe_feature(&s, key).await;
        attach(&s, &product, &f).await;
    }
    // A hand-made definition named like a feature, over a hand-made SKU of the product.
    s.post(
        "/v1/skus",
        json!({"identifier": "web_monthly", "store": "stripe", "product_id": "prod_other", "kind": "subscription"}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "premium", "skus": ["web_monthly"]}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/skus",
        json!({"identifier": "pro_plan", "store": "stripe", "product_id": product, "kind": "subscription"}),
    )
    .await
    .expect(201);

    let report = s
        .post_empty(&format!("/v1/connections/{conn}/import-features"))
        .await
        .expect(200);
    let by_key = |k: &str| {
        report["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["lookup_key"] == k).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_key("premium")["status"], "conflict", "{report}");
    assert_eq!(by_key("premium")["permission"], Value::Null);
    assert_eq!(by_key("has space")["status"], "invalid_identifier");
    // The product's existing SKU is used; none is created.
    assert_eq!(by_key("reports")["status"], "imported");
    assert_eq!(by_key("reports")["skus"], json!(["pro_plan"]));
    assert_eq!(report["skus_created"], json!([]));
    assert_eq!(report["automatic"], false);
    let def = s
        .get("/v1/permissions/definitions/premium")
        .await
        .expect(200);
    assert_eq!(def["skus"], json!(["web_monthly"]), "left as it was");

    // Bad input: a field of the wrong type, an unknown field, an unknown connection.
    assert_bad_field(
        &s.post(
            &format!("/v1/connections/{conn}/import-features"),
            json!({"automatic": "yes"}),
        )
        .await,
        "body",
        "/automatic",
    );
    assert_bad_field(
        &s.post(
            &format!("/v1/connections/{conn}/import-features"),
            json!({"colour": 1}),
        )
        .await,
        "body",
        "/colour",
    );
    assert_error(
        &s.get("/v1/connections/nope/import-features").await,
        404,
        "not_found",
    );
}
