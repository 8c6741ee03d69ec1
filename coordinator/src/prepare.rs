//! From "run this project like this" to a [`RunRequest`]: compile with the vars and selection,
//! find the incremental models whose tables exist (they compile again with `is_incremental()`
//! true), and settle the warehouse. The CLI's embedded and cluster runs and the coordinator's
//! `SubmitRun` all prepare runs here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_core::config::Materialization;
use strata_core::diagnostics::Diagnostics;
use strata_core::invocation::{CommandOutcome, compile_for_run};
use strata_core::manifest::{Manifest, Node, ResourceType};

use crate::run::RunRequest;
use crate::warehouse::Warehouse;

/// What a run is asked to do: everything needed to prepare it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The project folder.
    pub project_dir: PathBuf,
    /// `build`, `run`, `seed` or `test`.
    pub command: String,
    /// `--select` selectors.
    pub select: Vec<String>,
    /// `--exclude` selectors.
    pub exclude: Vec<String>,
    /// `--vars`, as YAML or JSON.
    pub vars: Option<String>,
    /// The profile target.
    pub target: String,
    /// The warehouse (default `<project>/warehouse`).
    pub warehouse: Option<String>,
    /// Nodes executing at the same time.
    pub threads: usize,
    /// Stop starting nodes after the first failure.
    pub fail_fast: bool,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Partitions of shuffles (0 or 1: none).
    pub shuffle_partitions: usize,
    /// Seconds a started task may stay silent before it is retried.
    pub task_timeout_secs: u64,
    /// Retries after transient failures (a model's `retries` wins).
    pub retries: u32,
    /// Variables sent with a submission for the project's `env_var()`.
    #[serde(default)]
    pub env: SubmittedEnv,
}

/// Environment variables a submission carries: its `Debug` output shows only their names, so
/// their values never reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubmittedEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SubmittedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl RunSpec {
    /// A `build` of the project with the default run settings and no shuffles (one process).
    pub fn new(project_dir: PathBuf) -> RunSpec {
        let defaults = strata_core::settings::RunDefaults::default();
        RunSpec {
            project_dir,
            command: String::from("build"),
            select: Vec::new(),
            exclude: Vec::new(),
            vars: None,
            target: String::from("dev"),
            warehouse: defaults.warehouse,
            threads: defaults.threads,
            fail_fast: false,
            full_refresh: false,
            shuffle_partitions: 0,
            task_timeout_secs: defaults.task_timeout_secs,
            retries: defaults.retries,
            env: SubmittedEnv::default(),
        }
    }
}

/// The node kinds a command executes, or `None` for an unknown command.
pub fn resource_types(command: &str) -> Option<BTreeSet<ResourceType>> {
    let types: &[ResourceType] = match command {
        "seed" => &[ResourceType::Seed],
        "test" => &[ResourceType::Test],
        "snapshot" => &[ResourceType::Snapshot],
        // Sources with an `ingest:` block land first (through the ingest agents).
        "build" => &[
            ResourceType::Source,
            ResourceType::Seed,
            ResourceType::Model,
            ResourceType::Snapshot,
            ResourceType::Test,
        ],
        "run" => &[ResourceType::Model],
        // Sources with an `ingest:` block, landed by the ingest agents.
        "ingest" => &[ResourceType::Source],
        _ => return None,
    };
    Some(types.iter().copied().collect())
}

/// Compiles a run's project again, as the run was prepared, for a node whose SQL asked the
/// warehouse about a table built during the run ([`Node::deferred_compile`]). dbt compiles
/// every node just before running it; Strata compiles once, and again only for such nodes,
/// when their parents are built.
#[derive(Clone)]
pub struct Recompiler {
    compile: Arc<dyn Fn() -> CommandOutcome + Send + Sync>,
    /// The nodes compiled again so far, by unique id: later nodes that read them (a view's
    /// SQL is inlined into its readers) see the new SQL.
    compiled: Arc<std::sync::Mutex<BTreeMap<String, Node>>>,
}

impl std::fmt::Debug for Recompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recompiler")
    }
}

impl Recompiler {
    /// A recompiler that compiles the project with `compile`.
    pub fn new(compile: impl Fn() -> CommandOutcome + Send + Sync + 'static) -> Recompiler {
        Recompiler {
            compile: Arc::new(compile),
            compiled: Arc::default(),
        }
    }

    /// The node `unique_id` as last compiled again, if it was.
    pub fn compiled(&self, unique_id: &str) -> Option<Node> {
        self.compiled
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(unique_id)
            .cloned()
    }

    /// The node `unique_id` compiled again against the warehouse as it is now.
    ///
    /// # Errors
    /// The compile's diagnostics, or why the node still cannot be compiled.
    pub fn node(&self, unique_id: &str) -> Result<Node, String> {
        let outcome = (self.compile)();
        let mut manifest = match outcome.manifest {
            Some(manifest) if !outcome.diagnostics.has_errors() => manifest,
            _ => return Err(outcome.diagnostics.render(false)),
        };
        let node = manifest
            .nodes
            .remove(unique_id)
            .ok_or_else(|| format!("'{unique_id}' is no longer in the project"))?;
        match &node.deferred_compile {
            None => {
                self.compiled
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(unique_id.to_string(), node.clone());
                Ok(node)
            }
            Some(reason) => Err(format!(
                "{reason}, and still is after the node's parents were built: ref() the table in the model so that it is built first, or build it before this run"
            )),
        }
    }
}

/// Why a run could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The project did not compile, a selector or a var is wrong: the diagnostics say where.
    #[error("the project has errors:\n{}", .0.render(false))]
    Project(Diagnostics),
    /// Anything else a person must fix (a missing folder, a bad warehouse, an unknown command).
    #[error("{0}")]
    Invalid(String),
}

/// A prepared run and the warnings of its compilation.
#[derive(Debug)]
pub struct Prepared {
    /// What the coordinator executes.
    pub request: RunRequest,
    /// Warnings (selectors that matched nothing, deprecated settings).
    pub diagnostics: Diagnostics,
}

/// Compiles and selects, then settles incremental models and the warehouse. The project
/// sees `env` with the variables of the spec's submission over it.
///
/// # Errors
/// [`PrepareError::Project`] with the diagnostics when the project, a selector or a var is
/// wrong; [`PrepareError::Invalid`] for a missing project folder, an unknown command or a
/// warehouse that cannot be reached.
pub async fn prepare(
    spec: &RunSpec,
    env: &BTreeMap<String, String>,
) -> Result<Prepared, PrepareError> {
    let resource_types = resource_types(&spec.command).ok_or_else(|| {
        PrepareError::Invalid(format!(
            "unknown command '{}': use build, run, seed, snapshot, test or ingest",
            spec.command
        ))
    })?;
    let mut env = env.clone();
    env.extend(spec.env.0.clone());
    let env = &env;
    let project_dir = spec.project_dir.canonicalize().map_err(|err| {
        PrepareError::Invalid(format!(
            "cannot read the project folder {}: {err}",
            spec.project_dir.display()
        ))
    })?;
    let warehouse = warehouse_for(spec.warehouse.as_deref(), env, &project_dir)
        .map_err(|err| PrepareError::Invalid(err.to_string()))?;
    let queries = Arc::new(
        strata_engine::compile_queries::EngineQueries::default().with_warehouse(warehouse.root()),
    );
    let compile = |incremental: &BTreeSet<String>| {
        compile_for_run(
            &project_dir,
            spec.vars.as_deref(),
            &spec.target,
            &spec.select,
            &spec.exclude,
            env,
            incremental,
            Some(queries.clone()),
        )
    };
    let (manifest, selected, diagnostics) = compiled(compile(&BTreeSet::new()))?;
    // Incremental models whose table exists render with is_incremental() true: compile again.
    let mut incremental_ids = BTreeSet::new();
    let mut incremental_names = BTreeSet::new();
    for node in manifest.nodes.values() {
        let Some(relation) = &node.relation else {
            continue;
        };
        // A snapshot folds into its table whenever it exists (`--full-refresh` does not
        // drop history, as in dbt); an incremental model unless fully refreshed.
        let folds_in = match node.config.materialized {
            Materialization::Snapshot => true,
            Materialization::Incremental => {
                !spec.full_refresh || node.config.full_refresh == Some(false)
            }
            _ => false,
        };
        if !folds_in {
            continue;
        }
        let table_uri = warehouse.table_uri(relation);
        // A warehouse that cannot be listed is an error, not "no table": treating it as
        // absent would rebuild an incremental model from scratch.
        let exists = strata_storage::delta_table_exists(&table_uri)
            .await
            .map_err(|err| {
                PrepareError::Invalid(format!(
                    "cannot tell whether {table_uri} holds a table: {err}"
                ))
            })?;
        if exists {
            incremental_ids.insert(node.unique_id.clone());
            if node.config.materialized == Materialization::Incremental {
                incremental_names.insert(node.name.clone());
            }
        }
    }
    let (manifest, selected, diagnostics) = if incremental_names.is_empty() {
        (manifest, selected, diagnostics)
    } else {
        compiled(compile(&incremental_names))?
    };
    let recompile = manifest
        .nodes
        .values()
        .any(|node| node.deferred_compile.is_some())
        .then(|| {
            let (project_dir, spec, env) = (project_dir.clone(), spec.clone(), env.clone());
            Recompiler::new(move || {
                compile_for_run(
                    &project_dir,
                    spec.vars.as_deref(),
                    &spec.target,
                    &[],
                    &[],
                    &env,
                    &incremental_names,
                    Some(queries.clone()),
                )
            })
        });
    Ok(Prepared {
        request: RunRequest {
            manifest: Arc::new(manifest),
            selected,
            resource_types,
            project_dir,
            warehouse,
            threads: spec.threads.max(1),
            fail_fast: spec.fail_fast,
            retries: spec.retries,
            retry_backoff: Duration::from_millis(500),
            incremental_models: incremental_ids,
            shuffle_partitions: spec.shuffle_partitions,
            task_timeout: Duration::from_secs(spec.task_timeout_secs.max(1)),
            full_refresh: spec.full_refresh,
            recompile,
        },
        diagnostics,
    })
}

/// The warehouse given, else `STRATA_WAREHOUSE`, else `<project>/warehouse`.
///
/// # Errors
/// When the location is not a usable warehouse.
pub fn warehouse_for(
    location: Option<&str>,
    env: &BTreeMap<String, String>,
    project_dir: &std::path::Path,
) -> Result<Warehouse, crate::warehouse::WarehouseError> {
    let location = location
        .map(str::to_string)
        .or_else(|| env.get("STRATA_WAREHOUSE").cloned())
        .unwrap_or_else(|| String::from("warehouse"));
    Warehouse::parse(&location, project_dir)
}

fn compiled(
    outcome: CommandOutcome,
) -> Result<(Manifest, BTreeSet<String>, Diagnostics), PrepareError> {
    match outcome.manifest {
        Some(manifest) if !outcome.diagnostics.has_errors() => {
            Ok((manifest, outcome.selected, outcome.diagnostics))
        }
        _ => Err(PrepareError::Project(outcome.diagnostics)),
    }
}
