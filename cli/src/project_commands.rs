//! `strata compile`, `strata deps`, `strata ls` and `strata dag`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use strata_core::diagnostics::Diagnostics;
pub use strata_core::invocation::{CommandOutcome, run_compile};
use strata_core::manifest::{Manifest, ResourceType};

use crate::{
    CompileArgs, DagArgs, DagFormat, DepsArgs, LsArgs, OutputFormat, ProjectArgs, ResourceTypeArg,
    SelectionArgs,
};

/// Where a command writes.
pub(crate) struct Output<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    pub color: bool,
}

/// Compiles the whole project (no selection) with the options of `project`.
pub(crate) fn compile_project(
    project: &ProjectArgs,
    env: &BTreeMap<String, String>,
) -> CommandOutcome {
    run_compile(
        &project.project_dir,
        project.vars.as_deref(),
        &project.target,
        &[],
        &[],
        env,
    )
}

fn outcome_for(
    project: &ProjectArgs,
    selection: &SelectionArgs,
    env: &BTreeMap<String, String>,
) -> CommandOutcome {
    strata_core::invocation::compile_for_run(
        &project.project_dir,
        project.vars.as_deref(),
        &project.target,
        &selection.select,
        &selection.exclude,
        env,
        &BTreeSet::new(),
        Some(std::sync::Arc::new(compile_queries(project, env))),
    )
}

/// What answers compile-time queries: the engine, over the warehouse the project's runs use
/// (`STRATA_WAREHOUSE`, else `<project>/warehouse`) when it can be located.
fn compile_queries(
    project: &ProjectArgs,
    env: &BTreeMap<String, String>,
) -> strata_engine::compile_queries::EngineQueries {
    let queries = strata_engine::compile_queries::EngineQueries::default();
    match strata_coordinator::prepare::warehouse_for(None, env, &project.project_dir) {
        Ok(warehouse) => queries.with_warehouse(warehouse.root()),
        Err(_) => queries,
    }
}

/// Prints the outcome's diagnostics and returns its manifest and selected nodes, or `None`
/// when there were errors.
pub(crate) fn checked(
    outcome: CommandOutcome,
    out: &mut Output,
) -> anyhow::Result<Option<(Manifest, BTreeSet<String>)>> {
    if !report(&outcome.diagnostics, out)? {
        return Ok(None);
    }
    Ok(outcome
        .manifest
        .map(|manifest| (manifest, outcome.selected)))
}

/// Prints diagnostics; returns false when one of them is an error.
pub(crate) fn report(diagnostics: &Diagnostics, out: &mut Output) -> anyhow::Result<bool> {
    if !diagnostics.is_empty() {
        write!(out.stderr, "{}", diagnostics.render(out.color))?;
    }
    if diagnostics.has_errors() {
        let count = diagnostics.error_count();
        writeln!(
            out.stderr,
            "{count} error{} found; nothing was written",
            if count == 1 { "" } else { "s" }
        )?;
        return Ok(false);
    }
    Ok(true)
}

/// `strata deps`: installs the declared packages and lists them.
pub(crate) fn deps(
    args: &DepsArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let hub = args
        .hub_url
        .clone()
        .or_else(|| env.get("STRATA_HUB_URL").cloned())
        .unwrap_or_else(|| strata_core::packages::hub::DEFAULT_HUB_URL.to_string());
    let installed = strata_core::packages::install(&args.project_dir, &hub)?;
    if installed.is_empty() {
        writeln!(
            out.stdout,
            "no packages declared (packages.yml or dependencies.yml)"
        )?;
    }
    for package in &installed {
        writeln!(
            out.stdout,
            "installed {} from {} into {}",
            package.name,
            package.spec,
            package.folder.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn compile(
    args: &CompileArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let outcome = outcome_for(&args.project, &args.selection, env);
    let Some((manifest, selected)) = checked(outcome, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let target = args.project.project_dir.join(&args.target_path);
    let mut written = 0usize;
    let mut created: BTreeSet<std::path::PathBuf> = BTreeSet::new();
    for id in &selected {
        let Some(node) = manifest.nodes.get(id) else {
            continue;
        };
        let (Some(path), Some(sql)) = (&node.compiled_path, &node.compiled_code) else {
            continue;
        };
        write_if_changed(&target.join(path), sql, &mut created)?;
        written += 1;
    }
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let manifest_path = target.join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_json())
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    let counts = count_by_type(&manifest, &selected);
    writeln!(
        out.stdout,
        "compiled {} in {:.0?}: {written} SQL files and manifest.json in {}",
        counts,
        started.elapsed(),
        target.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a file unless it already holds exactly `content`: a recompile of an unchanged
/// project then costs reads instead of thousands of file writes (and keeps mtimes stable).
fn write_if_changed(
    file: &Path,
    content: &str,
    created: &mut BTreeSet<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if let Some(parent) = file.parent()
        && !created.contains(parent)
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        created.insert(parent.to_path_buf());
    }
    if std::fs::read(file).is_ok_and(|existing| existing == content.as_bytes()) {
        return Ok(());
    }
    std::fs::write(file, content).with_context(|| format!("cannot write {}", file.display()))
}

fn count_by_type(manifest: &Manifest, selected: &BTreeSet<String>) -> String {
    let mut counts: BTreeMap<ResourceType, usize> = BTreeMap::new();
    for id in selected {
        if let Some(node) = manifest.nodes.get(id) {
            *counts.entry(node.resource_type).or_default() += 1;
        }
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    [
        (ResourceType::Model, "model"),
        (ResourceType::Seed, "seed"),
        (ResourceType::Test, "test"),
        (ResourceType::Source, "source"),
        (ResourceType::Snapshot, "snapshot"),
    ]
    .iter()
    // Snapshots are counted only where a project has them.
    .filter(|(kind, _)| *kind != ResourceType::Snapshot || counts.contains_key(kind))
    .map(|(kind, word)| plural(counts.get(kind).copied().unwrap_or(0), word))
    .collect::<Vec<_>>()
    .join(", ")
}

pub(crate) fn ls(
    args: &LsArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let outcome = outcome_for(&args.project, &args.selection, env);
    let Some((manifest, selected)) = checked(outcome, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let wanted: BTreeSet<ResourceType> = args
        .resource_type
        .iter()
        .map(|kind| match kind {
            ResourceTypeArg::Model => ResourceType::Model,
            ResourceTypeArg::Seed => ResourceType::Seed,
            ResourceTypeArg::Test => ResourceType::Test,
            ResourceTypeArg::Source => ResourceType::Source,
            ResourceTypeArg::Snapshot => ResourceType::Snapshot,
        })
        .collect();
    for node in manifest
        .dag()
        .topological_order()
        .iter()
        .filter_map(|id| manifest.nodes.get(id))
    {
        if !selected.contains(&node.unique_id)
            || (!wanted.is_empty() && !wanted.contains(&node.resource_type))
        {
            continue;
        }
        match args.output {
            OutputFormat::Text => {
                let name = display_name(node);
                let detail = match node.resource_type {
                    ResourceType::Model | ResourceType::Snapshot => format!(
                        "{} -> {}",
                        node.config.materialized,
                        node.relation_name.clone().unwrap_or_default()
                    ),
                    ResourceType::Seed => node.relation_name.clone().unwrap_or_default(),
                    ResourceType::Test => format!(
                        "severity {}",
                        serde_json::to_value(node.config.severity)?
                            .as_str()
                            .unwrap_or("error")
                    ),
                    ResourceType::Source => node
                        .source
                        .as_ref()
                        .and_then(|s| s.location.clone())
                        .unwrap_or_else(|| String::from("(no location)")),
                };
                writeln!(
                    out.stdout,
                    "{:<7} {name:<40} {detail}",
                    node.resource_type.as_str()
                )?;
            }
            OutputFormat::Json => {
                let line = serde_json::json!({
                    "unique_id": node.unique_id,
                    "resource_type": node.resource_type,
                    "name": node.name,
                    "layer": node.layer,
                    "materialized": node.config.materialized,
                    "relation": node.relation_name,
                    "tags": node.config.tags,
                    "depends_on": node.depends_on,
                    "original_file_path": node.original_file_path,
                });
                writeln!(out.stdout, "{line}")?;
            }
            OutputFormat::Path => writeln!(out.stdout, "{}", node.original_file_path)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn dag(
    args: &DagArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let outcome = outcome_for(&args.project, &args.selection, env);
    let Some((manifest, selected)) = checked(outcome, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let shown: BTreeSet<&str> = selected
        .iter()
        .filter(|id| {
            manifest
                .nodes
                .get(*id)
                .is_some_and(|node| args.tests || node.resource_type != ResourceType::Test)
        })
        .map(String::as_str)
        .collect();
    write!(out.stdout, "{}", render_dag(&manifest, &shown, args.format))?;
    Ok(ExitCode::SUCCESS)
}

/// Renders the graph of `shown` nodes; node ids become `n0`, `n1`, … to stay valid in both
/// formats whatever the node names are.
pub(crate) fn render_dag(manifest: &Manifest, shown: &BTreeSet<&str>, format: DagFormat) -> String {
    let ids: BTreeMap<&str, String> = shown
        .iter()
        .enumerate()
        .map(|(index, id)| (*id, format!("n{index}")))
        .collect();
    // (short id, kind, label) of every node, and (parent, child) short ids of every edge.
    let nodes: Vec<(&String, &str, String)> = ids
        .iter()
        .map(|(id, short)| match manifest.nodes.get(*id) {
            Some(node) => (short, node.resource_type.as_str(), display_name(node)),
            None => (short, "model", (*id).to_string()),
        })
        .collect();
    let edges: Vec<(&String, &String)> = ids
        .iter()
        .flat_map(|(id, short)| {
            let parents = manifest
                .nodes
                .get(*id)
                .map(|node| node.depends_on.as_slice())
                .unwrap_or_default();
            parents
                .iter()
                .filter_map(|parent| ids.get(parent.as_str()))
                .map(move |parent| (parent, short))
        })
        .collect();
    let mut text = String::new();
    match format {
        DagFormat::Mermaid => {
            text.push_str("flowchart LR\n");
            for (short, kind, label) in &nodes {
                let name = label.replace('"', "'");
                let shape = match *kind {
                    "source" => format!("{short}[(\"{name}\")]"),
                    "seed" => format!("{short}[/\"{name}\"/]"),
                    "test" => format!("{short}{{{{\"{name}\"}}}}"),
                    _ => format!("{short}[\"{name}\"]"),
                };
                text.push_str(&format!("    {shape}\n"));
            }
            for (parent, child) in &edges {
                text.push_str(&format!("    {parent} --> {child}\n"));
            }
        }
        DagFormat::Dot => {
            text.push_str("digraph strata {\n    rankdir=LR;\n    node [shape=box];\n");
            for (short, kind, label) in &nodes {
                let shape = match *kind {
                    "source" => "cylinder",
                    "seed" => "parallelogram",
                    "test" => "hexagon",
                    _ => "box",
                };
                text.push_str(&format!(
                    "    {short} [label=\"{}\", shape={shape}];\n",
                    label.replace('"', "\\\"")
                ));
            }
            for (parent, child) in &edges {
                text.push_str(&format!("    {parent} -> {child};\n"));
            }
            text.push_str("}\n");
        }
    }
    text
}

/// A node's name as people write it: `source.table` for sources, the name otherwise.
fn display_name(node: &strata_core::manifest::Node) -> String {
    match &node.source {
        Some(info) => format!("{}.{}", info.source_name, node.name),
        None => node.name.clone(),
    }
}
