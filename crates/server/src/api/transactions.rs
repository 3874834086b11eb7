//! Transactions: create (redirect and direct flows), read, list, capture, void, cancel, sync,
//! events, and the direct flow's session.
//!
//! The handlers parse and render; every change of a transaction goes through the
//! transactions service ([`crate::transactions`]). Requests are read as the types below
//! (`Body<T>`, `Params<T>`), answers are the types of [`super::render`], and the OpenAPI
//! document is derived from both.

use std::borrow::Cow;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tollgate_domain::{
    Amount, Currency, ErrorCode, Intent, Money, TransactionState, TransactionStatus,
};
use tollgate_store::TransactionRow;
use tollgate_store::transactions::{self as store_tx, ListFilter, TransactionUpdate};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::render::{
    self, Fresh, IntegrationClient, TransactionCancel, TransactionEvent, TransactionOut,
    TransactionSession, TransactionStatusName,
};
use super::typed::{self, Body, Params};
use super::{JsonBody, Page};
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::parse_rfc3339;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::stripe_map;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(capture))
        .routes(routes!(void))
        .routes(routes!(cancel))
        .routes(routes!(sync))
        .routes(routes!(events))
        .routes(routes!(session));
    optional_bodies(
        router.get_openapi_mut(),
        &[
            "/transactions/{id}/capture",
            "/transactions/{id}/void",
            "/transactions/{id}/cancel",
            "/transactions/{id}/sync",
            "/transactions/{id}/session",
        ],
    );
    router
}

/// The POSTs of `paths` may come without a body (it reads as `{}`).
pub(crate) fn optional_bodies(doc: &mut utoipa::openapi::OpenApi, paths: &[&str]) {
    for path in paths {
        let body = doc
            .paths
            .paths
            .get_mut(*path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(RefOr::T(body)) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

use crate::transactions::{
    apply_observations, cancel_intent, connection_for, connection_of, create_payment_intent,
    end_locally, hash_token, insert_event, load, new_token, request_payment_intent, sync_row,
    token_matches, transaction_id,
};

/// Fields of Gr4vy's create schema that Tollgate accepts and ignores (they have no meaning
/// over Stripe): each is a field of [`TransactionCreate`], listed in the create's description.
pub const IGNORED_CREATE_FIELDS: &[&str] = &[
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

/// Raw card data in a create's `payment_method`: refused before anything else reads the body.
pub const RAW_CARD_FIELDS: &[&str] = &[
    "number",
    "security_code",
    "expiration_date",
    "card_number",
    "cvv",
    "cvc",
];

// ---- schema helpers ---------------------------------------------------------------------------

/// `schema` with `additionalProperties: false`: the body's unknown fields are refused.
pub(crate) fn closed(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut o)) => {
            o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            RefOr::T(Schema::Object(o))
        }
        other => other,
    }
}

/// A request body whose schema is `$inner`'s with unknown fields refused, named `$name`.
macro_rules! closed_body_schema {
    ($doc:ident, $inner:ty, $name:literal) => {
        #[doc = concat!("The `", $name, "` schema: [`", stringify!($inner), "`] with unknown fields refused.")]
        pub struct $doc;

        impl utoipa::PartialSchema for $doc {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::api::transactions::closed(<$inner as utoipa::PartialSchema>::schema())
            }
        }

        impl utoipa::ToSchema for $doc {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }
            fn schemas(
                out: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <$inner as utoipa::ToSchema>::schemas(out)
            }
        }
    };
}
pub(crate) use closed_body_schema;

/// A bodiless POST's body (void, cancel, sync, session): none, empty, or any JSON object, which
/// is not read.
#[derive(Debug)]
pub struct AnyBody;

impl<'de> Deserialize<'de> for AnyBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read as a whole value, so no field of it counts as unknown.
        Value::deserialize(d).map(|_| AnyBody)
    }
}

impl PartialSchema for AnyBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "No body is needed; an empty body or any JSON object is accepted and ignored.",
            ))
            .into()
    }
}

impl ToSchema for AnyBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AnyBody")
    }
}

/// An integer amount; anything else (a string, `null`, `10.5`, `1e3`) is refused with `message`.
fn integer<'de, D: Deserializer<'de>>(d: D, message: &str) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) if n.is_i64() => {
            n.as_i64().ok_or_else(|| serde::de::Error::custom(message))
        }
        _ => Err(serde::de::Error::custom(message)),
    }
}

fn minor_units<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    integer(d, "Must be an integer number of minor units.")
}

/// An optional positive-integer amount (capture, refund): `null` is absent.
pub(crate) fn opt_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) if n.is_i64() => Ok(n.as_i64()),
        _ => Err(serde::de::Error::custom("Must be a positive integer.")),
    }
}

// ---- create -----------------------------------------------------------------------------------

/// `POST /transactions`. A field neither Tollgate nor Gr4vy's create schema defines is refused
/// (400). The redirect flow (no `integration_client`, or `redirect`) needs `payment_method`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "amount": 1299, "currency": "USD", "country": "US", "intent": "authorize",
    "external_identifier": "order-42", "metadata": {"k": "v"}, "customid": "user-7",
    "payment_method": {"method": "stripe", "redirect_url": "https://example.com/callback",
                       "country": "US", "currency": "USD"}
}))]
pub struct TransactionCreate {
    /// Minor units (integer; zero-decimal currencies respected).
    #[serde(deserialize_with = "minor_units")]
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount: i64,
    /// ISO-4217 (case-insensitive).
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
    /// ISO-3166 alpha-2; must equal `payment_method.country` when both are given.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// `authorize` (Stripe `capture_method=manual`; capture later) or `capture`; default
    /// `authorize`.
    #[schema(value_type = Option<render::Intent>, default = "authorize")]
    pub intent: Option<render::Intent>,
    /// Required for the redirect flow (with `redirect_url`); optional for the direct flow.
    #[schema(value_type = Option<PaymentMethodCreateSchema>)]
    pub payment_method: Option<PaymentMethodCreate>,
    /// `web`, `ios`, `android`: the direct flow (the response carries `session_token`);
    /// `redirect` or none: the redirect flow.
    pub integration_client: Option<IntegrationClient>,
    /// The business's own reference (e.g. an order id).
    #[schema(max_length = 200)]
    pub external_identifier: Option<String>,
    /// Up to 20 string values; keys 1 to 40 characters, not starting with `tollgate_`.
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Map<String, Value>>,
    /// The business's user; stored in the PaymentIntent's metadata.
    #[schema(max_length = 200)]
    pub customid: Option<String>,
    /// Alias of `customid` (used when `customid` is absent).
    #[schema(max_length = 200)]
    pub buyer_external_identifier: Option<String>,
    /// A connection of this merchant account; default: its default payments connection.
    #[schema(max_length = 100)]
    pub payment_service_id: Option<String>,
    /// When an unfinished approval ends (in the future); default: now + 1 h (configurable).
    #[schema(format = DateTime)]
    pub approval_expires_at: Option<String>,
    /// Validated (at most 1000 characters) and not stored.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    // Gr4vy's fields with no meaning over Stripe: accepted and ignored (IGNORED_CREATE_FIELDS).
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub buyer: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub buyer_id: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub gift_cards: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub store: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub three_d_secure_data: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub three_d_secure: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub is_subsequent_payment: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub merchant_initiated: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub payment_source: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub airline: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub cart_items: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub statement_descriptor: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub previous_scheme_transaction_id: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub previous_transaction_link_id: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub browser_info: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub shipping_details_id: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub connection_options: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub async_capture: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub anti_fraud_fingerprint: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub account_funding_transaction: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub allow_partial_authorization: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub recipient: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub installment_count: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub tax_amount: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub merchant_tax_id: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub purchase_order_number: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub customer_reference_number: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub amount_includes_tax: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub supplier_order_number: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub duty_amount: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub shipping_amount: Option<Value>,
    /// Accepted for compatibility with Gr4vy's API and ignored.
    #[schema(value_type = Value, required = false)]
    pub is_amount_estimated: Option<Value>,
}

/// The create's schema: [`TransactionCreate`] with unknown fields refused, and the redirect
/// flow's need for `payment_method`.
pub struct TransactionCreateSchema;

impl PartialSchema for TransactionCreateSchema {
    fn schema() -> RefOr<Schema> {
        let redirect = ObjectBuilder::new().required("payment_method").property(
            "payment_method",
            ObjectBuilder::new().schema_type(Type::Object),
        );
        let direct = ObjectBuilder::new()
            .required("integration_client")
            .property(
                "integration_client",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["web", "ios", "android"])),
            );
        let fields = closed(<TransactionCreate as PartialSchema>::schema());
        let description = match &fields {
            RefOr::T(Schema::Object(o)) => o.description.clone(),
            _ => None,
        };
        AllOfBuilder::new()
            .item(fields)
            .item(AnyOfBuilder::new().item(redirect).item(direct))
            .description(description)
            .into()
    }
}

impl ToSchema for TransactionCreateSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TransactionCreate")
    }
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        <TransactionCreate as ToSchema>::schemas(out)
    }
}

fn metadata_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::Object,
                Type::Null,
            ]))
            .max_properties(Some(20))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(40))
                    .pattern(Some("^(?!tollgate_)")),
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(500)),
            ))
            .description(Some(
                "Up to 20 string values; keys 1 to 40 characters, not starting with `tollgate_`.",
            ))
            .build(),
    )
}

/// How the buyer pays. Raw card data (`number`, `security_code`, `expiration_date`,
/// `card_number`, `cvv`, `cvc`) is refused with 400: card details go from the buyer to Stripe,
/// never through Tollgate.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = TransactionCreatePaymentMethodFields)]
pub struct PaymentMethodCreate {
    /// `stripe` (the hosted page shows Stripe's Payment Element with every method the account
    /// offers) or one Stripe payment method type (`card`, `klarna`, …) that restricts the
    /// PaymentIntent's `payment_method_types`.
    #[schema(pattern = "^[a-z_-]{1,40}$", required = true, nullable = false)]
    pub method: Option<String>,
    /// Required for the redirect flow. An absolute `https://` URL of at most 2048 characters
    /// (`http://` only for localhost and loopback addresses, for development), without a user
    /// name or password, spaces or control characters.
    #[schema(format = "uri", max_length = 2048)]
    pub redirect_url: Option<String>,
    /// Must equal the transaction's `country` when both are given.
    pub country: Option<String>,
    /// Must equal the transaction's `currency`.
    pub currency: Option<String>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub buyer_id: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub buyer_external_identifier: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub external_identifier: Option<Value>,
}

closed_body_schema!(
    PaymentMethodCreateSchema,
    PaymentMethodCreate,
    "TransactionCreatePaymentMethod"
);

/// The create's body: raw card data in `payment_method` is refused first, before anything else
/// looks at (or logs) the body; then the body is read as [`TransactionCreate`].
pub struct CreateBody(pub TransactionCreate);

impl<S: Send + Sync> FromRequest<S> for CreateBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        if let Some(pm) = body.get("payment_method").and_then(Value::as_object)
            && let Some(k) = RAW_CARD_FIELDS.iter().find(|k| pm.contains_key(**k))
        {
            return Err(ApiError::field(
                &format!("/payment_method/{k}"),
                "Raw card data is not accepted: card details go from the buyer to Stripe (hosted page or Stripe.js), never through Tollgate.",
            ));
        }
        typed::from_object(body).map(CreateBody)
    }
}

/// A validated create request.
struct CreateInput {
    money: Money,
    country: Option<String>,
    intent: Intent,
    method: String,
    redirect_url: Option<String>,
    integration_client: Option<String>,
    external_identifier: Option<String>,
    metadata: Map<String, Value>,
    customid: Option<String>,
    payment_service_id: Option<String>,
    approval_expires_at: Option<i64>,
}

fn direct_flow(client: Option<&str>) -> bool {
    matches!(client, Some("web" | "ios" | "android"))
}

/// Longest accepted `redirect_url`.
const MAX_REDIRECT_URL: usize = 2048;

/// A `redirect_url` the completion page can send a buyer to: parsed as browsers do (the `url`
/// crate, WHATWG rules), https (http only for localhost, or when configured), no user name or
/// password (`http://localhost:80@evil.com/` names the host `evil.com`), and no spaces or
/// control characters, which a parser would drop or encode silently.
fn check_redirect_url(ctx: &ApiContext, raw: &str) -> Result<(), String> {
    if raw.len() > MAX_REDIRECT_URL {
        return Err(format!("At most {MAX_REDIRECT_URL} characters."));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("Must not contain spaces or control characters (percent-encode them).".into());
    }
    let https_only = "Must be an https:// URL (http://localhost is allowed for development).";
    let url = url::Url::parse(raw).map_err(|_| https_only.to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Must not contain a user name or password.".into());
    }
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if local || ctx.config.allow_http_redirect_urls => Ok(()),
        _ => Err(https_only.into()),
    }
}

/// `value` if it has at most `max` bytes, else a 400 naming `key`.
fn at_most(key: &str, value: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match value {
        Some(s) if s.len() > max => Err(ApiError::field(
            &format!("/{key}"),
            format!("At most {max} characters."),
        )),
        v => Ok(v),
    }
}

impl TransactionCreate {
    /// The checks serde cannot make, in the order the fields are documented. The redirect URL's
    /// rules and the approval's "in the future" depend on the server (`ctx`).
    fn validate(self, ctx: &ApiContext) -> ApiResult<CreateInput> {
        let amount = Amount::new(self.amount)
            .map_err(|_| ApiError::field("/amount", "Must be greater than zero."))?;
        if amount.get() > 99_999_999 {
            return Err(ApiError::field("/amount", "Must be at most 99999999."));
        }
        let c = &self.currency;
        let currency = Currency::parse(c).map_err(|_| {
            ApiError::field(
                "/currency",
                format!("'{c}' is not an ISO-4217 currency code."),
            )
        })?;
        let country = at_most("country", self.country, 2)?;
        if let Some(c) = &country
            && (c.len() != 2 || !c.chars().all(|x| x.is_ascii_uppercase()))
        {
            return Err(ApiError::field(
                "/country",
                "Must be an ISO-3166 alpha-2 code (e.g. US).",
            ));
        }
        let intent = match self.intent {
            None | Some(render::Intent::Authorize) => Intent::Authorize,
            Some(render::Intent::Capture) => Intent::Capture,
        };
        let integration_client = self.integration_client.map(|c| c.as_str().to_string());
        let direct = direct_flow(integration_client.as_deref());
        let mut method = "stripe".to_string();
        let mut redirect_url = None;
        match self.payment_method {
            None if direct => {}
            None => {
                return Err(ApiError::field(
                    "/payment_method",
                    "Required for the redirect flow: {\"method\": \"stripe\", \"redirect_url\": \"https://…\"}.",
                ));
            }
            Some(pm) => {
                method = match pm.method {
                    Some(m)
                        if !m.is_empty()
                            && m.len() <= 40
                            && m.chars()
                                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-') =>
                    {
                        m
                    }
                    _ => {
                        return Err(ApiError::field(
                            "/payment_method/method",
                            "Required: 'stripe' or a payment method type (card, klarna, …).",
                        ));
                    }
                };
                if let Some(pc) = &pm.currency
                    && !pc.eq_ignore_ascii_case(currency.code())
                {
                    return Err(ApiError::field(
                        "/payment_method/currency",
                        "Must equal the transaction's currency.",
                    ));
                }
                if let (Some(pc), Some(c)) = (&pm.country, &country)
                    && pc != c
                {
                    return Err(ApiError::field(
                        "/payment_method/country",
                        "Must equal the transaction's country.",
                    ));
                }
                match pm.redirect_url {
                    Some(u) => {
                        check_redirect_url(ctx, &u)
                            .map_err(|m| ApiError::field("/payment_method/redirect_url", m))?;
                        redirect_url = Some(u);
                    }
                    None if direct => {}
                    None => {
                        return Err(ApiError::field(
                            "/payment_method/redirect_url",
                            "Required for the redirect flow.",
                        ));
                    }
                }
            }
        }
        let metadata = self.metadata.unwrap_or_default();
        if metadata.len() > 20 {
            return Err(ApiError::field("/metadata", "At most 20 keys."));
        }
        for (k, v) in &metadata {
            if k.is_empty() || k.len() > 40 || k.starts_with("tollgate_") {
                return Err(ApiError::field(
                    &format!("/metadata/{k}"),
                    "Keys are 1 to 40 characters and may not start with 'tollgate_'.",
                ));
            }
            match v {
                Value::String(s) if s.len() <= 500 => {}
                _ => {
                    return Err(ApiError::field(
                        &format!("/metadata/{k}"),
                        "Values are strings of at most 500 characters.",
                    ));
                }
            }
        }
        let customid = match at_most("customid", self.customid, 200)? {
            Some(c) => Some(c),
            None => at_most(
                "buyer_external_identifier",
                self.buyer_external_identifier,
                200,
            )?,
        };
        let approval_expires_at = match self.approval_expires_at {
            None => None,
            Some(s) => {
                let at = parse_rfc3339(&s).ok_or_else(|| {
                    ApiError::field("/approval_expires_at", "Must be an RFC 3339 timestamp.")
                })?;
                if at <= ctx.now() {
                    return Err(ApiError::field(
                        "/approval_expires_at",
                        "Must be in the future.",
                    ));
                }
                Some(at)
            }
        };
        // Validated, then not kept: Tollgate has no use for it (Gr4vy's field).
        at_most("description", self.description, 1000)?;
        Ok(CreateInput {
            money: Money::new(amount, currency),
            country,
            intent,
            method,
            redirect_url,
            integration_client,
            external_identifier: at_most("external_identifier", self.external_identifier, 200)?,
            metadata,
            customid,
            payment_service_id: at_most("payment_service_id", self.payment_service_id, 100)?,
            approval_expires_at,
        })
    }
}

fn intent_str(i: Intent) -> &'static str {
    match i {
        Intent::Authorize => "authorize",
        Intent::Capture => "capture",
    }
}

/// What the answer that hands out a new token shows: the approval URL (redirect flow) or the
/// session token (direct flow).
fn fresh_token(ctx: &ApiContext, id: &str, direct: bool, token: String) -> Fresh {
    if direct {
        Fresh {
            approval_url: None,
            session_token: Some(token),
        }
    } else {
        Fresh {
            approval_url: Some(format!("{}/pay/{id}?token={token}", ctx.public_url)),
            session_token: None,
        }
    }
}

/// The transaction id of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TransactionPath {
    /// The transaction's id. Another merchant account's transaction is 404.
    #[param(format = "uuid")]
    pub id: String,
}

// ---- handlers -----------------------------------------------------------------------------

const CREATE_DESCRIPTION: &str = "Creates a transaction and its Stripe PaymentIntent; 201.\n\n\
- **Redirect flow** (default; `integration_client` absent or `redirect`): `payment_method` with an https `redirect_url` is required. \
The answer has `status: buyer_approval_pending` and `payment_method.approval_url`, the hosted page to send the buyer to; \
on completion the buyer lands on `redirect_url?transaction_id=…&transaction_status=…`.\n\
- **Direct flow** (`integration_client`: `web`, `ios` or `android`): the answer carries `session_token` for `POST /transactions/{id}/session`.\n\n\
**Raw card data is refused**: a `payment_method` containing `number`, `security_code`, `expiration_date`, `card_number`, `cvv` or `cvc` answers 400 before anything is logged or stored. Card details go from the buyer to Stripe, never through Tollgate.\n\n\
A field neither Tollgate nor Gr4vy's create schema defines (every one is listed in `details`), a non-positive or non-integer amount, an unknown currency, \
a country or currency different from `payment_method`'s, or a missing, non-https or malformed `redirect_url` (one with a user name or password, spaces or control characters) is a 400 with the error envelope; nothing is created.\n\n\
**Accepted but ignored** (fields of Gr4vy's create schema with no meaning over Stripe): `buyer`, `buyer_id`, `gift_cards`, `store`, `three_d_secure_data`, `three_d_secure`, `is_subsequent_payment`, `merchant_initiated`, `payment_source`, `airline`, `cart_items`, `statement_descriptor`, `previous_scheme_transaction_id`, `previous_transaction_link_id`, `browser_info`, `shipping_details_id`, `connection_options`, `async_capture`, `anti_fraud_fingerprint`, `account_funding_transaction`, `allow_partial_authorization`, `recipient`, `installment_count`, `tax_amount`, `merchant_tax_id`, `purchase_order_number`, `customer_reference_number`, `amount_includes_tax`, `supplier_order_number`, `duty_amount`, `shipping_amount`, `is_amount_estimated`.\n\n\
With an `Idempotency-Key` the transaction's id is derived from the key. If Stripe fails, the transaction is saved as `processing` first \
and the 502/504 carries its `id`: `POST /transactions/{id}/sync` or a retry with the same key finishes it (never a second PaymentIntent).";

/// Creates a transaction and its Stripe PaymentIntent.
#[utoipa::path(
    post,
    path = "/transactions",
    operation_id = "create_transaction",
    tag = "transactions",
    summary = "Create a transaction",
    description = CREATE_DESCRIPTION,
    request_body = TransactionCreateSchema,
    responses(
        (status = 201, description = "The transaction, with `approval_url` (redirect flow) or `session_token` (direct flow).", body = TransactionOut),
        (status = 400, description = "`bad_request`: the request failed validation; `details` points at each problem. Nothing was created.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused. When the transaction was saved first, the body carries its `id` (and `transaction_id`): call `POST /transactions/{id}/sync` or retry with the same Idempotency-Key.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time; as 502, the body carries the saved transaction's `id`.", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    CreateBody(body): CreateBody,
) -> ApiResult<(StatusCode, Json<TransactionOut>)> {
    caller.require_secret()?;
    let input = body.validate(&ctx)?;
    let conn = connection_for(
        &ctx,
        &caller.merchant_account_id,
        input.payment_service_id.as_deref(),
    )
    .await?;
    let id = transaction_id(crate::idempotency::request_key(&headers, &caller).as_deref());
    // A keyed retry of a create that hit an outage: finish that transaction.
    if let Some(existing) =
        store_tx::get(ctx.store.reader(), &caller.merchant_account_id, &id, "").await?
    {
        let row = if existing.payment_intent_id.is_none() && existing.status == "processing" {
            create_payment_intent(&ctx, &existing, &conn).await?
        } else {
            existing
        };
        // The first answer (with the approval URL or session token) never reached the client.
        let (row, fresh) = reissue_token(&ctx, &row).await?;
        return Ok((StatusCode::CREATED, Json(TransactionOut::new(&row, &fresh))));
    }
    let now = ctx.now();
    let direct = direct_flow(input.integration_client.as_deref());
    let token = new_token();
    let expires = input
        .approval_expires_at
        .unwrap_or(now + ctx.config.approval_ttl_secs as i64 * 1000);
    let state = TransactionState::new(input.intent, input.money.amount, false);
    let metadata = input.metadata.clone();
    let row = TransactionRow {
        id: id.clone(),
        merchant_account_id: caller.merchant_account_id.clone(),
        connection_id: conn.id.clone(),
        status: TransactionStatus::Processing.as_str().to_string(),
        intent: intent_str(input.intent).to_string(),
        amount: input.money.amount.get(),
        currency: input.money.currency.code().to_string(),
        country: input.country.clone(),
        authorized_amount: 0,
        captured_amount: 0,
        refunded_amount: 0,
        external_identifier: input.external_identifier.clone(),
        metadata: Value::Object(metadata).to_string(),
        customid: input.customid.clone(),
        method: input.method.clone(),
        redirect_url: input.redirect_url.clone(),
        integration_client: input.integration_client.clone(),
        payment_intent_id: None,
        client_secret: None,
        error_code: None,
        raw_response_code: None,
        raw_response_description: None,
        approval_token_hash: (!direct).then(|| hash_token(&token)),
        approval_expires_at: Some(expires),
        session_token_hash: direct.then(|| hash_token(&token)),
        session_expires_at: direct.then_some(now + ctx.config.session_ttl_secs as i64 * 1000),
        disputed: false,
        state: serde_json::to_string(&state).unwrap_or_default(),
        created_at: now,
        updated_at: now,
        authorized_at: None,
        captured_at: None,
        voided_at: None,
        version: 0,
    };
    let created = json!({"amount": row.amount, "currency": row.currency, "intent": row.intent,
                         "flow": if direct { "direct" } else { "redirect" }});
    // The PaymentIntent first, then one write: the row with its PaymentIntent and both events.
    // If Stripe cannot be reached, the row is saved `processing` instead, so the 502/504
    // carries its id and sync (or a keyed retry) finishes it with the same Stripe key. A
    // crash between the two leaves at most a PaymentIntent nobody can approve (no approval URL
    // was handed out), which Stripe expires.
    let pi = match request_payment_intent(&ctx, &row, &conn).await {
        Ok(pi) => pi,
        Err(e @ (ApiError::BadGateway { .. } | ApiError::GatewayTimeout { .. })) => {
            let mut tx = ctx.store.begin().await?;
            store_tx::insert(&mut *tx, &row).await?;
            insert_event(&mut tx, &row, "transaction.created", created, now).await?;
            tollgate_store::commit(tx).await?;
            ctx.metrics
                .transactions_created
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        // Refused by Stripe: nothing is kept, as for any other bad input.
        Err(e) => return Err(e),
    };
    let pi_id = pi["id"].as_str().unwrap_or_default().to_string();
    let mut row = row;
    let mut state = state;
    state.approval_issued = true;
    state.status = TransactionStatus::BuyerApprovalPending;
    row.status = TransactionStatus::BuyerApprovalPending.as_str().to_string();
    row.payment_intent_id = Some(pi_id.clone());
    row.client_secret = pi["client_secret"].as_str().map(str::to_string);
    row.state = serde_json::to_string(&state).unwrap_or_default();
    let mut tx = ctx.store.begin().await?;
    store_tx::insert(&mut *tx, &row).await?;
    insert_event(&mut tx, &row, "transaction.created", created, now).await?;
    insert_event(
        &mut tx,
        &row,
        "transaction.payment_intent_created",
        json!({"payment_intent": pi_id}),
        now,
    )
    .await?;
    tollgate_store::commit(tx).await?;
    ctx.metrics
        .transactions_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A PaymentIntent created together with a server-side confirmation could already be past
    // approval; applying it records that.
    let row = if pi["status"] != "requires_payment_method" {
        apply_observations(&ctx, &row, stripe_map::observations_of_intent(&pi, now)).await?
    } else {
        row
    };
    let fresh = fresh_token(&ctx, &row.id, direct, token);
    Ok((StatusCode::CREATED, Json(TransactionOut::new(&row, &fresh))))
}

/// Gets a transaction.
#[utoipa::path(
    get,
    path = "/transactions/{id}",
    operation_id = "get_transaction",
    tag = "transactions",
    summary = "Get a transaction",
    params(TransactionPath),
    responses(
        (status = 200, description = "The transaction.", body = TransactionOut),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TransactionOut>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    Ok(Json(TransactionOut::new(&t, &Fresh::default())))
}

/// The last value of a parameter given more than once (`limit=5&limit=10` is 10).
fn last<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?.pop())
}

/// `GET /transactions`: newest first, with cursor paging. Repeatable filters take `k=a&k=b`
/// (`k[]=a` is also accepted). Values are checked in [`TransactionListQuery::filter`], with
/// the messages the API has always given.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionListQuery {
    /// A `next_cursor` or `previous_cursor` from an earlier page.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<String>,
    /// Only these statuses (repeatable: `status=a&status=b`; `status[]` also accepted).
    #[serde(default)]
    #[param(value_type = Option<Vec<TransactionStatusName>>, explode, style = Form)]
    pub status: Vec<String>,
    /// Created at or after (RFC 3339).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_at_gte: Option<String>,
    /// Created at or before (RFC 3339).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_at_lte: Option<String>,
    /// Updated at or after (RFC 3339).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub updated_at_gte: Option<String>,
    /// Updated at or before (RFC 3339).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub updated_at_lte: Option<String>,
    /// Exact match.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub external_identifier: Option<String>,
    /// Exact match.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub customid: Option<String>,
    /// Alias of `customid`.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub buyer_external_identifier: Option<String>,
    /// The PaymentIntent id or client secret, exact match.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub payment_service_transaction_id: Option<String>,
    /// Amount at least (minor units).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>)]
    pub amount_gte: Option<String>,
    /// Amount at most (minor units).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>)]
    pub amount_lte: Option<String>,
    /// Amount exactly (overrides `amount_gte`/`amount_lte`).
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>)]
    pub amount_eq: Option<String>,
    /// Only these currencies (repeatable; `currency[]` also accepted).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub currency: Vec<String>,
    /// Only these transaction ids (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub id: Vec<String>,
    /// Only these countries (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub country: Vec<String>,
    /// Only these payment methods (`stripe`, `card`, …; repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub method: Vec<String>,
    /// Only transactions of these connections (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub payment_service_id: Vec<String>,
    /// Only these normalised error codes (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, explode, style = Form)]
    pub error_code: Vec<String>,
    /// Only transactions with (true) or without (false) refunded money.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<bool>)]
    pub has_refunds: Option<String>,
    /// Only disputed (true) or undisputed (false) transactions.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<bool>)]
    pub disputed: Option<String>,
}

/// Refuses a query parameter [`TransactionListQuery`] does not document (`key[]` is `key`), so
/// a misspelt filter does not silently list everything.
fn known_params_only(raw: &str) -> ApiResult<()> {
    let known: Vec<String> = TransactionListQuery::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect();
    for (k, _) in form_urlencoded::parse(raw.as_bytes()) {
        let k = k.trim_end_matches("[]");
        if !known.iter().any(|n| n == k) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    Ok(())
}

impl TransactionListQuery {
    /// The store's filter for `merchant_account_id`, or a 400 naming the parameter.
    fn filter(self, merchant_account_id: &str) -> ApiResult<ListFilter> {
        let int = |k: &str, v: Option<String>| -> ApiResult<Option<i64>> {
            v.map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::query(&format!("/{k}"), "Must be an integer."))
            })
            .transpose()
        };
        let time = |k: &str, v: Option<String>| -> ApiResult<Option<i64>> {
            v.map(|v| {
                parse_rfc3339(&v).ok_or_else(|| {
                    ApiError::query(&format!("/{k}"), "Must be an RFC 3339 timestamp.")
                })
            })
            .transpose()
        };
        let flag = |k: &str, v: Option<String>| -> ApiResult<Option<bool>> {
            match v.as_deref() {
                None => Ok(None),
                Some("true") => Ok(Some(true)),
                Some("false") => Ok(Some(false)),
                Some(_) => Err(ApiError::query(&format!("/{k}"), "Must be true or false.")),
            }
        };
        let limit = int("limit", self.limit)?.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::query("/limit", "Must be between 1 and 100."));
        }
        for s in &self.status {
            if s.parse::<TransactionStatus>().is_err() {
                return Err(ApiError::query(
                    "/status",
                    format!("'{s}' is not a transaction status."),
                ));
            }
        }
        let cursor = match self.cursor {
            Some(c) if !c.is_empty() => Some(
                super::cursor::decode(&c)
                    .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this server made."))?,
            ),
            _ => None,
        };
        let mut amount_gte = int("amount_gte", self.amount_gte)?;
        let mut amount_lte = int("amount_lte", self.amount_lte)?;
        if let Some(eq) = int("amount_eq", self.amount_eq)? {
            amount_gte = Some(eq);
            amount_lte = Some(eq);
        }
        Ok(ListFilter {
            merchant_account_id: merchant_account_id.to_string(),
            statuses: self.status,
            created_gte: time("created_at_gte", self.created_at_gte)?,
            created_lte: time("created_at_lte", self.created_at_lte)?,
            updated_gte: time("updated_at_gte", self.updated_at_gte)?,
            updated_lte: time("updated_at_lte", self.updated_at_lte)?,
            external_identifier: self.external_identifier,
            customid: self.customid.or(self.buyer_external_identifier),
            payment_service_transaction_id: self.payment_service_transaction_id,
            amount_gte,
            amount_lte,
            currencies: self
                .currency
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            ids: self.id,
            countries: self
                .country
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            methods: self.method,
            connection_ids: self.payment_service_id,
            error_codes: self.error_code,
            has_refunds: flag("has_refunds", self.has_refunds)?,
            disputed: flag("disputed", self.disputed)?,
            cursor,
            limit,
        })
    }
}

/// The list's query: only the parameters [`TransactionListQuery`] documents (any other is a
/// 400 naming it), read as it.
#[derive(Debug)]
pub struct ListParams(pub TransactionListQuery);

impl ListParams {
    /// Reads a raw query string (the dashboard's lists call this too).
    pub fn parse(raw: &str) -> ApiResult<Self> {
        known_params_only(raw)?;
        typed::from_query(raw).map(ListParams)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query().unwrap_or(""))
    }
}

/// Newest first, with cursor paging. Repeatable filters take `k=a&k=b` (`k[]=a` is also
/// accepted). An unknown query parameter is a 400.
#[utoipa::path(
    get,
    path = "/transactions",
    operation_id = "list_transactions",
    tag = "transactions",
    summary = "List transactions",
    params(TransactionListQuery),
    responses(
        (status = 200, description = "A page of transactions, newest first, with cursors.", body = render::Transactions),
        (status = 400, description = "`bad_request`: a query parameter is unknown or not valid; `details` names it.", body = ErrorEnvelope),
    ),
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    ListParams(q): ListParams,
) -> ApiResult<Json<Page<TransactionOut>>> {
    caller.require_secret()?;
    let filter = q.filter(&caller.merchant_account_id)?;
    let (limit, cursor) = (filter.limit, filter.cursor.clone());
    let rows = store_tx::list(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |t| {
        (t.created_at, t.id.clone())
    });
    let items = rows
        .iter()
        .map(|t| TransactionOut::new(t, &Fresh::default()))
        .collect();
    Ok(Json(Page {
        items,
        limit,
        next_cursor: next,
        previous_cursor: previous,
    }))
}

/// `POST /transactions/{id}/capture`: Gr4vy's capture fields; only `amount` is used.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = TransactionCaptureRequestFields, example = json!({"amount": 500, "final": true}))]
pub struct TransactionCapture {
    /// Minor units, at most the authorized amount; default: all of it. Stripe allows one capture
    /// per PaymentIntent: a partial capture releases the rest.
    #[serde(default, deserialize_with = "opt_amount")]
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
    /// Accepted and ignored (every capture is final).
    #[serde(rename = "final")]
    pub is_final: Option<bool>,
    /// Accepted and ignored.
    pub reauthorize_if_authorization_expired: Option<bool>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub airline: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub cart_items: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub tracking: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub external_identifier: Option<Value>,
}

closed_body_schema!(
    TransactionCaptureSchema,
    TransactionCapture,
    "TransactionCaptureRequest"
);

/// Full (no `amount`) or partial capture of an `authorization_succeeded` transaction; at most
/// the authorized amount, once (Stripe releases the rest of a partial capture). Answers the
/// transaction (not the `TransactionCapture` wrapper).
#[utoipa::path(
    post,
    path = "/transactions/{id}/capture",
    operation_id = "capture_transaction",
    tag = "transactions",
    summary = "Capture an authorization",
    params(TransactionPath),
    request_body(content = TransactionCaptureSchema, description = "Optional: no body captures all of the authorized amount."),
    responses(
        (status = 200, description = "The transaction after the capture.", body = TransactionOut),
        (status = 400, description = "`bad_request`: the body is not valid, the transaction is not `authorization_succeeded`, or `amount` exceeds the authorized amount.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn capture(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<TransactionCapture>,
) -> ApiResult<Json<TransactionOut>> {
    caller.require_secret()?;
    let amount = body.amount.map(Value::from);
    let row = crate::transactions::capture(&ctx, &caller, &id, amount.as_ref()).await?;
    Ok(Json(TransactionOut::new(&row, &Fresh::default())))
}

/// Releases the authorization of an `authorization_succeeded` transaction (Stripe cancels the
/// PaymentIntent). Not after a capture: use refunds.
#[utoipa::path(
    post,
    path = "/transactions/{id}/void",
    operation_id = "void_transaction",
    tag = "transactions",
    summary = "Void an authorization",
    params(TransactionPath),
    request_body(content = AnyBody, description = "No body is needed."),
    responses(
        (status = 200, description = "The transaction after the void.", body = TransactionOut),
        (status = 400, description = "`bad_request`: the transaction is not `authorization_succeeded`.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn void(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(AnyBody): Body<AnyBody>,
) -> ApiResult<Json<TransactionOut>> {
    caller.require_secret()?;
    let row = crate::transactions::void(&ctx, &caller, &id).await?;
    Ok(Json(TransactionOut::new(&row, &Fresh::default())))
}

/// Abandons a `processing` or `buyer_approval_pending` transaction (it ends
/// `authorization_failed` with `error_code: canceled`). Answers the `TransactionCancel` wrapper.
#[utoipa::path(
    post,
    path = "/transactions/{id}/cancel",
    operation_id = "cancel_transaction",
    tag = "transactions",
    summary = "Cancel a transaction not yet authorized",
    params(TransactionPath),
    request_body(content = AnyBody, description = "No body is needed."),
    responses(
        (status = 200, description = "The outcome and the transaction.", body = TransactionCancel),
        (status = 400, description = "`bad_request`: the transaction is already authorized or ended (use void or refunds).", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn cancel(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(AnyBody): Body<AnyBody>,
) -> ApiResult<Json<TransactionCancel>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    if !matches!(t.status.as_str(), "processing" | "buyer_approval_pending") {
        return Err(ApiError::bad_request(format!(
            "Only a transaction not yet authorized can be canceled; this one is {} (use void or refunds).",
            t.status
        )));
    }
    let row = if t.payment_intent_id.is_some() {
        cancel_intent(&ctx, &t, "requested_by_customer", "cancel").await?
    } else {
        end_locally(
            &ctx,
            &t,
            TransactionStatus::AuthorizationFailed,
            ErrorCode::Canceled,
        )
        .await?
    };
    let outcome = match row.status.as_str() {
        "authorization_failed" | "authorization_voided" => "succeeded",
        "processing" | "buyer_approval_pending" => "pending",
        _ => "failed",
    };
    Ok(Json(TransactionCancel {
        kind: "transaction-cancel",
        status: outcome,
        code: row.error_code.clone(),
        raw_response_code: row.raw_response_code.clone(),
        raw_response_description: row.raw_response_description.clone(),
        transaction: TransactionOut::new(&row, &Fresh::default()),
    }))
}

/// Re-reads the PaymentIntent (and refunds still processing) and applies forward transitions
/// only. Finishes a create or refund that an outage interrupted.
#[utoipa::path(
    post,
    path = "/transactions/{id}/sync",
    operation_id = "sync_transaction",
    tag = "transactions",
    summary = "Sync a transaction from Stripe",
    params(TransactionPath),
    request_body(content = AnyBody, description = "No body is needed."),
    responses(
        (status = 200, description = "The transaction after the sync; with a new `approval_url` or `session_token` when this sync finished a create an outage interrupted.", body = TransactionOut),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn sync(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(AnyBody): Body<AnyBody>,
) -> ApiResult<Json<TransactionOut>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    let row = sync_row(&ctx, &t).await?;
    // This sync finished a create an outage interrupted: the create's answer, with its approval
    // URL or session token, never reached the client, so hand out a new one.
    if t.payment_intent_id.is_none() && row.payment_intent_id.is_some() {
        let (row, fresh) = reissue_token(&ctx, &row).await?;
        return Ok(Json(TransactionOut::new(&row, &fresh)));
    }
    Ok(Json(TransactionOut::new(&row, &Fresh::default())))
}

/// The audit trail: status changes, Stripe events received, ignored backwards transitions;
/// oldest first, not paged (the cursors are null).
#[utoipa::path(
    get,
    path = "/transactions/{id}/events",
    operation_id = "list_transaction_events",
    tag = "transactions",
    summary = "List a transaction's events",
    params(TransactionPath),
    responses(
        (status = 200, description = "The events, oldest first (not paged: the cursors are null).", body = render::TransactionEvents),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn events(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<TransactionEvent>>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    let rows = store_tx::events_of(ctx.store.reader(), &t.id).await?;
    let items: Vec<TransactionEvent> = rows
        .iter()
        .map(|e| TransactionEvent {
            kind: "transaction-event",
            id: e.id.clone(),
            name: e.name.clone(),
            transaction_id: e.transaction_id.clone(),
            created_at: crate::clock::rfc3339(e.created_at),
            context: serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(Page::whole(items)))
}

/// `POST /transactions/{id}/session?token=…`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The `session_token` from the create response. Without it the answer is 401.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = String, required = true)]
    pub token: Option<String>,
}

/// Direct flow: what Stripe.js or Stripe's mobile SDKs need. Authorised by the transaction's
/// `session_token` (no API key, no Idempotency-Key). A wrong, expired or spent token is a 401
/// that reveals nothing.
#[utoipa::path(
    post,
    path = "/transactions/{id}/session",
    operation_id = "create_transaction_session",
    tag = "buyer",
    summary = "Get a direct-flow payment session",
    params(TransactionPath, TokenQuery),
    request_body(content = AnyBody, description = "No body is needed."),
    security(()),
    responses(
        (status = 200, description = "The session.", body = TransactionSession),
        (status = 401, description = "`unauthorized`: the session token is missing, wrong, expired or spent.", body = ErrorEnvelope),
        (status = 500, description = "`server_error`: something of Tollgate's failed; the cause is logged, never returned.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn session(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    Params(q): Params<TokenQuery>,
) -> ApiResult<Json<TransactionSession>> {
    let denied =
        || ApiError::Unauthorized("The session token is not valid for this transaction.".into());
    let t = store_tx::get_any(ctx.store.reader(), &id, "")
        .await?
        .ok_or_else(denied)?;
    let token = q.token.ok_or_else(denied)?;
    let live = t.session_expires_at.is_some_and(|e| e > ctx.now());
    if !token_matches(&token, t.session_token_hash.as_deref()) || !live {
        return Err(denied());
    }
    let conn = connection_of(&ctx, &t).await?;
    let t = if t.payment_intent_id.is_none() {
        sync_row(&ctx, &t).await?
    } else {
        t
    };
    Ok(Json(TransactionSession {
        session_data: render::SessionData {
            publishable_key: conn.publishable_key,
            client_secret: t.client_secret,
            return_url: format!("{}/pay/{}/complete", ctx.public_url, t.id),
        },
        default_completion_url: format!("{}/pay/{}/complete?token={token}", ctx.public_url, t.id),
        integration_client: t.integration_client,
    }))
}

/// A new approval URL (redirect flow) or session token (direct flow) for a transaction whose
/// create answer was lost to an outage: only the token's hash was kept, so a new token replaces
/// it. Nothing is issued once the buyer's part is over.
async fn reissue_token(ctx: &ApiContext, t: &TransactionRow) -> ApiResult<(TransactionRow, Fresh)> {
    if !matches!(t.status.as_str(), "processing" | "buyer_approval_pending") {
        return Ok((t.clone(), Fresh::default()));
    }
    let direct = direct_flow(t.integration_client.as_deref());
    let token = new_token();
    let mut tx = ctx.store.begin().await?;
    let current = store_tx::get_any(&mut *tx, &t.id, ctx.store.for_update())
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    let update = TransactionUpdate::TokenIssued {
        approval_token_hash: (!direct).then(|| hash_token(&token)),
        session_token_hash: direct.then(|| hash_token(&token)),
    };
    store_tx::update(&mut *tx, &current.id, current.version, ctx.now(), &update).await?;
    let row = store_tx::get_any(&mut *tx, &current.id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    tollgate_store::commit(tx).await?;
    let fresh = fresh_token(ctx, &row.id, direct, token);
    Ok((row, fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(schema: RefOr<Schema>) -> utoipa::openapi::schema::Object {
        match schema {
            RefOr::T(Schema::Object(o)) => o,
            _ => panic!("not an object schema"),
        }
    }

    /// Every field Gr4vy sends that Tollgate ignores is a documented, accepted field of the
    /// create, named in its description; and nothing else is ignored.
    #[test]
    fn ignored_create_fields_are_fields_of_the_create() {
        let create = object(<TransactionCreate as PartialSchema>::schema());
        for f in IGNORED_CREATE_FIELDS {
            assert!(create.properties.contains_key(*f), "{f} is not a field");
            assert!(
                !create.required.iter().any(|r| r == f),
                "{f} is documented as required"
            );
            assert!(CREATE_DESCRIPTION.contains(&format!("`{f}`")), "{f}");
            let body = json!({"amount": 100, "currency": "USD", *f: {"any": ["thing"]}});
            let Value::Object(body) = body else {
                unreachable!()
            };
            assert!(typed::from_object::<TransactionCreate>(body).is_ok(), "{f}");
        }
        let used = [
            "amount",
            "currency",
            "country",
            "intent",
            "payment_method",
            "integration_client",
            "external_identifier",
            "metadata",
            "customid",
            "buyer_external_identifier",
            "payment_service_id",
            "approval_expires_at",
            "description",
        ];
        let documented: Vec<&str> = create.properties.keys().map(String::as_str).collect();
        let expected: Vec<&str> = used.iter().chain(IGNORED_CREATE_FIELDS).copied().collect();
        assert_eq!(documented, expected);
    }

    /// The raw card fields are named where a reader of the document looks for them.
    #[test]
    fn raw_card_fields_are_documented() {
        let pm = object(<PaymentMethodCreateSchema as PartialSchema>::schema());
        let text = pm.description.unwrap_or_default();
        for f in RAW_CARD_FIELDS {
            assert!(text.contains(&format!("`{f}`")), "{f}");
            assert!(CREATE_DESCRIPTION.contains(&format!("`{f}`")), "{f}");
            assert!(!pm.properties.contains_key(*f), "{f} is a field");
        }
        assert!(matches!(
            pm.additional_properties.as_deref(),
            Some(AdditionalProperties::FreeForm(false))
        ));
    }
}
