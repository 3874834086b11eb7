//! The `tollgate` binary: clap commands wiring the crates together.

mod bench;
mod bench_consume;
mod bench_longrun;
mod bench_overview;
mod bench_permissions;
mod bench_webhooks;
mod cli;
mod demo;

// glibc's allocator spent a third of the sandbox benchmark's CPU in malloc/free bookkeeping
// (many small JSON values); mimalloc removes most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in mimalloc 3's `mi_option_t`; the test
/// below checks it against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps memory freed by the server before it returns it to the system:
/// 100 ms instead of its default 1 s. Under the webhooks benchmark (64 senders) the server's
/// peak memory fell by about 5 MiB with no measurable CPU cost; 10 ms gave about 10 MiB and cost
/// 10–20 % more CPU per event (issue 30).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

fn tune_allocator() {
    // Unless the environment set it (`MIMALLOC_PURGE_DELAY`, read by mimalloc at start).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one of mimalloc's option values (a plain store; it reads them when it
    // purges).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod allocator_tests {
    /// The option position is purge_delay's: its value is mimalloc 3's default for it (1 s),
    /// unless this test's environment set it.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option value.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000);
    }
}

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_sandbox::{Sandbox, SandboxConfig};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Self-hosted payments and entitlements server over Stripe"
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: API, hosted pages, workers (and the sandbox when no live keys exist).
    Serve(cli::ServerArgs),
    /// Apply database migrations and exit.
    Migrate(cli::ServerArgs),
    /// API keys.
    #[command(subcommand)]
    Keys(cli::KeysCommand),
    /// Merchant accounts (tenants).
    #[command(subcommand, name = "merchant-accounts")]
    MerchantAccounts(cli::MerchantCommand),
    /// Dashboard operators (`operator create NAME`, password from stdin or a file).
    #[command(subcommand)]
    Operator(cli::OperatorCommand),
    /// Stripe connections.
    #[command(subcommand)]
    Connections(cli::ConnectionsCommand),
    /// Stripe: reconcile (`stripe sync`).
    #[command(subcommand)]
    Stripe(cli::StripeCommand),
    /// Run the Stripe sandbox alone (an offline Stripe emulator).
    Sandbox(SandboxArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A scripted walk through the product on the built-in sandbox (payment, capture, refund,
    /// a subscription bought, renewed by a test clock, refunded; permissions at each step).
    Demo(cli::DemoArgs),
}

#[derive(clap::Args)]
struct SandboxArgs {
    /// Address to listen on (port 0 picks a free one; the real address is printed).
    #[arg(
        long,
        env = "TOLLGATE_SANDBOX_LISTEN",
        default_value = "127.0.0.1:12111"
    )]
    listen: SocketAddr,
    /// Keep state in this file across restarts.
    #[arg(long, env = "TOLLGATE_SANDBOX_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Accept only the printed keys (not any well-formed `sk_test_…` such as `sk_test_123`).
    #[arg(long)]
    strict_keys: bool,
    /// URL browsers reach the sandbox at (default: http://{listen}).
    #[arg(long)]
    public_url: Option<String>,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    tollgate_stripe::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve(args).await,
            Command::Migrate(args) => cli::migrate(args).await,
            Command::Keys(cmd) => cli::keys(cmd).await,
            Command::MerchantAccounts(cmd) => cli::merchant_accounts(cmd).await,
            Command::Operator(cmd) => cli::operator(cmd).await,
            Command::Connections(cmd) => cli::connections(cmd).await,
            Command::Stripe(cmd) => cli::stripe(cmd).await,
            Command::Sandbox(args) => run_sandbox(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Demo(args) => cli::demo(args).await,
        }
    })
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run_sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public_url = args.public_url.unwrap_or_else(|| format!("http://{addr}"));
    let config = SandboxConfig {
        strict_keys: args.strict_keys,
        state_file: args.state_file,
        // Control requests without the key only when nobody but this machine reaches it.
        trust_loopback: tollgate_sandbox::reachable_only_locally(addr, &public_url),
        public_url,
        // Read from the environment only, so it never appears in a process list.
        control_key: std::env::var("TOLLGATE_SANDBOX_CONTROL_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Printed (not logged) so scripts can read them; the format is documented in docs/sandbox.md.
    tollgate_server::say(format_args!("sandbox listening on http://{addr}"));
    tollgate_server::say(format_args!("secret key: {}", sandbox.secret_key()));
    tollgate_server::say(format_args!(
        "publishable key: {}",
        sandbox.publishable_key()
    ));
    tollgate_server::say(format_args!("account: {}", sandbox.account_id()));
    let app = sandbox
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    sandbox.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
