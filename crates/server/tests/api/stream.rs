//! Instant unlock (issue 28): `GET /v1/permissions/stream`, the permission check as Server-Sent
//! Events, woken by the permission cache's change feed (SQLite change log, PostgreSQL NOTIFY).
//!
//! The streams are read with a small raw HTTP/1.1 client (chunked transfer, SSE framing), so a
//! thousand of them cost the test process little and the memory measured is mostly the
//! server's.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tollgate_server::auth::KeyKind;

use crate::common::{Db, TestServer};
use crate::entitlements::{catalog, followed};

crate::both_dbs!(
    a_stream_sends_the_set_then_each_change_and_heartbeats,
    the_stream_checks_keys_customid_and_the_customer_token,
    a_dropped_stream_resumes_from_last_event_id_without_losing_a_change,
    a_held_permission_lapsing_by_the_clock_is_pushed,
    a_change_committed_by_another_server_reaches_the_stream,
    without_a_change_feed_the_stream_reads_every_second,
    a_thousand_watchers_each_receive_a_change,
);

/// One event of a stream.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl Ev {
    /// Whether the set holds `permission` valid.
    pub(crate) fn valid(&self, permission: &str) -> bool {
        self.data["permissions"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["identifier"] == permission && p["is_valid"] == true)
        })
    }
}

/// An open stream, read with a raw HTTP/1.1 client.
pub(crate) struct Stream {
    r: BufReader<TcpStream>,
    text: String,
    pub heartbeats: usize,
    pub retry: Option<u64>,
    pub headers: String,
}

/// What opening a stream answered: the stream, or (status, body).
pub(crate) async fn open(
    s: &TestServer,
    key: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Stream, (u16, Value)> {
    let addr = s.base.trim_start_matches("http://");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "GET /v1/permissions/stream?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n"
    );
    if !key.is_empty() {
        req.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut r = BufReader::with_capacity(1024, tcp);
    r.get_mut()
        .write_all(req.as_bytes())
        .await
        .expect("request");
    let mut status_line = String::new();
    r.read_line(&mut status_line).await.expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    if status != 200 {
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).await.expect("error body");
        return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    Ok(Stream {
        r,
        text: String::new(),
        heartbeats: 0,
        retry: None,
        headers: head.to_ascii_lowercase(),
    })
}

impl Stream {
    /// Reads one chunk of the chunked body into `text`; `false` at its end.
    async fn chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.r.read_line(&mut size).await.unwrap_or(0) == 0 {
            return false;
        }
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return false;
        }
        let mut buf = vec![0u8; n + 2];
        self.r.read_exact(&mut buf).await.expect("chunk");
        self.text
            .push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
        true
    }

    /// The next event within `wait` (heartbeats are counted, not returned); `None` if none
    /// came (or the stream ended).
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Ev> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text[..end].to_string();
                self.text.drain(..end + 2);
                let mut ev = Ev {
                    event: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut comment_only = true;
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    comment_only = false;
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "event" => ev.event = v.to_string(),
                        "id" => ev.id = Some(v.to_string()),
                        "data" => data.push_str(v),
                        "retry" => self.retry = v.parse().ok(),
                        _ => {}
                    }
                }
                if comment_only {
                    self.heartbeats += 1;
                    continue;
                }
                if data.is_empty() {
                    continue;
                }
                ev.data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(ev);
            }
            match tokio::time::timeout_at(until, self.chunk()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// Events until one holding `permission` valid (within `wait`).
    pub(crate) async fn until_valid(&mut self, permission: &str, wait: Duration) -> Option<Ev> {
        let until = Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Some(ev) if ev.valid(permission) => return Some(ev),
                Some(_) => {}
                None => return None,
            }
        }
        None
    }
}

async fn grant(s: &TestServer, customid: &str, body: Value) -> Value {
    s.post(&format!("/v1/subscribers/{customid}/grants"), body)
        .await
        .expect(201)
}

const SEC: Duration = Duration::from_secs(1);

async fn a_stream_sends_the_set_then_each_change_and_heartbeats(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let mut st = open(&s, &pk, "customid=user-s&heartbeat=1", &[])
        .await
        .expect("a stream");
    assert!(
        st.headers.contains("content-type: text/event-stream"),
        "{}",
        st.headers
    );
    assert!(
        st.headers.contains("x-accel-buffering: no"),
        "{}",
        st.headers
    );
    // First the set as GET /v1/permissions answers it, its ETag as the event id.
    let first = st.next(5 * SEC).await.expect("the first event");
    assert_eq!(first.event, "permissions");
    assert_eq!(first.id.as_deref(), Some("0"));
    assert_eq!(first.data, json!({"customid": "user-s", "permissions": []}));
    assert_eq!(
        st.retry,
        Some(1000),
        "the first event says when to reconnect"
    );
    // A grant: pushed, with the check's answer and its new version.
    let g = grant(
        &s,
        "user-s",
        json!({"permission": "premium", "reason": "a"}),
    )
    .await;
    let ev = st.next(5 * SEC).await.expect("the grant is pushed");
    assert_eq!(ev.id.as_deref(), Some("1"));
    assert!(ev.valid("premium"), "{:?}", ev);
    let check = s
        .send(
            s.http
                .get(s.url("/v1/permissions?customid=user-s"))
                .bearer_auth(&pk),
        )
        .await;
    assert_eq!(ev.data, check.expect(200));
    assert_eq!(check.header("etag"), Some("\"1\""));
    // A change of another customer wakes nothing here; heartbeats keep the stream alive.
    grant(
        &s,
        "user-other",
        json!({"permission": "premium", "reason": "b"}),
    )
    .await;
    let before = st.heartbeats;
    assert!(st.next(2500 * Duration::from_millis(1)).await.is_none());
    assert!(st.heartbeats > before, "a heartbeat every second");
    // A revocation is pushed too.
    let r = s
        .send(s.request(
            reqwest::Method::DELETE,
            &format!(
                "/v1/subscribers/user-s/grants/{}",
                g["id"].as_str().unwrap()
            ),
        ))
        .await;
    r.expect(200);
    let ev = st.next(5 * SEC).await.expect("the revocation is pushed");
    assert_eq!(ev.id.as_deref(), Some("2"));
    assert!(!ev.valid("premium"), "{:?}", ev);
    assert_eq!(ev.data["permissions"][0]["is_valid"], false);
}

async fn the_stream_checks_keys_customid_and_the_customer_token(db: Db) {
    let s = TestServer::start(db).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let (status, body) = open(&s, "", "customid=u", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized", "{body}");
    let (status, body) = open(&s, "tg_pk_nope_nope", "customid=u", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    for query in ["", "customid=", "heartbeat=5"] {
        let (status, body) = open(&s, &pk, query, &[]).await.err().expect("refused");
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["details"][0]["location"], "query", "{body}");
        assert_eq!(body["details"][0]["pointer"], "/customid", "{body}");
    }
    for query in ["customid=u&heartbeat=0", "customid=u&heartbeat=301"] {
        let (status, body) = open(&s, &pk, query, &[]).await.err().expect("refused");
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["details"][0]["pointer"], "/heartbeat", "{body}");
    }
    let (status, body) = open(&s, &pk, "customid=u&heartbeat=soon", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["pointer"], "/heartbeat", "{body}");
    // A secret key streams too.
    let mut st = open(&s, &s.key, "customid=u", &[]).await.expect("a stream");
    assert!(st.next(5 * SEC).await.is_some());

    // The account requires a customer token: as the check, the stream wants it.
    let secret = "a-long-customer-token-secret";
    s.send(
        s.request(reqwest::Method::PATCH, "/v1/entitlements/settings")
            .json(&json!({"customer_token_secret": secret, "require_customer_token": true})),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = open(&s, &pk, "customid=user-7", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let other = tollgate_server::api::entitlements::customer_token(secret, "user-8");
    let (status, _) = open(&s, &pk, "customid=user-7", &[("X-Customer-Token", &other)])
        .await
        .err()
        .expect("another customer's token is refused");
    assert_eq!(status, 401);
    let token = tollgate_server::api::entitlements::customer_token(secret, "user-7");
    let mut st = open(&s, &pk, "customid=user-7", &[("X-Customer-Token", &token)])
        .await
        .expect("the customer's token opens its stream");
    assert!(st.next(5 * SEC).await.is_some());
}

async fn a_dropped_stream_resumes_from_last_event_id_without_losing_a_change(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let mut st = open(&s, &pk, "customid=user-r&heartbeat=1", &[])
        .await
        .expect("a stream");
    let first = st.next(5 * SEC).await.expect("first");
    let seen = first.id.clone().expect("an id");
    assert_eq!(seen, "0");
    // The connection drops; a grant commits while the client is away.
    drop(st);
    let g = grant(
        &s,
        "user-r",
        json!({"permission": "premium", "reason": "away"}),
    )
    .await;
    followed(&s).await;
    // Back with Last-Event-ID: the change it missed comes at once.
    let mut st = open(
        &s,
        &pk,
        "customid=user-r&heartbeat=1",
        &[("Last-Event-ID", &seen)],
    )
    .await
    .expect("a stream");
    let ev = st.next(5 * SEC).await.expect("the missed change");
    assert_eq!(ev.id.as_deref(), Some("1"));
    assert!(ev.valid("premium"), "{ev:?}");
    drop(st);
    // Back again, up to date: nothing is sent again (heartbeats only) until the next change.
    let mut st = open(
        &s,
        &pk,
        "customid=user-r&heartbeat=1",
        &[("Last-Event-ID", "1")],
    )
    .await
    .expect("a stream");
    assert!(st.next(Duration::from_millis(1500)).await.is_none());
    assert!(st.heartbeats >= 1);
    s.send(s.request(
        reqwest::Method::DELETE,
        &format!(
            "/v1/subscribers/user-r/grants/{}",
            g["id"].as_str().unwrap()
        ),
    ))
    .await
    .expect(200);
    let ev = st.next(5 * SEC).await.expect("the revocation");
    assert_eq!(ev.id.as_deref(), Some("2"));
    assert!(!ev.valid("premium"));
    // Two changes while away: the set after both comes, once.
    drop(st);
    grant(
        &s,
        "user-r",
        json!({"permission": "premium", "reason": "b"}),
    )
    .await;
    grant(
        &s,
        "user-r",
        json!({"permission": "premium", "reason": "c", "expires_at": "2999-01-01T00:00:00Z"}),
    )
    .await;
    followed(&s).await;
    let mut st = open(&s, &pk, "customid=user-r", &[("Last-Event-ID", "2")])
        .await
        .expect("a stream");
    let ev = st.next(5 * SEC).await.expect("the set after both");
    assert!(ev.valid("premium"));
    assert_eq!(ev.id.as_deref(), Some("3"), "{ev:?}");
    // A stale or unknown id is answered with the current set.
    let mut st = open(&s, &pk, "customid=user-r", &[("Last-Event-ID", "garbage")])
        .await
        .expect("a stream");
    assert_eq!(
        st.next(5 * SEC).await.expect("the set").id.as_deref(),
        Some("3")
    );
}

async fn a_held_permission_lapsing_by_the_clock_is_pushed(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let end = tollgate_server::clock::rfc3339(crate::common::now_ms() + 2_000);
    grant(
        &s,
        "user-l",
        json!({"permission": "premium", "reason": "short", "expires_at": end}),
    )
    .await;
    followed(&s).await;
    let mut st = open(&s, &pk, "customid=user-l&heartbeat=1", &[])
        .await
        .expect("a stream");
    let ev = st.next(5 * SEC).await.expect("first");
    assert!(ev.valid("premium"), "{ev:?}");
    // The end passes: the stream says so (the expiry job's rewrite or the stream's own clock).
    let ev = st.next(10 * SEC).await.expect("the lapse is pushed");
    assert!(!ev.valid("premium"), "{ev:?}");
}

/// A second server process on the same database (here: a second context) grants; the stream of
/// the first hears it through the change feed (SQLite's change log, PostgreSQL's NOTIFY).
async fn a_change_committed_by_another_server_reaches_the_stream(db: Db) {
    let s = TestServer::start(db).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let mut st = open(&s, &pk, "customid=user-x&heartbeat=1", &[])
        .await
        .expect("a stream");
    assert!(!st.next(5 * SEC).await.expect("first").valid("premium"));
    let other = tollgate_server::context(
        s.config.clone(),
        tollgate_server::clock::ManualClock::new(),
        Some(format!("{}/sandbox/stripe", s.base)),
    )
    .await
    .expect("a second server's context");
    let body = tollgate_server::api::entitlements::GrantCreate {
        permission: "premium".into(),
        expires_at: None,
        reason: "granted by the other server".into(),
    };
    tollgate_server::api::entitlements::grant(&other, "default", "user-x", body, "test".into())
        .await
        .expect("granted");
    let ev = st.next(5 * SEC).await.expect("the other server's change");
    assert!(ev.valid("premium"), "{ev:?}");
    assert_eq!(ev.id.as_deref(), Some("1"));
}

/// With the permission cache (and so its change feed) turned off, a stream reads its customer
/// every second instead: a change still arrives.
async fn without_a_change_feed_the_stream_reads_every_second(db: Db) {
    let s = TestServer::start_with(db, |c| c.permission_cache_poll_ms = 0).await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    let mut st = open(&s, &pk, "customid=user-p&heartbeat=5", &[])
        .await
        .expect("a stream");
    assert!(!st.next(5 * SEC).await.expect("first").valid("premium"));
    grant(
        &s,
        "user-p",
        json!({"permission": "premium", "reason": "no feed"}),
    )
    .await;
    let ev = st
        .next(5 * SEC)
        .await
        .expect("read again within a second or so");
    assert!(ev.valid("premium"), "{ev:?}");
    // Unchanged reads send nothing.
    assert!(st.next(Duration::from_millis(2500)).await.is_none());
}

/// The median, 90th, 99th percentile and the largest of `xs` (sorted here).
fn spread(xs: &mut [f64]) -> (f64, f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(0.99), xs[xs.len() - 1])
}

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 1,000 streams open at once, 10 customers with 100 streams each; each customer gets a grant
/// and every stream must receive it. The latency from each grant's request to each stream's
/// event and the memory per idle stream are measured and printed (no timing is asserted: the
/// machine is shared).
async fn a_thousand_watchers_each_receive_a_change(db: Db) {
    const WATCHERS: usize = 1000;
    const CUSTOMERS: usize = 10;
    let s = TestServer::start_with(db, |c| {
        // One address opens them all: no rate limit for this test.
        c.permissions_rate_per_sec = 0;
    })
    .await;
    catalog(&s).await;
    let pk = s.bound_key(KeyKind::Public, "default").await;
    // Warm the process (pools, caches) before measuring memory.
    let mut warm = open(&s, &pk, "customid=warm-up", &[])
        .await
        .expect("a stream");
    warm.next(5 * SEC).await.expect("warm-up");
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kb();
    let mut streams = Vec::with_capacity(WATCHERS);
    for batch in 0..WATCHERS / 100 {
        let opened = futures_util::future::join_all((0..100).map(|i| {
            let pk = pk.clone();
            let s = &s;
            async move {
                let n = batch * 100 + i;
                let customid = format!("crowd-{}", n % CUSTOMERS);
                let mut st = open(s, &pk, &format!("customid={customid}&heartbeat=60"), &[])
                    .await
                    .expect("a stream");
                let first = st.next(30 * SEC).await.expect("the first event");
                assert!(!first.valid("premium"));
                (n % CUSTOMERS, st)
            }
        }))
        .await;
        streams.extend(opened);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb();
    // Every stream waits for its customer's grant.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Option<Instant>)>();
    for (customer, mut st) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            let got = st
                .until_valid("premium", 60 * SEC)
                .await
                .map(|_| Instant::now());
            let _ = tx.send((customer, got));
        });
    }
    drop(tx);
    let mut sent = Vec::with_capacity(CUSTOMERS);
    let mut commit_ms = Vec::with_capacity(CUSTOMERS);
    for c in 0..CUSTOMERS {
        let t0 = Instant::now();
        grant(
            &s,
            &format!("crowd-{c}"),
            json!({"permission": "premium", "reason": "crowd"}),
        )
        .await;
        commit_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        sent.push(t0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies = Vec::with_capacity(WATCHERS);
    let mut missing = 0;
    while let Some((customer, got)) = rx.recv().await {
        match got {
            Some(at) => latencies.push(at.duration_since(sent[customer]).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "every stream receives its customer's change");
    assert_eq!(latencies.len(), WATCHERS);
    let (p50, p90, p99, max) = spread(&mut latencies);
    let within_1s = latencies.iter().filter(|l| **l <= 1000.0).count();
    let (c50, _, _, cmax) = spread(&mut commit_ms);
    println!(
        "[{db:?}] {WATCHERS} streams on {CUSTOMERS} customers: from the grant request to each \
         stream's event p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; \
         {within_1s}/{WATCHERS} within 1 s (the grant request itself: p50 {c50:.1} ms, max {cmax:.1} ms)"
    );
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!(
            "[{db:?}] memory per idle stream (server and this test's raw client, one process): \
             {:.1} KiB ({} KiB for {WATCHERS})",
            b.saturating_sub(a) as f64 / WATCHERS as f64,
            b.saturating_sub(a)
        );
    }
}
