//! The Strata command line as a library, so that tests can run any command in-process.
//!
//! `strata compile`, `strata ls` and `strata dag` work on a dbt-style project;
//! `strata generate-sample-data` writes raw input for `examples/medallion`.

#![warn(missing_docs)]

mod bench_command;
mod client_commands;
mod coordinator_command;
mod execute_commands;
mod ingest_agent_command;
mod inspect_commands;
mod project_commands;
pub mod sample_data;
mod settings_command;
mod submit_bench;
mod worker_command;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Strata: medallion data pipelines from dbt-style projects.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Renders every model and test and writes compiled SQL and target/manifest.json.
    Compile(CompileArgs),
    /// Installs the packages of packages.yml (local:, git: and dbt Hub) into dbt_packages/.
    Deps(DepsArgs),
    /// Lists the project's nodes (models, seeds, tests, sources).
    Ls(LsArgs),
    /// Prints the dependency graph as Mermaid or Graphviz dot.
    Dag(DagArgs),
    /// Builds the selected models (embedded mode: coordinator and workers in this process).
    Run(execute_commands::ExecuteArgs),
    /// Loads seeds, builds models and snapshots and runs tests, in DAG order.
    Build(execute_commands::ExecuteArgs),
    /// Loads the selected seeds.
    Seed(execute_commands::ExecuteArgs),
    /// Lands the selected sources' `ingest:` blocks (databases, APIs, files) into bronze,
    /// exactly once; `build` does this first for the sources its models read. With
    /// `--cluster`, `strata ingest-agent` processes do the landing.
    Ingest(execute_commands::ExecuteArgs),
    /// Runs the selected data tests.
    Test(execute_commands::ExecuteArgs),
    /// Runs the selected snapshots: each keeps the history of its query's rows (SCD type 2).
    Snapshot(execute_commands::ExecuteArgs),
    /// Prints rows of a model, seed or source.
    Show(inspect_commands::ShowArgs),
    /// Checks that the project compiles, the warehouse is writable and sources have files.
    Debug(inspect_commands::DebugArgs),
    /// Writes deterministic, deliberately messy raw data for examples/medallion.
    GenerateSampleData(sample_data::SampleDataArgs),
    /// Serves tasks from RabbitMQ as a worker of the distributed mode, until SIGTERM drains it.
    Worker(worker_command::WorkerArgs),
    /// Serves ingest tasks from RabbitMQ (sources into bronze) in the distributed mode, until
    /// SIGTERM drains it: the one role that reaches the sources.
    IngestAgent(ingest_agent_command::IngestAgentArgs),
    /// Benchmarks of Strata's own machinery (`strata bench dispatch`).
    Bench(bench_command::BenchArgs),
    /// Serves the gRPC API: runs submitted to it execute on RabbitMQ workers; state survives
    /// restarts.
    Coordinator(coordinator_command::CoordinatorArgs),
    /// Submits a run to a coordinator (`--watch` follows it to the end).
    Submit(client_commands::SubmitArgs),
    /// Lists a coordinator's runs, newest first.
    Runs(client_commands::RunsArgs),
    /// Shows a run's state, node by node (`--node ID` adds its error and compiled SQL).
    RunStatus(client_commands::RunStatusArgs),
    /// Cancels a run: nothing more starts, nothing in flight is committed.
    Cancel(client_commands::CancelArgs),
    /// Shows process settings (`strata config show --role worker`) and where each came from.
    Config(settings_command::ConfigArgs),
}

/// Options shared by every command that reads a project.
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// The project folder (holding dbt_project.yml or strata_project.yml).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub project_dir: PathBuf,
    /// Variables as YAML or JSON, such as '{days: 7}'; they override the project's vars.
    #[arg(long, value_name = "YAML")]
    pub vars: Option<String>,
    /// Target name seen as `target.name` in Jinja.
    #[arg(long, default_value = "dev")]
    pub target: String,
}

/// Node selection, as in dbt.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Nodes to include: names, +name, name+, @name, tag:x, path:x, layer:x,
    /// config.materialized:x; space = union, comma = intersection.
    #[arg(long, short = 's', num_args = 1.., value_name = "SELECTOR")]
    pub select: Vec<String>,
    /// Nodes to leave out, with the same syntax.
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    pub exclude: Vec<String>,
}

/// `strata compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Folder for compiled SQL and the manifest, relative to the project folder.
    #[arg(long, default_value = "target", value_name = "DIR")]
    target_path: PathBuf,
}

/// `strata deps`.
#[derive(Debug, Args)]
pub struct DepsArgs {
    /// The project folder (holding dbt_project.yml and packages.yml).
    #[arg(long, default_value = ".", value_name = "DIR")]
    project_dir: PathBuf,
    /// The dbt Hub (or a mirror of its API) that resolves `package:` entries; default
    /// `STRATA_HUB_URL`, else https://hub.getdbt.com.
    #[arg(long, value_name = "URL")]
    hub_url: Option<String>,
}

/// Output formats of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per node, for people.
    Text,
    /// One JSON object per line.
    Json,
    /// The file of each node.
    Path,
}

/// `strata ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Only nodes of these kinds.
    #[arg(long, value_enum, num_args = 1..)]
    resource_type: Vec<ResourceTypeArg>,
    /// How to print each node.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
}

/// Resource types accepted by `--resource-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceTypeArg {
    /// Models.
    Model,
    /// Seeds.
    Seed,
    /// Tests.
    Test,
    /// Sources.
    Source,
    /// Snapshots.
    Snapshot,
}

/// Graph formats of `strata dag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DagFormat {
    /// A Mermaid flowchart (renders on GitHub and in many wikis).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

/// `strata dag`.
#[derive(Debug, Args)]
pub struct DagArgs {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: DagFormat,
    /// Include tests in the graph.
    #[arg(long)]
    tests: bool,
}

/// Runs a command with the given environment (passed in so tests can control it).
///
/// # Errors
/// Returns an error for failures outside the project (such as an unwritable target folder);
/// project problems are printed as diagnostics and give a failing exit code.
pub fn execute(cli: Cli, env: &BTreeMap<String, String>) -> anyhow::Result<ExitCode> {
    // Not locked for the whole command: the coordinator's and workers' log lines are written
    // to standard error from other threads (a held lock would block them forever).
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let color =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && !env.contains_key("NO_COLOR");
    let mut out = project_commands::Output {
        stdout: &mut stdout,
        stderr: &mut stderr,
        color,
    };
    match cli.command {
        Command::Compile(args) => project_commands::compile(&args, env, &mut out),
        Command::Deps(args) => project_commands::deps(&args, env, &mut out),
        Command::Ls(args) => project_commands::ls(&args, env, &mut out),
        Command::Dag(args) => project_commands::dag(&args, env, &mut out),
        Command::Run(args) => execute_commands::execute(&args, "run", env, &mut out),
        Command::Build(args) => execute_commands::execute(&args, "build", env, &mut out),
        Command::Seed(args) => execute_commands::execute(&args, "seed", env, &mut out),
        Command::Ingest(args) => execute_commands::execute(&args, "ingest", env, &mut out),
        Command::Test(args) => execute_commands::execute(&args, "test", env, &mut out),
        Command::Snapshot(args) => execute_commands::execute(&args, "snapshot", env, &mut out),
        Command::Show(args) => inspect_commands::show(&args, env, &mut out),
        Command::Debug(args) => inspect_commands::debug(&args, env, &mut out),
        Command::Worker(args) => worker_command::worker(&args, env, &mut out),
        Command::IngestAgent(args) => ingest_agent_command::ingest_agent(&args, env, &mut out),
        Command::Bench(args) => bench_command::bench(&args, env, &mut out),
        Command::Coordinator(args) => coordinator_command::coordinator(&args, env, &mut out),
        Command::Submit(args) => client_commands::submit(&args, env, &mut out),
        Command::Runs(args) => client_commands::runs(&args, env, &mut out),
        Command::RunStatus(args) => client_commands::run_status(&args, env, &mut out),
        Command::Cancel(args) => client_commands::cancel(&args, env, &mut out),
        Command::Config(args) => settings_command::config(&args, env, &mut out),
        Command::GenerateSampleData(args) => {
            let summary = sample_data::generate(&args)?;
            writeln!(out.stdout, "{summary}")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub use project_commands::{CommandOutcome, run_compile};
