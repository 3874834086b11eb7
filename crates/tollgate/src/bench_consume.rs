//! `tollgate bench consume`: `POST /v1/permissions/{identifier}/consume`, the metered
//! permissions' hot path, on the real server (every layer, the Idempotency-Key middleware
//! included when `--idempotency-keys`).
//!
//! A fresh SQLite or PostgreSQL database is seeded with `--customers` balances of a metered
//! permission (large enough never to run out), then two runs, interleaved `--rounds` times:
//! `spread` (each of the `--clients` picks a random customer per request) and `hot` (every
//! client consumes the same customer's balance: the case a row lock serialises). Each consume
//! is durable (committed and synced before the answer). Each run prints consumes per second,
//! latency percentiles and the CPU time per consume of the whole process (the server and its
//! clients share it). Run on a release build with `RUST_LOG=warn`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tollgate_store::credits as cs;

use crate::bench::{
    BenchDb, BenchServer, cores, latency_line, on_fresh_db, process_cpu, request_logs,
};

const PERMISSION: &str = "bench_credits";

pub struct Options {
    pub customers: usize,
    pub clients: usize,
    pub seconds: u64,
    pub rounds: usize,
    pub idempotency_keys: bool,
}

pub async fn run(db: BenchDb, admin_url: &str, opts: Options) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |url, dir| async move {
        run_on(db, url, &dir, opts).await
    })
    .await
}

async fn run_on(
    db: BenchDb,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    opts: Options,
) -> anyhow::Result<()> {
    let customers = opts.customers.max(1);
    let clients = opts.clients.max(1);
    let srv = BenchServer::start(database_url, data_dir, clients, |_| {}).await?;
    let r = srv
        .client
        .post(format!("{}/v1/permissions/definitions", srv.public_url))
        .bearer_auth(&srv.key)
        .json(&serde_json::json!({"identifier": PERMISSION, "kind": "metered", "skus": []}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "creating the metered permission: HTTP {}",
        r.status()
    );
    let seeded = Instant::now();
    seed(&srv.database_url, customers).await?;
    let seed_secs = seeded.elapsed().as_secs_f64();
    println!(
        "consume bench: POST /v1/permissions/{{identifier}}/consume (2 units), real server, durable commits"
    );
    println!(
        "  database: {}; machine: {} cores; server request logs: {}",
        db.describe(),
        cores(),
        request_logs()
    );
    println!(
        "  seeded: {customers} balances in {seed_secs:.1} s; {clients} clients; Idempotency-Key on every request: {}",
        if opts.idempotency_keys { "yes" } else { "no" }
    );
    let counter = Arc::new(AtomicU64::new(0));
    for round in 0..opts.rounds.max(1) {
        for hot in [false, true] {
            let cpu_at_start = process_cpu();
            let (lat, errors, first, secs) = measure(
                &srv,
                if hot { 1 } else { customers },
                clients,
                opts.seconds.max(1),
                opts.idempotency_keys,
                counter.clone(),
            )
            .await?;
            let name = if hot {
                "hot (all clients, one customer)"
            } else {
                "spread (random customer)"
            };
            // The whole process: the server and the clients that load it.
            let cpu = process_cpu()
                .zip(cpu_at_start)
                .map(|(end, start)| end.saturating_sub(start));
            let per_consume = match cpu {
                Some(cpu) if !lat.is_empty() => format!(
                    "{:.0} µs CPU per consume (server and clients)",
                    cpu.as_secs_f64() * 1e6 / lat.len() as f64
                ),
                _ => "CPU not measured".into(),
            };
            println!(
                "  round {} {name}: {:.0} consumes/s ({} ok, {errors} failed in {secs:.1} s); {}; {per_consume}",
                round + 1,
                lat.len() as f64 / secs,
                lat.len(),
                latency_line(&lat)
            );
            if let Some(e) = first {
                println!("    first failure: {e}");
            }
        }
    }
    srv.stop().await;
    Ok(())
}

/// Balances of customers `c0` … `c{n-1}`, each with an adjustment lot large enough.
async fn seed(database_url: &str, customers: usize) -> anyhow::Result<()> {
    let store = tollgate_store::Store::connect(database_url)
        .await
        .context("connecting to the benchmark database")?;
    let now = {
        use tollgate_server::clock::Clock;
        tollgate_server::clock::SystemClock.now_ms()
    };
    for chunk in (0..customers).collect::<Vec<_>>().chunks(1000) {
        let mut tx = store.begin().await?;
        for &i in chunk {
            let customid = format!("c{i}");
            let units = 1_000_000_000_i64;
            cs::ensure_balance(&mut *tx, "default", &customid, PERMISSION, now).await?;
            let id = tollgate_store::new_id();
            let e = cs::LedgerRow {
                id: id.clone(),
                customid: customid.clone(),
                permission: PERMISSION.into(),
                kind: "adjustment".into(),
                units,
                balance_after: units,
                lot: Some(id),
                reason: Some("benchmark".into()),
                created_at: now,
                ..cs::LedgerRow::default()
            };
            cs::insert_entry(&mut *tx, "default", &e).await?;
            let b = cs::BalanceRow {
                customid,
                permission: PERMISSION.into(),
                balance: units,
                held: 0,
                granted: units,
                consumed: 0,
                due_at: None,
                resets_at: None,
                low_threshold: None,
                updated_at: now,
            };
            cs::put_balance(&mut *tx, "default", &b).await?;
        }
        tollgate_store::commit(tx).await?;
    }
    store.close().await;
    Ok(())
}

type Measured = (Vec<Duration>, usize, Option<String>, f64);

async fn measure(
    srv: &BenchServer,
    customers: usize,
    clients: usize,
    seconds: u64,
    keys: bool,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/v1/permissions/{PERMISSION}/consume", srv.public_url);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, key, stop, counter) = (
            srv.client.clone(),
            url.clone(),
            srv.key.clone(),
            stop.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first = None;
            // A small xorshift per client: no shared random state.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let customer = (x % customers as u64) as usize;
                let body = format!(r#"{{"customid":"c{customer}","units":2}}"#);
                let mut rb = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body);
                if keys {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    rb = rb.header("idempotency-key", format!("bench-{n}"));
                }
                let t = Instant::now();
                match rb.send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    Ok(r) => {
                        errors += 1;
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        first.get_or_insert(format!("HTTP {status}: {text}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(format!("sending: {e}"));
                    }
                }
            }
            (lat, errors, first)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for t in tasks {
        let (l, e, f) = t.await?;
        lat.extend(l);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    Ok((lat, errors, first, secs))
}
