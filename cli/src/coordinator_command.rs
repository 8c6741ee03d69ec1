//! `strata coordinator`: parses the coordinator's flags into settings, starts the coordinator
//! role (`strata_coordinator::process`) and stops it on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_core::settings::Flags;

use crate::project_commands::Output;
use crate::settings_command::{SettingsArgs, resolve};
use crate::worker_command::shutdown_signal;

/// `strata coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Address the gRPC API listens on (coordinator.listen).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The RabbitMQ broker (broker.url).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// The queue the workers take tasks from (broker.task_queue).
    #[arg(long, value_name = "NAME")]
    task_queue: Option<String>,
    /// Folder for the run store and uploaded projects (coordinator.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A file of bearer tokens, one per line (coordinator.token_file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// TLS certificate chain, PEM (coordinator.tls_cert); with --tls-key, TLS only.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (coordinator.tls_key).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Default warehouse of submitted runs (coordinator.runs.warehouse).
    #[arg(long, value_name = "URL")]
    warehouse: Option<String>,
    /// Runs executing at once (coordinator.max_concurrent_runs).
    #[arg(long, value_name = "N")]
    max_concurrent_runs: Option<usize>,
    /// Where /metrics, /healthz and /readyz are served (metrics.listen).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

impl CoordinatorArgs {
    fn flags(&self) -> Flags {
        Flags::default()
            .set("coordinator.listen", "--listen", self.listen.clone())
            .set("broker.url", "--amqp-url", self.amqp_url.clone())
            .set("broker.task_queue", "--task-queue", self.task_queue.clone())
            .set("coordinator.data_dir", "--data-dir", self.data_dir.clone())
            .set(
                "coordinator.token_file",
                "--token-file",
                self.token_file.clone(),
            )
            .set("coordinator.tls_cert", "--tls-cert", self.tls_cert.clone())
            .set("coordinator.tls_key", "--tls-key", self.tls_key.clone())
            .set(
                "coordinator.runs.warehouse",
                "--warehouse",
                self.warehouse.clone(),
            )
            .set(
                "coordinator.max_concurrent_runs",
                "--max-concurrent-runs",
                self.max_concurrent_runs,
            )
            .set(
                "metrics.listen",
                "--metrics-listen",
                self.metrics_listen.clone(),
            )
    }
}

pub(crate) fn coordinator(
    args: &CoordinatorArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let settings = resolve(&args.settings, env, args.flags())?.settings;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let coordinator = strata_coordinator::start(&settings, env).await?;
        writeln!(out.stdout, "{}", coordinator.describe())?;
        out.stdout.flush()?;
        shutdown_signal().await;
        coordinator.stop().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
