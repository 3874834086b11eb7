//! The inbox of Stripe events (SPEC §4).
//!
//! - [`Inbox::accept`] stores a verified event before the webhook is answered. Concurrent
//!   deliveries are written by one task in shared commits (group commit): an event is
//!   answered once its commit is durable (`synchronous_commit=on`; on SQLite the log is synced
//!   after the commit, see [`Held`]), and a commit carries every event that arrived while the
//!   previous one was being written, so the acknowledgement rate is not bounded by one fsync
//!   per event.
//! - Workers ([`spawn_workers`]) claim due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the
//!   single writer on SQLite) and apply a whole batch in one write transaction: every
//!   transaction change, its events and the rows' new statuses commit together. A row whose
//!   lease ran out while another worker held it is found already applied and skipped, so
//!   each event is applied once even with several servers on one database.
//! - An event that fails is retried with exponential backoff and jitter, then `dead`; a dead
//!   (or any) event can be replayed.
//!
//! Events are hints applied forward-only through the domain, so order and copies do not
//! matter; what an event means for a transaction is decided in [`plan`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tollgate_domain::{DisputeSnapshot, Observation, TransactionState, apply};
use tollgate_store::inbox::{self, InboxRow};
use tollgate_store::{
    Backend, Conn, ConnectionRow, HeldConn, RefundRow, Store, TransactionRow, Tx, connections,
    transactions as store_tx,
};

use crate::ApiContext;
use crate::entitlements::Work;
use crate::error::{ApiError, ApiResult};
use crate::stripe_map;
use crate::transactions::decide;

/// Rows written per commit at most (the rest wait for the next one).
const MAX_GROUP: usize = 512;

/// Group-commit writers on PostgreSQL, which commits several transactions at once (SQLite has
/// one writer, so one).
const PG_WRITERS: usize = 4;

/// A piece of write work run by the writer on its connection; it answers its caller itself
/// and returns whether the connection is still fit for the next piece.
type JobFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
type Job = Box<dyn for<'a> FnOnce(&'a mut Conn, Backend) -> JobFuture<'a> + Send>;

/// What a write function given to [`Inbox::write`] returns.
pub type WriteFuture<'a, R> = Pin<Box<dyn Future<Output = ApiResult<R>> + Send + 'a>>;

enum Msg {
    /// A verified event to store before its webhook is answered.
    Accept(Box<Pending>),
    /// Other write work for the next commit (SQLite only).
    Job(Job),
}

/// The inbox's front door and the bell its workers listen to.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Msg>,
    /// SQLite: the workers' writes are run by the group-commit writer, which holds the one
    /// write connection (each in its own commit, between the commits of new events).
    /// PostgreSQL: they commit on their own, in parallel with the group commits.
    shared: bool,
    store: Store,
    pub wake: Arc<Notify>,
}

impl Inbox {
    /// Starts the group-commit writer(s) for `store`.
    pub fn start(store: Store) -> Inbox {
        let (tx, rx) = mpsc::channel(8192);
        let wake = Arc::new(Notify::new());
        let shared = store.backend() == Backend::Sqlite;
        let rx = Arc::new(Mutex::new(rx));
        let writers = if shared { 1 } else { PG_WRITERS };
        for _ in 0..writers {
            let syncer = store.wal().map(|wal| Syncer::start(wal.to_path_buf()));
            let writer = group_commit(store.clone(), rx.clone(), wake.clone(), syncer);
            if shared {
                on_own_thread(writer);
            } else {
                tokio::spawn(writer);
            }
        }
        Inbox {
            tx,
            shared,
            store,
            wake,
        }
    }

    /// Stores `row` durably; `true` when it is new, `false` for a duplicate (the same event id
    /// stored already for the same connection).
    pub async fn accept(&self, row: InboxRow) -> ApiResult<bool> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Msg::Accept(Box::new(Pending { row, done })))
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(new)) => Ok(new),
            Ok(Err(e)) => Err(ApiError::Internal(format!("inbox: {e}"))),
            Err(_) => Err(stopped()),
        }
    }

    /// Runs `f` in a write transaction of its own and commits it: on SQLite by the group-commit
    /// writer (which holds the one write connection), on PostgreSQL directly.
    pub async fn write<R, F>(&self, f: F) -> ApiResult<R>
    where
        R: Send + 'static,
        F: for<'c, 'a> FnOnce(&'a mut Tx<'c>) -> WriteFuture<'a, R> + Send + 'static,
    {
        if !self.shared {
            let mut tx = self.store.begin().await?;
            let r = f(&mut tx).await?;
            tollgate_store::commit(tx).await?;
            return Ok(r);
        }
        self.run(move |conn, backend| {
            Box::pin(async move {
                let mut tx = match tollgate_store::begin_on(conn, backend).await {
                    Ok(tx) => tx,
                    Err(e) => return (Err(e.into()), false),
                };
                match f(&mut tx).await {
                    Ok(v) => match tollgate_store::commit(tx).await {
                        Ok(()) => (Ok(v), true),
                        Err(e) => (Err(ApiError::Internal(format!("inbox commit: {e}"))), false),
                    },
                    Err(e) => {
                        let fit = tollgate_store::rollback(tx).await.is_ok();
                        (Err(e), fit)
                    }
                }
            })
        })
        .await
    }

    /// Runs `f`, one statement (atomic on its own), on the write connection outside any
    /// transaction: on SQLite by the group-commit writer, without the two round trips of a
    /// `BEGIN` and a `COMMIT`.
    pub async fn write_one<R, F>(&self, f: F) -> ApiResult<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Conn) -> WriteFuture<'a, R> + Send + 'static,
    {
        if !self.shared {
            let mut conn = self.store.hold_writer().await?;
            return f(&mut conn).await;
        }
        self.run(move |conn, _| {
            Box::pin(async move {
                let r = f(conn).await;
                let fit = r.is_ok();
                (r, fit)
            })
        })
        .await
    }

    /// Hands `f` to the writer and waits for its answer.
    async fn run<R, F>(&self, f: F) -> ApiResult<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut Conn,
                Backend,
            )
                -> Pin<Box<dyn Future<Output = (ApiResult<R>, bool)> + Send + 'a>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<ApiResult<R>>();
        let job: Job = Box::new(move |conn: &mut Conn, backend| {
            Box::pin(async move {
                let (r, fit) = f(conn, backend).await;
                let _ = reply.send(r);
                fit
            })
        });
        self.tx.send(Msg::Job(job)).await.map_err(|_| stopped())?;
        // A dropped job (the writer had no connection) answers nothing.
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Runs the SQLite writer on an OS thread of its own (a single-threaded runtime), not among
/// the server's tasks. Its work is a chain: a statement on the SQLite connection's thread,
/// then the Rust code up to the next statement, and so on, with nothing else in between. Among
/// the server's tasks, each link of the chain waited for a worker thread busy with requests
/// before it could go on; measured on 2 cores (8 interleaved pairs of the webhooks
/// benchmark), its own thread answered and applied about a fifth more events per second
/// (+21 %), with a p99 no worse. Falls back to a task of the server's runtime if no thread or
/// runtime can be had.
fn on_own_thread(writer: impl Future<Output = ()> + Send + 'static) {
    type Writer = Pin<Box<dyn Future<Output = ()> + Send>>;
    let writer: Writer = Box::pin(writer);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for the inbox writer's thread; it runs as a task");
            tokio::spawn(writer);
            return;
        }
    };
    // The writer is handed to the thread once it runs, so that it is still ours to spawn as a
    // task if there is no thread.
    let (hand, take) = std::sync::mpsc::sync_channel::<Writer>(1);
    let spawned = std::thread::Builder::new()
        .name("inbox-writer".into())
        .spawn(move || {
            let Ok(writer) = take.recv() else { return };
            runtime.block_on(async {
                writer.await;
                // The writer's database connection goes back to its pool in a task of this
                // runtime: it gets a turn before the runtime ends (if it has not finished by
                // then, the connection is closed instead, and the pool opens another).
                tokio::task::yield_now().await;
            });
        });
    let unsent = match spawned {
        Ok(_) => hand.send(writer).err().map(|back| back.0),
        Err(e) => {
            tracing::warn!(error = %e, "no thread for the inbox writer; it runs as a task");
            Some(writer)
        }
    };
    if let Some(writer) = unsent {
        tokio::spawn(writer);
    }
}

fn stopped() -> ApiError {
    ApiError::Internal("inbox writer stopped".into())
}

/// One writer. Each cycle it stores every new event that is waiting in one commit, then runs
/// at most one piece of other work (a worker's claim or batch) in a commit of its own, so a
/// new event waits for one piece of work at most. Each commit is durable before its callers
/// hear of it and carries everything that arrived while the previous one was being written,
/// so the rate is not bounded by one fsync per event.
///
/// The writer keeps its database connection from one commit to the next while work keeps
/// coming: sqlx hands a connection back to its pool through a spawned task that pings it
/// first, and on a busy runtime that round trip cost more than the commit itself (measured:
/// 2.8 ms per commit on 2 cores). It lets go when nothing waits, after [`HOLD`] and after an
/// error, so the other writers (API calls; on SQLite the pool has one connection) get their
/// turn in the pool's order.
async fn group_commit(
    store: Store,
    rx: Arc<Mutex<mpsc::Receiver<Msg>>>,
    wake: Arc<Notify>,
    syncer: Option<Syncer>,
) {
    let mut msgs = Vec::with_capacity(MAX_GROUP);
    let mut jobs: VecDeque<Job> = VecDeque::new();
    let mut held: Option<Held> = None;
    // SQLite on a file: the writer starts the log over between its commits.
    let mut restart = store.wal().map(|wal| {
        tollgate_store::WalRestart::new(wal.to_path_buf(), tollgate_store::WalRestart::OVER)
    });
    loop {
        {
            let mut rx = rx.lock().await;
            if jobs.is_empty() {
                if rx.is_empty() {
                    held = None;
                }
                if rx.recv_many(&mut msgs, MAX_GROUP).await == 0 {
                    return;
                }
            } else {
                // Work is waiting: whatever else has arrived, without waiting for more.
                while msgs.len() < MAX_GROUP
                    && let Ok(m) = rx.try_recv()
                {
                    msgs.push(m);
                }
            }
        }
        let mut accepts = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Accept(p) => accepts.push(*p),
                Msg::Job(j) => jobs.push_back(j),
            }
        }
        if held.as_ref().is_some_and(|h| h.since.elapsed() > HOLD) {
            held = None;
        }
        let outcome = match held.take() {
            Some(h) => Ok(h),
            None => Held::take(&store, syncer.is_some()).await,
        };
        let mut h = match outcome {
            Ok(h) => h,
            Err(e) => {
                // Dropped work tells its callers the writer could not run it.
                tracing::warn!(error = %e, "the inbox writer has no database connection");
                for p in accepts.drain(..) {
                    let _ = p.done.send(Err(e.to_string()));
                }
                jobs.pop_front();
                continue;
            }
        };
        let mut ok = true;
        if !accepts.is_empty() {
            ok &= store_events(&mut h, store.backend(), accepts, syncer.as_ref()).await;
            wake.notify_waiters();
        }
        if let Some(job) = jobs.pop_front() {
            ok &= job(&mut h.conn, store.backend()).await;
        }
        if ok
            && let Some(r) = restart.as_mut()
            && let Err(e) = r.between(&mut h.conn).await
        {
            tracing::warn!(error = %e, "checkpointing the SQLite log failed");
            ok = false;
        }
        // After a failure, a fresh connection next time (the pool tests this one on its way
        // back).
        held = ok.then_some(h);
    }
}

/// Stores `accepts` in one commit and answers each (once durable: through `syncer` when the
/// commit did not wait for the disk). On failure each event is stored in a commit of its own,
/// so one failure cannot fail the others. `false` when something failed.
async fn store_events(
    h: &mut Held,
    backend: Backend,
    mut accepts: Vec<Pending>,
    syncer: Option<&Syncer>,
) -> bool {
    // One order for every server's inserts, so two servers storing the same events at once
    // (PostgreSQL) wait for each other instead of deadlocking.
    accepts.sort_by(|a, b| {
        (&a.row.connection_id, &a.row.stripe_event_id)
            .cmp(&(&b.row.connection_id, &b.row.stripe_event_id))
    });
    let conn = &mut h.conn;
    let answer = |told: Vec<Told>| match syncer {
        // Durable once the log is synced: the syncer answers.
        Some(s) if h.relaxed => s.after_sync(told),
        _ => {
            for (done, new) in told {
                let _ = done.send(Ok(new));
            }
        }
    };
    match insert_events(conn, backend, &accepts).await {
        Ok(news) => {
            answer(
                accepts
                    .into_iter()
                    .zip(news)
                    .map(|(p, new)| (p.done, new))
                    .collect(),
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, events = accepts.len(), "group commit failed; storing events one by one");
            for p in accepts {
                match insert_events(conn, backend, std::slice::from_ref(&p)).await {
                    Ok(n) => answer(vec![(p.done, n.first().copied().unwrap_or(false))]),
                    Err(e) => {
                        let _ = p.done.send(Err(e.to_string()));
                    }
                }
            }
            false
        }
    }
}

/// A new event's caller and whether its event was new.
type Told = (oneshot::Sender<Result<bool, String>>, bool);

/// How long the writer keeps the connection while work keeps coming (see [`group_commit`]).
const HOLD: Duration = Duration::from_millis(50);

struct Pending {
    row: InboxRow,
    done: oneshot::Sender<Result<bool, String>>,
}

/// The write connection as the group-commit writer holds it. On SQLite on a file its commits
/// do not wait for the disk (`relaxed`): the [`Syncer`] syncs the log beside the writer and
/// only then are the new events acknowledged. So the writer goes on with the next commit while
/// the disk works (a sync cost about as much as the rest of a commit cycle), and one sync
/// covers every commit made before it began. Dropped, the connection returns to the pool,
/// which makes its commits durable again (`tollgate_store::relax_commits`).
struct Held {
    conn: HeldConn,
    relaxed: bool,
    since: Instant,
}

impl Held {
    async fn take(store: &Store, relax: bool) -> tollgate_store::Result<Held> {
        let mut conn = store.hold_writer().await?;
        if relax {
            tollgate_store::relax_commits(&mut conn).await?;
        }
        Ok(Held {
            conn,
            relaxed: relax,
            since: Instant::now(),
        })
    }
}

/// Syncs the SQLite log after relaxed commits, then answers their new events (see [`Held`]).
struct Syncer {
    queue: mpsc::UnboundedSender<Vec<Told>>,
}

impl Syncer {
    fn start(wal: std::path::PathBuf) -> Syncer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Vec<Told>>();
        tokio::spawn(async move {
            let mut waiting = Vec::new();
            while rx.recv_many(&mut waiting, usize::MAX).await > 0 {
                // Everything received here was committed before this sync begins.
                let wal = wal.clone();
                let synced = tokio::task::spawn_blocking(move || tollgate_store::sync_wal(&wal))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| format!("syncing the SQLite log: {e}")));
                if let Err(e) = &synced {
                    tracing::warn!(error = %e, "new events are not known to be durable");
                }
                for (done, new) in waiting.drain(..).flatten() {
                    let _ = done.send(synced.clone().map(|()| new));
                }
            }
        });
        Syncer { queue }
    }

    fn after_sync(&self, told: Vec<Told>) {
        if let Err(back) = self.queue.send(told) {
            for (done, _) in back.0 {
                let _ = done.send(Err("the inbox syncer stopped".into()));
            }
        }
    }
}

/// New events and their payloads in one commit; whether each was new.
async fn insert_events(
    conn: &mut Conn,
    backend: Backend,
    batch: &[Pending],
) -> tollgate_store::Result<Vec<bool>> {
    let rows: Vec<&InboxRow> = batch.iter().map(|p| &p.row).collect();
    if backend == Backend::Postgres && rows.len() <= inbox::ONE_STATEMENT_ROWS {
        // One statement, atomic and committed on its own: no `BEGIN` and `COMMIT` round trips.
        return inbox::insert_many(conn, &rows).await;
    }
    let mut tx = tollgate_store::begin_on(conn, backend).await?;
    let news = inbox::insert_many(&mut tx, &rows).await?;
    tollgate_store::commit(tx).await?;
    Ok(news)
}

/// What the inbox stores of an event beside its payload (and checks before storing it).
#[derive(Debug, Default)]
pub struct EventHead {
    pub object: Option<String>,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub account: Option<String>,
    pub api_version: Option<String>,
    /// `created` when it is an integer that fits an `i64`.
    pub created: Option<i64>,
    /// Whether the event has a `created` at all (of any type).
    pub created_given: bool,
}

/// How deep a received event may nest objects and arrays. Stripe's events nest about ten
/// levels; the workers' JSON reader stops at 128.
pub const MAX_DEPTH: usize = 64;

/// The last `created` an event may have: 9999-12-31T23:59:59Z, in seconds.
pub const MAX_CREATED: i64 = 253_402_300_799;

/// Why a received body cannot be stored as an event, found while reading its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Not JSON, or JSON the workers could not read back (a lone UTF-16 surrogate escape, a
    /// number beyond a double's range).
    NotJson,
    /// Objects and arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A NUL character (U+0000) in a string or an object key, which PostgreSQL's text cannot
    /// hold.
    Nul,
}

impl EventHead {
    /// The head of a raw event body (UTF-8 text), read in one pass without building the whole
    /// document (the payload is stored as it came and parsed by the workers). The rest of the
    /// body is checked on the way: every string and key is read (so escapes are valid and
    /// decode to no NUL) and the nesting is at most [`MAX_DEPTH`], so whatever is accepted the
    /// workers can read. A key given twice counts with its last value, and a head field not
    /// of its type is absent, as [`EventHead::of`] reads the parsed document.
    pub fn parse(text: &str) -> Result<EventHead, Unfit> {
        let why = std::cell::Cell::new(None);
        let mut de = serde_json::Deserializer::from_str(text);
        let head = serde::Deserializer::deserialize_any(&mut de, HeadReader(&why))
            .and_then(|head| de.end().map(|()| head));
        head.map_err(|_| why.get().unwrap_or(Unfit::NotJson))
    }

    /// The head of a parsed event (fields that are not of their type are absent).
    pub fn of(event: &Value) -> EventHead {
        let text = |k: &str| event[k].as_str().map(str::to_string);
        EventHead {
            object: text("object"),
            id: text("id"),
            kind: text("type"),
            account: text("account"),
            api_version: text("api_version"),
            created: event["created"].as_i64(),
            created_given: event.get("created").is_some(),
        }
    }

    /// An event object, with an id and a type.
    pub fn is_event(&self) -> bool {
        self.object.as_deref() == Some("event") && self.id.is_some() && self.kind.is_some()
    }

    /// Whether `created`, when given, is a Unix time in seconds from 0 to [`MAX_CREATED`].
    pub fn created_fits(&self) -> bool {
        !self.created_given || self.created.is_some_and(|t| (0..=MAX_CREATED).contains(&t))
    }
}

/// The JSON pointer of the first string or object key of `text` that holds a NUL (`""` when
/// none is found, e.g. in a value a later copy of its key replaced).
pub fn nul_pointer(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| crate::edge::first_nul(&v))
        .unwrap_or_default()
}

/// Reads the top of an event body: the head fields of an object, the rest checked by [`Check`].
struct HeadReader<'a>(&'a std::cell::Cell<Option<Unfit>>);

impl<'de> serde::de::Visitor<'de> for HeadReader<'_> {
    type Value = EventHead;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EventHead, A::Error> {
        let mut head = EventHead::default();
        let check = |keep| Check {
            depth: 1,
            keep,
            why: self.0,
        };
        while let Some(key) = map.next_key_seed(check(true))? {
            let Seen::Text(key) = key else {
                map.next_value_seed(check(false))?;
                continue;
            };
            let field = match key.as_ref() {
                "object" => &mut head.object,
                "id" => &mut head.id,
                "type" => &mut head.kind,
                "account" => &mut head.account,
                "api_version" => &mut head.api_version,
                "created" => {
                    head.created_given = true;
                    head.created = match map.next_value_seed(check(false))? {
                        Seen::Int(t) => Some(t),
                        _ => None,
                    };
                    continue;
                }
                _ => {
                    map.next_value_seed(check(false))?;
                    continue;
                }
            };
            *field = match map.next_value_seed(check(true))? {
                Seen::Text(t) => Some(t.into_owned()),
                _ => None,
            };
        }
        Ok(head)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<EventHead, A::Error> {
        serde::de::Visitor::visit_seq(self.top(), seq).map(|_| EventHead::default())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EventHead, E> {
        serde::de::Visitor::visit_str(self.top(), v).map(|_| EventHead::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<EventHead, E> {
        Ok(EventHead::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<EventHead, E> {
        Ok(EventHead::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<EventHead, E> {
        Ok(EventHead::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<EventHead, E> {
        Ok(EventHead::default())
    }

    fn visit_unit<E>(self) -> Result<EventHead, E> {
        Ok(EventHead::default())
    }
}

impl<'a> HeadReader<'a> {
    fn top(&self) -> Check<'a> {
        Check {
            depth: 0,
            keep: false,
            why: self.0,
        }
    }
}

/// What [`Check`] saw: a string (kept only when asked), an integer that fits an `i64`, or
/// anything else.
enum Seen<'de> {
    Text(std::borrow::Cow<'de, str>),
    Int(i64),
    Other,
}

/// Reads one JSON value inside an event body, building nothing: refuses a NUL in a string or
/// key and nesting beyond [`MAX_DEPTH`] (`depth` is the nesting of the value read), and
/// notes why in `why`.
#[derive(Clone, Copy)]
struct Check<'a> {
    depth: usize,
    keep: bool,
    why: &'a std::cell::Cell<Option<Unfit>>,
}

impl Check<'_> {
    fn refuse<E: serde::de::Error>(&self, why: Unfit) -> E {
        self.why.set(Some(why));
        E::custom("unfit")
    }

    /// The check of a value nested one level deeper.
    fn inner<E: serde::de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(Unfit::TooDeep));
        }
        Ok(Check {
            depth: self.depth + 1,
            keep: false,
            why: self.why,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Check<'_> {
    type Value = Seen<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Check<'_> {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Seen<'de>, E> {
        if v.contains('\0') {
            return Err(self.refuse(Unfit::Nul));
        }
        Ok(match self.keep {
            true => Seen::Text(std::borrow::Cow::Borrowed(v)),
            false => Seen::Other,
        })
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seen<'de>, E> {
        if v.contains('\0') {
            return Err(self.refuse(Unfit::Nul));
        }
        Ok(match self.keep {
            true => Seen::Text(std::borrow::Cow::Owned(v.to_string())),
            false => Seen::Other,
        })
    }

    fn visit_i64<E>(self, v: i64) -> Result<Seen<'de>, E> {
        Ok(Seen::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Seen<'de>, E> {
        Ok(i64::try_from(v).map_or(Seen::Other, Seen::Int))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Seen<'de>, E> {
        Ok(Seen::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Seen<'de>, E> {
        Ok(Seen::Other)
    }

    fn visit_unit<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(Seen::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Seen<'de>, A::Error> {
        let inner = self.inner()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(Seen::Other)
    }
}

/// A new inbox row for the event `head` (checked to be an event object) of `payload`.
pub fn row_for(
    conn: &ConnectionRow,
    head: &EventHead,
    payload: String,
    source: &str,
    now: i64,
) -> InboxRow {
    let account = head
        .account
        .as_deref()
        .or(conn.stripe_account.as_deref())
        .unwrap_or_default();
    InboxRow {
        id: tollgate_store::new_id(),
        connection_id: conn.id.clone(),
        merchant_account_id: conn.merchant_account_id.clone(),
        stripe_account: account.to_string(),
        stripe_event_id: head.id.clone().unwrap_or_default(),
        event_type: head.kind.clone().unwrap_or_default(),
        api_version: head.api_version.clone(),
        source: source.to_string(),
        payload,
        status: inbox::RECEIVED.to_string(),
        attempts: 0,
        next_attempt_at: now,
        locked_until: None,
        note: None,
        stripe_created: head.created,
        received_at: now,
        applied_at: None,
        updated_at: now,
    }
}

// ---- workers ------------------------------------------------------------------------------

/// Starts the workers that apply the inbox (and prune it, and on PostgreSQL vacuum its table of
/// waiting events).
pub fn spawn_workers(ctx: ApiContext) {
    // Events the workers took since the waiting table was last vacuumed.
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in 0..ctx.config.inbox_workers.max(1) {
        let ctx = ctx.clone();
        let taken = taken.clone();
        tokio::spawn(async move {
            let poll = Duration::from_millis(ctx.config.inbox_poll_ms.max(10));
            // The rows the last batch's commit claimed for this worker.
            let mut next = Vec::new();
            loop {
                let ids = match next.is_empty() {
                    true => claim(&ctx).await,
                    false => Ok(std::mem::take(&mut next)),
                };
                if let Ok(ids) = &ids {
                    taken.fetch_add(ids.len(), std::sync::atomic::Ordering::Relaxed);
                }
                let worked = match ids {
                    Ok(ids) if ids.is_empty() => false,
                    Ok(ids) => match apply_rows(&ctx, ids, true).await {
                        Ok(claimed) => {
                            next = claimed;
                            true
                        }
                        Err(e) => {
                            tracing::warn!(worker = n, error = %e, "inbox pass failed");
                            false
                        }
                    },
                    Err(e) => {
                        tracing::warn!(worker = n, error = %e, "inbox claim failed");
                        false
                    }
                };
                if !worked {
                    // Woken by a new event, or polling for other servers' rows and retries.
                    let _ = tokio::time::timeout(poll, ctx.inbox.wake.notified()).await;
                }
            }
        });
    }
    spawn_vacuum(ctx.clone(), taken);
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let keep = ctx2.config.inbox_retention_days as i64 * 86_400_000;
            match inbox::prune(ctx2.store.writer(), ctx2.now() - keep).await {
                Ok(n) if n > 0 => {
                    tracing::info!(rows = n, "pruned old inbox rows");
                    // The deleted rows' space and index entries, reclaimed now rather than
                    // whenever (if ever) autovacuum comes.
                    if let Err(e) = inbox::vacuum(&ctx2.store, true).await {
                        tracing::warn!(error = %e, "vacuuming the inbox after pruning failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the inbox failed"),
            }
        }
    });
}

/// How often the waiting table's vacuum looks at what the workers took.
const VACUUM_CHECK: Duration = Duration::from_secs(1);
/// Vacuums the waiting table once the workers took this many events since the last time...
const VACUUM_AFTER_EVENTS: usize = 10_000;
/// ... or took any and this long has passed.
const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// PostgreSQL: keeps `webhook_waiting` (the events still to apply) small without autovacuum.
/// Every event applied deletes its waiting row, whose dead version and index entries only a
/// `VACUUM` removes; left there, the claim's ordered scan of the table steps over more of them
/// every time. So the table is vacuumed after every [`VACUUM_AFTER_EVENTS`] events taken, or
/// [`VACUUM_EVERY`] when fewer came: each vacuum reads the backlog and the rows deleted since the
/// last one, never the inbox's history (see `docs/perf/ingest-postgres.md`).
fn spawn_vacuum(ctx: ApiContext, taken: Arc<std::sync::atomic::AtomicUsize>) {
    if ctx.store.backend() != Backend::Postgres {
        return;
    }
    tokio::spawn(async move {
        let mut last = Instant::now();
        let mut checks = 0u32;
        loop {
            tokio::time::sleep(VACUUM_CHECK).await;
            checks = checks.wrapping_add(1);
            if checks.is_multiple_of(TABLES_CHECK_EVERY) {
                upkeep_tables(&ctx).await;
            }
            let n = taken.load(std::sync::atomic::Ordering::Relaxed);
            if n < VACUUM_AFTER_EVENTS && (n == 0 || last.elapsed() < VACUUM_EVERY) {
                continue;
            }
            taken.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            last = Instant::now();
            match inbox::vacuum(&ctx.store, false).await {
                Ok(()) => tracing::debug!(
                    events = n,
                    ms = last.elapsed().as_millis() as u64,
                    "vacuumed the waiting events"
                ),
                Err(e) => tracing::warn!(error = %e, "vacuuming the waiting events failed"),
            }
        }
    });
}

/// The other tables are looked at every this many waiting-table checks.
const TABLES_CHECK_EVERY: u32 = 2;
/// When the other tables are vacuumed or analyzed: autovacuum's rule, with a vacuum threshold
/// of 1,000 dead versions (so that a vacuum, which reads the table's indexes, is spread over
/// many updates) and its default analyze scale factor.
const TABLES: tollgate_store::upkeep::Upkeep = tollgate_store::upkeep::Upkeep {
    vacuum_min: 1_000,
    vacuum_share: 0.2,
    analyze_min: 500,
    analyze_share: 0.1,
};

/// PostgreSQL: the tables that applying events updates (`transactions`, the entitlement
/// tables, …) leave dead row versions that only `VACUUM` removes, and their statistics go
/// stale as they grow: with autovacuum off, applying slowed round after round (the planner,
/// still seeing the tables as small, read a whole account's objects for each lookup). So the
/// server does autovacuum's work for them (see [`TABLES`]); where autovacuum runs and keeps
/// up, this finds nothing to do.
async fn upkeep_tables(ctx: &ApiContext) {
    let skip = ["webhook_waiting"];
    match tollgate_store::upkeep::maintain(&ctx.store, TABLES, &skip).await {
        Ok(done) if !done.is_empty() => tracing::debug!(tables = ?done, "table upkeep"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "table upkeep failed"),
    }
}

/// Claims one batch of due rows and applies it; returns how many rows it took.
pub async fn run_once(ctx: &ApiContext) -> ApiResult<usize> {
    let ids = claim(ctx).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let n = ids.len();
    apply_rows(ctx, ids, false).await?;
    Ok(n)
}

/// The claimed rows `ids`, with their payloads, read off the writer.
async fn claimed_rows(ctx: &ApiContext, ids: &[String]) -> ApiResult<Vec<InboxRow>> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut conn = ctx.store.hold_reader().await?;
    Ok(inbox::claimed(&mut conn, &ids).await?)
}

/// Claims up to a batch of due rows (outside any transaction); their ids.
async fn claim(ctx: &ApiContext) -> ApiResult<Vec<String>> {
    let ctx = ctx.clone();
    ctx.inbox
        .clone()
        .write_one(move |conn| Box::pin(async move { claim_on(&ctx, conn).await }))
        .await
}

/// Claims up to a batch of due rows on `conn` (the writer's, or inside a batch's commit).
async fn claim_on(ctx: &ApiContext, conn: &mut Conn) -> ApiResult<Vec<String>> {
    let lease = ctx.config.inbox_lease_ms as i64;
    let limit = ctx.config.inbox_batch as i64;
    Ok(inbox::claim(conn, ctx.store.backend(), ctx.now(), lease, limit).await?)
}

/// What one event does, decided before the write transaction opens (lookups and re-reads
/// happen here, so the write lock is held only for writes).
enum Plan {
    Apply {
        transaction_id: String,
        observations: Vec<Observation>,
        refund: Option<(String, &'static str)>,
    },
    /// Teaches the transaction nothing it did not know when the plan was made, so nothing
    /// it can know later either (applying is a forward-only merge).
    NothingNew,
    /// Read by entitlements only.
    Entitled,
    Ignore(String),
    Retry(String),
}

/// A claimed batch with what each of its events does: to transactions (`plans`) and to
/// entitlements (`work`).
struct Batch {
    rows: Vec<InboxRow>,
    plans: Vec<Plan>,
    work: Vec<Option<Work>>,
    conns: HashMap<String, Option<ConnectionRow>>,
}

/// Applies the claimed rows `ids`; with `claim_next`, the batch's commit also claims the next
/// batch, whose ids are returned (a claim of its own costs the SQLite writer a turn: a cycle of
/// round trips).
async fn apply_rows(
    ctx: &ApiContext,
    ids: Vec<String>,
    claim_next: bool,
) -> ApiResult<Vec<String>> {
    let rows = claimed_rows(ctx, &ids).await?;
    // Each payload is parsed once, for both halves (transactions and entitlements).
    let events: Vec<Option<Value>> = rows
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.payload).ok())
        .collect();
    let mut conns: HashMap<String, Option<ConnectionRow>> = HashMap::new();
    let mut readings = Vec::with_capacity(rows.len());
    for (row, event) in rows.iter().zip(&events) {
        if !conns.contains_key(&row.connection_id) {
            let c = connections::get(ctx.store.reader(), &row.connection_id).await?;
            conns.insert(row.connection_id.clone(), c);
        }
        readings.push(
            match conns.get(&row.connection_id).and_then(Option::as_ref) {
                Some(conn) => read_event(conn, row, event.as_ref()),
                None => Reading::Decided(Plan::Ignore("the connection was deleted".into())),
            },
        );
    }
    let found = transactions_named(ctx, &rows, &mut readings).await;
    let refunds = refunds_named(ctx, &readings).await;
    let mut plans: Vec<Plan> = rows
        .iter()
        .zip(readings)
        .map(|(row, reading)| plan(row, reading, &found, &refunds))
        .collect();
    let mut work = entitlements(ctx, &conns, &rows, &events, &mut plans).await;
    if ctx.store.backend() == Backend::Postgres {
        entitlements_apart(ctx, &conns, &rows, &mut plans, &mut work).await;
    }
    // Transactions are locked in id order, so two servers' batches touching the same
    // transactions wait for each other instead of deadlocking (order does not matter to the
    // outcome: applying is order-proof).
    let mut items: Vec<((InboxRow, Plan), Option<Work>)> =
        rows.into_iter().zip(plans).zip(work).collect();
    items.sort_by(|a, b| plan_key(&a.0.1).cmp(plan_key(&b.0.1)));
    let (pairs, work): (Vec<(InboxRow, Plan)>, Vec<Option<Work>>) = items.into_iter().unzip();
    let (rows, plans): (Vec<InboxRow>, Vec<Plan>) = pairs.into_iter().unzip();
    let batch = Arc::new(Batch {
        rows,
        plans,
        work,
        conns,
    });
    // The whole batch in one commit; if any of it fails, each event on its own so one bad
    // event cannot hold up the others.
    let mut ties = Vec::new();
    let mut next = Vec::new();
    match commit_plans(ctx, &batch, None, claim_next).await {
        Ok((t, claimed)) => (ties, next) = (t, claimed),
        Err(e) => {
            tracing::warn!(error = %e, "inbox batch failed; applying its events one by one");
            for (i, row) in batch.rows.iter().enumerate() {
                match commit_plans(ctx, &batch, Some(i), false).await {
                    Ok((t, _)) => ties.extend(t),
                    Err(e) => fail(ctx, row, &e.to_string()).await?,
                }
            }
        }
    }
    // Versions of one object from the same second are settled by reading it again, after the
    // commit (the read may wait for that second to end).
    for (conn_id, t) in ties {
        if let Some(Some(conn)) = batch.conns.get(&conn_id)
            && let Err(e) = crate::entitlements::reread_ties(ctx, conn, t).await
        {
            tracing::warn!(connection = %conn_id, error = %e, "re-reading same-second versions failed; the next sync reads them");
        }
    }
    crate::entitlements::features::after_batch(ctx, &batch.rows, &batch.conns).await;
    Ok(next)
}

/// Per connection, the objects whose versions tied (see `entitlements::reread_ties`).
type Ties = Vec<(String, Vec<(String, String, i64)>)>;

/// The entitlement half reads the same events: what they give it to write is prepared here
/// (Stripe reads included) and written with the batch. A failure to prepare retries the
/// event.
async fn entitlements(
    ctx: &ApiContext,
    conns: &HashMap<String, Option<ConnectionRow>>,
    rows: &[InboxRow],
    parsed: &[Option<Value>],
    plans: &mut [Plan],
) -> Vec<Option<Work>> {
    let mut work: Vec<Option<Work>> = rows.iter().map(|_| None).collect();
    let events: Vec<Option<&Value>> = rows
        .iter()
        .zip(parsed)
        .enumerate()
        .map(|(i, (row, event))| {
            let wanted = crate::entitlements::is_relevant(&row.event_type)
                && !matches!(plans[i], Plan::Retry(_));
            event.as_ref().filter(|_| wanted)
        })
        .collect();
    let read = (0..rows.len()).filter(|&i| events[i].is_some());
    for (conn_id, idx) in by_connection(rows, read) {
        let Some(Some(conn)) = conns.get(conn_id) else {
            continue;
        };
        let items: Vec<(usize, &Value)> = idx
            .iter()
            .filter_map(|&i| events[i].map(|e| (i, e)))
            .collect();
        let events: Vec<&Value> = items.iter().map(|(_, e)| *e).collect();
        match crate::entitlements::prepare_events(ctx, conn, &events).await {
            Ok(prepared) => {
                for ((i, _), w) in items.iter().zip(prepared) {
                    if w.is_some() && matches!(plans[*i], Plan::Ignore(_)) {
                        plans[*i] = Plan::Entitled;
                    }
                    work[*i] = w;
                }
            }
            Err(e) => {
                // One event's trouble (a Stripe re-read that failed) must not hold back its
                // neighbours: each event is prepared on its own, and only those that still
                // fail are retried, each with a note naming it.
                tracing::warn!(connection = %conn_id, error = %e, "preparing a batch's events for entitlements failed; preparing them one by one");
                for (i, event) in &items {
                    match crate::entitlements::prepare_events(ctx, conn, &[*event]).await {
                        Ok(mut prepared) => {
                            let w = prepared.pop().flatten();
                            if w.is_some() && matches!(plans[*i], Plan::Ignore(_)) {
                                plans[*i] = Plan::Entitled;
                            }
                            work[*i] = w;
                        }
                        Err(e) => plans[*i] = Plan::Retry(prepare_failed(event, &e)),
                    }
                }
            }
        }
    }
    work
}

/// The retry note of an event whose entitlement reading failed: the event, its Stripe object,
/// and why.
fn prepare_failed(event: &Value, e: &ApiError) -> String {
    let object = &event["data"]["object"];
    format!(
        "event {} ({}): reading its {} {} for entitlements failed: {e}",
        event["id"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        object["object"].as_str().unwrap_or("object"),
        object["id"].as_str().unwrap_or("?"),
    )
}

/// PostgreSQL: the entitlement writes commit on their own, per connection, before the batch.
/// Several workers (and servers) apply batches at once there, and a batch's transaction holds
/// its row locks until it commits: entitlement rows shared by two batches (one customer's
/// objects) would make each wait for the other's whole batch, or deadlock. Committed first,
/// a crash in between only means a harmless second reading (re-evaluation is idempotent).
/// SQLite has a single writer: there they stay in the batch's commit.
async fn entitlements_apart(
    ctx: &ApiContext,
    conns: &HashMap<String, Option<ConnectionRow>>,
    rows: &[InboxRow],
    plans: &mut [Plan],
    work: &mut [Option<Work>],
) {
    let with_work = (0..rows.len()).filter(|&i| work[i].is_some());
    for (conn_id, idx) in by_connection(rows, with_work) {
        let Some(Some(conn)) = conns.get(conn_id) else {
            continue;
        };
        let refs: Vec<&Work> = idx.iter().filter_map(|&i| work[i].as_ref()).collect();
        if let Err(e) = crate::entitlements::write(ctx, conn, &refs, None).await {
            for &i in &idx {
                plans[i] = Plan::Retry(format!("entitlements: {e}"));
            }
        }
        for &i in &idx {
            work[i] = None;
        }
    }
}

/// The indices `idx` of `rows`, grouped by connection (in order of first appearance).
fn by_connection(
    rows: &[InboxRow],
    idx: impl IntoIterator<Item = usize>,
) -> Vec<(&str, Vec<usize>)> {
    let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
    for i in idx {
        let conn = rows[i].connection_id.as_str();
        match out.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, v)) => v.push(i),
            None => out.push((conn, vec![i])),
        }
    }
    out
}

fn plan_key(p: &Plan) -> &str {
    match p {
        Plan::Apply { transaction_id, .. } => transaction_id,
        Plan::NothingNew | Plan::Entitled | Plan::Ignore(_) | Plan::Retry(_) => "",
    }
}

/// Writes `batch` (or only its event `only`) through the inbox's writer: one commit, which
/// with `claim_next` also claims the next batch.
async fn commit_plans(
    ctx: &ApiContext,
    batch: &Arc<Batch>,
    only: Option<usize>,
    claim_next: bool,
) -> ApiResult<(Ties, Vec<String>)> {
    let (ctx, batch) = (ctx.clone(), batch.clone());
    ctx.inbox
        .clone()
        .write(move |tx| {
            Box::pin(async move {
                let plans = write_plans(&ctx, tx, &batch, only);
                let ties = crate::outbound::with_subscriptions_read_once(plans).await?;
                let mut next = Vec::new();
                if claim_next {
                    next = claim_on(&ctx, tx).await?;
                }
                Ok((ties, next))
            })
        })
        .await
}

/// The writes of a batch (or of its event `only`), inside `tx`: each event still due is
/// applied to its transaction and to entitlements, and gets its outcome.
async fn write_plans(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    batch: &Batch,
    only: Option<usize>,
) -> ApiResult<Ties> {
    let now = ctx.now();
    let picked: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..batch.rows.len()).collect(),
    };
    let ids: Vec<&str> = picked.iter().map(|&i| batch.rows[i].id.as_str()).collect();
    let due = inbox::lock_due(&mut **tx, ctx.store.backend(), &ids).await?;
    // Entitlements first, per connection: the objects of every due event, then one
    // re-evaluation of each customer they touch.
    let with_work = picked
        .iter()
        .copied()
        .filter(|&i| due.contains(&batch.rows[i].id) && batch.work[i].is_some());
    let mut ties = Vec::new();
    for (conn_id, idx) in by_connection(&batch.rows, with_work) {
        if let Some(Some(conn)) = batch.conns.get(conn_id) {
            let work: Vec<&Work> = idx.iter().filter_map(|&i| batch.work[i].as_ref()).collect();
            let applied = crate::entitlements::apply_in(ctx, tx, conn, &work, None).await?;
            if !applied.ties.is_empty() {
                ties.push((conn_id.to_string(), applied.ties));
            }
        }
    }
    // The batch's transactions, read (and on PostgreSQL locked, in id order) together; each
    // event then applies to the row as the events before it left it, and the audit trail is
    // written at the end.
    let named: Vec<&str> = picked
        .iter()
        .filter(|&&i| due.contains(&batch.rows[i].id))
        .filter_map(|&i| match &batch.plans[i] {
            Plan::Apply { transaction_id, .. } => Some(transaction_id.as_str()),
            _ => None,
        })
        .collect();
    let mut transactions: HashMap<String, TransactionRow> =
        store_tx::get_many(tx, &named, ctx.store.for_update())
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
    let mut audit = Vec::new();
    // The transactions changed, with the version read: each is written once, at the end.
    let mut changed: BTreeMap<String, i64> = BTreeMap::new();
    // Each event's (status, note, next attempt), written together at the end.
    let mut outcomes: Vec<inbox::Outcome> = Vec::new();
    for &i in &picked {
        let (row, plan) = (&batch.rows[i], &batch.plans[i]);
        if !due.contains(&row.id) {
            continue;
        }
        let outcome = match plan {
            Plan::Ignore(why) => (inbox::IGNORED, Some(why.as_str()), now),
            Plan::NothingNew => (inbox::APPLIED, Some(NOTHING_NEW), now),
            Plan::Entitled => (inbox::APPLIED, Some("entitlements"), now),
            Plan::Retry(why) => {
                let (status, next) = retry_after(ctx, row, now);
                (status, Some(why.as_str()), next)
            }
            Plan::Apply {
                transaction_id,
                observations,
                refund,
            } => {
                if let Some((refund_id, status)) = refund
                    && let Some(mut r) =
                        store_tx::get_refund(&mut **tx, &row.merchant_account_id, refund_id).await?
                    && r.status == "processing"
                    && *status != "processing"
                {
                    // Refund statuses move forward only: a late `pending` never undoes
                    // `succeeded`.
                    r.status = status.to_string();
                    r.updated_at = now;
                    store_tx::update_refund(&mut **tx, &r).await?;
                    // The batch's own reading of the transaction: its changes are written
                    // at the end.
                    let t = match transactions.get(&r.transaction_id) {
                        Some(t) => Some(t.clone()),
                        None => store_tx::get_any(&mut **tx, &r.transaction_id, "").await?,
                    };
                    crate::outbound::refund_changed(tx, &r, t.as_ref(), now).await?;
                }
                let current = transactions
                    .get_mut(transaction_id)
                    .ok_or_else(|| ApiError::not_found("transaction"))?;
                let note = match decide(current, observations, now)? {
                    Some((update, events)) => {
                        let after = current.after(&update, now).ok_or_else(|| {
                            ApiError::Internal("an event's change is not a state change".into())
                        })?;
                        crate::outbound::transaction_changed(tx, &current.status, &after, now)
                            .await?;
                        audit.extend(events);
                        changed.entry(after.id.clone()).or_insert(current.version);
                        *current = after;
                        None
                    }
                    None => Some(NOTHING_NEW),
                };
                (inbox::APPLIED, note, now)
            }
        };
        let (status, note, next) = outcome;
        outcomes.push((&row.id, status, note, next, row.attempts));
    }
    let rows: Vec<(i64, &TransactionRow)> = changed
        .iter()
        .filter_map(|(id, version)| transactions.get(id).map(|t| (*version, t)))
        .collect();
    store_tx::update_many(tx, &rows).await?;
    store_tx::insert_events(tx, &audit).await?;
    inbox::finish_each(tx, &outcomes, now).await?;
    Ok(ties)
}

const NOTHING_NEW: &str = "nothing new for the transaction";

/// Backoff for the next attempt; after the last attempt the row is `dead`.
fn retry_after(ctx: &ApiContext, row: &InboxRow, now: i64) -> (&'static str, i64) {
    if row.attempts >= ctx.config.inbox_max_attempts as i64 {
        return (inbox::DEAD, now);
    }
    let delay = retry_delay_ms(ctx.config.inbox_retry_base_ms, row.attempts);
    (inbox::FAILED, now.saturating_add(delay))
}

/// The wait after `attempts` failures: base · 2^(attempts−1), at most an hour, ±12.5 % jitter
/// (a quarter of the delay wide).
fn retry_delay_ms(base_ms: u64, attempts: i64) -> i64 {
    let delay = tollgate_stripe::backoff::delay(
        Duration::from_millis(base_ms),
        attempts.saturating_sub(1).clamp(0, 20) as u32,
        Duration::from_secs(3600),
        tollgate_stripe::backoff::Jitter::Spread(0.125),
    );
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

async fn fail(ctx: &ApiContext, row: &InboxRow, why: &str) -> ApiResult<()> {
    let now = ctx.now();
    let (status, next) = retry_after(ctx, row, now);
    tracing::warn!(event = %row.stripe_event_id, inbox_id = %row.id, status, error = %why, "applying a Stripe event failed");
    let store = ctx.store.writer();
    inbox::finish(store, &row.id, status, Some(why), next, row.attempts, now).await?;
    Ok(())
}

/// What an event says about transactions, before its transaction is looked up.
enum Reading {
    Decided(Plan),
    About {
        pi_id: String,
        observations: Vec<Observation>,
        /// A refund event: the refund's Stripe id and its status as Stripe gives it.
        refund: Option<(String, String)>,
    },
}

/// What `row` says about the connection's transactions (SPEC §3.5), from its payload alone.
fn read_event(conn: &ConnectionRow, row: &InboxRow, event: Option<&Value>) -> Reading {
    let ignore = |why: String| Reading::Decided(Plan::Ignore(why));
    let Some(event) = event else {
        return ignore("the payload is not JSON".into());
    };
    // Tenant isolation: an event of another Stripe account is not ours to apply.
    let own = conn.stripe_account.as_deref().unwrap_or_default();
    if row.stripe_account != own {
        let name = |acct: &str| {
            if acct.is_empty() {
                "the platform account (no connected account)".to_string()
            } else {
                format!("Stripe account {acct}")
            }
        };
        return ignore(format!(
            "the event belongs to {}, but this connection is for {}",
            name(&row.stripe_account),
            name(own)
        ));
    }
    let kind = row.event_type.as_str();
    let object = &event["data"]["object"];
    let at = event["created"].as_i64().unwrap_or(0) * 1000;
    let refund_event = kind == "charge.refund.updated" || kind.starts_with("refund.");
    let (pi_id, observations) = if kind.starts_with("payment_intent.") {
        (
            object["id"].as_str(),
            stripe_map::observations_of_intent(object, at),
        )
    } else if kind == "charge.expired" {
        (
            object["payment_intent"].as_str(),
            vec![Observation::ChargeExpired(stripe_map::charge(object, at))],
        )
    } else if kind.starts_with("charge.dispute.") {
        let obs = Observation::Dispute(DisputeSnapshot {
            status: object["status"].as_str().unwrap_or_default().to_string(),
        });
        (object["payment_intent"].as_str(), vec![obs])
    } else if refund_event {
        (
            object["payment_intent"].as_str(),
            vec![Observation::Refund(stripe_map::refund(object))],
        )
    } else if kind.starts_with("charge.") {
        let mut obs = vec![Observation::Charge(stripe_map::charge(object, at))];
        // Before 2022-11-15 `charge.refunded` carries the refunds, expanded.
        if let Some(refunds) = object["refunds"]["data"].as_array() {
            obs.extend(
                refunds
                    .iter()
                    .map(|r| Observation::Refund(stripe_map::refund(r))),
            );
        }
        (object["payment_intent"].as_str(), obs)
    } else {
        return ignore(format!("{kind} does not concern transactions"));
    };
    let Some(pi_id) = pi_id else {
        return ignore("no PaymentIntent named".into());
    };
    let refund = match object["id"].as_str() {
        Some(rid) if refund_event => Some((
            rid.to_string(),
            object["status"].as_str().unwrap_or("pending").to_string(),
        )),
        _ => None,
    };
    Reading::About {
        pi_id: pi_id.to_string(),
        observations,
        refund,
    }
}

/// Transactions by (connection id, PaymentIntent id).
type Named = HashMap<(String, String), TransactionRow>;

/// The transactions the events of a batch name, by (connection, PaymentIntent id): one read
/// per connection. Found by stored PaymentIntent id, never by metadata. An event whose read
/// failed is retried.
async fn transactions_named(
    ctx: &ApiContext,
    rows: &[InboxRow],
    readings: &mut [Reading],
) -> Named {
    let mut found = HashMap::new();
    let named = (0..rows.len()).filter(|&i| matches!(readings[i], Reading::About { .. }));
    for (conn_id, idx) in by_connection(rows, named) {
        let mut pis: Vec<&str> = idx
            .iter()
            .filter_map(|&i| match &readings[i] {
                Reading::About { pi_id, .. } => Some(pi_id.as_str()),
                Reading::Decided(_) => None,
            })
            .collect();
        pis.sort_unstable();
        pis.dedup();
        match store_tx::get_by_payment_intents(&ctx.store, conn_id, &pis).await {
            Ok(ts) => {
                for t in ts {
                    if let Some(pi) = t.payment_intent_id.clone() {
                        found.insert((conn_id.to_string(), pi), t);
                    }
                }
            }
            Err(e) => {
                for &i in &idx {
                    readings[i] =
                        Reading::Decided(Plan::Retry(format!("looking up transactions: {e}")));
                }
            }
        }
    }
    found
}

/// The refunds the events of a batch name, by Stripe refund id (one read), or why they could
/// not be read (those events are retried).
async fn refunds_named(
    ctx: &ApiContext,
    readings: &[Reading],
) -> Result<HashMap<String, RefundRow>, String> {
    let mut ids: Vec<&str> = readings
        .iter()
        .filter_map(|r| match r {
            Reading::About {
                refund: Some((rid, _)),
                ..
            } => Some(rid.as_str()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    match store_tx::refunds_by_stripe_ids(&ctx.store, &ids).await {
        Ok(found) => Ok(found
            .into_iter()
            .filter_map(|r| r.stripe_refund_id.clone().map(|id| (id, r)))
            .collect()),
        Err(e) => Err(format!("looking up refunds: {e}")),
    }
}

/// What `row` means for the connection's transactions (SPEC §3.5), given what it says and the
/// transactions and refunds of its batch.
fn plan(
    row: &InboxRow,
    reading: Reading,
    found: &Named,
    refunds: &Result<HashMap<String, RefundRow>, String>,
) -> Plan {
    let (pi_id, observations, refund_named) = match reading {
        Reading::Decided(plan) => return plan,
        Reading::About {
            pi_id,
            observations,
            refund,
        } => (pi_id, observations, refund),
    };
    let Some(t) = found.get(&(row.connection_id.clone(), pi_id.clone())) else {
        return Plan::Ignore(format!("no transaction of this connection has {pi_id}"));
    };
    let mut refund = None;
    let mut refund_row_status: Option<String> = None;
    if let Some((rid, stripe_status)) = refund_named {
        match refunds.as_ref().map(|found| found.get(&rid)) {
            Ok(Some(r)) if r.transaction_id == t.id => {
                let status = stripe_map::refund_status(&stripe_status);
                refund_row_status = Some(r.status.clone());
                refund = Some((r.id.clone(), status));
            }
            Ok(_) => {}
            Err(e) => return Plan::Retry(format!("{e} (refund {rid})")),
        }
    }
    // Most events teach nothing new (copies, stale snapshots, shuffled order): found out on
    // this plain read, so they cost the write transaction nothing.
    let refund_moves = refund.as_ref().is_some_and(|(_, to)| {
        refund_row_status.as_deref() == Some("processing") && *to != "processing"
    });
    if !refund_moves && let Ok(mut state) = serde_json::from_str::<TransactionState>(&t.state) {
        let mut any = false;
        for o in &observations {
            let out = apply(&state, o);
            any |= !out.changes.is_empty();
            state = out.state;
        }
        if !any {
            return Plan::NothingNew;
        }
    }
    Plan::Apply {
        transaction_id: t.id.clone(),
        observations,
        refund,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_the_base_within_an_eighth_up_to_an_hour() {
        for _ in 0..100 {
            for (attempts, plain) in [
                (0, 5_000),
                (1, 5_000),
                (2, 10_000),
                (3, 20_000),
                (11, 3_600_000),
                (40, 3_600_000),
            ] {
                let d = retry_delay_ms(5_000, attempts);
                assert!(d >= plain * 7 / 8 && d <= plain * 9 / 8, "{attempts}: {d}");
            }
        }
        assert_eq!(retry_delay_ms(0, 3), 0);
    }

    /// The head read off the raw body is what the whole parsed document says; what is not
    /// JSON has none.
    #[test]
    fn an_event_head_reads_the_same_as_the_parsed_event() {
        let bodies = [
            r#"{"id":"evt_1","object":"event","type":"charge.succeeded","account":"acct_1","api_version":"2024-06-20","created":1700000000,"data":{"object":{"id":"ch_1","nested":[1,{"a":null}]}}}"#,
            r#"{"object":"event","id":"evt_2","type":"x","api_version":null}"#,
            r#"{"object":"event","id":42,"type":"x"}"#,
            r#"{"object":"event","id":"evt_3","id":"evt_4","type":"x"}"#,
            r#"{"object":"event","id":"evt_5","type":"x","created":1.5}"#,
            r#"{"object":"event","id":"evt_5","type":"x","created":99999999999999999999}"#,
            r#"{"object":"event","id":"evt_5","type":"x","created":1,"created":"2"}"#,
            r#"{"object":"event","id":"evt_\u00e9\n","type":"x","created":-1}"#,
            r#"[{"object":"event"}]"#,
            r#""event""#,
            r#"{"hello": "world"}"#,
            r#"{"object":"event","id":"evt_6","type":"x","data":{}}"#,
        ];
        for body in bodies {
            let whole: Value = serde_json::from_str(body).unwrap();
            let want = EventHead::of(&whole);
            let got = EventHead::parse(body).unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{body}");
        }
        let head = EventHead::parse(r#"{"id":"evt_1","object":"event","type":"x"}"#).unwrap();
        assert!(head.is_event());
        assert!(head.created_fits(), "no created at all");
        assert!(
            !EventHead::parse(r#"{"object":"event","id":42,"type":"x"}"#)
                .unwrap()
                .is_event()
        );
        assert!(
            !EventHead::parse(r#"{"hello": "world"}"#)
                .unwrap()
                .is_event()
        );
        for not_json in [
            "not json",
            "{\"id\":\"evt_1\"} trailing",
            "",
            "{\"id\":",
            // What the workers' reader refuses: a lone surrogate, a number out of range.
            r#"{"id":"evt_1","object":"event","type":"x","data":{"a":"\ud800"}}"#,
            r#"{"id":"evt_1","object":"event","type":"x","data":{"a":1e400}}"#,
        ] {
            assert_eq!(
                EventHead::parse(not_json).unwrap_err(),
                Unfit::NotJson,
                "{not_json}"
            );
            assert!(
                serde_json::from_str::<Value>(not_json).is_err(),
                "{not_json}"
            );
        }
    }

    /// `created` fits when absent or a Unix time in seconds up to the year 9999.
    #[test]
    fn created_must_be_a_plausible_time() {
        let head = |created: &str| {
            EventHead::parse(&format!(
                r#"{{"id":"evt_1","object":"event","type":"x","created":{created}}}"#
            ))
            .unwrap()
        };
        for fits in ["0", "1700000000", "253402300799"] {
            assert!(head(fits).created_fits(), "{fits}");
        }
        for absurd in [
            "-1",
            "253402300800",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "-9223372036854775809",
            "1e30",
            "1700000000.5",
            "\"1700000000\"",
            "null",
        ] {
            assert!(!head(absurd).created_fits(), "{absurd}");
        }
    }

    /// Nesting up to [`MAX_DEPTH`] levels is read (and the workers read it too); one more is
    /// refused, however deep it goes, without exhausting the stack.
    #[test]
    fn nesting_is_bounded() {
        let nested = |levels: usize| {
            // The event object is the first level.
            let inner = levels - 1;
            format!(
                r#"{{"id":"evt_1","object":"event","type":"x","data":{}1{}}}"#,
                "[".repeat(inner),
                "]".repeat(inner)
            )
        };
        let deepest = nested(MAX_DEPTH);
        assert!(EventHead::parse(&deepest).unwrap().is_event());
        assert!(serde_json::from_str::<Value>(&deepest).is_ok());
        for levels in [MAX_DEPTH + 1, 10_000, 200_000] {
            assert_eq!(
                EventHead::parse(&nested(levels)).unwrap_err(),
                Unfit::TooDeep,
                "{levels}"
            );
        }
        let objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(EventHead::parse(&objects).unwrap_err(), Unfit::TooDeep);
    }

    /// A NUL in any string or key, escaped (raw, it is not JSON), is refused and found.
    #[test]
    fn a_nul_anywhere_is_refused_and_named() {
        for (body, pointer) in [
            (r#"{"id":"evt_\u0000","object":"event","type":"x"}"#, "/id"),
            (
                r#"{"id":"evt_1","object":"event","type":"x","account":"acct_\u0000"}"#,
                "/account",
            ),
            (
                r#"{"id":"evt_1","object":"event","type":"x","data":{"object":{"metadata":{"a/b":["ok","x\u0000"]}}}}"#,
                "/data/object/metadata/a~1b/1",
            ),
            (
                r#"{"id":"evt_1","object":"event","type":"x","data":{"k\u0000":1}}"#,
                "/data/k\u{0}",
            ),
            (r#""\u0000""#, ""),
        ] {
            assert_eq!(EventHead::parse(body).unwrap_err(), Unfit::Nul, "{body}");
            assert_eq!(nul_pointer(body), pointer, "{body}");
        }
        // An escaped backslash before `u0000` is no NUL.
        let text = r#"{"id":"evt_1","object":"event","type":"x","note":"\\u0000"}"#;
        assert!(EventHead::parse(text).unwrap().is_event());
        // A raw NUL is not JSON at all.
        assert_eq!(
            EventHead::parse("{\"id\":\"evt_\u{0}\",\"object\":\"event\",\"type\":\"x\"}")
                .unwrap_err(),
            Unfit::NotJson
        );
    }

    async fn synchronous(db: &sqlx::AnyPool) -> i64 {
        sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
            .fetch_one(db)
            .await
            .unwrap()
    }

    /// The group-commit writer's connection commits without waiting for the disk while it is
    /// held, and never goes back to the pool that way: once back, every commit on it waits for
    /// the disk again, whether the writer let go of it after work or stopped right away.
    #[tokio::test]
    async fn the_relaxed_writer_connection_returns_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let wal = store.wal().unwrap().to_path_buf();
        assert!(wal.to_string_lossy().ends_with("t.db-wal"), "{wal:?}");
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        assert_eq!(synchronous(store.writer()).await, FULL);

        let mut h = Held::take(&store, true).await.unwrap();
        let conn = &mut h.conn;
        let held: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(held, NORMAL);
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut **conn)
            .await
            .unwrap();
        tollgate_store::sync_wal(&wal).unwrap();
        drop(h);
        assert_eq!(synchronous(store.writer()).await, FULL);

        drop(Held::take(&store, true).await.unwrap());
        assert_eq!(synchronous(store.writer()).await, FULL);
        // The table committed while relaxed is there for every connection.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(n, 0);
        // On PostgreSQL and in memory there is no log file to sync: commits stay durable.
        let memory = Store::connect("sqlite::memory:").await.unwrap();
        assert!(memory.wal().is_none());
    }
}
