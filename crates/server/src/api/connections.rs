//! Stripe connections: credentials encrypted at rest and never returned (only masked), the
//! `awaiting_webhook_secret` state, the webhook URL to register, one default per merchant
//! account, and a key-permission report.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tollgate_store::{ConnectionRow, connections};
use tollgate_stripe::client::RequestOptions;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::crypto::mask;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(verify));
    super::typed::close(&mut router, &["ConnectionCreate", "ConnectionUpdate"]);
    router
}

/// How long a replaced webhook secret keeps verifying when the request does not say
/// (`previous_webhook_secret_expires_in`): 24 hours, as when Stripe rolls a secret.
const PREVIOUS_SECRET_SECS: i64 = 24 * 3600;
/// The longest a replaced webhook secret may keep verifying: 7 days.
const PREVIOUS_SECRET_MAX_SECS: i64 = 7 * 24 * 3600;

// ---- the connection object ---------------------------------------------------------------------

/// A Stripe account configured for a merchant account. Secrets are encrypted at rest and only
/// ever shown masked (`sk_test_…4242`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Connection)]
pub struct ConnectionOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^connection$", example = "connection")]
    pub object: &'static str,
    #[schema(example = "0193b0e4-6f5c-7a9e-9c1d-3f1e2d4c5b6a")]
    pub id: String,
    #[schema(example = "default")]
    pub merchant_account_id: String,
    /// Only `stripe` connections exist.
    #[schema(pattern = "^stripe$", example = "stripe")]
    pub kind: String,
    #[schema(example = "Stripe")]
    pub display_name: String,
    pub status: ConnectionStatus,
    /// Masked.
    #[schema(example = "sk_test_…4242")]
    pub secret_key: String,
    #[schema(required = true)]
    pub publishable_key: Option<String>,
    /// Masked.
    #[schema(required = true)]
    pub webhook_secret: Option<String>,
    /// A rotated-out secret still verifies (until `previous_webhook_secret_expires_at`).
    pub has_previous_webhook_secret: bool,
    /// When the rotated-out secret stops verifying; null when there is none.
    #[schema(required = true, format = DateTime)]
    pub previous_webhook_secret_expires_at: Option<String>,
    /// `acct_…` (Connect), sent as `Stripe-Account`.
    #[schema(required = true)]
    pub stripe_account: Option<String>,
    /// Pins `Stripe-Version`.
    #[schema(required = true)]
    pub api_version: Option<String>,
    /// `{public_url}/webhooks/stripe/{id}`: the endpoint to register in Stripe.
    #[schema(format = "uri")]
    pub webhook_url: String,
    /// The merchant account's default payments connection.
    pub default: bool,
    /// The built-in Stripe sandbox (its keys are managed by the server).
    pub sandbox: bool,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// `awaiting_webhook_secret` until a webhook secret is set; inbound events are refused meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ConnectionStatus)]
pub enum ConnectionStatus {
    Active,
    AwaitingWebhookSecret,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::AwaitingWebhookSecret => "awaiting_webhook_secret",
        }
    }
}

pub fn render(ctx: &ApiContext, c: &ConnectionRow) -> ConnectionOut {
    let previous_expires_at = c
        .previous_webhook_secret(ctx.now())
        .and(c.webhook_secret_old_expires_at)
        .map(rfc3339);
    let webhook_secret = c
        .webhook_secret_enc
        .as_ref()
        .and_then(|s| ctx.keys.open(&c.id, s).ok())
        .map(|s| mask(&s));
    ConnectionOut {
        object: "connection",
        id: c.id.clone(),
        merchant_account_id: c.merchant_account_id.clone(),
        kind: c.kind.clone(),
        display_name: c.display_name.clone(),
        status: if c.webhook_secret_enc.is_some() {
            ConnectionStatus::Active
        } else {
            ConnectionStatus::AwaitingWebhookSecret
        },
        secret_key: c.secret_key_hint.clone(),
        publishable_key: c.publishable_key.clone(),
        webhook_secret,
        has_previous_webhook_secret: previous_expires_at.is_some(),
        previous_webhook_secret_expires_at: previous_expires_at,
        stripe_account: c.stripe_account.clone(),
        api_version: c.api_version.clone(),
        webhook_url: format!("{}/webhooks/stripe/{}", ctx.public_url, c.id),
        default: c.is_default,
        sandbox: c.sandbox,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

// ---- requests ----------------------------------------------------------------------------------

/// A new Stripe connection. The first one of a merchant account becomes its default, and so
/// does a live one (`sk_live_`/`rk_live_`) while the default is the built-in sandbox: live keys
/// stop the sandbox at once. Text fields are trimmed; `null` is the same as leaving a field out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"type": "stripe", "secret_key": "sk_test_51Example", "publishable_key": "pk_test_51Example"}))]
pub struct ConnectionCreate {
    /// Only `stripe` connections exist.
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>, pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*stripe[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub kind: Option<String>,
    /// `sk_…` or restricted `rk_…`. Write-only. The sandbox connection's keys cannot be changed.
    #[schema(value_type = String, required = true, max_length = 500, pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(sk|rk)_(test|live)_[A-Za-z0-9]{1,255}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$", example = "sk_test_51Example")]
    pub secret_key: Option<String>,
    /// Shown in the dashboard; `Stripe` when a connection is created without one.
    #[schema(
        max_length = 500,
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub display_name: Option<String>,
    /// `pk_…`; needed for payments (hosted page, direct flow).
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*pk_(test|live)_[A-Za-z0-9]{1,255}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub publishable_key: Option<String>,
    /// `whsec_…`, issued by Stripe once `webhook_url` is registered. Write-only.
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*whsec_[A-Za-z0-9_.-]+[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub webhook_secret: Option<String>,
    /// `acct_…` (Connect), sent as `Stripe-Account`.
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*acct_[A-Za-z0-9_.-]+[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub stripe_account: Option<String>,
    /// A Stripe API version, e.g. `2026-10-28.endive`; sent as `Stripe-Version`.
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[0-9]{4}-[0-9]{2}-[0-9]{2}[A-Za-z0-9._-]{0,40}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        example = "2026-10-28.endive"
    )]
    pub api_version: Option<String>,
    /// Make this the default payments connection (unsetting it on the default is refused: make
    /// another the default).
    pub default: Option<bool>,
    /// Seconds the webhook secret replaced by this request's `webhook_secret` keeps verifying
    /// (default 86400, 24 h; 0: it stops at once). Without `webhook_secret`, sets a new end for
    /// the secret replaced earlier.
    #[schema(minimum = 0, maximum = 604800)]
    pub previous_webhook_secret_expires_in: Option<i64>,
}

/// Fields to change; absent ones (and `null` ones) are kept. Setting `webhook_secret` again
/// rotates it: the previous one keeps verifying for `previous_webhook_secret_expires_in`
/// seconds (24 h by default). Live keys (`sk_live_`/`rk_live_`) stop the built-in sandbox and
/// take over the default from it. The sandbox connection's keys are managed by the server:
/// `secret_key` or `webhook_secret` on it (even `null`) is a 400.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"webhook_secret": "whsec_Example"}))]
pub struct ConnectionUpdate {
    /// Only `stripe` connections exist.
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>, pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*stripe[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub kind: Option<String>,
    /// `sk_…` or restricted `rk_…`. Write-only. Present (even `null`) on the sandbox
    /// connection: a 400.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500, pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(sk|rk)_(test|live)_[A-Za-z0-9]{1,255}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub secret_key: Option<Option<String>>,
    /// Shown in the dashboard; `Stripe` when a connection is created without one.
    #[schema(
        max_length = 500,
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub display_name: Option<String>,
    /// `pk_…`; needed for payments (hosted page, direct flow).
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*pk_(test|live)_[A-Za-z0-9]{1,255}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub publishable_key: Option<String>,
    /// `whsec_…`, issued by Stripe once `webhook_url` is registered. Write-only. On an update,
    /// present (even `null`) on the sandbox connection: a 400.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500, pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*whsec_[A-Za-z0-9_.-]+[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub webhook_secret: Option<Option<String>>,
    /// `acct_…` (Connect), sent as `Stripe-Account`.
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*acct_[A-Za-z0-9_.-]+[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub stripe_account: Option<String>,
    /// A Stripe API version, e.g. `2026-10-28.endive`; sent as `Stripe-Version`.
    #[schema(
        max_length = 500,
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[0-9]{4}-[0-9]{2}-[0-9]{2}[A-Za-z0-9._-]{0,40}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        example = "2026-10-28.endive"
    )]
    pub api_version: Option<String>,
    /// Make this the default payments connection (unsetting it on the default is refused: make
    /// another the default).
    pub default: Option<bool>,
    /// Seconds the webhook secret replaced by this request's `webhook_secret` keeps verifying
    /// (default 86400, 24 h; 0: it stops at once). Without `webhook_secret`, sets a new end for
    /// the secret replaced earlier.
    #[schema(minimum = 0, maximum = 604800)]
    pub previous_webhook_secret_expires_in: Option<i64>,
}

/// The fields a create and an update share, as sent.
#[derive(Debug, Default)]
struct ConnectionFields {
    display_name: Option<String>,
    publishable_key: Option<String>,
    webhook_secret: Option<String>,
    stripe_account: Option<String>,
    api_version: Option<String>,
    default: Option<bool>,
    previous_webhook_secret_expires_in: Option<i64>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Valid settings of a connection, to apply to its row.
#[derive(Debug, Default)]
pub struct ConnectionChanges {
    display_name: Option<String>,
    secret_key: Option<String>,
    publishable_key: Option<String>,
    webhook_secret: Option<String>,
    previous_secs: Option<i64>,
    stripe_account: Option<String>,
    api_version: Option<String>,
    default: Option<bool>,
}

impl TryFrom<ConnectionCreate> for ConnectionChanges {
    type Error = ApiError;

    fn try_from(b: ConnectionCreate) -> ApiResult<Self> {
        let fields = ConnectionFields {
            display_name: b.display_name,
            publishable_key: b.publishable_key,
            webhook_secret: b.webhook_secret,
            stripe_account: b.stripe_account,
            api_version: b.api_version,
            default: b.default,
            previous_webhook_secret_expires_in: b.previous_webhook_secret_expires_in,
        };
        let changes = changes(b.kind, b.secret_key, fields)?;
        if changes.secret_key.is_none() {
            return Err(ApiError::field(
                "/secret_key",
                "Required: the Stripe secret (sk_…) or restricted (rk_…) key.",
            ));
        }
        Ok(changes)
    }
}

impl TryFrom<ConnectionUpdate> for ConnectionChanges {
    type Error = ApiError;

    fn try_from(b: ConnectionUpdate) -> ApiResult<Self> {
        let fields = ConnectionFields {
            display_name: b.display_name,
            publishable_key: b.publishable_key,
            webhook_secret: b.webhook_secret.flatten(),
            stripe_account: b.stripe_account,
            api_version: b.api_version,
            default: b.default,
            previous_webhook_secret_expires_in: b.previous_webhook_secret_expires_in,
        };
        changes(b.kind, b.secret_key.flatten(), fields)
    }
}

/// Checks every field, in the order the error of the first bad one is reported.
fn changes(
    kind: Option<String>,
    secret_key: Option<String>,
    f: ConnectionFields,
) -> ApiResult<ConnectionChanges> {
    if let Some(t) = text("type", kind)?
        && t != "stripe"
    {
        return Err(ApiError::field("/type", "Only 'stripe' connections exist."));
    }
    let display_name = text("display_name", f.display_name)?;
    let secret_key = text("secret_key", secret_key)?;
    if let Some(sk) = &secret_key {
        check_api_key(
            "secret_key",
            sk,
            &["sk_test_", "sk_live_", "rk_test_", "rk_live_"],
        )?;
    }
    let publishable_key = text("publishable_key", f.publishable_key)?;
    if let Some(pk) = &publishable_key {
        check_api_key("publishable_key", pk, &["pk_test_", "pk_live_"])?;
    }
    let previous_secs = match f.previous_webhook_secret_expires_in {
        None => None,
        Some(n) if (0..=PREVIOUS_SECRET_MAX_SECS).contains(&n) => Some(n),
        Some(_) => {
            return Err(ApiError::field(
                "/previous_webhook_secret_expires_in",
                "Seconds the replaced webhook secret keeps verifying: from 0 (it stops at once) to 604800 (7 days).",
            ));
        }
    };
    let webhook_secret = text("webhook_secret", f.webhook_secret)?;
    if let Some(ws) = &webhook_secret {
        check_prefix("webhook_secret", ws, &["whsec_"])?;
    }
    let stripe_account = text("stripe_account", f.stripe_account)?;
    if let Some(a) = &stripe_account {
        check_prefix("stripe_account", a, &["acct_"])?;
    }
    let api_version = text("api_version", f.api_version)?;
    if let Some(v) = &api_version
        && !valid_api_version(v)
    {
        return Err(ApiError::field(
            "/api_version",
            "A Stripe API version such as 2026-10-28.endive.",
        ));
    }
    Ok(ConnectionChanges {
        display_name,
        secret_key,
        publishable_key,
        webhook_secret,
        previous_secs,
        stripe_account,
        api_version,
        default: f.default,
    })
}

/// A text field: absent or `null` is none; otherwise a string that is not blank, of at most
/// 500 characters, trimmed.
fn text(key: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(s) if !s.trim().is_empty() && s.chars().count() <= 500 => Ok(Some(s.trim().into())),
        Some(_) => Err(ApiError::field(
            &format!("/{key}"),
            "Must be a non-empty string.",
        )),
    }
}

/// A Stripe API version: a date, then at most 40 letters, digits, '.', '_' or '-'.
fn valid_api_version(v: &str) -> bool {
    // `get`, not `[..10]`: the tenth byte may fall inside a multi-byte character. The rest
    // (`.endive`) is sent as the Stripe-Version header, so it is held to letters, digits, '.',
    // '_' and '-' (other text made every Stripe call of the connection fail).
    let Some(date) = v.get(..10) else {
        return false;
    };
    let date_ok = date.chars().enumerate().all(|(i, ch)| {
        if i == 4 || i == 7 {
            ch == '-'
        } else {
            ch.is_ascii_digit()
        }
    });
    let rest = &v[10..];
    date_ok
        && rest.len() <= 40
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// `value` is one of `prefixes` and then at least one letter, digit, `_`, `-` or `.`.
fn check_prefix(key: &str, value: &str, prefixes: &[&str]) -> ApiResult<()> {
    let ok = prefixes
        .iter()
        .filter_map(|p| value.strip_prefix(p))
        .any(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            &format!("/{key}"),
            format!(
                "Must start with {}, then letters, digits, '_', '-' or '.'.",
                prefixes.join(" or ")
            ),
        ))
    }
}

/// A Stripe API key: one of `prefixes` and then 1 to 255 letters or digits, as Stripe writes
/// them (a key Stripe could never accept is refused here rather than at the first payment).
fn check_api_key(key: &str, value: &str, prefixes: &[&str]) -> ApiResult<()> {
    let ok = prefixes
        .iter()
        .filter_map(|p| value.strip_prefix(p))
        .any(|rest| {
            !rest.is_empty() && rest.len() <= 255 && rest.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            &format!("/{key}"),
            format!(
                "Must start with {}, then 1 to 255 letters or digits.",
                prefixes.join(" or ")
            ),
        ))
    }
}

/// Applies valid settings to `c` (create and update share this).
fn apply(ctx: &ApiContext, c: &mut ConnectionRow, changes: ConnectionChanges) {
    if let Some(n) = changes.display_name {
        c.display_name = n;
    }
    if let Some(sk) = changes.secret_key {
        c.secret_key_enc = ctx.keys.seal(&c.id, &sk);
        c.secret_key_hint = mask(&sk);
    }
    if let Some(pk) = changes.publishable_key {
        c.publishable_key = Some(pk);
    }
    let now = ctx.now();
    if let Some(ws) = changes.webhook_secret {
        // Rotation: the replaced secret keeps verifying for a while (24 h unless the request
        // says), so events Stripe signed before the switch still arrive.
        if let Some(current) = c.webhook_secret_enc.take() {
            c.webhook_secret_old_enc = Some(current);
            c.webhook_secret_old_expires_at =
                Some(now + changes.previous_secs.unwrap_or(PREVIOUS_SECRET_SECS) * 1000);
        }
        c.webhook_secret_enc = Some(ctx.keys.seal(&c.id, &ws));
    } else if let Some(secs) = changes.previous_secs
        && c.previous_webhook_secret(now).is_some()
    {
        // A new end for the secret replaced earlier (0: now).
        c.webhook_secret_old_expires_at = Some(now + secs * 1000);
    }
    if c.previous_webhook_secret(now).is_none() {
        c.webhook_secret_old_enc = None;
        c.webhook_secret_old_expires_at = None;
    }
    if let Some(a) = changes.stripe_account {
        c.stripe_account = Some(a);
    }
    if let Some(v) = changes.api_version {
        c.api_version = Some(v);
    }
    if let Some(d) = changes.default {
        c.is_default = d;
    }
}

// ---- handlers ----------------------------------------------------------------------------------

/// Secrets are encrypted at rest and never returned. Register the answer's `webhook_url` in
/// Stripe, then set `webhook_secret` with PATCH; until then the connection is
/// `awaiting_webhook_secret`.
#[utoipa::path(
    post,
    path = "/connections",
    operation_id = "create_connection",
    tag = "connections",
    summary = "Add a Stripe connection",
    request_body = ConnectionCreate,
    responses(
        (status = 201, description = "The connection.", body = ConnectionOut),
        (status = 400, description = "A field is missing, unknown or not valid (each unknown one is listed in `details`); nothing is created.", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<ConnectionCreate>,
) -> ApiResult<(StatusCode, Json<ConnectionOut>)> {
    caller.require_secret()?;
    let c = create_valid(&ctx, &caller.merchant_account_id, body.try_into()?).await?;
    Ok((StatusCode::CREATED, Json(render(&ctx, &c))))
}

/// Creates a connection of `merchant` from an API-shaped body (the API and the CLI).
pub async fn create_for(
    ctx: &ApiContext,
    merchant: &str,
    body: &Map<String, Value>,
) -> ApiResult<ConnectionRow> {
    let body: ConnectionCreate = super::typed::from_object(body.clone())?;
    create_valid(ctx, merchant, body.try_into()?).await
}

async fn create_valid(
    ctx: &ApiContext,
    merchant: &str,
    changes: ConnectionChanges,
) -> ApiResult<ConnectionRow> {
    let now = ctx.now();
    let mut c = ConnectionRow {
        id: tollgate_store::new_id(),
        merchant_account_id: merchant.to_string(),
        kind: "stripe".into(),
        display_name: "Stripe".into(),
        secret_key_enc: Vec::new(),
        secret_key_hint: String::new(),
        publishable_key: None,
        webhook_secret_enc: None,
        webhook_secret_old_enc: None,
        webhook_secret_old_expires_at: None,
        stripe_account: None,
        api_version: None,
        sandbox: false,
        is_default: false,
        created_at: now,
        updated_at: now,
    };
    apply(ctx, &mut c, changes);
    let mut tx = ctx.store.begin().await?;
    let default = connections::default_for(&mut *tx, &c.merchant_account_id).await?;
    // The first connection is the default; so is a live one replacing the sandbox, which
    // stops now (it never runs beside live keys).
    if default.is_none_or(|d| d.sandbox && c.is_live()) {
        c.is_default = true;
    }
    connections::insert(&mut *tx, &c).await?;
    if c.is_default {
        connections::set_default(&mut *tx, &c.merchant_account_id, &c.id).await?;
    }
    tollgate_store::commit(tx).await?;
    if c.is_live() {
        ctx.stop_sandbox();
    }
    Ok(c)
}

async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<ConnectionRow> {
    connections::get(ctx.store.reader(), id)
        .await?
        .filter(|c| c.merchant_account_id == caller.merchant_account_id)
        .ok_or_else(|| ApiError::not_found("connection"))
}

#[utoipa::path(
    get,
    path = "/connections/{id}",
    operation_id = "get_connection",
    tag = "connections",
    summary = "Get a connection",
    params(("id" = String, Path, description = "The connection's id.")),
    responses(
        (status = 200, description = "The connection.", body = ConnectionOut),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConnectionOut>> {
    caller.require_secret()?;
    Ok(Json(render(&ctx, &load(&ctx, &caller, &id).await?)))
}

/// The merchant account's connections (not paged: the cursors are null).
#[utoipa::path(
    get,
    path = "/connections",
    operation_id = "list_connections",
    tag = "connections",
    summary = "List connections",
    responses((status = 200, description = "The merchant account's connections.", body = Page<ConnectionOut>)),
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<Page<ConnectionOut>>> {
    caller.require_secret()?;
    let rows = connections::list(ctx.store.reader(), Some(&caller.merchant_account_id)).await?;
    let items: Vec<ConnectionOut> = rows.iter().map(|c| render(&ctx, c)).collect();
    Ok(Json(Page {
        // Not paged: the limit is the number of items (at least 1).
        limit: (items.len() as i64).max(1),
        items,
        next_cursor: None,
        previous_cursor: None,
    }))
}

/// Sets the given fields: add the webhook secret (or rotate it), change keys, make it the
/// default.
#[utoipa::path(
    patch,
    path = "/connections/{id}",
    operation_id = "update_connection",
    tag = "connections",
    summary = "Update a connection",
    params(("id" = String, Path, description = "The connection's id.")),
    request_body = ConnectionUpdate,
    responses(
        (status = 200, description = "The connection.", body = ConnectionOut),
        (status = 400, description = "A field is unknown or not valid (each unknown one is listed in `details`), keys given to the sandbox connection, or `default: false` on the default connection; nothing is changed.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ConnectionUpdate>,
) -> ApiResult<Json<ConnectionOut>> {
    caller.require_secret()?;
    let mut c = load(&ctx, &caller, &id).await?;
    if c.sandbox && (body.secret_key.is_some() || body.webhook_secret.is_some()) {
        return Err(ApiError::bad_request(
            "The sandbox connection's keys are managed by the server.",
        ));
    }
    let was_default = c.is_default;
    apply(&ctx, &mut c, body.try_into()?);
    if was_default && !c.is_default {
        return Err(ApiError::field(
            "/default",
            "Make another connection the default instead.",
        ));
    }
    c.updated_at = ctx.now();
    let mut tx = ctx.store.begin().await?;
    // Live keys given to a connection replace the sandbox as the default, as a new live
    // connection does.
    if c.is_live()
        && !c.is_default
        && connections::default_for(&mut *tx, &c.merchant_account_id)
            .await?
            .is_none_or(|d| d.sandbox)
    {
        c.is_default = true;
    }
    connections::update(&mut *tx, &c).await?;
    if c.is_default && !was_default {
        connections::set_default(&mut *tx, &c.merchant_account_id, &c.id).await?;
    }
    tollgate_store::commit(tx).await?;
    ctx.entitlements.forget_connection(&c.id);
    if c.is_live() {
        ctx.stop_sandbox();
    }
    Ok(Json(render(&ctx, &c)))
}

/// Deletes the connection with the Stripe events it received. A connection with transactions
/// is kept: 409 `duplicate_record` saying how many.
#[utoipa::path(
    delete,
    path = "/connections/{id}",
    operation_id = "delete_connection",
    tag = "connections",
    summary = "Delete a connection",
    params(("id" = String, Path, description = "The connection's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: transactions were made through the connection (they keep it), or a Stripe event arrived for it while it was being deleted (try again).", body = ErrorEnvelope),
    ),
)]
pub async fn delete(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    let c = load(&ctx, &caller, &id).await?;
    // Only transactions keep a connection: the Stripe events it received (and where its sync
    // stopped) go with it.
    let mut tx = ctx.store.begin().await?;
    let made = connections::transaction_count(&mut *tx, &c.id).await?;
    if made > 0 {
        tollgate_store::rollback(tx).await?;
        return Err(kept_by_transactions(made));
    }
    // Forgotten before and after the commit: an event verified against the cached connection
    // in between would be stored for a connection that is gone.
    ctx.entitlements.forget_connection(&c.id);
    let deleted = connections::delete(&mut tx, &c.id).await;
    match deleted {
        Ok(_) => {
            tollgate_store::commit(tx).await?;
            ctx.entitlements.forget_connection(&c.id);
            Ok(StatusCode::NO_CONTENT)
        }
        // A row referring to it arrived meanwhile (PostgreSQL: another request committed
        // between the count and the delete): a transaction, or a Stripe event.
        Err(e) if e.is_foreign_key_violation() => {
            tollgate_store::rollback(tx).await?;
            let made = connections::transaction_count(ctx.store.reader(), &c.id).await?;
            Err(if made > 0 {
                kept_by_transactions(made)
            } else {
                ApiError::DuplicateRecord(
                    "This connection received a Stripe event while it was being deleted; try again.".into(),
                )
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn kept_by_transactions(n: i64) -> ApiError {
    let what = if n == 1 {
        "1 transaction was".to_string()
    } else {
        format!("{n} transactions were")
    };
    ApiError::DuplicateRecord(format!(
        "This connection cannot be deleted: {what} made through it, and transactions keep their connection."
    ))
}

// ---- verify ------------------------------------------------------------------------------------

/// (resource, Stripe list path, what it enables) for the read checks of `verify`.
const READS: &[(&str, &str, &str)] = &[
    (
        "customers",
        "/v1/customers",
        "linking customers to customids",
    ),
    (
        "invoices",
        "/v1/invoices",
        "subscriptions' renewals and refunds",
    ),
    (
        "payment_intents",
        "/v1/payment_intents",
        "payments and one-time purchases",
    ),
    (
        "checkout_sessions",
        "/v1/checkout/sessions",
        "purchases made through Checkout",
    ),
    ("credit_notes", "/v1/credit_notes", "refunds of invoices"),
    (
        "subscriptions",
        "/v1/subscriptions",
        "subscription permissions",
    ),
    ("events", "/v1/events", "reconcile after missed webhooks"),
    ("charges", "/v1/charges", "refunds and disputes of payments"),
    ("refunds", "/v1/refunds", "refund statuses"),
    ("disputes", "/v1/disputes", "dispute revocations"),
    ("products", "/v1/products", "mapping SKUs to products"),
    ("prices", "/v1/prices", "mapping SKUs to prices"),
];

/// What the connection's key can do at Stripe. Writes are probed with an empty create, so
/// nothing is created.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConnectionVerification)]
pub struct Verification {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^connection-verification$", example = "connection-verification")]
    pub object: &'static str,
    pub connection_id: String,
    /// Stripe answered at least one check.
    pub credentials_valid: bool,
    pub read: Vec<ResourceCheck>,
    pub write: WriteCheck,
    /// Both writes are allowed.
    pub payments_ready: bool,
    pub webhook_secret_set: bool,
}

/// Whether the key can read one Stripe resource.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConnectionResourceCheck)]
pub struct ResourceCheck {
    #[schema(value_type = VerifiedResource)]
    pub resource: &'static str,
    /// `null`: could not check.
    #[schema(required = true)]
    pub read: Option<bool>,
    /// What a missing permission disables.
    pub needed_for: &'static str,
    #[schema(required = true)]
    pub note: Option<String>,
}

/// The Stripe resources a verification reads.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: `ResourceCheck::resource` holds its name.
pub enum VerifiedResource {
    Customers,
    Invoices,
    PaymentIntents,
    CheckoutSessions,
    CreditNotes,
    Subscriptions,
    Events,
    Charges,
    Refunds,
    Disputes,
    Products,
    Prices,
}

/// Whether the key can create PaymentIntents and Refunds (`null`: could not check).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConnectionWriteCheck)]
pub struct WriteCheck {
    #[schema(required = true)]
    pub payment_intents: Option<bool>,
    #[schema(required = true)]
    pub refunds: Option<bool>,
}

/// A body that is not read: no body, an empty one, or any JSON object (its fields are
/// ignored), as for the other bodiless POSTs that take none.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Ignored(#[allow(dead_code)] BTreeMap<String, Value>);

/// Checks the credentials against Stripe: per resource whether the key can read it (each
/// missing one with what it disables), and whether it can write PaymentIntents and Refunds.
/// Writes are probed with an empty create: a permitted key gets Stripe's "missing parameter"
/// error, a refused one 403; nothing is created. No body is needed; an empty body or any JSON
/// object is accepted and ignored.
#[utoipa::path(
    post,
    path = "/connections/{id}/verify",
    operation_id = "verify_connection",
    tag = "connections",
    summary = "Verify a connection's key",
    params(("id" = String, Path, description = "The connection's id.")),
    request_body(content = Ignored, description = "Not read: no body, an empty body or any JSON object."),
    responses(
        (status = 200, description = "The report.", body = Verification),
        (status = 400, description = "A body that is not a JSON object.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: the connection is the built-in sandbox, which is not running (live keys are configured).", body = ErrorEnvelope),
    ),
)]
pub async fn verify(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    _body: Body<Ignored>,
) -> ApiResult<Json<Verification>> {
    caller.require_secret()?;
    let c = load(&ctx, &caller, &id).await?;
    Ok(Json(verify_for(&ctx, &c).await?))
}

/// The permission report of one connection (the API and the CLI).
pub async fn verify_for(ctx: &ApiContext, c: &ConnectionRow) -> ApiResult<Verification> {
    let stripe = ctx.stripe_for(c)?;
    let mut read = Vec::new();
    let mut reachable = false;
    let mut limit = Map::new();
    limit.insert("limit".into(), Value::from(1));
    for (name, path, needed_for) in READS {
        let r = stripe
            .request(Method::GET, path, &limit, RequestOptions::default())
            .await;
        let (readable, note) = match &r {
            Ok(_) => (Some(true), None),
            Err(e) if e.status() == Some(403) => {
                (Some(false), Some(format!("missing: disables {needed_for}")))
            }
            Err(e) if e.status() == Some(404) => (
                None,
                Some("this Stripe does not offer the resource".to_string()),
            ),
            Err(e) if e.status() == Some(401) => {
                (Some(false), Some("the key was refused".to_string()))
            }
            Err(e) => (None, Some(format!("could not check: {}", e.message()))),
        };
        reachable |= readable.is_some();
        read.push(ResourceCheck {
            resource: name,
            read: readable,
            needed_for,
            note,
        });
    }
    let mut can = [None; 2];
    for (slot, path) in can.iter_mut().zip(["/v1/payment_intents", "/v1/refunds"]) {
        let r = stripe
            .request(
                Method::POST,
                path,
                &Map::new(),
                RequestOptions::idempotent(format!("tollgate-verify-{}", tollgate_store::new_id())),
            )
            .await;
        *slot = match &r {
            Err(e) if e.status() == Some(400) => Some(true),
            Err(e) if e.status() == Some(403) || e.status() == Some(401) => Some(false),
            Ok(_) => Some(true),
            Err(_) => None,
        };
    }
    let [payment_intents, refunds] = can;
    Ok(Verification {
        object: "connection-verification",
        connection_id: c.id.clone(),
        credentials_valid: reachable,
        read,
        write: WriteCheck {
            payment_intents,
            refunds,
        },
        payments_ready: payment_intents == Some(true) && refunds == Some(true),
        webhook_secret_set: c.webhook_secret_enc.is_some(),
    })
}
