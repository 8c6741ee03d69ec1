//! `strata worker`: parses the worker's flags into settings, starts the worker role
//! (`strata_worker::process`) and drains it on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_core::settings::Flags;

use crate::project_commands::Output;
use crate::settings_command::{SettingsArgs, resolve};

/// `strata worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// The RabbitMQ broker (broker.url).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// The queue to take tasks from (broker.task_queue).
    #[arg(long, value_name = "NAME")]
    task_queue: Option<String>,
    /// Tasks run at the same time (worker.slots; default: the number of CPUs).
    #[arg(long)]
    slots: Option<usize>,
    /// Memory pool of each task in MiB (engine.memory_limit_mib); a query that needs more
    /// spills to disk or fails with a clear error.
    #[arg(long, value_name = "MIB")]
    memory_limit_mib: Option<usize>,
    /// Folder for spill files (engine.spill_dir).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Name in run records and logs (worker.id; default: host name and process id).
    #[arg(long, value_name = "NAME")]
    worker_id: Option<String>,
    /// Where the Flight server for shuffle outputs listens (worker.flight_listen).
    #[arg(long, value_name = "HOST:PORT")]
    flight_listen: Option<String>,
    /// The address other workers reach the Flight server at: a host, or host:port
    /// (worker.flight_advertise).
    #[arg(long, value_name = "HOST[:PORT]")]
    flight_advertise: Option<String>,
    /// Folder for shuffle outputs (worker.shuffle_dir).
    #[arg(long, value_name = "DIR")]
    shuffle_dir: Option<PathBuf>,
    /// How often a running task sends a heartbeat, in ms (worker.heartbeat_interval_ms).
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// How long a shuffle fetch waits for another worker, in s (worker.fetch_timeout_secs).
    #[arg(long, value_name = "SECS")]
    fetch_timeout_secs: Option<u64>,
    /// Where /metrics, /healthz and /readyz are served (metrics.listen).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

impl WorkerArgs {
    /// The flags given, as settings.
    pub(crate) fn flags(&self) -> Flags {
        Flags::default()
            .set("broker.url", "--amqp-url", self.amqp_url.clone())
            .set("broker.task_queue", "--task-queue", self.task_queue.clone())
            .set("worker.slots", "--slots", self.slots)
            .set(
                "engine.memory_limit_mib",
                "--memory-limit-mib",
                self.memory_limit_mib,
            )
            .set("engine.spill_dir", "--spill-dir", self.spill_dir.clone())
            .set("worker.id", "--worker-id", self.worker_id.clone())
            .set(
                "worker.flight_listen",
                "--flight-listen",
                self.flight_listen.clone(),
            )
            .set(
                "worker.flight_advertise",
                "--flight-advertise",
                self.flight_advertise.clone(),
            )
            .set(
                "worker.shuffle_dir",
                "--shuffle-dir",
                self.shuffle_dir.clone(),
            )
            .set(
                "worker.heartbeat_interval_ms",
                "--heartbeat-interval-ms",
                self.heartbeat_interval_ms,
            )
            .set(
                "worker.fetch_timeout_secs",
                "--fetch-timeout-secs",
                self.fetch_timeout_secs,
            )
            .set(
                "metrics.listen",
                "--metrics-listen",
                self.metrics_listen.clone(),
            )
    }
}

pub(crate) fn worker(
    args: &WorkerArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let settings = resolve(&args.settings, env, args.flags())?.settings;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let worker = strata_worker::start(&settings).await?;
        writeln!(out.stdout, "{}", worker.describe())?;
        out.stdout.flush()?;
        shutdown_signal().await;
        let id = worker.id().to_string();
        worker.stop().await?;
        writeln!(out.stdout, "worker {id}: drained, exiting")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
