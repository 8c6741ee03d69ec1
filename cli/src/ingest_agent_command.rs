//! `strata ingest-agent`: parses the agent's flags into settings, starts the ingest agent role
//! (`strata_ingest_agent::agent`) and drains it on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_core::settings::Flags;

use crate::project_commands::Output;
use crate::settings_command::{SettingsArgs, resolve};
use crate::worker_command::shutdown_signal;

/// `strata ingest-agent`.
#[derive(Debug, Args)]
pub struct IngestAgentArgs {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// The RabbitMQ broker (broker.url).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// The queue to take ingest tasks from (broker.ingest_queue).
    #[arg(long, value_name = "NAME")]
    ingest_queue: Option<String>,
    /// Source tables landed at the same time (ingest_agent.slots; default 2).
    #[arg(long)]
    slots: Option<usize>,
    /// Name in run records and logs (ingest_agent.id; default: host name and process id).
    #[arg(long, value_name = "NAME")]
    agent_id: Option<String>,
    /// How often a running landing sends a heartbeat, in ms
    /// (ingest_agent.heartbeat_interval_ms).
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Where /metrics, /healthz and /readyz are served (metrics.listen).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

impl IngestAgentArgs {
    /// The flags given, as settings.
    pub(crate) fn flags(&self) -> Flags {
        Flags::default()
            .set("broker.url", "--amqp-url", self.amqp_url.clone())
            .set(
                "broker.ingest_queue",
                "--ingest-queue",
                self.ingest_queue.clone(),
            )
            .set("ingest_agent.slots", "--slots", self.slots)
            .set("ingest_agent.id", "--agent-id", self.agent_id.clone())
            .set(
                "ingest_agent.heartbeat_interval_ms",
                "--heartbeat-interval-ms",
                self.heartbeat_interval_ms,
            )
            .set(
                "metrics.listen",
                "--metrics-listen",
                self.metrics_listen.clone(),
            )
    }
}

pub(crate) fn ingest_agent(
    args: &IngestAgentArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let settings = resolve(&args.settings, env, args.flags())?.settings;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let agent = strata_ingest_agent::start(&settings).await?;
        writeln!(out.stdout, "{}", agent.describe())?;
        out.stdout.flush()?;
        shutdown_signal().await;
        let id = agent.id().to_string();
        agent.stop().await?;
        writeln!(out.stdout, "ingest agent {id}: drained, exiting")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
