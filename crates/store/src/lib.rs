//! Tollgate's storage: one schema on SQLite (the embedded default) and PostgreSQL, through
//! sqlx's `Any` driver so that every query is written once.
//!
//! Why `Any`: the schema sticks to TEXT, 64-bit integers and bytes (times are unix
//! milliseconds, booleans 0/1, JSON as text), which `Any` carries faithfully on both databases,
//! and `$N` placeholders work on both. The per-database differences left are few and explicit:
//! migrations (one folder each), `BEGIN IMMEDIATE` on SQLite (one writer; see [`Store::begin`])
//! and `FOR UPDATE` / `SKIP LOCKED` on PostgreSQL ([`Store::for_update`]).

pub mod accounts;
pub mod connections;
pub mod credits;
pub mod customers;
pub mod entitlements;
pub mod idempotency;
pub mod inbox;
pub mod meter_outbox;
mod nodelay;
pub mod operators;
pub mod outbox;
pub mod overview;
mod private_file;
mod query;
pub mod rows;
pub mod search;
pub mod stripe_features;
pub mod transactions;
pub mod upkeep;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor};

pub use rows::*;

/// A write transaction: on a pooled connection of its own ([`Store::begin`]) or on one a caller
/// holds ([`begin_on`]).
pub type Tx<'c> = sqlx::Transaction<'c, Any>;
/// A write connection taken out of the pool ([`Store::hold_writer`]); back in it when dropped.
pub type HeldConn = sqlx::pool::PoolConnection<Any>;
/// One database connection (a pooled one, or the inside of a [`Tx`]).
pub type Conn = sqlx::AnyConnection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row changed under us (optimistic concurrency) or a unique key is taken.
    #[error("conflict")]
    Conflict,
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("unsupported database URL (use sqlite:… or postgres:…)")]
    UnsupportedUrl,
}

impl StoreError {
    /// A unique-constraint violation (duplicate key).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Conflict => true,
            _ => false,
        }
    }

    /// A foreign-key violation (a row still referred to, or referring to one that is gone).
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e)) if e.is_foreign_key_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of an open connection.
    pub fn of(conn: &Conn) -> Backend {
        match conn.backend_name() {
            "SQLite" => Backend::Sqlite,
            _ => Backend::Postgres,
        }
    }

    /// ` FOR UPDATE` on PostgreSQL (row lock inside a transaction); nothing on SQLite, where
    /// `BEGIN IMMEDIATE` already serialises writers.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// The database: a read pool and a write pool (the same pool on PostgreSQL).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    read: AnyPool,
    write: AnyPool,
    /// SQLite on a file: its write-ahead log (see [`Store::wal`]).
    wal: Option<PathBuf>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`).
    pub async fn connect(url: &str) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        match backend {
            Backend::Sqlite => {
                private_file::create_sqlite_file(url)?;
                // SQLite has one writer at a time. A single-connection write pool makes writers
                // queue in the pool instead of failing with SQLITE_BUSY when a deferred
                // transaction upgrades; readers use WAL snapshots and never wait for it. Eight
                // readers: measured on 2 cores, 2 and 4 gave fewer permission checks per second
                // (each connection is a thread that blocks in SQLite; more hide the waits).
                let write = sqlite_pool(url, 1, true).await?;
                let read = sqlite_pool(url, 8, false).await?;
                let wal = wal_of(&write).await?;
                Ok(Store {
                    backend,
                    read,
                    write,
                    wal,
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Durability as SPEC §4 defines it.
                            conn.execute("SET synchronous_commit = on").await?;
                            if !nodelay::set_on(conn).await? {
                                tracing::debug!("PostgreSQL connection without TCP_NODELAY (a Unix socket, or its port not found)");
                            }
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                Ok(Store {
                    backend,
                    read: pool.clone(),
                    write: pool,
                    wal: None,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: copies what the WAL holds into the database file as far as readers allow
    /// (`PASSIVE`: it never waits for, nor blocks, the writer). Not for PostgreSQL.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_all(&self.read)
            .await?;
        Ok(())
    }

    /// Applies the migrations of this database.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.write).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.write).await?,
        }
        Ok(())
    }

    /// The database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> bool {
        let expected = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.iter().count(),
            Backend::Postgres => POSTGRES_MIGRATIONS.iter().count(),
        } as i64;
        let applied: std::result::Result<i64, _> =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.read)
                .await;
        matches!(applied, Ok(n) if n >= expected)
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads then writes cannot deadlock.
    pub async fn begin(&self) -> Result<Tx<'static>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    /// The write connection itself, held by a caller that runs many write transactions in a row
    /// ([`begin_on`]); other writers wait in the pool until it is dropped.
    pub async fn hold_writer(&self) -> Result<HeldConn> {
        Ok(self.write.acquire().await?)
    }

    /// A read connection, held for several reads in a row.
    pub async fn hold_reader(&self) -> Result<HeldConn> {
        Ok(self.read.acquire().await?)
    }

    /// The pool for single-statement writes outside a transaction (one connection on SQLite).
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// SQLite on a file: the path of its write-ahead log, for a writer that commits without
    /// waiting for the disk ([`relax_commits`]) and makes its commits durable afterwards with
    /// [`sync_wal`]. `None` on PostgreSQL and for an in-memory SQLite database.
    pub fn wal(&self) -> Option<&Path> {
        self.wal.as_deref()
    }

    /// See [`Backend::for_update`].
    pub fn for_update(&self) -> &'static str {
        self.backend.for_update()
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// What is left of the log file once the writer has started it over ([`WalRestart`]): 8 MiB.
const WAL_SIZE_LIMIT: &str = "PRAGMA journal_size_limit = 8388608";

/// The page cache of SQLite's write connection (see [`sqlite_pool`]): 8 MiB.
const WRITER_CACHE: &str = "PRAGMA cache_size = -8192";

/// The page cache of each of SQLite's eight read connections: 1 MiB (SQLite's default: 2 MiB).
/// Pages a reader misses come from the operating system's file cache, which all connections
/// share. Measured (issue 30): the server's peak memory under the webhooks benchmark fell by
/// about 30 MiB with this and the writer's 8 MiB (from 32), with no change in events or
/// permission checks per second beyond the runs' spread.
const READER_CACHE: &str = "PRAGMA cache_size = -1024";

async fn sqlite_pool(url: &str, max: u32, writer: bool) -> Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        // A local file cannot go away under an open connection: no ping before each use
        // (it cost a round trip to the connection's thread on every query).
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL for concurrent readers; FULL so that a commit is on disk before we
                // answer (SPEC §4's definition of durable); a busy timeout for the moments
                // two pools touch the file at once.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                if writer {
                    // Checkpoints run beside the writer ([`Store::checkpoint`]), not inside its
                    // commits: a commit past this many pages of WAL checkpoints itself, and the
                    // sync of the database file that ends a checkpoint held the writer, and
                    // every event waiting on it, for 10–35 ms. Under a steady stream of writes
                    // the checkpoints beside the writer rarely find the log all copied at the
                    // moment a write begins, which is when SQLite starts the log over; so the
                    // log grows until this bound (400 MiB). At 16,000 pages the writer
                    // checkpointed about once a second under the webhooks benchmark, and its
                    // p99 acknowledgement went from about 40 ms to 60–80 ms.
                    conn.execute("PRAGMA wal_autocheckpoint = 100000").await?;
                    // The log is started over by the writer itself (see [`WalRestart`]); on the
                    // first commit after that, the file is cut back to this size, so that its
                    // length tells how much log there is.
                    conn.execute(WAL_SIZE_LIMIT).await?;
                    // A statement that may fail halfway inside a transaction keeps the pages it
                    // changes in a statement journal, to undo itself alone. SQLite holds 64 KiB
                    // of it in memory and writes the rest to a temporary file; a batch's
                    // multi-row statements went past that, and those file writes were about a
                    // twelfth of the write connection's time in the webhooks benchmark. In
                    // memory it is at most the pages one statement changes, and nothing of it
                    // needs to survive a crash (the log holds only committed pages).
                    conn.execute("PRAGMA temp_store = MEMORY").await?;
                    // The writer's page cache holds 8 MiB (SQLite's default: 2 MiB). A batch
                    // touches pages all over the database (the dedupe index, as event ids
                    // arrive in no order; transactions; entitlement rows), and with 2 MiB
                    // about a twelfth of the connection's thread went to reading pages back
                    // from the log or the file. 32 MiB was faster than 2 in 6 of 7 runs on a
                    // loaded machine (about 6 %); on a quiet one, 8 MiB and 4 MiB were as fast
                    // as 32 (interleaved runs of the webhooks benchmark) and the server's peak
                    // memory under that load was 24 MiB lower (issue 30's bound: 100 MB).
                    conn.execute(WRITER_CACHE).await?;
                } else {
                    conn.execute(READER_CACHE).await?;
                }
                Ok(())
            })
        })
        .after_release(move |conn, _| {
            Box::pin(async move {
                // A holder may have relaxed its commits ([`relax_commits`]): back in the pool,
                // every commit waits for the disk again (an error closes the connection).
                if writer {
                    conn.execute("PRAGMA synchronous = FULL").await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await?)
}

/// The `-wal` file beside the main database file of `pool` (SQLite), if it is a file.
async fn wal_of(pool: &AnyPool) -> Result<Option<PathBuf>> {
    use sqlx::Row;
    let rows = sqlx::query("PRAGMA database_list").fetch_all(pool).await?;
    for row in rows {
        let name: String = row.try_get(1)?;
        let file: String = row.try_get(2)?;
        if name == "main" && !file.is_empty() {
            return Ok(Some(PathBuf::from(format!("{file}-wal"))));
        }
    }
    Ok(None)
}

/// SQLite: commits on `conn`, a write connection held out of the pool
/// ([`Store::hold_writer`]), no longer wait for the disk (`synchronous = NORMAL`: they only hand
/// their pages to the operating system). The holder must make them durable with [`sync_wal`]
/// before it reports them. The write pool turns durable commits back on whenever a connection
/// returns to it (or closes the connection), so no other writer ever gets a relaxed one.
pub async fn relax_commits(conn: &mut Conn) -> Result<()> {
    use sqlx::Executor;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    Ok(())
}

/// Makes every commit written to the write-ahead log `wal` so far durable (what
/// `synchronous = FULL` does inside each commit). Blocking: call it off the async runtime.
///
/// Why this is enough: in WAL mode a commit appends its pages and a commit mark to this file,
/// which SQLite reads back after a crash; a restart of the log only happens after a
/// checkpoint has copied it into the database file and synced both. Syncing the file syncs
/// every write made to it before the call, whichever connection made it.
pub fn sync_wal(wal: &Path) -> std::io::Result<()> {
    std::fs::File::open(wal)?.sync_data()
}

/// SQLite: keeps the write-ahead log small without a checkpoint inside any commit.
///
/// SQLite starts its log over (writes from its beginning again) only when a write transaction
/// begins while every frame of the log has been copied into the database file. The
/// checkpoints beside the writer ([`Store::checkpoint`], every 100 ms) copy the log as far as
/// it reaches when they start; under a steady stream of commits the writer has always added
/// more by then, so the log only grew, to hundreds of megabytes, until the writer's own
/// automatic checkpoint copied all of it inside one commit (one run fell to 2,291 events/s,
/// p99 80 ms).
///
/// So the writer, between two of its transactions (its caller calls [`WalRestart::between`]),
/// checks the log file's length; past [`WalRestart::over`] bytes it runs a `PASSIVE` checkpoint
/// itself. With no commit of its own in flight, that copies the few frames the last
/// checkpoint beside it left (and syncs the database file), and its next transaction starts
/// the log over; the first commit after that cuts the file back to 8 MiB
/// (`journal_size_limit`). A reader still on an older snapshot can keep the log from being all
/// copied; the writer then tries again at most every [`WalRestart::RETRY`].
///
/// Durability is SQLite's own: the log is only overwritten after its frames are in the
/// database file and that file is synced.
#[derive(Debug)]
pub struct WalRestart {
    wal: PathBuf,
    over: u64,
    retry: Duration,
    tried: Option<std::time::Instant>,
}

impl WalRestart {
    /// The log length past which the writer starts it over (see the type): 128 MiB. At 32 MiB
    /// the restarts (each a pause of every write) came often enough to set the p99 of the
    /// credits consume benchmark (spread p99 29-34 ms against 16-27 ms at 128 MiB, quiet 2 cores).
    pub const OVER: u64 = 128 << 20;
    /// The shortest time between two tries.
    pub const RETRY: Duration = Duration::from_millis(100);

    /// For the log `wal` ([`Store::wal`]), started over past `over` bytes.
    pub fn new(wal: PathBuf, over: u64) -> WalRestart {
        WalRestart {
            wal,
            over,
            retry: Self::RETRY,
            tried: None,
        }
    }

    /// The same with another shortest time between two tries.
    pub fn retrying_after(self, retry: Duration) -> WalRestart {
        WalRestart { retry, ..self }
    }

    /// The bound in bytes.
    pub fn over(&self) -> u64 {
        self.over
    }

    /// Call on the write connection `conn` between two of its transactions (none open):
    /// checkpoints all of the log when it is past the bound, so that the next write
    /// transaction starts it over. Returns whether it checkpointed everything. Blocking for the
    /// time of one `stat` of the log file when there is nothing to do.
    pub async fn between(&mut self, conn: &mut Conn) -> Result<bool> {
        use sqlx::Row;
        if self.tried.is_some_and(|t| t.elapsed() < self.retry) {
            return Ok(false);
        }
        let len = match std::fs::metadata(&self.wal) {
            Ok(m) => m.len(),
            // No log file (yet): nothing to start over.
            Err(_) => return Ok(false),
        };
        if len <= self.over {
            return Ok(false);
        }
        self.tried = Some(std::time::Instant::now());
        // (busy, frames in the log, frames copied); busy when another checkpoint is running.
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
        let busy: i64 = row.try_get(0)?;
        let log: i64 = row.try_get(1)?;
        let copied: i64 = row.try_get(2)?;
        Ok(busy == 0 && log == copied)
    }
}

/// Starts a write transaction on a connection the caller holds (see [`Store::hold_writer`]):
/// `BEGIN IMMEDIATE` on SQLite, as [`Store::begin`].
pub async fn begin_on(conn: &mut Conn, backend: Backend) -> Result<Tx<'_>> {
    use sqlx::Connection;
    Ok(match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    })
}

/// Commits a write transaction begun with [`Store::begin`] or [`begin_on`].
pub async fn commit(tx: Tx<'_>) -> Result<()> {
    tx.commit().await?;
    Ok(())
}

/// Rolls a write transaction back.
pub async fn rollback(tx: Tx<'_>) -> Result<()> {
    tx.rollback().await?;
    Ok(())
}

/// A new time-ordered id (UUID v7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under a steady stream of relaxed commits (as the inbox writer makes them) with the
    /// checkpoints beside the writer running, the writer's checks between its transactions keep
    /// the log file near its bound, where before it grew with every commit (to 400 MiB, the
    /// writer's automatic checkpoint); and nothing committed is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_keeps_the_log_near_its_bound() {
        const OVER: u64 = 16 << 20;
        const COMMIT: u64 = 256 << 10;
        const COMMITS: u64 = 240; // 60 MiB of pages
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let wal = store.wal().unwrap().to_path_buf();
        sqlx::query("CREATE TABLE blobs (b BLOB NOT NULL)")
            .execute(store.writer())
            .await
            .unwrap();
        let beside = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    store.checkpoint().await.unwrap();
                }
            })
        };
        let mut conn = store.hold_writer().await.unwrap();
        relax_commits(&mut conn).await.unwrap();
        let mut restart = WalRestart::new(wal.clone(), OVER).retrying_after(Duration::ZERO);
        let mut longest = 0;
        for _ in 0..COMMITS {
            let mut tx = begin_on(&mut conn, Backend::Sqlite).await.unwrap();
            sqlx::query("INSERT INTO blobs (b) VALUES (randomblob($1))")
                .bind(COMMIT as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            commit(tx).await.unwrap();
            sync_wal(&wal).unwrap();
            longest = longest.max(std::fs::metadata(&wal).unwrap().len());
            restart.between(&mut conn).await.unwrap();
        }
        beside.abort();
        // A try can find the checkpoint beside it running (and the next one starts the log
        // over): a few commits' worth past the bound at most.
        assert!(
            longest <= OVER + 8 * COMMIT,
            "the log reached {longest} bytes (bound {OVER})"
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows, COMMITS as i64);
    }
}
