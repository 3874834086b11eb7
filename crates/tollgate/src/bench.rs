//! `tollgate bench …`: benchmarks that print figures a reviewer can rerun.
//!
//! Run them on a release build (`cargo run --release -- bench sandbox`); debug builds are
//! several times slower and say nothing about production. Run them with `RUST_LOG=warn`: at the
//! default level the server logs a line per request, and the benchmark would measure that too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Subcommand, ValueEnum};
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tollgate_server::clock::{Clock, SystemClock};
use tollgate_server::{Config, SandboxHandle, ServeOptions};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// PaymentIntent create + confirm pairs against an in-process sandbox over loopback HTTP.
    Sandbox {
        /// Number of create+confirm pairs.
        #[arg(long, default_value_t = 30_000)]
        pairs: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// `POST /transactions` (redirect flow) against the real server with the in-process sandbox
    /// as Stripe, on a fresh SQLite or PostgreSQL database.
    Transactions {
        /// The database: a fresh SQLite file in a temporary data directory, or a fresh
        /// PostgreSQL database (created on the server of --database-url, dropped at the end).
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        /// Number of measured creates.
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Creates sent first and not measured (connections, caches, database warm).
        #[arg(long, default_value_t = 200)]
        warmup: usize,
    },
    /// Signed Stripe events into `POST /webhooks/stripe/{id}` over loopback: acknowledged
    /// (durable in the inbox) and applied per second, acknowledgement latency, and whether the
    /// stored transactions and subscribers' permissions match the stream.
    Webhooks {
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        /// Distinct events sent (a few percent more are sent again as duplicates).
        #[arg(long, default_value_t = 30_000)]
        events: usize,
        /// Transactions the payment events are about (each gets a full lifecycle, repeated).
        #[arg(long, default_value_t = 1_000)]
        objects: usize,
        /// Concurrent senders (keep-alive connections).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Runs one after another on the same database and server (each with its own events
        /// and objects), then a table of the rounds' rates side by side.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Run the server as its own process (`tollgate serve`, this executable) and the
        /// senders in this one: the server's peak RSS and CPU are then reported apart from
        /// the senders'.
        #[arg(long)]
        server_process: bool,
        /// One long stream instead of rounds: `--events` distinct events (e.g. 1000000),
        /// generated and signed in chunks as the senders go, with figures per `--slice`
        /// events (rates, p99, database size per stored event, server RSS) and the inbox
        /// pruned during the run (see `--retention-secs`).
        #[arg(long)]
        long_run: bool,
        /// Long run: events per reported slice.
        #[arg(long, default_value_t = 100_000)]
        slice: usize,
        /// Long run: applied inbox rows older than this are pruned (the server's own prune,
        /// `inbox_retention_days`, runs hourly; the benchmark runs the same prune every
        /// `--prune-every-secs` with this retention). 0: no pruning.
        #[arg(long, default_value_t = 60)]
        retention_secs: u64,
        /// Long run: seconds between two prunes.
        #[arg(long, default_value_t = 10)]
        prune_every_secs: u64,
        /// The server's inbox workers (`inbox_workers`; default: the server's own default).
        #[arg(long)]
        inbox_workers: Option<u32>,
        /// Events per inbox batch (`inbox_batch`; default: the server's own default).
        #[arg(long)]
        inbox_batch: Option<u32>,
    },
    /// `GET /v1/permissions` (public key) on the real server: seeds customers with
    /// permissions straight into the read model, then checks random customers over keep-alive
    /// connections on loopback.
    Permissions {
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        /// Customers seeded, each with permissions.
        #[arg(long, default_value_t = 100_000)]
        customers: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unmeasured seconds first (connections, caches, database warm).
        #[arg(long, default_value_t = 2)]
        warmup_seconds: u64,
        /// Each connection remembers the `ETag` of every customer it checked and sends it back
        /// (`If-None-Match`): an unchanged answer is a 304 without a body.
        #[arg(long)]
        if_none_match: bool,
    },
    /// `POST /v1/permissions/{identifier}/consume` (metered permissions) on the real server:
    /// balances seeded for `--customers` customers, then `--clients` concurrent clients consume
    /// over random customers (`spread`) and all on one customer (`hot`), interleaved.
    Consume {
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds of each run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// How many times the spread and hot runs alternate.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Send an `Idempotency-Key` with every consume (as apps should).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        idempotency_keys: bool,
    },
    /// The dashboard's overview on a large account: seeds transactions (100,000 by default),
    /// subscriptions, Stripe events and outbound deliveries, then times the overview's
    /// queries and its page over HTTP (p50/p99 of `--runs`).
    Overview {
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 100_000)]
        transactions: usize,
        #[arg(long, default_value_t = 2_000)]
        subscriptions: usize,
        /// Stripe events received, and as many outbound deliveries.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Measured runs of each query or page.
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Outbound webhook deliveries/s: the real outbox and delivery worker to a fast local
    /// receiver.
    Deliveries {
        #[arg(long, value_enum, default_value_t = BenchDb::Sqlite)]
        db: BenchDb,
        /// PostgreSQL server to create the benchmark database on (its database name is replaced).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        /// Number of events (one subscription: one delivery each).
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Events per database transaction when enqueuing.
        #[arg(long, default_value_t = 50)]
        per_commit: usize,
        /// Deliveries in flight at once (the server's `webhook_concurrency`).
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Enqueue every event first, then start the worker: measures delivery alone (a
        /// backlog draining, e.g. after a receiver outage) instead of the whole pipeline.
        #[arg(long)]
        preload: bool,
        /// Tasks enqueuing at once (as concurrent requests commit changes).
        #[arg(long, default_value_t = 1)]
        producers: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDb {
    Sqlite,
    Postgres,
}

impl BenchDb {
    /// The database as a report names it.
    pub fn describe(self) -> &'static str {
        match self {
            BenchDb::Sqlite => "SQLite (temporary data directory)",
            BenchDb::Postgres => "PostgreSQL (fresh database, dropped after)",
        }
    }
}

/// `p50 …, p99 …, max …` of sorted latencies, in milliseconds.
pub fn latency_line(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(sorted, 0.50),
        percentile(sorted, 0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    )
}

/// The machine's cores, for a report.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// Whether the server's per-request log lines are measured too, for a report.
pub fn request_logs() -> &'static str {
    if tracing::enabled!(target: "tollgate_server", tracing::Level::INFO) {
        "ON: a line per request is measured too; rerun with RUST_LOG=warn"
    } else {
        "off (RUST_LOG=warn or quieter)"
    }
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sandbox { pairs, concurrency } => sandbox(pairs, concurrency).await,
        BenchCommand::Transactions {
            db,
            database_url,
            requests,
            concurrency,
            warmup,
        } => transactions(db, &database_url, requests, concurrency, warmup).await,
        BenchCommand::Webhooks {
            db,
            database_url,
            events,
            objects,
            concurrency,
            rounds,
            server_process,
            long_run,
            slice,
            retention_secs,
            prune_every_secs,
            inbox_workers,
            inbox_batch,
        } => {
            crate::bench_webhooks::run(
                db,
                &database_url,
                crate::bench_webhooks::Options {
                    events,
                    objects,
                    concurrency: concurrency.max(1),
                    rounds,
                    server_process,
                    long_run,
                    slice: slice.max(1),
                    retention_secs,
                    prune_every_secs: prune_every_secs.max(1),
                    inbox_workers,
                    inbox_batch,
                },
            )
            .await
        }
        BenchCommand::Permissions {
            db,
            database_url,
            customers,
            connections,
            seconds,
            warmup_seconds,
            if_none_match,
        } => {
            crate::bench_permissions::run(
                db,
                &database_url,
                customers,
                connections,
                seconds,
                warmup_seconds,
                if_none_match,
            )
            .await
        }
        BenchCommand::Consume {
            db,
            database_url,
            customers,
            clients,
            seconds,
            rounds,
            idempotency_keys,
        } => {
            crate::bench_consume::run(
                db,
                &database_url,
                crate::bench_consume::Options {
                    customers,
                    clients,
                    seconds,
                    rounds,
                    idempotency_keys,
                },
            )
            .await
        }
        BenchCommand::Overview {
            db,
            database_url,
            transactions,
            subscriptions,
            events,
            runs,
        } => {
            crate::bench_overview::run(
                db,
                &database_url,
                crate::bench_overview::Options {
                    transactions,
                    subscriptions,
                    events,
                    runs: runs.max(1),
                },
            )
            .await
        }
        BenchCommand::Deliveries {
            db,
            database_url,
            events,
            per_commit,
            concurrency,
            preload,
            producers,
        } => {
            deliveries(
                db,
                &database_url,
                events,
                per_commit.max(1),
                concurrency.max(1),
                preload,
                producers.max(1),
            )
            .await
        }
    }
}

/// Latency percentiles of a sample, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib(None, "VmHWM:")
}

/// CPU time this process has used so far, user and system, on Linux (`/proc/self/stat`, in
/// the kernel's user-visible clock ticks of 10 ms).
pub fn process_cpu() -> Option<Duration> {
    process_cpu_of(None)
}

/// `/proc/self` or `/proc/{pid}`.
fn proc_dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"))
}

/// A memory figure of `/proc/…/status` (`VmHWM:` peak, `VmRSS:` now), in MiB.
pub fn status_mib(pid: Option<u32>, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What process `pid` holds now: its heap and other private memory (`RssAnon`) and the
/// pages of files it maps (`RssFile`: its executable's code, SQLite's shared memory), for a
/// report.
pub fn rss_parts(pid: u32) -> String {
    let mib = |f: &str| status_mib(Some(pid), f).map_or("?".into(), |m| format!("{m:.0}"));
    format!(
        "now {} MiB: {} private, {} file-backed",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:")
    )
}

/// CPU time (user and system) of this process or of process `pid`, from `/proc/…/stat`.
pub fn process_cpu_of(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU time every process of the machine has used so far (the database's included), user,
/// system, interrupts and steal, on Linux (the `cpu` line of `/proc/stat`, in ticks of 10 ms).
pub fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Some(Duration::from_millis(busy * 10))
}

/// A sandbox (no state file) whose objects name `public_url` as its address.
fn start_sandbox(public_url: String) -> anyhow::Result<Sandbox> {
    Sandbox::start(SandboxConfig {
        public_url,
        ..SandboxConfig::default()
    })
    .map_err(|e| anyhow!("{e}"))
}

/// A sandbox served from this process on a free loopback port: it, its address
/// (`http://127.0.0.1:PORT`) and the task serving it.
async fn serve_sandbox() -> anyhow::Result<(Sandbox, String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sandbox = start_sandbox(base.clone())?;
    let app = sandbox
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the benchmark's sandbox stopped: {e}");
        }
    });
    Ok((sandbox, base, task))
}

async fn sandbox(pairs: usize, concurrency: usize) -> anyhow::Result<()> {
    let (sandbox, sandbox_base, _serving) = serve_sandbox().await?;
    let key = sandbox.secret_key();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("http client")?;
    let base = format!("{sandbox_base}/v1/payment_intents");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, key, next) = (client.clone(), base.clone(), key.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < pairs {
                let t = Instant::now();
                let created = client
                    .post(&base)
                    .bearer_auth(&key)
                    .form(&[
                        ("amount", "1099"),
                        ("currency", "usd"),
                        ("metadata[bench]", "1"),
                    ])
                    .send()
                    .await;
                let id = match created {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string)),
                    _ => None,
                };
                let Some(id) = id else {
                    errors += 1;
                    continue;
                };
                let confirmed = client
                    .post(format!("{base}/{id}/confirm"))
                    .bearer_auth(&key)
                    .form(&[("payment_method", "pm_card_visa")])
                    .send()
                    .await;
                match confirmed {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::with_capacity(pairs);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let ok = lat.len();
    println!("sandbox bench: PaymentIntent create + confirm (pm_card_visa) over loopback HTTP/1.1");
    println!(
        "  pairs: {ok} ok, {errors} failed, {concurrency} connections, {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} pairs/s ({:.0} requests/s)",
        ok as f64 / elapsed.as_secs_f64(),
        2.0 * ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  pair latency: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99)
    );
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (client and sandbox in one process): {rss:.0} MiB");
    }
    if errors > 0 {
        anyhow::bail!("{errors} pairs failed");
    }
    Ok(())
}

/// The redirect-flow create the benchmark sends (the seed API's shape).
const CREATE_BODY: &str = r#"{"amount":1299,"currency":"USD","intent":"authorize","payment_method":{"method":"stripe","redirect_url":"https://example.com/cb"}}"#;

/// `url` with its database name replaced by `name` (query string kept).
pub(crate) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| anyhow!("--database-url is not a URL: {url}"))?
        + 3;
    let (head, rest) = url.split_at(scheme_end);
    let (rest, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    Ok(format!("{head}{authority}/{name}{query}"))
}

async fn deliveries(
    db: BenchDb,
    admin_url: &str,
    events: usize,
    per_commit: usize,
    concurrency: usize,
    preload: bool,
    producers: usize,
) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |database_url, data_dir| async move {
        deliveries_on(
            db,
            database_url,
            &data_dir,
            events,
            per_commit,
            (concurrency, producers),
            preload,
        )
        .await
    })
    .await
}

/// What the receiver saw: (webhook-id, when).
type Seen = Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

async fn deliveries_on(
    db: BenchDb,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    events: usize,
    per_commit: usize,
    (concurrency, producers_n): (usize, usize),
    preload: bool,
) -> anyhow::Result<()> {
    ensure_master_key();
    // The receiver: answers 200 at once and notes when each event arrived.
    let seen: Seen = Arc::new(std::sync::Mutex::new(Vec::with_capacity(events)));
    let rx_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rx_addr = rx_listener.local_addr()?;
    let rx_seen = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = rx_seen.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if let Ok(mut s) = seen.lock() {
                    s.push((id, Instant::now()));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let rx_task = tokio::spawn(async move {
        let _ = axum::serve(rx_listener, receiver).await;
    });

    // The server's state (its store: on SQLite one writer, shared by the producer and the
    // worker, as a server's requests and worker share it) and its delivery worker.
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        database_url,
        allow_private_webhook_targets: true,
        webhook_concurrency: concurrency,
        webhook_poll_interval_ms: 20,
        ..Config::default()
    };
    let ctx = tollgate_server::context(config, Arc::new(SystemClock), None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    tollgate_server::api::bootstrap::first_key(&ctx)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let sub_id = tollgate_store::new_id();
    let secret = tollgate_server::outbound::WebhookSecret::generate();
    let now = SystemClock.now_ms();
    tollgate_store::outbox::insert_subscription(
        ctx.store.writer(),
        &tollgate_store::outbox::SubscriptionRow {
            id: sub_id.clone(),
            merchant_account_id: "default".into(),
            url: format!("http://{rx_addr}/hook"),
            events: "[\"*\"]".into(),
            description: Some("bench".into()),
            active: true,
            secret_enc: ctx.keys.seal(&sub_id, secret.expose()),
            secret_hint: secret.hint(),
            old_secret_enc: None,
            old_secret_expires_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        },
    )
    .await?;
    let spawn_worker = || {
        tollgate_server::outbound::spawn(ctx.clone())
            .ok_or_else(|| anyhow!("the delivery worker did not start"))
    };
    let mut worker = if preload { None } else { Some(spawn_worker()?) };

    // Producers: the outbox's own enqueue, `per_commit` events per database transaction, from
    // several tasks at once (as a server's concurrent requests commit changes).
    let made: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::new(
        std::sync::Mutex::new(std::collections::HashMap::with_capacity(events)),
    );
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for _ in 0..producers_n {
        let (store, made, next) = (ctx.store.clone(), made.clone(), next.clone());
        producers.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(per_commit, Ordering::Relaxed);
                if first >= events {
                    break;
                }
                let k = per_commit.min(events - first);
                let mut tx = store.begin().await?;
                let mut ids = Vec::with_capacity(k);
                for n in first..first + k {
                    let target =
                        serde_json::json!({"type": "customer", "customid": format!("bench-{n}")});
                    let now = SystemClock.now_ms();
                    if let Some(id) = tollgate_store::outbox::enqueue(
                        &mut tx,
                        "default",
                        "customer.linked",
                        &target,
                        now,
                    )
                    .await?
                    {
                        ids.push(id);
                    }
                }
                tollgate_store::commit(tx).await?;
                let at = Instant::now();
                if let Ok(mut m) = made.lock() {
                    for id in ids {
                        m.insert(id, at);
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for p in producers {
        p.await??;
    }
    let produced_in = started.elapsed();
    let started = if preload {
        worker = Some(spawn_worker()?);
        Instant::now()
    } else {
        started
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = seen.lock().map(|s| s.len()).unwrap_or(0);
        if n >= events {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {n} of {events} deliveries arrived within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let made = made.lock().map(|m| m.clone()).unwrap_or_default();
    let last = seen.iter().map(|(_, t)| *t).max().unwrap_or(started);
    let elapsed = last.duration_since(started);
    let mut lat: Vec<Duration> = seen
        .iter()
        .filter_map(|(id, t)| made.get(id).map(|m| t.saturating_duration_since(*m)))
        .collect();
    lat.sort();
    let unique: std::collections::HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
    // Let the worker record the last results, then check the log agrees.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'")
            .fetch_one(ctx.store.reader())
            .await?;
    let cores = cores();
    let db_name = db.describe();
    println!(
        "deliveries bench: outbox enqueue -> delivery worker -> signed POST to a local receiver (one process)"
    );
    println!(
        "  database: {db_name}; machine: {cores} cores; {concurrency} deliveries in flight; {per_commit} events per enqueue commit, {producers_n} producer(s)"
    );
    println!(
        "  events: {events} enqueued in {:.2} s ({:.0}/s); received {} ({} distinct), {delivered} recorded delivered",
        produced_in.as_secs_f64(),
        events as f64 / produced_in.as_secs_f64(),
        seen.len(),
        unique.len()
    );
    let span = if preload {
        "worker start to last receipt, the backlog enqueued before"
    } else {
        "first enqueue to last receipt"
    };
    println!(
        "  throughput: {:.0} deliveries/s ({span}, {:.2} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  latency (commit to receipt): {}", latency_line(&lat));
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (receiver, server and producer in one process): {rss:.0} MiB");
    }
    if let Some(w) = worker {
        w.abort();
    }
    rx_task.abort();
    ctx.store.close().await;
    Ok(())
}

async fn transactions(
    db: BenchDb,
    admin_url: &str,
    requests: usize,
    concurrency: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |url, dir| async move {
        transactions_on(db, url, &dir, requests, concurrency.max(1), warmup).await
    })
    .await
}

/// Runs `bench` on a fresh database: a SQLite file in a new temporary data directory, or a
/// new PostgreSQL database on the server of `admin_url` (dropped after).
pub(crate) async fn on_fresh_db<F, Fut>(
    db: BenchDb,
    admin_url: &str,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Option<String>, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    tollgate_stripe::install_crypto_provider();
    let unique = tollgate_store::new_id().replace('-', "");
    // The UUID v7's last digits are random; its first are the clock.
    let suffix = &unique[unique.len() - 12..];
    let data_dir = std::env::temp_dir().join(format!("tollgate-bench-{suffix}"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let pg = match db {
        BenchDb::Sqlite => None,
        BenchDb::Postgres => {
            let name = format!("tollgate_bench_{suffix}");
            let url = with_database(admin_url, &name)?;
            pg_admin(admin_url, &format!("CREATE DATABASE {name}"))
                .await
                .with_context(|| {
                    format!("creating database {name} (is PostgreSQL up at {admin_url}?)")
                })?;
            Some((name, url))
        }
    };
    let result = bench(pg.as_ref().map(|(_, url)| url.clone()), data_dir.clone()).await;
    if let Some((name, _)) = &pg {
        // FORCE: the server's pools (and its background workers) are still connected.
        if let Err(e) = pg_admin(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await
        {
            eprintln!("warning: could not drop database {name}: {e:#}");
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

/// One statement on the PostgreSQL server's maintenance database.
pub(crate) async fn pg_admin(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url).await?;
    // The names are ours (a fixed prefix and hex digits), never user input.
    conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?;
    conn.close().await?;
    Ok(())
}

async fn transactions_on(
    db: BenchDb,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    requests: usize,
    concurrency: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    let srv = BenchServer::start(database_url, data_dir, concurrency, |_| {}).await?;
    let (client, key, public_url) = (srv.client.clone(), srv.key.clone(), srv.public_url.clone());
    let url = format!("{public_url}/transactions");

    // Warm-up with the same connections, not measured.
    fire(&client, &url, &key, warmup, concurrency).await?;
    let started = Instant::now();
    let (mut lat, errors, first_error) = fire(&client, &url, &key, requests, concurrency).await?;
    let elapsed = started.elapsed();
    lat.sort();
    let ok = lat.len();

    let cores = cores();
    let db_name = db.describe();
    let logs = request_logs();
    println!(
        "transactions bench: POST /transactions (redirect flow) on the real server, Stripe = in-process sandbox"
    );
    println!("  database: {db_name}; machine: {cores} cores; server request logs: {logs}");
    println!(
        "  creates: {ok} ok, {errors} failed, {concurrency} connections, {:.2} s (after {warmup} warm-up creates)",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} creates/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("  latency: {}", latency_line(&lat));
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (client, server and sandbox in one process): {rss:.0} MiB");
    }

    drop(client);
    srv.stop().await;
    if let Some(e) = first_error {
        anyhow::bail!("{errors} creates failed; the first: {e}");
    }
    Ok(())
}

/// A master key for the benchmark's server (PostgreSQL needs one; SQLite would write a file).
fn ensure_master_key() {
    if std::env::var_os("TOLLGATE_MASTER_KEY").is_none() {
        // SAFETY: set before the server starts, while no other thread of this process reads
        // or writes the environment (the runtime's workers are idle).
        unsafe {
            std::env::set_var(
                "TOLLGATE_MASTER_KEY",
                tollgate_server::crypto::MasterKey::generate_hex(),
            );
        }
    }
}

/// The real server on 127.0.0.1:0 with the in-process sandbox mounted (as `serve` mounts it),
/// its first secret key and a keep-alive client. In this process by default; or
/// `tollgate serve` as a child process ([`BenchServer::start_process`]), so that its memory and
/// CPU are measured apart from the clients'.
pub(crate) struct BenchServer {
    pub addr: std::net::SocketAddr,
    pub public_url: String,
    /// The database the server uses (for benchmarks that seed it directly).
    pub database_url: String,
    pub key: String,
    pub client: reqwest::Client,
    /// Where the server reads Stripe: the sandbox mounted in the server, or (child process)
    /// the sandbox in this process.
    pub stripe_base: String,
    running: Running,
}

enum Running {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<tollgate_server::startup::Result<()>>,
    },
    Child {
        child: ChildServer,
        /// The sandbox standing in for Stripe, served from this process.
        sandbox: tokio::task::JoinHandle<()>,
    },
}

/// `tollgate serve` in a child process: killed when dropped (an error or a panic in the
/// benchmark leaves no server behind).
struct ChildServer {
    child: std::process::Child,
}

impl ChildServer {
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (the server's graceful shutdown), then SIGKILL after 5 s.
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop kills it if it is still running.
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The configuration a benchmark gives its server: the real server on `addr` with the sandbox
/// mounted, then the benchmark's `tweak`.
fn bench_config(
    addr: SocketAddr,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> Config {
    let mut config = Config {
        listen: addr,
        data_dir: data_dir.to_path_buf(),
        database_url,
        public_url: Some(format!("http://{addr}")),
        sandbox: Some(true),
        ..Config::default()
    };
    tweak(&mut config);
    config
}

/// The settings of `c` that the benchmarks set or tune, as a TOML file for `tollgate serve
/// --config` (the master key comes from the environment, as always). The in-process sandbox
/// accepts any `sk_test_…` key: so does the child's.
pub(crate) fn config_toml(c: &Config) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        out.push_str(k);
        out.push_str(" = ");
        out.push_str(&v);
        out.push('\n');
    };
    line("listen", q(&c.listen.to_string()));
    line("data_dir", q(&c.data_dir.to_string_lossy()));
    if let Some(u) = &c.database_url {
        line("database_url", q(u));
    }
    if let Some(u) = &c.public_url {
        line("public_url", q(u));
    }
    line("sandbox", c.sandbox.unwrap_or(true).to_string());
    line("sandbox_any_test_key", "true".into());
    line("stripe_api_base", q(&c.stripe_api_base));
    line(
        "reconcile_interval_secs",
        c.reconcile_interval_secs.to_string(),
    );
    line("inbox_workers", c.inbox_workers.to_string());
    line("inbox_batch", c.inbox_batch.to_string());
    line("inbox_poll_ms", c.inbox_poll_ms.to_string());
    line("inbox_retention_days", c.inbox_retention_days.to_string());
    line(
        "permissions_rate_per_sec",
        c.permissions_rate_per_sec.to_string(),
    );
    line("permissions_burst", c.permissions_burst.to_string());
    line("auth_cache_ms", c.auth_cache_ms.to_string());
    line(
        "permission_cache_poll_ms",
        c.permission_cache_poll_ms.to_string(),
    );
    line("webhook_worker", c.webhook_worker.to_string());
    out
}

/// Like Stripe's senders: no redirect followed, no request retried (a retry would count one
/// event twice). Each policy also cost the senders work on every request.
fn bench_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .build()
        .context("http client")
}

impl BenchServer {
    pub async fn start(
        database_url: Option<String>,
        data_dir: &std::path::Path,
        concurrency: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<BenchServer> {
        ensure_master_key();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let public_url = format!("http://{addr}");
        let config = bench_config(addr, database_url, data_dir, tweak);
        let database_url = config.database_url();
        // Mounted as `serve` mounts it, without a state file: real Stripe costs us no CPU,
        // and the sandbox's periodic state saves would only measure the sandbox.
        let sb = start_sandbox(format!("{public_url}/sandbox/stripe"))?;
        let sb2 = sb.clone();
        let opts = ServeOptions {
            clock: Arc::new(SystemClock),
            sandbox: Some(SandboxHandle {
                router: sb.router(),
                secret_key: sb.secret_key(),
                publishable_key: sb.publishable_key(),
                register_webhook: Arc::new(move |url: &str| sb2.ensure_webhook_endpoint(url, None)),
            }),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tollgate_server::serve(config, listener, opts, async move {
            let _ = stopped.await;
        }));
        let client = bench_client(concurrency)?;
        let key = wait_ready(&client, &public_url, data_dir, &mut || server.is_finished()).await?;
        Ok(BenchServer {
            addr,
            stripe_base: format!("{public_url}/sandbox/stripe"),
            public_url,
            database_url,
            key,
            client,
            running: Running::InProcess { stop, server },
        })
    }

    /// The same server as [`BenchServer::start`] (same configuration), run as `tollgate serve
    /// --config …` in a child process of this executable (or of `$TOLLGATE_BENCH_SERVER_EXE`,
    /// to measure another build's server), on a free loopback port. The sandbox standing in for
    /// Stripe is not mounted in the child but served from this process on a port of its own,
    /// and the child reads Stripe there, as a production server reads Stripe over the network:
    /// the child's memory and CPU are then the server's alone. Its standard output (the
    /// start-up lines) is discarded; its log goes to this process's standard error at this
    /// process's `RUST_LOG`.
    pub async fn start_process(
        database_url: Option<String>,
        data_dir: &std::path::Path,
        concurrency: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<BenchServer> {
        ensure_master_key();
        // A free port: bound, read, released for the child (which binds it a moment later).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let public_url = format!("http://{addr}");
        let (_sb, stripe_base, sandbox) = serve_sandbox().await?;
        let mut config = bench_config(addr, database_url, data_dir, tweak);
        config.sandbox = Some(false);
        config.stripe_api_base = stripe_base.clone();
        let database_url = config.database_url();
        let path = data_dir.join("bench-server.toml");
        std::fs::write(&path, config_toml(&config))
            .with_context(|| format!("writing {}", path.display()))?;
        // Another build's server may be measured with this harness (a baseline).
        let exe = match std::env::var_os("TOLLGATE_BENCH_SERVER_EXE") {
            Some(exe) => std::path::PathBuf::from(exe),
            None => std::env::current_exe().context("finding this executable")?,
        };
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting `tollgate serve`")?;
        let mut child = ChildServer { child };
        let client = bench_client(concurrency)?;
        let key = wait_ready(&client, &public_url, data_dir, &mut || child.exited()).await?;
        Ok(BenchServer {
            addr,
            public_url,
            database_url,
            key,
            client,
            stripe_base,
            running: Running::Child { child, sandbox },
        })
    }

    /// The server's process id when it runs in its own process.
    pub fn server_pid(&self) -> Option<u32> {
        match &self.running {
            Running::Child { child, .. } => Some(child.child.id()),
            Running::InProcess { .. } => None,
        }
    }

    pub async fn stop(self) {
        drop(self.client);
        match self.running {
            Running::InProcess { stop, server } => {
                let _ = stop.send(());
                // Graceful shutdown waits for open connections; the client is gone, so this is
                // quick.
                let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            }
            Running::Child { child, sandbox } => {
                child.stop().await;
                sandbox.abort();
            }
        }
    }
}

/// Waits until the server answers with its first secret key (read from
/// `{data_dir}/first-secret-key`), and returns the key. `exited` tells whether the server
/// stopped meanwhile.
async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    data_dir: &std::path::Path,
    exited: &mut dyn FnMut() -> bool,
) -> anyhow::Result<String> {
    let path = data_dir.join("first-secret-key");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if exited() {
            anyhow::bail!("the server stopped during start-up (see the log above)");
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let key = text.trim().to_string();
            // The file is written just before the key is stored: ask until the key works.
            if !key.is_empty() {
                let r = client
                    .get(format!("{base}/transactions?limit=1"))
                    .bearer_auth(&key)
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status().is_success()) {
                    return Ok(key);
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the server did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `count` creates over `concurrency` connections; returns the latencies of those that
/// succeeded (201), the number that failed, and the first failure.
async fn fire(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, usize, Option<String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, auth, next) = (
            client.clone(),
            url.to_string(),
            format!("Bearer {key}"),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count / concurrency + 1);
            let mut errors = 0usize;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let t = Instant::now();
                let sent = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(CREATE_BODY)
                    .send()
                    .await;
                let failure = match sent {
                    Ok(r) => {
                        let status = r.status();
                        match r.bytes().await {
                            Ok(_) if status.as_u16() == 201 => None,
                            Ok(body) => Some(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )),
                            Err(e) => Some(format!("reading the answer: {e}")),
                        }
                    }
                    Err(e) => Some(format!("sending: {e}")),
                };
                match failure {
                    None => lat.push(t.elapsed()),
                    Some(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut lat = Vec::with_capacity(count);
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, f) = t.await?;
        lat.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok((lat, errors, first_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_server_reads_back_the_benchmark_configuration() {
        let addr: SocketAddr = "127.0.0.1:45678".parse().unwrap();
        let dir = std::path::Path::new("/tmp/a \"quoted\" dir");
        let c = bench_config(
            addr,
            Some("postgres://postgres@127.0.0.1:5432/tollgate_bench_x".into()),
            dir,
            |c| {
                c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
                c.reconcile_interval_secs = 0;
                c.inbox_workers = 3;
            },
        );
        let back: Config = toml::from_str(&config_toml(&c)).unwrap();
        assert_eq!(back.listen, addr);
        assert_eq!(back.data_dir, dir);
        assert_eq!(back.database_url, c.database_url);
        assert_eq!(back.public_url.as_deref(), Some("http://127.0.0.1:45678"));
        assert_eq!(back.sandbox, Some(true));
        assert!(back.sandbox_any_test_key);
        assert_eq!(
            back.stripe_api_base,
            "http://127.0.0.1:45678/sandbox/stripe"
        );
        assert_eq!(back.reconcile_interval_secs, 0);
        assert_eq!(back.inbox_workers, 3);
    }
}
