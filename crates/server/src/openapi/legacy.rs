//! The hand-written part of the OpenAPI document, for the operations and schemas not yet derived
//! from Rust types. Everything here goes when the last module is derived: delete this file and
//! the two lines marked `LEGACY` in `openapi.rs`.
//!
//! [`fill`] adds to the derived document each operation, parameter, response and schema it does
//! not have yet; what is derived always wins.

use serde_json::{Map, Value, json};

/// The create fields accepted and ignored, and the `payment_method` keys refused as raw card
/// data (copies of the transactions handler's lists, for the descriptions below).
const IGNORED_CREATE_FIELDS: &[&str] = &[
    "buyer",
    "buyer_id",
    "gift_cards",
    "store",
    "three_d_secure_data",
    "three_d_secure",
    "is_subsequent_payment",
    "merchant_initiated",
    "payment_source",
    "airline",
    "cart_items",
    "statement_descriptor",
    "previous_scheme_transaction_id",
    "previous_transaction_link_id",
    "browser_info",
    "shipping_details_id",
    "connection_options",
    "async_capture",
    "anti_fraud_fingerprint",
    "account_funding_transaction",
    "allow_partial_authorization",
    "recipient",
    "installment_count",
    "tax_amount",
    "merchant_tax_id",
    "purchase_order_number",
    "customer_reference_number",
    "amount_includes_tax",
    "supplier_order_number",
    "duty_amount",
    "shipping_amount",
    "is_amount_estimated",
];

const RAW_CARD_FIELDS: &[&str] = &[
    "number",
    "security_code",
    "expiration_date",
    "card_number",
    "cvv",
    "cvc",
];

/// The SKU kinds (a copy of the entitlements handler's list).
const SKU_KINDS: &[&str] = &["subscription", "one_time"];

/// Adds the hand-written operations (after the derived ones of the same path, in the old path
/// order) and components that `doc` lacks.
pub fn fill(doc: &mut Value) {
    let legacy = legacy_document();
    if let (Some(paths), Some(old)) = (
        doc["paths"].as_object().cloned(),
        legacy["paths"].as_object(),
    ) {
        let mut merged = Map::new();
        for (path, item) in old {
            let mut item = item.as_object().cloned().unwrap_or_default();
            if let Some(new) = paths.get(path).and_then(Value::as_object) {
                for (method, op) in new {
                    item.insert(method.clone(), op.clone());
                }
            }
            merged.insert(path.clone(), Value::Object(item));
        }
        for (path, item) in paths {
            merged.entry(path).or_insert(item);
        }
        doc["paths"] = Value::Object(merged);
    }
    for part in ["securitySchemes", "parameters", "responses", "schemas"] {
        let mut m = legacy["components"][part]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in doc["components"][part]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            m.insert(k, v);
        }
        doc["components"][part] = Value::Object(m);
    }
}

const STATUSES: &[&str] = &tollgate_domain::TransactionStatus::NAMES;

/// The resources `POST /connections/{id}/verify` reports on.
const VERIFIED_RESOURCES: &[&str] = &[
    "customers",
    "invoices",
    "payment_intents",
    "checkout_sessions",
    "credit_notes",
    "subscriptions",
    "events",
    "charges",
    "refunds",
    "disputes",
    "products",
    "prices",
];

// ---- schema builder ---------------------------------------------------------------------------

/// The characters `str::trim` removes (Unicode White_Space), as a regex class body.
const WS: &str = r"\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A string the server trims: `body` with optional white space around it.
fn trimmed(body: &str) -> String {
    format!("^[{WS}]*{body}[{WS}]*$")
}

/// A string with at least one character that is not white space.
fn not_blank() -> String {
    format!("[^{WS}]")
}

/// A customid: 1 to 255 characters, none of them a control character.
const CUSTOMID: &str = r"^[^\u0000-\u001f\u007f-\u009f]{1,255}$";

/// One JSON Schema (2020-12, as OpenAPI 3.1 uses it).
#[derive(Clone)]
struct S(Value);

impl S {
    fn ty(t: &str) -> S {
        S(json!({ "type": t }))
    }
    fn string() -> S {
        S::ty("string")
    }
    fn integer() -> S {
        S(json!({"type": "integer", "format": "int64"}))
    }
    fn boolean() -> S {
        S::ty("boolean")
    }
    /// Any JSON value.
    fn any() -> S {
        S(json!({}))
    }
    fn datetime() -> S {
        S(json!({"type": "string", "format": "date-time"}))
    }
    fn uri() -> S {
        S(json!({"type": "string", "format": "uri"}))
    }
    fn uuid() -> S {
        S(json!({"type": "string", "format": "uuid"}))
    }
    fn reference(name: &str) -> S {
        S(json!({ "$ref": format!("#/components/schemas/{name}") }))
    }
    fn array(items: S) -> S {
        S(json!({"type": "array", "items": items.0}))
    }
    fn constant(v: Value) -> S {
        let t = match &v {
            Value::Bool(_) => "boolean",
            Value::Number(_) => "integer",
            _ => "string",
        };
        S(json!({"type": t, "const": v}))
    }
    fn one_of(values: &[&str]) -> S {
        S(json!({"type": "string", "enum": values}))
    }
    /// A string→string map.
    fn string_map() -> S {
        S(json!({"type": "object", "additionalProperties": {"type": "string"}}))
    }
    fn with(mut self, key: &str, v: impl Into<Value>) -> S {
        if let Value::Object(m) = &mut self.0 {
            m.insert(key.to_string(), v.into());
        }
        self
    }
    fn desc(self, d: &str) -> S {
        self.with("description", d)
    }
    /// Also `null`: `type` gains "null" (and `enum`/`const` the null value); a `$ref` becomes
    /// `anyOf: [ref, null]`.
    fn nullable(self) -> S {
        let Value::Object(mut m) = self.0 else {
            return self;
        };
        if m.contains_key("$ref") {
            let desc = m.remove("description");
            let mut out = Map::new();
            out.insert("anyOf".into(), json!([Value::Object(m), {"type": "null"}]));
            if let Some(d) = desc {
                out.insert("description".into(), d);
            }
            return S(Value::Object(out));
        }
        if let Some(Value::String(t)) = m.get("type").cloned() {
            m.insert("type".into(), json!([t, "null"]));
        }
        if let Some(c) = m.remove("const") {
            m.insert("enum".into(), json!([c, null]));
        }
        if let Some(Value::Array(e)) = m.get_mut("enum")
            && !e.contains(&Value::Null)
        {
            e.push(Value::Null);
        }
        S(Value::Object(m))
    }
}

/// An object schema, property by property.
struct Obj {
    props: Map<String, Value>,
    required: Vec<String>,
    closed: bool,
    description: Option<String>,
}

impl Obj {
    fn new() -> Obj {
        Obj {
            props: Map::new(),
            required: Vec::new(),
            closed: false,
            description: None,
        }
    }
    /// A property always present in the JSON (possibly `null` if its schema allows it).
    fn req(mut self, name: &str, s: S) -> Obj {
        self.props.insert(name.to_string(), s.0);
        self.required.push(name.to_string());
        self
    }
    fn opt(mut self, name: &str, s: S) -> Obj {
        self.props.insert(name.to_string(), s.0);
        self
    }
    /// Unknown properties are refused (`additionalProperties: false`).
    fn closed(mut self) -> Obj {
        self.closed = true;
        self
    }
    fn desc(mut self, d: &str) -> Obj {
        self.description = Some(d.to_string());
        self
    }
    fn build(self) -> S {
        let mut m = Map::new();
        m.insert("type".into(), json!("object"));
        if let Some(d) = self.description {
            m.insert("description".into(), json!(d));
        }
        if !self.required.is_empty() {
            m.insert("required".into(), json!(self.required));
        }
        m.insert("properties".into(), Value::Object(self.props));
        if self.closed {
            m.insert("additionalProperties".into(), json!(false));
        }
        S(Value::Object(m))
    }
}

/// A list envelope (SPEC §3.2) of `item`.
fn list_of(item: &str, desc: &str) -> S {
    Obj::new()
        .desc(desc)
        .req("items", S::array(S::reference(item)))
        .req(
            "limit",
            S::integer().with("minimum", 0).desc(
                "The page size asked for (or the number of items when the list is not paged).",
            ),
        )
        .req(
            "next_cursor",
            S::string()
                .nullable()
                .desc("Pass as `cursor` for the next (older) page; `null` on the last page."),
        )
        .req(
            "previous_cursor",
            S::string()
                .nullable()
                .desc("Pass as `cursor` for the previous (newer) page; `null` on the first page."),
        )
        .build()
}

// ---- operation builder ------------------------------------------------------------------------

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// A secret key (`tg_sk_…`) with the merchant account headers.
    Secret,
    /// A secret operator key (one created with `--all-accounts`).
    Operator,
    /// No API key (health, buyer-facing URLs, this document).
    Public,
}

struct Op {
    method: &'static str,
    path: &'static str,
    v: Map<String, Value>,
    params: Vec<Value>,
    responses: Map<String, Value>,
}

fn op(method: &'static str, path: &'static str, id: &str, tag: &str, summary: &str) -> Op {
    let mut v = Map::new();
    v.insert("operationId".into(), json!(id));
    v.insert("tags".into(), json!([tag]));
    v.insert("summary".into(), json!(summary));
    Op {
        method,
        path,
        v,
        params: Vec::new(),
        responses: Map::new(),
    }
}

fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

impl Op {
    fn desc(mut self, d: &str) -> Op {
        self.v.insert("description".into(), json!(d));
        self
    }

    fn auth(mut self, auth: Auth) -> Op {
        match auth {
            Auth::Public => {
                self.v.insert("security".into(), json!([]));
            }
            Auth::Secret | Auth::Operator => {
                self.v
                    .insert("security".into(), json!([{ "bearerAuth": [] }]));
                self.params.push(param_ref("MerchantAccountId"));
                self.params.push(param_ref("Gr4vyMerchantAccountId"));
                // 404: an operator key naming a merchant account that does not exist.
                self = self
                    .err("401", "Unauthorized")
                    .err("403", "Forbidden")
                    .err("404", "NotFound")
                    .err("500", "ServerError");
            }
        }
        self
    }

    /// POSTs under the idempotency middleware (SPEC §8); a malformed key is a 400.
    fn idempotent(mut self) -> Op {
        self.params.push(param_ref("IdempotencyKey"));
        self.err("400", "BadRequest").err("409", "Conflict")
    }

    fn param(mut self, name: &str) -> Op {
        self.params.push(param_ref(name));
        self
    }

    fn query(mut self, name: &str, schema: S, required: bool, desc: &str) -> Op {
        let mut p = json!({"name": name, "in": "query", "required": required,
                           "description": desc, "schema": schema.0});
        if schema_is_array(&p["schema"]) {
            p["style"] = json!("form");
            p["explode"] = json!(true);
        }
        self.params.push(p);
        self
    }

    fn body(mut self, schema: S, required: bool, example: Option<Value>) -> Op {
        let mut media = json!({ "schema": schema.0 });
        if let Some(e) = example {
            media["example"] = e;
        }
        self.v.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": media}}),
        );
        self
    }

    /// A bodiless POST: the body may be absent, empty or any JSON object (it is not read).
    fn no_body(self) -> Op {
        self.body(
            S(json!({"type": "object"})).desc(
                "No body is needed; an empty body or any JSON object is accepted and ignored.",
            ),
            false,
            None,
        )
    }

    /// A bodiless POST that refuses fields: no body, an empty body or `{}`.
    fn empty_body(self) -> Op {
        self.body(
            S(json!({"type": "object", "additionalProperties": false, "maxProperties": 0}))
                .desc("No body is needed; an empty body or `{}` (any field is a 400)."),
            false,
            None,
        )
    }

    fn ok(mut self, status: &str, desc: &str, schema: S) -> Op {
        self.responses.insert(
            status.into(),
            json!({"description": desc, "content": {"application/json": {"schema": schema.0}}}),
        );
        self
    }

    fn raw(mut self, status: &str, response: Value) -> Op {
        self.responses.insert(status.into(), response);
        self
    }

    fn err(mut self, status: &str, component: &str) -> Op {
        self.responses
            .insert(status.into(), response_ref(component));
        self
    }

    /// Errors of operations that call Stripe (SPEC §8 outages).
    fn stripe(self) -> Op {
        self.err("502", "BadGateway").err("504", "GatewayTimeout")
    }

    fn finish(mut self) -> (&'static str, &'static str, Value) {
        if !self.params.is_empty() {
            self.v
                .insert("parameters".into(), Value::Array(self.params));
        }
        // Responses in status order.
        let mut codes: Vec<(String, Value)> = self.responses.into_iter().collect();
        codes.sort_by(|a, b| a.0.cmp(&b.0));
        self.v.insert(
            "responses".into(),
            Value::Object(codes.into_iter().collect()),
        );
        (self.method, self.path, Value::Object(self.v))
    }
}

fn schema_is_array(s: &Value) -> bool {
    s["type"] == "array"
}

// ---- the document -----------------------------------------------------------------------------

fn legacy_document() -> Value {
    let mut paths = Map::new();
    for o in operations() {
        let (method, path, v) = o.finish();
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(method.to_string(), v);
        }
    }
    json!({
        "paths": paths,
        "components": {
            "parameters": parameters(),
            "schemas": schemas(),
        },
    })
}

fn parameters() -> Value {
    json!({
        "WebhookEventId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The inbox row's id (not the Stripe `evt_` id). Another merchant account's row is 404.",
            "schema": {"type": "string", "format": "uuid"},
        },
        "TransactionId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The transaction's id. Another merchant account's transaction is 404.",
            "schema": {"type": "string", "format": "uuid"},
        },
        "RefundId": {
            "name": "refund_id",
            "in": "path",
            "required": true,
            "description": "The refund's id.",
            "schema": {"type": "string", "format": "uuid"},
        },
        "ConnectionId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The connection's id.",
            "schema": {"type": "string"},
        },
        "SkuIdentifier": {
            "name": "identifier",
            "in": "path",
            "required": true,
            "description": "The SKU's identifier.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"},
        },
        "PermissionIdentifier": {
            "name": "identifier",
            "in": "path",
            "required": true,
            "description": "The permission's identifier.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"},
        },
        "Customid": {
            "name": "customid",
            "in": "path",
            "required": true,
            "description": "The business's own id of its user: 1 to 255 characters, no control characters.",
            "schema": {"type": "string", "pattern": CUSTOMID},
        },
        "GrantId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The grant's id.",
            "schema": {"type": "string"},
        },
        "WebhookSubscriptionId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The webhook subscription's id.",
            "schema": {"type": "string"},
        },
        "WebhookDeliveryId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The delivery's id.",
            "schema": {"type": "string"},
        },
        "WebhookConnectionId": {
            "name": "connection_id",
            "in": "path",
            "required": true,
            "description": "The connection the events are for (its `webhook_url`).",
            "schema": {"type": "string"},
        },
    })
}

fn schemas() -> Value {
    let mut m = Map::new();
    let mut add = |name: &str, s: S| {
        m.insert(name.to_string(), s.0);
    };

    add(
        "TransactionStatus",
        S::one_of(STATUSES).desc(
            "One status per transaction, forward-only. A decline while the buyer is still approving is not final: the transaction stays `buyer_approval_pending` until the PaymentIntent is canceled, the approval expires or a server-side confirmation fails.",
        ),
    );
    add("Transaction", transaction_schema());
    entitlement_schemas(&mut add);
    add(
        "TransactionPaymentMethod",
        Obj::new()
            .req("type", S::constant(json!("payment-method")))
            .req(
                "method",
                S::string().desc("`stripe` (every method the Stripe account offers) or a specific one (`card`, `klarna`, …)."),
            )
            .req("mode", S::constant(json!("redirect")))
            .req(
                "approval_url",
                S::uri().nullable().desc(
                    "The hosted payment page (`/pay/{id}?token=…`) to send the buyer to. Only in the create response of the redirect flow (the token is stored hashed).",
                ),
            )
            .req(
                "redirect_url",
                S::string()
                    .nullable()
                    .desc("Where the buyer returns, with `transaction_id` and `transaction_status` appended."),
            )
            .req("country", S::string().nullable())
            .req("currency", S::string())
            .build(),
    );
    add(
        "TransactionPaymentService",
        Obj::new()
            .req("type", S::constant(json!("payment-service")))
            .req("id", S::string().desc("The connection's id."))
            .req(
                "payment_service_definition_id",
                S::string()
                    .with("pattern", "^stripe-")
                    .desc("`stripe-<method>`, e.g. `stripe-stripe`, `stripe-card`."),
            )
            .req("method", S::string())
            .req("display_name", S::constant(json!("Stripe")))
            .build(),
    );
    add(
        "TransactionBuyer",
        Obj::new()
            .req("type", S::constant(json!("buyer")))
            .req(
                "external_identifier",
                S::string().desc("The buyer's `customid`."),
            )
            .build(),
    );
    add(
        "AdditionalIdentifiers",
        Obj::new()
            .desc("Identifiers at the payment service (Gr4vy calls it `extra_xids`; both names are returned).")
            .opt("payment_id", S::string().desc("The Stripe PaymentIntent id (`pi_…`), once it exists."))
            .build()
            .with("additionalProperties", json!({"type": "string"})),
    );
    add(
        "Transactions",
        list_of(
            "Transaction",
            "A page of transactions, newest first, with cursors.",
        ),
    );
    add("TransactionCreate", transaction_create_schema());
    add(
        "TransactionCreatePaymentMethod",
        Obj::new()
            .desc(&format!(
                "How the buyer pays. Raw card data ({}) is refused with 400: card details go from the buyer to Stripe, never through Tollgate.",
                code_list(RAW_CARD_FIELDS)
            ))
            .req(
                "method",
                S::string()
                    .with("pattern", "^[a-z_-]{1,40}$")
                    .desc("`stripe` (the hosted page shows Stripe's Payment Element with every method the account offers) or one Stripe payment method type (`card`, `klarna`, …) that restricts the PaymentIntent's `payment_method_types`."),
            )
            .opt(
                "redirect_url",
                S::uri().desc("Required for the redirect flow. An absolute `https://` URL of at most 2048 characters (`http://` only for localhost and loopback addresses, for development), without a user name or password, spaces or control characters."),
            )
            .opt("country", S::string().desc("Must equal the transaction's `country` when both are given."))
            .opt("currency", S::string().desc("Must equal the transaction's `currency`."))
            .opt("buyer_id", S::string().desc("Accepted and ignored."))
            .opt("buyer_external_identifier", S::string().desc("Accepted and ignored."))
            .opt("external_identifier", S::string().desc("Accepted and ignored."))
            .closed()
            .build(),
    );
    add(
        "TransactionCaptureRequest",
        Obj::new()
            .opt(
                "amount",
                S::integer()
                    .with("minimum", 1)
                    .desc("Minor units, at most the authorized amount; default: all of it. Stripe allows one capture per PaymentIntent: a partial capture releases the rest."),
            )
            .opt("final", S::boolean().desc("Accepted and ignored (every capture is final)."))
            .opt("reauthorize_if_authorization_expired", S::boolean().desc("Accepted and ignored."))
            .opt("airline", S::any().desc("Accepted and ignored."))
            .opt("cart_items", S::any().desc("Accepted and ignored."))
            .opt("tracking", S::any().desc("Accepted and ignored."))
            .opt("external_identifier", S::any().desc("Accepted and ignored."))
            .closed()
            .build(),
    );
    add(
        "TransactionCancel",
        Obj::new()
            .desc("The outcome of a cancel and the transaction after it.")
            .req("type", S::constant(json!("transaction-cancel")))
            .req(
                "status",
                S::one_of(&["succeeded", "pending", "failed"])
                    .desc("`succeeded`: the transaction ended (`authorization_failed`, or `authorization_voided`); `pending`: still awaiting the buyer; `failed`: it had moved on (e.g. the buyer paid meanwhile)."),
            )
            .req("code", S::string().nullable().desc("The transaction's `error_code` (e.g. `canceled`)."))
            .req("raw_response_code", S::string().nullable())
            .req("raw_response_description", S::string().nullable())
            .req("transaction", S::reference("Transaction"))
            .build(),
    );
    add(
        "TransactionEvent",
        Obj::new()
            .desc("One entry of a transaction's append-only audit trail.")
            .req("type", S::constant(json!("transaction-event")))
            .req("id", S::string())
            .req(
                "name",
                S::string().desc("What happened, e.g. `transaction.created`, a status change, a Stripe event received, an ignored backwards transition."),
            )
            .req("transaction_id", S::string())
            .req("created_at", S::datetime())
            .req("context", S::any().desc("The event's data (any JSON)."))
            .build(),
    );
    add(
        "TransactionEvents",
        list_of(
            "TransactionEvent",
            "A transaction's events, oldest first (not paged: the cursors are null).",
        ),
    );
    add(
        "TransactionSession",
        Obj::new()
            .desc("What Stripe.js or Stripe's mobile SDKs need to complete a direct-flow payment.")
            .req(
                "session_data",
                Obj::new()
                    .req("publishableKey", S::string().nullable().desc("The connection's `pk_…`."))
                    .req("clientSecret", S::string().nullable().desc("The PaymentIntent's client secret."))
                    .req("returnUrl", S::uri().desc("`{public_url}/pay/{id}/complete`."))
                    .build(),
            )
            .req(
                "default_completion_url",
                S::uri().desc("`{public_url}/pay/{id}/complete?token=…`: a GET syncs the transaction and answers its status."),
            )
            .req("integration_client", S::one_of(&["web", "ios", "android"]).nullable())
            .build(),
    );
    add(
        "RefundStatus",
        S::one_of(&["processing", "succeeded", "failed", "declined", "voided"]).desc(
            "From Stripe's refund status: pending/requires_action → `processing`, succeeded, failed, canceled → `voided`; `declined`: Stripe refused to create it.",
        ),
    );
    add("Refund", refund_schema());
    add(
        "RefundCreate",
        Obj::new()
            .opt(
                "amount",
                S::integer()
                    .with("minimum", 1)
                    .desc("Minor units; default: all that is left to refund. Many refunds are allowed up to the captured amount."),
            )
            .opt(
                "reason",
                S::string().with("maxLength", 200).desc(
                    "Free text. `duplicate`, `fraudulent` and `requested_by_customer` are passed to Stripe as its reason; anything else is kept in the Stripe refund's metadata.",
                ),
            )
            .opt("target_type", S::any().desc("Accepted and ignored (always the payment method)."))
            .opt("target_id", S::any().desc("Accepted and ignored."))
            .opt("external_identifier", S::any().desc("Accepted and ignored."))
            .closed()
            .build(),
    );
    add(
        "Refunds",
        list_of(
            "Refund",
            "A transaction's refunds (not paged: the cursors are null).",
        ),
    );
    add("WebhookEvent", webhook_event_schema());
    add(
        "WebhookEvents",
        list_of("WebhookEvent", "A page of the inbox, newest first."),
    );
    add(
        "SyncReport",
        Obj::new()
            .desc("What one reconcile read and fed through the inbox. A list the key may not read is reported `unavailable` with Stripe's message; the other steps still run.")
            .req("type", S::constant(json!("sync-report")))
            .req("connection_id", S::uuid())
            .req("since", S::integer().desc("Unix seconds: where reading started."))
            .req("events", S::any().desc("`GET /v1/events`: `{status: read, read, new}` or `{status: unavailable, message, http_status}`."))
            .req("lists", S::any().desc("Per list endpoint (`payment_intents`, `customers`, `subscriptions`, `invoices`, `checkout/sessions`, `credit_notes`), the same shape as `events`."))
            .req("transactions", S::any().desc("`{checked, resynced, errors}`: transactions Stripe may still move, re-read from their PaymentIntent."))
            .req("duration_ms", S::integer())
            .build(),
    );
    add(
        "SyncRequest",
        Obj::new()
            .opt("since", S(json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "date-time"}, {"type": "null"}]})).desc("Unix seconds or RFC 3339, not in the future; default where the last reconcile stopped (at most 30 days back, Stripe's event retention)."))
            .closed()
            .build(),
    );
    add("Connection", connection_schema());
    add("ConnectionCreate", connection_body(true));
    add("ConnectionUpdate", connection_body(false));
    add(
        "Connections",
        list_of(
            "Connection",
            "The merchant account's connections (not paged).",
        ),
    );
    add(
        "ConnectionVerification",
        Obj::new()
            .desc("What the connection's key can do at Stripe. Writes are probed with an empty create, so nothing is created.")
            .req("type", S::constant(json!("connection-verification")))
            .req("connection_id", S::string())
            .req("credentials_valid", S::boolean().desc("Stripe answered at least one check."))
            .req("read", S::array(S::reference("ConnectionResourceCheck")))
            .req(
                "write",
                Obj::new()
                    .req("payment_intents", S::boolean().nullable())
                    .req("refunds", S::boolean().nullable())
                    .closed()
                    .build()
                    .desc("Whether the key can create PaymentIntents and Refunds (`null`: could not check)."),
            )
            .req("payments_ready", S::boolean().desc("Both writes are allowed."))
            .req("webhook_secret_set", S::boolean())
            .build(),
    );
    add(
        "ConnectionResourceCheck",
        Obj::new()
            .req("resource", S::one_of(VERIFIED_RESOURCES))
            .req(
                "read",
                S::boolean().nullable().desc("`null`: could not check."),
            )
            .req(
                "needed_for",
                S::string().desc("What a missing permission disables."),
            )
            .req("note", S::string().nullable())
            .build(),
    );
    add(
        "MerchantAccount",
        Obj::new()
            .req("type", S::constant(json!("merchant-account")))
            .req("id", S::string().with("pattern", "^[a-z0-9_-]{1,64}$"))
            .req("display_name", S::string())
            .req("created_at", S::datetime())
            .build(),
    );
    add(
        "MerchantAccountCreate",
        Obj::new()
            .req(
                "id",
                S::string()
                    .with("pattern", "^[a-z0-9_-]{1,64}$")
                    .desc("What clients put in `X-Merchant-Account-Id`."),
            )
            .opt(
                "display_name",
                S::string()
                    .with("minLength", 1)
                    .with("maxLength", 200)
                    .desc("Default: the id."),
            )
            .closed()
            .build(),
    );
    add(
        "MerchantAccounts",
        list_of(
            "MerchantAccount",
            "Every merchant account for an operator key, else the key's own (not paged).",
        ),
    );
    webhook_schemas(&mut add);
    add(
        "Health",
        Obj::new().req("status", S::constant(json!("ok"))).build(),
    );
    add(
        "Readiness",
        Obj::new()
            .req("status", S::one_of(&["ready", "not_ready"]))
            .build(),
    );
    Value::Object(m)
}

/// The event names a subscription may ask for (the outbox's own list).
use tollgate_store::outbox::{EVENT_GROUPS, EVENT_NAMES};

fn webhook_schemas(add: &mut impl FnMut(&str, S)) {
    let filters = {
        let mut all: Vec<String> = vec!["*".into()];
        all.extend(EVENT_GROUPS.iter().map(|g| format!("{g}.*")));
        all.extend(EVENT_NAMES.iter().map(|n| n.to_string()));
        S(json!({"type": "string", "enum": all}))
    };
    add(
        "WebhookEventName",
        S::one_of(EVENT_NAMES).desc(
            "`transaction.*` when a transaction reaches authorization_succeeded (authorized), capture_succeeded (captured), capture_pending, authorization_declined (declined), authorization_failed (failed), authorization_void_pending, authorization_voided; `refund.*` when a refund is accepted by Stripe while pending (processing) or reaches succeeded, failed, declined (Stripe refused it) or voided; `permission.*`, `customer.linked` and `customer.state_changed` (the customer's whole permission set with a `version` that strictly increases per customer: keep only the highest) from entitlements.",
        ),
    );
    add(
        "WebhookEventFilter",
        filters.desc("An exact event name, a group (`transaction.*`, `refund.*`, `permission.*`, `customer.*`) or `*` (every event)."),
    );
    let body = |create: bool| {
        let mut o = Obj::new();
        let url = S::uri().with("maxLength", 2048).desc(
            "Where events are POSTed. `https://` only, and not to loopback, private, link-local, CGNAT or other non-public addresses (checked again at every attempt, on the resolved address), unless the server runs with `--allow-private-webhook-targets` (which also allows `http://`).",
        );
        let events = S::array(S::reference("WebhookEventFilter"))
            .with("minItems", 1)
            .with("maxItems", 50)
            .desc("Which events to receive. Default at create: `[\"*\"]`.");
        o = if create {
            o.req("url", url)
        } else {
            o.opt("url", url)
        };
        o.opt("events", events)
            .opt("active", S::boolean().desc("Inactive subscriptions get no new events; deliveries already queued wait (up to their maximum age) until it is active again. Default true."))
            .opt("description", S::string().with("maxLength", 500).nullable())
            .closed()
            .build()
    };
    add("WebhookSubscriptionCreate", body(true));
    add(
        "WebhookSubscriptionUpdate",
        body(false).desc("PATCH sets the fields given."),
    );
    let mut replace = body(true).desc("PUT replaces the settings: `url` and `events` are required, `active` defaults to true and `description` to null.");
    if let Some(Value::Array(r)) = replace.0.get_mut("required") {
        r.push(json!("events"));
    }
    add("WebhookSubscriptionReplace", replace);
    add(
        "WebhookSubscription",
        Obj::new()
            .desc("Where and which events to deliver. The signing secret is shown once, in the answer that makes it (create, rotate-secret).")
            .req("type", S::constant(json!("webhook-subscription")))
            .req("id", S::string())
            .req("merchant_account_id", S::string())
            .req("url", S::uri())
            .req("events", S::array(S::reference("WebhookEventFilter")))
            .req("description", S::string().nullable())
            .req("active", S::boolean())
            .req("secret_hint", S::string().desc("`whsec_…` and the last four characters."))
            .req(
                "previous_secret_expires_at",
                S::datetime().nullable().desc("During a rotation: until when the previous secret still signs (both signatures are sent)."),
            )
            .req("created_at", S::datetime())
            .req("updated_at", S::datetime())
            .opt(
                "secret",
                S::string().nullable().with("pattern", "^whsec_").desc(
                    "Only in the answers of create and rotate-secret: `whsec_` + base64 of 32 random bytes. The HMAC key is the base64-decoded part (Standard Webhooks). A replay of the request under its Idempotency-Key answers null here.",
                ),
            )
            .build(),
    );
    add(
        "WebhookSubscriptions",
        list_of(
            "WebhookSubscription",
            "A page of subscriptions, newest first.",
        ),
    );
    add(
        "WebhookDeliveryStatus",
        S::one_of(&["pending", "failed", "delivered", "dead"]).desc(
            "`pending`: not attempted yet; `failed`: the last attempt failed, another is scheduled (`next_attempt_at`); `delivered`: a 2xx answer; `dead`: given up after the maximum age (3 days by default) or the subscription was deleted.",
        ),
    );
    add(
        "WebhookDelivery",
        Obj::new()
            .desc("One event for one subscription (its `webhook-id` header is `event_id`, the same on every attempt and resend).")
            .req("type", S::constant(json!("webhook-delivery")))
            .req("id", S::string())
            .req("merchant_account_id", S::string())
            .req("subscription_id", S::string())
            .req("event_id", S::string())
            .req("event_name", S::reference("WebhookEventName"))
            .req("status", S::reference("WebhookDeliveryStatus"))
            .req("attempts", S::integer().desc("Attempts made so far (all rounds)."))
            .req("next_attempt_at", S::datetime().nullable())
            .req("last_status_code", S::integer().nullable())
            .req("last_error", S::string().nullable())
            .req("delivered_at", S::datetime().nullable())
            .req("created_at", S::datetime())
            .req("updated_at", S::datetime())
            .opt("event", S::reference("OutboundEvent").desc("`GET /webhook-deliveries/{id}` only: the event as sent."))
            .opt(
                "attempt_log",
                S::array(S::reference("WebhookDeliveryAttempt"))
                    .desc("`GET /webhook-deliveries/{id}` only: every attempt, oldest first."),
            )
            .build(),
    );
    add(
        "WebhookDeliveryAttempt",
        Obj::new()
            .req("type", S::constant(json!("webhook-delivery-attempt")))
            .req("attempt", S::integer().with("minimum", 1))
            .req("attempted_at", S::datetime())
            .req("status_code", S::integer().nullable().desc("null: no answer (refused, connection error, timeout)."))
            .req("latency_ms", S::integer())
            .req("response_excerpt", S::string().nullable().desc("At most 1 KiB of the answer's body."))
            .req("error", S::string().nullable())
            .req("next_attempt_at", S::datetime().nullable().desc("When the retry after this attempt was scheduled (null: delivered or given up)."))
            .build(),
    );
    add(
        "WebhookDeliveries",
        list_of("WebhookDelivery", "A page of deliveries, newest first."),
    );
    add(
        "OutboundEvent",
        Obj::new()
            .desc("The body of every delivery, signed per Standard Webhooks: headers `webhook-id` (= `id`), `webhook-timestamp` (unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`, one per active secret, space-separated).")
            .req("type", S::constant(json!("event")))
            .req("id", S::string().with("pattern", "^evt_"))
            .req("name", S::reference("WebhookEventName"))
            .req("created_at", S::datetime())
            .req("merchant_account_id", S::string())
            .req("target", S::any().desc("The resource exactly as the API returns it (a Transaction, a Refund, …)."))
            .build(),
    );
}

fn code_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn transaction_schema() -> S {
    let time_or_null = |d: &str| S::datetime().nullable().desc(d);
    let always_false = |d: &str| S::constant(json!(false)).desc(d);
    Obj::new()
        .desc("A payment attempt at an amount, with one status. Every field is always present (possibly `null`).")
        .req("type", S::constant(json!("transaction")))
        .req("id", S::uuid().desc("Derived from the Idempotency-Key when the create carried one."))
        .req("reconciliation_id", S::string().desc("The id without dashes."))
        .req("merchant_account_id", S::string())
        .req("status", S::reference("TransactionStatus"))
        .req("intent", S::one_of(&["authorize", "capture"]))
        .req(
            "intent_outcome",
            S::one_of(&["pending", "succeeded", "failed"])
                .desc("`pending` until the payment ends, then `succeeded` or `failed`."),
        )
        .req("amount", S::integer().desc("Minor units (1099 = 10.99 USD)."))
        .req("currency", S::string().desc("ISO-4217, upper case."))
        .req("country", S::string().nullable().desc("ISO-3166 alpha-2."))
        .req("authorized_amount", S::integer())
        .req("captured_amount", S::integer())
        .req(
            "refunded_amount",
            S::integer().desc("From the Stripe charge's cumulative refunded amount (pending refunds included)."),
        )
        .req("settled_amount", S::constant(json!(0)).desc("Always 0: Tollgate has no settlement data."))
        .req("settled_currency", S::ty("null").desc("Always null."))
        .req("settled", always_false("Always false."))
        .req("external_identifier", S::string().nullable())
        .req("metadata", S::string_map())
        .req("customid", S::string().nullable().desc("The business's user."))
        .req(
            "buyer",
            S::reference("TransactionBuyer")
                .nullable()
                .desc("`{type: buyer, external_identifier: customid}` when a customid is set."),
        )
        .req("method", S::string())
        .req("instrument_type", S::constant(json!("redirect")))
        .req("payment_method", S::reference("TransactionPaymentMethod"))
        .req("payment_service", S::reference("TransactionPaymentService"))
        .req(
            "payment_service_transaction_id",
            S::string().nullable().desc(
                "The PaymentIntent's client secret until approval, then the PaymentIntent id.",
            ),
        )
        .req("additional_identifiers", S::reference("AdditionalIdentifiers"))
        .req(
            "extra_xids",
            S::reference("AdditionalIdentifiers").desc("The same as `additional_identifiers`."),
        )
        .req(
            "error_code",
            S::string().nullable().desc(
                "Normalised: `insufficient_funds`, `incorrect_cvv`, `expired_payment_method`, `issuer_decline`, `suspected_fraud`, `canceled`, `incomplete_buyer_approval`, `failed_buyer_approval`, `service_error`, …",
            ),
        )
        .req(
            "raw_response_code",
            S::string().nullable().desc("Stripe's own code."),
        )
        .req("raw_response_description", S::string().nullable())
        .req(
            "session_token",
            S::string().nullable().desc(
                "Direct flow: the token for `POST /transactions/{id}/session`. Only in the create response (stored hashed).",
            ),
        )
        .req(
            "integration_client",
            S::one_of(&["redirect", "web", "ios", "android"]).nullable(),
        )
        .req(
            "gift_card_redemptions",
            S::array(S::any()).with("maxItems", 0).desc("Always empty."),
        )
        .req("disputed", S::boolean())
        .req("payment_source", S::constant(json!("ecommerce")))
        .req("merchant_initiated", always_false("Always false."))
        .req("is_subsequent_payment", always_false("Always false."))
        .req("multi_tender", always_false("Always false."))
        .req("account_funding_transaction", always_false("Always false."))
        .req("pending_review", always_false("Always false."))
        .req(
            "approval_expires_at",
            time_or_null("When an approval not completed ends `authorization_failed` (`incomplete_buyer_approval`)."),
        )
        .req("created_at", S::datetime())
        .req("updated_at", S::datetime())
        .req("authorized_at", time_or_null("When the authorization succeeded."))
        .req("captured_at", time_or_null("When the capture succeeded."))
        .req("voided_at", time_or_null("When the authorization was voided."))
        .build()
}

fn transaction_create_schema() -> S {
    let mut o = Obj::new()
        .desc("A create. Fields neither Tollgate nor Gr4vy's create schema defines are refused (400).")
        .req(
            "amount",
            S::integer()
                .with("minimum", 1)
                .with("maximum", 99_999_999)
                .desc("Minor units (integer; zero-decimal currencies respected)."),
        )
        .req(
            "currency",
            S::string()
                .with("pattern", "^[A-Za-z]{3}$")
                .desc("ISO-4217 (case-insensitive)."),
        )
        .opt(
            "country",
            S::string()
                .with("pattern", "^[A-Z]{2}$")
                .desc("ISO-3166 alpha-2; must equal `payment_method.country` when both are given."),
        )
        .opt(
            "intent",
            S::one_of(&["authorize", "capture"])
                .with("default", "authorize")
                .desc("`authorize` (Stripe `capture_method=manual`; capture later) or `capture`."),
        )
        .opt(
            "payment_method",
            S::reference("TransactionCreatePaymentMethod")
                .desc("Required for the redirect flow (with `redirect_url`); optional for the direct flow."),
        )
        .opt(
            "integration_client",
            S::one_of(&["redirect", "web", "ios", "android"]).desc(
                "`web`, `ios`, `android`: the direct flow (the response carries `session_token`); `redirect` or none: the redirect flow.",
            ),
        )
        .opt("external_identifier", S::string().with("maxLength", 200).desc("The business's own reference (e.g. an order id)."))
        .opt(
            "metadata",
            S::string_map()
                .with("maxProperties", 20)
                .with(
                    "propertyNames",
                    json!({"minLength": 1, "maxLength": 40, "not": {"pattern": "^tollgate_"}}),
                )
                .with("additionalProperties", json!({"type": "string", "maxLength": 500}))
                .desc("Up to 20 string values; keys 1 to 40 characters, not starting with `tollgate_`."),
        )
        .opt("customid", S::string().with("maxLength", 200).desc("The business's user; stored in the PaymentIntent's metadata."))
        .opt(
            "buyer_external_identifier",
            S::string().with("maxLength", 200).desc("Alias of `customid` (used when `customid` is absent)."),
        )
        .opt(
            "payment_service_id",
            S::string()
                .with("maxLength", 100)
                .desc("A connection of this merchant account; default: its default payments connection."),
        )
        .opt(
            "approval_expires_at",
            S::datetime().desc("When an unfinished approval ends (in the future); default: now + 1 h (configurable)."),
        )
        .opt(
            "description",
            S::string()
                .with("maxLength", 1000)
                .desc("Validated (at most 1000 characters) and not stored."),
        );
    for f in IGNORED_CREATE_FIELDS {
        o = o.opt(
            f,
            S::any().desc("Accepted for compatibility with Gr4vy's API and ignored."),
        );
    }
    // The redirect flow (no `integration_client`, or `redirect`) needs `payment_method`.
    o.closed().build().with(
        "anyOf",
        json!([
            {"required": ["payment_method"], "properties": {"payment_method": {"type": "object"}}},
            {"required": ["integration_client"], "properties": {"integration_client": {"enum": ["web", "ios", "android"]}}},
        ]),
    )
}

fn refund_schema() -> S {
    Obj::new()
        .desc("Money returned on a captured transaction. Every field is always present (possibly `null`).")
        .req("type", S::constant(json!("refund")))
        .req("id", S::uuid())
        .req("transaction_id", S::uuid())
        .req(
            "payment_service_refund_id",
            S::string().nullable().desc("The Stripe refund id (`re_…`)."),
        )
        .req("amount", S::integer().desc("Minor units."))
        .req("currency", S::string())
        .req("status", S::reference("RefundStatus"))
        .req("reason", S::string().nullable())
        .req("target_type", S::constant(json!("payment-method")))
        .req("target_id", S::ty("null").desc("Always null."))
        .req("reconciliation_id", S::string().desc("The id without dashes."))
        .req("transaction_reconciliation_id", S::string())
        .req("external_identifier", S::ty("null").desc("Always null."))
        .req("transaction_external_identifier", S::string().nullable())
        .req(
            "error_code",
            S::string()
                .nullable()
                .desc("`refund_failed` or `refund_declined` when it did not succeed."),
        )
        .req("raw_response_code", S::string().nullable())
        .req("raw_response_description", S::string().nullable())
        .req("settled", S::constant(json!(false)))
        .req("settled_amount", S::constant(json!(0)))
        .req("settled_currency", S::ty("null"))
        .req("created_at", S::datetime())
        .req("updated_at", S::datetime())
        .build()
}

fn webhook_event_schema() -> S {
    Obj::new()
        .desc("A Stripe event in the inbox: stored before the webhook was answered, applied by a worker. Every field is always present (possibly `null`); `payload` only on `GET /webhook-events/{id}`.")
        .req("type", S::constant(json!("webhook-event")))
        .req("id", S::uuid())
        .req("connection_id", S::uuid())
        .req("stripe_event_id", S::string().desc("`evt_…`, or `sync_{object id}_{content hash}` for an object reconcile read from a list."))
        .req("stripe_account", S::string().nullable().desc("The connected account (`acct_…`); null for the platform's own."))
        .req("event_type", S::string().desc("Stripe's event type (`{object}.synced` for listed objects)."))
        .req("api_version", S::string().nullable())
        .req("source", S::one_of(&["webhook", "sync"]))
        .req("status", S::one_of(&tollgate_store::inbox::STATUSES).desc("`received` (waiting), `applied`, `ignored` (not ours or not needed), `failed` (will retry), `dead` (retries exhausted; replayable)."))
        .req("attempts", S::integer())
        .req("note", S::string().nullable().desc("What applying did, why it was ignored, or the last error."))
        .req("stripe_created_at", S::datetime().nullable())
        .req("received_at", S::datetime())
        .req("applied_at", S::datetime().nullable())
        .req("next_attempt_at", S::datetime().nullable().desc("When a `failed` event is tried again."))
        .req("updated_at", S::datetime())
        .opt("payload", S::any().desc("The event exactly as received (untrusted data)."))
        .build()
}

fn connection_schema() -> S {
    Obj::new()
        .desc("A Stripe account configured for a merchant account. Secrets are encrypted at rest and only ever shown masked (`sk_test_…4242`).")
        .req("type", S::constant(json!("connection")))
        .req("id", S::string())
        .req("merchant_account_id", S::string())
        .req("kind", S::constant(json!("stripe")))
        .req("display_name", S::string())
        .req(
            "status",
            S::one_of(&["active", "awaiting_webhook_secret"])
                .desc("`awaiting_webhook_secret` until a webhook secret is set; inbound events are refused meanwhile."),
        )
        .req("secret_key", S::string().desc("Masked."))
        .req("publishable_key", S::string().nullable())
        .req("webhook_secret", S::string().nullable().desc("Masked."))
        .req(
            "has_previous_webhook_secret",
            S::boolean().desc("A rotated-out secret still verifies (until `previous_webhook_secret_expires_at`)."),
        )
        .req(
            "previous_webhook_secret_expires_at",
            S::datetime().nullable().desc("When the rotated-out secret stops verifying; null when there is none."),
        )
        .req("stripe_account", S::string().nullable().desc("`acct_…` (Connect), sent as `Stripe-Account`."))
        .req("api_version", S::string().nullable().desc("Pins `Stripe-Version`."))
        .req(
            "webhook_url",
            S::uri().desc("`{public_url}/webhooks/stripe/{id}`: the endpoint to register in Stripe."),
        )
        .req("default", S::boolean().desc("The merchant account's default payments connection."))
        .req("sandbox", S::boolean().desc("The built-in Stripe sandbox (its keys are managed by the server)."))
        .req("created_at", S::datetime())
        .req("updated_at", S::datetime())
        .build()
}

fn connection_body(create: bool) -> S {
    let secret = S::string().with("pattern", trimmed("(sk|rk)_(test|live)_[A-Za-z0-9]{1,255}")).with("maxLength", 500).desc(
        "`sk_…` or restricted `rk_…`. Write-only. The sandbox connection's keys cannot be changed.",
    );
    let o = Obj::new().opt(
        "type",
        S::constant(json!("stripe")).desc("Only `stripe` connections exist."),
    );
    let o = if create {
        o.desc("A new Stripe connection. The first one of a merchant account becomes its default, and so does a live one (`sk_live_`/`rk_live_`) while the default is the built-in sandbox: live keys stop the sandbox at once.")
            .req("secret_key", secret)
    } else {
        o.desc("Fields to change; absent ones are kept. Setting `webhook_secret` again rotates it: the previous one keeps verifying for `previous_webhook_secret_expires_in` seconds (24 h by default). Live keys (`sk_live_`/`rk_live_`) stop the built-in sandbox and take over the default from it.")
            .opt("secret_key", secret)
    };
    o.opt("display_name", S::string().with("pattern", not_blank()).with("maxLength", 500))
        .opt(
            "publishable_key",
            S::string()
                .with("pattern", trimmed("pk_(test|live)_[A-Za-z0-9]{1,255}"))
                .with("maxLength", 500)
                .desc("`pk_…`; needed for payments (hosted page, direct flow)."),
        )
        .opt(
            "webhook_secret",
            S::string()
                .with("pattern", trimmed("whsec_[A-Za-z0-9_.-]+"))
                .with("maxLength", 500)
                .desc("`whsec_…`, issued by Stripe once `webhook_url` is registered. Write-only."),
        )
        .opt("stripe_account", S::string().with("pattern", trimmed("acct_[A-Za-z0-9_.-]+")).with("maxLength", 500))
        .opt(
            "api_version",
            S::string()
                .with("pattern", trimmed("[0-9]{4}-[0-9]{2}-[0-9]{2}[A-Za-z0-9._-]{0,40}"))
                .desc("A Stripe API version, e.g. `2026-10-28.endive`."),
        )
        .opt(
            "default",
            S::boolean().desc("Make this the default payments connection (unsetting it on the default is refused: make another the default)."),
        )
        .opt(
            "previous_webhook_secret_expires_in",
            S::integer()
                .with("minimum", 0)
                .with("maximum", 604_800)
                .desc("Seconds the webhook secret replaced by this request's `webhook_secret` keeps verifying (default 86400, 24 h; 0: it stops at once). Without `webhook_secret`, sets a new end for the secret replaced earlier."),
        )
        .closed()
        .build()
}

fn create_description() -> String {
    format!(
        "Creates a transaction and its Stripe PaymentIntent; 201.\n\n\
- **Redirect flow** (default; `integration_client` absent or `redirect`): `payment_method` with an https `redirect_url` is required. \
The answer has `status: buyer_approval_pending` and `payment_method.approval_url`, the hosted page to send the buyer to; \
on completion the buyer lands on `redirect_url?transaction_id=…&transaction_status=…`.\n\
- **Direct flow** (`integration_client`: `web`, `ios` or `android`): the answer carries `session_token` for `POST /transactions/{{id}}/session`.\n\n\
**Raw card data is refused**: a `payment_method` containing {raw} answers 400 before anything is logged or stored. Card details go from the buyer to Stripe, never through Tollgate.\n\n\
A field neither Tollgate nor Gr4vy's create schema defines, a non-positive or non-integer amount, an unknown currency, \
a country or currency different from `payment_method`'s, or a missing, non-https or malformed `redirect_url` (one with a user name or password, spaces or control characters) is a 400 with the error envelope; nothing is created.\n\n\
**Accepted but ignored** (fields of Gr4vy's create schema with no meaning over Stripe): {ignored}.\n\n\
With an `Idempotency-Key` the transaction's id is derived from the key. If Stripe fails, the transaction is saved as `processing` first \
and the 502/504 carries its `id`: `POST /transactions/{{id}}/sync` or a retry with the same key finishes it (never a second PaymentIntent).",
        raw = code_list(RAW_CARD_FIELDS),
        ignored = code_list(IGNORED_CREATE_FIELDS),
    )
}

fn operations() -> Vec<Op> {
    use Auth::*;
    let tx = |r: &str| S::reference(r);
    let status_array = S::array(S::reference("TransactionStatus"));
    let time = |d: &str| S::datetime().desc(d);
    vec![
        // -- transactions
        op("post", "/transactions", "create_transaction", "transactions", "Create a transaction")
            .desc(&create_description())
            .auth(Secret)
            .idempotent()
            .body(
                tx("TransactionCreate"),
                true,
                Some(json!({
                    "amount": 1299, "currency": "USD", "country": "US", "intent": "authorize",
                    "external_identifier": "order-42", "metadata": {"k": "v"}, "customid": "user-7",
                    "payment_method": {"method": "stripe", "redirect_url": "https://example.com/callback",
                                       "country": "US", "currency": "USD"}
                })),
            )
            .ok("201", "The transaction, with `approval_url` (redirect flow) or `session_token` (direct flow).", tx("Transaction"))
            .err("400", "BadRequest")
            .stripe(),
        op("get", "/transactions", "list_transactions", "transactions", "List transactions")
            .desc("Newest first, with cursor paging. Repeatable filters take `k=a&k=b` (`k[]=a` is also accepted). An unknown query parameter is a 400.")
            .auth(Secret)
            .query("cursor", S::string(), false, "A `next_cursor` or `previous_cursor` from an earlier page.")
            .query("limit", S::integer().with("minimum", 1).with("maximum", 100).with("default", 20), false, "Page size, 1 to 100.")
            .query("status", status_array, false, "Only these statuses (repeatable: `status=a&status=b`; `status[]` also accepted).")
            .query("created_at_gte", time("Created at or after (RFC 3339)."), false, "Created at or after.")
            .query("created_at_lte", time("Created at or before (RFC 3339)."), false, "Created at or before.")
            .query("updated_at_gte", time("Updated at or after (RFC 3339)."), false, "Updated at or after.")
            .query("updated_at_lte", time("Updated at or before (RFC 3339)."), false, "Updated at or before.")
            .query("external_identifier", S::string(), false, "Exact match.")
            .query("customid", S::string(), false, "Exact match.")
            .query("buyer_external_identifier", S::string(), false, "Alias of `customid`.")
            .query("payment_service_transaction_id", S::string(), false, "The PaymentIntent id or client secret, exact match.")
            .query("amount_gte", S::integer(), false, "Amount at least (minor units).")
            .query("amount_lte", S::integer(), false, "Amount at most (minor units).")
            .query("amount_eq", S::integer(), false, "Amount exactly (overrides `amount_gte`/`amount_lte`).")
            .query("currency", S::array(S::string()), false, "Only these currencies (repeatable; `currency[]` also accepted).")
            .query("id", S::array(S::string()), false, "Only these transaction ids (repeatable).")
            .query("country", S::array(S::string()), false, "Only these countries (repeatable).")
            .query("method", S::array(S::string()), false, "Only these payment methods (`stripe`, `card`, …; repeatable).")
            .query("payment_service_id", S::array(S::string()), false, "Only transactions of these connections (repeatable).")
            .query("error_code", S::array(S::string()), false, "Only these normalised error codes (repeatable).")
            .query("has_refunds", S::boolean(), false, "Only transactions with (true) or without (false) refunded money.")
            .query("disputed", S::boolean(), false, "Only disputed (true) or undisputed (false) transactions.")
            .ok("200", "A page of transactions.", tx("Transactions"))
            .err("400", "BadRequest"),
        op("get", "/transactions/{id}", "get_transaction", "transactions", "Get a transaction")
            .auth(Secret)
            .param("TransactionId")
            .ok("200", "The transaction.", tx("Transaction"))
            .err("404", "NotFound"),
        op("post", "/transactions/{id}/capture", "capture_transaction", "transactions", "Capture an authorization")
            .desc("Full (no `amount`) or partial capture of an `authorization_succeeded` transaction; at most the authorized amount, once (Stripe releases the rest of a partial capture). Answers the transaction (not the `TransactionCapture` wrapper).")
            .auth(Secret)
            .idempotent()
            .param("TransactionId")
            .body(tx("TransactionCaptureRequest"), false, Some(json!({"amount": 500, "final": true})))
            .ok("200", "The transaction after the capture.", tx("Transaction"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .stripe(),
        op("post", "/transactions/{id}/void", "void_transaction", "transactions", "Void an authorization")
            .desc("Releases the authorization of an `authorization_succeeded` transaction (Stripe cancels the PaymentIntent). Not after a capture: use refunds.")
            .auth(Secret)
            .idempotent()
            .param("TransactionId")
            .no_body()
            .ok("200", "The transaction after the void.", tx("Transaction"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .stripe(),
        op("post", "/transactions/{id}/cancel", "cancel_transaction", "transactions", "Cancel a transaction not yet authorized")
            .desc("Abandons a `processing` or `buyer_approval_pending` transaction (it ends `authorization_failed` with `error_code: canceled`). Answers the `TransactionCancel` wrapper.")
            .auth(Secret)
            .idempotent()
            .param("TransactionId")
            .no_body()
            .ok("200", "The outcome and the transaction.", tx("TransactionCancel"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .stripe(),
        op("post", "/transactions/{id}/sync", "sync_transaction", "transactions", "Sync a transaction from Stripe")
            .desc("Re-reads the PaymentIntent (and refunds still processing) and applies forward transitions only. Finishes a create or refund that an outage interrupted.")
            .auth(Secret)
            .idempotent()
            .param("TransactionId")
            .no_body()
            .ok("200", "The transaction after the sync.", tx("Transaction"))
            .err("404", "NotFound")
            .stripe(),
        op("get", "/transactions/{id}/events", "list_transaction_events", "transactions", "List a transaction's events")
            .desc("The audit trail: status changes, Stripe events received, ignored backwards transitions.")
            .auth(Secret)
            .param("TransactionId")
            .ok("200", "The events.", tx("TransactionEvents"))
            .err("404", "NotFound"),
        op("post", "/transactions/{id}/session", "create_transaction_session", "buyer", "Get a direct-flow payment session")
            .desc("Direct flow: what Stripe.js or Stripe's mobile SDKs need. Authorised by the transaction's `session_token` (no API key, no Idempotency-Key). A wrong, expired or spent token is a 401 that reveals nothing.")
            .auth(Public)
            .param("TransactionId")
            .query("token", S::string(), true, "The `session_token` from the create response.")
            .no_body()
            .ok("200", "The session.", tx("TransactionSession"))
            .err("401", "Unauthorized")
            .err("500", "ServerError")
            .stripe(),
        // -- refunds
        op("post", "/transactions/{id}/refunds", "create_transaction_refund", "refunds", "Refund a captured transaction")
            .desc("Full (no `amount`: all that is left) or partial; many per transaction up to the captured amount. Refunds do not change the transaction's status. A refund Stripe refuses is answered 201 with `status: declined`.")
            .auth(Secret)
            .idempotent()
            .param("TransactionId")
            .body(tx("RefundCreate"), false, Some(json!({"amount": 300, "reason": "requested_by_customer"})))
            .ok("201", "The refund.", tx("Refund"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .stripe(),
        op("get", "/transactions/{id}/refunds", "list_transaction_refunds", "refunds", "List a transaction's refunds")
            .auth(Secret)
            .param("TransactionId")
            .ok("200", "The refunds.", tx("Refunds"))
            .err("404", "NotFound"),
        op("get", "/transactions/{id}/refunds/{refund_id}", "get_transaction_refund", "refunds", "Get a refund of a transaction")
            .auth(Secret)
            .param("TransactionId")
            .param("RefundId")
            .ok("200", "The refund.", tx("Refund"))
            .err("404", "NotFound"),
        op("get", "/refunds/{refund_id}", "get_refund", "refunds", "Get a refund")
            .auth(Secret)
            .param("RefundId")
            .ok("200", "The refund.", tx("Refund"))
            .err("404", "NotFound"),
        // -- connections
        op("post", "/connections", "create_connection", "connections", "Add a Stripe connection")
            .desc("Secrets are encrypted at rest and never returned. Register the answer's `webhook_url` in Stripe, then set `webhook_secret` with PATCH; until then the connection is `awaiting_webhook_secret`.")
            .auth(Secret)
            .idempotent()
            .body(tx("ConnectionCreate"), true, Some(json!({"type": "stripe", "secret_key": "sk_test_51Example", "publishable_key": "pk_test_51Example"})))
            .ok("201", "The connection.", tx("Connection"))
            .err("400", "BadRequest"),
        op("get", "/connections", "list_connections", "connections", "List connections")
            .auth(Secret)
            .ok("200", "The merchant account's connections.", tx("Connections")),
        op("get", "/connections/{id}", "get_connection", "connections", "Get a connection")
            .auth(Secret)
            .param("ConnectionId")
            .ok("200", "The connection.", tx("Connection"))
            .err("404", "NotFound"),
        op("patch", "/connections/{id}", "update_connection", "connections", "Update a connection")
            .desc("Sets the given fields: add the webhook secret (or rotate it), change keys, make it the default.")
            .auth(Secret)
            .param("ConnectionId")
            .body(tx("ConnectionUpdate"), false, Some(json!({"webhook_secret": "whsec_Example"})))
            .ok("200", "The connection.", tx("Connection"))
            .err("400", "BadRequest")
            .err("404", "NotFound"),
        op("delete", "/connections/{id}", "delete_connection", "connections", "Delete a connection")
            .desc("Deletes the connection with the Stripe events it received. A connection with transactions is kept: 409 `duplicate_record` saying how many.")
            .auth(Secret)
            .param("ConnectionId")
            .raw("204", json!({"description": "Deleted."}))
            .err("404", "NotFound")
            .err("409", "Conflict"),
        op("post", "/connections/{id}/verify", "verify_connection", "connections", "Verify a connection's key")
            .desc("Checks the credentials against Stripe: per resource whether the key can read it (each missing one with what it disables), and whether it can write PaymentIntents and Refunds.")
            .auth(Secret)
            .idempotent()
            .param("ConnectionId")
            .no_body()
            .ok("200", "The report.", tx("ConnectionVerification"))
            .err("404", "NotFound")
            .err("502", "BadGateway"),
        op("post", "/connections/{id}/sync", "sync_connection", "webhook-events", "Reconcile a connection with Stripe")
            .desc("Re-reads Stripe with the connection's key: `GET /v1/events` since the last event reconcile saw (when the key may read Events), the list endpoints over a `created` window, and every transaction Stripe may still move; feeds what it finds through the inbox and applies it before answering. `tollgate stripe sync` does the same from the command line; a periodic reconcile runs every `reconcile_interval_secs`.")
            .auth(Secret)
            .idempotent()
            .param("ConnectionId")
            .body(tx("SyncRequest"), false, Some(json!({"since": 1767225600})))
            .ok("200", "The report.", tx("SyncReport"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .err("502", "BadGateway"),
        op("get", "/webhook-events", "list_webhook_events", "webhook-events", "List received Stripe events")
            .desc("The inbox, newest first, with cursor paging. An unknown query parameter is a 400.")
            .auth(Secret)
            .query("cursor", S::string(), false, "A `next_cursor` or `previous_cursor` from an earlier page.")
            .query("limit", S::integer().with("minimum", 1).with("maximum", 100).with("default", 20), false, "Page size, 1 to 100.")
            .query("status", S::array(S::one_of(&tollgate_store::inbox::STATUSES)), false, "Only these statuses (repeatable).")
            .query("connection_id", S::string(), false, "Only this connection's events.")
            .query("type", S::string(), false, "Only this Stripe event type.")
            .query("stripe_event_id", S::string(), false, "Only this Stripe event id.")
            .ok("200", "A page of inbox rows.", tx("WebhookEvents"))
            .err("400", "BadRequest"),
        op("get", "/webhook-events/{id}", "get_webhook_event", "webhook-events", "Get a received Stripe event")
            .auth(Secret)
            .param("WebhookEventId")
            .ok("200", "The row, with its payload.", tx("WebhookEvent"))
            .err("404", "NotFound"),
        op("post", "/webhook-events/{id}/replay", "replay_webhook_event", "webhook-events", "Replay a received Stripe event")
            .desc("Queues the event to be applied again from its first attempt (a dead letter after a fix, or any event: applying is forward-only, so a replay never moves anything backwards).")
            .auth(Secret)
            .idempotent()
            .param("WebhookEventId")
            .empty_body()
            .ok("200", "The row, back in `received`.", tx("WebhookEvent"))
            .err("404", "NotFound"),
        // -- outbound webhooks
        op("post", "/webhook-subscriptions", "create_webhook_subscription", "webhooks", "Subscribe to events")
            .desc("Makes a subscription and its signing secret, shown in this answer only.")
            .auth(Secret)
            .idempotent()
            .body(tx("WebhookSubscriptionCreate"), true, Some(json!({"url": "https://shop.example/hooks/tollgate", "events": ["transaction.*", "refund.succeeded"]})))
            .ok("201", "The subscription, with `secret`.", tx("WebhookSubscription"))
            .err("400", "BadRequest"),
        op("get", "/webhook-subscriptions", "list_webhook_subscriptions", "webhooks", "List webhook subscriptions")
            .auth(Secret)
            .query("cursor", S::string(), false, "A `next_cursor` or `previous_cursor` from an earlier page.")
            .query("limit", S::integer().with("minimum", 1).with("maximum", 100).with("default", 20), false, "Page size, 1 to 100.")
            .ok("200", "A page of subscriptions.", tx("WebhookSubscriptions"))
            .err("400", "BadRequest"),
        op("get", "/webhook-subscriptions/{id}", "get_webhook_subscription", "webhooks", "Get a webhook subscription")
            .auth(Secret)
            .param("WebhookSubscriptionId")
            .ok("200", "The subscription (never its secret).", tx("WebhookSubscription"))
            .err("404", "NotFound"),
        op("put", "/webhook-subscriptions/{id}", "replace_webhook_subscription", "webhooks", "Replace a webhook subscription's settings")
            .auth(Secret)
            .param("WebhookSubscriptionId")
            .body(tx("WebhookSubscriptionReplace"), true, Some(json!({"url": "https://shop.example/hooks/tollgate", "events": ["*"], "active": true})))
            .ok("200", "The subscription.", tx("WebhookSubscription"))
            .err("400", "BadRequest")
            .err("404", "NotFound"),
        op("patch", "/webhook-subscriptions/{id}", "update_webhook_subscription", "webhooks", "Update a webhook subscription")
            .auth(Secret)
            .param("WebhookSubscriptionId")
            .body(tx("WebhookSubscriptionUpdate"), false, Some(json!({"active": false})))
            .ok("200", "The subscription.", tx("WebhookSubscription"))
            .err("400", "BadRequest")
            .err("404", "NotFound"),
        op("delete", "/webhook-subscriptions/{id}", "delete_webhook_subscription", "webhooks", "Delete a webhook subscription")
            .desc("No new events are made for it; its deliveries still waiting end `dead`. The delivery log is kept.")
            .auth(Secret)
            .param("WebhookSubscriptionId")
            .raw("204", json!({"description": "Deleted."}))
            .err("404", "NotFound"),
        op("post", "/webhook-subscriptions/{id}/rotate-secret", "rotate_webhook_secret", "webhooks", "Rotate a subscription's signing secret")
            .desc("A new secret, shown in this answer only. The previous one keeps signing for a grace period (24 h by default, `webhook_secret_grace_secs`): meanwhile every delivery carries both signatures, so receivers can switch without losing an event.")
            .auth(Secret)
            .idempotent()
            .param("WebhookSubscriptionId")
            .empty_body()
            .ok("200", "The subscription, with the new `secret`.", tx("WebhookSubscription"))
            .err("404", "NotFound"),
        op("get", "/webhook-deliveries", "list_webhook_deliveries", "webhooks", "List webhook deliveries")
            .desc("The delivery log, newest first.")
            .auth(Secret)
            .query("cursor", S::string(), false, "A `next_cursor` or `previous_cursor` from an earlier page.")
            .query("limit", S::integer().with("minimum", 1).with("maximum", 100).with("default", 20), false, "Page size, 1 to 100.")
            .query("status", S::array(S::reference("WebhookDeliveryStatus")), false, "Only these statuses (repeatable).")
            .query("subscription_id", S::string(), false, "Only this subscription's deliveries.")
            .query("event_name", S::array(S::reference("WebhookEventName")), false, "Only these events (repeatable).")
            .query("event_id", S::string(), false, "Only the deliveries of this event.")
            .ok("200", "A page of deliveries.", tx("WebhookDeliveries"))
            .err("400", "BadRequest"),
        op("get", "/webhook-deliveries/{id}", "get_webhook_delivery", "webhooks", "Get a webhook delivery with its attempts")
            .auth(Secret)
            .param("WebhookDeliveryId")
            .ok("200", "The delivery, the event as sent, and every attempt.", tx("WebhookDelivery"))
            .err("404", "NotFound"),
        op("post", "/webhook-deliveries/{id}/resend", "resend_webhook_delivery", "webhooks", "Resend a webhook delivery")
            .desc("Attempts the event again now, with the same event id (`webhook-id`) and a fresh round of retries, whatever its status. 409 while an attempt of it is in flight.")
            .auth(Secret)
            .idempotent()
            .param("WebhookDeliveryId")
            .empty_body()
            .ok("202", "The delivery, due now.", tx("WebhookDelivery"))
            .err("404", "NotFound"),
        // -- merchant accounts
        op("post", "/merchant-accounts", "create_merchant_account", "merchant-accounts", "Create a merchant account")
            .desc("Operator keys only (made with `tollgate keys create --all-accounts`).")
            .auth(Operator)
            .idempotent()
            .body(tx("MerchantAccountCreate"), true, Some(json!({"id": "shop-eu", "display_name": "Shop EU"})))
            .ok("201", "The merchant account.", tx("MerchantAccount"))
            .err("400", "BadRequest"),
        op("get", "/merchant-accounts", "list_merchant_accounts", "merchant-accounts", "List merchant accounts")
            .desc("Every account for an operator key; a bound key sees its own.")
            .auth(Secret)
            .ok("200", "The merchant accounts.", tx("MerchantAccounts")),
        // -- entitlements
        op("post", "/v1/skus", "create_sku", "entitlements", "Create a SKU")
            .desc("A Stripe product made sellable. `identifier` unique per merchant account (409 `duplicate_record` names it); `product_id` must be a `prod_…` id; `kind` `subscription` or `one_time`; `store` is `stripe` (the default).")
            .auth(Secret)
            .idempotent()
            .body(tx("SkuCreate"), true, Some(json!({"identifier": "web_monthly", "store": "stripe", "product_id": "prod_Example", "kind": "subscription"})))
            .ok("201", "The SKU.", tx("Sku"))
            .err("400", "BadRequest"),
        op("get", "/v1/skus", "list_skus", "entitlements", "List SKUs")
            .auth(Secret)
            .ok("200", "The merchant account's SKUs.", tx("Skus")),
        op("get", "/v1/skus/{identifier}", "get_sku", "entitlements", "Get a SKU")
            .auth(Secret)
            .param("SkuIdentifier")
            .ok("200", "The SKU.", tx("Sku"))
            .err("404", "NotFound"),
        op("patch", "/v1/skus/{identifier}", "update_sku", "entitlements", "Update a SKU")
            .desc("Changes `product_id`, `kind` or `store`; every customer is re-evaluated.")
            .auth(Secret)
            .param("SkuIdentifier")
            .body(tx("SkuUpdate"), false, None)
            .ok("200", "The SKU.", tx("Sku"))
            .err("400", "BadRequest")
            .err("404", "NotFound"),
        op("delete", "/v1/skus/{identifier}", "delete_sku", "entitlements", "Delete a SKU")
            .desc("Only a SKU no permission uses (else 409 naming them).")
            .auth(Secret)
            .param("SkuIdentifier")
            .raw("204", json!({"description": "Deleted."}))
            .err("404", "NotFound")
            .err("409", "Conflict"),
        op("post", "/v1/permissions/definitions", "create_permission_definition", "entitlements", "Create a permission")
            .desc("A named access right granted by holding any of its SKUs. An unknown SKU is a 400 pointing at `/skus/{index}`; a taken identifier 409.")
            .auth(Secret)
            .idempotent()
            .body(tx("PermissionDefinitionCreate"), true, Some(json!({"identifier": "premium", "skus": ["web_monthly", "lifetime"]})))
            .ok("201", "The permission definition.", tx("PermissionDefinition"))
            .err("400", "BadRequest"),
        op("get", "/v1/permissions/definitions", "list_permission_definitions", "entitlements", "List permissions")
            .auth(Secret)
            .ok("200", "The permission definitions.", tx("PermissionDefinitions")),
        op("get", "/v1/permissions/definitions/{identifier}", "get_permission_definition", "entitlements", "Get a permission")
            .auth(Secret)
            .param("PermissionIdentifier")
            .ok("200", "The permission definition.", tx("PermissionDefinition"))
            .err("404", "NotFound"),
        op("patch", "/v1/permissions/definitions/{identifier}", "update_permission_definition", "entitlements", "Change a permission's SKUs")
            .auth(Secret)
            .param("PermissionIdentifier")
            .body(tx("PermissionDefinitionUpdate"), true, None)
            .ok("200", "The permission definition.", tx("PermissionDefinition"))
            .err("400", "BadRequest")
            .err("404", "NotFound"),
        op("delete", "/v1/permissions/definitions/{identifier}", "delete_permission_definition", "entitlements", "Delete a permission")
            .auth(Secret)
            .param("PermissionIdentifier")
            .raw("204", json!({"description": "Deleted."}))
            .err("404", "NotFound"),
        op("post", "/v1/connect_stripe", "connect_stripe", "entitlements", "Link a Stripe customer to a customid")
            .desc("Checks the customer at Stripe (404 when unknown), links it (409 when it belongs to another customid, unless `force`), reads its subscriptions, invoices, checkout sessions, payment intents, charges and credit notes so earlier purchases count, and answers the customid's permissions.")
            .auth(Secret)
            .idempotent()
            .body(tx("ConnectStripe"), true, Some(json!({"customid": "user-7", "customerid": "cus_Example"})))
            .ok("200", "The link and the customid's permissions.", tx("CustomerLink"))
            .err("400", "BadRequest")
            .err("404", "NotFound")
            .stripe(),
        op("get", "/v1/permissions", "check_permissions", "entitlements", "Check a user's permissions (public key)")
            .desc("The apps' check, with a **public** key (`tg_pk_…`; secret keys work too). Served from the read model. Rate-limited per key and client address (429 with `Retry-After`). When the account requires it, `X-Customer-Token` (hex HMAC-SHA256 of the customid under the account's secret) must match, else 401. A permission never bought is absent. The `ETag` is the customer's state version (the `version` of `customer.state_changed`; `\"5\"`, or `\"5.1\"` once one of its permissions has lapsed by the clock since); `If-None-Match` with it answers 304 without a body. With `at` (an RFC 3339 moment; secret keys only, else 403) the answer is what the check answered at that moment, from the customer's history (no `ETag`).")
            .auth(Secret)
            .query("customid", S::string().with("pattern", CUSTOMID), true, "The business's own id of its user: 1 to 255 characters, no control characters.")
            .query("at", S::datetime(), false, "A moment: answer as the check did then (secret keys only).")
            .raw("200", json!({"description": "The permissions.", "headers": {"ETag": {"description": "The customer's state version (absent with `at`).", "schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Permissions"}}}}))
            .raw("304", json!({"description": "`If-None-Match` named the current `ETag`: nothing changed."}))
            .err("400", "BadRequest")
            .err("403", "Forbidden")
            .err("429", "TooManyRequests"),
        op("get", "/v1/subscribers/{customid}", "get_subscriber", "entitlements", "A subscriber: links, permissions, purchases")
            .auth(Secret)
            .param("Customid")
            .err("400", "BadRequest")
            .ok("200", "The subscriber.", tx("Subscriber"))
            .err("404", "NotFound"),
        op("post", "/v1/subscribers/{customid}/grants", "create_grant", "entitlements", "Grant a permission by hand")
            .desc("A manual grant (support, promotions): one more purchase of `permission` (a defined permission, else 400 naming `/permission`), held from now while not expired (`expires_at`, whole seconds, in the future; null: no end) and not revoked, with its own `entitlement` code 2, combined with Stripe purchases by the usual rule (latest expiry, best code). `created_by` names the key (`key:…`) or the dashboard operator (`operator:…`).")
            .auth(Secret)
            .idempotent()
            .param("Customid")
            .body(tx("GrantCreate"), true, Some(json!({"permission": "premium", "expires_at": "2026-12-31T00:00:00Z", "reason": "support ticket 4711"})))
            .ok("201", "The grant.", tx("Grant"))
            .err("400", "BadRequest"),
        op("get", "/v1/subscribers/{customid}/grants", "list_grants", "entitlements", "A customer's grants")
            .desc("Every grant of the customer, oldest first, revoked ones with `revoked_at`.")
            .auth(Secret)
            .param("Customid")
            .err("400", "BadRequest")
            .ok("200", "The grants.", tx("Grants")),
        op("delete", "/v1/subscribers/{customid}/grants/{id}", "revoke_grant", "entitlements", "Revoke a grant")
            .desc("The grant stays, with `revoked_at` and `revoked_by`; the customer is re-evaluated. Revoking a revoked grant changes nothing.")
            .auth(Secret)
            .param("Customid")
            .err("400", "BadRequest")
            .param("GrantId")
            .ok("200", "The revoked grant.", tx("Grant"))
            .err("404", "NotFound"),
        op("get", "/v1/subscribers/{customid}/history", "get_permission_history", "entitlements", "A customer's permission history")
            .desc("Every change of every permission of the customer as the check answered it, newest first: a Stripe event (`cause.event_id`, `cause.event_type`), a grant, a link, the clock (a period, grace or grant ending, dated at its moment), a catalogue or settings change. Cursor paged (`limit` 1 to 100, default 20; `next_cursor`).")
            .auth(Secret)
            .param("Customid")
            .query("limit", S::integer().with("minimum", 1).with("maximum", 100).with("default", 20), false, "1 to 100 (default 20).")
            .query("cursor", S::string(), false, "`next_cursor` of the page before.")
            .ok("200", "The changes.", tx("PermissionHistory"))
            .err("400", "BadRequest"),
        op("get", "/v1/entitlements/settings", "get_entitlement_settings", "entitlements", "Entitlement settings")
            .auth(Secret)
            .ok("200", "The merchant account's entitlement settings.", tx("EntitlementSettings")),
        op("patch", "/v1/entitlements/settings", "update_entitlement_settings", "entitlements", "Change entitlement settings")
            .desc("Grace for `past_due` (`grace_days`; null: while Stripe retries), the partial-refund policy, the dispute policy (`revoke_on_dispute`: `lost`, the default, or `opened`: revoked while a dispute is open, restored if won), whether an early fraud warning revokes (`revoke_on_fraud_warning`), the renewal leeway, the customer-token requirement and secret, and a connection's `customid` metadata key. Every customer is re-evaluated.")
            .auth(Secret)
            .body(tx("EntitlementSettingsUpdate"), false, Some(json!({"grace_days": 3})))
            .ok("200", "The settings.", tx("EntitlementSettings"))
            .err("400", "BadRequest"),
        // -- buyer-facing
        op("post", "/webhooks/stripe/{connection_id}", "receive_stripe_webhook", "buyer", "Receive a Stripe event")
            .desc("The address to register in Stripe (`webhook_url` of the connection). The `Stripe-Signature` header is verified on the raw body (HMAC-SHA256 of `{t}.{body}` keyed by the connection's current `whsec_` secret or, until it expires, the one it replaced, any `v1` may match, 300 s tolerance both ways). The event is stored in the inbox (unique per connection and event id: two connections to one Stripe account each store and apply it) before the answer and applied by a background worker to the connection's own transactions (found by their stored PaymentIntent id), forward-only. Unknown connection, missing secret, bad signature, stale or future timestamp, not JSON or not an event: 400, nothing stored; over 1 MiB: 413. Also 400, nothing stored, with `details[].pointer` naming the place: a connection id with a NUL character (U+0000) or not UTF-8; a body that is not UTF-8, nests more than 64 levels deep, holds a NUL in any string or key, or whose `created` is not an integer Unix time from 0 to 253402300799.")
            .auth(Public)
            .param("WebhookConnectionId")
            .raw("200", json!({"description": "Stored (`{received: true, duplicate: false, id}`), or a duplicate of a stored event (`duplicate: true`, not applied again)."}))
            .err("400", "BadRequest")
            .err("413", "BadRequest"),
        // -- operations
        op("get", "/healthz", "healthz", "operations", "Liveness")
            .auth(Public)
            .ok("200", "The process is up.", tx("Health")),
        op("get", "/readyz", "readyz", "operations", "Readiness")
            .desc("Ready when the database answers and every migration is applied.")
            .auth(Public)
            .ok("200", "Ready.", tx("Readiness"))
            .ok("503", "Not ready.", tx("Readiness")),
        op("get", "/metrics", "metrics", "operations", "Prometheus metrics")
            .auth(Public)
            .raw("200", json!({
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            })),
    ]
}

/// The entitlements' schemas (SPEC §5).
fn entitlement_schemas(add: &mut dyn FnMut(&str, S)) {
    let sku_kind = S::one_of(SKU_KINDS);
    add(
        "Sku",
        Obj::new()
            .req("type", S::constant(json!("sku")))
            .req("identifier", S::string())
            .req("store", S::constant(json!("stripe")))
            .req(
                "product_id",
                S::string().desc("A Stripe product id (`prod_…`)."),
            )
            .req("kind", sku_kind.clone())
            .req("created_at", S::datetime())
            .req("updated_at", S::datetime())
            .build(),
    );
    add(
        "SkuCreate",
        Obj::new()
            .req(
                "identifier",
                S::string().with("pattern", "^[A-Za-z0-9._-]{1,100}$"),
            )
            .opt("store", S::constant(json!("stripe")))
            .req(
                "product_id",
                S::string().with("pattern", "^prod_[A-Za-z0-9._-]{0,95}$"),
            )
            .req("kind", sku_kind.clone())
            .closed()
            .build(),
    );
    add(
        "SkuUpdate",
        Obj::new()
            .opt("store", S::constant(json!("stripe")))
            .opt(
                "product_id",
                S::string().with("pattern", "^prod_[A-Za-z0-9._-]{0,95}$"),
            )
            .opt("kind", sku_kind)
            .closed()
            .build(),
    );
    add(
        "Skus",
        Obj::new()
            .req("items", S::array(S::reference("Sku")))
            .build(),
    );
    add(
        "PermissionDefinition",
        Obj::new()
            .req("type", S::constant(json!("permission-definition")))
            .req("identifier", S::string())
            .req("skus", S::array(S::string()))
            .req("created_at", S::datetime())
            .req("updated_at", S::datetime())
            .build(),
    );
    add(
        "PermissionDefinitionCreate",
        Obj::new()
            .req("identifier", S::string())
            .req(
                "skus",
                S::array(S::string()).desc("SKU identifiers of this account."),
            )
            .closed()
            .build(),
    );
    add(
        "PermissionDefinitionUpdate",
        Obj::new()
            .req("skus", S::array(S::string()))
            .closed()
            .build(),
    );
    add(
        "PermissionDefinitions",
        Obj::new()
            .req("items", S::array(S::reference("PermissionDefinition")))
            .build(),
    );
    add(
        "ConnectStripe",
        Obj::new()
            .req("customid", S::string().with("pattern", CUSTOMID))
            .req(
                "customerid",
                S::string()
                    .with("pattern", "^cus_[A-Za-z0-9._-]{0,96}$")
                    .desc("A Stripe customer id (`cus_…`)."),
            )
            .opt(
                "force",
                S::boolean().desc("Move a customer linked to another customid."),
            )
            .opt(
                "connection_id",
                S::string().desc("Default: the account's default connection."),
            )
            .closed()
            .build(),
    );
    add(
        "SkuUse",
        Obj::new()
            .req("identifier", S::string())
            .req("productid", S::string())
            .req(
                "store",
                S::constant(json!(4)).desc("4: Stripe (Glassfy's store code)."),
            )
            .req("istrial", S::boolean())
            .req("isinintrooffer", S::boolean())
            .build(),
    );
    add(
        "Permission",
        Obj::new()
            .req("identifier", S::string())
            .req("is_valid", S::boolean())
            .req("entitlement", S::integer().desc("5 renewing, 4 canceling at period end, 3 lifetime, 2 granted by hand, 1 grace, 0 incomplete, -1 grace over, -2 payment failed, -5 expired/canceled, -8 refunded/credited/disputed/revoked, -9 never bought, -10 paused."))
            .req("expires_date", S::integer().desc("Epoch seconds, never null (Glassfy's SDK needs a number): the expiry; 253402300799 (9999-12-31T23:59:59Z) for a permission held with no end; 0 for one not held with no expiry."))
            .req("expires_at", S::datetime().nullable())
            .req("skuarray", S::array(S::reference("SkuUse")))
            .build(),
    );
    add(
        "Permissions",
        Obj::new()
            .req("customid", S::string())
            .req("permissions", S::array(S::reference("Permission")))
            .build(),
    );
    add(
        "CustomerLink",
        Obj::new()
            .req("type", S::constant(json!("customer-link")))
            .req("customid", S::string())
            .req("customerid", S::string())
            .req("connection_id", S::string())
            .req("moved_from", S::string().nullable())
            .req("permissions", S::array(S::reference("Permission")))
            .build(),
    );
    add(
        "Subscriber",
        Obj::new()
            .req("type", S::constant(json!("subscriber")))
            .req("customid", S::string())
            .req("stripe_customers", S::array(S::any()))
            .req("permissions", S::array(S::reference("Permission")))
            .req("purchases", S::array(S::any()))
            .req("grants", S::array(S::reference("Grant")))
            .req("evaluated_at", S::datetime())
            .build(),
    );
    add(
        "GrantCreate",
        Obj::new()
            .req("permission", S::string())
            .opt("expires_at", S::datetime().nullable())
            .req("reason", S::string())
            .closed()
            .build(),
    );
    add(
        "Grant",
        Obj::new()
            .req("type", S::constant(json!("grant")))
            .req("id", S::string())
            .req("customid", S::string())
            .req("permission", S::string())
            .req("starts_at", S::datetime())
            .req("expires_at", S::datetime().nullable())
            .req("reason", S::string())
            .req("created_by", S::string())
            .req("revoked_at", S::datetime().nullable())
            .req("revoked_by", S::string().nullable())
            .build(),
    );
    add(
        "Grants",
        Obj::new()
            .req("items", S::array(S::reference("Grant")))
            .build(),
    );
    add(
        "PermissionChange",
        Obj::new()
            .req("permission", S::string())
            .req("at", S::datetime())
            .req("is_valid", S::boolean())
            .req("entitlement", S::integer())
            .req("expires_at", S::datetime().nullable())
            .req("removed", S::boolean().desc("The permission left the answer (the catalogue changed)."))
            .req("cause", S::any().desc("What did it: `{type: stripe_event, event_id, event_type, events}`, `{type: grant, grant_id, action}`, `{type: link, connection_id, stripe_customer_id}`, `{type: clock}`, `{type: test_clock, test_clock}`, `{type: stripe_read}`, `{type: catalogue}`, `{type: settings}`."))
            .req("version", S::integer().desc("The customer's state version of this change."))
            .build(),
    );
    add(
        "PermissionHistory",
        Obj::new()
            .req("items", S::array(S::reference("PermissionChange")))
            .req("limit", S::integer())
            .req("next_cursor", S::string().nullable())
            .build(),
    );
    add(
        "EntitlementSettings",
        Obj::new()
            .req("type", S::constant(json!("entitlement-settings")))
            .req("merchant_account_id", S::string())
            .req("grace_days", S::integer().nullable())
            .req("revoke_on_partial_refund", S::boolean())
            .req("renewal_leeway_secs", S::integer())
            .req("require_customer_token", S::boolean())
            .req("has_customer_token_secret", S::boolean())
            .req("revoke_on_dispute", S::one_of(&["lost", "opened"]))
            .req("revoke_on_fraud_warning", S::boolean())
            .build(),
    );
    add(
        "EntitlementSettingsUpdate",
        Obj::new()
            .opt("grace_days", S::integer().with("minimum", 0).with("maximum", 365).nullable())
            .opt("revoke_on_partial_refund", S::boolean().nullable())
            .opt("renewal_leeway_secs", S::integer().with("minimum", 0).with("maximum", 604_800))
            .opt("require_customer_token", S::boolean().nullable().desc("True needs a `customer_token_secret`, set before or in the same request."))
            .opt("customer_token_secret", S::string().with("pattern", not_blank()).with("minLength", 16).with("maxLength", 255).nullable().desc("At least 16 characters (without surrounding white space)."))
            .opt("connection_id", S::string().with("pattern", not_blank()).with("maxLength", 255).nullable().desc("With `customid_metadata_key`: the connection whose metadata key it is."))
            .opt("customid_metadata_key", S::string().with("pattern", trimmed("[A-Za-z0-9._-]{1,40}")).with("maxLength", 255).nullable().desc("With `connection_id`: the Stripe metadata key holding the customid (1 to 40 letters, digits, '.', '_' or '-')."))
            .opt("revoke_on_dispute", S::one_of(&["lost", "opened"]).nullable())
            .opt("revoke_on_fraud_warning", S::boolean().nullable())
            .closed()
            .build(),
    );
}
