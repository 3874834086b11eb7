//! Consumes, each one commit, grouped on SQLite.
//!
//! A consume keeps its `Idempotency-Key` in the transaction of its work, with the same scope,
//! body hash, sealing and replays as the Idempotency-Key middleware gives other POSTs: the
//! record is read there (a stored answer, another body or a request still running answer at
//! once, writing nothing) and written there with the sealed answer. So a keyed consume is one
//! commit, not three (the middleware's claim, the work, the answer), and an answer is kept
//! exactly when its work committed. Input the handler refuses (a 400) is not kept, as at
//! Stripe: the same key may be sent again with a corrected body.
//!
//! SQLite has one writer: consumes waiting for it are applied together in one transaction
//! (group commit) by the writer of the webhook inbox, which holds the write connection. Each
//! consume is applied in turn, so a refusal (402, 404) is an answer like any other and does
//! not abort its neighbours; an error aborts the group, whose consumes are then applied one by
//! one, each in a commit of its own. The group's commit does not wait for the disk: the log is
//! synced afterwards, beside the writer, and only then are its callers answered (a 2xx means
//! committed and synced), while the writer already commits the next group.
//!
//! PostgreSQL: each consume commits on its own; the conditional `UPDATE` of the balance row
//! (a row lock) keeps concurrent consumes of several servers exact, and a key used by two
//! requests at once is kept by the first to commit (the other rolls its work back and
//! replays it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tollgate_domain::credits::Overage;
use tollgate_store::credits::{self as cs, HotBalance, LedgerRow};
use tollgate_store::idempotency::{self as idem, Claim, Scope, Stored};
use tollgate_store::{Backend, Conn, Tx};

use super::ConsumeOut;
use crate::ApiContext;
use crate::entitlements::credits as svc;
use crate::error::{ApiError, ApiResult};

/// Consumes per commit at most (the rest wait for the next one).
const MAX_GROUP: usize = 256;

/// One consume, checked.
pub struct Consume {
    pub merchant: String,
    pub permission: String,
    pub customid: String,
    pub units: i64,
    pub overage: Overage,
    pub metadata: Option<Value>,
    pub key: Option<Keyed>,
}

/// The `Idempotency-Key` of a consume: its record's scope and the hash of the body.
pub struct Keyed {
    pub scope: Scope,
    pub body_hash: String,
}

/// What a consume answers.
#[derive(Debug)]
pub enum Answer {
    /// Its work's answer (a 200 or a refusal), committed, and kept under its key if it has one.
    Done { status: StatusCode, body: String },
    /// The answer kept under its key.
    Replay { status: u16, body: Stored },
    /// Not run, nothing kept: the key is in use by a request still running, or was used with
    /// another body.
    Refused(ApiError),
}

/// The consumes of a server (see the module's text); in its context.
#[derive(Default)]
pub struct Consumes {
    group: OnceLock<Arc<Group>>,
}

/// SQLite: the consumes waiting for the writer, and the syncer that answers them.
struct Group {
    queue: Mutex<Queue>,
    syncer: Option<Syncer>,
    /// The server's runtime (the writer runs on a thread of its own).
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    /// A job is queued at the writer that has not taken the waiting consumes yet.
    queued: bool,
}

type Reply = oneshot::Sender<ApiResult<Answer>>;

struct Pending {
    consume: Consume,
    reply: Reply,
}

/// Applies `c`: on SQLite in the next group commit, on PostgreSQL in a transaction of its own.
pub async fn consume(ctx: &ApiContext, c: Consume) -> ApiResult<Answer> {
    if ctx.store.backend() != Backend::Sqlite {
        let mut conn = ctx.store.hold_writer().await?;
        return alone(ctx, &mut conn, Backend::Postgres, &c).await;
    }
    let group = ctx.consumes.group.get_or_init(|| {
        let runtime = tokio::runtime::Handle::current();
        Arc::new(Group {
            queue: Mutex::default(),
            syncer: ctx
                .store
                .wal()
                .map(|wal| Syncer::start(&runtime, wal.to_path_buf())),
            runtime,
        })
    });
    let (reply, answer) = oneshot::channel();
    let queue_job = {
        let mut q = group.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.waiting.push(Pending { consume: c, reply });
        !std::mem::replace(&mut q.queued, true)
    };
    if queue_job {
        submit(ctx.clone(), group.clone());
    }
    answer.await.unwrap_or_else(|_| Err(stopped()))
}

fn stopped() -> ApiError {
    ApiError::Internal("the consume writer stopped".into())
}

/// Queues a job at the writer that takes every consume waiting when it runs. A task of its
/// own: the queueing must not be cancelled with the request that started it.
fn submit(ctx: ApiContext, group: Arc<Group>) {
    let runtime = group.runtime.clone();
    runtime.spawn(async move {
        let ran = Arc::new(AtomicBool::new(false));
        let inbox = ctx.inbox.clone();
        let done = {
            let (ctx, group, ran) = (ctx.clone(), group.clone(), ran.clone());
            inbox
                .write_one(move |conn| {
                    ran.store(true, Ordering::SeqCst);
                    Box::pin(async move { run_group(&ctx, &group, conn).await })
                })
                .await
        };
        if let Err(e) = done
            && !ran.load(Ordering::SeqCst)
        {
            // The writer could not run it: the consumes waiting are told, and the next one
            // queues a job again.
            let waiting = {
                let mut q = group.queue.lock().unwrap_or_else(PoisonError::into_inner);
                q.queued = false;
                std::mem::take(&mut q.waiting)
            };
            tracing::warn!(error = %e, consumes = waiting.len(), "the consume writer could not run");
            for p in waiting {
                let _ = p.reply.send(Err(stopped()));
            }
        }
    });
}

/// The writer's job: applies the consumes waiting in one commit and answers each once it is
/// durable. `Err` when the connection is no longer fit for the next job.
async fn run_group(ctx: &ApiContext, group: &Arc<Group>, conn: &mut Conn) -> ApiResult<()> {
    let (batch, more) = {
        let mut q = group.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = q.waiting.len().min(MAX_GROUP);
        let batch: Vec<Pending> = q.waiting.drain(..n).collect();
        // Consumes beyond this group: this job queues the next one. Otherwise the next consume
        // to arrive does.
        q.queued = !q.waiting.is_empty();
        (batch, q.queued)
    };
    if more {
        submit(ctx.clone(), group.clone());
    }
    if batch.is_empty() {
        return Ok(());
    }
    let now = ctx.now();
    let mut tx = tollgate_store::begin_on(conn, Backend::Sqlite).await?;
    let grouped = match apply_group(ctx, &mut tx, now, &batch).await {
        Ok(answers) => tollgate_store::commit(tx)
            .await
            .map(|()| answers)
            .map_err(ApiError::from),
        Err(e) => {
            tollgate_store::rollback(tx).await?;
            Err(e)
        }
    };
    let told: Vec<(Reply, ApiResult<Answer>)> = match grouped {
        Ok(answers) => batch
            .into_iter()
            .zip(answers)
            .map(|(p, a)| (p.reply, Ok(a)))
            .collect(),
        Err(e) if batch.len() == 1 => batch
            .into_iter()
            .zip(std::iter::once(Err(e)))
            .map(|(p, a)| (p.reply, a))
            .collect(),
        Err(e) => {
            // One failure must not fail the others: each on its own.
            tracing::warn!(error = %e, consumes = batch.len(), "a group of consumes failed; applying them one by one");
            let mut told = Vec::with_capacity(batch.len());
            for p in batch {
                let a = alone(ctx, conn, Backend::Sqlite, &p.consume).await;
                told.push((p.reply, a));
            }
            told
        }
    };
    match &group.syncer {
        // Committed without waiting for the disk: answered once the log is synced.
        Some(s) => s.after_sync(told),
        None => {
            for (reply, a) in told {
                let _ = reply.send(a);
            }
        }
    }
    Ok(())
}

/// A balance: (merchant account, customid, permission).
type BalanceKey = (String, String, String);

fn balance_key(c: &Consume) -> BalanceKey {
    (c.merchant.clone(), c.customid.clone(), c.permission.clone())
}

/// Applies a group's consumes in order inside `tx` (SQLite), with the answer of each; `Err`
/// aborts the group.
///
/// The group reads its keys' records and its balances in one statement each, works each
/// consume out in memory and writes what they did in a few statements (see
/// `tollgate_store::credits::put_consumed`): SQLite runs each statement, and hands back each
/// row, on its connection's thread, and those hand-offs cost more than the work. A consume the
/// common case does not cover (a balance without enough available, with something due or
/// not there, a balance event to send, a key used twice in the group) is applied by [`apply`]
/// as before, after what the group did so far is written; the transaction is the writer's
/// alone, so what is read at the start stays true but for what the group writes.
async fn apply_group(
    ctx: &ApiContext,
    tx: &mut Tx<'_>,
    now: i64,
    batch: &[Pending],
) -> ApiResult<Vec<Answer>> {
    let keyed: Vec<(&Scope, &str)> = batch
        .iter()
        .filter_map(|p| p.consume.key.as_ref())
        .map(|k| (&k.scope, k.body_hash.as_str()))
        .collect();
    let mut claims = idem::lookup_many(tx, &keyed, now).await?.into_iter();
    let mut balances: HashMap<BalanceKey, Option<HotBalance>> = HashMap::new();
    read_balances(tx, &mut balances, batch.iter().map(|p| &p.consume)).await?;
    let mut seen: HashSet<&Scope> = HashSet::new();
    let mut w = Writes::default();
    let mut answers = Vec::with_capacity(batch.len());
    for p in batch {
        let c = &p.consume;
        let claim = match &c.key {
            Some(k) => Some((
                claims
                    .next()
                    .ok_or_else(|| ApiError::Internal("an idempotency record is missing".into()))?,
                !seen.insert(&k.scope),
            )),
            None => None,
        };
        match claim {
            // The key's record lets it run.
            Some((Claim::Started, false)) | None => {}
            Some((found, false)) => {
                answers.push(found_answer(found));
                continue;
            }
            // The key's second use in this group: its record as the first left it.
            Some((_, true)) => {}
        }
        let again = matches!(claim, Some((_, true)));
        if !again {
            if !balances.contains_key(&balance_key(c)) {
                read_balances(tx, &mut balances, std::iter::once(c)).await?;
            }
            if let Some(a) = w.hot(ctx, &mut balances, now, c)? {
                answers.push(a);
                continue;
            }
        }
        w.flush(ctx, tx, now).await?;
        match apply(ctx, tx, now, c).await? {
            Step::Answer(a) => answers.push(a),
            // Not on the one writer, which reads what it wrote: taken as an error.
            Step::Raced => {
                return Err(ApiError::Internal("an idempotency record moved".into()));
            }
        }
        // Read again when next needed.
        balances.remove(&balance_key(c));
    }
    w.flush(ctx, tx, now).await?;
    Ok(answers)
}

/// Reads the balances of `consumes` not read yet into `balances`, in one statement.
async fn read_balances<'a>(
    tx: &mut Tx<'_>,
    balances: &mut HashMap<BalanceKey, Option<HotBalance>>,
    consumes: impl Iterator<Item = &'a Consume>,
) -> ApiResult<()> {
    let mut wanted: Vec<BalanceKey> = Vec::new();
    let mut asked: HashSet<BalanceKey> = HashSet::new();
    for c in consumes {
        let k = balance_key(c);
        if !balances.contains_key(&k) && asked.insert(k.clone()) {
            wanted.push(k);
        }
    }
    let keys: Vec<(&str, &str, &str)> = wanted
        .iter()
        .map(|(m, c, p)| (m.as_str(), c.as_str(), p.as_str()))
        .collect();
    let found = cs::hot_balances(tx, &keys).await?;
    balances.extend(wanted.into_iter().zip(found));
    Ok(())
}

/// What a group's consumes did and has not written yet.
#[derive(Default)]
struct Writes {
    /// Each balance's figures now, and the units consumed from it since the last write.
    balances: Vec<(BalanceKey, i64, i64)>,
    rows: Vec<(String, LedgerRow)>,
    /// Customers whose balances changed (the permission cache's change log).
    changed: Vec<(String, String)>,
    answers: Vec<(Scope, String, u16, Vec<u8>)>,
}

impl Writes {
    /// The common case of a consume: its balance has enough available, nothing due, and no
    /// balance event to send (the one `UPDATE` of `consume_in`'s hot path would take it, and
    /// send nothing). `None`: not that case, nothing done.
    fn hot(
        &mut self,
        ctx: &ApiContext,
        balances: &mut HashMap<BalanceKey, Option<HotBalance>>,
        now: i64,
        c: &Consume,
    ) -> ApiResult<Option<Answer>> {
        let key = balance_key(c);
        let Some(Some(b)) = balances.get_mut(&key) else {
            return Ok(None);
        };
        if b.balance - b.held < c.units || b.due_at.is_some_and(|d| d <= now) {
            return Ok(None);
        }
        let before = b.balance;
        let after = before - c.units;
        if b.low_threshold.is_some_and(|t| before > t && after <= t) || after == 0 {
            return Ok(None);
        }
        let mut row = svc::consumed_row(&c.customid, &c.permission, c.units, after, now);
        row.metadata = c.metadata.as_ref().map(Value::to_string);
        let out = serde_json::to_string(&ConsumeOut {
            balance: after,
            consumed: c.units,
            ledger_id: row.id.clone(),
        })
        .map_err(|e| ApiError::Internal(format!("rendering a consume: {e}")))?;
        if let Some(k) = &c.key {
            let sealed = ctx.keys.seal(&k.scope.row_id(), &out);
            self.answers.push((
                k.scope.clone(),
                k.body_hash.clone(),
                StatusCode::OK.as_u16(),
                sealed,
            ));
        }
        b.balance = after;
        match self.balances.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, balance, consumed)) => {
                *balance = after;
                *consumed += c.units;
            }
            None => self.balances.push((key, after, c.units)),
        }
        if !self
            .changed
            .iter()
            .any(|(m, id)| *m == c.merchant && *id == c.customid)
        {
            self.changed.push((c.merchant.clone(), c.customid.clone()));
        }
        self.rows.push((c.merchant.clone(), row));
        Ok(Some(Answer::Done {
            status: StatusCode::OK,
            body: out,
        }))
    }

    /// Writes what the group did so far.
    async fn flush(&mut self, ctx: &ApiContext, tx: &mut Tx<'_>, now: i64) -> ApiResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let balances: Vec<cs::Consumed<'_>> = self
            .balances
            .iter()
            .map(
                |((merchant, customid, permission), balance, consumed)| cs::Consumed {
                    merchant,
                    customid,
                    permission,
                    balance: *balance,
                    consumed: *consumed,
                },
            )
            .collect();
        let rows: Vec<(&str, &LedgerRow)> =
            self.rows.iter().map(|(m, r)| (m.as_str(), r)).collect();
        let changed: Vec<(&str, &str)> = self
            .changed
            .iter()
            .map(|(m, c)| (m.as_str(), c.as_str()))
            .collect();
        cs::put_consumed(tx, &balances, &rows, &changed, now).await?;
        // As `note_change` does for each: one mark per change-log row.
        for (merchant, customid) in &self.changed {
            ctx.entitlements.invalidate(merchant, customid);
        }
        if !self.answers.is_empty() {
            let answers: Vec<idem::Answer<'_>> = self
                .answers
                .iter()
                .map(|(scope, body_hash, status, sealed)| idem::Answer {
                    scope,
                    body_hash,
                    status: *status,
                    sealed,
                })
                .collect();
            let ttl = crate::idempotency::ttl_ms(ctx);
            let kept = idem::put_answers(tx, &answers, now, ttl).await?;
            if kept != answers.len() as u64 {
                return Err(ApiError::Internal("an idempotency record moved".into()));
            }
        }
        *self = Writes::default();
        Ok(())
    }
}

/// A step of one consume inside a transaction.
enum Step {
    Answer(Answer),
    /// PostgreSQL: another request with the same key committed first; roll back and read it.
    Raced,
}

/// Applies `c` inside `tx`: its key's record read, the consumption, and its answer kept under
/// the key, sealed. `Err`: the transaction is to be rolled back and nothing kept (a 5xx).
async fn apply(ctx: &ApiContext, tx: &mut Tx<'_>, now: i64, c: &Consume) -> ApiResult<Step> {
    if let Some(k) = &c.key {
        match idem::lookup(&mut **tx, &k.scope, &k.body_hash, now).await? {
            Claim::Started => {}
            found => return Ok(Step::Answer(found_answer(found))),
        }
    }
    let done = svc::consume_in(
        ctx,
        tx,
        now,
        &c.merchant,
        &c.permission,
        &c.customid,
        c.units,
        c.overage,
        c.metadata.as_ref(),
    )
    .await;
    let (status, body) = match done {
        Ok(d) => (
            StatusCode::OK,
            serde_json::to_string(&ConsumeOut {
                balance: d.balance,
                consumed: d.consumed,
                ledger_id: d.ledger_id,
            }),
        ),
        // Refusals are answers (the insufficient balance's settled expiries are kept).
        Err(e @ (ApiError::InsufficientBalance { .. } | ApiError::NotFound(_))) => {
            (e.status(), serde_json::to_string(&e.envelope()))
        }
        Err(e) => return Err(e),
    };
    let body = body.map_err(|e| ApiError::Internal(format!("rendering a consume: {e}")))?;
    if let Some(k) = &c.key {
        let sealed = ctx.keys.seal(&k.scope.row_id(), &body);
        let ttl = crate::idempotency::ttl_ms(ctx);
        let kept = idem::put_answer(
            &mut **tx,
            &k.scope,
            &k.body_hash,
            status.as_u16(),
            &sealed,
            now,
            ttl,
        )
        .await?;
        if !kept {
            return Ok(Step::Raced);
        }
    }
    Ok(Step::Answer(Answer::Done { status, body }))
}

/// The answer of a key's record that does not let the request run.
fn found_answer(found: Claim) -> Answer {
    match found {
        Claim::Replay { status, body } => Answer::Replay { status, body },
        Claim::Mismatch => Answer::Refused(ApiError::IdempotencyKeyMismatch),
        // A record there, but not one to run over: still running.
        Claim::InProgress | Claim::Started => Answer::Refused(ApiError::ConcurrentRequest),
    }
}

/// Applies `c` in a transaction of its own on `conn`.
async fn alone(
    ctx: &ApiContext,
    conn: &mut Conn,
    backend: Backend,
    c: &Consume,
) -> ApiResult<Answer> {
    let now = ctx.now();
    let mut tx = tollgate_store::begin_on(conn, backend).await?;
    match apply(ctx, &mut tx, now, c).await {
        Ok(Step::Answer(a)) => {
            tollgate_store::commit(tx).await?;
            Ok(a)
        }
        Ok(Step::Raced) => {
            tollgate_store::rollback(tx).await?;
            let Some(k) = &c.key else {
                return Err(ApiError::Internal("a consume without a key raced".into()));
            };
            let found = idem::lookup(&mut *conn, &k.scope, &k.body_hash, ctx.now()).await?;
            Ok(found_answer(found))
        }
        Err(e) => {
            tollgate_store::rollback(tx).await?;
            Err(e)
        }
    }
}

/// Syncs the SQLite log after the writer's commits, which do not wait for the disk, then
/// answers their consumes; one sync covers every commit made before it began.
struct Syncer {
    queue: mpsc::UnboundedSender<Vec<(Reply, ApiResult<Answer>)>>,
}

impl Syncer {
    fn start(runtime: &tokio::runtime::Handle, wal: std::path::PathBuf) -> Syncer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Vec<(Reply, ApiResult<Answer>)>>();
        runtime.spawn(async move {
            let mut waiting = Vec::new();
            while rx.recv_many(&mut waiting, usize::MAX).await > 0 {
                // Everything received here was committed before this sync begins.
                let wal = wal.clone();
                let synced = tokio::task::spawn_blocking(move || tollgate_store::sync_wal(&wal))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| format!("syncing the SQLite log: {e}")));
                if let Err(e) = &synced {
                    tracing::error!(error = %e, "consumes are not known to be durable");
                }
                for (reply, a) in waiting.drain(..).flatten() {
                    let a = match &synced {
                        Ok(()) => a,
                        Err(e) => Err(ApiError::Internal(e.clone())),
                    };
                    let _ = reply.send(a);
                }
            }
        });
        Syncer { queue }
    }

    fn after_sync(&self, told: Vec<(Reply, ApiResult<Answer>)>) {
        if let Err(back) = self.queue.send(told) {
            for (reply, _) in back.0 {
                let _ = reply.send(Err(ApiError::Internal("the consume syncer stopped".into())));
            }
        }
    }
}
