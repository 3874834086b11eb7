//! In-process helpers of the permission check (the hot path, SPEC §5.4) and of the webhook
//! receiver: a short-lived cache of API keys, account settings and connections, the per key
//! and client address token buckets of the public rate limit, and a cache of customers'
//! permission rows.
//!
//! A cached key, setting or connection is at most `auth_cache_ms` old: every API request's key
//! (secret and public) is served from here, its secret still compared on each request; a key
//! revoked in this server's dashboard is refused at once, one revoked by another process (the
//! CLI, another server on the same database) within that time. The webhook receiver reads a
//! connection again before it refuses an event, see [`Runtime::cached_connection`].
//!
//! The permission cache holds the read model's rows (never an evaluated answer: validity
//! against the clock is worked out at each check). It only serves while the server hears every
//! committed change (SQLite: the change log `ent_permission_changes`; PostgreSQL: LISTEN/NOTIFY;
//! see [`super::spawn_cache_feed`]), and it is kept right like this:
//! - a re-evaluation that rewrites a customer marks the customer *pending* before its
//!   transaction commits: a pending customer is neither served nor stored;
//! - the feed hears the commit and forgets the customer (and one pending mark); a change made
//!   by another process (`tollgate stripe sync`, a second server) is heard the same way;
//! - a read stores its rows only if no mark or change came in since it began (the `epoch`
//!   ticket), so a read that raced a commit never stores what it read before it;
//! - a pending mark whose transaction rolled back lapses after `PENDING_LAPSE`.
//!
//! The same feed wakes the permission streams (`GET /v1/permissions/stream`): each stream
//! holds a [`Watch`] on its customer, bumped by [`Runtime::changed`] for every committed change
//! of that customer and by [`Runtime::follow`] for every customer (changes may have gone by
//! unheard while the feed was lost). A stream wakes only for its own customer's changes.
//!
//! A customer's cached rows include its balances of metered permissions (the check shows their
//! amounts): every change of a balance (a consumption, a reservation, a grant, an expiry, an
//! adjustment, a claw-back) goes through the same feed, written in its transaction by
//! [`note_change`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};

use tollgate_store::credits::{self as cs, BalanceRow};
use tollgate_store::entitlements::{self as es, PermissionRow, SettingsRow};
use tollgate_store::{ApiKeyRow, Backend, ConnectionRow, Tx};

use crate::ApiContext;
use crate::error::ApiResult;

pub struct Runtime {
    /// Tokens per second per (key, client address); 0 turns the limit off.
    rate: f64,
    burst: f64,
    keys: Fresh<Option<ApiKeyRow>>,
    settings: Fresh<SettingsRow>,
    connections: Fresh<ConnectionRow>,
    buckets: Mutex<HashMap<(String, IpAddr), Bucket>>,
    permissions: Mutex<PermissionCache>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The last change-log entry the cache has followed.
    followed: AtomicI64,
    /// The permission streams' wake-ups, per customer (see the module doc).
    watchers: Mutex<Watchers>,
    /// Set when the server shuts down: every permission stream ends (clients reconnect to
    /// another server, or to this one once it is back, with `Last-Event-ID`).
    closing: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct Watchers {
    senders: HashMap<String, tokio::sync::watch::Sender<u64>>,
    /// The number of customers after the last sweep of unwatched ones.
    swept: usize,
}

/// A permission stream's wake-up: [`Watch::changed`] returns once a change of its customer
/// committed after the watch began (or the change feed was lost and found again).
pub struct Watch {
    rx: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
}

/// Why a [`Watch`] woke.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    /// A change of the customer committed (or the feed was found again): read again.
    Changed,
    /// The server is shutting down: end the stream.
    Closing,
}

impl Watch {
    /// Waits for the next change of the customer, or the server's shutdown.
    pub async fn changed(&mut self) -> Woke {
        if *self.closing.borrow() {
            return Woke::Closing;
        }
        let mut closing = self.closing.clone();
        let closed = async move {
            // The guard wait_for hands back is dropped here, not held across an await.
            let _ = closing.wait_for(|c| *c).await.is_ok();
        };
        tokio::select! {
            r = self.rx.changed() => match r {
                Ok(()) => Woke::Changed,
                // Not while a watch holds the channel; should it happen, only shutdown wakes.
                Err(_) => {
                    let mut closing = self.closing.clone();
                    let _ = closing.wait_for(|c| *c).await.is_ok();
                    Woke::Closing
                }
            },
            () = closed => Woke::Closing,
        }
    }
}

/// A customer as the permission check reads it: its permission rows (by identifier) and its
/// balances of metered permissions (by permission), as the read model holds them.
#[derive(Debug, Clone, Default)]
pub struct CustomerRows {
    pub permissions: Vec<PermissionRow>,
    pub balances: Vec<BalanceRow>,
}

/// A customer's rows, shared by the cache and the checks that read them.
pub type Rows = Arc<CustomerRows>;

/// A customer's rows for the check and its stream: from the permission cache when it holds
/// them, else read from the database (and stored when nothing changed meanwhile).
pub async fn read(ctx: &ApiContext, merchant: &str, customid: &str) -> ApiResult<Rows> {
    match ctx.entitlements.cached_permissions(merchant, customid) {
        Cached::Hit(rows) => Ok(rows),
        Cached::Miss(ticket) => {
            let permissions = es::permissions_of(ctx.store.reader(), merchant, customid).await?;
            let balances = cs::balances_of(ctx.store.reader(), merchant, customid).await?;
            let rows = Arc::new(CustomerRows {
                permissions,
                balances,
            });
            ctx.entitlements
                .put_permissions(merchant, customid, rows.clone(), ticket);
            Ok(rows)
        }
    }
}

/// Tells every server's permission cache and streams that what the check answers for
/// `customid` changes in this transaction (a balance moved): the change log (SQLite) or a
/// notification (PostgreSQL), heard once the transaction commits; here the customer is not
/// served from the cache until then.
pub async fn note_change(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    merchant: &str,
    customid: &str,
    now: i64,
) -> ApiResult<()> {
    match ctx.store.backend() {
        Backend::Sqlite => es::note_permission_change(&mut **tx, merchant, customid, now).await?,
        Backend::Postgres => {
            // Every call marks the customer pending once, and each mark waits to be heard: a
            // re-evaluation and a balance, or two balances, may change in one transaction, and
            // PostgreSQL would deliver identical notifications of it once.
            let nth = NOTICES.fetch_add(1, Ordering::Relaxed);
            es::notify_permission_change_nth(&mut **tx, merchant, customid, nth).await?
        }
    }
    ctx.entitlements.invalidate(merchant, customid);
    Ok(())
}

/// Notifications sent by [`note_change`] (their payloads' distinguishing counter).
static NOTICES: AtomicU16 = AtomicU16::new(0);

#[derive(Default)]
struct PermissionCache {
    /// Serving: the change log is being followed.
    live: bool,
    /// Bumped by every mark and change: a read stores its rows only under the epoch it began in.
    epoch: u64,
    rows: HashMap<String, Rows>,
    /// Customers rewritten by a transaction of this process not yet seen committed: (marks, when).
    pending: HashMap<String, (u32, Instant)>,
}

/// Rows kept for at most a time-to-live (none at all when it is zero).
struct Fresh<V> {
    ttl: Duration,
    rows: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Fresh<V> {
    fn new(ttl_ms: u64) -> Fresh<V> {
        Fresh {
            ttl: Duration::from_millis(ttl_ms),
            rows: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let rows = self.rows.lock().ok()?;
        let (at, row) = rows.get(key)?;
        (at.elapsed() < self.ttl).then(|| row.clone())
    }

    fn put(&self, key: &str, row: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut rows) = self.rows.lock() {
            if rows.len() > 10_000 {
                rows.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            rows.insert(key.to_string(), (Instant::now(), row));
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut rows) = self.rows.lock() {
            rows.remove(key);
        }
    }
}

/// Customers cached at most; past it the cache starts over.
const MAX_CACHED: usize = 250_000;
/// A pending mark whose commit never showed (its transaction rolled back) lapses after this.
const PENDING_LAPSE: Duration = Duration::from_secs(30);

fn cache_key(merchant: &str, customid: &str) -> String {
    let mut k = String::with_capacity(merchant.len() + customid.len() + 1);
    k.push_str(merchant);
    k.push('\u{0}');
    k.push_str(customid);
    k
}

/// What the permission cache holds for a customer.
pub enum Cached {
    Hit(Rows),
    /// Not held: read the database, then [`Runtime::put_permissions`] with this ticket (`None`:
    /// do not store).
    Miss(Option<u64>),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept at most; full ones are dropped first when the map grows past this.
const MAX_BUCKETS: usize = 100_000;

impl Runtime {
    pub fn new(auth_cache_ms: u64, rate_per_sec: u32, burst: u32) -> Runtime {
        Runtime {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(rate_per_sec).max(1)),
            keys: Fresh::new(auth_cache_ms),
            settings: Fresh::new(auth_cache_ms),
            connections: Fresh::new(auth_cache_ms),
            buckets: Mutex::new(HashMap::new()),
            permissions: Mutex::new(PermissionCache::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            followed: AtomicI64::new(0),
            watchers: Mutex::new(Watchers::default()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends every permission stream (the server is shutting down: a graceful shutdown waits
    /// for open responses, and a stream never ends by itself).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Starts watching a customer's committed permission changes. Take the watch before reading
    /// the customer's permissions: a change committed after the read is then never missed.
    pub fn watch(&self, merchant: &str, customid: &str) -> Option<Watch> {
        let mut w = self.watchers.lock().ok()?;
        // Channels nobody watches any more are dropped once the map doubled since the last
        // sweep (a stream's receiver goes with its connection).
        if w.senders.len() >= 2 * w.swept.max(512) {
            w.senders.retain(|_, tx| tx.receiver_count() > 0);
            w.swept = w.senders.len();
        }
        let tx = w
            .senders
            .entry(cache_key(merchant, customid))
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        let mut rx = tx.subscribe();
        rx.mark_unchanged();
        Some(Watch {
            rx,
            closing: self.closing.subscribe(),
        })
    }

    /// The number of customers watched (streams open on them), for `/metrics` and tests.
    pub fn watched(&self) -> usize {
        self.watchers.lock().map_or(0, |w| {
            w.senders
                .values()
                .filter(|tx| tx.receiver_count() > 0)
                .count()
        })
    }

    /// Wakes the streams of these customers.
    fn wake<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut w) = self.watchers.lock() {
            for key in keys {
                let gone = match w.senders.get(key) {
                    Some(tx) => {
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                        tx.receiver_count() == 0
                    }
                    None => false,
                };
                if gone {
                    w.senders.remove(key);
                }
            }
        }
    }

    /// Wakes every stream.
    fn wake_all(&self) {
        if let Ok(w) = self.watchers.lock() {
            for tx in w.senders.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Whether committed changes are being heard (the permission cache's feed works). While
    /// not, a permission stream reads its customer again every little while instead.
    pub fn following(&self) -> bool {
        self.permissions.lock().is_ok_and(|c| c.live)
    }

    /// A cached key row (`Some(None)`: known not to exist), if fresh.
    pub fn cached_key(&self, id: &str) -> Option<Option<ApiKeyRow>> {
        self.keys.get(id)
    }

    pub fn put_key(&self, id: &str, row: Option<ApiKeyRow>) {
        self.keys.put(id, row);
    }

    pub fn cached_settings(&self, merchant: &str) -> Option<SettingsRow> {
        self.settings.get(merchant)
    }

    pub fn put_settings(&self, row: SettingsRow) {
        self.settings.put(&row.merchant_account_id.clone(), row);
    }

    /// Forgets cached settings (after they change here).
    pub fn forget_settings(&self, merchant: &str) {
        self.settings.forget(merchant);
    }

    /// A connection the webhook receiver read lately, if fresh. The receiver only keeps
    /// connections whose secret verified an event, and reads the connection again before it
    /// refuses one (a secret rotated by another process is found that way).
    pub fn cached_connection(&self, id: &str) -> Option<ConnectionRow> {
        self.connections.get(id)
    }

    pub fn put_connection(&self, row: ConnectionRow) {
        self.connections.put(&row.id.clone(), row);
    }

    /// Forgets a cached connection (after it changes here).
    pub fn forget_connection(&self, id: &str) {
        self.connections.forget(id);
    }

    /// A customer's cached permission rows, or a ticket to store them under once read.
    pub fn cached_permissions(&self, merchant: &str, customid: &str) -> Cached {
        let Ok(c) = self.permissions.lock() else {
            return Cached::Miss(None);
        };
        if !c.live {
            return Cached::Miss(None);
        }
        let key = cache_key(merchant, customid);
        if let Some(rows) = c.rows.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Cached::Hit(rows.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Cached::Miss((!c.pending.contains_key(&key)).then_some(c.epoch))
    }

    /// Stores rows read under `ticket` unless something changed since (see the module doc).
    pub fn put_permissions(&self, merchant: &str, customid: &str, rows: Rows, ticket: Option<u64>) {
        let Some(ticket) = ticket else { return };
        let Ok(mut c) = self.permissions.lock() else {
            return;
        };
        if !c.live || c.epoch != ticket {
            return;
        }
        if c.rows.len() >= MAX_CACHED {
            c.rows.clear();
        }
        c.rows.insert(cache_key(merchant, customid), rows);
    }

    /// Called by a re-evaluation that rewrote `customid`'s permissions, before its transaction
    /// commits: the customer is not served from the cache until the commit shows in the change
    /// log.
    pub fn invalidate(&self, merchant: &str, customid: &str) {
        if let Ok(mut c) = self.permissions.lock() {
            let key = cache_key(merchant, customid);
            c.rows.remove(&key);
            let mark = c.pending.entry(key).or_insert((0, Instant::now()));
            mark.0 += 1;
            mark.1 = Instant::now();
            c.epoch += 1;
        }
    }

    /// Committed changes read from the change log: forgets those customers (and one pending
    /// mark each); lapses stale marks.
    ///
    /// Then wakes those customers' permission streams (after the cache forgot them, so a stream
    /// never reads the rows of before the change from the cache).
    pub fn changed<'a>(&self, customers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut heard: Vec<String> = Vec::new();
        if let Ok(mut c) = self.permissions.lock() {
            let mut any = false;
            for (merchant, customid) in customers {
                any = true;
                let key = cache_key(merchant, customid);
                c.rows.remove(&key);
                if let Some(mark) = c.pending.get_mut(&key) {
                    mark.0 = mark.0.saturating_sub(1);
                    if mark.0 == 0 {
                        c.pending.remove(&key);
                    }
                }
                heard.push(key);
            }
            c.pending.retain(|_, (_, at)| at.elapsed() < PENDING_LAPSE);
            if any {
                c.epoch += 1;
            }
        }
        if !heard.is_empty() {
            self.wake(&heard);
        }
    }

    /// Starts (`true`) or stops serving from the permission cache; stopping empties it (the
    /// change log can no longer be trusted to have been followed). Either way every permission
    /// stream reads its customer again (changes may have gone by unheard).
    pub fn follow(&self, live: bool) {
        if let Ok(mut c) = self.permissions.lock() {
            if !live {
                c.rows.clear();
                c.pending.clear();
            }
            c.live = live;
            c.epoch += 1;
        }
        self.wake_all();
    }

    /// Records the last change-log entry followed (shown in `/metrics`).
    pub fn followed_to(&self, seq: i64) {
        self.followed.store(seq, Ordering::Relaxed);
    }

    /// The last change-log entry followed.
    pub fn followed(&self) -> i64 {
        self.followed.load(Ordering::Relaxed)
    }

    /// (hits, misses) of the permission cache so far.
    pub fn permission_cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Takes one token of (key, address); `Err(seconds to wait)` when the bucket is empty.
    pub fn take(&self, key_id: &str, addr: IpAddr) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry((key_id.to_string(), addr)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_key_and_address() {
        let rt = Runtime::new(1000, 2, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(rt.take("k", a).is_ok());
        assert!(rt.take("k", a).is_ok());
        assert!(rt.take("k", a).is_err());
        assert!(rt.take("k", b).is_ok());
        assert!(rt.take("other", a).is_ok());
        std::thread::sleep(Duration::from_millis(600));
        assert!(rt.take("k", a).is_ok());
        let off = Runtime::new(0, 0, 0);
        for _ in 0..1000 {
            assert!(off.take("k", a).is_ok());
        }
    }

    fn rows(code: i64) -> Rows {
        Arc::new(CustomerRows {
            permissions: vec![PermissionRow {
                identifier: "premium".into(),
                is_valid: true,
                entitlement: code,
                expires_at: None,
                valid_until: None,
                skus: "[]".into(),
                updated_at: 0,
                version: 0,
            }],
            balances: Vec::new(),
        })
    }

    fn hit(rt: &Runtime, c: &str) -> Option<i64> {
        match rt.cached_permissions("m", c) {
            Cached::Hit(r) => Some(r.permissions[0].entitlement),
            Cached::Miss(_) => None,
        }
    }

    fn ticket(rt: &Runtime, c: &str) -> Option<u64> {
        match rt.cached_permissions("m", c) {
            Cached::Hit(_) => panic!("a hit"),
            Cached::Miss(t) => t,
        }
    }

    #[test]
    fn the_permission_cache_serves_only_while_following_the_log() {
        let rt = Runtime::new(1000, 0, 0);
        // Not following: nothing is stored.
        assert_eq!(ticket(&rt, "a"), None);
        rt.put_permissions("m", "a", rows(5), Some(0));
        assert_eq!(hit(&rt, "a"), None);
        rt.follow(true);
        let t = ticket(&rt, "a");
        rt.put_permissions("m", "a", rows(5), t);
        assert_eq!(hit(&rt, "a"), Some(5));
        // Customers are apart; a merchant's customid is not another's.
        assert_eq!(hit(&rt, "b"), None);
        assert!(matches!(rt.cached_permissions("n", "a"), Cached::Miss(_)));
        // Losing the log empties the cache.
        rt.follow(false);
        assert_eq!(ticket(&rt, "a"), None);
        rt.follow(true);
        assert_eq!(hit(&rt, "a"), None);
        assert_eq!(rt.permission_cache_stats().0, 1);
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_stored() {
        let rt = Runtime::new(1000, 0, 0);
        rt.follow(true);
        // A read begins, a re-evaluation marks the customer, the read ends: not stored.
        let t = ticket(&rt, "a");
        rt.invalidate("m", "a");
        rt.put_permissions("m", "a", rows(5), t);
        assert_eq!(hit(&rt, "a"), None);
        // While pending, reads get no ticket at all.
        assert_eq!(ticket(&rt, "a"), None);
        // The commit shows in the log: cacheable again.
        rt.changed([("m", "a")]);
        let t = ticket(&rt, "a");
        assert!(t.is_some());
        rt.put_permissions("m", "a", rows(4), t);
        assert_eq!(hit(&rt, "a"), Some(4));
        // A change of another process (no mark) forgets the customer, and a read that began
        // before it is not stored.
        let other = ticket(&rt, "b");
        rt.changed([("m", "a")]);
        assert_eq!(hit(&rt, "a"), None);
        rt.put_permissions("m", "b", rows(1), other);
        assert_eq!(hit(&rt, "b"), None);
        // Two marks need two commits seen.
        rt.invalidate("m", "c");
        rt.invalidate("m", "c");
        rt.changed([("m", "c")]);
        assert_eq!(ticket(&rt, "c"), None);
        rt.changed([("m", "c")]);
        assert!(ticket(&rt, "c").is_some());
        // An empty poll changes nothing: a read in flight still stores.
        let t = ticket(&rt, "d");
        rt.changed(std::iter::empty());
        rt.put_permissions("m", "d", rows(2), t);
        assert_eq!(hit(&rt, "d"), Some(2));
    }

    #[tokio::test]
    async fn a_watch_wakes_for_its_customer_the_feed_and_shutdown() {
        let rt = Runtime::new(1000, 0, 0);
        rt.follow(true);
        let mut a = rt.watch("m", "a").expect("a watch");
        let mut b = rt.watch("m", "b").expect("a watch");
        let quiet = Duration::from_millis(50);
        // Nothing yet: the watch starts after whatever came before it.
        assert!(tokio::time::timeout(quiet, a.changed()).await.is_err());
        // A change of a wakes a, not b (nor another merchant's a).
        let mut other = rt.watch("n", "a").expect("a watch");
        rt.changed([("m", "a")]);
        assert_eq!(
            tokio::time::timeout(quiet, a.changed()).await,
            Ok(Woke::Changed)
        );
        assert!(tokio::time::timeout(quiet, b.changed()).await.is_err());
        assert!(tokio::time::timeout(quiet, other.changed()).await.is_err());
        // Changes while a stream reads are not lost: they wake its next wait.
        rt.changed([("m", "b")]);
        rt.changed([("m", "b")]);
        assert_eq!(
            tokio::time::timeout(quiet, b.changed()).await,
            Ok(Woke::Changed)
        );
        assert!(tokio::time::timeout(quiet, b.changed()).await.is_err());
        // The feed lost and found: every stream reads again.
        rt.follow(false);
        assert_eq!(
            tokio::time::timeout(quiet, a.changed()).await,
            Ok(Woke::Changed)
        );
        assert_eq!(
            tokio::time::timeout(quiet, b.changed()).await,
            Ok(Woke::Changed)
        );
        assert!(!rt.following());
        rt.follow(true);
        assert!(rt.following());
        assert_eq!(rt.watched(), 3);
        // Unwatched customers' channels go.
        drop(other);
        rt.changed([("n", "a")]);
        assert_eq!(rt.watched(), 2);
        // Shutdown ends every watch, at once and for good.
        rt.close_streams();
        assert_eq!(
            tokio::time::timeout(quiet, a.changed()).await,
            Ok(Woke::Closing)
        );
        assert_eq!(
            tokio::time::timeout(quiet, b.changed()).await,
            Ok(Woke::Closing)
        );
        let mut late = rt.watch("m", "c").expect("a watch");
        assert_eq!(late.changed().await, Woke::Closing);
    }
}
