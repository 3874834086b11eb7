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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tollgate_domain::credits::Overage;
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
    let mut answers = Vec::with_capacity(batch.len());
    let mut failed = None;
    for p in &batch {
        match apply(ctx, &mut tx, now, &p.consume).await {
            Ok(Step::Answer(a)) => answers.push(a),
            // Not on the one writer, which reads what it wrote: taken as an error.
            Ok(Step::Raced) => {
                failed = Some(ApiError::Internal("an idempotency record moved".into()));
                break;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let grouped = match failed {
        None => tollgate_store::commit(tx).await.map_err(ApiError::from),
        Some(e) => {
            tollgate_store::rollback(tx).await?;
            Err(e)
        }
    };
    let told: Vec<(Reply, ApiResult<Answer>)> = match grouped {
        Ok(()) => batch
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
