//! Metered permissions: the credit ledger's service (the rules are the domain's `credits`).
//!
//! Every change of a balance is a ledger row written in the transaction of its cause, beside
//! the balance row (`credit_balances`, the read model of the hot path) it changes:
//! - [`consume`]: the hot path, one conditional `UPDATE` and one `INSERT`;
//! - [`reserve`], [`commit`], [`release`]: holds that lower the available units;
//! - [`adjust`]: a correction by hand, with its reason;
//! - [`apply_purchases`]: grants of paid periods and purchases, resets at renewal, claw-backs
//!   on refunds and lost disputes, inside the entitlement evaluation that sees them;
//! - [`settle_due`]: the expiry job's part (lots and holds that ended).
//!
//! Anything but the hot path opens the balance as a [`Book`]: the row locked, ended holds
//! expired, the ledger replayed into its lots and due expiries written; then appends its
//! rows and writes the row back with every derived figure recomputed from the ledger.

use serde_json::{Value, json};
use tollgate_domain::credits::{self as dom, Entry, Kind, Lots, Overage, Per};
use tollgate_domain::entitlements::{self as ent_dom, Catalog, Ledger, Policy, Record};
use tollgate_store::Tx;
use tollgate_store::credits::{self as cs, BalanceRow, CreditDefRow, LedgerRow, ReservationRow};

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};

/// A consumption done.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub balance: i64,
    pub consumed: i64,
    pub ledger_id: String,
}

fn insufficient(balance: i64, available: i64, wanted: i64) -> ApiError {
    ApiError::InsufficientBalance {
        message: format!("Insufficient balance: {available} units available, {wanted} asked."),
        balance,
    }
}

fn entry_of(r: &LedgerRow) -> Entry {
    Entry {
        kind: Kind::parse(&r.kind).unwrap_or(Kind::Adjustment),
        units: r.units,
        lot: r.lot.clone(),
        expires_at: r.expires_at,
    }
}

/// A new ledger row of a balance (filled by the caller where it says more).
fn row(customid: &str, permission: &str, kind: Kind, units: i64, now: i64) -> LedgerRow {
    LedgerRow {
        id: tollgate_store::new_id(),
        customid: customid.to_string(),
        permission: permission.to_string(),
        kind: kind.as_str().to_string(),
        units,
        created_at: now,
        ..LedgerRow::default()
    }
}

/// The ledger row of a consumption of `units` that left the balance at `balance_after`.
pub fn consumed_row(
    customid: &str,
    permission: &str,
    units: i64,
    balance_after: i64,
    now: i64,
) -> LedgerRow {
    let mut r = row(customid, permission, Kind::Consume, -units, now);
    r.balance_after = balance_after;
    r
}

/// The outbound events a balance moving from `before` to `after` causes.
async fn balance_events(
    tx: &mut Tx<'_>,
    merchant: &str,
    b: &BalanceRow,
    before: i64,
    now: i64,
) -> ApiResult<()> {
    let after = b.balance;
    if after >= before {
        return Ok(());
    }
    let target = |name: &str| {
        json!({"type": "balance", "event": name, "customid": b.customid,
               "permission": b.permission, "balance": after, "threshold": b.low_threshold})
    };
    if let Some(t) = b.low_threshold
        && before > t
        && after <= t
        && after > 0
    {
        crate::outbound::emit(tx, merchant, "balance.low", &target("balance.low"), now).await?;
    }
    if after <= 0 && before > 0 {
        crate::outbound::emit(
            tx,
            merchant,
            "balance.depleted",
            &target("balance.depleted"),
            now,
        )
        .await?;
    }
    Ok(())
}

/// One balance opened for a change: locked, settled, its ledger replayed.
pub struct Book {
    ctx: ApiContext,
    merchant: String,
    pub row: BalanceRow,
    pub entries: Vec<LedgerRow>,
    pub lots: Lots,
    before: i64,
}

impl Book {
    /// Opens (creating at zero) the balance of `customid` for `permission`: holds ended by
    /// `now` are expired and lots ended by `lots_now` (the customer's time: a Stripe test
    /// clock's, else `now`) are expired, each with its ledger row.
    pub async fn open(
        ctx: &ApiContext,
        tx: &mut Tx<'_>,
        merchant: &str,
        customid: &str,
        permission: &str,
        now: i64,
        lots_now: i64,
    ) -> ApiResult<Book> {
        cs::ensure_balance(&mut **tx, merchant, customid, permission, now).await?;
        let lock = ctx.store.for_update();
        let current = cs::get_balance(&mut **tx, merchant, customid, permission, lock)
            .await?
            .ok_or_else(|| ApiError::Internal("credit balance row missing".into()))?;
        let released = cs::expire_holds(tx, merchant, customid, permission, now).await?;
        let entries = cs::entries(&mut **tx, merchant, customid, permission).await?;
        let lots = Lots::replay(entries.iter().map(entry_of).collect::<Vec<_>>().iter());
        let mut book = Book {
            ctx: ctx.clone(),
            merchant: merchant.to_string(),
            before: current.balance,
            row: current,
            entries,
            lots,
        };
        book.row.held = (book.row.held - released).max(0);
        // The definition's threshold (copied to the row for the hot path).
        if let Some(t) = cs::threshold(&mut **tx, merchant, permission).await? {
            book.row.low_threshold = t;
        }
        for e in book.lots.expiries(lots_now) {
            let mut r = row(customid, permission, Kind::Expiry, e.units, now);
            r.lot = e.lot.clone();
            book.append(tx, r).await?;
        }
        Ok(book)
    }

    fn sum(&self) -> i64 {
        self.entries.iter().map(|e| e.units).sum()
    }

    /// Appends a ledger row (its `balance_after` computed here).
    pub async fn append(&mut self, tx: &mut Tx<'_>, mut r: LedgerRow) -> ApiResult<LedgerRow> {
        r.balance_after = self.sum() + r.units;
        cs::insert_entry(&mut **tx, &self.merchant, &r).await?;
        let i = self.entries.len();
        self.lots.apply(&entry_of(&r), i);
        self.entries.push(r.clone());
        Ok(r)
    }

    /// Writes the balance row back, every figure derived from the ledger, and the events of
    /// its move.
    pub async fn close(mut self, tx: &mut Tx<'_>, now: i64) -> ApiResult<BalanceRow> {
        let next_hold = cs::next_hold_end(
            &mut **tx,
            &self.merchant,
            &self.row.customid,
            &self.row.permission,
        )
        .await?;
        let next_lot = self.lots.next_expiry();
        self.row.balance = self.sum();
        self.row.granted = self.lots.granted();
        self.row.consumed = self.lots.consumed();
        self.row.resets_at = next_lot;
        self.row.due_at = match (next_lot, next_hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next_hold.is_none() {
            self.row.held = 0;
        }
        self.row.updated_at = now;
        cs::put_balance(&mut **tx, &self.merchant, &self.row).await?;
        // The permission check shows the balance: its caches and streams hear of the change.
        super::runtime::note_change(&self.ctx, tx, &self.merchant, &self.row.customid, now).await?;
        balance_events(tx, &self.merchant, &self.row, self.before, now).await?;
        Ok(self.row)
    }
}

/// The metered definition of `permission`, or 404.
async fn metered(tx: &mut Tx<'_>, merchant: &str, permission: &str) -> ApiResult<CreditDefRow> {
    cs::definition(&mut **tx, merchant, permission)
        .await?
        .ok_or_else(|| ApiError::not_found("metered permission"))
}

/// Consumes `units` (> 0) of `customid`'s balance of `permission`, atomically, in a
/// transaction of its own.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    ctx: &ApiContext,
    merchant: &str,
    permission: &str,
    customid: &str,
    units: i64,
    overage: Overage,
    metadata: Option<&Value>,
) -> ApiResult<Consumed> {
    let mut tx = ctx.store.begin().await?;
    let now = ctx.now();
    let done = consume_in(
        ctx, &mut tx, now, merchant, permission, customid, units, overage, metadata,
    )
    .await;
    // A refusal keeps the expiries settled on the way.
    if matches!(done, Ok(_) | Err(ApiError::InsufficientBalance { .. })) {
        tollgate_store::commit(tx).await?;
    }
    done
}

/// [`consume`] inside `tx`, which the caller commits, also after an `insufficient_balance`
/// refusal (the expiries settled on the way are kept). Several consumptions may share one
/// transaction (the group commit of consumes on SQLite).
#[allow(clippy::too_many_arguments)]
pub async fn consume_in(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    now: i64,
    merchant: &str,
    permission: &str,
    customid: &str,
    units: i64,
    overage: Overage,
    metadata: Option<&Value>,
) -> ApiResult<Consumed> {
    let metadata = metadata.map(Value::to_string);
    // The hot path: enough available and nothing due.
    if let Some((balance, threshold)) =
        cs::try_consume(&mut **tx, merchant, customid, permission, units, now).await?
    {
        let mut r = consumed_row(customid, permission, units, balance, now);
        r.metadata = metadata;
        cs::insert_entry(&mut **tx, merchant, &r).await?;
        let before = balance + units;
        if threshold.is_some_and(|t| before > t && balance <= t) || balance == 0 {
            let b = BalanceRow {
                customid: customid.to_string(),
                permission: permission.to_string(),
                balance,
                held: 0,
                granted: 0,
                consumed: 0,
                due_at: None,
                resets_at: None,
                low_threshold: threshold,
                updated_at: now,
            };
            balance_events(tx, merchant, &b, before, now).await?;
        }
        super::runtime::note_change(ctx, tx, merchant, customid, now).await?;
        return Ok(Consumed {
            balance,
            consumed: units,
            ledger_id: r.id,
        });
    }
    // Not enough, something due, or no balance yet: under the balance's lock.
    metered(tx, merchant, permission).await?;
    let mut book = Book::open(ctx, tx, merchant, customid, permission, now, now).await?;
    let available = book.sum() - book.row.held;
    let n = match dom::take(available, units, overage) {
        Ok(n) => n,
        Err(e) => {
            let balance = book.sum();
            // Expiries settled on the way are kept.
            book.close(tx, now).await?;
            return Err(insufficient(balance, e.available, units));
        }
    };
    // `allow`: the units beyond the balance are overage, on the ledger row (its shortfall) and
    // queued for the permission's Stripe meter (crate::credits_meter).
    let over = if overage == Overage::Allow {
        units - n
    } else {
        0
    };
    let mut r = row(customid, permission, Kind::Consume, -n, now);
    r.metadata = metadata;
    r.shortfall = over;
    let r = book.append(tx, r).await?;
    if over > 0 {
        crate::credits_meter::record_overage(tx, merchant, permission, customid, &r.id, over, now)
            .await?;
    }
    let b = book.close(tx, now).await?;
    Ok(Consumed {
        balance: b.balance,
        consumed: n + over,
        ledger_id: r.id,
    })
}

/// Holds `units` of a balance for `expires_in_secs`.
pub async fn reserve(
    ctx: &ApiContext,
    merchant: &str,
    permission: &str,
    customid: &str,
    units: i64,
    expires_in_secs: i64,
) -> ApiResult<(ReservationRow, BalanceRow)> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    metered(&mut tx, merchant, permission).await?;
    let mut book = Book::open(ctx, &mut tx, merchant, customid, permission, now, now).await?;
    let balance = book.sum();
    let available = balance - book.row.held;
    if available < units {
        book.close(&mut tx, now).await?;
        tollgate_store::commit(tx).await?;
        return Err(insufficient(balance, available, units));
    }
    let r = ReservationRow {
        id: format!("rsv_{}", uuid::Uuid::now_v7().simple()),
        customid: customid.to_string(),
        permission: permission.to_string(),
        units,
        status: "held".into(),
        expires_at: now.saturating_add(expires_in_secs.saturating_mul(1000)),
        committed_units: None,
        ledger_id: None,
        created_at: now,
        updated_at: now,
    };
    cs::insert_reservation(&mut *tx, merchant, &r).await?;
    book.row.held += units;
    let b = book.close(&mut tx, now).await?;
    tollgate_store::commit(tx).await?;
    Ok((r, b))
}

/// The reservation `id` of `permission`, held, under its balance's lock (or why not).
async fn open_reservation(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    merchant: &str,
    permission: &str,
    id: &str,
    now: i64,
) -> ApiResult<(ReservationRow, Book)> {
    let r = cs::get_reservation(&mut **tx, merchant, permission, id)
        .await?
        .ok_or_else(|| ApiError::not_found("reservation"))?;
    let book = Book::open(ctx, tx, merchant, &r.customid, permission, now, now).await?;
    // Read again: opening the book may have expired it.
    let r = cs::get_reservation(&mut **tx, merchant, permission, id)
        .await?
        .ok_or_else(|| ApiError::not_found("reservation"))?;
    Ok((r, book))
}

fn not_held(r: &ReservationRow) -> ApiError {
    ApiError::DuplicateRecord(format!(
        "The reservation '{}' is {} and can no longer be committed or released.",
        r.id, r.status
    ))
}

/// Commits a held reservation: consumes `units` (default: all it holds; at most that, and at
/// most the balance, which a claw-back may have lowered under the hold) and frees the rest.
pub async fn commit(
    ctx: &ApiContext,
    merchant: &str,
    permission: &str,
    id: &str,
    units: Option<i64>,
) -> ApiResult<(ReservationRow, Consumed)> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let (mut r, mut book) = open_reservation(ctx, &mut tx, merchant, permission, id, now).await?;
    if r.status != "held" {
        let e = not_held(&r);
        book.close(&mut tx, now).await?;
        tollgate_store::commit(tx).await?;
        return Err(e);
    }
    let wanted = units.unwrap_or(r.units);
    if wanted > r.units {
        return Err(ApiError::field(
            "/units",
            format!("At most the {} units the reservation holds.", r.units),
        ));
    }
    let n = wanted.min(book.sum()).max(0);
    book.row.held = (book.row.held - r.units).max(0);
    let mut ledger_id = None;
    if n > 0 {
        let mut e = row(&r.customid, permission, Kind::Consume, -n, now);
        e.reservation_id = Some(r.id.clone());
        let e = book.append(&mut tx, e).await?;
        ledger_id = Some(e.id);
    }
    cs::close_reservation(
        &mut *tx,
        merchant,
        &r.id,
        "committed",
        Some(n),
        ledger_id.as_deref(),
        now,
    )
    .await?;
    let b = book.close(&mut tx, now).await?;
    tollgate_store::commit(tx).await?;
    r.status = "committed".into();
    r.committed_units = Some(n);
    r.ledger_id = ledger_id.clone();
    r.updated_at = now;
    Ok((
        r,
        Consumed {
            balance: b.balance,
            consumed: n,
            ledger_id: ledger_id.unwrap_or_default(),
        },
    ))
}

/// Releases a held reservation: its units are available again.
pub async fn release(
    ctx: &ApiContext,
    merchant: &str,
    permission: &str,
    id: &str,
) -> ApiResult<(ReservationRow, BalanceRow)> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let (mut r, mut book) = open_reservation(ctx, &mut tx, merchant, permission, id, now).await?;
    if r.status != "held" {
        let e = not_held(&r);
        book.close(&mut tx, now).await?;
        tollgate_store::commit(tx).await?;
        return Err(e);
    }
    book.row.held = (book.row.held - r.units).max(0);
    cs::close_reservation(&mut *tx, merchant, &r.id, "released", None, None, now).await?;
    let b = book.close(&mut tx, now).await?;
    tollgate_store::commit(tx).await?;
    r.status = "released".into();
    r.updated_at = now;
    Ok((r, b))
}

/// An adjustment by hand: `units` (≠ 0) added or taken, with its reason. A positive one is a
/// lot of its own that never ends; a negative one may not take more than is available.
pub async fn adjust(
    ctx: &ApiContext,
    merchant: &str,
    permission: &str,
    customid: &str,
    units: i64,
    reason: &str,
    by: &str,
) -> ApiResult<(LedgerRow, BalanceRow)> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    metered(&mut tx, merchant, permission).await?;
    let mut book = Book::open(ctx, &mut tx, merchant, customid, permission, now, now).await?;
    let balance = book.sum();
    let available = balance - book.row.held;
    if units < 0 && available < -units {
        book.close(&mut tx, now).await?;
        tollgate_store::commit(tx).await?;
        return Err(insufficient(balance, available, -units));
    }
    let mut e = row(customid, permission, Kind::Adjustment, units, now);
    if units > 0 {
        e.lot = Some(e.id.clone());
    }
    e.reason = Some(reason.to_string());
    e.source = Some(by.to_string());
    let e = book.append(&mut tx, e).await?;
    let b = book.close(&mut tx, now).await?;
    tollgate_store::commit(tx).await?;
    Ok((e, b))
}

/// Settles balances whose lots or holds have ended (the expiry job); returns how many.
pub async fn settle_due(ctx: &ApiContext) -> ApiResult<usize> {
    let now = ctx.now();
    let due = cs::due_balances(ctx.store.reader(), now, 200).await?;
    for (merchant, customid, permission) in &due {
        let mut tx = ctx.store.begin().await?;
        let book = Book::open(ctx, &mut tx, merchant, customid, permission, now, now).await?;
        book.close(&mut tx, now).await?;
        tollgate_store::commit(tx).await?;
    }
    Ok(due.len())
}

/// A lot a purchase should have given.
struct Want {
    permission: String,
    lot: String,
    units: i64,
    expires_at: Option<i64>,
    source: String,
    /// The subscription whose other period lots end when this one starts.
    resets: Option<String>,
}

/// What a customer's purchases mean for its balances, in the transaction of the evaluation
/// that sees them (`now`: the customer's time in seconds, a test clock's when it has one):
/// a lot per paid period (`per: period`) or per purchase (`per: purchase`) not granted yet;
/// a new period ends the subscription's earlier period lots unless the permission rolls over;
/// a purchase taken back (refunded, lost dispute) claws back what its lots still hold.
#[allow(clippy::too_many_arguments)]
pub async fn apply_purchases(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    merchant: &str,
    customid: &str,
    defs: &[CreditDefRow],
    ledger: &Ledger,
    catalog: &Catalog,
    policy: &Policy,
    now: i64,
) -> ApiResult<()> {
    if defs.is_empty() {
        return Ok(());
    }
    let grants = ent_dom::grants(ledger, policy, now);
    let mut wants: Vec<Want> = Vec::new();
    let mut taken_back: Vec<(String, String)> = Vec::new();
    for def in defs {
        for cs_sku in &def.skus {
            let Some(sku) = catalog.skus.iter().find(|s| s.identifier == cs_sku.sku) else {
                continue;
            };
            let per = Per::parse(&cs_sku.per).unwrap_or(Per::Purchase);
            for g in &grants {
                let by_product = g.products.contains(&sku.product_id);
                let by_sku = g
                    .sku
                    .as_deref()
                    .is_some_and(|k| k == sku.identifier || k == sku.product_id);
                if !(by_product || by_sku) {
                    continue;
                }
                if g.code == ent_dom::code::REVOKED {
                    taken_back.push((def.permission.clone(), g.source.clone()));
                    continue;
                }
                if !g.held {
                    continue;
                }
                let sub = ledger.records().find_map(|r| match r {
                    Record::Subscription(s) if s.id == g.source => Some(s),
                    _ => None,
                });
                match (per, sub) {
                    (Per::Period, Some(s)) => {
                        if !matches!(g.code, ent_dom::code::RENEWING | ent_dom::code::CANCELING) {
                            continue;
                        }
                        let start = s.current_period_start.unwrap_or(s.created);
                        let end = s.current_period_end.map(|e| e.saturating_mul(1000));
                        wants.push(Want {
                            permission: def.permission.clone(),
                            lot: dom::period_lot(&s.id, start),
                            units: cs_sku.units,
                            expires_at: if def.rollover { None } else { end },
                            source: s.id.clone(),
                            resets: (!def.rollover).then(|| s.id.clone()),
                        });
                    }
                    _ => wants.push(Want {
                        permission: def.permission.clone(),
                        lot: g.source.clone(),
                        units: cs_sku.units,
                        expires_at: cs_sku
                            .expires_in_secs
                            .map(|s| g.as_of.saturating_add(s).saturating_mul(1000)),
                        source: g.source.clone(),
                        resets: None,
                    }),
                }
            }
        }
    }
    if wants.is_empty() && taken_back.is_empty() {
        return Ok(());
    }
    let real_now = ctx.now();
    let lots_now = now.saturating_mul(1000).max(real_now);
    let mut permissions: Vec<&str> = wants
        .iter()
        .map(|w| w.permission.as_str())
        .chain(taken_back.iter().map(|t| t.0.as_str()))
        .collect();
    permissions.sort_unstable();
    permissions.dedup();
    for permission in permissions {
        let mut book =
            Book::open(ctx, tx, merchant, customid, permission, real_now, lots_now).await?;
        for w in wants.iter().filter(|w| w.permission == permission) {
            if book.lots.get(&w.lot).is_some() {
                continue;
            }
            // A new period: the subscription's earlier period lots end now.
            if let Some(sub) = &w.resets {
                let prefix = format!("{sub}@");
                let ended: Vec<(String, i64)> = book
                    .lots
                    .all()
                    .into_iter()
                    .filter(|l| !l.closed && l.key.starts_with(&prefix))
                    .map(|l| (l.key.clone(), l.remaining))
                    .collect();
                for (key, remaining) in ended {
                    let mut e = row(customid, permission, Kind::Expiry, -remaining, real_now);
                    e.lot = Some(key);
                    e.source = Some(sub.clone());
                    book.append(tx, e).await?;
                }
            }
            let mut e = row(customid, permission, Kind::Grant, w.units, real_now);
            e.lot = Some(w.lot.clone());
            e.expires_at = w.expires_at;
            e.source = Some(w.source.clone());
            book.append(tx, e).await?;
        }
        for (_, source) in taken_back.iter().filter(|t| t.0 == permission) {
            let prefix = format!("{source}@");
            let keys: Vec<String> = book
                .lots
                .all()
                .into_iter()
                .filter(|l| !l.closed && (l.key == *source || l.key.starts_with(&prefix)))
                .map(|l| l.key.clone())
                .collect();
            for key in keys {
                if let Some((c, shortfall)) = book.lots.clawback(&key) {
                    let mut e = row(customid, permission, Kind::Clawback, c.units, real_now);
                    e.lot = Some(key);
                    e.shortfall = shortfall;
                    e.source = Some(source.clone());
                    book.append(tx, e).await?;
                }
            }
        }
        book.close(tx, real_now).await?;
    }
    Ok(())
}
