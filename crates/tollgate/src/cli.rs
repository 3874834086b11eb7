//! `serve`, `migrate` and the administration commands (keys, merchant accounts, connections).
//! They act on the database through the server's own functions, so the CLI and the API share
//! one path.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tollgate_server::auth::{KeyKind, new_key};
use tollgate_server::clock::SystemClock;
use tollgate_server::{Config, SandboxHandle, ServeOptions};
use tollgate_store::{accounts, connections};

/// `tollgate demo`: starts its own server with the built-in sandbox (free port, temporary data
/// directory) and walks through the product over the public HTTP APIs (see `demo.rs`).
pub use crate::demo::{DemoArgs, run as demo};

// Flags shared by every command that opens the database. (A plain comment: a doc comment
// here would become the help text of every subcommand that has none of its own.)
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (SQLite database, key file, sandbox state).
    #[arg(long, env = "TOLLGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (`postgres://…`); default: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// How buyers and Stripe reach this server (default: http://{listen}).
    #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// TOML configuration file (flags and environment win over it).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Mount the built-in sandbox (`true`/`false`); default: when no live connection exists.
    #[arg(long, env = "TOLLGATE_SANDBOX", num_args = 0..=1, default_missing_value = "true")]
    sandbox: Option<bool>,
    /// Let the built-in sandbox accept any well-formed `sk_test_…` key (local scripts only);
    /// by default it accepts only the keys it printed.
    #[arg(long, env = "TOLLGATE_SANDBOX_ANY_TEST_KEY")]
    sandbox_any_test_key: bool,
    /// Stripe's API base for real connections (a proxy, or a standalone sandbox in tests).
    #[arg(long, env = "TOLLGATE_STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
    /// Seconds a buyer has to approve a payment.
    #[arg(long, env = "TOLLGATE_APPROVAL_TTL_SECS")]
    approval_ttl_secs: Option<u64>,
    /// How often the approval-expiry job runs, in milliseconds.
    #[arg(long, env = "TOLLGATE_EXPIRY_INTERVAL_MS")]
    expiry_interval_ms: Option<u64>,
    /// Seconds an idempotency key is remembered.
    #[arg(long, env = "TOLLGATE_IDEMPOTENCY_TTL_SECS")]
    idempotency_ttl_secs: Option<u64>,
    /// Seconds after which the claim of a keyed request that stopped renewing it (its server
    /// died) lapses, so a retry resumes the work.
    #[arg(long, env = "TOLLGATE_IDEMPOTENCY_LEASE_SECS")]
    idempotency_lease_secs: Option<u64>,
    /// Stripe request timeout in milliseconds.
    #[arg(long, env = "TOLLGATE_STRIPE_TIMEOUT_MS")]
    stripe_timeout_ms: Option<u64>,
    /// Retries of a failed Stripe call.
    #[arg(long, env = "TOLLGATE_STRIPE_RETRIES")]
    stripe_retries: Option<u32>,
    /// Accept http:// redirect URLs for any host (development only).
    #[arg(long, env = "TOLLGATE_ALLOW_HTTP_REDIRECT_URLS")]
    allow_http_redirect_urls: bool,
    /// Allow outbound webhook targets on loopback, private, link-local and other non-public
    /// addresses, and plain http:// URLs (development and tests only: this turns the SSRF guard off).
    #[arg(long, env = "TOLLGATE_ALLOW_PRIVATE_WEBHOOK_TARGETS")]
    allow_private_webhook_targets: bool,
    /// Outbound webhooks: the first retry after about this many milliseconds (then doubling).
    #[arg(long, env = "TOLLGATE_WEBHOOK_RETRY_BASE_MS")]
    webhook_retry_base_ms: Option<u64>,
    /// Outbound webhooks: the longest wait between two attempts, in milliseconds.
    #[arg(long, env = "TOLLGATE_WEBHOOK_RETRY_MAX_MS")]
    webhook_retry_max_ms: Option<u64>,
    /// Outbound webhooks: give a delivery up this many milliseconds after its event (default 3 days).
    #[arg(long, env = "TOLLGATE_WEBHOOK_MAX_AGE_MS")]
    webhook_max_age_ms: Option<u64>,
    /// Outbound webhooks: timeout of one delivery attempt, in milliseconds.
    #[arg(long, env = "TOLLGATE_WEBHOOK_TIMEOUT_MS")]
    webhook_timeout_ms: Option<u64>,
    /// Outbound webhooks: seconds the previous secret keeps signing after a rotation.
    #[arg(long, env = "TOLLGATE_WEBHOOK_SECRET_GRACE_SECS")]
    webhook_secret_grace_secs: Option<u64>,
    /// Outbound webhooks: deliveries in flight at once.
    #[arg(long, env = "TOLLGATE_WEBHOOK_CONCURRENCY")]
    webhook_concurrency: Option<usize>,
    /// Trust `X-Forwarded-Proto: https` from a reverse proxy (marks the dashboard cookie
    /// `Secure` for such requests). Only set it when a proxy in front overwrites that header.
    #[arg(long, env = "TOLLGATE_TRUST_FORWARDED_PROTO")]
    trust_forwarded_proto: bool,
}

impl ServerArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c: Config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        // An empty DATABASE_URL means "not set" (the SQLite default).
        if let Some(v) = self.database_url.as_ref().filter(|v| !v.is_empty()) {
            c.database_url = Some(v.clone());
        }
        if let Some(v) = &self.public_url {
            c.public_url = Some(v.clone());
        }
        if let Some(v) = self.sandbox {
            c.sandbox = Some(v);
        }
        if self.sandbox_any_test_key {
            c.sandbox_any_test_key = true;
        }
        if let Some(v) = &self.stripe_api_base {
            c.stripe_api_base = v.clone();
        }
        if let Some(v) = self.approval_ttl_secs {
            c.approval_ttl_secs = v;
        }
        if let Some(v) = self.expiry_interval_ms {
            c.expiry_interval_ms = v;
        }
        if let Some(v) = self.idempotency_ttl_secs {
            c.idempotency_ttl_secs = v;
        }
        if let Some(v) = self.idempotency_lease_secs {
            c.idempotency_lease_secs = v;
        }
        if let Some(v) = self.stripe_timeout_ms {
            c.stripe_timeout_ms = v;
        }
        if let Some(v) = self.stripe_retries {
            c.stripe_max_retries = v;
        }
        if self.allow_http_redirect_urls {
            c.allow_http_redirect_urls = true;
        }
        if self.allow_private_webhook_targets {
            c.allow_private_webhook_targets = true;
        }
        if let Some(v) = self.webhook_retry_base_ms {
            c.webhook_retry_base_ms = v;
        }
        if let Some(v) = self.webhook_retry_max_ms {
            c.webhook_retry_max_ms = v;
        }
        if let Some(v) = self.webhook_max_age_ms {
            c.webhook_max_age_ms = v;
        }
        if let Some(v) = self.webhook_timeout_ms {
            c.webhook_timeout_ms = v;
        }
        if let Some(v) = self.webhook_secret_grace_secs {
            c.webhook_secret_grace_secs = v;
        }
        if let Some(v) = self.webhook_concurrency {
            c.webhook_concurrency = v;
        }
        if self.trust_forwarded_proto {
            c.trust_forwarded_proto = true;
        }
        Ok(c)
    }
}

pub async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    // The sandbox is never mounted beside live keys (SPEC §6).
    let live = {
        let (store, _) = tollgate_server::open_store(&config)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let live = connections::any_live(store.reader()).await?;
        store.close().await;
        live
    };
    let want_sandbox = match config.sandbox {
        Some(true) if live => bail!(
            "--sandbox was asked for, but live Stripe keys are configured; the sandbox never runs beside them"
        ),
        Some(v) => v,
        None => !live,
    };
    let sandbox = if want_sandbox {
        // Only the keys Tollgate holds open the sandbox, and its control API needs the control
        // key unless nobody but this machine can reach the server.
        let control_key = std::env::var("TOLLGATE_SANDBOX_CONTROL_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        let local_only = tollgate_sandbox::reachable_only_locally(addr, &public_url);
        if !local_only && control_key.is_none() {
            tracing::warn!(
                "the sandbox control API (/sandbox/stripe/_sandbox/…) is closed: this server is reachable from other machines and TOLLGATE_SANDBOX_CONTROL_KEY is not set"
            );
        }
        let sb = Sandbox::start(SandboxConfig {
            strict_keys: !config.sandbox_any_test_key,
            state_file: Some(config.data_dir.join("sandbox-state.json")),
            public_url: format!("{public_url}/sandbox/stripe"),
            control_key,
            trust_loopback: local_only,
            ..SandboxConfig::default()
        })
        .map_err(|e| anyhow!("{e}"))?;
        tollgate_server::say(format_args!(
            "sandbox: Stripe emulator at {public_url}/sandbox/stripe"
        ));
        tollgate_server::say(format_args!("sandbox secret key: {}", sb.secret_key()));
        tollgate_server::say(format_args!(
            "sandbox publishable key: {}",
            sb.publishable_key()
        ));
        let sb2 = sb.clone();
        Some((
            sb.clone(),
            SandboxHandle {
                router: sb.router(),
                secret_key: sb.secret_key(),
                publishable_key: sb.publishable_key(),
                register_webhook: Arc::new(move |url: &str| sb2.ensure_webhook_endpoint(url, None)),
            },
        ))
    } else {
        None
    };
    tollgate_server::say(format_args!(
        "tollgate listening on {public_url} (API reference: {public_url}/docs)"
    ));
    tollgate_server::say(format_args!(
        "dashboard: {public_url}/dashboard (create a login with `tollgate operator create NAME`)"
    ));
    let (sb, handle) = match sandbox {
        Some((sb, h)) => (Some(sb), Some(h)),
        None => (None, None),
    };
    let opts = ServeOptions {
        clock: Arc::new(SystemClock),
        sandbox: handle,
    };
    tollgate_server::serve(config, listener, opts, crate::shutdown_signal())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(sb) = sb {
        sb.flush().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

pub async fn migrate(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let (store, _) = tollgate_server::open_store(&config)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    store.close().await;
    println!("migrations applied");
    Ok(())
}

async fn context(args: &ServerArgs) -> anyhow::Result<tollgate_server::ApiContext> {
    let config = args.config()?;
    let ctx = tollgate_server::context(config, Arc::new(SystemClock), None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    tollgate_server::api::bootstrap::default_merchant(&ctx)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(ctx)
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once, as the last line.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// `secret` (server-side API) or `public` (permission reads, safe in apps).
        #[arg(long, default_value = "secret")]
        kind: String,
        /// The merchant account the key is bound to.
        #[arg(long, default_value = "default")]
        merchant_account: String,
        /// An operator key: may act for every merchant account (secret keys only).
        #[arg(long)]
        all_accounts: bool,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        merchant_account: Option<String>,
    },
    /// Revoke a key by id (the part after `tg_sk_` / `tg_pk_`, before the second `_`).
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
}

pub async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            server,
            kind,
            merchant_account,
            all_accounts,
            display_name,
        } => {
            let ctx = context(&server).await?;
            let kind = match kind.as_str() {
                "secret" => KeyKind::Secret,
                "public" => KeyKind::Public,
                other => bail!("--kind must be secret or public, not {other}"),
            };
            if all_accounts && kind == KeyKind::Public {
                bail!("public keys are always bound to one merchant account");
            }
            if !all_accounts
                && accounts::get_merchant_account(ctx.store.reader(), &merchant_account)
                    .await?
                    .is_none()
            {
                bail!("there is no merchant account '{merchant_account}'");
            }
            let bound = (!all_accounts).then_some(merchant_account.as_str());
            let (row, full) = new_key(kind, bound, display_name.as_deref(), ctx.now());
            accounts::insert_api_key(ctx.store.writer(), &row).await?;
            println!(
                "created {} key {} for {}",
                kind.as_str(),
                row.id,
                bound.unwrap_or("all merchant accounts")
            );
            println!("{full}");
        }
        KeysCommand::List {
            server,
            merchant_account,
        } => {
            let ctx = context(&server).await?;
            for k in
                accounts::list_api_keys(ctx.store.reader(), merchant_account.as_deref()).await?
            {
                println!(
                    "{}\t{}\t{}\t{}",
                    k.id,
                    k.kind,
                    k.merchant_account_id.as_deref().unwrap_or("*"),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        KeysCommand::Revoke { server, id } => {
            let ctx = context(&server).await?;
            if !accounts::revoke_api_key(ctx.store.writer(), &id, ctx.now()).await? {
                bail!("no active key with id {id}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant account (a tenant with its own connections, keys and transactions).
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The account's id: 1 to 64 lower-case letters, digits, '-' or '_'.
        id: String,
        /// A name for people (default: the id).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List merchant accounts (id and display name).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn merchant_accounts(cmd: MerchantCommand) -> anyhow::Result<()> {
    match cmd {
        MerchantCommand::Create {
            server,
            id,
            display_name,
        } => {
            let ctx = context(&server).await?;
            if !tollgate_server::api::merchant_accounts::valid_id(&id) {
                bail!("merchant account ids are 1 to 64 lower-case letters, digits, '-' or '_'");
            }
            accounts::insert_merchant_account(
                ctx.store.writer(),
                &id,
                display_name.as_deref().unwrap_or(&id),
                ctx.now(),
            )
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    anyhow!("merchant account '{id}' already exists")
                } else {
                    e.into()
                }
            })?;
            println!("created merchant account {id}");
        }
        MerchantCommand::List { server } => {
            let ctx = context(&server).await?;
            for m in accounts::list_merchant_accounts(ctx.store.reader()).await? {
                println!("{}\t{}", m.id, m.display_name);
            }
        }
    }
    Ok(())
}

/// Where a secret comes from: never from a command-line argument (process lists show them).
#[derive(Args, Clone)]
pub struct SecretSource {
    /// Read the secret key from this file.
    #[arg(long)]
    secret_key_file: Option<PathBuf>,
    /// Read the secret key from this environment variable.
    #[arg(long)]
    secret_key_env: Option<String>,
    /// Read the webhook signing secret from this file.
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
    /// Read the webhook signing secret from this environment variable.
    #[arg(long)]
    webhook_secret_env: Option<String>,
}

fn read_secret(file: &Option<PathBuf>, env: &Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        return Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ));
    }
    if let Some(v) = env {
        return Ok(Some(
            std::env::var(v)
                .with_context(|| format!("environment variable {v} is not set"))?
                .trim()
                .to_string(),
        ));
    }
    Ok(None)
}

#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// Add a Stripe connection. The secret key is read from --secret-key-file,
    /// --secret-key-env or standard input.
    Add {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        secrets: SecretSource,
        #[arg(long, default_value = "default")]
        merchant_account: String,
        #[arg(long)]
        publishable_key: Option<String>,
        #[arg(long)]
        stripe_account: Option<String>,
        #[arg(long)]
        api_version: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Make it the merchant account's default payments connection.
        #[arg(long)]
        default: bool,
    },
    /// List a merchant account's connections (id, status, masked secret key, default).
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, default_value = "default")]
        merchant_account: String,
    },
    /// Check the connection's key against Stripe, per resource.
    Verify {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
}

pub async fn connections(cmd: ConnectionsCommand) -> anyhow::Result<()> {
    match cmd {
        ConnectionsCommand::Add {
            server,
            secrets,
            merchant_account,
            publishable_key,
            stripe_account,
            api_version,
            display_name,
            default,
        } => {
            let ctx = context(&server).await?;
            let secret = match read_secret(&secrets.secret_key_file, &secrets.secret_key_env)? {
                Some(s) => s,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the secret key from standard input")?;
                    s.trim().to_string()
                }
            };
            let mut body = Map::new();
            body.insert("secret_key".into(), json!(secret));
            if let Some(w) = read_secret(&secrets.webhook_secret_file, &secrets.webhook_secret_env)?
            {
                body.insert("webhook_secret".into(), json!(w));
            }
            for (k, v) in [
                ("publishable_key", publishable_key),
                ("stripe_account", stripe_account),
                ("api_version", api_version),
                ("display_name", display_name),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if default {
                body.insert("default".into(), Value::Bool(true));
            }
            let c = tollgate_server::api::connections::create_for(&ctx, &merchant_account, &body)
                .await
                .map_err(|e| anyhow!("{}", e.body()))?;
            let shown = tollgate_server::api::connections::render(&ctx, &c);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        ConnectionsCommand::List {
            server,
            merchant_account,
        } => {
            let ctx = context(&server).await?;
            for c in connections::list(ctx.store.reader(), Some(&merchant_account)).await? {
                let shown = tollgate_server::api::connections::render(&ctx, &c);
                println!(
                    "{}\t{}\t{}\t{}",
                    c.id,
                    shown.status.as_str(),
                    c.secret_key_hint,
                    if c.is_default { "default" } else { "" }
                );
            }
        }
        ConnectionsCommand::Verify { server, id } => {
            let ctx = context(&server).await?;
            let c = connections::get(ctx.store.reader(), &id)
                .await?
                .ok_or_else(|| anyhow!("no connection {id}"))?;
            if c.sandbox {
                bail!(
                    "the sandbox connection is verified by the running server (POST /connections/{id}/verify)"
                );
            }
            let report = tollgate_server::api::connections::verify_for(&ctx, &c)
                .await
                .map_err(|e| anyhow!("{}", e.body()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum StripeCommand {
    /// Re-read Stripe (events since the last one seen, the list endpoints, unsettled
    /// transactions) and apply what webhooks missed, as `POST /connections/{id}/sync` does.
    Sync {
        #[command(flatten)]
        server: ServerArgs,
        /// One connection (default: every connection).
        #[arg(long)]
        connection: Option<String>,
        /// Start reading here (unix seconds or RFC 3339) instead of where the last sync stopped.
        #[arg(long)]
        since: Option<String>,
    },
}

pub async fn stripe(cmd: StripeCommand) -> anyhow::Result<()> {
    let StripeCommand::Sync {
        server,
        connection,
        since,
    } = cmd;
    let mut config = server.config()?;
    // A sandbox connection talks to the sandbox mounted in the running server.
    let sandbox_base = format!(
        "http://{}/sandbox/stripe",
        std::net::SocketAddr::from(([127, 0, 0, 1], config.listen.port()))
    );
    config.reconcile_interval_secs = 0;
    let ctx = tollgate_server::context(config, Arc::new(SystemClock), Some(sandbox_base))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let since = match since {
        None => None,
        Some(s) => Some(
            tollgate_server::api::webhook_events::parse_since(&Value::String(s.clone()))
                .ok_or_else(|| anyhow!("--since {s}: not unix seconds or RFC 3339"))?,
        ),
    };
    let conns = match connection {
        Some(id) => vec![
            connections::get(ctx.store.reader(), &id)
                .await?
                .ok_or_else(|| anyhow!("no connection {id}"))?,
        ],
        None => connections::list(ctx.store.reader(), None).await?,
    };
    let mut failed = false;
    for c in conns {
        match tollgate_server::reconcile::sync_connection(&ctx, &c, since).await {
            Ok(report) => println!("{}", serde_json::to_string_pretty(&report)?),
            Err(e) => {
                failed = true;
                eprintln!("connection {}: {}", c.id, e.body());
            }
        }
    }
    if failed {
        bail!("some connections could not be synced");
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Create a dashboard operator. The password is read from --password-file or standard
    /// input (never from an argument: process lists show those).
    Create {
        #[command(flatten)]
        server: ServerArgs,
        username: String,
        /// Read the password from this file (its first line).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Set the password of an existing operator instead (also lifts a lockout).
        #[arg(long)]
        reset_password: bool,
    },
    /// List operators (never their password hashes).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where the dashboard answers: the public URL when one is configured, else the one the server
/// last started on this database announced, else `http://{listen}` (a wildcard address as
/// loopback, which a browser can open).
async fn login_base(ctx: &tollgate_server::ApiContext) -> anyhow::Result<String> {
    let configured = ctx.config.public_url.is_some();
    let served = accounts::get_setting(ctx.store.reader(), tollgate_server::PUBLIC_URL_SETTING)
        .await?
        .filter(|u| !u.is_empty());
    let url = match served {
        Some(url) if !configured => url,
        _ if configured => ctx.public_url.to_string(),
        _ => {
            let mut listen = ctx.config.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{listen}")
        }
    };
    Ok(url.trim_end_matches('/').to_string())
}

/// The first line of `text`, without its line ending (spaces inside are kept).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub async fn operator(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Create {
            server,
            username,
            password_file,
            reset_password,
        } => {
            let password = match &password_file {
                Some(f) => first_line(
                    &std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                )
                .to_string(),
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the password from standard input")?;
                    first_line(&s).to_string()
                }
            };
            let ctx = context(&server).await?;
            let done = tollgate_server::dashboard::create_operator(
                &ctx,
                &username,
                &password,
                reset_password,
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            println!("operator {username}: {done}");
            println!("log in at {}/dashboard/login", login_base(&ctx).await?);
        }
        OperatorCommand::List { server } => {
            let ctx = context(&server).await?;
            let now = ctx.now();
            for o in tollgate_store::operators::list(ctx.store.reader()).await? {
                let locked = o.locked_until.is_some_and(|t| t > now);
                println!(
                    "{}\t{}",
                    o.username,
                    if locked { "locked" } else { "active" }
                );
            }
        }
    }
    Ok(())
}
