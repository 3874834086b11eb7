//! The OpenAPI document against the code (drift) and against OpenAPI 3.1 (structure), and the
//! two routes that serve it.
//!
//! Drift is checked from the source: the routes of the API's routers (`src/api/*.rs`,
//! `src/pay.rs`, `src/openapi.rs`) with their methods, the handlers' accepted-field lists, and
//! the keys the renderers put in their `json!` objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tollgate_server::openapi;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn source(rel: &str) -> String {
    let p = src_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn doc() -> Value {
    openapi::document("https://tollgate.example.com")
}

// ---- a tiny Rust source scanner -----------------------------------------------------------------

/// The index just past the bracket that closes the one at `open` (`(`, `[` or `{`), skipping
/// string and char literals.
fn close_of(s: &str, open: usize) -> usize {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') => {
                // a char literal such as '{' or '\''
                i += if b[i + 1] == b'\\' { 3 } else { 2 };
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced brackets from byte {open}");
}

/// The string literals in `s`.
fn literals(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(a) = rest.find('"') {
        let after = &rest[a + 1..];
        let z = after.find('"').expect("closing quote");
        out.push(after[..z].to_string());
        rest = &after[z + 1..];
    }
    out
}

/// The strings of `const NAME: &[&str] = &[…];` (searched after `after`, when given).
fn const_list(src: &str, after: Option<&str>, name: &str) -> Vec<String> {
    let from = after.map_or(0, |a| {
        src.find(a).unwrap_or_else(|| panic!("`{a}` not in source"))
    });
    let decl = format!("const {name}: &[&str] = &[");
    let at = from
        + src[from..]
            .find(&decl)
            .unwrap_or_else(|| panic!("`{decl}` not in source"));
    let open = at + decl.len() - 1;
    literals(&src[open..close_of(src, open)])
}

/// `(METHOD, path)` of every `.route("path", method(h).method(h)…)` in `src`.
fn routes_in(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find(".route(") {
        let open = from + i + ".route".len();
        let end = close_of(src, open);
        let call = &src[open + 1..end - 1];
        from = end;
        let q1 = call.find('"').expect("route path literal");
        let q2 = q1 + 1 + call[q1 + 1..].find('"').expect("route path end");
        let path = &call[q1 + 1..q2];
        let methods = &call[q2 + 1..];
        let b = methods.as_bytes();
        for m in METHODS {
            let mut k = 0;
            while let Some(j) = methods[k..].find(m) {
                let at = k + j;
                k = at + m.len();
                let before_ok =
                    at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
                let called = methods[k..].starts_with('(');
                // `tx::get)` names a handler; `get(`, `.get(`, `routing::get(` route a method.
                if before_ok && called {
                    out.push((m.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    out
}

/// The keys of the `json!` object that contains `marker`, by nesting: `""` for the top level,
/// `"a"` for the object under key `a`, `"a/b"` below it.
fn json_keys(src: &str, marker: &str) -> BTreeMap<String, BTreeSet<String>> {
    let at = src
        .find(marker)
        .unwrap_or_else(|| panic!("`{marker}` not in source"));
    let start = src[..at].rfind("json!(").expect("json!( before marker") + "json!(".len();
    let end = close_of(src, start);
    let text = &src[start..end];
    let b = text.as_bytes();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // The key path of each open `{`; `None` for brackets that are not objects of the macro.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut last_key: Option<String> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let s = i + 1;
                i += 1;
                while b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let lit = &text[s..i];
                let rest = text[i + 1..].trim_start();
                let in_object = matches!(stack.last(), Some(Some(_)));
                if in_object && rest.starts_with(':') && !rest.starts_with("::") {
                    let path = stack.last().cloned().flatten().unwrap_or_default();
                    out.entry(path).or_default().insert(lit.to_string());
                    last_key = Some(lit.to_string());
                }
            }
            b'{' => {
                // The macro's object, or an object that is the value of a key of one.
                let entry = if stack.is_empty() {
                    Some(String::new())
                } else {
                    match stack.last().cloned().flatten() {
                        Some(p) if text[..i].trim_end().ends_with(':') => {
                            let k = last_key.clone().unwrap_or_default();
                            Some(if p.is_empty() { k } else { format!("{p}/{k}") })
                        }
                        _ => None,
                    }
                };
                stack.push(entry);
            }
            b'(' | b'[' => stack.push(None),
            b'}' | b')' | b']' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    out
}

// ---- document helpers ---------------------------------------------------------------------------

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    root.pointer(r.strip_prefix('#')?)
}

fn deref<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(root, r).unwrap_or_else(|| panic!("unresolved {r}")),
        None => v,
    }
}

fn schema<'a>(d: &'a Value, name: &str) -> &'a Value {
    d.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("no schema {name}"))
}

fn props(d: &Value, name: &str) -> BTreeSet<String> {
    prop_set(schema(d, name))
}

fn prop_set(s: &Value) -> BTreeSet<String> {
    s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {s}"))
        .keys()
        .cloned()
        .collect()
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(it: I) -> BTreeSet<String> {
    it.into_iter().map(Into::into).collect()
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

fn operation<'a>(d: &'a Value, method: &str, path: &str) -> &'a Value {
    d["paths"][path]
        .get(method)
        .unwrap_or_else(|| panic!("no {method} {path}"))
}

// ---- drift: routes ------------------------------------------------------------------------------

fn source_routes() -> BTreeSet<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(src_dir().join("api"))
        .expect("src/api")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.push(src_dir().join("pay.rs"));
    files.push(src_dir().join("openapi.rs"));
    let mut all = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("source file");
        all.extend(routes_in(&text));
    }
    all
}

#[test]
fn the_route_scanner_reads_multiline_routes() {
    let src = r#"Router::new()
        .route("/a", post(m::create).get(m::list))
        .route(
            "/a/{id}",
            get(m::get)
                .patch(m::update)
                .delete(m::delete),
        )
        .route("/h", axum::routing::get(h))"#;
    let got: Vec<(String, String)> = routes_in(src);
    let want = [
        ("GET", "/a"),
        ("POST", "/a"),
        ("DELETE", "/a/{id}"),
        ("GET", "/a/{id}"),
        ("PATCH", "/a/{id}"),
        ("GET", "/h"),
    ];
    assert_eq!(
        set(got.iter().map(|(m, p)| format!("{m} {p}"))),
        set(want.iter().map(|(m, p)| format!("{m} {p}")))
    );
}

#[test]
fn every_route_of_the_api_router_is_documented() {
    let routes = routes_in(&source("api/mod.rs"));
    assert!(
        routes.len() >= 20,
        "the scan of api/mod.rs found only {routes:?}"
    );
    let d = doc();
    let documented: BTreeSet<(String, String)> =
        operations(&d).into_iter().map(|(m, p, _)| (m, p)).collect();
    let missing: Vec<String> = routes
        .iter()
        .filter(|r| !documented.contains(r))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes of api/mod.rs missing from the OpenAPI document (add them in src/openapi.rs): {missing:?}"
    );
}

#[test]
fn documented_operations_and_served_routes_match_exactly() {
    let routes = source_routes();
    for must in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/pay/{id}/complete"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ] {
        assert!(
            routes.contains(&(must.0.to_string(), must.1.to_string())),
            "{must:?} not found in the routers' source"
        );
    }
    let d = doc();
    let documented: BTreeSet<(String, String)> =
        operations(&d).into_iter().map(|(m, p, _)| (m, p)).collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document (add them in src/openapi.rs): {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "in the OpenAPI document but served by no router: {phantom:?}"
    );
}

// ---- structure: OpenAPI 3.1 ---------------------------------------------------------------------

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
    for k in ["anyOf", "oneOf", "allOf"] {
        for (i, sub) in s[k].as_array().into_iter().flatten().enumerate() {
            walk_schemas(sub, &format!("{at}/{k}/{i}"), check);
        }
    }
}

#[test]
fn the_document_is_structurally_valid_openapi_3_1() {
    let d = doc();
    let version = d["openapi"].as_str().expect("openapi");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "3" && parts[1] == "1" && parts[2].parse::<u32>().is_ok(),
        "openapi = {version}"
    );
    assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
    assert_eq!(d["servers"][0]["url"], "https://tollgate.example.com");

    // Every $ref is local and resolves.
    let mut refs = Vec::new();
    walk_refs(&d, String::new(), &mut refs);
    assert!(refs.len() > 50, "suspiciously few $refs: {}", refs.len());
    for (at, r) in &refs {
        assert!(r.starts_with("#/"), "{at}: non-local $ref {r}");
        assert!(resolve(&d, r).is_some(), "{at}: $ref {r} does not resolve");
    }
    // Component names are legal.
    for kind in ["schemas", "parameters", "responses", "securitySchemes"] {
        for name in d["components"][kind].as_object().expect(kind).keys() {
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
    assert_eq!(
        d["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let tags: BTreeSet<&str> = d["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name"))
        .collect();

    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&d) {
        let here = format!("{method} {path}");
        assert!(path.starts_with('/'), "{here}: path");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{here}: no operationId"));
        assert!(
            ids.insert(id.to_string()),
            "{here}: duplicate operationId {id}"
        );
        assert!(op["summary"].is_string(), "{here}: no summary");
        for t in op["tags"].as_array().unwrap_or(&Vec::new()) {
            assert!(
                tags.contains(t.as_str().unwrap_or_default()),
                "{here}: undeclared tag {t}"
            );
        }
        // Responses: present, status keys, each with a description.
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{here}: no responses"));
        assert!(!responses.is_empty(), "{here}: empty responses");
        assert!(
            responses
                .keys()
                .any(|k| k.starts_with('2') || k.starts_with('3')),
            "{here}: no success response"
        );
        for (code, r) in responses {
            let ok_code = code == "default"
                || (code.len() == 3
                    && code.as_bytes()[0].is_ascii_digit()
                    && (code[1..].chars().all(|c| c.is_ascii_digit()) || &code[1..] == "XX"));
            assert!(ok_code, "{here}: response key {code}");
            let r = deref(&d, r);
            assert!(
                r["description"].is_string(),
                "{here} {code}: no description"
            );
        }
        // Security requirements name declared schemes.
        let security = op.get("security").unwrap_or(&d["security"]);
        for req in security.as_array().expect("security array") {
            for k in req.as_object().expect("requirement").keys() {
                assert!(
                    schemes.contains_key(k),
                    "{here}: unknown security scheme {k}"
                );
            }
        }
        // Parameters: unique by (name, in); path templates and path parameters match.
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|p| deref(&d, p)).collect())
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for p in &params {
            let name = p["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{here}: parameter without name"));
            let loc = p["in"]
                .as_str()
                .unwrap_or_else(|| panic!("{here}: parameter without in"));
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
                assert_eq!(
                    p["required"], true,
                    "{here}: path parameter {name} not required"
                );
            }
        }
        let templated: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let path_params: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            templated, path_params,
            "{here}: path template vs path parameters"
        );
        if let Some(body) = op.get("requestBody") {
            let body = deref(&d, body);
            assert!(
                body["content"].as_object().is_some_and(|c| !c.is_empty()),
                "{here}: request body without content"
            );
        }
    }
    assert!(ids.len() >= 25);

    // Schemas: `required` names declared properties; types are JSON Schema types.
    let mut problems = Vec::new();
    let mut all_schemas: Vec<(String, Value)> = d["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .iter()
        .map(|(k, v)| (format!("#/components/schemas/{k}"), v.clone()))
        .collect();
    for (method, path, op) in operations(&d) {
        for (i, p) in op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = deref(&d, p);
            all_schemas.push((
                format!("{method} {path} parameter {i}"),
                p["schema"].clone(),
            ));
        }
        for media in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            all_schemas.push((
                format!("{method} {path} body {}", media.0),
                media.1["schema"].clone(),
            ));
        }
        for (code, r) in op["responses"].as_object().into_iter().flatten() {
            for media in deref(&d, r)["content"].as_object().into_iter().flatten() {
                all_schemas.push((
                    format!("{method} {path} {code} {}", media.0),
                    media.1["schema"].clone(),
                ));
            }
        }
    }
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
            let ok = [
                "null", "boolean", "object", "array", "number", "string", "integer",
            ]
            .contains(&t.as_str().unwrap_or_default());
            if !ok {
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
    for (at, s) in &all_schemas {
        walk_schemas(s, at, &mut check);
    }
    assert!(checked > 200, "only {checked} schemas walked");
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---- drift: request bodies and query parameters --------------------------------------------------

#[test]
fn the_create_body_and_its_description_follow_the_handler() {
    let tx = source("api/transactions.rs");
    let create = const_list(&tx, None, "CREATE_FIELDS");
    let ignored = const_list(&tx, None, "IGNORED_CREATE_FIELDS");
    let raw = const_list(&tx, None, "RAW_CARD_FIELDS");
    assert_eq!(
        set(openapi::IGNORED_CREATE_FIELDS.iter().copied()),
        set(ignored.clone()),
        "update openapi::IGNORED_CREATE_FIELDS from api/transactions.rs"
    );
    assert_eq!(
        set(openapi::RAW_CARD_FIELDS.iter().copied()),
        set(raw.clone()),
        "update openapi::RAW_CARD_FIELDS from api/transactions.rs"
    );
    let d = doc();
    let body = props(&d, "TransactionCreate");
    let want: BTreeSet<String> = create.iter().chain(&ignored).cloned().collect();
    assert_eq!(
        body, want,
        "TransactionCreate properties vs CREATE_FIELDS + IGNORED_CREATE_FIELDS"
    );
    assert_eq!(
        schema(&d, "TransactionCreate")["additionalProperties"],
        false
    );
    for f in &ignored {
        let desc = schema(&d, "TransactionCreate")["properties"][f]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            desc.contains("ignored"),
            "TransactionCreate.{f} should say it is ignored"
        );
    }

    let op = operation(&d, "post", "/transactions");
    let desc = op["description"].as_str().expect("create description");
    for f in &ignored {
        assert!(
            desc.contains(&format!("`{f}`")),
            "create description lacks ignored field {f}"
        );
    }
    for f in &raw {
        assert!(
            desc.contains(&format!("`{f}`")),
            "create description lacks raw card field {f}"
        );
    }
    assert!(
        desc.contains("Raw card data is refused"),
        "create description: raw card data"
    );
    let pm = const_list(&tx, Some("fn parse_create"), "PM_FIELDS");
    assert_eq!(props(&d, "TransactionCreatePaymentMethod"), set(pm));
    assert_eq!(
        deref(
            &d,
            &op["requestBody"]["content"]["application/json"]["schema"]
        )["type"],
        "object"
    );
}

#[test]
fn other_bodies_and_list_filters_follow_the_handlers() {
    let tx = source("api/transactions.rs");
    let d = doc();

    let known = const_list(&tx, Some("pub async fn list"), "KNOWN");
    let op = operation(&d, "get", "/transactions");
    let query: BTreeSet<String> = op["parameters"]
        .as_array()
        .expect("list parameters")
        .iter()
        .map(|p| deref(&d, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        query,
        set(known),
        "GET /transactions query parameters vs the handler's KNOWN"
    );
    for spec_filter in [
        "status",
        "created_at_gte",
        "created_at_lte",
        "updated_at_gte",
        "updated_at_lte",
        "external_identifier",
        "customid",
        "payment_service_transaction_id",
        "amount_gte",
        "amount_lte",
        "currency",
        "cursor",
        "limit",
    ] {
        assert!(
            query.contains(spec_filter),
            "SPEC §3.2 filter {spec_filter}"
        );
    }

    let capture = const_list(&tx, Some("pub async fn capture"), "FIELDS");
    assert_eq!(props(&d, "TransactionCaptureRequest"), set(capture));

    let refunds = source("api/refunds.rs");
    let at = refunds
        .find("pub async fn create")
        .expect("refunds::create");
    let open = at + refunds[at..].find("if ![").expect("refund field list") + "if !".len();
    let fields = literals(&refunds[open..close_of(&refunds, open)]);
    assert_eq!(props(&d, "RefundCreate"), set(fields));

    let conn = source("api/connections.rs");
    let fields = set(const_list(&conn, None, "FIELDS"));
    assert_eq!(props(&d, "ConnectionCreate"), fields);
    assert_eq!(props(&d, "ConnectionUpdate"), fields);

    let inbox = source("api/webhook_events.rs");
    let op = operation(&d, "get", "/webhook-events");
    let query: BTreeSet<String> = op["parameters"]
        .as_array()
        .expect("list parameters")
        .iter()
        .map(|p| deref(&d, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        query,
        set(const_list(&inbox, None, "LIST_PARAMS")),
        "GET /webhook-events query parameters vs the handler's LIST_PARAMS"
    );
    assert_eq!(
        props(&d, "SyncRequest"),
        set(const_list(&inbox, None, "SYNC_FIELDS"))
    );

    let ma = source("api/merchant_accounts.rs");
    assert!(
        ma.contains(r#"k != "id" && k != "display_name""#),
        "merchant account fields changed"
    );
    assert_eq!(
        props(&d, "MerchantAccountCreate"),
        set(["id", "display_name"])
    );
}

// ---- drift: response objects ----------------------------------------------------------------------

/// The top-level keys of the renderer's object equal the schema's properties, all required;
/// nested objects likewise.
fn same_keys(d: &Value, keys: &BTreeMap<String, BTreeSet<String>>, path: &str, schema_name: &str) {
    let s = schema(d, schema_name);
    let code = keys.get(path).cloned().unwrap_or_default();
    assert_eq!(
        prop_set(s),
        code,
        "schema {schema_name} vs the renderer's keys at '{path}'"
    );
    let required: BTreeSet<String> = s["required"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        required, code,
        "schema {schema_name}: every emitted key is required"
    );
}

#[test]
fn response_schemas_follow_the_renderers() {
    let d = doc();
    let render = source("api/render.rs");
    let t = json_keys(&render, r#""type": "transaction","#);
    same_keys(&d, &t, "", "Transaction");
    same_keys(&d, &t, "payment_method", "TransactionPaymentMethod");
    same_keys(&d, &t, "payment_service", "TransactionPaymentService");
    let buyer = json_keys(&render, r#""type": "buyer""#);
    same_keys(&d, &buyer, "", "TransactionBuyer");
    let ids = json_keys(&render, r#""payment_id": pi"#);
    assert_eq!(props(&d, "AdditionalIdentifiers"), ids[""]);

    same_keys(&d, &json_keys(&render, r#""type": "refund""#), "", "Refund");

    // The inbox row: every rendered key is a required property; `payload` is added only for
    // one row, so it is the one optional property.
    let inbox = source("api/webhook_events.rs");
    let keys = json_keys(&inbox, r#""type": "webhook-event","#);
    let s = schema(&d, "WebhookEvent");
    let mut with_payload = keys[""].clone();
    with_payload.insert("payload".into());
    assert_eq!(prop_set(s), with_payload, "WebhookEvent vs render()");
    assert!(
        inbox.contains(r#"v["payload"] ="#),
        "render() adds the payload"
    );
    let required: BTreeSet<String> = s["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        required, keys[""],
        "WebhookEvent: every rendered key is required"
    );
    let reconcile = source("reconcile.rs");
    let report = json_keys(&reconcile, r#""type": "sync-report","#);
    same_keys(&d, &report, "", "SyncReport");

    let at = render.find("pub fn page").expect("render::page");
    let page = &render[at..at + render[at..].find("\n}").expect("end of page")];
    let envelope: BTreeSet<String> = page
        .split("insert(\"")
        .skip(1)
        .map(|s| s[..s.find('"').expect("key")].to_string())
        .collect();
    for list in [
        "Transactions",
        "Refunds",
        "Connections",
        "TransactionEvents",
        "MerchantAccounts",
    ] {
        assert_eq!(props(&d, list), envelope, "list envelope {list}");
    }

    let tx = source("api/transactions.rs");
    same_keys(
        &d,
        &json_keys(&tx, r#""type": "transaction-cancel""#),
        "",
        "TransactionCancel",
    );
    same_keys(
        &d,
        &json_keys(&tx, r#""type": "transaction-event""#),
        "",
        "TransactionEvent",
    );
    let session = json_keys(&tx, r#""session_data": {"#);
    same_keys(&d, &session, "", "TransactionSession");
    assert_eq!(
        prop_set(&schema(&d, "TransactionSession")["properties"]["session_data"]),
        session["session_data"]
    );

    let conn = source("api/connections.rs");
    same_keys(
        &d,
        &json_keys(&conn, r#""type": "connection","#),
        "",
        "Connection",
    );
    same_keys(
        &d,
        &json_keys(&conn, r#""type": "connection-verification""#),
        "",
        "ConnectionVerification",
    );
    same_keys(
        &d,
        &json_keys(&conn, r#""resource": name"#),
        "",
        "ConnectionResourceCheck",
    );
    let reads_at = conn.find("const READS").expect("READS");
    let reads_end = reads_at + conn[reads_at..].find("];").expect("end of READS");
    let reads = literals(&conn[reads_at..reads_end]);
    let resources: BTreeSet<String> = reads.chunks(3).map(|c| c[0].clone()).collect();
    let documented: BTreeSet<String> =
        schema(&d, "ConnectionResourceCheck")["properties"]["resource"]["enum"]
            .as_array()
            .expect("resource enum")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
    assert_eq!(documented, resources, "verified resources vs READS");

    let inbox = source("api/webhook_events.rs");
    let op = operation(&d, "get", "/webhook-events");
    let query: BTreeSet<String> = op["parameters"]
        .as_array()
        .expect("list parameters")
        .iter()
        .map(|p| deref(&d, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        query,
        set(const_list(&inbox, None, "LIST_PARAMS")),
        "GET /webhook-events query parameters vs the handler's LIST_PARAMS"
    );
    assert_eq!(
        props(&d, "SyncRequest"),
        set(const_list(&inbox, None, "SYNC_FIELDS"))
    );

    let ma = source("api/merchant_accounts.rs");
    same_keys(
        &d,
        &json_keys(&ma, r#""type": "merchant-account""#),
        "",
        "MerchantAccount",
    );

    // The error envelope (SPEC §8).
    let err = source("error.rs");
    let keys = json_keys(&err, r#""code": self.code()"#);
    assert_eq!(
        keys[""],
        set(["type", "code", "status", "message", "details"])
    );
    let e = schema(&d, "Error");
    let required: BTreeSet<String> = e["required"]
        .as_array()
        .expect("Error.required")
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(required, keys[""]);
    assert!(prop_set(e).is_superset(&set(["transaction_id", "id"])));
    let detail = schema(&d, "ErrorDetail");
    assert_eq!(
        prop_set(detail),
        set(["location", "pointer", "message", "type"])
    );
    assert_eq!(detail["required"].as_array().map(Vec::len), Some(4));
    for code in [
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "duplicate_record",
        "concurrent_request",
        "idempotency_key_mismatch",
        "too_many_requests",
        "server_error",
        "bad_gateway",
        "gateway_timeout",
    ] {
        assert!(
            err.contains(&format!("=> \"{code}\"")),
            "error.rs no longer has code {code}"
        );
        assert!(
            schema(&d, "ErrorCode")["enum"]
                .as_array()
                .expect("enum")
                .contains(&Value::from(code)),
            "ErrorCode lacks {code}"
        );
    }
    let documented: BTreeSet<String> = schema(&d, "TransactionStatus")["enum"]
        .as_array()
        .expect("status enum")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let domain = set(tollgate_domain::TransactionStatus::ALL
        .iter()
        .map(|s| s.as_str()));
    assert_eq!(
        documented, domain,
        "TransactionStatus vs the domain's statuses"
    );
}

#[test]
fn auth_headers_and_idempotency_are_documented_where_they_apply() {
    let d = doc();
    let scheme = &d["components"]["securitySchemes"]["bearerAuth"];
    let desc = scheme["description"].as_str().unwrap_or_default();
    assert!(desc.contains("tg_sk_") && desc.contains("tg_pk_"));
    let names: BTreeMap<&str, &str> = d["components"]["parameters"]
        .as_object()
        .expect("parameters")
        .iter()
        .map(|(k, v)| (k.as_str(), v["name"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(names["MerchantAccountId"], "X-Merchant-Account-Id");
    assert_eq!(
        names["Gr4vyMerchantAccountId"],
        "x-gr4vy-merchant-account-id"
    );
    assert_eq!(names["IdempotencyKey"], "Idempotency-Key");

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
        if public.contains(&path.as_str()) {
            assert_eq!(op["security"], serde_json::json!([]), "{here}: public");
            continue;
        }
        assert_eq!(
            op["security"][0]["bearerAuth"],
            serde_json::json!([]),
            "{here}: bearer"
        );
        assert!(
            refs.contains("#/components/parameters/MerchantAccountId"),
            "{here}: merchant header"
        );
        assert!(
            refs.contains("#/components/parameters/Gr4vyMerchantAccountId"),
            "{here}: alias header"
        );
        for code in ["401", "403"] {
            assert!(op["responses"].get(code).is_some(), "{here}: {code}");
        }
        let keyed = refs.contains("#/components/parameters/IdempotencyKey");
        // Every API POST goes through the idempotency middleware (except the session, which
        // has no API key to scope a key by).
        assert_eq!(keyed, method == "POST", "{here}: Idempotency-Key");
        if keyed {
            assert!(op["responses"].get("409").is_some(), "{here}: 409");
        }
    }
    let session = operation(&d, "post", "/transactions/{id}/session");
    assert!(
        session["parameters"]
            .as_array()
            .expect("session parameters")
            .iter()
            .any(|p| p["name"] == "token" && p["in"] == "query" && p["required"] == true)
    );
    let cancel = operation(&d, "post", "/transactions/{id}/cancel");
    assert_eq!(
        cancel["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/TransactionCancel"
    );
}

// ---- the reference page and the two routes ------------------------------------------------------

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

#[tokio::test]
async fn the_app_serves_the_document_and_the_page() {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = tollgate_server::Config {
        data_dir: dir.path().to_path_buf(),
        public_url: Some("https://pay.example.com".into()),
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
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "GET /openapi.json (is openapi::router() merged into the app?)"
    );
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let body = to_bytes(r.into_body(), 10 << 20).await.expect("body");
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(served, openapi::document("https://pay.example.com"));

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

#[test]
fn entitlement_bodies_follow_the_handlers() {
    use tollgate_server::api::entitlements as ent;
    let d = doc();
    assert_eq!(props(&d, "SkuCreate"), set(ent::SKU_FIELDS.iter().copied()));
    assert_eq!(
        props(&d, "PermissionDefinitionCreate"),
        set(ent::DEFINITION_FIELDS.iter().copied())
    );
    assert_eq!(
        props(&d, "ConnectStripe"),
        set(ent::CONNECT_FIELDS.iter().copied())
    );
    assert_eq!(
        props(&d, "EntitlementSettingsUpdate"),
        set(ent::SETTINGS_FIELDS.iter().copied())
    );
    let check = operation(&d, "get", "/v1/permissions");
    let query: BTreeSet<String> = check["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(query, set(ent::PERMISSIONS_QUERY.iter().copied()));
    // The check's answer names exactly the keys the renderer writes.
    let perm = props(&d, "Permission");
    let row = tollgate_store::entitlements::PermissionRow {
        identifier: "premium".into(),
        is_valid: true,
        entitlement: 5,
        expires_at: Some(1_767_225_600_000),
        valid_until: None,
        skus: r#"[{"identifier":"web_monthly","product_id":"prod_1","trial":false}]"#.into(),
        updated_at: 0,
        version: 0,
    };
    let rendered = tollgate_server::entitlements::permission_json(&row, 0);
    let keys: BTreeSet<String> = rendered.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, perm);
    assert_eq!(rendered["expires_at"], "2026-01-01T00:00:00Z");
    assert_eq!(rendered["expires_date"], 1_767_225_600);
    let sku_keys: BTreeSet<String> = rendered["skuarray"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(sku_keys, props(&d, "SkuUse"));
}

#[test]
fn webhook_schemas_follow_the_handlers() {
    let d = doc();
    let src = source("api/webhooks_out.rs");
    // Bodies: the handler's field list.
    let fields = set(const_list(&src, None, "FIELDS"));
    assert_eq!(props(&d, "WebhookSubscriptionCreate"), fields);
    assert_eq!(props(&d, "WebhookSubscriptionUpdate"), fields);
    // Delivery list filters.
    let op = operation(&d, "get", "/webhook-deliveries");
    let documented: BTreeSet<String> = op["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| deref(&d, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(documented, set(const_list(&src, None, "DELIVERY_QUERY")));
    let statuses = set(const_list(&src, None, "DELIVERY_STATUSES"));
    let enumerated: BTreeSet<String> = schema(&d, "WebhookDeliveryStatus")["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(enumerated, statuses);
    // Objects: the renderers' keys (plus what only some answers add).
    let sub = json_keys(&src, r#""type": "webhook-subscription","#);
    let mut with_secret = sub[""].clone();
    with_secret.insert("secret".into());
    assert_eq!(props(&d, "WebhookSubscription"), with_secret);
    let delivery = json_keys(&src, r#""type": "webhook-delivery","#);
    let mut full = delivery[""].clone();
    full.insert("event".into());
    full.insert("attempt_log".into());
    assert_eq!(props(&d, "WebhookDelivery"), full);
    assert!(src.contains(r#"v["event"] ="#) && src.contains(r#"v["attempt_log"] ="#));
    same_keys(
        &d,
        &json_keys(&src, r#""type": "webhook-delivery-attempt","#),
        "",
        "WebhookDeliveryAttempt",
    );
    // The event envelope as the outbox writes it.
    let outbox = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/src/outbox.rs"),
    )
    .expect("outbox.rs");
    same_keys(
        &d,
        &json_keys(&outbox, r#""type": "event","#),
        "",
        "OutboundEvent",
    );
}
