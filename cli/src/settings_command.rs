//! The `--config FILE` option every process command shares, and `strata config show`, which
//! prints the effective settings of a role and where each value came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use strata_core::settings::{Flags, Resolved, Role};

use crate::project_commands::Output;

/// The settings file of a process command.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// A YAML settings file (sections broker, cluster, engine, worker, coordinator); the
    /// environment (`STRATA__SECTION__KEY`) and flags override it. See docs/running.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Resolves the settings: defaults < file < `STRATA__*` environment < `flags`.
pub(crate) fn resolve(
    args: &SettingsArgs,
    env: &BTreeMap<String, String>,
    flags: Flags,
) -> anyhow::Result<Resolved> {
    Ok(strata_core::settings::load(
        args.config.as_deref(),
        env,
        flags,
    )?)
}

/// `strata config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the effective settings of a role, each with its source (default, file, env,
    /// flag); secrets are redacted.
    Show(ShowArgs),
}

/// `strata config show`.
#[derive(Debug, Args)]
struct ShowArgs {
    /// The role whose settings to show.
    #[arg(long, value_enum, default_value = "worker")]
    role: RoleArg,
    // `--config` and the worker's flags, applied as `strata worker` would apply them.
    #[command(flatten)]
    worker: crate::worker_command::WorkerArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Coordinator,
    Worker,
    IngestAgent,
    Embedded,
}

pub(crate) fn config(
    args: &ConfigArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Show(show) = &args.command;
    let (role, flags) = match show.role {
        RoleArg::Worker => (Role::Worker, show.worker.flags()),
        RoleArg::Coordinator => (Role::Coordinator, Flags::default()),
        RoleArg::IngestAgent => (Role::IngestAgent, Flags::default()),
        RoleArg::Embedded => (Role::Embedded, Flags::default()),
    };
    let resolved = resolve(&show.worker.settings, env, flags)?;
    let rows = resolved.explain(role);
    if show.json {
        for row in &rows {
            writeln!(out.stdout, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = plain_table(&["SETTING", "VALUE", "SOURCE"]);
    for row in rows {
        table.add_row([row.key, row.value, row.source]);
    }
    writeln!(out.stdout, "{table}")?;
    Ok(ExitCode::SUCCESS)
}

/// A table without borders, columns aligned: how the CLI prints lists for people.
pub(crate) fn plain_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.iter().copied());
    // Flush left, two spaces between columns.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}
