//! Rows as stored. Plain data: the server turns them into API objects and domain values.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Result;

fn opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

#[derive(Debug, Clone)]
pub struct MerchantAccountRow {
    pub id: String,
    pub display_name: String,
    pub created_at: i64,
}

impl MerchantAccountRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            display_name: r.try_get("display_name")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    /// `None`: an operator key valid for every merchant account.
    pub merchant_account_id: Option<String>,
    /// `secret` or `public`.
    pub kind: String,
    pub secret_hash: String,
    pub display_name: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            kind: r.try_get("kind")?,
            secret_hash: r.try_get("secret_hash")?,
            display_name: r.try_get("display_name")?,
            created_at: r.try_get("created_at")?,
            revoked_at: opt_i64(r, "revoked_at")?,
        })
    }
}

#[derive(Clone)]
pub struct ConnectionRow {
    pub id: String,
    pub merchant_account_id: String,
    pub kind: String,
    pub display_name: String,
    /// AEAD-sealed (see the server's `crypto` module); never leaves the server in clear.
    pub secret_key_enc: Vec<u8>,
    /// A masked form for display (`sk_test_…4242`).
    pub secret_key_hint: String,
    pub publishable_key: Option<String>,
    pub webhook_secret_enc: Option<Vec<u8>>,
    pub webhook_secret_old_enc: Option<Vec<u8>>,
    /// When the previous webhook secret stops verifying (unix ms); set with it.
    pub webhook_secret_old_expires_at: Option<i64>,
    pub stripe_account: Option<String>,
    pub api_version: Option<String>,
    pub sandbox: bool,
    pub is_default: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for ConnectionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRow")
            .field("id", &self.id)
            .field("merchant_account_id", &self.merchant_account_id)
            .field("secret_key_hint", &self.secret_key_hint)
            .finish_non_exhaustive()
    }
}

impl ConnectionRow {
    /// Whether this connection holds live (`sk_live_` / `rk_live_`) keys, as [`any_live`]
    /// counts them.
    ///
    /// [`any_live`]: crate::connections::any_live
    pub fn is_live(&self) -> bool {
        !self.sandbox
            && (self.secret_key_hint.starts_with("sk_live_")
                || self.secret_key_hint.starts_with("rk_live_"))
    }

    /// The previous webhook secret while it still verifies at `now` (unix ms).
    pub fn previous_webhook_secret(&self, now: i64) -> Option<&Vec<u8>> {
        self.webhook_secret_old_enc
            .as_ref()
            .filter(|_| self.webhook_secret_old_expires_at.is_some_and(|t| now < t))
    }

    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            kind: r.try_get("kind")?,
            display_name: r.try_get("display_name")?,
            secret_key_enc: r.try_get("secret_key_enc")?,
            secret_key_hint: r.try_get("secret_key_hint")?,
            publishable_key: r.try_get("publishable_key")?,
            webhook_secret_enc: r.try_get("webhook_secret_enc")?,
            webhook_secret_old_enc: r.try_get("webhook_secret_old_enc")?,
            webhook_secret_old_expires_at: r.try_get("webhook_secret_old_expires_at")?,
            stripe_account: r.try_get("stripe_account")?,
            api_version: r.try_get("api_version")?,
            sandbox: flag(r, "sandbox")?,
            is_default: flag(r, "is_default")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TransactionRow {
    pub id: String,
    pub merchant_account_id: String,
    pub connection_id: String,
    pub status: String,
    pub intent: String,
    pub amount: i64,
    pub currency: String,
    pub country: Option<String>,
    pub authorized_amount: i64,
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub external_identifier: Option<String>,
    /// JSON object of strings.
    pub metadata: String,
    pub customid: Option<String>,
    pub method: String,
    pub redirect_url: Option<String>,
    pub integration_client: Option<String>,
    pub payment_intent_id: Option<String>,
    pub client_secret: Option<String>,
    pub error_code: Option<String>,
    pub raw_response_code: Option<String>,
    pub raw_response_description: Option<String>,
    pub approval_token_hash: Option<String>,
    pub approval_expires_at: Option<i64>,
    pub session_token_hash: Option<String>,
    pub session_expires_at: Option<i64>,
    pub disputed: bool,
    /// The domain's `TransactionState` as JSON.
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub authorized_at: Option<i64>,
    pub captured_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub version: i64,
}

impl TransactionRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            connection_id: r.try_get("connection_id")?,
            status: r.try_get("status")?,
            intent: r.try_get("intent")?,
            amount: r.try_get("amount")?,
            currency: r.try_get("currency")?,
            country: r.try_get("country")?,
            authorized_amount: r.try_get("authorized_amount")?,
            captured_amount: r.try_get("captured_amount")?,
            refunded_amount: r.try_get("refunded_amount")?,
            external_identifier: r.try_get("external_identifier")?,
            metadata: r.try_get("metadata")?,
            customid: r.try_get("customid")?,
            method: r.try_get("method")?,
            redirect_url: r.try_get("redirect_url")?,
            integration_client: r.try_get("integration_client")?,
            payment_intent_id: r.try_get("payment_intent_id")?,
            client_secret: r.try_get("client_secret")?,
            error_code: r.try_get("error_code")?,
            raw_response_code: r.try_get("raw_response_code")?,
            raw_response_description: r.try_get("raw_response_description")?,
            approval_token_hash: r.try_get("approval_token_hash")?,
            approval_expires_at: opt_i64(r, "approval_expires_at")?,
            session_token_hash: r.try_get("session_token_hash")?,
            session_expires_at: opt_i64(r, "session_expires_at")?,
            disputed: flag(r, "disputed")?,
            state: r.try_get("state")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            authorized_at: opt_i64(r, "authorized_at")?,
            captured_at: opt_i64(r, "captured_at")?,
            voided_at: opt_i64(r, "voided_at")?,
            version: r.try_get("version")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RefundRow {
    pub id: String,
    pub transaction_id: String,
    pub merchant_account_id: String,
    pub stripe_refund_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    pub raw_response_code: Option<String>,
    pub raw_response_description: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RefundRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            transaction_id: r.try_get("transaction_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            stripe_refund_id: r.try_get("stripe_refund_id")?,
            amount: r.try_get("amount")?,
            currency: r.try_get("currency")?,
            status: r.try_get("status")?,
            reason: r.try_get("reason")?,
            error_code: r.try_get("error_code")?,
            raw_response_code: r.try_get("raw_response_code")?,
            raw_response_description: r.try_get("raw_response_description")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub transaction_id: String,
    pub merchant_account_id: String,
    pub name: String,
    /// JSON.
    pub data: String,
    pub created_at: i64,
}

impl EventRow {
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            transaction_id: r.try_get("transaction_id")?,
            merchant_account_id: r.try_get("merchant_account_id")?,
            name: r.try_get("name")?,
            data: r.try_get("data")?,
            created_at: r.try_get("created_at")?,
        })
    }
}
