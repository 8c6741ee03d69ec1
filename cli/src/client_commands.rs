//! The coordinator's command-line client: `strata submit`, `strata runs`, `strata run-status`
//! and `strata cancel`, over `strata.v1.PipelineService`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use strata_coordinator::{NodeResult, NodeStatus, RunEvent, RunRecord};
use strata_core::manifest::ResourceType;
use strata_proto::v1 as pb;
use strata_proto::v1::pipeline_service_client::PipelineServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::SelectionArgs;
use crate::execute_commands::{RunOutput, progress, summary};
use crate::project_commands::Output;

/// How to reach the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The coordinator's gRPC address (also STRATA_COORDINATOR; default
    /// http://127.0.0.1:7070; https:// for TLS).
    #[arg(long, value_name = "URL")]
    pub(crate) coordinator: Option<String>,
    /// A file holding the bearer token (also STRATA_TOKEN, the token itself).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate (PEM) the coordinator's TLS certificate is checked against.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) output: RunOutput,
}

/// `strata submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The project folder.
    #[arg(long, default_value = ".", value_name = "DIR")]
    project_dir: PathBuf,
    /// Send the project folder as an archive instead of its path (for a coordinator on
    /// another machine; target/, warehouse/ and logs/ are left out).
    #[arg(long)]
    upload: bool,
    #[command(flatten)]
    selection: SelectionArgs,
    /// build, run, seed or test.
    #[arg(long, default_value = "build")]
    command: String,
    /// Variables as YAML or JSON.
    #[arg(long, value_name = "YAML")]
    vars: Option<String>,
    /// Run settings: warehouse=…, threads=…, shuffle_partitions=…, retries=…, fail_fast=….
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    full_refresh: bool,
    /// Compile and plan only.
    #[arg(long)]
    dry_run: bool,
    /// Submitting again with the same key returns the first run instead of starting another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the run: progress lines and a summary; the exit code tells how it ended.
    #[arg(long)]
    watch: bool,
    /// A variable for the project's env_var(): NAME=VALUE, or NAME to send this shell's
    /// value (kept off the command line); repeatable. The coordinator's own variables are not
    /// visible to submitted projects except those its env_allowlist names.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
}

/// `strata runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only runs in this state (queued, running, succeeded, failed, cancelled); repeatable.
    #[arg(long, value_name = "STATE")]
    status: Vec<String>,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

/// `strata run-status`.
#[derive(Debug, Args)]
pub struct RunStatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The run.
    run_id: String,
    /// Also print this node's error and compiled SQL.
    #[arg(long, value_name = "UNIQUE_ID")]
    node: Option<String>,
}

/// `strata cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The run.
    run_id: String,
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub(crate) struct Authorize(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

pub(crate) type Client = PipelineServiceClient<InterceptedService<Channel, Authorize>>;

pub(crate) async fn connect(
    args: &ConnectArgs,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Client> {
    let url = args
        .coordinator
        .clone()
        .or_else(|| env.get("STRATA_COORDINATOR").cloned())
        .unwrap_or_else(|| String::from("http://127.0.0.1:7070"));
    let mut endpoint = Channel::from_shared(url.clone())
        .with_context(|| format!("invalid coordinator address {url}"))?
        .connect_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        // One rustls crypto provider for the process (two back-ends are linked in).
        strata_storage::install();
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &args.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let token = match &args.token_file {
        Some(path) => strata_coordinator::service::read_tokens(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no token", path.display()))?,
        None => env.get("STRATA_TOKEN").cloned().unwrap_or_default(),
    };
    let header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = if token.is_empty()
    {
        None
    } else {
        Some(
            format!("Bearer {token}")
                .parse()
                .context("the token has characters a header cannot carry")?,
        )
    };
    Ok(PipelineServiceClient::with_interceptor(
        channel,
        Authorize(header),
    ))
}

/// A gRPC error as a person reads it.
pub(crate) fn failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Packs a project folder as tar.gz, leaving out what builds produce.
fn archive(project_dir: &Path) -> anyhow::Result<Vec<u8>> {
    fn add(
        builder: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
        dir: &Path,
        prefix: &Path,
    ) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let skipped = ["target", "warehouse", "logs", ".git", "dbt_packages"];
            if skipped.iter().any(|skip| name == *skip) {
                continue;
            }
            let path = entry.path();
            let inside = prefix.join(&name);
            if entry.file_type()?.is_dir() {
                add(builder, &path, &inside)?;
            } else {
                builder.append_path_with_name(&path, &inside)?;
            }
        }
        Ok(())
    }
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    add(&mut builder, project_dir, Path::new("project"))
        .with_context(|| format!("cannot pack {}", project_dir.display()))?;
    Ok(builder.into_inner()?.finish()?)
}

fn run_state(status: i32) -> &'static str {
    match pb::RunStatus::try_from(status).unwrap_or(pb::RunStatus::Unspecified) {
        pb::RunStatus::Queued => "queued",
        pb::RunStatus::Running => "running",
        pb::RunStatus::Succeeded => "succeeded",
        pb::RunStatus::Failed => "failed",
        pb::RunStatus::Cancelled => "cancelled",
        pb::RunStatus::Unspecified => "unknown",
    }
}

fn parse_state(state: &str) -> anyhow::Result<i32> {
    let status = match state {
        "queued" => pb::RunStatus::Queued,
        "running" => pb::RunStatus::Running,
        "succeeded" => pb::RunStatus::Succeeded,
        "failed" => pb::RunStatus::Failed,
        "cancelled" => pb::RunStatus::Cancelled,
        _ => anyhow::bail!(
            "unknown run state '{state}': use queued, running, succeeded, failed or cancelled"
        ),
    };
    Ok(status as i32)
}

fn node_json(node: &pb::NodeState) -> serde_json::Value {
    json!({
        "unique_id": node.unique_id,
        "name": node.name,
        "resource_type": node.resource_type,
        "status": node.status,
        "rows": node.rows,
        "bytes": node.bytes,
        "duration_ms": node.duration_ms,
        "attempts": node.attempts,
        "error": (!node.error.is_empty()).then_some(&node.error),
        "version": (node.version >= 0).then_some(node.version),
        "workers": node.workers,
    })
}

fn run_json(run: &pb::Run) -> serde_json::Value {
    json!({
        "run_id": run.run_id,
        "status": run_state(run.status),
        "command": run.command,
        "project": run.project,
        "select": run.select,
        "exclude": run.exclude,
        "idempotency_key": (!run.idempotency_key.is_empty()).then_some(&run.idempotency_key),
        "submitted_at_ms": run.submitted_at_ms,
        "started_at_ms": run.started_at_ms,
        "finished_at_ms": run.finished_at_ms,
        "error": (!run.error.is_empty()).then_some(&run.error),
        "trace_id": run.trace_id,
        "dry_run": run.dry_run,
        "nodes": run.nodes.iter().map(node_json).collect::<Vec<_>>(),
    })
}

/// A node's API state as the record the embedded runs print.
fn node_result(node: &pb::NodeState) -> Option<NodeResult> {
    let status: NodeStatus = serde_json::from_value(json!(node.status)).ok()?;
    let resource_type = match node.resource_type.as_str() {
        "seed" => ResourceType::Seed,
        "test" => ResourceType::Test,
        "source" => ResourceType::Source,
        "snapshot" => ResourceType::Snapshot,
        _ => ResourceType::Model,
    };
    let failures = (resource_type == ResourceType::Test).then_some(node.failures);
    Some(NodeResult {
        unique_id: node.unique_id.clone(),
        name: node.name.clone(),
        resource_type,
        status,
        rows: node.rows,
        bytes: node.bytes,
        duration_ms: node.duration_ms,
        failures,
        version: (node.version >= 0).then_some(node.version),
        attempts: node.attempts,
        tasks: 0,
        relation: None,
        error: (!node.error.is_empty()).then(|| node.error.clone()),
        peak_memory_bytes: 0,
        peak_allocated_bytes: 0,
        workers: node.workers.clone(),
        stages: Vec::new(),
        quarantined: None,
    })
}

fn record_of(run: &pb::Run) -> RunRecord {
    let nodes: Vec<NodeResult> = run.nodes.iter().filter_map(node_result).collect();
    RunRecord {
        run_id: run.run_id.clone(),
        elapsed_ms: u64::try_from(run.finished_at_ms.saturating_sub(run.started_at_ms))
            .unwrap_or(0),
        success: run.status == pb::RunStatus::Succeeded as i32,
        nodes,
        trace_id: run.trace_id.clone(),
    }
}

fn exit_for(run: &pb::Run) -> ExitCode {
    if run.status == pb::RunStatus::Succeeded as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The variables a submission sends: `NAME=VALUE`, or `NAME` with this process's value.
fn submitted_env(
    args: &[String],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    args.iter()
        .map(|arg| match arg.split_once('=') {
            Some((name, value)) => Ok((name.trim().to_string(), value.to_string())),
            None => env
                .get(arg.trim())
                .map(|value| (arg.trim().to_string(), value.clone()))
                .with_context(|| {
                    format!("--env {arg}: the variable is not set here; give NAME=VALUE")
                }),
        })
        .collect()
}

pub(crate) fn submit(
    args: &SubmitArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let mut config_overrides = std::collections::HashMap::new();
    for setting in &args.overrides {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--set {setting}: expected KEY=VALUE"))?;
        config_overrides.insert(key.trim().to_string(), value.trim().to_string());
    }
    let project = if args.upload {
        pb::submit_run_request::Project::ProjectArchive(archive(&args.project_dir)?)
    } else {
        let dir = args
            .project_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", args.project_dir.display()))?;
        pb::submit_run_request::Project::ProjectDir(dir.display().to_string())
    };
    let request = pb::SubmitRunRequest {
        project: Some(project),
        command: args.command.clone(),
        select: args.selection.select.clone(),
        exclude: args.selection.exclude.clone(),
        vars: args.vars.clone().unwrap_or_default(),
        config_overrides,
        full_refresh: args.full_refresh,
        dry_run: args.dry_run,
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        env: submitted_env(&args.env, env)?,
    };
    let json_output = args.connect.output == RunOutput::Json;
    runtime()?.block_on(async {
        let mut client = connect(&args.connect, env).await?;
        let submitted = client
            .submit_run(request)
            .await
            .map_err(failed)?
            .into_inner();
        if !args.watch {
            if json_output {
                writeln!(
                    out.stdout,
                    "{}",
                    json!({"run_id": submitted.run_id, "existing": submitted.existing})
                )?;
            } else {
                writeln!(
                    out.stdout,
                    "{} run {}",
                    if submitted.existing {
                        "existing"
                    } else {
                        "submitted"
                    },
                    submitted.run_id
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !json_output {
            writeln!(
                out.stdout,
                "{} run {} — watching",
                if submitted.existing {
                    "Existing"
                } else {
                    "Submitted"
                },
                submitted.run_id
            )?;
        }
        let run = watch(&mut client, &submitted.run_id, !json_output, out).await?;
        if json_output {
            writeln!(
                out.stdout,
                "{}",
                serde_json::to_string_pretty(&run_json(&run))?
            )?;
        } else {
            summary(out.stdout, &record_of(&run))?;
            if !run.error.is_empty() {
                writeln!(out.stdout, "Run error: {}", run.error)?;
            }
            writeln!(out.stdout, "Run {} {}.", run.run_id, run_state(run.status))?;
        }
        Ok(exit_for(&run))
    })
}

/// Follows a run's events to its end, printing progress; returns its final state.
async fn watch(
    client: &mut Client,
    run_id: &str,
    print: bool,
    out: &mut Output<'_>,
) -> anyhow::Result<pb::Run> {
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    while let Some(event) = events.message().await.map_err(failed)? {
        match event.event {
            Some(pb::run_event::Event::NodeFinished(finished)) if print => {
                if let Some(result) = finished.node.as_ref().and_then(node_result) {
                    progress(
                        out.stdout,
                        &RunEvent::Finished {
                            result,
                            done: finished.done as usize,
                            total: finished.total as usize,
                        },
                    )?;
                }
            }
            Some(pb::run_event::Event::RunFinished(finished)) => {
                return finished
                    .run
                    .context("the coordinator ended the watch without the run's state");
            }
            _ => {}
        }
    }
    // The stream ended without the run's end (the coordinator restarted): ask for the state.
    Ok(client
        .get_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .map_err(failed)?
        .into_inner())
}

pub(crate) fn runs(
    args: &RunsArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let status = args
        .status
        .iter()
        .map(|state| parse_state(state))
        .collect::<anyhow::Result<Vec<_>>>()?;
    runtime()?.block_on(async {
        let mut client = connect(&args.connect, env).await?;
        let listed = client
            .list_runs(pb::ListRunsRequest {
                status,
                page_size: args.limit.max(1),
                ..pb::ListRunsRequest::default()
            })
            .await
            .map_err(failed)?
            .into_inner();
        if args.connect.output == RunOutput::Json {
            let runs: Vec<_> = listed.runs.iter().map(run_json).collect();
            writeln!(out.stdout, "{}", serde_json::to_string_pretty(&runs)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut table = crate::settings_command::plain_table(&[
            "RUN", "STATUS", "CMD", "SECONDS", "NODES", "FAILED", "PROJECT",
        ]);
        for run in &listed.runs {
            let seconds = if run.finished_at_ms > 0 {
                format!(
                    "{:.1}",
                    (run.finished_at_ms - run.started_at_ms.max(run.submitted_at_ms)) as f64
                        / 1000.0
                )
            } else {
                String::from("-")
            };
            let failed = run
                .nodes
                .iter()
                .filter(|node| matches!(node.status.as_str(), "error" | "fail"))
                .count();
            table.add_row([
                run.run_id.clone(),
                run_state(run.status).to_string(),
                run.command.clone(),
                seconds,
                run.nodes.len().to_string(),
                failed.to_string(),
                run.project.clone(),
            ]);
        }
        writeln!(out.stdout, "{table}")?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn run_status(
    args: &RunStatusArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connect, env).await?;
        let run = client
            .get_run(pb::GetRunRequest {
                run_id: args.run_id.clone(),
            })
            .await
            .map_err(failed)?
            .into_inner();
        let detail = match &args.node {
            Some(node) => Some(
                client
                    .get_node(pb::GetNodeRequest {
                        run_id: args.run_id.clone(),
                        unique_id: node.clone(),
                    })
                    .await
                    .map_err(failed)?
                    .into_inner(),
            ),
            None => None,
        };
        if args.connect.output == RunOutput::Json {
            let mut value = run_json(&run);
            if let Some(detail) = &detail {
                value["node_detail"] = json!({
                    "node": detail.node.as_ref().map(node_json),
                    "compiled_sql": detail.compiled_sql,
                    "original_file_path": detail.original_file_path,
                });
            }
            writeln!(out.stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            return Ok(exit_for(&run));
        }
        writeln!(
            out.stdout,
            "run {}: {} ({} of {})",
            run.run_id,
            run_state(run.status),
            run.command,
            run.project
        )?;
        if !run.error.is_empty() {
            writeln!(out.stdout, "error: {}", run.error)?;
        }
        let mut table =
            crate::settings_command::plain_table(&["STATUS", "NODE", "ROWS", "SECONDS", "ERROR"]);
        for node in &run.nodes {
            table.add_row([
                node.status.clone(),
                node.unique_id.clone(),
                node.rows.to_string(),
                format!("{:.2}", node.duration_ms as f64 / 1000.0),
                node.error.clone(),
            ]);
        }
        writeln!(out.stdout, "{table}")?;
        if let Some(detail) = detail {
            writeln!(
                out.stdout,
                "\n{} ({}):\n{}",
                args.node.as_deref().unwrap_or_default(),
                detail.original_file_path,
                detail.compiled_sql
            )?;
        }
        Ok(exit_for(&run))
    })
}

pub(crate) fn cancel(
    args: &CancelArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connect, env).await?;
        let run = client
            .cancel_run(pb::CancelRunRequest {
                run_id: args.run_id.clone(),
            })
            .await
            .map_err(failed)?
            .into_inner();
        if args.connect.output == RunOutput::Json {
            writeln!(
                out.stdout,
                "{}",
                serde_json::to_string_pretty(&run_json(&run))?
            )?;
        } else {
            writeln!(
                out.stdout,
                "cancel requested for run {} (now {})",
                run.run_id,
                run_state(run.status)
            )?;
        }
        Ok(ExitCode::SUCCESS)
    })
}
