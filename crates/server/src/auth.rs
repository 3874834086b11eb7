//! API keys (SPEC §8): `tg_sk_<id>_<secret>` (secret, server-side) and `tg_pk_<id>_<secret>`
//! (public, permission reads only). The id is a non-secret lookup prefix; the secret is 256
//! random bits, stored as SHA-256 and compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiContext;
use crate::error::ApiError;
use tollgate_store::ApiKeyRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Public,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Public => "public",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Secret => "tg_sk_",
            KeyKind::Public => "tg_pk_",
        }
    }
}

/// A new key: (row to store, the full key to show once).
pub fn new_key(
    kind: KeyKind,
    merchant_account_id: Option<&str>,
    display_name: Option<&str>,
    now: i64,
) -> (ApiKeyRow, String) {
    let mut id_bytes = [0u8; 9];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id_bytes);
    rand::rng().fill_bytes(&mut secret);
    let id = URL_SAFE_NO_PAD.encode(id_bytes).replace(['-', '_'], "x");
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let full = format!("{}{id}_{secret}", kind.prefix());
    let row = ApiKeyRow {
        id: id.clone(),
        merchant_account_id: merchant_account_id.map(str::to_string),
        kind: kind.as_str().to_string(),
        secret_hash: hash(&secret),
        display_name: display_name.map(str::to_string),
        created_at: now,
        revoked_at: None,
    };
    (row, full)
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented key into (kind, id, secret).
fn split(key: &str) -> Option<(KeyKind, &str, &str)> {
    let (kind, rest) = if let Some(r) = key.strip_prefix("tg_sk_") {
        (KeyKind::Secret, r)
    } else if let Some(r) = key.strip_prefix("tg_pk_") {
        (KeyKind::Public, r)
    } else {
        return None;
    };
    let (id, secret) = rest.split_once('_')?;
    Some((kind, id, secret))
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub kind: KeyKind,
    /// The merchant account this request acts for.
    pub merchant_account_id: String,
    /// The key may act for every merchant account.
    pub operator: bool,
}

impl Caller {
    /// Secret-key endpoints refuse public keys (403: the key is valid, the action is not).
    pub fn require_secret(&self) -> Result<(), ApiError> {
        match self.kind {
            KeyKind::Secret => Ok(()),
            KeyKind::Public => Err(ApiError::Forbidden(
                "A public key can only read permissions; use a secret key.".into(),
            )),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        self.require_secret()?;
        if self.operator {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "This action needs an operator key.".into(),
            ))
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized("No valid API authentication found".into())
}

/// The key of `Authorization: Bearer tg_…`, split into (kind, id, secret).
pub(crate) fn presented_key(headers: &HeaderMap) -> Result<(KeyKind, &str, &str), ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(unauthorized)?
        .trim();
    split(key).ok_or_else(unauthorized)
}

/// The stored key `row` if `secret` is its secret (constant-time), it is not revoked and it is
/// of `kind`.
pub(crate) fn verify_key(
    row: Option<ApiKeyRow>,
    kind: KeyKind,
    secret: &str,
) -> Result<ApiKeyRow, ApiError> {
    let row = row.ok_or_else(unauthorized)?;
    let matches: bool = hash(secret)
        .as_bytes()
        .ct_eq(row.secret_hash.as_bytes())
        .into();
    if !matches || row.revoked_at.is_some() || row.kind != kind.as_str() {
        return Err(unauthorized());
    }
    Ok(row)
}

/// The merchant account a key acts for: its own, or for an operator key the one named by
/// `X-Merchant-Account-Id` (alias `x-gr4vy-merchant-account-id`; default `default`).
pub(crate) fn acting_account(row: &ApiKeyRow, headers: &HeaderMap) -> Result<String, ApiError> {
    // A value that is not text names no account (it never falls back to the default).
    let asked = headers
        .get("x-merchant-account-id")
        .or_else(|| headers.get("x-gr4vy-merchant-account-id"))
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let asked = asked.as_deref();
    Ok(match (&row.merchant_account_id, asked) {
        (Some(bound), None) => bound.clone(),
        (Some(bound), Some(asked)) if bound == asked => bound.clone(),
        (Some(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "This key is bound to another merchant account.".into(),
            ));
        }
        (None, Some(asked)) => asked.to_string(),
        (None, None) => crate::DEFAULT_MERCHANT_ACCOUNT.to_string(),
    })
}

/// An operator key may name any merchant account that exists; one that does not is a 404 (never
/// another account's data, nor the defaults of an account that is not there). A key bound to
/// an account acts for that account, which exists.
pub(crate) async fn account_exists(
    ctx: &ApiContext,
    row: &ApiKeyRow,
    merchant_account_id: &str,
) -> Result<(), ApiError> {
    if row.merchant_account_id.is_some() {
        return Ok(());
    }
    let known = &ctx.known_accounts;
    if known.has(merchant_account_id) {
        return Ok(());
    }
    if tollgate_store::accounts::get_merchant_account(ctx.store.reader(), merchant_account_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "There is no merchant account '{merchant_account_id}'."
        )));
    }
    known.add(merchant_account_id);
    Ok(())
}

/// Merchant accounts a server has seen exist. An account is never deleted, so one seen once
/// exists for good: an operator key's request does not read it again (one read of the
/// database fewer on every request of an operator key). Accounts not found are not kept (one
/// may be created at any moment, by this process or another).
#[derive(Default)]
pub struct KnownAccounts {
    ids: std::sync::RwLock<std::collections::HashSet<String>>,
}

/// Accounts kept at most (past it, the set starts over).
const MAX_KNOWN_ACCOUNTS: usize = 10_000;

impl KnownAccounts {
    fn has(&self, id: &str) -> bool {
        self.ids.read().is_ok_and(|ids| ids.contains(id))
    }

    fn add(&self, id: &str) {
        if let Ok(mut ids) = self.ids.write() {
            if ids.len() >= MAX_KNOWN_ACCOUNTS {
                ids.clear();
            }
            ids.insert(id.to_string());
        }
    }
}

/// The stored row of key `id`, from the permission check's key cache while fresh (at most
/// `auth_cache_ms` old; `0`: read on every request). The secret is still verified against the
/// row on every request. A key revoked by this server is replaced in the cache at once
/// ([`forget_revoked`]); one revoked by another process (`tollgate keys revoke`, another
/// server on the same database) stops working within `auth_cache_ms`.
async fn key_row(ctx: &ApiContext, id: &str) -> Result<Option<ApiKeyRow>, ApiError> {
    if let Some(row) = ctx.entitlements.cached_key(id) {
        return Ok(row);
    }
    let row = tollgate_store::accounts::get_api_key(ctx.store.reader(), id).await?;
    // Only keys that exist are kept: ids nobody issued do not fill the cache.
    if row.is_some() {
        ctx.entitlements.put_key(id, row.clone());
    }
    Ok(row)
}

/// After this server revoked key `row` at `revoked_at` (or found it revoked): the cache holds
/// it revoked, so the next request with it is refused (by the secret-key endpoints and the
/// permission check).
pub(crate) fn forget_revoked(ctx: &ApiContext, mut row: ApiKeyRow, revoked_at: i64) {
    row.revoked_at = row.revoked_at.or(Some(revoked_at));
    let id = row.id.clone();
    ctx.entitlements.put_key(&id, Some(row));
}

/// Extracts the caller from `Authorization: Bearer tg_…` and `X-Merchant-Account-Id`
/// (alias `x-gr4vy-merchant-account-id`). Cookies are never read here.
impl FromRequestParts<ApiContext> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        let (kind, id, secret) = presented_key(&parts.headers)?;
        let row = key_row(ctx, id).await?;
        let row = verify_key(row, kind, secret)?;
        let merchant_account_id = acting_account(&row, &parts.headers)?;
        let operator = row.merchant_account_id.is_none();
        account_exists(ctx, &row, &merchant_account_id).await?;
        Ok(Caller {
            key_id: row.id,
            kind,
            merchant_account_id,
            operator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_hash() {
        let (row, full) = new_key(KeyKind::Secret, Some("default"), None, 0);
        let (kind, id, secret) = split(&full).unwrap();
        assert_eq!(kind, KeyKind::Secret);
        assert_eq!(id, row.id);
        assert_eq!(hash(secret), row.secret_hash);
        assert!(full.len() > 50);
        assert!(split("sk_test_123").is_none());
    }
}
