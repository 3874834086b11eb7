//! `tollgate bench permissions`: the permission check, the entitlements hot path (SPEC §5.4).
//!
//! The real server (all layers: request id, metrics, the public-key auth with its cache, the
//! rate limiter set high enough not to refuse, the read model query) on a fresh SQLite or
//! PostgreSQL database seeded with `--customers` customers holding permissions, and a minimal
//! HTTP/1.1 client (keep-alive, one request in flight per connection) so that the client costs
//! the shared two cores as little as possible. Run on a release build with `RUST_LOG=warn`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tollgate_server::auth::{KeyKind, new_key};
use tollgate_server::clock::SystemClock;

use crate::bench::{
    BenchDb, BenchServer, cores, latency_line, on_fresh_db, peak_rss_mib, request_logs,
};

pub async fn run(
    db: BenchDb,
    admin_url: &str,
    customers: usize,
    connections: usize,
    seconds: u64,
    warmup_seconds: u64,
    if_none_match: bool,
) -> anyhow::Result<()> {
    on_fresh_db(db, admin_url, |url, dir| async move {
        run_on(
            db,
            url,
            &dir,
            (customers.max(1), connections.max(1)),
            seconds.max(1),
            warmup_seconds,
            if_none_match,
        )
        .await
    })
    .await
}

async fn run_on(
    db: BenchDb,
    database_url: Option<String>,
    data_dir: &std::path::Path,
    (customers, connections): (usize, usize),
    seconds: u64,
    warmup_seconds: u64,
    if_none_match: bool,
) -> anyhow::Result<()> {
    let srv = BenchServer::start(database_url, data_dir, connections, |c| {
        // The limiter runs on every check but does not refuse the benchmark's one client.
        c.permissions_rate_per_sec = 10_000_000;
        c.permissions_burst = 10_000_000;
    })
    .await?;
    let (addr, db_url) = (srv.addr, srv.database_url.clone());

    let seeded = Instant::now();
    let pk = seed(&db_url, customers).await?;
    let seed_secs = seeded.elapsed().as_secs_f64();

    let stop_flag = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (pk, stop_flag, measuring) = (pk.clone(), stop_flag.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let opts = ClientOptions {
                customers,
                seed: c as u64 + 1,
                if_none_match,
            };
            client(addr, pk, opts, stop_flag, measuring).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup_seconds)).await;
    let cache_before = cache_counts(&srv).await;
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop_flag.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let cache_after = cache_counts(&srv).await;
    let mut lat = Vec::new();
    let mut errors = 0usize;
    let mut first_error = None;
    let mut valid = 0usize;
    let mut not_modified = 0usize;
    for t in tasks {
        let (l, e, f, v, n) = t.await?;
        lat.extend(l);
        errors += e;
        valid += v;
        not_modified += n;
        if first_error.is_none() {
            first_error = f;
        }
    }
    lat.sort();
    let ok = lat.len();
    let cores = cores();
    let db_name = db.describe();
    let logs = request_logs();
    println!("permissions bench: GET /v1/permissions?customid=… with a public key, real server");
    println!("  database: {db_name}; machine: {cores} cores; server request logs: {logs}");
    println!("  seeded: {customers} customers with permissions in {seed_secs:.1} s");
    println!(
        "  checks: {ok} ok ({valid} answered with a held permission), {errors} failed, {connections} keep-alive connections, {:.2} s measured after {warmup_seconds} s warm-up",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} checks/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    if if_none_match {
        println!(
            "  If-None-Match: {not_modified} answered 304 Not Modified ({:.1} % of the checks)",
            not_modified as f64 * 100.0 / ok.max(1) as f64
        );
    }
    println!("  latency: {}", latency_line(&lat));
    let (hits, misses) = (
        cache_after.0.saturating_sub(cache_before.0),
        cache_after.1.saturating_sub(cache_before.1),
    );
    if hits + misses > 0 {
        println!(
            "  permission cache (measured part): {hits} hits, {misses} misses ({:.1} % hits)",
            hits as f64 * 100.0 / (hits + misses) as f64
        );
    } else {
        println!("  permission cache: off (every check read the database)");
    }
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (client, server and sandbox in one process): {rss:.0} MiB");
    }
    srv.stop().await;
    if let Some(e) = first_error {
        anyhow::bail!("{errors} checks failed; the first: {e}");
    }
    Ok(())
}

/// Seeds the catalogue, `customers` customers with one or two permissions each (straight into
/// the read model, as re-evaluation writes it), and a public key; returns the key.
async fn seed(url: &str, customers: usize) -> anyhow::Result<String> {
    let store = tollgate_store::Store::connect(url).await?;
    let now = {
        use tollgate_server::clock::Clock;
        SystemClock.now_ms()
    };
    let (row, pk) = new_key(KeyKind::Public, Some("default"), Some("bench"), now);
    tollgate_store::accounts::insert_api_key(store.writer(), &row).await?;
    let mut tx = store.begin().await?;
    for (id, prod) in [("web_monthly", "prod_monthly"), ("lifetime", "prod_life")] {
        sqlx::query(
            "INSERT INTO ent_skus (merchant_account_id, identifier, store, product_id, kind, created_at, updated_at)
             VALUES ('default', $1, 'stripe', $2, 'subscription', $3, $3)",
        )
        .bind(id)
        .bind(prod)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for (perm, sku) in [("premium", "web_monthly"), ("pro", "lifetime")] {
        sqlx::query(
            "INSERT INTO ent_permission_defs (merchant_account_id, identifier, created_at, updated_at)
             VALUES ('default', $1, $2, $2)",
        )
        .bind(perm)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ent_permission_skus (merchant_account_id, permission, sku, position)
             VALUES ('default', $1, $2, 0)",
        )
        .bind(perm)
        .bind(sku)
        .execute(&mut *tx)
        .await?;
    }
    tollgate_store::commit(tx).await?;
    let expires = now + 30 * 86_400_000;
    let monthly = r#"[{"identifier":"web_monthly","product_id":"prod_monthly","trial":false}]"#;
    let life = r#"[{"identifier":"lifetime","product_id":"prod_life","trial":false}]"#;
    let mut i = 0;
    while i < customers {
        let end = (i + 500).min(customers);
        let mut sql = String::from(
            "INSERT INTO ent_permissions (merchant_account_id, customid, identifier, is_valid,
             entitlement, expires_at, valid_until, skus, updated_at) VALUES ",
        );
        let mut first = true;
        for c in i..end {
            // Generated values only (numbers and fixed JSON): nothing from outside.
            let rows = if c % 3 == 0 {
                vec![
                    format!(
                        "('default','user-{c}','premium',1,5,{expires},{},'{monthly}',{now})",
                        expires + 7_200_000
                    ),
                    format!("('default','user-{c}','pro',1,3,NULL,NULL,'{life}',{now})"),
                ]
            } else {
                vec![format!(
                    "('default','user-{c}','premium',1,5,{expires},{},'{monthly}',{now})",
                    expires + 7_200_000
                )]
            };
            for r in rows {
                if !first {
                    sql.push(',');
                }
                first = false;
                sql.push_str(&r);
            }
        }
        let mut tx = store.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        tollgate_store::commit(tx).await?;
        i = end;
    }
    if store.backend() == tollgate_store::Backend::Postgres {
        sqlx::query("ANALYZE").execute(store.writer()).await?;
    }
    store.close().await;
    Ok(pk)
}

/// (latencies, failures, the first failure, answers with a held permission, 304 answers).
type ClientResult = (Vec<Duration>, usize, Option<String>, usize, usize);

struct ClientOptions {
    customers: usize,
    seed: u64,
    /// Send back each customer's last `ETag` (`If-None-Match`).
    if_none_match: bool,
}

/// One keep-alive connection sending checks of random customers until told to stop.
async fn client(
    addr: std::net::SocketAddr,
    pk: String,
    opts: ClientOptions,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> ClientResult {
    let ClientOptions {
        customers,
        seed,
        if_none_match,
    } = opts;
    let mut lat = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut first_error = None;
    let mut valid = 0;
    let mut not_modified = 0;
    // The ETag each customer last answered with (this connection's copy).
    let mut etags: std::collections::HashMap<usize, String> = Default::default();
    let mut etag = String::new();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut conn: Option<BufReader<tokio::net::TcpStream>> = None;
    let mut head = String::new();
    let mut body = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let c = (rng % customers as u64) as usize;
        let cached = etags
            .get(&c)
            .filter(|_| if_none_match)
            .map(|t| format!("If-None-Match: {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /v1/permissions?customid=user-{c} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {pk}\r\n{cached}\r\n"
        );
        etag.clear();
        let t = Instant::now();
        let r = async {
            if conn.is_none() {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                conn = Some(BufReader::new(s));
            }
            let Some(s) = conn.as_mut() else {
                return Err(std::io::Error::other("no connection"));
            };
            s.get_mut().write_all(req.as_bytes()).await?;
            // Status line and headers.
            let mut status = 0u16;
            let mut len = 0usize;
            let mut first_line = true;
            loop {
                head.clear();
                if s.read_line(&mut head).await? == 0 {
                    return Err(std::io::Error::other("connection closed"));
                }
                let line = head.trim_end();
                if first_line {
                    status = line
                        .split(' ')
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    first_line = false;
                } else if line.is_empty() {
                    break;
                } else if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("etag") {
                        etag.push_str(v.trim());
                    }
                }
            }
            body.resize(len, 0);
            s.read_exact(&mut body).await?;
            Ok::<u16, std::io::Error>(status)
        }
        .await;
        if if_none_match && !etag.is_empty() {
            etags.insert(c, etag.clone());
        }
        match r {
            Ok(200) => {
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed());
                    if body.windows(15).any(|w| w == b"\"is_valid\":true") {
                        valid += 1;
                    }
                }
            }
            Ok(304) if if_none_match => {
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed());
                    not_modified += 1;
                }
            }
            Ok(other) => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!("HTTP {other}: {}", String::from_utf8_lossy(&body))
                });
            }
            Err(e) => {
                errors += 1;
                conn = None;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (lat, errors, first_error, valid, not_modified)
}

/// The server's permission cache counters (hits, misses) from `/metrics`.
async fn cache_counts(srv: &BenchServer) -> (u64, u64) {
    let Ok(r) = srv
        .client
        .get(format!("{}/metrics", srv.public_url))
        .send()
        .await
    else {
        return (0, 0);
    };
    let text = r.text().await.unwrap_or_default();
    let count = |result: &str| {
        let name = format!("tollgate_permission_cache_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (count("hit"), count("miss"))
}
