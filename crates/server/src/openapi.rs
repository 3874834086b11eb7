//! The OpenAPI 3.1 document of the whole HTTP API and the routes that serve it:
//! `GET /openapi.json` and `GET /docs`, a reference page that renders the document with no
//! external asset (one embedded HTML file, its script and style allowed by hash in a strict
//! Content-Security-Policy).
//!
//! The document is derived: [`ApiDoc`] is its base (info, tags, the security scheme, the shared
//! header parameters and error responses), each API module adds its operations and schemas from
//! its handlers' `#[utoipa::path]` and its request and response types
//! ([`crate::api::openapi_router`]), and [`complete`] adds to every operation what the layers
//! around the handlers answer (authentication, the merchant account headers, the edge's 400).
//! It is built once and served with this server's `public_url`.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Ref, RefOr, ResponseBuilder, Server, header::HeaderBuilder, path::ParameterIn,
};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::ApiContext;
use crate::error::ErrorEnvelope;

/// The reference page served at `/docs`.
pub const REFERENCE_HTML: &str = include_str!("../assets/reference.html");

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        // Text Tollgate cannot store (a NUL in a query parameter) is refused as everywhere else.
        .route_layer(axum::middleware::from_fn(crate::edge::api))
}

/// The document's text is the [`ApiDoc`] base with every module's operations; its `servers`
/// entry is this server's public URL.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi",
    tag = "reference",
    summary = "This OpenAPI 3.1 document",
    security(()),
    responses(
        (status = 200, description = "The document (OpenAPI 3.1, JSON).", body = Object, content_type = "application/json"),
    ),
)]
async fn openapi_json(State(ctx): State<ApiContext>) -> Response {
    let mut r = axum::Json(document(&ctx.public_url)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The document is public; let other origins' viewers read it.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// A self-contained page that renders `/openapi.json` (no external assets), with a `curl`
/// example per operation.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "get_docs",
    tag = "reference",
    summary = "The API reference page",
    security(()),
    responses(
        (status = 200, description = "HTML.", body = String, content_type = "text/html"),
    ),
)]
async fn docs() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        REFERENCE_HTML,
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(reference_csp()) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The Content-Security-Policy of `/docs`: nothing but the page's own inline script and style
/// (by SHA-256) and fetches to this origin.
pub fn reference_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = |tag: &str| {
            use base64::Engine;
            use sha2::Digest;
            let text = inline_element(REFERENCE_HTML, tag).unwrap_or_default();
            let digest = sha2::Sha256::digest(text.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("script"),
            hash("style")
        )
    })
}

/// The text of the first `<tag>…</tag>` of `html` (the page has one script and one style).
pub fn inline_element<'a>(html: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = html.find(&open)? + open.len();
    let end = start + html[start..].find(&close)?;
    Some(&html[start..end])
}

// ---- the base -----------------------------------------------------------------------------------

const INFO_DESCRIPTION: &str = "Tollgate's transactions API over Stripe. Money is an integer in minor units with an ISO-4217 currency; timestamps are RFC 3339 UTC.\n\n\
Gr4vy's official SDKs work unmodified against it: its paths, objects and error envelope are kept, and its header `x-gr4vy-merchant-account-id` is an alias of `X-Merchant-Account-Id`. The entitlements API under `/v1` follows Glassfy's permissions and subscribers.\n\n\
Every error is the envelope `{type: \"error\", code, status, message, details[]}`; there are no 422s. Text Tollgate cannot store is refused before anything else runs: a NUL character (U+0000) in a path or query parameter, in a form field or in any JSON string or object key, or a path parameter that is not UTF-8, is a 400 whose `details[].pointer` names it. A JSON body is at most 1 MiB (1,048,576 bytes): a larger one is a 400. POSTs honour an optional `Idempotency-Key`: a replay returns the first answer, the same key while the first request runs is 409 `concurrent_request`, with another body 409 `idempotency_key_mismatch`; 5xx answers are not kept, so a retry resumes the work.";

const SUMMARY: &str = "Self-hosted payments and entitlements over Stripe.";

const BEARER_DESCRIPTION: &str = "`Authorization: Bearer tg_sk_…` (secret key, server-side, bound to one merchant account, or an operator key made with `--all-accounts`) or `tg_pk_…` (public key: permission reads only; every other endpoint answers it 403). Keys are made with `tollgate keys create` and shown once. The dashboard's cookie is never accepted.";

/// The header parameters every authenticated operation takes (components `MerchantAccountId`
/// and `Gr4vyMerchantAccountId`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct MerchantAccountHeaders {
    /// The merchant account to act for. A key bound to an account acts for it: naming another
    /// answers 403. An operator key may name any existing account (default `default`); naming
    /// one that does not exist answers 404. Alias: `x-gr4vy-merchant-account-id`.
    #[param(
        rename = "X-Merchant-Account-Id",
        value_type = String,
        required = false,
        pattern = "^[a-z0-9_-]{1,64}$",
        example = "default"
    )]
    merchant_account_id: Option<String>,
    /// Alias of `X-Merchant-Account-Id` (sent by Gr4vy's SDKs), read only when
    /// `X-Merchant-Account-Id` is absent (then any value is ignored). Read, it names the account
    /// as `X-Merchant-Account-Id` does: an account id is 1 to 64 lower-case letters, digits, `-`
    /// or `_`, and any other value names no account (403 for a bound key, 404 for an operator
    /// key).
    #[param(
        rename = "x-gr4vy-merchant-account-id",
        value_type = String,
        required = false,
        example = "default"
    )]
    gr4vy_merchant_account_id: Option<String>,
}

/// The header of the POSTs under the idempotency layer (component `IdempotencyKey`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// Optional, 1 to 255 visible ASCII characters (`!` to `~`, no spaces); anything else is a
    /// 400. Scoped to (merchant account, API key, method, path, key) with a hash of the body and
    /// kept 24 h (configurable). A replay returns the first response; while the first request
    /// runs: 409 `concurrent_request`; with another body: 409 `idempotency_key_mismatch`. A
    /// retry resumes the work of a first request that left no answer: one that ended in a 5xx
    /// (not kept), one cut off when its client went away, and one whose server stopped
    /// mid-request once its claim lapses (`idempotency_lease_secs`, 10 s by default). Kept
    /// answers are stored encrypted.
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        pattern = "^[!-~]{1,255}$",
        example = "order-1234-attempt-1"
    )]
    idempotency_key: Option<String>,
}

/// (component name, header name) of the shared header parameters.
const HEADER_PARAMETERS: &[(&str, &str)] = &[
    ("MerchantAccountId", "X-Merchant-Account-Id"),
    ("Gr4vyMerchantAccountId", "x-gr4vy-merchant-account-id"),
    ("IdempotencyKey", "Idempotency-Key"),
];

/// The shared error responses, each an `Error` envelope: (component name, description).
pub const ERROR_RESPONSES: &[(&str, &str)] = &[
    (
        "BadRequest",
        "`bad_request`: the request failed validation; `details` points at each problem (`location` body/query/path/header, `pointer` a JSON pointer). A JSON body over 1 MiB is refused with this status too (\"…larger than 1048576 bytes\"). Nothing was changed.",
    ),
    (
        "Unauthorized",
        "`unauthorized`: no valid API key (or session token).",
    ),
    (
        "Forbidden",
        "`forbidden`: a public key on a secret endpoint, a key bound to another merchant account than the one named, or an operator-only action.",
    ),
    (
        "NotFound",
        "`not_found`: no such object in this merchant account, or (an operator key naming one) no such merchant account.",
    ),
    (
        "Conflict",
        "`concurrent_request` (the same Idempotency-Key is still being processed), `idempotency_key_mismatch` (the key was used with another body) or `duplicate_record`.",
    ),
    (
        "PayloadTooLarge",
        "`bad_request` with status 413: the body is over the endpoint's limit.",
    ),
    (
        "TooManyRequests",
        "`too_many_requests`: the permission-check rate limit of this key and client address; `Retry-After` says when to retry.",
    ),
    (
        "ServerError",
        "`server_error`: something of Tollgate's failed; the cause is logged, never returned.",
    ),
    (
        "BadGateway",
        "`bad_gateway`: Stripe could not be reached, failed or refused. When a transaction was saved first, the body carries its `id` (and `transaction_id`): call `POST /transactions/{id}/sync` or retry with the same Idempotency-Key.",
    ),
    (
        "GatewayTimeout",
        "`gateway_timeout`: Stripe did not answer in time; as 502, the body carries the saved transaction's `id`.",
    ),
];

/// The base of the document: info, servers (replaced per request), document-wide security,
/// tags, and the shared components ([`Base`]); `/openapi.json` and `/docs` themselves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate API",
        description = INFO_DESCRIPTION,
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "This Tollgate server")),
    security(("bearerAuth" = [])),
    tags(
        (name = "transactions", description = "Payments: create, approve, capture, void, cancel, sync."),
        (name = "refunds", description = "Money returned on a captured transaction; many per transaction, partial or full."),
        (name = "connections", description = "Stripe accounts and their credentials."),
        (name = "webhook-events", description = "Stripe events received (the inbox) and reconcile."),
        (name = "merchant-accounts", description = "Tenants."),
        (name = "entitlements", description = "SKUs, permission definitions, customer links and the permission check (Glassfy-compatible)."),
        (name = "webhooks", description = "Outbound webhooks: subscriptions, signed deliveries (Standard Webhooks), the delivery log and resend."),
        (name = "buyer", description = "URLs the buyer's browser or app reaches, authorised by a token instead of an API key."),
        (name = "operations", description = "Health, readiness and metrics."),
        (name = "reference", description = "This document and its reference page."),
    ),
    components(schemas(ErrorEnvelope)),
    paths(crate::pay::complete, openapi_json, docs),
    modifiers(&Base),
)]
pub struct ApiDoc;

/// The base's parts the derive attributes cannot say: the summary, the security scheme, the
/// header parameters and the error responses.
pub struct Base;

impl Modify for Base {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // OpenAPI 3.1's `info.summary` has no field in utoipa's `Info`: it is written as one
        // more key of the object.
        doc.info
            .extensions
            .get_or_insert_with(Default::default)
            .insert("summary".into(), json!(SUMMARY));
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tg_sk_… | tg_pk_…")
                    .description(Some(BEARER_DESCRIPTION))
                    .build(),
            ),
        );
        let headers = MerchantAccountHeaders::into_params(|| Some(ParameterIn::Header))
            .into_iter()
            .chain(IdempotencyHeader::into_params(|| Some(ParameterIn::Header)));
        for p in headers {
            if let Some((component, _)) = HEADER_PARAMETERS.iter().find(|(_, h)| *h == p.name) {
                c.parameters.insert(component.to_string(), RefOr::T(p));
            }
        }
        for (name, description) in ERROR_RESPONSES {
            let mut r = ResponseBuilder::new().description(*description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            );
            if *name == "TooManyRequests" {
                r = r.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::Integer)
                                .minimum(Some(0)),
                        ))
                        .description(Some("Seconds to wait before the next check."))
                        .build(),
                );
            }
            c.responses.insert(name.to_string(), RefOr::T(r.build()));
        }
    }
}

// ---- the derived document ---------------------------------------------------------------------

/// The derived document as utoipa builds it: the base, then every module's operations and
/// schemas (the reference routes last).
pub fn derived() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let reference = std::mem::take(&mut doc.paths);
    doc.merge(crate::api::openapi_router(None).into_openapi());
    doc.paths.merge(reference);
    doc
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Adds to every operation what the layers around its handler answer, unless it says so itself:
/// - every operation: 400 (the edge refuses text that cannot be stored in any path or query
///   parameter, and a JSON body that is not valid or over 1 MiB);
/// - an authenticated one (no `security` of its own, or one naming a scheme): the merchant
///   account headers, and 401, 403, 404 (an operator key naming an unknown merchant account)
///   and 500.
pub fn complete(doc: &mut Value) {
    let default_secured = secured(&doc["security"]);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(*method).and_then(Value::as_object_mut) else {
                continue;
            };
            let authenticated = op.get("security").map_or(default_secured, secured);
            let mut errors = vec![("400", "BadRequest")];
            if authenticated {
                errors.extend([
                    ("401", "Unauthorized"),
                    ("403", "Forbidden"),
                    ("404", "NotFound"),
                    ("500", "ServerError"),
                ]);
                let params = op
                    .entry("parameters")
                    .or_insert_with(|| json!([]))
                    .as_array_mut();
                if let Some(params) = params {
                    let mut missing = Vec::new();
                    for (component, header) in &HEADER_PARAMETERS[..2] {
                        let named = params.iter().any(|p| {
                            p["$ref"] == format!("#/components/parameters/{component}")
                                || (p["in"] == "header"
                                    && p["name"]
                                        .as_str()
                                        .is_some_and(|n| n.eq_ignore_ascii_case(header)))
                        });
                        if !named {
                            missing.push(json!({
                                "$ref": format!("#/components/parameters/{component}")
                            }));
                        }
                    }
                    params.splice(0..0, missing);
                }
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(responses) = responses.as_object_mut() {
                for (status, component) in errors {
                    responses.entry(status).or_insert_with(
                        || json!({ "$ref": format!("#/components/responses/{component}") }),
                    );
                }
                sort_statuses(responses);
            }
        }
    }
}

/// Whether a security requirement list asks for a scheme (`[]` and `[{}]` ask for none).
fn secured(security: &Value) -> bool {
    security.as_array().is_some_and(|reqs| {
        reqs.iter()
            .any(|r| r.as_object().is_some_and(|m| !m.is_empty()))
    })
}

/// Responses in status order (`2XX`-style ranges and `default` after the numbers they cover).
fn sort_statuses(responses: &mut Map<String, Value>) {
    let mut all: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(all);
}

/// The derived document as served (without the part not derived yet), with `public_url` as its
/// server.
pub fn derived_document(public_url: &str) -> Value {
    let mut doc = serde_json::to_value(derived()).unwrap_or_else(|_| json!({}));
    complete(&mut doc);
    with_server(doc, public_url)
}

/// The whole API's OpenAPI 3.1 document, with `public_url` as its server; built once.
pub fn document(public_url: &str) -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(derived()).unwrap_or_else(|_| json!({}));
        complete(&mut doc);
        doc
    });
    with_server(doc.clone(), public_url)
}

fn with_server(mut doc: Value, public_url: &str) -> Value {
    let server = Server::builder()
        .url(public_url.trim_end_matches('/'))
        .description(Some("This Tollgate server"))
        .build();
    doc["servers"] = serde_json::to_value(vec![server]).unwrap_or_else(|_| json!([]));
    doc
}
