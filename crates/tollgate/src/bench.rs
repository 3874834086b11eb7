//! `tollgate bench …`: benchmarks that print figures a reviewer can rerun.
//!
//! Run them on a release build (`cargo run --release -- bench sandbox`); debug builds are
//! several times slower and say nothing about production.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use tollgate_sandbox::{Sandbox, SandboxConfig};

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
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sandbox { pairs, concurrency } => sandbox(pairs, concurrency).await,
    }
}

/// Latency percentiles of a sample, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn sandbox(pairs: usize, concurrency: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sandbox = Sandbox::start(SandboxConfig {
        public_url: format!("http://{addr}"),
        ..SandboxConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = sandbox.secret_key();
    let app = sandbox
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("http client")?;
    let base = format!("http://{addr}/v1/payment_intents");
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
