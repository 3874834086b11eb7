//! `tollgate bench webhooks --long-run`: one long stream of distinct signed Stripe events (a
//! million, say) into the webhook endpoint, with 64 senders, to see whether the rates hold
//! from the first slice to the last, what the database grows to per stored event, and whether
//! pruning keeps the inbox bounded.
//!
//! The stream is not built in memory first: a producer writes it in chunks of
//! [`CHUNK_OBJECTS`] transactions' worth of events (the same mix as the short benchmark:
//! payment-intent, charge and refund lifecycles, subscription, invoice and checkout events),
//! each chunk with its own event ids and its own subscriptions and customers, shuffled, while
//! the senders send the previous one; each event is signed at send time. The transactions the
//! payment events are about are created once, before the clock starts, and their lifecycles are
//! sent again in later chunks (new event ids, later `created`): Tollgate applies them as
//! Stripe's repeats of known states. No event is sent twice.
//!
//! Every `--slice` acknowledged events the benchmark reads the database (rows waiting, rows
//! stored, its size on disk) and the server's memory, and prints a line; at the end, a table,
//! the first slice against the last, and the inbox's size against the rows pruned. The inbox's
//! retention prune (the server runs it hourly with a retention in days) is run by the
//! benchmark every `--prune-every-secs` with a retention of `--retention-secs`, through the
//! server's own store function.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use axum::body::Bytes;
use rand::seq::SliceRandom;
use serde_json::Value;
use tollgate_store::{Backend, Store};

use crate::bench::{BenchDb, BenchServer, cores, percentile, process_cpu_of, status_mib};
use crate::bench_webhooks::{Object, build_stream, make_objects, make_sessions, send_event};
use crate::demo::unix_now;

/// Transactions whose events make one chunk of the stream (with billing events, about 30
/// events per transaction, as in the short benchmark).
pub(crate) const CHUNK_OBJECTS: usize = 100;
/// Events per chunk.
pub(crate) const CHUNK_EVENTS: usize = CHUNK_OBJECTS * 30;
/// Chunks written ahead of the senders (bounds the senders' memory).
const CHUNKS_AHEAD: usize = 2;

pub(crate) struct LongRun<'a> {
    pub db: BenchDb,
    pub srv: &'a BenchServer,
    pub data_dir: &'a std::path::Path,
    pub conn_id: &'a str,
    pub events: usize,
    pub objects: usize,
    pub concurrency: usize,
    pub slice: usize,
    pub retention_secs: u64,
    pub prune_every_secs: u64,
}

/// The events of chunk `k` (at most `size`), over a window of [`CHUNK_OBJECTS`] of `objs`
/// that moves chunk by chunk; ids, subscriptions and customers tagged with the chunk, so no
/// two chunks share an event id. Not shuffled.
pub(crate) fn chunk(objs: &[Object], sessions: &[String], k: usize, size: usize) -> Vec<Value> {
    if objs.is_empty() || size == 0 {
        return Vec::new();
    }
    let w = CHUNK_OBJECTS.min(objs.len());
    let start = (k * w) % objs.len();
    let window: Vec<&Object> = objs.iter().cycle().skip(start).take(w).collect();
    let window: Vec<Object> = window
        .into_iter()
        .map(|o| Object {
            transaction_id: o.transaction_id.clone(),
            pi: o.pi.clone(),
            amount: o.amount,
        })
        .collect();
    let (mut out, _, _) = build_stream(&window, sessions, size, &format!("l{k}_"));
    out.truncate(size);
    out
}

/// The sizes of the chunks a stream of `events` is cut into.
pub(crate) fn chunk_sizes(events: usize) -> impl Iterator<Item = usize> {
    (0..events.div_ceil(CHUNK_EVENTS)).map(move |k| CHUNK_EVENTS.min(events - k * CHUNK_EVENTS))
}

/// What the senders acknowledged so far, and the latencies of the current slice.
struct Acc {
    n: usize,
    lats: Vec<Duration>,
}

/// The end of a slice, as the sender that acknowledged its last event saw it.
struct Mark {
    n: usize,
    at: Instant,
    lats: Vec<Duration>,
}

/// A reading of the server and the database, taken at the end of each slice.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    /// Events acknowledged so far (none is sent twice, so each is a stored row until pruned).
    pub acked: usize,
    /// Events applied so far: those acknowledged when the database was read, less the rows
    /// still waiting (`received` or `failed`) then.
    pub applied: usize,
    /// Seconds since the first send.
    pub at_s: f64,
    /// Inbox rows stored now (after pruning).
    pub stored: usize,
    /// The database on disk, bytes (SQLite: file and WAL; PostgreSQL: `pg_database_size`).
    pub db_bytes: u64,
    /// Server CPU seconds and senders' CPU seconds so far.
    pub server_cpu_s: f64,
    pub senders_cpu_s: f64,
}

/// One slice's figures, from the readings at its two ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SliceFigures {
    pub events: usize,
    pub acked_per_s: f64,
    /// Rows applied during the slice per second.
    pub applied_per_s: f64,
    pub p99_ms: f64,
    pub db_bytes: u64,
    pub stored: usize,
    /// Database bytes per stored inbox row.
    pub bytes_per_stored: f64,
    /// Database bytes per event received so far (pruned ones included).
    pub bytes_per_received: f64,
    pub server_cpu_us: f64,
    pub senders_cpu_us: f64,
}

/// A slice's figures from the readings before and after it, and its sorted latencies.
pub(crate) fn slice_figures(prev: &Reading, cur: &Reading, sorted: &[Duration]) -> SliceFigures {
    let events = cur.acked.saturating_sub(prev.acked);
    let dt = (cur.at_s - prev.at_s).max(1e-9);
    let per_event = |d: f64| {
        if events == 0 {
            0.0
        } else {
            d * 1e6 / events as f64
        }
    };
    SliceFigures {
        events,
        acked_per_s: events as f64 / dt,
        applied_per_s: cur.applied.saturating_sub(prev.applied) as f64 / dt,
        p99_ms: percentile(sorted, 0.99),
        db_bytes: cur.db_bytes,
        stored: cur.stored,
        bytes_per_stored: per_stored(cur.db_bytes, cur.stored),
        bytes_per_received: per_stored(cur.db_bytes, cur.acked),
        server_cpu_us: per_event(cur.server_cpu_s - prev.server_cpu_s),
        senders_cpu_us: per_event(cur.senders_cpu_s - prev.senders_cpu_s),
    }
}

/// Bytes per stored row (0 with no row).
pub(crate) fn per_stored(bytes: u64, stored: usize) -> f64 {
    if stored == 0 {
        0.0
    } else {
        bytes as f64 / stored as f64
    }
}

/// The last slice's rate against the first's: their ratio, and whether it is within
/// `tolerance` (0.15: within 15 %).
pub(crate) fn flat(first: f64, last: f64, tolerance: f64) -> (f64, bool) {
    if first <= 0.0 {
        return (0.0, false);
    }
    let ratio = last / first;
    (ratio, (ratio - 1.0).abs() <= tolerance)
}

/// A chunk of the stream: its bodies, serialised.
type Chunk = Arc<Vec<Bytes>>;

/// The stream, chunk by chunk, to the senders: the chunks to come, the current one and the
/// next body's place in it.
struct Feed {
    rx: tokio::sync::Mutex<(tokio::sync::mpsc::Receiver<Chunk>, Chunk, usize)>,
}

impl Feed {
    async fn next(&self) -> Option<Bytes> {
        let mut g = self.rx.lock().await;
        loop {
            let (rx, cur, i) = &mut *g;
            if let Some(b) = cur.get(*i) {
                *i += 1;
                return Some(b.clone());
            }
            *cur = rx.recv().await?;
            *i = 0;
        }
    }
}

pub(crate) async fn run(l: LongRun<'_>) -> anyhow::Result<()> {
    let LongRun {
        db,
        srv,
        data_dir,
        conn_id,
        events,
        objects,
        concurrency,
        slice,
        retention_secs,
        prune_every_secs,
    } = l;
    let client = srv.client.clone();
    let base = srv.public_url.clone();
    let auth = format!("Bearer {}", srv.key);
    let server_pid = srv.server_pid();
    let store = Store::connect(&srv.database_url)
        .await
        .map_err(|e| anyhow!("opening the benchmark's database: {e}"))?;

    print!("setting up {objects} transactions… ");
    let made = Instant::now();
    let objs = make_objects(
        &client,
        &base,
        &srv.stripe_base,
        &auth,
        conn_id,
        objects,
        concurrency,
    )
    .await?;
    let sessions = make_sessions(
        &client,
        &srv.stripe_base,
        objects / 2 + 1,
        concurrency,
        true,
    )
    .await?;
    println!(
        "{:.1} s (with {} checkout sessions)",
        made.elapsed().as_secs_f64(),
        sessions.len()
    );

    // The producer: chunks written, shuffled and serialised ahead of the senders.
    let body_bytes = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(CHUNKS_AHEAD);
    let objs = Arc::new(objs);
    let producer = {
        let (objs, sessions) = (objs.clone(), Arc::new(sessions));
        let (body_bytes, bodies) = (body_bytes.clone(), bodies.clone());
        tokio::spawn(async move {
            for (k, size) in chunk_sizes(events).enumerate() {
                let (objs, sessions) = (objs.clone(), sessions.clone());
                let made = tokio::task::spawn_blocking(move || {
                    let mut evs = chunk(&objs, &sessions, k, size);
                    evs.shuffle(&mut rand::rng());
                    evs.iter()
                        .map(|ev| serde_json::to_vec_pretty(ev).map(Bytes::from))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await??;
                body_bytes.fetch_add(made.iter().map(|b| b.len() as u64).sum(), Ordering::Relaxed);
                bodies.fetch_add(made.len() as u64, Ordering::Relaxed);
                if tx.send(Arc::new(made)).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        })
    };
    // Let the first chunks be written before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let feed = Arc::new(Feed {
        rx: tokio::sync::Mutex::new((rx, Arc::new(Vec::new()), 0)),
    });

    let url = reqwest::Url::parse(&format!("{base}/webhooks/stripe/{conn_id}"))?;
    let acc = Arc::new(Mutex::new(Acc {
        n: 0,
        lats: Vec::new(),
    }));
    let (marks_tx, mut marks_rx) = tokio::sync::mpsc::unbounded_channel::<Mark>();
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let cpu = move || {
        let server = server_pid.map_or(0.0, |p| {
            process_cpu_of(Some(p)).map_or(0.0, |d| d.as_secs_f64())
        });
        let senders = process_cpu_of(None).map_or(0.0, |d| d.as_secs_f64());
        (server, senders)
    };

    // The pruner: the server's retention prune, often and with a short retention.
    let pruned = Arc::new(AtomicU64::new(0));
    let prune_time_ms = Arc::new(AtomicU64::new(0));
    let pruner = (retention_secs > 0).then(|| {
        let (store, pruned, prune_time_ms) = (store.clone(), pruned.clone(), prune_time_ms.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(prune_every_secs)).await;
                let cutoff = unix_now() * 1000 - retention_secs as i64 * 1000;
                let t = Instant::now();
                match tollgate_store::inbox::prune(store.writer(), cutoff).await {
                    Ok(n) => {
                        pruned.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("warning: pruning the inbox failed: {e}"),
                }
                prune_time_ms.fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        })
    });

    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, feed, acc, marks_tx) = (
            client.clone(),
            url.clone(),
            feed.clone(),
            acc.clone(),
            marks_tx.clone(),
        );
        let (errors, first_error) = (errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(body) = feed.next().await {
                let t = Instant::now();
                let failure = match send_event(&client, &url, body).await {
                    Ok(Ok(a)) if a.duplicate => Some("an event was taken for a duplicate".into()),
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) | Err(e) => Some(e),
                };
                let elapsed = t.elapsed();
                if let Some(e) = failure {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert(e);
                    }
                    continue;
                }
                let mark = acc.lock().ok().and_then(|mut a| {
                    a.lats.push(elapsed);
                    a.n += 1;
                    a.n.is_multiple_of(slice).then(|| Mark {
                        n: a.n,
                        at: Instant::now(),
                        lats: std::mem::take(&mut a.lats),
                    })
                });
                if let Some(m) = mark {
                    let _ = marks_tx.send(m);
                }
            }
        }));
    }
    drop(marks_tx);

    // The reporter: one reading per slice, printed as it comes.
    let reader = Probe {
        db,
        store: store.clone(),
        data_dir: data_dir.to_path_buf(),
    };
    println!(
        "long run: {events} distinct signed events, {concurrency} senders, a line per {slice} acknowledged"
    );
    print_header(server_pid.is_some());
    let mut prev = Reading::default();
    let mut slices: Vec<SliceFigures> = Vec::new();
    let mut report = |m: Mark, r: Reading, prev: &mut Reading| {
        let mut lats = m.lats;
        lats.sort();
        let f = slice_figures(prev, &r, &lats);
        let rss = status_mib(server_pid, "VmRSS:");
        print_row(
            m.n,
            &f,
            rss,
            body_avg(&body_bytes, &bodies),
            server_pid.is_some(),
        );
        slices.push(f);
        *prev = r;
    };
    // The channel closes when every sender is done (each holds a sender of it).
    while let Some(m) = marks_rx.recv().await {
        let (server_cpu_s, senders_cpu_s) = cpu();
        let at_s = m.at.duration_since(started).as_secs_f64();
        let r = reader
            .read(m.n, &acc, at_s, server_cpu_s, senders_cpu_s)
            .await?;
        report(m, r, &mut prev);
    }
    for t in tasks {
        t.await?;
    }
    let acked_in = started.elapsed();
    // A last, partial slice.
    let rest = acc.lock().ok().and_then(|mut a| {
        (!a.lats.is_empty()).then(|| Mark {
            n: a.n,
            at: Instant::now(),
            lats: std::mem::take(&mut a.lats),
        })
    });
    if let Some(m) = rest {
        let (server_cpu_s, senders_cpu_s) = cpu();
        let r = reader
            .read(
                m.n,
                &acc,
                acked_in.as_secs_f64(),
                server_cpu_s,
                senders_cpu_s,
            )
            .await?;
        report(m, r, &mut prev);
    }
    let acked = acc.lock().map(|a| a.n).unwrap_or(0);
    producer.abort();

    // Applied: nothing left waiting.
    let drain = Instant::now();
    loop {
        if reader.waiting().await? == 0 {
            break;
        }
        if drain.elapsed() > Duration::from_secs(600) {
            bail!("events still waiting 10 minutes after the last send");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied_in = started.elapsed();
    if let Some(p) = pruner {
        p.abort();
    }
    let (dead, failed) = reader.dead_and_failed().await?;
    let end = reader
        .read(acked, &acc, applied_in.as_secs_f64(), 0.0, 0.0)
        .await?;
    store.close().await;

    // The summary.
    println!("summary:");
    println!(
        "  acknowledged: {acked} in {:.1} s = {:.0} events/s; all applied {:.1} s after the first send ({:.1} s after the last acknowledgement) = {:.0} events/s",
        acked_in.as_secs_f64(),
        acked as f64 / acked_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        drain.elapsed().as_secs_f64(),
        acked as f64 / applied_in.as_secs_f64()
    );
    let full: Vec<&SliceFigures> = slices.iter().filter(|f| f.events == slice).collect();
    if let (Some(first), Some(last)) = (full.first(), full.last())
        && full.len() > 1
    {
        let (a, a_ok) = flat(first.acked_per_s, last.acked_per_s, 0.15);
        let (p, p_ok) = flat(first.applied_per_s, last.applied_per_s, 0.15);
        println!(
            "  first vs last full slice: acknowledged/s {:.0} → {:.0} ({:.2}×, {}); applied/s {:.0} → {:.0} ({:.2}×, {}); p99 {:.1} → {:.1} ms",
            first.acked_per_s,
            last.acked_per_s,
            a,
            if a_ok {
                "within 15 %"
            } else {
                "NOT within 15 %"
            },
            first.applied_per_s,
            last.applied_per_s,
            p,
            if p_ok {
                "within 15 %"
            } else {
                "NOT within 15 %"
            },
            first.p99_ms,
            last.p99_ms
        );
    }
    let avg = body_avg(&body_bytes, &bodies);
    println!(
        "  storage at the end: {:.1} MiB for {} stored inbox rows = {:.0} bytes per stored event, {:.2}× the average payload sent ({avg:.0} bytes, pretty JSON); {:.0} bytes per event received ({:.2}×)",
        end.db_bytes as f64 / 1048576.0,
        end.stored,
        per_stored(end.db_bytes, end.stored),
        per_stored(end.db_bytes, end.stored) / avg.max(1.0),
        per_stored(end.db_bytes, acked),
        per_stored(end.db_bytes, acked) / avg.max(1.0)
    );
    if retention_secs > 0 {
        println!(
            "  pruning: {} rows pruned (retention {retention_secs} s, a prune every {prune_every_secs} s, {:.1} s spent pruning); largest inbox seen {} rows, {} at the end",
            pruned.load(Ordering::Relaxed),
            prune_time_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            slices
                .iter()
                .map(|f| f.stored)
                .max()
                .unwrap_or(0)
                .max(end.stored),
            end.stored
        );
    } else {
        println!("  pruning: off (--retention-secs 0)");
    }
    match server_pid {
        Some(pid) => println!(
            "  server process peak RSS: {} MiB ({}); senders' process (with Stripe's sandbox) peak RSS {} MiB",
            status_mib(Some(pid), "VmHWM:").map_or("?".into(), |m| format!("{m:.0}")),
            crate::bench::rss_parts(pid),
            status_mib(None, "VmHWM:").map_or("?".into(), |m| format!("{m:.0}"))
        ),
        None => println!(
            "  peak RSS (senders, server and sandbox in one process): {} MiB",
            status_mib(None, "VmHWM:").map_or("?".into(), |m| format!("{m:.0}"))
        ),
    }
    println!(
        "  machine: {} cores; dead letters: {dead}; failed (waiting for a retry) at the end: {failed}",
        cores()
    );
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        let first = first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        bail!("{errs} sends failed; the first: {first}");
    }
    Ok(())
}

fn body_avg(bytes: &AtomicU64, n: &AtomicU64) -> f64 {
    let n = n.load(Ordering::Relaxed);
    if n == 0 {
        0.0
    } else {
        bytes.load(Ordering::Relaxed) as f64 / n as f64
    }
}

fn print_header(process: bool) {
    let who = if process { "server" } else { "process" };
    let cpu = if process {
        "  server µs/ev  senders µs/ev"
    } else {
        ""
    };
    println!(
        "  {:>9}  {:>7}  {:>9}  {:>8}  {:>10}  {:>11}  {:>12}  {:>8}  {:>14}  {:>11}{cpu}",
        "acked",
        "acked/s",
        "applied/s",
        "p99 ms",
        "db MiB",
        "inbox rows",
        "bytes/stored",
        "×payload",
        "bytes/received",
        format!("{who} RSS MiB"),
    );
}

fn print_row(n: usize, f: &SliceFigures, rss: Option<f64>, avg: f64, process: bool) {
    let cpu = if process {
        format!("  {:>13.0}  {:>14.0}", f.server_cpu_us, f.senders_cpu_us)
    } else {
        String::new()
    };
    println!(
        "  {n:>9}  {:>7.0}  {:>9.0}  {:>8.1}  {:>10.1}  {:>11}  {:>12.0}  {:>8.2}  {:>14.0}  {:>11}{cpu}",
        f.acked_per_s,
        f.applied_per_s,
        f.p99_ms,
        f.db_bytes as f64 / 1048576.0,
        f.stored,
        f.bytes_per_stored,
        f.bytes_per_stored / avg.max(1.0),
        f.bytes_per_received,
        rss.map_or("?".into(), |m| format!("{m:.0}")),
    );
}

/// Reads of the benchmark's database.
struct Probe {
    db: BenchDb,
    store: Store,
    data_dir: std::path::PathBuf,
}

impl Probe {
    async fn count(&self, sql: &'static str) -> anyhow::Result<usize> {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(self.store.reader())
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn waiting(&self) -> anyhow::Result<usize> {
        self.count("SELECT COUNT(*) FROM webhook_events WHERE status IN ('received', 'failed')")
            .await
    }

    async fn dead_and_failed(&self) -> anyhow::Result<(usize, usize)> {
        Ok((
            self.count("SELECT COUNT(*) FROM webhook_events WHERE status = 'dead'")
                .await?,
            self.count("SELECT COUNT(*) FROM webhook_events WHERE status = 'failed'")
                .await?,
        ))
    }

    async fn db_bytes(&self) -> anyhow::Result<u64> {
        match (self.db, self.store.backend()) {
            (BenchDb::Sqlite, _) | (_, Backend::Sqlite) => {
                let file =
                    |name: &str| std::fs::metadata(self.data_dir.join(name)).map_or(0, |m| m.len());
                Ok(file("tollgate.db") + file("tollgate.db-wal"))
            }
            (BenchDb::Postgres, Backend::Postgres) => {
                let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(self.store.reader())
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    /// A reading at the end of a slice of `acked` events; `acc`: the count acknowledged now.
    async fn read(
        &self,
        acked: usize,
        acc: &Mutex<Acc>,
        at_s: f64,
        server_cpu_s: f64,
        senders_cpu_s: f64,
    ) -> anyhow::Result<Reading> {
        // Every event acknowledged before the count is read is in the inbox by then.
        let acked_now = acc.lock().map(|a| a.n).unwrap_or(acked);
        let waiting = self.waiting().await?;
        Ok(Reading {
            acked,
            applied: acked_now.saturating_sub(waiting),
            at_s,
            stored: self.count("SELECT COUNT(*) FROM webhook_events").await?,
            db_bytes: self.db_bytes().await?,
            server_cpu_s,
            senders_cpu_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    fn objects(n: usize) -> Vec<Object> {
        (0..n)
            .map(|i| Object {
                transaction_id: format!("tx_{i}"),
                pi: json!({"id": format!("pi_{i:06}"), "object": "payment_intent", "amount": 1000,
                           "currency": "eur", "created": 1, "metadata": {}}),
                amount: 1000,
            })
            .collect()
    }

    #[test]
    fn chunks_have_the_asked_sizes_and_no_shared_event_id() {
        let objs = objects(250);
        let sessions = vec!["cs_1".to_string(), "cs_2".to_string()];
        let events = 2 * CHUNK_EVENTS + 123;
        let sizes: Vec<usize> = chunk_sizes(events).collect();
        assert_eq!(sizes, vec![CHUNK_EVENTS, CHUNK_EVENTS, 123]);
        let mut ids = HashSet::new();
        let mut total = 0;
        for (k, size) in sizes.into_iter().enumerate() {
            let c = chunk(&objs, &sessions, k, size);
            assert_eq!(c.len(), size, "chunk {k}");
            total += c.len();
            for ev in &c {
                assert!(ids.insert(ev["id"].as_str().unwrap().to_string()));
            }
        }
        assert_eq!(ids.len(), total);
        assert_eq!(total, events);
    }

    #[test]
    fn chunks_move_over_the_objects_and_tag_their_subscriptions() {
        let objs = objects(250);
        let sessions = vec!["cs_1".to_string()];
        let pis = |k: usize| -> HashSet<String> {
            chunk(&objs, &sessions, k, CHUNK_EVENTS)
                .iter()
                .filter(|e| e["type"] == "payment_intent.succeeded")
                .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
                .collect()
        };
        let (a, b) = (pis(0), pis(1));
        assert_eq!(a.len(), CHUNK_OBJECTS);
        assert!(a.is_disjoint(&b));
        // The third chunk wraps around: objects 200..250 then 0..50.
        assert!(pis(2).contains("pi_000000") && pis(2).contains("pi_000249"));
        let subs = |k: usize| -> HashSet<String> {
            chunk(&objs, &sessions, k, CHUNK_EVENTS)
                .iter()
                .filter(|e| e["type"] == "customer.subscription.updated")
                .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(!subs(0).is_empty());
        assert!(subs(0).is_disjoint(&subs(1)));
    }

    #[test]
    fn slice_figures_from_two_readings() {
        let prev = Reading {
            acked: 100_000,
            applied: 95_000,
            at_s: 20.0,
            stored: 90_000,
            db_bytes: 500 << 20,
            server_cpu_s: 10.0,
            senders_cpu_s: 4.0,
        };
        let cur = Reading {
            acked: 200_000,
            applied: 199_000,
            at_s: 45.0,
            stored: 150_000,
            db_bytes: 300_000_000,
            server_cpu_s: 30.0,
            senders_cpu_s: 9.0,
        };
        let lats: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let f = slice_figures(&prev, &cur, &lats);
        assert_eq!(f.events, 100_000);
        assert!((f.acked_per_s - 4_000.0).abs() < 1e-6);
        // Applied: 95,000 then 199,000: 104,000 in 25 s.
        assert!((f.applied_per_s - 4_160.0).abs() < 1e-6);
        assert!((f.p99_ms - 99.0).abs() < 1e-9);
        assert!((f.bytes_per_stored - 2_000.0).abs() < 1e-9);
        assert!((f.bytes_per_received - 1_500.0).abs() < 1e-9);
        assert!((f.server_cpu_us - 200.0).abs() < 1e-6);
        assert!((f.senders_cpu_us - 50.0).abs() < 1e-6);
        assert_eq!(f.stored, 150_000);
    }

    #[test]
    fn size_per_stored_event_and_flatness() {
        assert_eq!(per_stored(1_000, 0), 0.0);
        assert!((per_stored(6_500_000, 1_000) - 6_500.0).abs() < 1e-9);
        assert_eq!(flat(0.0, 10.0, 0.15), (0.0, false));
        let (r, ok) = flat(1_000.0, 860.0, 0.15);
        assert!((r - 0.86).abs() < 1e-9 && ok);
        assert!(!flat(1_000.0, 840.0, 0.15).1);
        assert!(!flat(1_000.0, 1_160.0, 0.15).1);
    }
}
