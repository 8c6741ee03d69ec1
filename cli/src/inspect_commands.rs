//! `strata show` (rows of a model, seed or source) and `strata debug` (is everything a run
//! needs reachable?).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_coordinator::{RunRequest, Warehouse, inputs_for};
use strata_core::config::Materialization;
use strata_core::manifest::ResourceType;

use crate::ProjectArgs;
use crate::execute_commands::project_and_warehouse;
use crate::project_commands::{Output, checked, compile_project, report};

/// `strata show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The model, seed or source (`source_name.table`) to show.
    node: String,
    /// Rows to print.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// The warehouse (default `<project>/warehouse`; also STRATA_WAREHOUSE).
    #[arg(long, value_name = "URL")]
    warehouse: Option<String>,
}

/// `strata debug`.
#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The warehouse (default `<project>/warehouse`; also STRATA_WAREHOUSE).
    #[arg(long, value_name = "URL")]
    warehouse: Option<String>,
}

fn request_for(
    manifest: strata_core::manifest::Manifest,
    project_dir: std::path::PathBuf,
    warehouse: Warehouse,
) -> RunRequest {
    RunRequest {
        manifest: Arc::new(manifest),
        selected: Default::default(),
        resource_types: Default::default(),
        project_dir,
        warehouse,
        threads: 1,
        fail_fast: false,
        retries: 0,
        retry_backoff: std::time::Duration::ZERO,
        incremental_models: Default::default(),
        shuffle_partitions: 0,
        task_timeout: std::time::Duration::from_secs(
            strata_core::settings::RunDefaults::default().task_timeout_secs,
        ),
        full_refresh: false,
        recompile: None,
    }
}

pub(crate) fn show(
    args: &ShowArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let outcome = compile_project(&args.project, env);
    let Some((manifest, _)) = checked(outcome, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let node = manifest
        .nodes
        .values()
        .find(|node| {
            node.name == args.node
                || node.unique_id == args.node
                || node
                    .source
                    .as_ref()
                    .is_some_and(|info| format!("{}.{}", info.source_name, node.name) == args.node)
        })
        .filter(|node| node.resource_type != ResourceType::Test)
        .cloned();
    let Some(node) = node else {
        let names: Vec<&str> = manifest
            .nodes
            .values()
            .filter(|n| n.resource_type != ResourceType::Test)
            .map(|n| n.name.as_str())
            .collect();
        let hint = strata_core::config::did_you_mean(&args.node, names);
        writeln!(
            out.stderr,
            "error: no model, seed or source named '{}'{hint}",
            args.node
        )?;
        return Ok(ExitCode::FAILURE);
    };
    let (project_dir, warehouse) = project_and_warehouse(&args.project, &args.warehouse, env)?;
    let sql = match (&node.relation, node.config.materialized) {
        (_, Materialization::Ephemeral) => format!(
            "select * from ({}) as ephemeral limit {}",
            node.compiled_code.clone().unwrap_or_default(),
            args.limit
        ),
        (Some(relation), _) => format!("select * from {relation} limit {}", args.limit),
        (None, _) => anyhow::bail!("'{}' has no relation to show", node.name),
    };
    let request = request_for(manifest, project_dir, warehouse);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(async {
        let mut inputs = Vec::new();
        if node.config.materialized == Materialization::Ephemeral {
            for parent in &node.depends_on {
                inputs.extend(
                    inputs_for(&request, parent)
                        .await
                        .map_err(|err| err.to_string())?,
                );
            }
        } else {
            inputs = inputs_for(&request, &node.unique_id)
                .await
                .map_err(|err| err.to_string())?;
        }
        strata_engine::query(&strata_engine::EngineConfig::default(), &inputs, &sql)
            .await
            .map_err(|err| err.to_string())
    });
    match rows {
        Ok(batches) => {
            let table = datafusion_pretty(&batches)?;
            writeln!(out.stdout, "{table}")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            writeln!(out.stderr, "error: {message}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn datafusion_pretty(batches: &[datafusion::arrow::array::RecordBatch]) -> anyhow::Result<String> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

pub(crate) fn debug(
    args: &DebugArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let mut healthy = true;
    writeln!(
        out.stdout,
        "strata {} (datafusion 55, delta-rs 1.1)",
        env!("CARGO_PKG_VERSION")
    )?;
    let outcome = compile_project(&args.project, env);
    let _ = report(&outcome.diagnostics, out)?;
    let Some(manifest) = outcome.manifest else {
        writeln!(out.stdout, "project: ERROR (see above)")?;
        return Ok(ExitCode::FAILURE);
    };
    let (project_dir, warehouse) = project_and_warehouse(&args.project, &args.warehouse, env)?;
    writeln!(
        out.stdout,
        "project: {} at {} — OK ({} nodes)",
        manifest.metadata.project_name,
        project_dir.display(),
        manifest.nodes.len()
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let probe = format!("{}/_strata/debug-probe", warehouse.root());
    let writable = runtime.block_on(async {
        strata_storage::write(&probe, b"ok".to_vec()).await?;
        strata_storage::delete(&probe).await
    });
    match writable {
        Ok(()) => writeln!(
            out.stdout,
            "warehouse: {} — OK (writable)",
            warehouse.root()
        )?,
        Err(err) => {
            healthy = false;
            writeln!(
                out.stdout,
                "warehouse: {} — ERROR: not writable ({err})",
                warehouse.root()
            )?;
        }
    }
    for node in manifest
        .nodes
        .values()
        .filter(|node| node.resource_type == ResourceType::Source)
    {
        let info = node
            .source
            .as_ref()
            .context("source without location info")?;
        let name = format!("{}.{}", info.source_name, node.name);
        let Some(location) = &info.location else {
            healthy = false;
            writeln!(
                out.stdout,
                "source {name}: ERROR — no location (set meta.external_location)"
            )?;
            continue;
        };
        let location = if location.contains("://") {
            location.clone()
        } else {
            project_dir.join(location).display().to_string()
        };
        match runtime.block_on(strata_storage::list_files(&location)) {
            Ok(files) if !files.is_empty() => writeln!(
                out.stdout,
                "source {name}: {location} — OK ({} file{})",
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            )?,
            Ok(_) => {
                healthy = false;
                writeln!(out.stdout, "source {name}: {location} — ERROR: no files")?;
            }
            Err(err) => {
                healthy = false;
                writeln!(out.stdout, "source {name}: {location} — ERROR: {err}")?;
            }
        }
    }
    writeln!(
        out.stdout,
        "{}",
        if healthy {
            "All checks passed."
        } else {
            "Some checks failed."
        }
    )?;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
