//! The OpenAPI document: served as derived, valid OpenAPI 3.1, complete per operation, in words
//! meant for Tollgate's users; and the two routes that serve it and the reference page.
//!
//! Every check reads the document itself (the served one and `openapi::derived_document`), not
//! the source: the document is derived from the handlers and their types.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tollgate_server::openapi;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const URL: &str = "https://tollgate.example.com";

fn doc() -> Value {
    openapi::document(URL)
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    root.pointer(r.strip_prefix('#')?)
}

fn deref<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(root, r).unwrap_or_else(|| panic!("unresolved {r}")),
        None => v,
    }
}

fn operations(d: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in d["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("path item") {
            if METHODS.contains(&m.as_str()) {
                out.push((m.to_uppercase(), path.clone(), op));
            }
        }
    }
    out
}

fn walk_refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push((at.clone(), x.as_str().expect("$ref is a string")));
                } else {
                    walk_refs(x, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk_refs(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Calls `check` on `s` and every subschema (properties, items, combinators, maps).
fn walk_schemas(s: &Value, at: &str, check: &mut dyn FnMut(&str, &Value)) {
    if !s.is_object() {
        return;
    }
    check(at, s);
    if let Some(props) = s["properties"].as_object() {
        for (k, p) in props {
            walk_schemas(p, &format!("{at}/properties/{k}"), check);
        }
    }
    for k in ["items", "additionalProperties", "not", "propertyNames"] {
        if let Some(sub) = s.get(k) {
            walk_schemas(sub, &format!("{at}/{k}"), check);
        }
    }
    for k in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        for (i, sub) in s[k].as_array().into_iter().flatten().enumerate() {
            walk_schemas(sub, &format!("{at}/{k}/{i}"), check);
        }
    }
}

/// Whether an operation needs an API key (its own `security`, else the document's).
fn authenticated(d: &Value, op: &Value) -> bool {
    op.get("security")
        .unwrap_or(&d["security"])
        .as_array()
        .is_some_and(|reqs| {
            reqs.iter()
                .any(|r| r.as_object().is_some_and(|m| !m.is_empty()))
        })
}

// ---- the served document is the derived one -------------------------------------------------------

#[tokio::test]
async fn the_app_serves_the_document_and_the_page() {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = tollgate_server::Config {
        data_dir: dir.path().to_path_buf(),
        public_url: Some("https://pay.example.com/".into()),
        ..Default::default()
    };
    let clock = Arc::new(tollgate_server::clock::SystemClock);
    let ctx = tollgate_server::context(config, clock, None)
        .await
        .expect("context");
    let app = tollgate_server::app(ctx, None);

    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
    let r = app
        .clone()
        .oneshot(get("/openapi.json"))
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK, "GET /openapi.json");
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let body = to_bytes(r.into_body(), 10 << 20).await.expect("body");
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(served, openapi::document("https://pay.example.com/"));
    assert_eq!(
        served["servers"],
        json!([{"url": "https://pay.example.com", "description": "This Tollgate server"}])
    );

    // Everything derived is served unchanged: the base, every derived operation and component.
    let derived = openapi::derived_document("https://pay.example.com");
    for key in ["openapi", "info", "servers", "security", "tags"] {
        assert_eq!(served[key], derived[key], "{key}");
    }
    let mut derived_ops = 0;
    for (method, path, op) in operations(&derived) {
        let m = method.to_lowercase();
        assert_eq!(&served["paths"][&path][&m], op, "{method} {path}");
        derived_ops += 1;
    }
    assert!(derived_ops >= 4, "only {derived_ops} derived operations");
    for (kind, items) in derived["components"].as_object().expect("components") {
        for (name, item) in items.as_object().expect("component kind") {
            assert_eq!(
                &served["components"][kind][name], item,
                "components/{kind}/{name}"
            );
        }
    }

    let r = app.clone().oneshot(get("/docs")).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK, "GET /docs");
    let h = r.headers();
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], openapi::reference_csp());
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let body = to_bytes(r.into_body(), 10 << 20).await.expect("body");
    assert_eq!(&body[..], openapi::REFERENCE_HTML.as_bytes());

    // The documented 400: a NUL in a query parameter, as on every other route.
    let r = app
        .clone()
        .oneshot(get("/openapi.json?x=%00"))
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = to_bytes(r.into_body(), 1 << 20).await.expect("body");
    let err: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(err["code"], "bad_request");
    assert_eq!(err["details"][0]["pointer"], "/x");

    // No API key needed, and other methods are refused.
    let r = app
        .oneshot(
            Request::post("/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

// ---- OpenAPI 3.1 ---------------------------------------------------------------------------------

#[test]
fn the_document_is_structurally_valid_openapi_3_1() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    assert_eq!(d["info"]["title"], "Tollgate API");
    assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(d["info"]["summary"].is_string() && d["info"]["description"].is_string());
    assert_eq!(d["servers"][0]["url"], URL);

    // Every $ref is local and resolves.
    let mut refs = Vec::new();
    walk_refs(&d, String::new(), &mut refs);
    assert!(refs.len() > 50, "suspiciously few $refs: {}", refs.len());
    for (at, r) in &refs {
        assert!(r.starts_with("#/"), "{at}: non-local $ref {r}");
        assert!(resolve(&d, r).is_some(), "{at}: $ref {r} does not resolve");
    }
    // Component names are legal.
    for (kind, items) in d["components"].as_object().expect("components") {
        for name in items.as_object().expect(kind).keys() {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
                "bad component name {kind}/{name}"
            );
        }
    }
    let schemes = d["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(d["security"], json!([{"bearerAuth": []}]));

    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&d) {
        let here = format!("{method} {path}");
        assert!(path.starts_with('/'), "{here}: path");
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_string()),
            "{here}: duplicate operationId {id}"
        );
        for (code, r) in op["responses"].as_object().expect("responses") {
            let ok_code = code == "default"
                || (code.len() == 3
                    && code.as_bytes()[0].is_ascii_digit()
                    && (code[1..].chars().all(|c| c.is_ascii_digit()) || &code[1..] == "XX"));
            assert!(ok_code, "{here}: response key {code}");
            assert!(
                deref(&d, r)["description"].is_string(),
                "{here} {code}: no description"
            );
        }
        // Security requirements name declared schemes.
        let security = op.get("security").unwrap_or(&d["security"]);
        for req in security.as_array().expect("security array") {
            for k in req.as_object().expect("requirement").keys() {
                assert!(schemes.contains_key(k), "{here}: unknown scheme {k}");
            }
        }
        // Parameters: unique by (name, in); path templates and path parameters match.
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|p| deref(&d, p)).collect())
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for p in &params {
            let name = p["name"].as_str().expect("parameter name");
            let loc = p["in"].as_str().expect("parameter in");
            assert!(
                ["query", "header", "path", "cookie"].contains(&loc),
                "{here}: parameter {name} in {loc}"
            );
            assert!(
                p.get("schema").is_some() || p.get("content").is_some(),
                "{here}: parameter {name} without schema"
            );
            assert!(
                seen.insert((name.to_ascii_lowercase(), loc)),
                "{here}: duplicate parameter {name}"
            );
            if loc == "path" {
                assert_eq!(p["required"], true, "{here}: path parameter {name}");
            }
        }
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let path_params: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            templated, path_params,
            "{here}: path template vs parameters"
        );
        if let Some(body) = op.get("requestBody") {
            assert!(
                deref(&d, body)["content"]
                    .as_object()
                    .is_some_and(|c| !c.is_empty()),
                "{here}: request body without content"
            );
        }
    }
    assert!(ids.len() >= 25, "only {} operations", ids.len());

    // Schemas: `required` names declared properties; types are JSON Schema types; 3.1, not 3.0.
    let mut all: Vec<(String, Value)> = d["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .iter()
        .map(|(k, v)| (format!("#/components/schemas/{k}"), v.clone()))
        .collect();
    for (method, path, op) in operations(&d) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            all.push((
                format!("{method} {path} {p}"),
                deref(&d, p)["schema"].clone(),
            ));
        }
        for (mt, media) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            all.push((
                format!("{method} {path} body {mt}"),
                media["schema"].clone(),
            ));
        }
        for (code, r) in op["responses"].as_object().into_iter().flatten() {
            for (mt, media) in deref(&d, r)["content"].as_object().into_iter().flatten() {
                all.push((
                    format!("{method} {path} {code} {mt}"),
                    media["schema"].clone(),
                ));
            }
        }
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut check = |at: &str, s: &Value| {
        checked += 1;
        if let (Some(req), Some(props)) = (s["required"].as_array(), s["properties"].as_object()) {
            for r in req {
                if !props.contains_key(r.as_str().unwrap_or_default()) {
                    problems.push(format!("{at}: required {r} is not a property"));
                }
            }
        }
        let types: Vec<&Value> = match &s["type"] {
            Value::Array(a) => a.iter().collect(),
            Value::Null => Vec::new(),
            t => vec![t],
        };
        for t in types {
            let known = [
                "null", "boolean", "object", "array", "number", "string", "integer",
            ];
            if !known.contains(&t.as_str().unwrap_or_default()) {
                problems.push(format!("{at}: type {t}"));
            }
        }
        if s.get("nullable").is_some() {
            problems.push(format!(
                "{at}: `nullable` is OpenAPI 3.0; use type [.., \"null\"]"
            ));
        }
        if let (Some(e), Some(t)) = (s["enum"].as_array(), s["type"].as_array())
            && t.contains(&Value::from("null"))
            && !e.contains(&Value::Null)
        {
            problems.push(format!("{at}: nullable enum without null"));
        }
    };
    for (at, s) in &all {
        walk_schemas(s, at, &mut check);
    }
    assert!(checked > 200, "only {checked} schemas walked");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_operation_has_an_id_a_summary_a_tag_a_success_and_an_error() {
    let d = doc();
    let tags: BTreeSet<&str> = d["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name"))
        .collect();
    let mut problems = Vec::new();
    for (method, path, op) in operations(&d) {
        let here = format!("{method} {path}");
        if op["operationId"].as_str().is_none_or(|s| s.is_empty()) {
            problems.push(format!("{here}: no operationId"));
        }
        if op["summary"].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("{here}: no summary"));
        }
        let op_tags = op["tags"].as_array().cloned().unwrap_or_default();
        if op_tags.is_empty() {
            problems.push(format!("{here}: no tag"));
        }
        for t in &op_tags {
            if !tags.contains(t.as_str().unwrap_or_default()) {
                problems.push(format!("{here}: undeclared tag {t}"));
            }
        }
        let codes: Vec<&String> = op["responses"]
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        if !codes.iter().any(|c| c.starts_with('2')) {
            problems.push(format!("{here}: no 2xx response"));
        }
        if !codes.iter().any(|c| c.starts_with('4')) {
            problems.push(format!("{here}: no 4xx response"));
        }
        // A JSON body can be malformed or over 1 MiB: a 400.
        if op["requestBody"]["content"]
            .get("application/json")
            .is_some()
            && op["responses"].get("400").is_none()
        {
            problems.push(format!("{here}: a JSON body without a 400"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The derived part alone is a whole document: what it refers to, it defines (the hand-written
/// part that fills the rest today must not be what makes a derived `$ref` resolve).
#[test]
fn the_derived_document_stands_alone() {
    let d = openapi::derived_document(URL);
    let mut refs = Vec::new();
    walk_refs(&d, String::new(), &mut refs);
    let dangling: Vec<String> = refs
        .iter()
        .filter(|(_, r)| resolve(&d, r).is_none())
        .map(|(at, r)| format!("{at}: {r}"))
        .collect();
    assert!(dangling.is_empty(), "{dangling:#?}");
    for (method, path, op) in operations(&d) {
        let codes: Vec<&String> = op["responses"]
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        assert!(
            codes.iter().any(|c| c.starts_with('2')) && codes.iter().any(|c| c.starts_with('4')),
            "{method} {path}: {codes:?}"
        );
        assert!(
            op["operationId"].is_string() && op["summary"].is_string(),
            "{method} {path}"
        );
    }
}

#[test]
fn the_document_speaks_to_users() {
    let d = doc();
    let text = serde_json::to_string(&d).expect("JSON").to_lowercase();
    for word in ["seed", "spec §", "todo", "fixme", "xxx"] {
        if let Some(i) = text.find(word) {
            let from = text[..i].char_indices().rev().nth(60).map_or(0, |(j, _)| j);
            let to = text[i..]
                .char_indices()
                .nth(60)
                .map_or(text.len(), |(j, _)| i + j);
            panic!("the document says {word:?}: …{}…", &text[from..to]);
        }
    }
    // Gr4vy and Glassfy by name.
    let info = d["info"]["description"].as_str().expect("description");
    assert!(info.contains("Gr4vy") && info.contains("Glassfy") && info.contains("Stripe"));
}

// ---- the base and what every operation gets --------------------------------------------------------

#[test]
fn the_base_declares_the_shared_headers_and_error_responses() {
    let d = openapi::derived_document(URL);
    let params = &d["components"]["parameters"];
    // The alias has no pattern: the server ignores it when `X-Merchant-Account-Id` is present,
    // so a malformed alias beside a good header is accepted.
    for (component, name, pattern) in [
        (
            "MerchantAccountId",
            "X-Merchant-Account-Id",
            json!("^[a-z0-9_-]{1,64}$"),
        ),
        (
            "Gr4vyMerchantAccountId",
            "x-gr4vy-merchant-account-id",
            Value::Null,
        ),
        ("IdempotencyKey", "Idempotency-Key", json!("^[!-~]{1,255}$")),
    ] {
        let p = &params[component];
        assert_eq!(p["name"], name, "{component}");
        assert_eq!(p["in"], "header", "{component}");
        assert_ne!(p["required"], true, "{component} is optional");
        assert_eq!(p["schema"]["pattern"], pattern, "{component}");
        assert_eq!(
            p["schema"]["type"], "string",
            "{component}: a header is never null"
        );
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 40),
            "{component}: description"
        );
    }
    let responses = d["components"]["responses"].as_object().expect("responses");
    for name in [
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "ServerError",
        "BadGateway",
        "GatewayTimeout",
        "TooManyRequests",
        "PayloadTooLarge",
    ] {
        let r = &responses[name];
        assert_eq!(
            r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
            "{name}"
        );
        assert!(r["description"].is_string(), "{name}");
    }
    assert!(
        responses["TooManyRequests"]["headers"]
            .get("Retry-After")
            .is_some()
    );
    // The 400's words hold the body-size contract.
    assert!(
        responses["BadRequest"]["description"]
            .as_str()
            .is_some_and(|s| s.contains("larger than"))
    );
    // The error envelope is the one `crate::error` serializes.
    let error = &d["components"]["schemas"]["Error"];
    for field in ["type", "code", "status", "message", "details"] {
        assert!(error["properties"].get(field).is_some(), "Error.{field}");
    }
    let tags: Vec<&str> = d["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        tags,
        [
            "transactions",
            "refunds",
            "connections",
            "webhook-events",
            "merchant-accounts",
            "entitlements",
            "webhooks",
            "buyer",
            "operations",
            "reference"
        ]
    );
}

#[test]
fn the_completing_pass_adds_what_the_layers_answer_and_keeps_what_is_declared() {
    let mut d = json!({
        "security": [{"bearerAuth": []}],
        "paths": {
            "/a": {
                "get": {"responses": {"200": {"description": "ok"}}},
                "post": {
                    "parameters": [{"name": "x-merchant-account-id", "in": "header", "schema": {"type": "string"}}],
                    "responses": {"404": {"description": "mine"}, "201": {"description": "made"}},
                },
            },
            "/b": {
                "get": {"security": [{}], "responses": {"200": {"description": "ok"}}},
                "put": {"security": [], "responses": {"400": {"description": "mine"}, "204": {"description": "done"}}},
            },
        },
    });
    openapi::complete(&mut d);
    let r = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    let p = |name: &str| json!({"$ref": format!("#/components/parameters/{name}")});

    let get_a = &d["paths"]["/a"]["get"];
    assert_eq!(
        get_a["parameters"],
        json!([p("MerchantAccountId"), p("Gr4vyMerchantAccountId")])
    );
    let codes: Vec<&String> = get_a["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .collect();
    assert_eq!(codes, ["200", "400", "401", "403", "404", "500"]);
    assert_eq!(get_a["responses"]["401"], r("Unauthorized"));

    // Declared ones stay: the header under another case, the 404's own description.
    let post_a = &d["paths"]["/a"]["post"];
    assert_eq!(post_a["parameters"][0], p("Gr4vyMerchantAccountId"));
    assert_eq!(post_a["parameters"].as_array().map(Vec::len), Some(2));
    assert_eq!(post_a["responses"]["404"]["description"], "mine");
    assert_eq!(post_a["responses"]["400"], r("BadRequest"));

    // Public operations get the edge's 400 only.
    for m in ["get", "put"] {
        let op = &d["paths"]["/b"][m];
        assert!(op.get("parameters").is_none(), "{m} /b: no headers");
        for code in ["401", "403", "404", "500"] {
            assert!(op["responses"].get(code).is_none(), "{m} /b: {code}");
        }
        assert!(op["responses"].get("400").is_some(), "{m} /b: 400");
    }
    assert_eq!(
        d["paths"]["/b"]["put"]["responses"]["400"]["description"],
        "mine"
    );
}

#[test]
fn authenticated_operations_take_the_headers_and_every_api_post_a_key() {
    let d = doc();
    let public = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/pay/{id}/complete",
        "/transactions/{id}/session",
        "/webhooks/stripe/{connection_id}",
        "/openapi.json",
        "/docs",
    ];
    for (method, path, op) in operations(&d) {
        let here = format!("{method} {path}");
        let refs: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["$ref"].as_str()).collect())
            .unwrap_or_default();
        let codes = &op["responses"];
        if public.contains(&path.as_str()) {
            assert!(!authenticated(&d, op), "{here}: public");
            assert!(
                !refs.contains("#/components/parameters/MerchantAccountId"),
                "{here}: public, no merchant header"
            );
            continue;
        }
        assert!(authenticated(&d, op), "{here}: needs an API key");
        for header in ["MerchantAccountId", "Gr4vyMerchantAccountId"] {
            assert!(
                refs.contains(format!("#/components/parameters/{header}").as_str()),
                "{here}: {header}"
            );
        }
        for code in ["400", "401", "403", "404", "500"] {
            assert!(codes.get(code).is_some(), "{here}: {code}");
        }
        let keyed = refs.contains("#/components/parameters/IdempotencyKey");
        assert_eq!(keyed, method == "POST", "{here}: Idempotency-Key");
        if keyed {
            assert!(codes.get("409").is_some(), "{here}: 409");
        }
    }
}

// ---- the reference page -----------------------------------------------------------------------------

#[test]
fn the_reference_page_is_self_contained_and_csp_friendly() {
    let html = openapi::REFERENCE_HTML;
    let lower = html.to_ascii_lowercase();
    assert_eq!(lower.matches("<script").count(), 1, "one inline script");
    assert_eq!(lower.matches("<style").count(), 1, "one inline style");
    assert!(!lower.contains("<script src"), "no external script");
    assert!(!lower.contains("<link"), "no external stylesheet or font");
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "no absolute URL"
    );
    assert!(
        !lower.contains("@import") && !lower.contains("url("),
        "no CSS fetches"
    );
    assert!(!lower.contains("javascript:"));
    assert!(!lower.contains(" style=\""), "no inline style attributes");
    assert!(!lower.contains("innerhtml"), "DOM building only");
    assert!(!lower.contains("eval(") && !lower.contains("new function"));
    // No inline event handler attribute (onclick=, onload=, …) anywhere in the markup.
    let mut rest = lower.as_str();
    while let Some(i) = rest.find(" on") {
        let after = &rest[i + 3..];
        let word: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let next = after[word.len()..].trim_start();
        assert!(
            word.is_empty() || !next.starts_with('=') || next.starts_with("=="),
            "inline event handler near: {}",
            &rest[i..(i + 40).min(rest.len())]
        );
        rest = &rest[i + 3..];
    }
    assert!(html.contains("fetch(\"openapi.json\""));

    let csp = openapi::reference_csp();
    assert!(csp.contains("default-src 'none'"));
    assert!(csp.contains("connect-src 'self'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let script = openapi::inline_element(html, "script").expect("script");
    let style = openapi::inline_element(html, "style").expect("style");
    for (kind, text) in [("script-src", script), ("style-src", style)] {
        use base64::Engine;
        use sha2::Digest;
        let h =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()));
        assert!(
            csp.contains(&format!("{kind} 'sha256-{h}'")),
            "{kind} hash in {csp}"
        );
    }
}
