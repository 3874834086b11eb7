//! The dashboard's security rules (issue 9, "Done means"): every page and action needs a
//! session (else a redirect to login), forged forms without the CSRF token are refused and
//! change nothing, the session id changes at login and dies at logout, the API refuses the
//! dashboard's cookie, untrusted webhook payloads render inert, repeated failures lock the
//! operator, the cookie is `Secure` behind a trusted TLS proxy; and dashboard actions go
//! through the API's code (same validation, secrets masked).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_stripe::signature;

use crate::common::{Db, Resp, TestServer, now_ms, wait_for};
use crate::dashboard_session::{
    PASSWORD, USER, cookie_value, csrf, csrf_of, get_anonymous, get_with, login, operator,
    post_form, post_form_anonymous, set_cookies, try_login,
};

crate::both_dbs!(
    unauthenticated_requests_go_to_login,
    login_rotates_the_session_and_logout_ends_it,
    sessions_end_when_idle_and_at_their_absolute_end,
    forged_forms_are_refused,
    the_api_refuses_the_dashboard_cookie,
    webhook_payloads_render_inert,
    repeated_failures_lock_the_operator,
    failures_from_one_address_lock_the_address,
    simultaneous_wrong_passwords_are_counted_before_any_check,
    password_checks_run_a_few_at_a_time,
    every_page_renders_and_the_account_switches,
    the_cookie_is_secure_behind_a_trusted_proxy,
    actions_go_through_the_api,
);

#[track_caller]
fn assert_to_login(r: &Resp, what: &str) {
    assert_eq!(r.status, 303, "{what}: {}", r.text);
    let to = r.header("location").unwrap_or_default();
    assert!(to.starts_with("/dashboard/login"), "{what} went to {to}");
}

const PAGES: &[&str] = &[
    "/dashboard",
    "/dashboard/transactions",
    "/dashboard/transactions/some-id",
    "/dashboard/connections",
    "/dashboard/connections/some-id",
    "/dashboard/webhooks",
    "/dashboard/webhooks/some-id",
    "/dashboard/deliveries",
    "/dashboard/deliveries/some-id",
    "/dashboard/outbound",
    "/dashboard/outbound/deliveries",
    "/dashboard/outbound/deliveries/some-id",
    "/dashboard/customers",
    "/dashboard/customers/user-1",
    "/dashboard/catalogue",
    "/dashboard/keys",
    "/dashboard/no-such-page",
];

const ACTIONS: &[&str] = &[
    "/dashboard/logout",
    "/dashboard/account",
    "/dashboard/connections",
    "/dashboard/connections/some-id/webhook-secret",
    "/dashboard/transactions/some-id/capture",
    "/dashboard/transactions/some-id/void",
    "/dashboard/transactions/some-id/refund",
    "/dashboard/webhooks/some-id/replay",
    "/dashboard/outbound",
    "/dashboard/outbound/some-id/active",
    "/dashboard/outbound/some-id/rotate-secret",
    "/dashboard/outbound/some-id/test",
    "/dashboard/outbound/deliveries/some-id/resend",
    "/dashboard/skus",
    "/dashboard/skus/some-id",
    "/dashboard/permissions",
    "/dashboard/permissions/some-id",
    "/dashboard/keys",
    "/dashboard/keys/some-id/revoke",
];

async fn unauthenticated_requests_go_to_login(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    for p in PAGES {
        assert_to_login(&get_anonymous(&s, p).await, p);
        // A made-up session is no better.
        assert_to_login(&get_with(&s, p, "tg_session=forged").await, p);
    }
    let r = get_anonymous(&s, "/dashboard/transactions?status=x").await;
    assert_eq!(
        r.header("location"),
        Some("/dashboard/login?next=%2Fdashboard%2Ftransactions")
    );
    for a in ACTIONS {
        assert_to_login(&post_form_anonymous(&s, a, &[("csrf", "x")]).await, a);
    }
    // Nothing was created by those POSTs.
    assert_eq!(s.get("/v1/skus").await.expect(200)["items"], json!([]));
    // The login page and the assets are public, with a strict CSP.
    let login = get_anonymous(&s, "/dashboard/login").await;
    assert_eq!(login.status, 200);
    let csp = login.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(login.text.contains("Sandbox mode"), "the sandbox banner");
    for a in [
        "/dashboard/assets/dashboard.css",
        "/dashboard/assets/dashboard.js",
    ] {
        assert_eq!(get_anonymous(&s, a).await.status, 200, "{a}");
    }
}

async fn login_rotates_the_session_and_logout_ends_it(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    // A wrong password: no session.
    let r = try_login(&s, "not the password", None).await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("Wrong username or password."));
    assert!(cookie_value(&r, "tg_session").is_none());
    // A login form without its token is refused even with the right password.
    let r = post_form_anonymous(
        &s,
        "/dashboard/login",
        &[("username", USER), ("password", PASSWORD), ("csrf", "x")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(cookie_value(&r, "tg_session").is_none());

    let first = login(&s).await;
    let set = set_cookies(&try_login(&s, PASSWORD, Some(&first)).await);
    let session = set.iter().find(|c| c.starts_with("tg_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Secure"), "plain http: {session}");
    let second = session.split(';').next().unwrap().to_string();
    // Rotated: a new id, and the one the browser had before is dead.
    assert_ne!(first, second);
    assert_to_login(&get_with(&s, "/dashboard/keys", &first).await, "old id");
    // A session id fixed by an attacker before login is not adopted either.
    let r = try_login(&s, PASSWORD, Some("tg_session=attacker-chosen-id")).await;
    assert_ne!(
        cookie_value(&r, "tg_session").unwrap(),
        "attacker-chosen-id"
    );

    let page = get_with(&s, "/dashboard/keys", &second).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Log out admin"));
    // Only hashes are stored.
    let id = second.trim_start_matches("tg_session=");
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM operator_sessions WHERE id_hash = $1")
            .bind(id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0);

    let token = csrf_of(&page.text);
    let out = post_form(&s, "/dashboard/logout", &second, &[("csrf", &token)]).await;
    assert_to_login(&out, "logout");
    assert_eq!(cookie_value(&out, "tg_session").as_deref(), Some(""));
    assert_to_login(
        &get_with(&s, "/dashboard/keys", &second).await,
        "after logout",
    );
}

async fn sessions_end_when_idle_and_at_their_absolute_end(db: Db) {
    let s = TestServer::start_with(db, |c| c.dashboard_idle_secs = 1).await;
    operator(&s).await;
    let idle = login(&s).await;
    assert_eq!(get_with(&s, "/dashboard/keys", &idle).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = get_with(&s, "/dashboard/keys", &idle).await;
    assert_to_login(&r, "idle session");
    assert_eq!(
        cookie_value(&r, "tg_session").as_deref(),
        Some(""),
        "cleared"
    );
    // The absolute end: a session past it is refused however recently it was used.
    let fresh = login(&s).await;
    sqlx::query("UPDATE operator_sessions SET expires_at = $1")
        .bind(now_ms() - 1)
        .execute(&s.pool)
        .await
        .unwrap();
    assert_to_login(&get_with(&s, "/dashboard/keys", &fresh).await, "expired");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operator_sessions")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "ended sessions are deleted");
}

async fn forged_forms_are_refused(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;
    let form = [
        ("identifier", "forged"),
        ("product_id", "prod_forged"),
        ("kind", "one_time"),
    ];
    // No token, and a wrong one: 403, nothing created.
    let r = post_form(&s, "/dashboard/skus", &cookie, &form).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let mut wrong = form.to_vec();
    wrong.push(("csrf", "0000"));
    assert_eq!(
        post_form(&s, "/dashboard/skus", &cookie, &wrong)
            .await
            .status,
        403
    );
    // Another session's token does not fit this session.
    let other = login(&s).await;
    let other_token = csrf(&s, &other).await;
    let mut foreign = form.to_vec();
    foreign.push(("csrf", &other_token));
    assert_eq!(
        post_form(&s, "/dashboard/skus", &cookie, &foreign)
            .await
            .status,
        403
    );
    assert_eq!(s.get("/v1/skus").await.expect(200)["items"], json!([]));
    // Logout needs the token too.
    assert_eq!(
        post_form(&s, "/dashboard/logout", &cookie, &[])
            .await
            .status,
        403
    );
    assert_eq!(get_with(&s, "/dashboard/keys", &cookie).await.status, 200);
    // With this session's token it works (post/redirect/get).
    let token = csrf(&s, &cookie).await;
    let mut good = form.to_vec();
    good.push(("csrf", &token));
    let r = post_form(&s, "/dashboard/skus", &cookie, &good).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some("/dashboard/catalogue?done=sku_saved")
    );
    assert_eq!(
        s.get("/v1/skus/forged").await.expect(200)["kind"],
        "one_time"
    );
}

async fn the_api_refuses_the_dashboard_cookie(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;
    for (method, path) in [
        (Method::GET, "/transactions"),
        (Method::GET, "/connections"),
        (Method::GET, "/v1/skus"),
        (Method::POST, "/v1/skus"),
        (Method::GET, "/webhook-events"),
    ] {
        let r = s
            .send(
                s.http
                    .request(method.clone(), s.url(path))
                    .header("cookie", &cookie)
                    .json(&json!({"identifier": "x", "product_id": "prod_x", "kind": "one_time"})),
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text);
        assert_eq!(r.body["code"], "unauthorized");
    }
    assert_eq!(s.get("/v1/skus").await.expect(200)["items"], json!([]));
}

const WHSEC: &str = "whsec_dashboardtest1234567890";

async fn webhook_payloads_render_inert(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let conn = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_dashboard1234", "webhook_secret": WHSEC}),
        )
        .await
        .expect(201);
    let conn_id = conn["id"].as_str().unwrap();
    let evil = "<script>alert('pwned')</script>\"><img src=x onerror=alert(1)>";
    let event = json!({"id": "evt_script", "object": "event", "api_version": "2026-10-28.endive",
        "created": now_ms() / 1000, "type": "balance.available", "livemode": false,
        "data": {"object": {"object": "balance", "note": evil}}});
    let body = serde_json::to_vec(&event).unwrap();
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/webhooks/stripe/{conn_id}")))
                .header("content-type", "application/json")
                .header(
                    "stripe-signature",
                    signature::header(&[WHSEC], now_ms() / 1000, &body),
                )
                .body(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let row = wait_for(
        Duration::from_secs(15),
        "the event to be stored",
        || async {
            let rows = s
                .get("/webhook-events?stripe_event_id=evt_script")
                .await
                .expect(200);
            rows["items"].as_array().unwrap().first().cloned()
        },
    )
    .await;
    let cookie = login(&s).await;
    let list = get_with(&s, "/dashboard/webhooks", &cookie).await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains("evt_script"));
    let page = get_with(
        &s,
        &format!("/dashboard/webhooks/{}", row["id"].as_str().unwrap()),
        &cookie,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        !page.text.contains("<script>alert"),
        "raw script in the page"
    );
    assert!(!page.text.contains("<img src=x"), "raw tag in the page");
    assert!(
        page.text
            .contains("&#60;script&#62;alert(&#39;pwned&#39;)&#60;/script&#62;"),
        "{}",
        page.text
    );
    // The only scripts are the dashboard's own file, and the CSP forbids any other.
    assert_eq!(page.text.matches("<script").count(), 1);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
}

async fn repeated_failures_lock_the_operator(db: Db) {
    let s = TestServer::start_with(db, |c| {
        c.dashboard_max_failures = 3;
        c.dashboard_lockout_secs = 600;
    })
    .await;
    operator(&s).await;
    for _ in 0..3 {
        assert_eq!(try_login(&s, "wrong password!", None).await.status, 401);
    }
    // Locked: even the right password is refused now.
    let r = try_login(&s, PASSWORD, None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.text.contains("Too many failed logins"));
    assert!(cookie_value(&r, "tg_session").is_none());
    // An unknown username is answered like a wrong password.
    let page = get_anonymous(&s, "/dashboard/login").await;
    let token = cookie_value(&page, "tg_login_csrf").unwrap();
    let r = post_form(
        &s,
        "/dashboard/login",
        &format!("tg_login_csrf={token}"),
        &[
            ("username", "nobody"),
            ("password", PASSWORD),
            ("csrf", &token),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    // `tollgate operator create --reset-password` lifts the lock.
    let hash = tollgate_server::dashboard::session::hash_password(PASSWORD).unwrap();
    assert!(
        tollgate_store::operators::set_password(&s.pool, USER, &hash, now_ms())
            .await
            .unwrap()
    );
    login(&s).await;
}

async fn failures_from_one_address_lock_the_address(db: Db) {
    // Two per operator, so eight from one address.
    let s = TestServer::start_with(db, |c| c.dashboard_max_failures = 2).await;
    operator(&s).await;
    let page = get_anonymous(&s, "/dashboard/login").await;
    let token = cookie_value(&page, "tg_login_csrf").unwrap();
    let cookie = format!("tg_login_csrf={token}");
    for i in 0..8 {
        let user = format!("guess{i}");
        let r = post_form(
            &s,
            "/dashboard/login",
            &cookie,
            &[("username", &user), ("password", "x"), ("csrf", &token)],
        )
        .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    // The operator itself never failed, but this address is locked out.
    let r = try_login(&s, PASSWORD, None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(cookie_value(&r, "tg_session").is_none());
}

/// Sends `n` login forms at once (each in its own task, released together); returns the
/// answers' statuses. `user(i)` is the username of the `i`-th.
async fn simultaneous_logins(
    s: &TestServer,
    n: usize,
    user: impl Fn(usize) -> String,
    password: &str,
) -> Vec<u16> {
    let page = get_anonymous(s, "/dashboard/login").await;
    let token = cookie_value(&page, "tg_login_csrf").unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let form = [
            ("username", user(i)),
            ("password", password.to_string()),
            ("csrf", token.clone()),
        ];
        let rb = s
            .http
            .post(s.url("/dashboard/login"))
            .header("cookie", format!("tg_login_csrf={token}"))
            .form(&form);
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            rb.send().await.map(|r| r.status().as_u16())
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap().unwrap());
    }
    statuses
}

/// A sample without labels of the server's `/metrics`.
async fn metric(s: &TestServer, name: &str) -> i64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The failed attempts counted for the test client's address.
async fn address_attempts(s: &TestServer) -> (i64, Option<i64>) {
    let (n, _, locked) = tollgate_store::operators::address_failures(&s.pool, "127.0.0.1")
        .await
        .unwrap()
        .expect("a row for 127.0.0.1");
    (n, locked)
}

async fn simultaneous_wrong_passwords_are_counted_before_any_check(db: Db) {
    // Five per operator (twenty per address).
    let s = TestServer::start_with(db, |c| {
        c.dashboard_max_failures = 5;
        c.dashboard_lockout_secs = 600;
    })
    .await;
    operator(&s).await;
    let statuses = simultaneous_logins(&s, 24, |_| USER.to_string(), "wrong password!").await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 19), "{statuses:?}");
    // Exactly the limit were checked: the others were refused before their hash was computed.
    assert_eq!(
        metric(&s, "tollgate_dashboard_password_checks_total").await,
        5
    );
    // Every attempt counted once: none lost to another written at the same time.
    let (failed, locked): (i64, Option<i64>) =
        sqlx::query_as("SELECT failed_logins, locked_until FROM operators WHERE username = $1")
            .bind(USER)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(failed, 5);
    assert!(locked.is_some_and(|t| t > now_ms()));
    let (attempts, address_lock) = address_attempts(&s).await;
    assert_eq!(attempts, 24);
    assert!(address_lock.is_some_and(|t| t > now_ms()));
    // Locked: the right password is refused too, and costs no check.
    let r = try_login(&s, PASSWORD, None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(
        metric(&s, "tollgate_dashboard_password_checks_total").await,
        5
    );
}

async fn password_checks_run_a_few_at_a_time(db: Db) {
    let s = TestServer::start_with(db, |c| {
        c.dashboard_max_failures = 100;
        c.dashboard_hash_concurrency = 2;
    })
    .await;
    operator(&s).await;
    // Twelve unknown usernames at once: each is checked (against the stand-in hash), at most
    // two at a time, and each counts against the address exactly once.
    let statuses = simultaneous_logins(&s, 12, |i| format!("guess{i}"), "x").await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        metric(&s, "tollgate_dashboard_password_checks_total").await,
        12
    );
    let most = metric(&s, "tollgate_dashboard_password_checks_running_max").await;
    assert!((1..=2).contains(&most), "{most} checks ran at once");
    assert_eq!(
        metric(&s, "tollgate_dashboard_password_checks_running").await,
        0
    );
    assert_eq!(address_attempts(&s).await, (12, None));
    // A successful login takes its own attempt back (only failures count against an address).
    login(&s).await;
    assert_eq!(address_attempts(&s).await, (12, None));
}

async fn every_page_renders_and_the_account_switches(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;
    for p in PAGES {
        let r = get_with(&s, p, &cookie).await;
        let want: &[u16] = if p.starts_with("/dashboard/deliveries") {
            // The old addresses of the outbound deliveries.
            &[301]
        } else if p.contains("some-id") || p.contains("no-such") || p.contains("user-1") {
            &[404]
        } else if *p == "/dashboard" {
            &[303]
        } else {
            &[200]
        };
        assert!(want.contains(&r.status), "{p}: {} {}", r.status, r.text);
        if r.status == 301 {
            let to = r.header("location").unwrap_or_default();
            assert!(
                to.starts_with("/dashboard/outbound/deliveries"),
                "{p} -> {to}"
            );
        } else if r.status != 303 {
            assert!(r.text.contains("Log out admin"), "{p} has the layout");
            assert!(r.header("content-security-policy").is_some(), "{p} CSP");
            assert_eq!(r.header("x-frame-options"), Some("DENY"));
        }
    }
    // Filters the API refuses are shown as errors, not 500s.
    let r = get_with(&s, "/dashboard/transactions?min=abc", &cookie).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = get_with(&s, "/dashboard/transactions?from=yesterday", &cookie).await;
    assert_eq!(r.status, 422);
    // A second merchant account: the switcher appears and keys are bound to the chosen one.
    s.post(
        "/merchant-accounts",
        json!({"id": "acme", "display_name": "Acme"}),
    )
    .await
    .expect(201);
    let token = csrf(&s, &cookie).await;
    let page = get_with(&s, "/dashboard/keys", &cookie).await;
    assert!(
        page.text.contains("name=\"merchant_account_id\""),
        "switcher"
    );
    let r = post_form(
        &s,
        "/dashboard/account",
        &cookie,
        &[("csrf", &token), ("merchant_account_id", "acme")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let r = post_form(
        &s,
        "/dashboard/account",
        &cookie,
        &[("csrf", &token), ("merchant_account_id", "nope")],
    )
    .await;
    assert_eq!(r.status, 404);
    let page = get_with(&s, "/dashboard/keys", &cookie).await;
    assert!(page.text.contains("bound to the merchant account Acme"));
    // The API sees acme's (empty) catalogue through the dashboard.
    let cat = get_with(&s, "/dashboard/catalogue", &cookie).await;
    assert!(cat.text.contains("No SKUs yet."));
}

async fn the_cookie_is_secure_behind_a_trusted_proxy(db: Db) {
    let s = TestServer::start_with(db, |c| c.trust_forwarded_proto = true).await;
    operator(&s).await;
    let page = s
        .send(
            s.http
                .get(s.url("/dashboard/login"))
                .header("x-forwarded-proto", "https"),
        )
        .await;
    let token = cookie_value(&page, "tg_login_csrf").unwrap();
    assert!(set_cookies(&page)[0].contains("; Secure"));
    let r = s
        .send(
            s.http
                .post(s.url("/dashboard/login"))
                .header("x-forwarded-proto", "https")
                .header("cookie", format!("tg_login_csrf={token}"))
                .form(&[("username", USER), ("password", PASSWORD), ("csrf", &token)]),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let session = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("tg_session="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
    // Without the header (or from a server that does not trust it) the flag is not set.
    let plain = login(&s).await;
    assert!(!plain.contains("Secure"));
    let untrusting = TestServer::start(db).await;
    let page = untrusting
        .send(
            untrusting
                .http
                .get(untrusting.url("/dashboard/login"))
                .header("x-forwarded-proto", "https"),
        )
        .await;
    assert!(!set_cookies(&page)[0].contains("Secure"));
}

async fn actions_go_through_the_api(db: Db) {
    let s = TestServer::start(db).await;
    operator(&s).await;
    let cookie = login(&s).await;
    let token = csrf(&s, &cookie).await;
    // The API's validation answers for the dashboard too.
    let r = post_form(
        &s,
        "/dashboard/connections",
        &cookie,
        &[("csrf", &token), ("secret_key", "not-a-key")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("Must start with sk_test_"), "{}", r.text);
    let r = post_form(
        &s,
        "/dashboard/connections",
        &cookie,
        &[
            ("csrf", &token),
            ("display_name", "Live-ish"),
            ("secret_key", "sk_test_verysecretvalue9876"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to = r.header("location").unwrap().to_string();
    let page = get_with(&s, &to, &cookie).await;
    assert_eq!(page.status, 200);
    assert!(
        !page.text.contains("sk_test_verysecretvalue9876"),
        "secret shown in full"
    );
    assert!(page.text.contains("9876"), "masked hint");
    assert!(page.text.contains("Waiting for the webhook signing secret"));
    let id = to
        .trim_start_matches("/dashboard/connections/")
        .split('?')
        .next()
        .unwrap();
    assert!(page.text.contains(&format!("/webhooks/stripe/{id}")));
    // The webhook secret step, then the connection is active (read through the API).
    let r = post_form(
        &s,
        &format!("/dashboard/connections/{id}/webhook-secret"),
        &cookie,
        &[
            ("csrf", &token),
            ("webhook_secret", "whsec_fromstripe12345"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let c = s.get(&format!("/connections/{id}")).await.expect(200);
    assert_eq!(c["status"], "active");
    assert_eq!(c["display_name"], "Live-ish");
    // A refund the API would refuse is refused in place, confirmed or not.
    let tx = s.create_redirect(500, "capture").await;
    let tx_id = tx["id"].as_str().unwrap();
    let r = post_form(
        &s,
        &format!("/dashboard/transactions/{tx_id}/refund"),
        &cookie,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("Only a captured payment can be refunded"));
    let r = post_form(
        &s,
        &format!("/dashboard/transactions/{tx_id}/refund"),
        &cookie,
        &[("csrf", &token), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 422, "refund of an unpaid transaction: {}", r.text);
    assert_eq!(s.get_tx(tx_id).await["refunded_amount"], Value::from(0));
    // API keys: created once-shown, usable, then revoked.
    let r = post_form(
        &s,
        "/dashboard/keys",
        &cookie,
        &[("csrf", &token), ("kind", "secret"), ("display_name", "ci")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let at = r
        .text
        .find("data-testid=\"new-key\" readonly value=\"")
        .unwrap();
    let rest = &r.text[at + "data-testid=\"new-key\" readonly value=\"".len()..];
    let key = &rest[..rest.find('"').unwrap()];
    assert!(key.starts_with("tg_sk_"));
    let ok = s
        .send(s.http.get(s.url("/transactions")).bearer_auth(key))
        .await;
    assert_eq!(ok.status, 200);
    let key_id = key.trim_start_matches("tg_sk_").split('_').next().unwrap();
    let listed = get_with(&s, "/dashboard/keys", &cookie).await;
    assert!(!listed.text.contains(key), "the key is shown once only");
    let r = post_form(
        &s,
        &format!("/dashboard/keys/{key_id}/revoke"),
        &cookie,
        &[("csrf", &token), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let refused = s
        .send(s.http.get(s.url("/transactions")).bearer_auth(key))
        .await;
    assert_eq!(refused.status, 401);
}
