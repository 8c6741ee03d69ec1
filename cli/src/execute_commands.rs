//! `strata run`, `strata build`, `strata seed`, `strata test`, `strata ingest`: execute a
//! compiled project and print progress and a summary like dbt's. Sources with an `ingest:`
//! block are nodes of `build` and `ingest` runs, landed by an ingest agent (in this process,
//! or `strata ingest-agent` processes with `--cluster`) before anything reads them.
//!
//! In embedded mode the coordinator, an in-process worker and an in-process ingest agent talk
//! over the in-memory job queue; with `--cluster amqp://…` this process is the coordinator and
//! `strata worker` and `strata ingest-agent` processes anywhere do the work — the same code
//! either way.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_coordinator::prepare::{PrepareError, RunSpec, prepare, warehouse_for};
use strata_coordinator::{NodeStatus, RunEvent, RunRecord, Warehouse};
use strata_core::manifest::ResourceType;
use strata_core::settings::{Flags, RunDefaults};

use crate::project_commands::{Output, report};
use crate::settings_command::{SettingsArgs, resolve};
use crate::{ProjectArgs, SelectionArgs};

/// Options of the commands that execute nodes.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub(crate) project: ProjectArgs,
    #[command(flatten)]
    pub(crate) selection: SelectionArgs,
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// Where tables are written: a local folder, file://, s3:// or memory:// (default:
    /// `<project>/warehouse`; also STRATA_WAREHOUSE).
    #[arg(long, value_name = "URL")]
    pub(crate) warehouse: Option<String>,
    /// Nodes run at the same time (default 4).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Stop starting nodes after the first failure.
    #[arg(long, short = 'x')]
    pub(crate) fail_fast: bool,
    /// Run on a cluster: the RabbitMQ broker `strata worker` processes serve (such as
    /// amqp://guest:guest@127.0.0.1:5672/%2f); without it, everything runs in this process.
    #[arg(long, value_name = "AMQP_URL")]
    pub(crate) cluster: Option<String>,
    /// Partitions of the shuffles between cluster workers (map tasks read the input in this
    /// many parts; as many reduce tasks write the table). 1 turns shuffles off (default 4).
    #[arg(long, value_name = "N")]
    pub(crate) shuffle_partitions: Option<usize>,
    /// Seconds a running task may go without a heartbeat before it is retried elsewhere
    /// (default 60).
    #[arg(long, value_name = "SECS")]
    pub(crate) task_timeout_secs: Option<u64>,
    /// The queue the cluster's workers take tasks from (their `--task-queue`; broker.task_queue).
    #[arg(long, value_name = "NAME")]
    pub(crate) task_queue: Option<String>,
    /// The queue the cluster's ingest agents take ingest tasks from (their `--ingest-queue`;
    /// broker.ingest_queue).
    #[arg(long, value_name = "NAME")]
    pub(crate) ingest_queue: Option<String>,
    /// Memory pool of each task, in MiB (embedded mode, engine.memory_limit_mib; cluster
    /// workers have their own).
    #[arg(long, value_name = "MIB")]
    pub(crate) memory_limit_mib: Option<usize>,
    /// Rebuild incremental models from scratch (except those with `full_refresh: false`), and
    /// empty the bronze table of each source the run lands and land it again.
    #[arg(long)]
    pub(crate) full_refresh: bool,
    /// Print the run record as JSON instead of the summary.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) output: RunOutput,
}

/// How a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunOutput {
    /// Progress lines and a summary.
    Text,
    /// The run record as JSON on standard output.
    Json,
}

pub(crate) fn execute(
    args: &ExecuteArgs,
    command: &str,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let settings = resolve(&args.settings, env, execute_flags(args))?.settings;
    let defaults = RunDefaults::default();
    let spec = RunSpec {
        command: command.to_string(),
        select: args.selection.select.clone(),
        exclude: args.selection.exclude.clone(),
        vars: args.project.vars.clone(),
        target: args.project.target.clone(),
        warehouse: args.warehouse.clone(),
        threads: args.threads.unwrap_or(defaults.threads).max(1),
        fail_fast: args.fail_fast,
        full_refresh: args.full_refresh,
        // Embedded mode never shuffles: one task already uses every core.
        shuffle_partitions: if args.cluster.is_some() {
            args.shuffle_partitions
                .unwrap_or(defaults.shuffle_partitions)
        } else {
            0
        },
        task_timeout_secs: args.task_timeout_secs.unwrap_or(defaults.task_timeout_secs),
        ..RunSpec::new(args.project.project_dir.clone())
    };
    let prepared = match runtime.block_on(prepare(&spec, env)) {
        Ok(prepared) => prepared,
        Err(PrepareError::Project(diagnostics)) => {
            report(&diagnostics, out)?;
            return Ok(ExitCode::FAILURE);
        }
        Err(err @ PrepareError::Invalid(_)) => return Err(err.into()),
    };
    if !report(&prepared.diagnostics, out)? {
        return Ok(ExitCode::FAILURE);
    }
    let request = prepared.request;
    let (project_dir, warehouse) = (request.project_dir.clone(), request.warehouse.clone());
    // Like dbt, every run leaves the manifest it ran next to its run record.
    let target = project_dir.join("target");
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    std::fs::write(target.join("manifest.json"), request.manifest.to_json())
        .context("cannot write target/manifest.json")?;
    let run_id = strata_coordinator::run::new_run_id();
    let text = args.output == RunOutput::Text;
    if text {
        writeln!(
            out.stdout,
            "Running with strata={} on {} (run {run_id})",
            env!("CARGO_PKG_VERSION"),
            warehouse.root()
        )?;
    }
    let stdout = &mut out.stdout;
    let on_event = |event: RunEvent| {
        if text {
            let _ = progress(stdout, &event);
        }
    };
    let record = runtime.block_on(async {
        anyhow::Ok(match &args.cluster {
            Some(_) => {
                strata_coordinator::run_on_broker(&settings, &request, &run_id, on_event).await?
            }
            None => strata_embedded::run(&settings, &request, &run_id, on_event).await?,
        })
    })?;
    runtime.block_on(save_record(&record, &project_dir, &warehouse))?;
    if text {
        summary(out.stdout, &record)?;
    } else {
        writeln!(out.stdout, "{}", serde_json::to_string_pretty(&record)?)?;
    }
    Ok(if record.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The settings the flags of a run set: the engine's memory in embedded mode, the broker and
/// task queue of `--cluster`.
fn execute_flags(args: &ExecuteArgs) -> Flags {
    Flags::default()
        .set(
            "engine.memory_limit_mib",
            "--memory-limit-mib",
            args.memory_limit_mib,
        )
        .set("broker.url", "--cluster", args.cluster.clone())
        .set("broker.task_queue", "--task-queue", args.task_queue.clone())
        .set(
            "broker.ingest_queue",
            "--ingest-queue",
            args.ingest_queue.clone(),
        )
}

/// The project folder, resolved, and the warehouse of the command.
pub(crate) fn project_and_warehouse(
    project: &crate::ProjectArgs,
    option: &Option<String>,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<(std::path::PathBuf, Warehouse)> {
    let project_dir = project
        .project_dir
        .canonicalize()
        .context("cannot resolve the project folder")?;
    let warehouse = warehouse_for(option.as_deref(), env, &project_dir)?;
    Ok((project_dir, warehouse))
}

pub(crate) fn progress(out: &mut dyn Write, event: &RunEvent) -> std::io::Result<()> {
    let RunEvent::Finished {
        result,
        done,
        total,
    } = event
    else {
        return Ok(());
    };
    let kind = result.resource_type.as_str();
    let what = match (result.resource_type, &result.relation) {
        (ResourceType::Test, _) => format!("test {}", result.name),
        // `source.table`, as the project names it (the relation is its bronze table).
        (ResourceType::Source, _) => format!("source {}", source_name(&result.unique_id)),
        (_, Some(relation)) => format!("{kind} {relation}"),
        _ => format!("{kind} {}", result.name),
    };
    let seconds = result.duration_ms as f64 / 1000.0;
    let detail = match result.status {
        NodeStatus::Success => match result.quarantined {
            Some(quarantined) => format!(
                "OK {} rows, {quarantined} quarantined in {seconds:.2}s",
                result.rows
            ),
            None => format!("OK {} rows in {seconds:.2}s", result.rows),
        },
        NodeStatus::Pass => format!("PASS in {seconds:.2}s"),
        NodeStatus::Warn => format!("WARN {} in {seconds:.2}s", result.failures.unwrap_or(0)),
        NodeStatus::Fail => format!(
            "FAIL {} in {seconds:.2}s",
            result
                .failures
                .map_or_else(|| String::from("error"), |n| n.to_string())
        ),
        NodeStatus::Error => format!("ERROR in {seconds:.2}s"),
        NodeStatus::Skipped => String::from("SKIP"),
        NodeStatus::Cancelled => String::from("CANCELLED"),
    };
    let retries = if result.attempts > 1 {
        format!(" after {} attempts", result.attempts)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{done:>4} of {total:<4} {what:.<70} [{detail}{retries}]"
    )
}

/// `source.table` of a source's unique id (`source.<project>.<source>.<table>`).
fn source_name(unique_id: &str) -> &str {
    unique_id.splitn(3, '.').nth(2).unwrap_or(unique_id)
}

pub(crate) fn summary(out: &mut dyn Write, record: &RunRecord) -> std::io::Result<()> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &record.nodes {
        let label = match node.status {
            NodeStatus::Success | NodeStatus::Pass => "PASS",
            NodeStatus::Warn => "WARN",
            NodeStatus::Error | NodeStatus::Fail => "ERROR",
            NodeStatus::Skipped | NodeStatus::Cancelled => "SKIP",
        };
        *counts.entry(label).or_default() += 1;
        *kinds.entry(node.resource_type.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if kinds.is_empty() {
        // As dbt says it: a selection of nothing this command runs is not an error.
        return writeln!(
            out,
            "\nNothing to do: the selection has no node this command runs (try `strata ls`)."
        );
    }
    writeln!(out)?;
    writeln!(
        out,
        "Finished running {} in {:.2}s.",
        kinds.join(", "),
        record.elapsed_ms as f64 / 1000.0
    )?;
    let problems: Vec<_> = record
        .nodes
        .iter()
        .filter(|node| {
            matches!(
                node.status,
                NodeStatus::Error | NodeStatus::Fail | NodeStatus::Warn
            )
        })
        .collect();
    for node in &problems {
        let label = if node.status == NodeStatus::Warn {
            "Warning"
        } else {
            "Failure"
        };
        writeln!(
            out,
            "\n{label} in {} {} ({}):\n  {}",
            node.resource_type.as_str(),
            node.name,
            node.unique_id,
            node.error.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Done. PASS={} WARN={} ERROR={} SKIP={} TOTAL={}",
        counts.get("PASS").unwrap_or(&0),
        counts.get("WARN").unwrap_or(&0),
        counts.get("ERROR").unwrap_or(&0),
        counts.get("SKIP").unwrap_or(&0),
        record.nodes.len()
    )
}

/// Saves the run record under `target/` and in the warehouse, wherever that is.
async fn save_record(
    record: &RunRecord,
    project_dir: &std::path::Path,
    warehouse: &Warehouse,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(record)? + "\n";
    let target = project_dir.join("target");
    std::fs::create_dir_all(&target)?;
    std::fs::write(target.join("run_results.json"), &json)?;
    let location = format!("{}/run_results.json", warehouse.run_uri(&record.run_id));
    strata_storage::write(&location, json.into_bytes())
        .await
        .with_context(|| format!("cannot save the run record to {location}"))?;
    Ok(())
}
