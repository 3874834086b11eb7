//! Bad input (issue 3): each a clear error in the envelope of SPEC §8, and nothing changed in
//! the database.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;

use crate::common::{
    Db, REDIRECT_URL, Resp, TestServer, assert_bad_field, assert_error, query_param,
};

crate::both_dbs!(
    missing_amount,
    negative_amount,
    zero_amount,
    non_integer_amount,
    unknown_currency,
    country_mismatch,
    missing_redirect_url,
    missing_payment_method_in_redirect_flow,
    non_https_redirect_url,
    raw_card_data,
    unknown_fields,
    malformed_json,
    body_not_an_object,
    two_megabyte_body,
    other_merchant_accounts_transaction,
    key_naming_another_account,
    public_key_on_secret_endpoint,
    no_key,
    wrong_key,
    nul_in_json_bodies,
    nul_or_bad_text_in_paths_and_queries,
    nul_in_pages_and_dashboard_forms,
    redirect_url_is_a_parsed_url,
    stored_unusable_redirect_url_still_ends_the_payment,
    multibyte_api_version,
    operator_key_naming_an_unknown_account,
    json_handlers_survive_random_input,
);

/// Runs `request` against a server holding one transaction already, and checks the database
/// did not change.
async fn unchanged<F, Fut>(s: &TestServer, request: F) -> Resp
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let before = s.db_snapshot().await;
    let intents_before = s.stripe_get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    let r = request().await;
    assert_eq!(
        s.db_snapshot().await,
        before,
        "the database changed: {}",
        r.text
    );
    let intents_after = s.stripe_get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(intents_after, intents_before, "a PaymentIntent was made");
    r
}

async fn server_with_one_transaction(db: Db) -> (TestServer, Value) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(100, "authorize").await;
    (s, tx)
}

fn body_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut b = TestServer::redirect_body(1000, "capture");
    change(&mut b);
    b
}

async fn create_refused(db: Db, body: Value, pointer: &str) {
    let (s, _) = server_with_one_transaction(db).await;
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", pointer);
}

async fn missing_amount(db: Db) {
    create_refused(
        db,
        body_with(|b| drop(b.as_object_mut().unwrap().remove("amount"))),
        "/amount",
    )
    .await;
}

async fn negative_amount(db: Db) {
    create_refused(db, body_with(|b| b["amount"] = json!(-1)), "/amount").await;
}

async fn zero_amount(db: Db) {
    create_refused(db, body_with(|b| b["amount"] = json!(0)), "/amount").await;
}

async fn non_integer_amount(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for amount in [json!(10.5), json!("1000"), json!(null), json!(1e3)] {
        let body = body_with(|b| b["amount"] = amount.clone());
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", "/amount");
    }
}

async fn unknown_currency(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for currency in ["XYZ", "usd1", ""] {
        let body = body_with(|b| {
            b["currency"] = json!(currency);
            b["payment_method"]
                .as_object_mut()
                .unwrap()
                .remove("currency");
        });
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", "/currency");
    }
}

async fn country_mismatch(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let body = body_with(|b| b["payment_method"]["country"] = json!("GB"));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/country");
    let body = body_with(|b| b["payment_method"]["currency"] = json!("EUR"));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/currency");
}

async fn missing_redirect_url(db: Db) {
    create_refused(
        db,
        body_with(|b| {
            drop(
                b["payment_method"]
                    .as_object_mut()
                    .unwrap()
                    .remove("redirect_url"),
            )
        }),
        "/payment_method/redirect_url",
    )
    .await;
}

async fn missing_payment_method_in_redirect_flow(db: Db) {
    create_refused(
        db,
        body_with(|b| drop(b.as_object_mut().unwrap().remove("payment_method"))),
        "/payment_method",
    )
    .await;
}

/// A create with `url` as its redirect URL is refused naming the field, and changes nothing.
async fn assert_redirect_url_refused(s: &TestServer, url: &str) {
    let body = body_with(|b| b["payment_method"]["redirect_url"] = json!(url));
    let r = unchanged(s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/redirect_url");
}

async fn non_https_redirect_url(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for url in [
        "http://merchant.example/callback",
        "ftp://merchant.example/",
        "merchant.example",
        "https://",
    ] {
        assert_redirect_url_refused(&s, url).await;
    }
}

async fn raw_card_data(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    // As the seed SDK sends a card (CardWithURLPaymentMethodCreate).
    let body = json!({
        "amount": 1000, "currency": "USD",
        "payment_method": {"method": "card", "number": "4242424242424242",
                           "expiration_date": "12/30", "security_code": "123",
                           "redirect_url": REDIRECT_URL},
    });
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    let b = assert_error(&r, 400, "bad_request");
    assert!(
        b["details"][0]["pointer"]
            .as_str()
            .unwrap()
            .starts_with("/payment_method/"),
        "{b}"
    );
    assert!(
        !r.text.contains("4242424242424242"),
        "the card number is echoed: {}",
        r.text
    );
    // Even beside other mistakes, raw card data is what is refused.
    let body = json!({"amount": "x", "bogus": 1, "payment_method": {"method": "card", "security_code": "123"}});
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/security_code");
}

async fn unknown_fields(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let body = body_with(|b| b["no_such_field"] = json!(true));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/no_such_field");
    let body = body_with(|b| b["payment_method"]["no_such_field"] = json!(1));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/no_such_field");
    // The seed API's own fields are accepted (and ignored).
    let body = body_with(|b| {
        for k in [
            "store",
            "is_subsequent_payment",
            "merchant_initiated",
            "async_capture",
            "account_funding_transaction",
            "allow_partial_authorization",
        ] {
            b[k] = json!(false);
        }
    });
    s.post("/transactions", body).await.expect(201);
}

async fn malformed_json(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    for path in [
        "/transactions".to_string(),
        format!("/transactions/{id}/capture"),
    ] {
        let rb = s
            .request(Method::POST, &path)
            .header("content-type", "application/json")
            .body(r#"{"amount": 100, "currency": "USD""#);
        let r = unchanged(&s, || s.send(rb)).await;
        let b = assert_error(&r, 400, "bad_request");
        assert_eq!(b["details"][0]["location"], "body", "{b}");
    }
}

async fn body_not_an_object(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for body in [json!([1, 2]), json!("amount"), json!(1000)] {
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_error(&r, 400, "bad_request");
    }
}

/// A body over the 1 MiB limit, its size the only thing wrong with it (`cart_items` is a seed
/// API field Tollgate accepts and ignores).
fn oversized(bytes: usize) -> Value {
    body_with(|b| b["cart_items"] = json!([{"name": "x".repeat(bytes)}]))
}

#[track_caller]
fn assert_too_large(r: &Resp) {
    let b = assert_error(r, 400, "bad_request");
    assert!(
        b["message"].as_str().unwrap().contains("larger than"),
        "{b}"
    );
}

async fn two_megabyte_body(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let post = |path: &str, body: Value, key: Option<&str>| {
        let path = path.to_string();
        let key = key.map(str::to_string);
        let s = &s;
        move || {
            let mut rb = s.request(Method::POST, &path).json(&body);
            if let Some(k) = &key {
                rb = rb.header("idempotency-key", k);
            }
            rb
        }
    };
    let big = oversized(2 * 1024 * 1024);
    let r = unchanged(&s, || {
        s.send_oversized(post("/transactions", big.clone(), None))
    })
    .await;
    assert_too_large(&r);
    // With an Idempotency-Key too (the key middleware reads the body first).
    let r = unchanged(&s, || {
        s.send_oversized(post("/transactions", big, Some("big-1")))
    })
    .await;
    assert_too_large(&r);
    // Just over the limit is refused as well, on every endpoint.
    let body = oversized(1024 * 1024 + 16);
    let r = unchanged(&s, || s.send_oversized(post("/transactions", body, None))).await;
    assert_too_large(&r);
    let path = format!("/transactions/{}/capture", tx["id"].as_str().unwrap());
    let body = json!({"amount": 100, "airline": {"legs": "x".repeat(1024 * 1024 + 16)}});
    let r = unchanged(&s, || s.send_oversized(post(&path, body, None))).await;
    assert_too_large(&r);
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["status"],
        "authorization_succeeded"
    );
    // Under the limit, the same fields are accepted.
    s.post("/transactions", oversized(1000)).await.expect(201);
}

/// `rb` with an empty JSON object as its body when `method` is POST.
fn empty_body_if_post(rb: reqwest::RequestBuilder, method: &Method) -> reqwest::RequestBuilder {
    if *method == Method::POST {
        rb.json(&json!({}))
    } else {
        rb
    }
}

async fn other_merchant_accounts_transaction(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let id = tx["id"].as_str().unwrap();
    let other = s.merchant_account("shop-b").await;
    let before = s.db_snapshot().await;
    for (method, path) in [
        (Method::GET, format!("/transactions/{id}")),
        (Method::GET, format!("/transactions/{id}/refunds")),
        (Method::GET, format!("/transactions/{id}/events")),
        (Method::POST, format!("/transactions/{id}/capture")),
        (Method::POST, format!("/transactions/{id}/void")),
        (Method::POST, format!("/transactions/{id}/cancel")),
        (Method::POST, format!("/transactions/{id}/sync")),
        (Method::POST, format!("/transactions/{id}/refunds")),
    ] {
        let rb = empty_body_if_post(
            s.http
                .request(method.clone(), s.url(&path))
                .bearer_auth(&other),
            &method,
        );
        let r = s.send(rb).await;
        assert_error(&r, 404, "not_found");
        // Nor does the operator key see it when it acts for the other account.
        let rb = empty_body_if_post(
            s.request(method.clone(), &path)
                .header("x-merchant-account-id", "shop-b"),
            &method,
        );
        assert_error(&s.send(rb).await, 404, "not_found");
    }
    let list = s
        .send(s.http.get(s.url("/transactions")).bearer_auth(&other))
        .await
        .expect(200);
    assert_eq!(list["items"], json!([]));
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.get_tx(id).await["status"], "authorization_succeeded");
}

async fn key_naming_another_account(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let key_b = s.merchant_account("shop-b").await;
    let id = tx["id"].as_str().unwrap();
    for header in ["x-merchant-account-id", "x-gr4vy-merchant-account-id"] {
        let rb = s
            .http
            .post(s.url("/transactions"))
            .bearer_auth(&key_b)
            .header(header, "default")
            .json(&TestServer::redirect_body(100, "capture"));
        let r = unchanged(&s, || s.send(rb)).await;
        assert_error(&r, 403, "forbidden");
        let rb = s
            .http
            .get(s.url(&format!("/transactions/{id}")))
            .bearer_auth(&key_b)
            .header(header, "default");
        assert_error(&s.send(rb).await, 403, "forbidden");
    }
    // Naming its own account is fine.
    let rb = s
        .http
        .get(s.url("/transactions"))
        .bearer_auth(&key_b)
        .header("x-merchant-account-id", "shop-b");
    s.send(rb).await.expect(200);
}

async fn public_key_on_secret_endpoint(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let public = s.bound_key(KeyKind::Public, "default").await;
    let id = tx["id"].as_str().unwrap();
    let rb = s
        .http
        .post(s.url("/transactions"))
        .bearer_auth(&public)
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 403, "forbidden");
    for path in [format!("/transactions/{id}"), "/transactions".to_string()] {
        let r = s.send(s.http.get(s.url(&path)).bearer_auth(&public)).await;
        assert_error(&r, 403, "forbidden");
    }
    let rb = s
        .http
        .post(s.url(&format!("/transactions/{id}/cancel")))
        .bearer_auth(&public);
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 403, "forbidden");
}

async fn no_key(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    let rb = s
        .http
        .post(s.url("/transactions"))
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
    let r = s
        .send(s.http.get(s.url(&format!("/transactions/{id}"))))
        .await;
    assert_error(&r, 401, "unauthorized");
    let rb = s.http.post(s.url(&format!("/transactions/{id}/cancel")));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
    // With an Idempotency-Key, authentication still comes first.
    let rb = s
        .http
        .post(s.url("/transactions"))
        .header("idempotency-key", "k1")
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
}

async fn wrong_key(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let mut forged = s.key.clone();
    forged.pop();
    forged.push(if s.key.ends_with('A') { 'B' } else { 'A' });
    for key in [
        forged.as_str(),
        "tg_sk_nope_nope",
        "sk_test_123",
        "Basic abc",
    ] {
        let rb = s
            .http
            .post(s.url("/transactions"))
            .bearer_auth(key)
            .json(&TestServer::redirect_body(100, "capture"));
        let r = unchanged(&s, || s.send(rb)).await;
        assert_error(&r, 401, "unauthorized");
    }
}

// ---- text Tollgate cannot store (NUL), URLs, multi-byte input, random input ------------------

const NUL: &str = "\u{0}";

/// A NUL in any JSON string or key is a 400 naming it, before anything is stored or Stripe is
/// called: on PostgreSQL such a create used to leave a PaymentIntent at Stripe and answer 500.
async fn nul_in_json_bodies(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    let creates: Vec<(Value, &str)> = vec![
        (
            body_with(|b| b["external_identifier"] = json!(format!("order{NUL}42"))),
            "/external_identifier",
        ),
        (
            body_with(|b| b["metadata"]["k"] = json!(NUL)),
            "/metadata/k",
        ),
        (
            body_with(|b| b["metadata"] = json!({format!("k{NUL}"): "v"})),
            "/metadata/k\u{0}",
        ),
        (
            body_with(|b| {
                b["payment_method"]["redirect_url"] = json!(format!("{REDIRECT_URL}{NUL}"))
            }),
            "/payment_method/redirect_url",
        ),
        (
            body_with(|b| b["customid"] = json!(format!("user{NUL}"))),
            "/customid",
        ),
        // Even in a field Tollgate accepts and ignores.
        (
            body_with(|b| b["cart_items"] = json!([{"name": "ok"}, {"name": NUL}])),
            "/cart_items/1/name",
        ),
    ];
    for (body, pointer) in creates {
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", pointer);
    }
    // With an Idempotency-Key as well (the key middleware reads the body first).
    let body = body_with(|b| b["external_identifier"] = json!(NUL));
    let r = unchanged(&s, || s.post_idem("/transactions", Some(&body), "nul-1")).await;
    assert_bad_field(&r, "body", "/external_identifier");
    let conn = first_connection_id(&s).await;
    let others: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            format!("/transactions/{id}/capture"),
            json!({"external_identifier": NUL}),
            "/external_identifier",
        ),
        (
            Method::POST,
            format!("/transactions/{id}/refunds"),
            json!({"amount": 1, "reason": NUL}),
            "/reason",
        ),
        (
            Method::POST,
            "/merchant-accounts".into(),
            json!({"id": "shop-nul", "display_name": format!("Shop{NUL}")}),
            "/display_name",
        ),
        (
            Method::PATCH,
            format!("/connections/{conn}"),
            json!({"display_name": NUL}),
            "/display_name",
        ),
        (
            Method::POST,
            "/v1/skus".into(),
            json!({"identifier": format!("sku{NUL}"), "product_id": "prod_1"}),
            "/identifier",
        ),
        (
            Method::POST,
            "/v1/connect_stripe".into(),
            json!({"customid": "u1", "customerid": format!("cus_{NUL}")}),
            "/customerid",
        ),
        (
            Method::POST,
            "/webhook-subscriptions".into(),
            json!({"url": "https://merchant.example/hook", "events": [format!("transaction.*{NUL}")]}),
            "/events/0",
        ),
    ];
    for (method, path, body, pointer) in others {
        let r = unchanged(&s, || s.send(s.request(method, &path).json(&body))).await;
        assert_bad_field(&r, "body", pointer);
    }
    assert_eq!(
        s.get("/merchant-accounts").await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no merchant account was made"
    );
    assert_eq!(s.get("/v1/skus").await.expect(200)["items"], json!([]));
}

/// Path and query parameters: a NUL, or a path parameter that is not UTF-8, is a 400 in the
/// error envelope naming the parameter.
async fn nul_or_bad_text_in_paths_and_queries(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    let public = s.bound_key(KeyKind::Public, "default").await;
    let cases: Vec<(Method, String, &str, &str)> = vec![
        (Method::GET, "/transactions/a%00b".into(), "path", "/id"),
        (Method::GET, "/transactions/%FF%FE".into(), "path", "/id"),
        (
            Method::POST,
            format!("/transactions/{id}%00/capture"),
            "path",
            "/id",
        ),
        (
            Method::POST,
            format!("/transactions/{id}/refunds/%00"),
            "path",
            "/refund_id",
        ),
        (Method::DELETE, "/connections/%00".into(), "path", "/id"),
        (Method::GET, "/v1/skus/sku%00".into(), "path", "/identifier"),
        (
            Method::GET,
            "/v1/subscribers/user%00".into(),
            "path",
            "/customid",
        ),
        (
            Method::GET,
            "/transactions?customid=a%00b".into(),
            "query",
            "/customid",
        ),
        (
            Method::GET,
            "/transactions?id=%00&limit=5".into(),
            "query",
            "/id",
        ),
        (
            Method::GET,
            "/webhook-events?stripe_event_id=evt%00".into(),
            "query",
            "/stripe_event_id",
        ),
        (
            Method::GET,
            "/webhook-deliveries?status=%00".into(),
            "query",
            "/status",
        ),
    ];
    for (method, path, location, pointer) in cases {
        let rb = empty_body_if_post(s.request(method.clone(), &path), &method);
        let r = unchanged(&s, || s.send(rb)).await;
        assert_bad_field(&r, location, pointer);
    }
    // The permission check (public key) too.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user%00"))
                .bearer_auth(&public),
        )
        .await;
    assert_bad_field(&r, "query", "/customid");
}

/// The hosted pages answer their plain "not valid" page; the dashboard refuses a form (even the
/// login form) with a NUL in any field, and changes nothing.
async fn nul_in_pages_and_dashboard_forms(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    for path in [
        format!("/pay/{id}%00?token=x"),
        format!("/pay/{id}?token=a%00"),
        format!("/pay/{id}/complete?token=%00"),
        format!("/pay/{id}/complete?payment_intent_client_secret=pi%00"),
    ] {
        let r = s.send(s.http.get(s.url(&path))).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("text/html"),
            "{path}"
        );
    }
    let (cookie, csrf) = crate::dashboard_session::session(&s).await;
    // The login form: looking the name up used to fail on PostgreSQL (500).
    let r =
        crate::dashboard_session::try_login_as(&s, &format!("adm{NUL}in"), "whatever it is", None)
            .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("NUL"), "{}", r.text);
    // A signed-in operator's forms, and a page's path and query.
    let before = s.db_snapshot().await;
    for (path, form) in [
        (
            "/dashboard/skus",
            vec![
                ("identifier", format!("sku{NUL}")),
                ("product_id", "prod_1".into()),
            ],
        ),
        (
            "/dashboard/keys",
            vec![
                ("kind", "secret".into()),
                ("display_name", format!("k{NUL}")),
            ],
        ),
        (
            &*format!("/dashboard/transactions/{id}/refund"),
            vec![
                ("amount", "1".into()),
                (&*format!("reason{NUL}"), "x".into()),
            ],
        ),
    ] {
        let mut fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(("csrf", &csrf));
        let r = s
            .send(
                s.http
                    .post(s.url(path))
                    .header("cookie", &cookie)
                    .form(&fields),
            )
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(r.text.contains("Nothing was changed"), "{path}: {}", r.text);
    }
    for path in [
        "/dashboard/transactions/a%00".to_string(),
        "/dashboard/transactions?customid=%00".to_string(),
        "/dashboard/customers/u%00".to_string(),
    ] {
        let r = s
            .send(s.http.get(s.url(&path)).header("cookie", &cookie))
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
    }
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.get("/v1/skus").await.expect(200)["items"], json!([]));
}

/// `redirect_url` is parsed as a browser would: no control characters or spaces, no user name
/// or password (`http://localhost:80@evil.com/` is a URL of evil.com), http only on loopback.
async fn redirect_url_is_a_parsed_url(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for url in [
        "https://merchant.example/cb\r\nSet-Cookie: a=b",
        "https://merchant.example/cb\n",
        "https://merchant.example/a b",
        "https://merchant.example/\tcb",
        " https://merchant.example/cb",
        "https://merchant.example/cb\u{2028}",
        "http://localhost:80@evil.com/",
        "http://127.0.0.1@evil.com/",
        "https://user:pw@merchant.example/cb",
        "https://user@merchant.example/cb",
        "http://localhost.evil.com/",
        "http://127.0.0.1.evil.com/cb",
        "https://merchant.example:99999/",
        "javascript:alert(1)",
        "//merchant.example/cb",
    ] {
        assert_redirect_url_refused(&s, url).await;
    }
    let long = format!("https://merchant.example/{}", "a".repeat(2100));
    assert_redirect_url_refused(&s, &long).await;
    for url in [
        "http://localhost:3000/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:8080/cb",
        "HTTPS://Merchant.Example/cb",
    ] {
        let body = body_with(|b| b["payment_method"]["redirect_url"] = json!(url));
        s.post("/transactions", body).await.expect(201);
    }
    // The buyer comes back to a URL with a query and a fragment, and to one that is not ASCII:
    // the status goes into the query, and the Location is a valid header.
    for (url, want) in [
        (
            "https://merchant.example/cb?order=7#done",
            "https://merchant.example/cb?order=7&transaction_id={id}&transaction_status=capture_succeeded#done",
        ),
        (
            "https://bücher.example/ö",
            "https://xn--bcher-kva.example/%C3%B6?transaction_id={id}&transaction_status=capture_succeeded",
        ),
    ] {
        let body = body_with(|b| b["payment_method"]["redirect_url"] = json!(url));
        let tx = s.post("/transactions", body).await.expect(201);
        let r = complete_after_paying(&s, &tx).await;
        assert_eq!(r.status, 303, "{}", r.text);
        let id = tx["id"].as_str().unwrap();
        assert_eq!(
            r.header("location"),
            Some(want.replace("{id}", id).as_str())
        );
    }
}

/// Pays `tx` at the sandbox and follows its approval URL's completion link.
async fn complete_after_paying(s: &TestServer, tx: &Value) -> Resp {
    let id = tx["id"].as_str().unwrap();
    let token = query_param(
        tx["payment_method"]["approval_url"].as_str().unwrap(),
        "token",
    )
    .expect("token");
    s.approve(tx, "pm_card_visa").await.expect(200);
    s.send(
        s.http
            .get(s.url(&format!("/pay/{id}/complete?token={token}"))),
    )
    .await
}

/// A redirect URL stored before URLs were parsed, that no browser could follow: the buyer who
/// paid still gets a page saying so, never a 303 without a Location.
async fn stored_unusable_redirect_url_still_ends_the_payment(db: Db) {
    let s = TestServer::start(db).await;
    let stored = |id: String, url: &'static str| {
        let pool = s.pool.clone();
        async move {
            sqlx::query("UPDATE transactions SET redirect_url = $1 WHERE id = $2")
                .bind(url)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    // Line breaks are dropped the way a browser drops them: a valid Location.
    let tx = s.create_redirect(700, "capture").await;
    let id = tx["id"].as_str().unwrap();
    stored(id.to_string(), "https://merchant.example/cb\r\nX: y").await;
    let r = complete_after_paying(&s, &tx).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let location = r.header("location").expect("a Location");
    assert!(
        location.starts_with("https://merchant.example/cbX:%20y?transaction_id="),
        "{location}"
    );
    // Not a URL at all: a page that says the payment went through.
    let tx = s.create_redirect(700, "capture").await;
    let id = tx["id"].as_str().unwrap();
    stored(id.to_string(), "https://exa mple.com/cb").await;
    let r = complete_after_paying(&s, &tx).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("location").is_none());
    assert!(r.text.contains("capture succeeded"), "{}", r.text);
    assert_eq!(s.get_tx(id).await["status"], "capture_succeeded");
}

/// The id of the first connection `/connections` lists.
async fn first_connection_id(s: &TestServer) -> String {
    s.get("/connections").await.expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `api_version` is checked by characters: a multi-byte one where the date ends used to panic.
async fn multibyte_api_version(db: Db) {
    let s = TestServer::start(db).await;
    let conn = first_connection_id(&s).await;
    for v in [
        "2026-10-2é.endive",
        "éééééééééé",
        "2026-1€",
        "２０２６-10-28",
    ] {
        let r = s
            .send(
                s.request(Method::POST, "/connections")
                    .json(&json!({"secret_key": "sk_test_abc", "api_version": v})),
            )
            .await;
        assert_bad_field(&r, "body", "/api_version");
        let r = s
            .send(
                s.request(Method::PATCH, &format!("/connections/{conn}"))
                    .json(&json!({"api_version": v})),
            )
            .await;
        assert_bad_field(&r, "body", "/api_version");
    }
    let r = s
        .send(
            s.request(Method::PATCH, &format!("/connections/{conn}"))
                .json(&json!({"api_version": "2026-10-28.endive"})),
        )
        .await;
    assert_eq!(r.expect(200)["api_version"], "2026-10-28.endive");
}

/// An operator key naming a merchant account that does not exist gets 404, on every kind of
/// endpoint, never the default account's data or another account's defaults.
async fn operator_key_naming_an_unknown_account(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    for header in ["x-merchant-account-id", "x-gr4vy-merchant-account-id"] {
        for path in [
            "/transactions".to_string(),
            format!("/transactions/{id}"),
            "/v1/entitlements/settings".to_string(),
            "/v1/permissions?customid=user-7".to_string(),
        ] {
            let r = s
                .send(s.request(Method::GET, &path).header(header, "q"))
                .await;
            let b = assert_error(&r, 404, "not_found");
            assert!(b["message"].as_str().unwrap().contains("'q'"), "{b}");
        }
        let rb = s
            .request(Method::POST, "/transactions")
            .header(header, "q")
            .json(&TestServer::redirect_body(100, "capture"));
        let r = unchanged(&s, || s.send(rb)).await;
        assert_error(&r, 404, "not_found");
    }
    // A value that is not text names no account either (it is not the default account).
    let value = reqwest::header::HeaderValue::from_bytes(b"d\xe9fault").unwrap();
    for path in ["/transactions", "/v1/permissions?customid=user-7"] {
        let r = s
            .send(
                s.request(Method::GET, path)
                    .header("x-merchant-account-id", value.clone()),
            )
            .await;
        assert_error(&r, 404, "not_found");
    }
    // The default account, named or not, still answers.
    s.send(
        s.request(Method::GET, "/transactions")
            .header("x-merchant-account-id", "default"),
    )
    .await
    .expect(200);
}

/// Random JSON (wrong types, nesting, multi-byte and NUL strings, extreme numbers) posted to
/// every JSON handler of one server: never a 5xx, never a dropped connection (a panic), and
/// the server keeps answering.
async fn json_handlers_survive_random_input(db: Db) {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRng, TestRunner};

    let s = TestServer::start(db).await;
    let tx = s.authorized(5000).await;
    let tid = tx["id"].as_str().unwrap().to_string();
    let conn = first_connection_id(&s).await;
    s.post(
        "/v1/skus",
        json!({"identifier": "pro", "product_id": "prod_1", "kind": "subscription"}),
    )
    .await
    .expect(201);
    s.post(
        "/v1/permissions/definitions",
        json!({"identifier": "perm", "skus": ["pro"]}),
    )
    .await
    .expect(201);
    let sub = s
        .post(
            "/webhook-subscriptions",
            json!({"url": "https://merchant.example/hook", "events": ["transaction.*"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut targets: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/transactions".into(),
            TestServer::redirect_body(100, "authorize"),
        ),
        (
            Method::POST,
            "/transactions".into(),
            TestServer::direct_body(100, "capture"),
        ),
        (
            Method::POST,
            format!("/transactions/{tid}/capture"),
            json!({"amount": 100}),
        ),
        (
            Method::POST,
            format!("/transactions/{tid}/refunds"),
            json!({"amount": 1}),
        ),
        (Method::POST, format!("/transactions/{tid}/void"), json!({})),
        (
            Method::POST,
            format!("/transactions/{tid}/cancel"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/transactions/{tid}/session"),
            json!({}),
        ),
        (
            Method::POST,
            "/merchant-accounts".into(),
            json!({"id": "m1", "display_name": "M"}),
        ),
        (
            Method::POST,
            "/connections".into(),
            json!({"secret_key": "sk_test_abc", "api_version": "2026-10-28.endive"}),
        ),
        (
            Method::PATCH,
            format!("/connections/{conn}"),
            json!({"display_name": "x", "api_version": "2026-10-28.x"}),
        ),
        (
            Method::POST,
            format!("/connections/{conn}/sync"),
            json!({"since": 0}),
        ),
        (
            Method::POST,
            "/v1/skus".into(),
            json!({"identifier": "a", "product_id": "prod_2", "kind": "one_time"}),
        ),
        (
            Method::PATCH,
            "/v1/skus/pro".into(),
            json!({"product_id": "prod_3"}),
        ),
        (
            Method::POST,
            "/v1/permissions/definitions".into(),
            json!({"identifier": "p2", "skus": ["pro"]}),
        ),
        (
            Method::PATCH,
            "/v1/permissions/definitions/perm".into(),
            json!({"skus": ["pro"]}),
        ),
        (
            Method::POST,
            "/v1/connect_stripe".into(),
            json!({"customid": "u1", "customerid": "cus_1"}),
        ),
        (
            Method::PATCH,
            "/v1/entitlements/settings".into(),
            json!({"grace_days": 1}),
        ),
        (
            Method::POST,
            "/webhook-subscriptions".into(),
            json!({"url": "https://merchant.example/h", "events": ["*"]}),
        ),
        (
            Method::PATCH,
            format!("/webhook-subscriptions/{sub}"),
            json!({"active": false}),
        ),
        (
            Method::PUT,
            format!("/webhook-subscriptions/{sub}"),
            json!({"url": "https://merchant.example/h2", "events": ["*"]}),
        ),
        (
            Method::POST,
            format!("/webhook-subscriptions/{sub}/rotate-secret"),
            json!({}),
        ),
    ];
    // Ids in paths are random too.
    targets.push((
        Method::POST,
        "/transactions/{random}/capture".into(),
        json!({}),
    ));
    targets.push((Method::PATCH, "/connections/{random}".into(), json!({})));
    targets.push((
        Method::POST,
        "/webhook-events/{random}/replay".into(),
        json!({}),
    ));

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let cases = (0..targets.len(), any_json(), any_text(), 0..5usize);
    let mut seen = std::collections::BTreeMap::new();
    for n in 0..CASES {
        let (which, random, text, how) = cases.new_tree(&mut runner).unwrap().current();
        let (method, path, base) = &targets[which];
        let path = path.replace(
            "{random}",
            &percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        let body = mutate(base, random, &text, how);
        let sent = s
            .request(method.clone(), &path)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let status = match sent {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("case {n}: {method} {path} {body}: no answer ({e})"),
        };
        *seen.entry(status).or_insert(0usize) += 1;
        assert!(
            status < 500,
            "case {n}: {method} {path} {body}: HTTP {status}"
        );
    }
    eprintln!("answers to {CASES} random requests: {seen:?}");
    // Enough of them got past validation to exercise the handlers' own work.
    let accepted: usize = seen.range(200..300).map(|(_, n)| n).sum();
    assert!(accepted >= CASES / 20, "only {accepted} accepted: {seen:?}");
    s.get("/healthz").await.expect(200);
    s.get_tx(&tid).await;
}

/// Random requests per database: a few hundred, so the test stays well under a minute.
const CASES: usize = 400;

/// Strings people and programs send: ASCII, multi-byte, NUL and other control characters,
/// and long ones.
fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z0-9_.-]{0,12}",
        "\\PC{0,16}",
        "[\u{0}-\u{1f}é€😀]{0,8}",
        Just("é".repeat(600)),
        Just("2026-10-2é.x".to_string()),
        Just("https://merchant.example/cb".to_string()),
        Just("http://localhost:80@evil.com/".to_string()),
    ]
}

fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(0),
            Just(-1),
            Just(99_999_999)
        ]
        .prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Field names the handlers know, and others.
fn field_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        4 => proptest::sample::select(vec![
            "amount", "currency", "country", "intent", "payment_method", "method",
            "redirect_url", "metadata", "customid", "external_identifier", "integration_client",
            "payment_service_id", "approval_expires_at", "description", "reason", "final",
            "id", "display_name", "secret_key", "publishable_key", "webhook_secret",
            "stripe_account", "api_version", "default", "since", "identifier", "product_id",
            "kind", "store", "skus", "customerid", "force", "connection_id", "grace_days",
            "url", "events", "active", "cart_items",
        ])
        .prop_map(str::to_string),
        1 => any_text(),
    ]
}

/// The body of one case: the endpoint's valid body (`how` 0), with one field set to a random
/// string (1) or random JSON (2), random JSON instead (3), or with a random field added (4).
fn mutate(base: &Value, random: Value, text: &str, how: usize) -> String {
    let mut body = base.clone();
    let keys: Vec<String> = base
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let key = (!keys.is_empty()).then(|| keys[text.len() % keys.len()].clone());
    match (how, key) {
        (0, _) => {}
        (1, Some(k)) => body[k] = Value::String(text.to_string()),
        (2, Some(k)) => body[k] = random,
        (3, _) => body = random,
        _ => {
            if let Some(o) = body.as_object_mut() {
                o.insert(text.to_string(), random);
            }
        }
    }
    body.to_string()
}
