//! Background jobs: approval expiry (SPEC §3.3 item 6), pruning of idempotency records (and
//! sealing the answers older versions kept in clear), the permission cache's feed and, on
//! SQLite, WAL checkpoints beside the writer.
//! Each pass works from the database, so several servers may run them side by side: a second
//! server expiring the same transaction finds it already final and does nothing.

use std::time::Duration;

use tollgate_store::{idempotency, transactions as store_tx};

use crate::ApiContext;
use crate::transactions::expire_approval;

pub fn spawn(ctx: ApiContext) {
    crate::entitlements::spawn_expiry(ctx.clone());
    crate::entitlements::spawn_cache_feed(ctx.clone());
    crate::credits_meter::spawn(ctx.clone());
    if ctx.store.backend() == tollgate_store::Backend::Sqlite {
        let store = ctx.store.clone();
        tokio::spawn(async move {
            loop {
                // Often, so that what is left when the writer must checkpoint itself (see
                // `wal_autocheckpoint` in `tollgate_store`) is small, and each sync short.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "SQLite checkpoint failed");
                }
            }
        });
    }
    tokio::spawn(async move {
        let every = Duration::from_millis(ctx.config.expiry_interval_ms.max(50));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = expire_once(&ctx).await {
                tracing::warn!(error = %e, "approval expiry pass failed");
            }
            let _ = idempotency::prune(ctx.store.writer(), ctx.now()).await;
            if let Err(e) = crate::idempotency::seal_clear_answers(&ctx).await {
                tracing::warn!(error = %e, "sealing stored idempotent answers failed");
            }
        }
    });
}

/// Ends every approval past its deadline; returns how many were looked at.
pub async fn expire_once(ctx: &ApiContext) -> Result<usize, crate::error::ApiError> {
    let due = store_tx::expired_approvals(ctx.store.reader(), ctx.now(), 100).await?;
    for t in &due {
        match expire_approval(ctx, t).await {
            Ok(row) => {
                tracing::info!(transaction = %row.id, status = %row.status, "approval expired")
            }
            Err(e) => {
                tracing::warn!(transaction = %t.id, error = %e, "expiring an approval failed; will retry")
            }
        }
    }
    Ok(due.len())
}
