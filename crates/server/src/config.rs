//! Server configuration: every duration configurable (SPEC §8) so tests run in seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// How buyers and Stripe reach this server; default `http://{listen}`.
    pub public_url: Option<String>,
    /// Mount the built-in sandbox; default: when no connection has live keys.
    pub sandbox: Option<bool>,
    /// The built-in sandbox accepts any well-formed `sk_test_…`/`pk_test_…` key as its account
    /// (local scripts), not only the keys Tollgate holds (its printed pair and the restricted
    /// keys it made).
    pub sandbox_any_test_key: bool,
    /// Stripe's API base for real connections (a proxy may be put here); never per connection.
    pub stripe_api_base: String,
    pub approval_ttl_secs: u64,
    pub session_ttl_secs: u64,
    pub idempotency_ttl_secs: u64,
    /// A keyed request's claim on its `Idempotency-Key` lapses this long after the request
    /// last renewed it (a running request renews it every third of this), so a retry can
    /// resume the work of a server that died mid-request. At least 1.
    pub idempotency_lease_secs: u64,
    pub stripe_timeout_ms: u64,
    pub stripe_max_retries: u32,
    pub stripe_retry_base_ms: u64,
    /// How often the approval-expiry job looks for lapsed approvals.
    pub expiry_interval_ms: u64,
    /// Accept `http://` redirect URLs for any host (development); `http://localhost` is always
    /// accepted.
    pub allow_http_redirect_urls: bool,
    /// Stripe-Signature timestamps further than this in the past or the future are refused.
    pub webhook_tolerance_secs: u64,
    /// Inbox workers per server (each applies one batch at a time).
    pub inbox_workers: u32,
    /// Events a worker claims and commits together. 256: on PostgreSQL, applied events per
    /// second grow with the batch (a batch's statements and locks are shared by its events:
    /// 128 → 256 → 512 gave about 2,300 → 2,660 → 3,000/s in the webhooks benchmark), and so
    /// does the server's memory (each event of a claimed batch is held parsed: peak 76 → 92 →
    /// 105 MiB). On SQLite the size made no difference.
    pub inbox_batch: u32,
    /// How often idle workers look for rows of other servers and for retries.
    pub inbox_poll_ms: u64,
    /// How long a claimed row is reserved for its worker (a crashed worker's rows return then).
    pub inbox_lease_ms: u64,
    /// Attempts before an event is dead-lettered.
    pub inbox_max_attempts: u32,
    /// First retry delay; doubled per attempt (±jitter), at most an hour.
    pub inbox_retry_base_ms: u64,
    /// Final inbox rows older than this are pruned.
    pub inbox_retention_days: u32,
    /// Periodic reconcile of every connection (SPEC §4 "Missed webhooks"); 0 turns it off.
    pub reconcile_interval_secs: u64,
    /// Public permission reads allowed per second per (key, client address); 0: no limit.
    pub permissions_rate_per_sec: u32,
    /// Burst of the permission-read token bucket.
    pub permissions_burst: u32,
    /// How long the server may reuse an API key (every API request) or account settings (the
    /// permission check) it read (ms); 0: read them on every request. The key's secret is
    /// still checked on every request. A key revoked in this server's dashboard is refused at
    /// once; one revoked by another process (`tollgate keys revoke`, another server on the
    /// same database) keeps working for at most this long.
    pub auth_cache_ms: u64,
    /// The permission check serves customers' permission rows from memory (docs/entitlements.md).
    /// SQLite: this often (ms) the server reads the permission change log to forget what other
    /// processes changed (this process's own changes show at once). PostgreSQL hears changes
    /// by LISTEN/NOTIFY. 0: no permission cache.
    pub permission_cache_poll_ms: u64,
    /// Outbound webhooks (SPEC §7): the first retry comes after about this long (then doubling,
    /// ±25 % jitter).
    pub webhook_retry_base_ms: u64,
    /// The longest wait between two attempts.
    pub webhook_retry_max_ms: u64,
    /// A delivery not delivered this long after its event (or its resend) is given up (`dead`).
    pub webhook_max_age_ms: u64,
    /// Timeout of one delivery attempt (connect, send, answer).
    pub webhook_timeout_ms: u64,
    /// After `rotate-secret`, the old secret still signs (beside the new one) this long.
    pub webhook_secret_grace_secs: u64,
    /// Deliveries in flight at once, per server.
    pub webhook_concurrency: usize,
    /// Deliveries claimed per database round trip.
    pub webhook_batch_size: usize,
    /// How often an idle worker looks for due deliveries.
    pub webhook_poll_interval_ms: u64,
    /// Run the delivery worker in this process.
    pub webhook_worker: bool,
    /// Allow webhook targets on loopback, private, link-local, CGNAT… addresses, and plain
    /// `http://` URLs (development and tests; SPEC §7's SSRF guard is off for them).
    pub allow_private_webhook_targets: bool,
    /// Trust `X-Forwarded-Proto: https` from the reverse proxy in front of this server: the
    /// dashboard's session cookie is then marked `Secure` for such requests. Off by default,
    /// because a client talking to the server directly could send the header itself.
    pub trust_forwarded_proto: bool,
    /// Dashboard sessions end after this long without a request…
    pub dashboard_idle_secs: u64,
    /// …and this long after login, whatever happens.
    pub dashboard_session_secs: u64,
    /// Consecutive failed logins after which an operator (or a client address, after four
    /// times as many) is locked out for `dashboard_lockout_secs`.
    pub dashboard_max_failures: u32,
    pub dashboard_lockout_secs: u64,
    /// Dashboard password checks computed at once (each argon2 check holds 19 MiB); further
    /// logins wait their turn. At least 1.
    pub dashboard_hash_concurrency: usize,
    /// The master key (64 hex digits or base64 of 32 bytes) for embedders and tests that pass
    /// it in code; wins over `TOLLGATE_MASTER_KEY`. Never read from a configuration file
    /// (secrets come from the environment, stdin or a key file, SPEC §2).
    #[serde(skip)]
    pub master_key: Option<secrecy::SecretString>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./tollgate-data"),
            database_url: None,
            public_url: None,
            sandbox: None,
            sandbox_any_test_key: false,
            stripe_api_base: "https://api.stripe.com".into(),
            approval_ttl_secs: 3600,
            session_ttl_secs: 3600,
            idempotency_ttl_secs: 24 * 3600,
            idempotency_lease_secs: 10,
            stripe_timeout_ms: 30_000,
            stripe_max_retries: 2,
            stripe_retry_base_ms: 500,
            expiry_interval_ms: 5_000,
            allow_http_redirect_urls: false,
            webhook_tolerance_secs: 300,
            inbox_workers: 2,
            inbox_batch: 256,
            inbox_poll_ms: 500,
            inbox_lease_ms: 60_000,
            inbox_max_attempts: 8,
            inbox_retry_base_ms: 5_000,
            inbox_retention_days: 30,
            reconcile_interval_secs: 900,
            permissions_rate_per_sec: 20,
            permissions_burst: 40,
            auth_cache_ms: 1000,
            permission_cache_poll_ms: 25,
            webhook_retry_base_ms: 10_000,
            webhook_retry_max_ms: 6 * 3600 * 1000,
            webhook_max_age_ms: 3 * 24 * 3600 * 1000,
            webhook_timeout_ms: 10_000,
            webhook_secret_grace_secs: 24 * 3600,
            webhook_concurrency: 64,
            webhook_batch_size: 256,
            webhook_poll_interval_ms: 100,
            webhook_worker: true,
            allow_private_webhook_targets: false,
            trust_forwarded_proto: false,
            dashboard_idle_secs: 3600,
            dashboard_session_secs: 12 * 3600,
            dashboard_max_failures: 5,
            dashboard_lockout_secs: 900,
            dashboard_hash_concurrency: 2,
            master_key: None,
        }
    }
}

impl Config {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("tollgate.db").display()
            ),
        }
    }

    pub fn approval_ttl(&self) -> Duration {
        Duration::from_secs(self.approval_ttl_secs)
    }
}
