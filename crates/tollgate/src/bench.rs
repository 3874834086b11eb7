//! `tollgate bench …`: benchmarks that print figures a reviewer can rerun.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// PaymentIntent create+confirm against an in-process sandbox over loopback HTTP.
    Sandbox {
        /// Number of create+confirm pairs.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sandbox { .. } => anyhow::bail!("not yet"),
    }
}
