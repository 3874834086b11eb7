//! `tollgate bench overview`: the dashboard's overview on a large account.
//!
//! Seeds a fresh SQLite (or PostgreSQL) database straight through SQL with `--transactions`
//! transactions over the last 90 days (four currencies; captured, refunded in full and in
//! part, declined, failed, voided, waiting, disputed), subscriptions (monthly, yearly,
//! weekly; active, trialing, cancelled), Stripe events received and outbound deliveries, then
//! times, `--runs` times each:
//! - the overview's figures alone (every panel's query, as the page reads them), for 30 days;
//! - the whole page over HTTP on the real server (session check, queries, template), for
//!   today, 7 days, 30 days and a custom 90-day range.
//!
//! Run on a release build with `RUST_LOG=warn`.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use sqlx::Arguments;
use tollgate_server::clock::{Clock, SystemClock};
use tollgate_server::dashboard::overview::{Range, date_of_day, figures};

use crate::bench::{BenchDb, BenchServer, cores, latency_line, on_fresh_db, request_logs};

const DAY_MS: i64 = 86_400_000;
const USER: &str = "bench";
const PASSWORD: &str = "a long enough bench password";

pub struct Options {
    pub transactions: usize,
    pub subscriptions: usize,
    pub events: usize,
    pub runs: usize,
}

pub async fn run(db: BenchDb, admin_url: &str, o: Options) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |url, dir| async move {
        let srv = BenchServer::start(url, &dir, 4, |_| {}).await?;
        let result = measure(db, &srv, &o).await;
        srv.stop().await;
        result
    })
    .await
}

/// A tiny deterministic generator (xorshift), so every run seeds the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

enum V {
    I(i64),
    S(String),
    B(Vec<u8>),
}

/// Inserts `rows` into `table` in statements of a few hundred rows, every value bound.
async fn insert(
    store: &tollgate_store::Store,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<V>>,
) -> anyhow::Result<()> {
    let per = (20_000 / columns.len()).clamp(1, 500);
    let mut it = rows.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Vec<V>> = it.by_ref().take(per).collect();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut args = sqlx::any::AnyArguments::default();
        let mut n = 0;
        for (i, row) in chunk.into_iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, v) in row.into_iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&format!("${n}"));
                let _ = match v {
                    V::I(x) => args.add(x),
                    V::S(x) => args.add(x),
                    V::B(x) => args.add(x),
                };
            }
            sql.push(')');
        }
        // Table and column names are this file's constants; every value is bound.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(store.writer())
            .await
            .with_context(|| format!("seeding {table}"))?;
    }
    Ok(())
}

async fn seed(url: &str, o: &Options, now: i64) -> anyhow::Result<()> {
    use sqlx::Row;
    let store = tollgate_store::Store::connect(url).await?;
    let conn: String = sqlx::query(
        "SELECT id FROM connections WHERE merchant_account_id = 'default' ORDER BY created_at LIMIT 1",
    )
    .fetch_one(store.reader())
    .await
    .context("the default connection")?
    .try_get("id")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let span = 90 * DAY_MS;

    // Transactions.
    let mut rows = Vec::with_capacity(o.transactions);
    for i in 0..o.transactions {
        let created = now - rng.below(span as u64) as i64;
        let (currency, amount) = match rng.below(20) {
            0..=11 => ("USD", 500 + rng.below(20_000) as i64),
            12..=16 => ("EUR", 500 + rng.below(15_000) as i64),
            17..=18 => ("JPY", 100 + rng.below(30_000) as i64),
            _ => ("GBP", 500 + rng.below(10_000) as i64),
        };
        let status = match rng.below(100) {
            0..=69 => "capture_succeeded",
            70..=74 => "authorization_succeeded",
            75..=82 => "authorization_declined",
            83..=85 => "authorization_failed",
            86..=92 => "buyer_approval_pending",
            _ => "authorization_voided",
        };
        let captured = if status == "capture_succeeded" {
            amount
        } else {
            0
        };
        let refunded = match (captured > 0, rng.below(20)) {
            (true, 0) => captured,
            (true, 1) => captured / 2,
            _ => 0,
        };
        let disputed = i64::from(captured > 0 && rng.below(200) == 0);
        rows.push(vec![
            V::S(format!("bench-tx-{i:07}")),
            V::S("default".into()),
            V::S(conn.clone()),
            V::S(status.into()),
            V::S("capture".into()),
            V::I(amount),
            V::S(currency.into()),
            V::I(if captured > 0 { amount } else { 0 }),
            V::I(captured),
            V::I(refunded),
            V::S("{}".into()),
            V::S(format!("user-{}", rng.below(20_000))),
            V::S("stripe".into()),
            V::I(disputed),
            V::S("{}".into()),
            V::I(created),
            V::I(created),
        ]);
    }
    insert(
        &store,
        "transactions",
        &[
            "id",
            "merchant_account_id",
            "connection_id",
            "status",
            "intent",
            "amount",
            "currency",
            "authorized_amount",
            "captured_amount",
            "refunded_amount",
            "metadata",
            "customid",
            "method",
            "disputed",
            "state",
            "created_at",
            "updated_at",
        ],
        rows,
    )
    .await?;

    // Subscriptions, as Stripe renders them (basil: periods on the items).
    let mut rows = Vec::with_capacity(o.subscriptions);
    for i in 0..o.subscriptions {
        let created = (now - rng.below(2 * span as u64) as i64) / 1000;
        let (status, ended) = match rng.below(20) {
            0..=15 => ("active", None),
            16 => ("trialing", None),
            17 => ("past_due", None),
            _ => {
                let end = created + rng.below((now / 1000 - created).max(1) as u64) as i64;
                ("canceled", Some(end))
            }
        };
        let (interval, amount) = match rng.below(10) {
            0..=6 => ("month", 999),
            7..=8 => ("year", 9_900),
            _ => ("week", 299),
        };
        let currency = if rng.below(4) == 0 { "eur" } else { "usd" };
        let data = serde_json::json!({
            "id": format!("sub_bench{i}"), "object": "subscription", "status": status,
            "customer": format!("cus_bench{i}"), "created": created, "ended_at": ended,
            "items": {"object": "list", "data": [{
                "id": format!("si_bench{i}"), "object": "subscription_item", "quantity": 1,
                "current_period_start": created, "current_period_end": created + 2_592_000,
                "price": {"id": "price_bench", "object": "price", "currency": currency,
                          "unit_amount": amount, "product": "prod_bench",
                          "recurring": {"interval": interval, "interval_count": 1}}
            }]}
        });
        rows.push(vec![
            V::S(conn.clone()),
            V::S("subscription".into()),
            V::S(format!("sub_bench{i}")),
            V::S("default".into()),
            V::I(created),
            V::I(0),
            V::S(format!("cus_bench{i}")),
            V::S(format!("user-{i}")),
            V::S(data.to_string()),
            V::I(now),
            V::I(now),
        ]);
    }
    insert(
        &store,
        "ent_stripe_objects",
        &[
            "connection_id",
            "object_type",
            "object_id",
            "merchant_account_id",
            "stamp_at",
            "stamp_progress",
            "stripe_customer_id",
            "customid",
            "data",
            "created_at",
            "updated_at",
        ],
        rows,
    )
    .await?;

    // Stripe events received; a failed one also waits for its retry (`webhook_waiting`).
    let mut rows = Vec::with_capacity(o.events);
    let mut waiting = Vec::new();
    for i in 0..o.events {
        let at = now - rng.below(span as u64) as i64;
        let status = match rng.below(100) {
            0..=94 => "applied",
            95..=97 => "ignored",
            98 => "failed",
            _ => "dead",
        };
        if status == "failed" {
            waiting.push(vec![V::S(format!("bench-evt-{i:07}")), V::I(at), V::I(1)]);
        }
        rows.push(vec![
            V::S(format!("bench-evt-{i:07}")),
            V::S(conn.clone()),
            V::S("default".into()),
            V::S(String::new()),
            V::S(format!("evt_bench{i}")),
            V::S("payment_intent.succeeded".into()),
            V::S("webhook".into()),
            V::S(status.into()),
            V::I(1),
            V::I(at),
            V::I(at / 1000),
            V::I(at),
            V::I(at),
        ]);
    }
    insert(
        &store,
        "webhook_events",
        &[
            "id",
            "connection_id",
            "merchant_account_id",
            "stripe_account",
            "stripe_event_id",
            "event_type",
            "source",
            "status",
            "attempts",
            "next_attempt_at",
            "stripe_created",
            "received_at",
            "updated_at",
        ],
        rows,
    )
    .await?;
    insert(
        &store,
        "webhook_waiting",
        &["id", "next_attempt_at", "attempts"],
        waiting,
    )
    .await?;

    // Outbound deliveries: one endpoint, one delivery per event.
    insert(
        &store,
        "webhook_subscriptions",
        &[
            "id",
            "merchant_account_id",
            "url",
            "events",
            "active",
            "secret_enc",
            "secret_hint",
            "created_at",
            "updated_at",
        ],
        vec![vec![
            V::S("bench-endpoint".into()),
            V::S("default".into()),
            V::S("https://merchant.example/hooks".into()),
            V::S("[\"*\"]".into()),
            V::I(1),
            V::B(vec![0; 16]),
            V::S("whsec_…".into()),
            V::I(now),
            V::I(now),
        ]],
    )
    .await?;
    let mut rows = Vec::with_capacity(o.events);
    for i in 0..o.events {
        let at = now - rng.below(span as u64) as i64;
        let status = match rng.below(100) {
            0..=95 => "delivered",
            96..=97 => "failed",
            98 => "pending",
            _ => "dead",
        };
        // Deliveries in the worker's future: never picked up while the bench runs.
        let next = now + 365 * DAY_MS;
        rows.push(vec![
            V::S(format!("bench-dlv-{i:07}")),
            V::S("default".into()),
            V::S("bench-endpoint".into()),
            V::S(format!("bench-evt-{i:07}")),
            V::S("transaction.captured".into()),
            V::S("{}".into()),
            V::S(status.into()),
            V::I(1),
            V::I(1),
            V::I(at),
            V::I(next),
            V::I(at),
            V::I(at),
        ]);
    }
    insert(
        &store,
        "webhook_deliveries",
        &[
            "id",
            "merchant_account_id",
            "subscription_id",
            "event_id",
            "event_name",
            "payload",
            "status",
            "attempts",
            "round_attempts",
            "round_started_at",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        rows,
    )
    .await?;
    // Planner statistics, as a database that has run for a while has them.
    sqlx::query("ANALYZE").execute(store.writer()).await?;
    let hash =
        tollgate_server::dashboard::session::hash_password(PASSWORD).map_err(|e| anyhow!("{e}"))?;
    tollgate_store::operators::insert_operator(
        store.writer(),
        &tollgate_store::operators::OperatorRow {
            id: "bench-operator".into(),
            username: USER.into(),
            password_hash: hash,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        },
    )
    .await?;
    store.close().await;
    Ok(())
}

fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
        })
}

/// Signs in to the dashboard; returns the session cookie.
async fn login(srv: &BenchServer) -> anyhow::Result<String> {
    let page = srv
        .client
        .get(format!("{}/dashboard/login", srv.public_url))
        .send()
        .await?;
    let token = cookie(&page, "tg_login_csrf").ok_or_else(|| anyhow!("no login cookie"))?;
    let r = srv
        .client
        .post(format!("{}/dashboard/login", srv.public_url))
        .header("cookie", format!("tg_login_csrf={token}"))
        .form(&[("username", USER), ("password", PASSWORD), ("csrf", &token)])
        .send()
        .await?;
    let session =
        cookie(&r, "tg_session").ok_or_else(|| anyhow!("login failed: {}", r.status()))?;
    Ok(format!("tg_session={session}"))
}

async fn measure(db: BenchDb, srv: &BenchServer, o: &Options) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let seeded = Instant::now();
    seed(&srv.database_url, o, now).await?;
    let seed_secs = seeded.elapsed().as_secs_f64();
    let session = login(srv).await?;
    let store = tollgate_store::Store::connect(&srv.database_url).await?;

    println!("overview benchmark");
    println!("  database:       {}", db.describe());
    println!(
        "  seeded:         {} transactions (90 days, USD/EUR/JPY/GBP), {} subscriptions, {} Stripe events, {} outbound deliveries in {seed_secs:.1} s",
        o.transactions, o.subscriptions, o.events, o.events
    );
    println!("  cores:          {}", cores());
    println!("  request logs:   {}", request_logs());
    println!("  runs:           {} each (after 3 unmeasured)", o.runs);

    let today = now / DAY_MS;
    let range = Range {
        from_day: today - 29,
        to_day: today,
    };
    let mut lat = Vec::with_capacity(o.runs);
    for i in 0..o.runs + 3 {
        let t = Instant::now();
        let f = figures(&store, "default", range, None, now).await?;
        if i >= 3 {
            lat.push(t.elapsed());
        }
        if i == 0 {
            println!(
                "  30 days, {}:   {} payments, net {} minor units, {} active subscribers",
                f.currency,
                f.tx.count,
                f.tx.net(),
                f.subs.active
            );
        }
    }
    lat.sort();
    println!("  figures only (30 days):  {}", latency_line(&lat));

    let (from, to) = (date_of_day(today - 89), date_of_day(today));
    let custom = format!("range=custom&from={from}&to={to}");
    for (label, q) in [
        ("today", "range=today".to_string()),
        ("7 days", "range=7d".to_string()),
        ("30 days", "range=30d".to_string()),
        ("90 days", custom),
        ("30 days, JPY", "range=30d&currency=JPY".to_string()),
    ] {
        let url = format!("{}/dashboard/overview?{q}", srv.public_url);
        let mut lat: Vec<Duration> = Vec::with_capacity(o.runs);
        for i in 0..o.runs + 3 {
            let t = Instant::now();
            let r = srv
                .client
                .get(&url)
                .header("cookie", &session)
                .send()
                .await?;
            let status = r.status();
            let body = r.bytes().await?;
            if !status.is_success() {
                return Err(anyhow!("{url}: {status}"));
            }
            if i >= 3 {
                lat.push(t.elapsed());
            }
            if i == 0 && body.len() < 1000 {
                return Err(anyhow!("{url}: a short page"));
            }
        }
        lat.sort();
        println!("  page over HTTP, {label:<13} {}", latency_line(&lat));
    }
    store.close().await;
    Ok(())
}
