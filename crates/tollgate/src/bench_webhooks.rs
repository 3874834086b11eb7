//! `tollgate bench webhooks`: signed Stripe events into the webhook endpoint of the real server
//! over loopback HTTP, as Stripe sends them (pretty JSON, signed at send time, at least once,
//! in no particular order). The bodies are written before the clock starts: they are Stripe's
//! work, and the senders share the machine with the server.
//!
//! The stream: for each of `objects` transactions (created through the API first, so each has
//! a PaymentIntent at the in-process sandbox) a lifecycle of payment-intent and charge events
//! (authorized, charge succeeded, succeeded, captured, then refunds rising step by step, each
//! `charge.refunded` with the cumulative amount and a `charge.refund.updated`), mixed with
//! subscription, invoice and checkout events over objects that repeat, which the entitlement
//! half applies: each subscription goes through versions (incomplete, active, and for some a
//! final cancellation) in distinct seconds, and each completed Checkout Session's line items
//! are read from the sandbox. The whole stream is shuffled, and a few percent of it is sent
//! twice. Reported: events/s acknowledged (each 200 means the event is committed durably),
//! events/s applied (until the inbox holds nothing waiting), acknowledgement latency, and
//! whether every transaction and every subscriber's purchases ended in the state the stream
//! implies (an older version applied last would show as a wrong state).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};
use tollgate_domain::entitlements::code;
use tollgate_stripe::signature;

use crate::bench::{
    BenchDb, BenchServer, cores, latency_line, machine_cpu, on_fresh_db, peak_rss_mib, process_cpu,
    process_cpu_of, status_mib,
};
use crate::demo::unix_now;

pub(crate) const SECRET: &str = "whsec_benchmark_secret_0123456789";
/// Share of the stream that is billing events (subscriptions, invoices, checkout).
const BILLING_SHARE: f64 = 0.3;
const DUPLICATE_SHARE: f64 = 0.03;
const API_VERSION: &str = "2026-10-28.endive";

/// What `tollgate bench webhooks` was asked for.
pub struct Options {
    pub events: usize,
    pub objects: usize,
    pub concurrency: usize,
    pub rounds: usize,
    /// The server in a child process (`tollgate serve`), the senders in this one.
    pub server_process: bool,
    /// One long stream with figures per slice (see `bench_longrun`), instead of rounds.
    pub long_run: bool,
    pub slice: usize,
    pub retention_secs: u64,
    pub prune_every_secs: u64,
    /// The server's `inbox_workers`, when not its default.
    pub inbox_workers: Option<u32>,
    /// The server's `inbox_batch`, when not its default.
    pub inbox_batch: Option<u32>,
}

pub async fn run(db: BenchDb, admin_url: &str, o: Options) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |url, dir| async move {
        bench(db, url, &dir, o).await
    })
    .await
}

/// What a sender reads of Tollgate's answer to an event.
#[derive(serde::Deserialize)]
pub(crate) struct Ack {
    pub duplicate: bool,
}

/// Sends one event to `url` as Stripe does (signed at send time, each attempt). `Ok` with the
/// acknowledgement read from a 2xx answer (`Err` inside when it could not be read), or `Err`
/// with the HTTP status or transport error.
pub(crate) async fn send_event(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: axum::body::Bytes,
) -> Result<Result<Ack, String>, String> {
    let header = signature::header(&[SECRET], unix_now(), &body);
    let r = client
        .post(url.clone())
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    Ok(r.json::<Ack>()
        .await
        .map_err(|e| format!("reading the answer: {e}")))
}

pub(crate) struct Object {
    pub transaction_id: String,
    pub pi: Value,
    pub amount: i64,
}

async fn bench(
    db: BenchDb,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    o: Options,
) -> anyhow::Result<()> {
    let (events, objects, concurrency, rounds) =
        (o.events, o.objects.max(1), o.concurrency, o.rounds.max(1));
    let tweak = |c: &mut tollgate_server::Config| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
        c.reconcile_interval_secs = 0;
        if let Some(n) = o.inbox_workers {
            c.inbox_workers = n;
        }
        if let Some(n) = o.inbox_batch {
            c.inbox_batch = n;
        }
    };
    let srv = if o.server_process {
        BenchServer::start_process(database_url.clone(), data_dir, concurrency, tweak).await?
    } else {
        BenchServer::start(database_url.clone(), data_dir, concurrency, tweak).await?
    };
    let server_pid = srv.server_pid();
    let client = srv.client.clone();
    let base = srv.public_url.clone();
    let auth = format!("Bearer {}", srv.key);

    // A connection whose webhook secret we know, to the sandbox as "live" Stripe.
    let conn: Value = client
        .post(format!("{base}/connections"))
        .header("authorization", &auth)
        .json(
            &json!({"secret_key": "sk_test_benchmark0123456789", "webhook_secret": SECRET,
                      "display_name": "bench"}),
        )
        .send()
        .await?
        .error_for_status()
        .context("creating the connection")?
        .json()
        .await?;
    let conn_id = conn["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no connection id"))?
        .to_string();

    catalogue(&client, &base, &auth).await?;
    if o.long_run {
        let result = crate::bench_longrun::run(crate::bench_longrun::LongRun {
            db,
            srv: &srv,
            data_dir,
            conn_id: &conn_id,
            events,
            objects,
            concurrency,
            slice: o.slice,
            retention_secs: o.retention_secs,
            prune_every_secs: o.prune_every_secs,
        })
        .await;
        srv.stop().await;
        return result;
    }
    let mut figures = Vec::new();
    let mut result = Ok(());
    for round in 1..=rounds {
        let on = Round {
            db,
            database_url: database_url.as_deref(),
            client: &client,
            base: &base,
            stripe: &srv.stripe_base,
            auth: &auth,
            conn_id: &conn_id,
            events,
            objects,
            concurrency,
            round,
            rounds,
            server_pid,
        };
        match one_round(on).await {
            Ok(f) => figures.push(f),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if rounds > 1 {
        rounds_table(&figures);
    }
    srv.stop().await;
    result
}

/// One round's inputs: the server's, and which round it is.
struct Round<'a> {
    db: BenchDb,
    database_url: Option<&'a str>,
    client: &'a reqwest::Client,
    base: &'a str,
    /// Where the sandbox standing in for Stripe answers.
    stripe: &'a str,
    auth: &'a str,
    conn_id: &'a str,
    events: usize,
    objects: usize,
    concurrency: usize,
    round: usize,
    rounds: usize,
    /// The server's process when it runs apart from the senders.
    server_pid: Option<u32>,
}

/// One round's figures, for the table after several rounds on the same database.
struct Figures {
    acked_per_s: f64,
    applied_per_s: f64,
    /// PostgreSQL: dead row versions of the inbox table and of every table, after the round.
    dead: Option<(i64, i64)>,
}

/// Rounds on the same database side by side: whether applying keeps pace with acknowledging
/// and whether either falls run by run.
fn rounds_table(figures: &[Figures]) {
    println!("rounds on the same database:");
    println!(
        "  round  acknowledged/s  applied/s  applied/acknowledged  dead inbox rows  dead rows (all tables)"
    );
    for (i, f) in figures.iter().enumerate() {
        let (inbox, all) = f.dead.map_or(("-".to_string(), "-".to_string()), |(a, b)| {
            (a.to_string(), b.to_string())
        });
        println!(
            "  {:>5}  {:>14.0}  {:>9.0}  {:>20.2}  {inbox:>15}  {all:>22}",
            i + 1,
            f.acked_per_s,
            f.applied_per_s,
            f.applied_per_s / f.acked_per_s
        );
    }
}

/// PostgreSQL's count of dead row versions (`pg_stat_user_tables.n_dead_tup`) in the inbox
/// table and in all tables. The statistics are flushed by each server process about once a
/// second, so the count is read after a pause.
async fn dead_rows(database_url: &str) -> anyhow::Result<(i64, i64)> {
    use sqlx::Connection;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = sqlx::postgres::PgConnection::connect(database_url).await?;
    let (inbox, all): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT SUM(n_dead_tup) FILTER (WHERE relname = 'webhook_events')::BIGINT,
                SUM(n_dead_tup)::BIGINT
         FROM pg_stat_user_tables",
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok((inbox.unwrap_or(0), all.unwrap_or(0)))
}

async fn one_round(on: Round<'_>) -> anyhow::Result<Figures> {
    let Round {
        db,
        database_url,
        client,
        base,
        stripe,
        auth,
        conn_id,
        events,
        objects,
        concurrency,
        round,
        rounds,
        server_pid,
    } = on;
    let (client, base, auth) = (client.clone(), base.to_string(), auth.to_string());
    // Each round's ids are its own (the first round's are those of a single run).
    let tag = if round == 1 {
        String::new()
    } else {
        format!("r{round}_")
    };
    if rounds > 1 {
        println!("round {round} of {rounds}");
    }
    print!("setting up {objects} transactions… ");
    let made = Instant::now();
    let objs = make_objects(&client, &base, stripe, &auth, conn_id, objects, concurrency).await?;

    // Checkout Sessions that exist in the sandbox: a completed one in `payment` mode makes
    // Tollgate read its line items from Stripe, as it must with real ones.
    let sessions = make_sessions(&client, stripe, objects / 2 + 1, concurrency, round == 1).await?;
    println!(
        "{:.1} s (with {} checkout sessions)",
        made.elapsed().as_secs_f64(),
        sessions.len()
    );

    let (stream, expected, holders) = build_stream(&objs, &sessions, events, &tag);
    let payment = stream
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("payment_intent.") || t.starts_with("charge."))
        })
        .count();
    let mut rng = rand::rng();
    let mut sends: Vec<Arc<Value>> = stream.into_iter().map(Arc::new).collect();
    let distinct = sends.len();
    let dups: Vec<Arc<Value>> = sends
        .choose_multiple(&mut rng, (distinct as f64 * DUPLICATE_SHARE) as usize)
        .cloned()
        .collect();
    sends.extend(dups);
    sends.shuffle(&mut rng);
    let total = sends.len();
    // Pretty JSON, the same bytes at each attempt, written before the clock starts (see above);
    // shared, not copied, by each send.
    let sends: Vec<axum::body::Bytes> = sends
        .iter()
        .map(|ev| serde_json::to_vec_pretty(&**ev).map(Into::into))
        .collect::<Result<_, _>>()?;

    // Parsed once: each send clones it.
    let url = reqwest::Url::parse(&format!("{base}/webhooks/stripe/{conn_id}"))?;
    let sends = Arc::new(sends);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_at_start = process_cpu();
    let machine_at_start = machine_cpu();
    let server_cpu_at_start = server_pid.and_then(|p| process_cpu_of(Some(p)));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, sends, next) = (client.clone(), url.clone(), sends.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut duplicates = 0usize;
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = sends.get(i).cloned() else {
                    break;
                };
                let t = Instant::now();
                match send_event(&client, &url, body).await {
                    Ok(ack) => {
                        lat.push(t.elapsed());
                        if ack.is_ok_and(|a| a.duplicate) {
                            duplicates += 1;
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            (lat, duplicates, errors)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut duplicates = 0;
    let mut errors = Vec::new();
    for t in tasks {
        let (l, d, e) = t.await?;
        lat.extend(l);
        duplicates += d;
        errors.extend(e);
    }
    let acked_in = started.elapsed();
    // Applied: nothing left waiting in the inbox.
    loop {
        let waiting = get_json(
            &client,
            &auth,
            format!("{base}/webhook-events?status=received&status=failed&limit=1"),
        )
        .await?;
        if waiting["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("events still waiting after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_in = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_at_start)
        .map(|(end, start)| end.saturating_sub(start));
    let machine = machine_cpu()
        .zip(machine_at_start)
        .map(|(end, start)| end.saturating_sub(start));
    let server_cpu = server_pid
        .and_then(|p| process_cpu_of(Some(p)))
        .zip(server_cpu_at_start)
        .map(|(end, start)| end.saturating_sub(start));
    lat.sort();

    // The stored state against the stream.
    let mut stale = Vec::new();
    for (o, (captured, refunded)) in objs.iter().zip(&expected) {
        let t = get_json(
            &client,
            &auth,
            format!("{base}/transactions/{}", o.transaction_id),
        )
        .await?;
        if t["status"] != "capture_succeeded"
            || t["captured_amount"] != *captured
            || t["refunded_amount"] != *refunded
        {
            stale.push(format!(
                "{}: {} captured {} refunded {} (expected capture_succeeded {captured} {refunded})",
                o.transaction_id, t["status"], t["captured_amount"], t["refunded_amount"]
            ));
        }
    }
    let mut wrong = Vec::new();
    for h in &holders {
        let sub = get_json(
            &client,
            &auth,
            format!("{base}/v1/subscribers/{}", h.customid),
        )
        .await?;
        let purchase = sub["purchases"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == h.source.as_str()));
        let permission = sub["permissions"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["identifier"] == h.permission));
        let held = permission.is_some_and(|p| p["is_valid"] == true);
        if purchase.map(|p| (&p["is_valid"], &p["entitlement"]))
            != Some((&json!(h.held), &json!(h.code)))
            || held != h.held
        {
            wrong.push(format!(
                "{}: {} is {} and {} {} (expected held {} code {})",
                h.customid,
                h.source,
                purchase.map_or("absent".into(), |p| format!(
                    "valid {} code {}",
                    p["is_valid"], p["entitlement"]
                )),
                h.permission,
                if held { "held" } else { "not held" },
                h.held,
                h.code
            ));
        }
    }
    let dead = get_json(
        &client,
        &auth,
        format!("{base}/webhook-events?status=dead&limit=1"),
    )
    .await?;

    let cores = cores();
    let db_name = match db {
        BenchDb::Sqlite => "SQLite (synchronous=FULL, WAL; temporary data directory)",
        BenchDb::Postgres => "PostgreSQL (synchronous_commit=on; fresh database, dropped after)",
    };
    println!(
        "webhooks bench: signed Stripe events → POST /webhooks/stripe/{{id}} on the real server"
    );
    println!("  database: {db_name}; machine: {cores} cores; {concurrency} concurrent senders");
    println!(
        "  stream: {distinct} distinct events ({payment} payment-intent/charge/refund events over {objects} transactions, {} subscription/invoice/checkout events), {} sent twice, shuffled",
        distinct - payment,
        total - distinct
    );
    println!(
        "  acknowledged: {} of {total} in {:.2} s = {:.0} events/s (each durable before its 200); {duplicates} answered as duplicates",
        lat.len(),
        acked_in.as_secs_f64(),
        lat.len() as f64 / acked_in.as_secs_f64()
    );
    println!("  ack latency: {}", latency_line(&lat));
    println!(
        "  applied: all {distinct} distinct events in {:.2} s from the first send = {:.0} events/s",
        applied_in.as_secs_f64(),
        distinct as f64 / applied_in.as_secs_f64()
    );
    println!(
        "  state: {}/{objects} transactions and {}/{} subscribers' purchases and permissions match the stream; dead letters: {}",
        objects - stale.len(),
        holders.len() - wrong.len(),
        holders.len(),
        if dead["items"].as_array().is_some_and(Vec::is_empty) {
            "none"
        } else {
            "SOME"
        }
    );
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    let busy = |d: Duration| d.as_secs_f64() / applied_in.as_secs_f64();
    match (server_pid, cpu, server_cpu) {
        (None, Some(cpu), _) => {
            // Senders, server and sandbox share the machine: what one event costs them all,
            // and how much of the machine was busy (the rest was waiting).
            println!(
                "  CPU (senders, server and sandbox), first send to all applied: {:.0} µs per event sent; {:.2} of {cores} cores busy on average",
                per_event(cpu),
                busy(cpu)
            );
        }
        (Some(_), Some(cpu), Some(scpu)) => {
            println!(
                "  CPU, first send to all applied, per event sent: server process {:.0} µs ({:.2} of {cores} cores busy); senders' process {:.0} µs ({:.2} cores)",
                per_event(scpu),
                busy(scpu),
                per_event(cpu),
                busy(cpu)
            );
        }
        _ => {}
    }
    if let Some(m) = machine {
        // Everything the machine did meanwhile, the database server's work included (on
        // PostgreSQL, about half of it): the cost a change must lower, whichever process pays.
        println!(
            "  machine CPU (every process, the database's included), first send to all applied: {:.0} µs per event sent; {:.2} of {cores} cores busy",
            per_event(m),
            busy(m)
        );
    }
    match server_pid {
        None => {
            if let Some(rss) = peak_rss_mib() {
                println!("  peak RSS (senders, server and sandbox in one process): {rss:.0} MiB");
            }
        }
        Some(pid) => {
            let server = status_mib(Some(pid), "VmHWM:").map_or("?".into(), |m| format!("{m:.0}"));
            let senders = peak_rss_mib().map_or("?".into(), |m| format!("{m:.0}"));
            println!(
                "  peak RSS: server process {server} MiB ({}); senders' process (with Stripe's sandbox) {senders} MiB",
                crate::bench::rss_parts(pid)
            );
        }
    }
    let dead = match database_url {
        Some(url) => Some(dead_rows(url).await?),
        None => None,
    };
    if let Some((inbox, all)) = dead {
        println!(
            "  dead row versions (PostgreSQL, not vacuumed): {inbox} in the inbox, {all} in all tables"
        );
    }
    if !errors.is_empty() {
        bail!("{} sends failed; the first: {}", errors.len(), errors[0]);
    }
    if let Some(s) = stale.first() {
        bail!(
            "{} transactions do not match the stream; the first: {s}",
            stale.len()
        );
    }
    if let Some(w) = wrong.first() {
        bail!(
            "{} subscribers do not match the stream; the first: {w}",
            wrong.len()
        );
    }
    Ok(Figures {
        acked_per_s: lat.len() as f64 / acked_in.as_secs_f64(),
        applied_per_s: distinct as f64 / applied_in.as_secs_f64(),
        dead,
    })
}

/// A GET of Tollgate's API with the secret key, read as JSON.
pub(crate) async fn get_json(
    client: &reqwest::Client,
    auth: &str,
    url: String,
) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .header("authorization", auth)
        .send()
        .await?
        .json()
        .await?)
}

/// Creates `n` transactions on the connection and reads each one's PaymentIntent.
pub(crate) async fn make_objects(
    client: &reqwest::Client,
    base: &str,
    stripe: &str,
    auth: &str,
    conn_id: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Object>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(16) {
        let (client, base, stripe, auth, conn_id, next) = (
            client.clone(),
            base.to_string(),
            stripe.to_string(),
            auth.to_string(),
            conn_id.to_string(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let amount = 1000 + (out.len() as i64 % 50) * 100;
                let tx: Value = client
                    .post(format!("{base}/transactions"))
                    .header("authorization", &auth)
                    .json(&json!({"amount": amount, "currency": "EUR", "intent": "authorize",
                                  "payment_service_id": conn_id,
                                  "payment_method": {"method": "card", "redirect_url": "https://merchant.example/done"}}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let pi_id = tx["additional_identifiers"]["payment_id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no PaymentIntent: {tx}"))?;
                let pi: Value = client
                    .get(format!("{stripe}/v1/payment_intents/{pi_id}"))
                    .bearer_auth("sk_test_benchmark0123456789")
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                out.push(Object {
                    transaction_id: tx["id"].as_str().unwrap_or_default().to_string(),
                    pi,
                    amount,
                });
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// The product of the subscriptions (not read from Stripe: their events carry their items)
/// and of the Checkout Sessions' line items (read from the sandbox, where it is created).
const SUB_PRODUCT: &str = "prod_bench";
const ONCE_PRODUCT: &str = "prod_bench_once";
/// The permissions they give (see [`catalogue`]).
const SUB_PERMISSION: &str = "bench_sub";
const ONCE_PERMISSION: &str = "bench_once";

/// SKUs and permissions for the two products, so the entitlement half evaluates what the
/// billing events give (with no catalogue, purchases grant no permission).
pub(crate) async fn catalogue(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
) -> anyhow::Result<()> {
    let posts = [
        (
            "/v1/skus",
            json!({"identifier": "bench_monthly", "store": "stripe", "product_id": SUB_PRODUCT, "kind": "subscription"}),
        ),
        (
            "/v1/skus",
            json!({"identifier": "bench_once", "store": "stripe", "product_id": ONCE_PRODUCT, "kind": "one_time"}),
        ),
        (
            "/v1/permissions/definitions",
            json!({"identifier": SUB_PERMISSION, "skus": ["bench_monthly"]}),
        ),
        (
            "/v1/permissions/definitions",
            json!({"identifier": ONCE_PERMISSION, "skus": ["bench_once"]}),
        ),
    ];
    for (path, body) in posts {
        client
            .post(format!("{base}{path}"))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("POST {path}"))?;
    }
    Ok(())
}

/// `n` Checkout Sessions (payment mode, one line of [`ONCE_PRODUCT`]) in the sandbox; their
/// ids.
pub(crate) async fn make_sessions(
    client: &reqwest::Client,
    stripe: &str,
    n: usize,
    concurrency: usize,
    first: bool,
) -> anyhow::Result<Vec<String>> {
    // The product once, in the first round.
    if first {
        client
            .post(format!("{stripe}/v1/products"))
            .bearer_auth("sk_test_benchmark0123456789")
            .form(&[("id", ONCE_PRODUCT), ("name", "Bench")])
            .send()
            .await?
            .error_for_status()
            .context("creating the product")?;
    }
    let per = n.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for chunk in 0..concurrency.max(1) {
        let (client, stripe) = (client.clone(), stripe.to_string());
        let count = per.min(n.saturating_sub(chunk * per));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let form = [
                    ("mode", "payment"),
                    ("success_url", "https://merchant.example/done"),
                    ("line_items[0][price_data][currency]", "eur"),
                    ("line_items[0][price_data][unit_amount]", "1999"),
                    ("line_items[0][price_data][product]", ONCE_PRODUCT),
                    ("line_items[0][quantity]", "1"),
                ];
                let cs: Value = client
                    .post(format!("{stripe}/v1/checkout/sessions"))
                    .bearer_auth("sk_test_benchmark0123456789")
                    .form(&form)
                    .send()
                    .await?
                    .error_for_status()
                    .context("creating a checkout session")?
                    .json()
                    .await?;
                out.push(cs["id"].as_str().unwrap_or_default().to_string());
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

pub(crate) fn event(id: String, kind: &str, object: Value) -> Value {
    event_at(id, kind, object, unix_now())
}

pub(crate) fn event_at(id: String, kind: &str, object: Value, created: i64) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    })
}

fn charge(pi: &Value, ch_id: &str, amount: i64, captured: bool, refunded: i64) -> Value {
    json!({
        "id": ch_id, "object": "charge", "amount": amount,
        "amount_captured": if captured { amount } else { 0 },
        "amount_refunded": refunded, "application": null, "application_fee": null,
        "application_fee_amount": null, "balance_transaction": format!("txn_{}", &ch_id[3..]),
        "billing_details": {"address": {"city": null, "country": null, "line1": null, "line2": null,
                            "postal_code": null, "state": null}, "email": null, "name": null, "phone": null},
        "calculated_statement_descriptor": "TOLLGATE", "captured": captured,
        "created": pi["created"], "currency": pi["currency"], "customer": null,
        "description": null, "disputed": false, "failure_balance_transaction": null,
        "failure_code": null, "failure_message": null, "fraud_details": {}, "livemode": false,
        "metadata": pi["metadata"], "on_behalf_of": null,
        "outcome": {"network_status": "approved_by_network", "reason": null, "risk_level": "normal",
                    "risk_score": 32, "seller_message": "Payment complete.", "type": "authorized"},
        "paid": true, "payment_intent": pi["id"], "payment_method": "pm_card_visa",
        "payment_method_details": {"card": {"brand": "visa", "country": "US", "exp_month": 12,
            "exp_year": 2034, "funding": "credit", "last4": "4242", "network": "visa"}, "type": "card"},
        "receipt_email": null, "receipt_url": null, "refunded": refunded == amount,
        "review": null, "shipping": null, "source_transfer": null, "statement_descriptor": null,
        "statement_descriptor_suffix": null, "status": "succeeded", "transfer_data": null,
        "transfer_group": null,
    })
}

/// What a subscriber should have of one purchase once the stream is applied.
pub(crate) struct Holder {
    customid: String,
    /// The subscription or Checkout Session.
    source: String,
    permission: &'static str,
    held: bool,
    /// The purchase's entitlement code (SPEC §5.3).
    code: i32,
}

/// The stream; per object the (captured, refunded) amounts it implies; and what the billing
/// events give their subscribers.
pub(crate) fn build_stream(
    objs: &[Object],
    sessions: &[String],
    events: usize,
    tag: &str,
) -> (Vec<Value>, Vec<(i64, i64)>, Vec<Holder>) {
    let payment_target = ((events as f64) * (1.0 - BILLING_SHARE)) as usize;
    let mut out = Vec::with_capacity(events);
    let mut expected = Vec::with_capacity(objs.len());
    let mut n = 0usize;
    let mut next_id = || {
        n += 1;
        format!("evt_bench_{tag}{n:08}")
    };
    for (i, o) in objs.iter().enumerate() {
        // Spread the payment events evenly over the objects.
        let share = payment_target / objs.len() + usize::from(i < payment_target % objs.len());
        let share = share.max(4);
        let pi_id = o.pi["id"].as_str().unwrap_or_default();
        let ch_id = format!("ch_{}", &pi_id[3..]);
        let mut pi = o.pi.clone();
        pi["latest_charge"] = json!(ch_id);
        pi["payment_method"] = json!("pm_card_visa");
        let mut authorized = pi.clone();
        authorized["status"] = json!("requires_capture");
        authorized["amount_capturable"] = json!(o.amount);
        out.push(event(
            next_id(),
            "payment_intent.amount_capturable_updated",
            authorized,
        ));
        out.push(event(
            next_id(),
            "charge.succeeded",
            charge(&pi, &ch_id, o.amount, false, 0),
        ));
        let mut succeeded = pi.clone();
        succeeded["status"] = json!("succeeded");
        succeeded["amount_received"] = json!(o.amount);
        out.push(event(next_id(), "payment_intent.succeeded", succeeded));
        out.push(event(
            next_id(),
            "charge.captured",
            charge(&pi, &ch_id, o.amount, true, 0),
        ));
        // Refunds of a tenth of the amount each, cumulative on the charge.
        let steps = (share - 4) / 2;
        let step = o.amount / 10;
        let mut refunded = 0;
        for k in 1..=steps.min(10) {
            refunded = step * k as i64;
            out.push(event(
                next_id(),
                "charge.refunded",
                charge(&pi, &ch_id, o.amount, true, refunded),
            ));
            let re = json!({"id": format!("re_{}_{k}", &pi_id[3..]), "object": "refund",
                            "amount": step, "charge": ch_id, "currency": pi["currency"],
                            "payment_intent": pi_id, "status": "succeeded", "metadata": {},
                            "created": pi["created"], "reason": null,
                            "balance_transaction": null, "destination_details": null});
            out.push(event(next_id(), "charge.refund.updated", re));
        }
        expected.push((o.amount, refunded));
    }
    // Billing events over repeating subscriptions, invoices and checkout sessions.
    let billing = events.saturating_sub(out.len());
    let owners = objs.len() / 2 + 1;
    let now = unix_now();
    // How many versions each subscription gets: each is one event, a second apart (Stripe's
    // `created`), so the newest is known without reading it again.
    let mut versions = vec![0usize; owners];
    for k in (0..billing).step_by(3) {
        versions[k % owners] += 1;
    }
    let mut seen = vec![0usize; owners];
    let mut holders = Vec::new();
    for k in 0..billing {
        let obj = k % owners;
        let customid = format!("user-{tag}{obj}");
        let (kind, object, created) = match k % 3 {
            0 => {
                let (v, last) = (seen[obj], versions[obj]);
                seen[obj] += 1;
                // A quarter of the subscriptions end canceled by the customer.
                let cancels = obj % 4 == 1;
                let status = match v {
                    _ if v + 1 == last && cancels => "canceled",
                    0 if last > 1 => "incomplete",
                    _ => "active",
                };
                if v == 0 {
                    holders.push(Holder {
                        customid: customid.clone(),
                        source: format!("sub_bench{tag}{obj}"),
                        permission: SUB_PERMISSION,
                        held: !cancels,
                        code: if cancels {
                            code::EXPIRED
                        } else {
                            code::RENEWING
                        },
                    });
                }
                let created = now - 3600 + v as i64;
                (
                    "customer.subscription.updated",
                    json!({"id": format!("sub_bench{tag}{obj}"), "object": "subscription", "created": now - 7200,
                      "status": status, "customer": format!("cus_bench{tag}{obj}"), "metadata": {"customid": customid},
                      "cancel_at_period_end": false, "ended_at": if status == "canceled" { json!(created) } else { Value::Null },
                      "cancellation_details": {"comment": null, "feedback": null,
                        "reason": if status == "canceled" { json!("cancellation_requested") } else { Value::Null }},
                      "items": {"object": "list", "data": [{"id": format!("si_bench{tag}{obj}"), "object": "subscription_item",
                      "current_period_start": now - 7200, "current_period_end": now + 30 * 86_400,
                      "price": {"id": "price_bench", "object": "price", "product": SUB_PRODUCT, "unit_amount": 999,
                      "currency": "eur", "recurring": {"interval": "month", "interval_count": 1}}, "quantity": 1}]}}),
                    created,
                )
            }
            1 => (
                "invoice.paid",
                json!({"id": format!("in_bench{tag}{obj}_{k}"), "object": "invoice", "status": "paid",
                  "customer": format!("cus_bench{tag}{obj}"), "amount_paid": 999, "currency": "eur",
                  "billing_reason": "subscription_cycle",
                  "parent": {"type": "subscription_details", "subscription_details": {"subscription": format!("sub_bench{tag}{obj}"), "metadata": {}}},
                  "lines": {"object": "list", "data": []}}),
                now,
            ),
            _ => {
                let session = &sessions[obj % sessions.len().max(1)];
                if !holders.iter().any(|h| &h.source == session) {
                    holders.push(Holder {
                        customid: customid.clone(),
                        source: session.clone(),
                        permission: ONCE_PERMISSION,
                        held: true,
                        code: code::LIFETIME,
                    });
                }
                (
                    "checkout.session.completed",
                    json!({"id": session, "object": "checkout.session",
                      "mode": "payment", "status": "complete", "payment_status": "paid", "amount_total": 1999,
                      "currency": "eur", "client_reference_id": customid, "customer": format!("cus_bench{tag}{obj}"),
                      "metadata": {}}),
                    now,
                )
            }
        };
        out.push(event_at(next_id(), kind, object, created));
    }
    (out, expected, holders)
}
