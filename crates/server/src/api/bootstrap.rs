//! First start (SPEC §11): the default merchant account, the built-in sandbox's connection with
//! its webhook endpoint registered, and a first secret key written to a 0600 file.

use tollgate_store::{ConnectionRow, accounts, connections};

use crate::auth::{KeyKind, new_key};
use crate::crypto::mask;
use crate::startup::{Result, err};
use crate::{ApiContext, DEFAULT_MERCHANT_ACCOUNT, SandboxHandle};

pub async fn default_merchant(ctx: &ApiContext) -> Result<()> {
    let found = accounts::get_merchant_account(ctx.store.reader(), DEFAULT_MERCHANT_ACCOUNT)
        .await
        .map_err(|e| err(e.to_string()))?;
    if found.is_none() {
        match accounts::insert_merchant_account(
            ctx.store.writer(),
            DEFAULT_MERCHANT_ACCOUNT,
            "Default",
            ctx.now(),
        )
        .await
        {
            Ok(()) => {}
            // Another server on the same database made it first.
            Err(e) if e.is_unique_violation() => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Ok(())
}

/// Creates (or refreshes: the in-process sandbox has new keys and a new endpoint secret at
/// every start) the default merchant account's sandbox connection.
pub async fn sandbox_connection(ctx: &ApiContext, sb: &SandboxHandle) -> Result<()> {
    default_merchant(ctx).await?;
    let now = ctx.now();
    let existing = connections::list(ctx.store.reader(), Some(DEFAULT_MERCHANT_ACCOUNT))
        .await
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .find(|c| c.sandbox);
    let mut c = match existing {
        Some(c) => c,
        None => ConnectionRow {
            id: tollgate_store::new_id(),
            merchant_account_id: DEFAULT_MERCHANT_ACCOUNT.into(),
            kind: "stripe".into(),
            display_name: "Stripe sandbox".into(),
            secret_key_enc: Vec::new(),
            secret_key_hint: String::new(),
            publishable_key: None,
            webhook_secret_enc: None,
            webhook_secret_old_enc: None,
            webhook_secret_old_expires_at: None,
            stripe_account: None,
            api_version: None,
            sandbox: true,
            is_default: false,
            created_at: now,
            updated_at: now,
        },
    };
    let fresh = c.secret_key_enc.is_empty();
    c.secret_key_enc = ctx.keys.seal(&c.id, &sb.secret_key);
    c.secret_key_hint = mask(&sb.secret_key);
    c.publishable_key = Some(sb.publishable_key.clone());
    let url = format!("{}/webhooks/stripe/{}", ctx.public_url, c.id);
    let (_endpoint, secret) = (sb.register_webhook)(&url);
    c.webhook_secret_old_enc = None;
    c.webhook_secret_old_expires_at = None;
    c.webhook_secret_enc = Some(ctx.keys.seal(&c.id, &secret));
    c.updated_at = now;
    let has_default = connections::default_for(ctx.store.reader(), DEFAULT_MERCHANT_ACCOUNT)
        .await
        .map_err(|e| err(e.to_string()))?
        .is_some();
    if !has_default {
        c.is_default = true;
    }
    let mut tx = ctx.store.begin().await.map_err(|e| err(e.to_string()))?;
    if fresh {
        connections::insert(&mut *tx, &c)
            .await
            .map_err(|e| err(e.to_string()))?;
    } else {
        connections::update(&mut *tx, &c)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    tx.commit().await.map_err(|e| err(e.to_string()))?;
    tracing::info!(connection = %c.id, "sandbox connection ready");
    Ok(())
}

/// With no API key at all, makes an operator secret key and writes it to
/// `{data_dir}/first-secret-key` (mode 0600); the path, not the key, is printed.
pub async fn first_key(ctx: &ApiContext) -> Result<()> {
    default_merchant(ctx).await?;
    let keys = accounts::list_api_keys(ctx.store.reader(), None)
        .await
        .map_err(|e| err(e.to_string()))?;
    if !keys.is_empty() {
        return Ok(());
    }
    let (row, full) = new_key(KeyKind::Secret, None, Some("first key"), ctx.now());
    let path = ctx.config.data_dir.join("first-secret-key");
    crate::write_private(&path, &format!("{full}\n"))?;
    accounts::insert_api_key(ctx.store.writer(), &row)
        .await
        .map_err(|e| err(e.to_string()))?;
    crate::say(format_args!(
        "first secret API key written to {}",
        path.display()
    ));
    Ok(())
}
