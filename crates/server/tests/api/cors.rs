//! CORS: the public-key routes (the permission check and its stream) answer any origin, so a web
//! app on the business's own domain calls them directly; secret-key routes answer none.

use reqwest::Method;
use tollgate_server::auth::KeyKind;

use crate::common::{Db, TestServer};

crate::both_dbs!(public_key_routes_answer_cors_and_secret_ones_do_not);

async fn public_key_routes_answer_cors_and_secret_ones_do_not(db: Db) {
    let s = TestServer::start(db).await;
    let public = s.bound_key(KeyKind::Public, "default").await;
    let origin = "https://app.shop.example";

    for path in ["/v1/permissions", "/v1/permissions/stream"] {
        // The browser's preflight for a GET with the key and the ETag revalidation.
        let r = s
            .send(
                s.http
                    .request(Method::OPTIONS, s.url(path))
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", "GET")
                    .header(
                        "Access-Control-Request-Headers",
                        "authorization,if-none-match,x-customer-token,last-event-id",
                    ),
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in [
            "authorization",
            "if-none-match",
            "x-customer-token",
            "last-event-id",
        ] {
            assert!(allowed.contains(h), "{path}: {h} not in {allowed}");
        }
    }

    // The check itself: the origin may read the answer and its ETag.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user-1"))
                .bearer_auth(&public)
                .header("Origin", origin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");

    // A secret-key route gives another origin nothing to read.
    let r = s
        .send(
            s.request(Method::GET, "/transactions")
                .header("Origin", origin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), None);
}
