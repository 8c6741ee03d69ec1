//! Turning a node into tasks: its inputs (tables pinned at a version, sources, views inlined),
//! its output, and how it is split — one task, one per group of input files for a row-wise
//! model, or map and reduce stages for a shuffled one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use strata_core::config::Materialization;
use strata_core::export::{ExportFormat, ExportSpec};
use strata_core::manifest::{Node, ResourceType};
use strata_core::queue::RESULT_QUEUE;
use strata_proto::v1::{
    DeltaInput, Export, FileFormat, FileInput, Incremental, Ingest, Snapshot, Task, TaskInput,
    TaskKind, TaskOutput, task_input,
};

use crate::commit;
use crate::run::RunRequest;

/// A node's tasks: the first stage's, then those of the stages that follow it.
pub(crate) type Planned = (Vec<Task>, VecDeque<Vec<Task>>);

/// Why a node cannot be turned into tasks; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A model, seed or source the node reads has no relation (a compiler bug).
    #[error("'{node}' has no relation")]
    NoRelation {
        /// The node's name.
        node: String,
    },
    /// A source has no location to read.
    #[error(
        "source '{source_name}.{table}' has no location and its table is not in the warehouse; set meta.external_location in {file}, or load the table first (a seed or model with the same schema and name)"
    )]
    NoLocation {
        /// The source.
        source_name: String,
        /// The table.
        table: String,
        /// The property file declaring it.
        file: String,
    },
    /// A table the node reads does not exist yet.
    #[error(
        "'{node}' has not been built yet ({table_uri} has no table); run `{command} --select {node}` first"
    )]
    NotBuilt {
        /// The node whose table is missing.
        node: String,
        /// Where its table should be.
        table_uri: String,
        /// `strata seed` or `strata run`.
        command: &'static str,
    },
    /// An incremental model asks for a strategy Strata does not have.
    #[error(
        "'{node}' has incremental_strategy '{strategy}', which Strata does not have; use append, merge, delete+insert or insert_overwrite"
    )]
    Strategy {
        /// The model.
        node: String,
        /// The strategy as configured.
        strategy: String,
    },
    /// A node compiled before its parents were built could not be compiled again.
    #[error("'{node}' could not be compiled again now that its parents are built: {message}")]
    Recompile {
        /// The node.
        node: String,
        /// Why.
        message: String,
    },
    /// A table the node reads cannot be opened.
    #[error(transparent)]
    Table(#[from] Box<commit::CommitError>),
    /// A local path that does not exist or cannot be made absolute.
    #[error("{what} {path} does not exist or cannot be resolved")]
    Path {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: String,
    },
}

/// Builds the node's tasks: one, or one per group of input files when the model is
/// row-wise over a single multi-file source.
pub(crate) async fn build_tasks(
    request: &RunRequest,
    run_id: &str,
    node: &Node,
    versions: &mut HashMap<String, i64>,
    counter: &mut u64,
) -> Result<Planned, PlanError> {
    let tasks = split_tasks(request, run_id, node, versions, counter).await?;
    let shuffle_candidate = request.shuffle_partitions > 1
        && tasks.len() == 1
        && node.resource_type == ResourceType::Model
        && node.config.materialized == Materialization::Table
        && tasks[0].incremental.is_none()
        && tasks[0].exports.is_empty();
    if shuffle_candidate {
        let task = &tasks[0];
        // A plan that cannot be staged (or fails to plan) runs as one task, which then
        // reports any real error.
        let engine = strata_engine::EngineConfig {
            truncating_division: task.truncating_division,
            ..strata_engine::EngineConfig::default()
        };
        if let Ok(Some(staged)) = strata_engine::plan_shuffle(
            &engine,
            &task.inputs,
            &task.sql,
            request.shuffle_partitions,
        )
        .await
        {
            return Ok(stage_tasks(task, &staged));
        }
    }
    Ok((tasks, VecDeque::new()))
}

/// The node's tasks without shuffles: one, or one per group of input files when the model
/// is row-wise over a single multi-file source.
async fn split_tasks(
    request: &RunRequest,
    run_id: &str,
    node: &Node,
    versions: &mut HashMap<String, i64>,
    counter: &mut u64,
) -> Result<Vec<Task>, PlanError> {
    let task = build_task(request, run_id, node, versions, counter).await?;
    let aligned_candidate = node.resource_type == ResourceType::Model
        && node.config.materialized == Materialization::Table
        && task.incremental.is_none()
        && task.exports.is_empty()
        && task.inputs.len() == 1;
    if !aligned_candidate {
        return Ok(vec![task]);
    }
    let input = &task.inputs[0];
    let Some(task_input::Source::Files(files)) = &input.source else {
        return Ok(vec![task]);
    };
    let format = match FileFormat::try_from(files.format) {
        Ok(FileFormat::Parquet) => "parquet",
        Ok(FileFormat::Csv) => "csv",
        Ok(FileFormat::Json) => "json",
        _ => return Ok(vec![task]),
    };
    // A location that cannot be listed runs as one task, which reports the real error.
    let listed = strata_storage::list_files(&files.location)
        .await
        .unwrap_or_default();
    if listed.len() < 2
        || !crate::partitioning::row_wise_over(
            &task.sql,
            &input.schema,
            &input.name,
            &listed[0],
            format,
        )
        .await
    {
        return Ok(vec![task]);
    }
    let groups = crate::partitioning::group_files(&listed, request.threads.max(2));
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(index, group)| {
            let mut part = task.clone();
            part.task_id = format!("{}-p{index:03}", task.task_id);
            if let Some(output) = &mut part.output {
                output.file_prefix = format!("{}-{}", part.run_id, part.task_id);
            }
            if let Some(task_input::Source::Files(files)) = &mut part.inputs[0].source {
                files.files = group;
            }
            part
        })
        .collect())
}

/// The node's one task: its SQL (or a seed's CSV), its inputs pinned at their versions, its
/// output table.
async fn build_task(
    request: &RunRequest,
    run_id: &str,
    node: &Node,
    versions: &mut HashMap<String, i64>,
    counter: &mut u64,
) -> Result<Task, PlanError> {
    *counter += 1;
    let task_id = format!("{}-{counter:05}", node.name);
    if node.resource_type == ResourceType::Source {
        return ingest_task(request, run_id, node, task_id);
    }
    let mut inputs = Vec::new();
    let (kind, sql) = match node.resource_type {
        ResourceType::Seed => {
            let relation = node
                .relation
                .as_ref()
                .ok_or_else(|| PlanError::NoRelation {
                    node: node.name.clone(),
                })?;
            let path = request.project_dir.join(&node.original_file_path);
            let location = file_url(&path, "seed file")?;
            inputs.push(TaskInput {
                schema: relation.schema.clone(),
                name: relation.identifier.clone(),
                source: Some(task_input::Source::Files(FileInput {
                    location,
                    format: FileFormat::Csv as i32,
                    column_types: node.config.column_types.clone().into_iter().collect(),
                    files: Vec::new(),
                })),
            });
            (TaskKind::Seed, format!("select * from {relation}"))
        }
        ResourceType::Test => (
            TaskKind::Test,
            node.compiled_code.clone().unwrap_or_default(),
        ),
        _ => (
            TaskKind::Model,
            node.compiled_code.clone().unwrap_or_default(),
        ),
    };
    let mut incremental = None;
    if node.resource_type != ResourceType::Seed {
        let mut seen = BTreeSet::new();
        for parent in &node.depends_on {
            add_inputs(request, parent, versions, &mut inputs, &mut seen).await?;
        }
        if request.incremental_models.contains(&node.unique_id)
            && let Some(relation) = &node.relation
        {
            // `{{ this }}`: the model's (or snapshot's) own table at its current version (the
            // run was planned knowing it exists), even though the node has not run yet.
            add_inputs(request, &node.unique_id, versions, &mut inputs, &mut seen).await?;
            // A snapshot's task says how it folds in (below), not as an incremental model.
            if node.resource_type != ResourceType::Snapshot {
                incremental = Some(incremental_task(node, relation)?);
            }
        }
    }
    let snapshot = node.snapshot.as_ref().and_then(|spec| {
        let relation = node.relation.as_ref()?;
        Some(snapshot_task(
            spec,
            relation,
            request.incremental_models.contains(&node.unique_id),
        ))
    });
    let output = match (node.resource_type, &node.relation) {
        (ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot, Some(relation)) => {
            Some(TaskOutput {
                table_uri: request.warehouse.table_uri(relation),
                file_prefix: format!("{run_id}-{task_id}"),
                partition_by: node.config.partition_by.clone(),
            })
        }
        _ => None,
    };
    // One task writes each file (compile lists the exports of unpartitioned models only).
    let exports = node
        .exports
        .iter()
        .map(|spec| export_of(request, spec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Task {
        run_id: run_id.to_string(),
        task_id,
        kind: kind as i32,
        node_unique_id: node.unique_id.clone(),
        sql,
        inputs,
        output,
        incremental,
        reply_to: format!("{RESULT_QUEUE}.{run_id}"),
        truncating_division: node.config.truncating_division(),
        snapshot,
        exports,
        ..Task::default()
    })
}

/// A file a model's rows are also written to (`materialized: external`, a post_hook's
/// `COPY`), at an absolute URL.
fn export_of(request: &RunRequest, spec: &ExportSpec) -> Result<Export, PlanError> {
    let location = if spec.location.contains("://") {
        spec.location.clone()
    } else {
        // Relative to the project's folder; the folders on the way are made when written.
        file_url(
            &request.project_dir.join(&spec.location),
            "external location",
        )?
    };
    let format = match spec.format {
        ExportFormat::Parquet => FileFormat::Parquet,
        ExportFormat::Csv => FileFormat::Csv,
        ExportFormat::Json => FileFormat::Json,
    };
    Ok(Export {
        location,
        format: format as i32,
        delimiter: spec
            .delimiter
            .map(|byte| char::from(byte).to_string())
            .unwrap_or_default(),
    })
}

/// A source's one task: land it into its bronze table (an ingest agent's work).
fn ingest_task(
    request: &RunRequest,
    run_id: &str,
    node: &Node,
    task_id: String,
) -> Result<Task, PlanError> {
    let no_relation = || PlanError::NoRelation {
        node: node.name.clone(),
    };
    let relation = node.relation.as_ref().ok_or_else(no_relation)?;
    let info = node.source.as_ref().ok_or_else(no_relation)?;
    let declaration = info.ingest.as_ref().ok_or_else(no_relation)?;
    Ok(Task {
        run_id: run_id.to_string(),
        task_id,
        kind: TaskKind::Ingest as i32,
        node_unique_id: node.unique_id.clone(),
        reply_to: format!("{RESULT_QUEUE}.{run_id}"),
        ingest: Some(Ingest {
            source_name: format!("{}.{}", info.source_name, node.name),
            table_uri: request.warehouse.table_uri(relation),
            spec_json: serde_json::Value::Object(declaration.spec.clone()).to_string(),
            origin: declaration.origin.clone(),
            project_dir: request.project_dir.display().to_string(),
            full_refresh: request.full_refresh,
        }),
        ..Task::default()
    })
}

/// How an incremental model folds into its existing table.
fn incremental_task(
    node: &Node,
    relation: &strata_core::jinja::Relation,
) -> Result<Incremental, PlanError> {
    if let Some(strategy) = node
        .config
        .extra
        .get(strata_core::config::UNSUPPORTED_STRATEGY)
    {
        return Err(PlanError::Strategy {
            node: node.name.clone(),
            strategy: strategy.as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(Incremental {
        // As dbt: merge when a unique key is set, append otherwise.
        strategy: match node.config.incremental_strategy {
            Some(strategy) => strategy_name(strategy).to_string(),
            None if node.config.unique_key.is_empty() => String::from("append"),
            None => String::from("merge"),
        },
        unique_key: node.config.unique_key.clone(),
        partition_by: node.config.partition_by.clone(),
        on_schema_change: serde_json::to_value(node.config.on_schema_change)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from("ignore")),
        this_schema: relation.schema.clone(),
        this_name: relation.identifier.clone(),
    })
}

/// What a snapshot's task needs to know: its settings, whether its table exists, and the
/// snapshot time (now, fixed here so that a retry records the same).
fn snapshot_task(
    spec: &strata_core::snapshots::SnapshotSpec,
    relation: &strata_core::jinja::Relation,
    existing: bool,
) -> Snapshot {
    use strata_core::snapshots::{CheckCols, HardDeletes, SnapshotStrategy};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Snapshot {
        strategy: match spec.strategy {
            SnapshotStrategy::Timestamp => "timestamp",
            SnapshotStrategy::Check => "check",
        }
        .to_string(),
        unique_key: spec.unique_key.clone(),
        updated_at: spec.updated_at.clone().unwrap_or_default(),
        check_cols: match &spec.check_cols {
            Some(CheckCols::Columns(columns)) => columns.clone(),
            _ => Vec::new(),
        },
        check_all: spec.check_cols == Some(CheckCols::All),
        hard_deletes: match spec.hard_deletes {
            HardDeletes::Ignore => "ignore",
            HardDeletes::Invalidate => "invalidate",
            HardDeletes::NewRecord => "new_record",
        }
        .to_string(),
        existing,
        this_schema: relation.schema.clone(),
        this_name: relation.identifier.clone(),
        snapshot_time_micros: now,
        column_names: spec.column_names.clone().into_iter().collect(),
        valid_to_current: spec.valid_to_current.clone().unwrap_or_default(),
    }
}

/// Adds the relation of `id` to the inputs, and for views and ephemeral models the
/// relations they read, dependencies first.
fn add_inputs<'a>(
    request: &'a RunRequest,
    id: &'a str,
    versions: &'a mut HashMap<String, i64>,
    inputs: &'a mut Vec<TaskInput>,
    seen: &'a mut BTreeSet<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PlanError>> + Send + 'a>> {
    Box::pin(async move {
        if !seen.insert(id.to_string()) {
            return Ok(());
        }
        // A view compiled again during the run is read with its new SQL.
        let Some(node) = request.node(id) else {
            return Ok(());
        };
        let materialized = node.config.materialized;
        if matches!(
            materialized,
            Materialization::View | Materialization::Ephemeral
        ) && node.resource_type == ResourceType::Model
        {
            for parent in &node.depends_on {
                add_inputs(request, parent, versions, inputs, seen).await?;
            }
            if materialized == Materialization::Ephemeral {
                return Ok(());
            }
        }
        let relation = node
            .relation
            .as_ref()
            .ok_or_else(|| PlanError::NoRelation {
                node: node.name.clone(),
            })?;
        let source = match node.resource_type {
            ResourceType::Source => {
                let no_location = || PlanError::NoLocation {
                    source_name: node
                        .source
                        .as_ref()
                        .map(|info| info.source_name.clone())
                        .unwrap_or_default(),
                    table: node.name.clone(),
                    file: node.original_file_path.clone(),
                };
                let info = node.source.as_ref().ok_or_else(no_location)?;
                let Some(location) = info.location.as_deref() else {
                    // No files of its own: the source is a table of the warehouse (a bronze
                    // table when it is landed, pinned at the version this run landed).
                    let table_uri = request.warehouse.table_uri(relation);
                    let version = match versions.get(id) {
                        Some(version) => *version,
                        None if info.ingest.is_some() => current_version(&table_uri)
                            .await?
                            .ok_or_else(|| PlanError::NotBuilt {
                                node: format!("source:{}.{}", info.source_name, node.name),
                                table_uri: table_uri.clone(),
                                command: "strata ingest",
                            })?,
                        None => current_version(&table_uri).await?.ok_or_else(no_location)?,
                    };
                    inputs.push(TaskInput {
                        schema: relation.schema.clone(),
                        name: relation.identifier.clone(),
                        source: Some(task_input::Source::Delta(DeltaInput { table_uri, version })),
                    });
                    return Ok(());
                };
                let format = match info.format.as_deref() {
                    Some("parquet") => FileFormat::Parquet,
                    Some("csv") => FileFormat::Csv,
                    Some("json") => FileFormat::Json,
                    _ => FileFormat::Unspecified,
                };
                task_input::Source::Files(FileInput {
                    location: resolve_location(&request.project_dir, location)?,
                    format: format as i32,
                    column_types: HashMap::new(),
                    files: Vec::new(),
                })
            }
            ResourceType::Model if materialized == Materialization::View => {
                task_input::Source::ViewSql(node.compiled_code.clone().unwrap_or_default())
            }
            _ => {
                let table_uri = request.warehouse.table_uri(relation);
                let version = match versions.get(id) {
                    Some(version) => *version,
                    None => {
                        let version = current_version(&table_uri).await?.ok_or_else(|| {
                            PlanError::NotBuilt {
                                node: node.name.clone(),
                                table_uri: table_uri.clone(),
                                command: if node.resource_type == ResourceType::Seed {
                                    "strata seed"
                                } else {
                                    "strata run"
                                },
                            }
                        })?;
                        versions.insert(id.to_string(), version);
                        version
                    }
                };
                task_input::Source::Delta(DeltaInput { table_uri, version })
            }
        };
        inputs.push(TaskInput {
            schema: relation.schema.clone(),
            name: relation.identifier.clone(),
            source: Some(source),
        });
        Ok(())
    })
}

/// The current version of the Delta table at `table_uri`; `None` when there is none.
async fn current_version(table_uri: &str) -> Result<Option<i64>, PlanError> {
    let table = commit::open_table(table_uri).await.map_err(Box::new)?;
    Ok(table
        .and_then(|table| table.version())
        .and_then(|version| i64::try_from(version).ok()))
}

/// The inputs a query over node `id` needs: its relation (and, for views and ephemeral
/// models, what they read), tables pinned at their current version.
///
/// # Errors
/// Returns a message when a table has not been built or a source has no location.
pub async fn inputs_for(request: &RunRequest, id: &str) -> Result<Vec<TaskInput>, PlanError> {
    let mut inputs = Vec::new();
    let mut versions = HashMap::new();
    let mut seen = BTreeSet::new();
    add_inputs(request, id, &mut versions, &mut inputs, &mut seen).await?;
    Ok(inputs)
}

fn strategy_name(strategy: strata_core::config::IncrementalStrategy) -> &'static str {
    use strata_core::config::IncrementalStrategy;
    match strategy {
        IncrementalStrategy::Append => "append",
        IncrementalStrategy::Merge => "merge",
        IncrementalStrategy::DeleteInsert => "delete+insert",
        IncrementalStrategy::InsertOverwrite => "insert_overwrite",
    }
}

/// The tasks of a shuffled model from its base task: each map stage's tasks (one per input
/// partition), then the reduce tasks (one per output partition) that write the table.
fn stage_tasks(base: &Task, staged: &strata_engine::stages::StagedPlan) -> Planned {
    let mut stages: VecDeque<Vec<Task>> = VecDeque::new();
    for (stage, (plan, inputs)) in staged.map_stages.iter().enumerate() {
        let stage = u32::try_from(stage).unwrap_or(u32::MAX);
        stages.push_back(
            (0..*inputs)
                .map(|map| Task {
                    task_id: format!("{}-s{stage}-m{map:03}", base.task_id),
                    kind: TaskKind::ShuffleMap as i32,
                    plan: plan.clone(),
                    partition: map,
                    stage,
                    output: None,
                    ..base.clone()
                })
                .collect(),
        );
    }
    let (plan, partitions) = &staged.final_stage;
    stages.push_back(
        (0..*partitions)
            .map(|partition| {
                let task_id = format!("{}-r{partition:03}", base.task_id);
                let output = base.output.clone().map(|output| TaskOutput {
                    file_prefix: format!("{}-{task_id}", base.run_id),
                    ..output
                });
                Task {
                    task_id,
                    plan: plan.clone(),
                    partition,
                    output,
                    ..base.clone()
                }
            })
            .collect(),
    );
    let first = stages.pop_front().unwrap_or_default();
    (first, stages)
}

/// A local path as a file:// URL, made absolute from the current folder; `what` names the path
/// in the error.
fn file_url(path: &std::path::Path, what: &'static str) -> Result<String, PlanError> {
    let unresolved = || PlanError::Path {
        what,
        path: path.display().to_string(),
    };
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|_| unresolved())?
            .join(path)
    };
    url::Url::from_file_path(&absolute)
        .map(|url| url.to_string())
        .map_err(|()| unresolved())
}

/// Turns a source location into an absolute URL: URLs stay, paths are taken relative to the
/// project folder.
fn resolve_location(project_dir: &std::path::Path, location: &str) -> Result<String, PlanError> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let path = std::path::Path::new(location);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        project_dir.join(path)
    };
    let absolute = match absolute.canonicalize() {
        Ok(canonical) => canonical,
        // A glob does not exist as a path; canonicalize its folder instead.
        Err(_) => match (
            absolute
                .parent()
                .and_then(|parent| parent.canonicalize().ok()),
            absolute.file_name(),
        ) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => {
                return Err(PlanError::Path {
                    what: "source location",
                    path: absolute.display().to_string(),
                });
            }
        },
    };
    // A plain absolute path, not a file:// URL: DataFusion expands globs only in paths.
    Ok(absolute.display().to_string())
}
