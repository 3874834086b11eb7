//! `tollgate bench webhooks` at a small size, on both databases (issue 5's benchmark). The
//! benchmark exits non-zero when a send fails, an event is dead-lettered, or any transaction or
//! subscriber ends in a state the stream does not imply, so this runs the whole inbox under
//! concurrent senders (payment and billing events, shuffled, some twice) and checks the stored
//! state. Nothing about speed is asserted.

use std::process::Command;

mod common;
use common::postgres_url;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Runs the benchmark with `args` and returns its `state:` line.
fn state_line(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["bench", "webhooks", "--events", "900", "--objects", "40"])
        .args(["--concurrency", "16"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running tollgate bench webhooks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with("state:"))
        .unwrap_or_else(|| panic!("no state line in:\n{stdout}"))
        .to_string()
}

/// "a/b" counts in `line`, in order.
fn ratios(line: &str) -> Vec<(usize, usize)> {
    line.split_whitespace()
        .filter_map(|w| {
            let (a, b) = w.split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

fn assert_all_match(line: &str) {
    let r = ratios(line);
    assert_eq!(r.len(), 2, "{line}");
    assert_eq!(r[0], (40, 40), "transactions: {line}");
    // 20 + 1 billing owners: a third get a subscription, a third a Checkout Session.
    assert_eq!(r[1].0, r[1].1, "subscribers: {line}");
    assert!(r[1].1 >= 12, "subscribers: {line}");
    assert!(line.ends_with("dead letters: none"), "{line}");
}

#[test]
fn the_webhooks_benchmark_ends_with_every_object_matching_the_stream_on_sqlite() {
    assert_all_match(&state_line(&["--db", "sqlite"]));
}

#[test]
fn the_webhooks_benchmark_ends_with_every_object_matching_the_stream_on_postgres() {
    let Some(url) = postgres_url() else {
        return;
    };
    assert_all_match(&state_line(&["--db", "postgres", "--database-url", &url]));
}
