//! API objects as Gr4vy's SDKs expect them (docs/gr4vy-compat.md): every field its models
//! require, with honest defaults where Tollgate has no such concept. One `Serialize` type per
//! object; its OpenAPI schema is derived from it (field order is the JSON's order).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tollgate_store::{RefundRow, TransactionRow};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::clock::rfc3339;

fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// `pending` until the payment ends, then `succeeded` or `failed`.
fn intent_outcome(status: &str) -> &'static str {
    match status {
        "authorization_succeeded"
        | "capture_succeeded"
        | "capture_pending"
        | "authorization_void_pending"
        | "authorization_voided" => "succeeded",
        "authorization_declined" | "authorization_failed" => "failed",
        _ => "pending",
    }
}

/// Extra values known only at the moment they are made (tokens are stored hashed).
#[derive(Default)]
pub struct Fresh {
    pub approval_url: Option<String>,
    pub session_token: Option<String>,
}

// ---- schemas of constant values --------------------------------------------------------------

/// A schema whose only value is `v`.
fn constant(t: Type, v: Value, description: Option<&str>) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(t)
            .enum_values(Some([v]))
            .description(description)
            .build(),
    )
}

/// The fixed `type` of an object: a string with one value.
macro_rules! kind_schema {
    ($f:ident, $v:literal) => {
        fn $f() -> Schema {
            constant(Type::String, json!($v), None)
        }
    };
}

kind_schema!(transaction_kind, "transaction");
kind_schema!(payment_method_kind, "payment-method");
kind_schema!(payment_service_kind, "payment-service");
kind_schema!(buyer_kind, "buyer");
kind_schema!(refund_kind, "refund");
kind_schema!(redirect_mode, "redirect");
kind_schema!(stripe_name, "Stripe");
kind_schema!(ecommerce, "ecommerce");
kind_schema!(payment_method_target, "payment-method");
kind_schema!(cancel_kind, "transaction-cancel");
kind_schema!(event_kind, "transaction-event");

fn always_false() -> Schema {
    constant(Type::Boolean, json!(false), Some("Always false."))
}

fn always_zero() -> Schema {
    constant(
        Type::Integer,
        json!(0),
        Some("Always 0: Tollgate has no settlement data."),
    )
}

fn always_null() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Null)
            .description(Some("Always null."))
            .build(),
    )
}

fn always_empty() -> Schema {
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(ObjectBuilder::new())
            .max_items(Some(0))
            .description(Some("Always empty."))
            .build(),
    )
}

/// A string→string map.
fn string_map() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build(),
    )
}

fn uuid() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .build(),
    )
}

/// A transaction's status (its schema component `TransactionStatus`).
pub struct TransactionStatusName;

impl PartialSchema for TransactionStatusName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(tollgate_domain::TransactionStatus::NAMES))
            .description(Some(
                "One status per transaction, forward-only. A decline while the buyer is still approving is not final: the transaction stays `buyer_approval_pending` until the PaymentIntent is canceled, the approval expires or a server-side confirmation fails.",
            ))
            .into()
    }
}

impl ToSchema for TransactionStatusName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TransactionStatus")
    }
}

/// What a refund's status can be.
pub const REFUND_STATUSES: [&str; 5] = ["processing", "succeeded", "failed", "declined", "voided"];

/// A refund's status (its schema component `RefundStatus`).
pub struct RefundStatusName;

impl PartialSchema for RefundStatusName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(REFUND_STATUSES))
            .description(Some(
                "From Stripe's refund status: pending/requires_action → `processing`, succeeded, failed, canceled → `voided`; `declined`: Stripe refused to create it.",
            ))
            .into()
    }
}

impl ToSchema for RefundStatusName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RefundStatus")
    }
}

// ---- transactions ----------------------------------------------------------------------------

/// A payment attempt at an amount, with one status. Every field is always present (possibly
/// `null`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Transaction)]
pub struct TransactionOut {
    #[serde(rename = "type")]
    #[schema(schema_with = transaction_kind)]
    pub kind: &'static str,
    /// Derived from the Idempotency-Key when the create carried one.
    #[schema(format = "uuid")]
    pub id: String,
    /// The id without dashes.
    pub reconciliation_id: String,
    pub merchant_account_id: String,
    #[schema(value_type = TransactionStatusName)]
    pub status: String,
    #[schema(value_type = Intent)]
    pub intent: String,
    /// `pending` until the payment ends, then `succeeded` or `failed`.
    #[schema(value_type = Outcome)]
    pub intent_outcome: &'static str,
    /// Minor units (1099 = 10.99 USD).
    pub amount: i64,
    /// ISO-4217, upper case.
    pub currency: String,
    /// ISO-3166 alpha-2.
    #[schema(required = true)]
    pub country: Option<String>,
    pub authorized_amount: i64,
    pub captured_amount: i64,
    /// From the Stripe charge's cumulative refunded amount (pending refunds included).
    pub refunded_amount: i64,
    #[schema(schema_with = always_zero)]
    pub settled_amount: i64,
    #[schema(schema_with = always_null, required = true)]
    pub settled_currency: Option<String>,
    #[schema(schema_with = always_false)]
    pub settled: bool,
    #[schema(required = true)]
    pub external_identifier: Option<String>,
    #[schema(schema_with = string_map)]
    pub metadata: Value,
    /// The business's user.
    #[schema(required = true)]
    pub customid: Option<String>,
    /// `{type: buyer, external_identifier: customid}` when a customid is set.
    #[schema(required = true)]
    pub buyer: Option<TransactionBuyer>,
    pub method: String,
    #[schema(schema_with = redirect_mode)]
    pub instrument_type: &'static str,
    pub payment_method: TransactionPaymentMethod,
    pub payment_service: TransactionPaymentService,
    /// The PaymentIntent's client secret until approval, then the PaymentIntent id.
    #[schema(required = true)]
    pub payment_service_transaction_id: Option<String>,
    pub additional_identifiers: AdditionalIdentifiers,
    /// The same as `additional_identifiers`.
    pub extra_xids: AdditionalIdentifiers,
    /// Normalised: `insufficient_funds`, `incorrect_cvv`, `expired_payment_method`,
    /// `issuer_decline`, `suspected_fraud`, `canceled`, `incomplete_buyer_approval`,
    /// `failed_buyer_approval`, `service_error`, …
    #[schema(required = true)]
    pub error_code: Option<String>,
    /// Stripe's own code.
    #[schema(required = true)]
    pub raw_response_code: Option<String>,
    #[schema(required = true)]
    pub raw_response_description: Option<String>,
    /// Direct flow: the token for `POST /transactions/{id}/session`. Only in the create
    /// response (stored hashed).
    #[schema(required = true)]
    pub session_token: Option<String>,
    #[schema(value_type = Option<IntegrationClient>, required = true)]
    pub integration_client: Option<String>,
    #[schema(schema_with = always_empty)]
    pub gift_card_redemptions: Vec<Value>,
    pub disputed: bool,
    #[schema(schema_with = ecommerce)]
    pub payment_source: &'static str,
    #[schema(schema_with = always_false)]
    pub merchant_initiated: bool,
    #[schema(schema_with = always_false)]
    pub is_subsequent_payment: bool,
    #[schema(schema_with = always_false)]
    pub multi_tender: bool,
    #[schema(schema_with = always_false)]
    pub account_funding_transaction: bool,
    #[schema(schema_with = always_false)]
    pub pending_review: bool,
    /// When an approval not completed ends `authorization_failed` (`incomplete_buyer_approval`).
    #[schema(format = DateTime, required = true)]
    pub approval_expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When the authorization succeeded.
    #[schema(format = DateTime, required = true)]
    pub authorized_at: Option<String>,
    /// When the capture succeeded.
    #[schema(format = DateTime, required = true)]
    pub captured_at: Option<String>,
    /// When the authorization was voided.
    #[schema(format = DateTime, required = true)]
    pub voided_at: Option<String>,
}

/// `authorize` (Stripe `capture_method=manual`; capture later) or `capture`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Authorize,
    Capture,
}

/// `pending` until the payment ends, then `succeeded` or `failed`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Succeeded,
    Failed,
}

/// `web`, `ios`, `android`: the direct flow (the response carries `session_token`);
/// `redirect` or none: the redirect flow.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationClient {
    Redirect,
    Web,
    Ios,
    Android,
}

impl IntegrationClient {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationClient::Redirect => "redirect",
            IntegrationClient::Web => "web",
            IntegrationClient::Ios => "ios",
            IntegrationClient::Android => "android",
        }
    }
}

/// The transaction's buyer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransactionBuyer {
    #[serde(rename = "type")]
    #[schema(schema_with = buyer_kind)]
    pub kind: &'static str,
    /// The buyer's `customid`.
    pub external_identifier: String,
}

/// How the transaction is paid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransactionPaymentMethod {
    #[serde(rename = "type")]
    #[schema(schema_with = payment_method_kind)]
    pub kind: &'static str,
    /// `stripe` (every method the Stripe account offers) or a specific one (`card`, `klarna`, …).
    pub method: String,
    #[schema(schema_with = redirect_mode)]
    pub mode: &'static str,
    /// The hosted payment page (`/pay/{id}?token=…`) to send the buyer to. Only in the create
    /// response of the redirect flow (the token is stored hashed).
    #[schema(format = "uri", required = true)]
    pub approval_url: Option<String>,
    /// Where the buyer returns, with `transaction_id` and `transaction_status` appended.
    #[schema(required = true)]
    pub redirect_url: Option<String>,
    #[schema(required = true)]
    pub country: Option<String>,
    pub currency: String,
}

/// The Stripe connection the transaction went through.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransactionPaymentService {
    #[serde(rename = "type")]
    #[schema(schema_with = payment_service_kind)]
    pub kind: &'static str,
    /// The connection's id.
    pub id: String,
    /// `stripe-<method>`, e.g. `stripe-stripe`, `stripe-card`.
    #[schema(pattern = "^stripe-")]
    pub payment_service_definition_id: String,
    pub method: String,
    #[schema(schema_with = stripe_name)]
    pub display_name: &'static str,
}

/// Identifiers at the payment service (Gr4vy calls it `extra_xids`; both names are returned).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdditionalIdentifiers {
    /// The Stripe PaymentIntent id (`pi_…`), once it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub payment_id: Option<String>,
}

impl TransactionOut {
    pub fn new(t: &TransactionRow, fresh: &Fresh) -> Self {
        let metadata: Value =
            serde_json::from_str(&t.metadata).unwrap_or_else(|_| Value::Object(Map::new()));
        // Before approval the PaymentIntent's client secret, then its id.
        let approved = matches!(
            t.status.as_str(),
            "authorization_succeeded"
                | "authorization_void_pending"
                | "authorization_voided"
                | "capture_pending"
                | "capture_succeeded"
        );
        let pst = if approved {
            t.payment_intent_id.clone()
        } else {
            t.client_secret
                .clone()
                .or_else(|| t.payment_intent_id.clone())
        };
        let ids = AdditionalIdentifiers {
            payment_id: t.payment_intent_id.clone(),
        };
        TransactionOut {
            kind: "transaction",
            id: t.id.clone(),
            reconciliation_id: t.id.replace('-', ""),
            merchant_account_id: t.merchant_account_id.clone(),
            status: t.status.clone(),
            intent: t.intent.clone(),
            intent_outcome: intent_outcome(&t.status),
            amount: t.amount,
            currency: t.currency.clone(),
            country: t.country.clone(),
            authorized_amount: t.authorized_amount,
            captured_amount: t.captured_amount,
            refunded_amount: t.refunded_amount,
            settled_amount: 0,
            settled_currency: None,
            settled: false,
            external_identifier: t.external_identifier.clone(),
            metadata,
            customid: t.customid.clone(),
            buyer: t.customid.as_ref().map(|c| TransactionBuyer {
                kind: "buyer",
                external_identifier: c.clone(),
            }),
            method: t.method.clone(),
            instrument_type: "redirect",
            payment_method: TransactionPaymentMethod {
                kind: "payment-method",
                method: t.method.clone(),
                mode: "redirect",
                approval_url: fresh.approval_url.clone(),
                redirect_url: t.redirect_url.clone(),
                country: t.country.clone(),
                currency: t.currency.clone(),
            },
            payment_service: TransactionPaymentService {
                kind: "payment-service",
                id: t.connection_id.clone(),
                payment_service_definition_id: format!("stripe-{}", t.method),
                method: t.method.clone(),
                display_name: "Stripe",
            },
            payment_service_transaction_id: pst,
            additional_identifiers: ids.clone(),
            extra_xids: ids,
            error_code: t.error_code.clone(),
            raw_response_code: t.raw_response_code.clone(),
            raw_response_description: t.raw_response_description.clone(),
            session_token: fresh.session_token.clone(),
            integration_client: t.integration_client.clone(),
            gift_card_redemptions: Vec::new(),
            disputed: t.disputed,
            payment_source: "ecommerce",
            merchant_initiated: false,
            is_subsequent_payment: false,
            multi_tender: false,
            account_funding_transaction: false,
            pending_review: false,
            approval_expires_at: opt_time(t.approval_expires_at),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            authorized_at: opt_time(t.authorized_at),
            captured_at: opt_time(t.captured_at),
            voided_at: opt_time(t.voided_at),
        }
    }
}

/// The transaction as JSON (the outbound webhooks' payload).
pub fn transaction(t: &TransactionRow, fresh: &Fresh) -> Value {
    serde_json::to_value(TransactionOut::new(t, fresh)).unwrap_or(Value::Null)
}

// ---- refunds ---------------------------------------------------------------------------------

/// Money returned on a captured transaction. Every field is always present (possibly `null`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundOut {
    #[serde(rename = "type")]
    #[schema(schema_with = refund_kind)]
    pub kind: &'static str,
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(schema_with = uuid)]
    pub transaction_id: String,
    /// The Stripe refund id (`re_…`).
    #[schema(required = true)]
    pub payment_service_refund_id: Option<String>,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    #[schema(value_type = RefundStatusName)]
    pub status: String,
    #[schema(required = true)]
    pub reason: Option<String>,
    #[schema(schema_with = payment_method_target)]
    pub target_type: &'static str,
    #[schema(schema_with = always_null, required = true)]
    pub target_id: Option<String>,
    /// The id without dashes.
    pub reconciliation_id: String,
    pub transaction_reconciliation_id: String,
    #[schema(schema_with = always_null, required = true)]
    pub external_identifier: Option<String>,
    #[schema(required = true)]
    pub transaction_external_identifier: Option<String>,
    /// `refund_failed` or `refund_declined` when it did not succeed.
    #[schema(required = true)]
    pub error_code: Option<String>,
    #[schema(required = true)]
    pub raw_response_code: Option<String>,
    #[schema(required = true)]
    pub raw_response_description: Option<String>,
    #[schema(schema_with = always_false)]
    pub settled: bool,
    #[schema(schema_with = always_zero)]
    pub settled_amount: i64,
    #[schema(schema_with = always_null, required = true)]
    pub settled_currency: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl RefundOut {
    pub fn new(r: &RefundRow, t: Option<&TransactionRow>) -> Self {
        RefundOut {
            kind: "refund",
            id: r.id.clone(),
            transaction_id: r.transaction_id.clone(),
            payment_service_refund_id: r.stripe_refund_id.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            status: r.status.clone(),
            reason: r.reason.clone(),
            target_type: "payment-method",
            target_id: None,
            reconciliation_id: r.id.replace('-', ""),
            transaction_reconciliation_id: r.transaction_id.replace('-', ""),
            external_identifier: None,
            transaction_external_identifier: t.and_then(|t| t.external_identifier.clone()),
            error_code: r.error_code.clone(),
            raw_response_code: r.raw_response_code.clone(),
            raw_response_description: r.raw_response_description.clone(),
            settled: false,
            settled_amount: 0,
            settled_currency: None,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// The refund as JSON (the outbound webhooks' payload).
pub fn refund(r: &RefundRow, t: Option<&TransactionRow>) -> Value {
    serde_json::to_value(RefundOut::new(r, t)).unwrap_or(Value::Null)
}

// ---- cancel, events, session -----------------------------------------------------------------

/// The outcome of a cancel and the transaction after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionCancel {
    #[serde(rename = "type")]
    #[schema(schema_with = cancel_kind)]
    pub kind: &'static str,
    /// `succeeded`: the transaction ended (`authorization_failed`, or `authorization_voided`);
    /// `pending`: still awaiting the buyer; `failed`: it had moved on (e.g. the buyer paid
    /// meanwhile).
    #[schema(value_type = Outcome)]
    pub status: &'static str,
    /// The transaction's `error_code` (e.g. `canceled`).
    #[schema(required = true)]
    pub code: Option<String>,
    #[schema(required = true)]
    pub raw_response_code: Option<String>,
    #[schema(required = true)]
    pub raw_response_description: Option<String>,
    pub transaction: TransactionOut,
}

/// One entry of a transaction's append-only audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionEvent {
    #[serde(rename = "type")]
    #[schema(schema_with = event_kind)]
    pub kind: &'static str,
    pub id: String,
    /// What happened, e.g. `transaction.created`, a status change, a Stripe event received, an
    /// ignored backwards transition.
    pub name: String,
    pub transaction_id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The event's data (any JSON).
    #[schema(value_type = Value, required = true)]
    pub context: Value,
}

/// What Stripe.js or Stripe's mobile SDKs need to complete a direct-flow payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionSession {
    pub session_data: SessionData,
    /// `{public_url}/pay/{id}/complete?token=…`: a GET syncs the transaction and answers its
    /// status.
    #[schema(format = "uri")]
    pub default_completion_url: String,
    #[schema(value_type = Option<IntegrationClient>, required = true)]
    pub integration_client: Option<String>,
}

/// The values Stripe.js takes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionData {
    /// The connection's `pk_…`.
    #[schema(required = true)]
    pub publishable_key: Option<String>,
    /// The PaymentIntent's client secret.
    #[schema(required = true)]
    pub client_secret: Option<String>,
    /// `{public_url}/pay/{id}/complete`.
    #[schema(format = "uri")]
    pub return_url: String,
}

/// A list's schema under the name clients know it by (`Transactions`, `Refunds`, …): the
/// envelope of [`super::list::Page`] around `$item`.
macro_rules! named_page {
    ($doc:ident, $item:ty, $name:literal, $desc:literal) => {
        #[doc = $desc]
        pub struct $doc;

        impl PartialSchema for $doc {
            fn schema() -> RefOr<Schema> {
                let mut s = <super::list::Page<$item> as PartialSchema>::schema();
                if let RefOr::T(Schema::Object(o)) = &mut s {
                    o.description = Some($desc.into());
                }
                s
            }
        }

        impl ToSchema for $doc {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
                // The envelope refers to its item by name: the item's schema goes along.
                out.push((
                    <$item as ToSchema>::name().into_owned(),
                    <$item as PartialSchema>::schema(),
                ));
                <$item as ToSchema>::schemas(out);
                <super::list::Page<$item> as ToSchema>::schemas(out)
            }
        }
    };
}

named_page!(
    Transactions,
    TransactionOut,
    "Transactions",
    "A page of transactions, newest first, with cursors."
);
named_page!(
    TransactionEvents,
    TransactionEvent,
    "TransactionEvents",
    "A transaction's events, oldest first (not paged: the cursors are null)."
);
named_page!(
    Refunds,
    RefundOut,
    "Refunds",
    "A transaction's refunds (not paged: the cursors are null)."
);
