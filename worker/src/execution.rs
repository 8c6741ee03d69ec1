//! Executing one task with DataFusion: a session under a memory-pool limit, the task's inputs
//! registered as tables, the SQL run, and the output streamed into Parquet files of the
//! model's Delta table (not committed: only the coordinator commits).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormat as DataFusionFileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use strata_proto::v1::{
    FailureClass, FileFormat, ShuffleLocation, Task, TaskInput, TaskKind, TaskOutput, TaskResult,
    WrittenFile, task_input,
};

use crate::distinct_rewrite::CountWithDistinctToGroupBy;
use crate::error::TaskError;
use crate::first_row::{FirstRowPerKeyRule, StrataQueryPlanner};

/// Settings of a worker's execution engine.
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// Memory pool limit per task; a query that needs more spills, or fails with a clear
    /// error instead of taking the process down.
    pub memory_limit_bytes: usize,
    /// DataFusion's target partitions (parallelism within a task).
    pub target_partitions: usize,
    /// Folder for spill files; the system temporary folder when `None`.
    pub spill_dir: Option<PathBuf>,
    /// Target size of the Parquet files a task writes.
    pub target_file_size: u64,
    /// Where shuffle map outputs go and the Flight address they are served at; `None` for a
    /// worker without a Flight server (embedded mode never shuffles).
    pub shuffle: Option<ShuffleService>,
    /// How long a shuffle fetch waits for the worker holding the output to answer.
    pub fetch_timeout: std::time::Duration,
}

/// A worker's shuffle outputs and the address its Flight server advertises.
#[derive(Debug, Clone)]
pub struct ShuffleService {
    /// The map outputs on local disk.
    pub store: Arc<crate::shuffle::ShuffleStore>,
    /// `host:port` other workers fetch from.
    pub address: String,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, usize::from),
            spill_dir: None,
            target_file_size: 128 << 20,
            shuffle: None,
            fetch_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Builds a session for one task, under the configured memory limit, with Strata's
/// optimizer rules for `count` next to `count(distinct …)` and for `row_number() = 1`
/// deduplication (and the planner for the latter's operator).
///
/// # Errors
/// Returns an internal error when the runtime cannot be built.
pub fn session(
    config: &ExecutionConfig,
) -> Result<(SessionContext, Arc<dyn MemoryPool>), TaskError> {
    strata_storage::install();
    let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(config.memory_limit_bytes));
    let mut runtime = RuntimeEnvBuilder::new().with_memory_pool(pool.clone());
    if let Some(dir) = &config.spill_dir {
        runtime = runtime.with_temp_file_path(dir.clone());
    }
    let runtime = runtime.build_arc().map_err(TaskError::from)?;
    let mut session_config =
        SessionConfig::new().with_target_partitions(config.target_partitions.max(1));
    // Plain Utf8 strings: Delta has no string-view type, and DuckDB comparisons stay simple.
    session_config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    session_config
        .options_mut()
        .sql_parser
        .map_string_types_to_utf8view = false;
    let state = SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(CountWithDistinctToGroupBy))
        .with_optimizer_rule(Arc::new(FirstRowPerKeyRule))
        .with_query_planner(Arc::new(StrataQueryPlanner))
        .build();
    Ok((SessionContext::new_with_state(state), pool))
}

fn ensure_schema(ctx: &SessionContext, schema: &str) -> Result<(), TaskError> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| TaskError::internal("the default catalog is missing"))?;
    if catalog.schema(schema).is_none() {
        catalog
            .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
            .map_err(TaskError::from)?;
    }
    Ok(())
}

/// Registers every input of a task under `schema.name`, in order (a view may read the inputs
/// registered before it).
///
/// # Errors
/// Returns a user error for a missing or unreadable location, a transient one for I/O.
pub async fn register_inputs(ctx: &SessionContext, inputs: &[TaskInput]) -> Result<(), TaskError> {
    register_inputs_with(ctx, inputs, false).await.map(|_| ())
}

/// Plans a model's SQL for a shuffle over `partitions` partitions, cut into stages (see
/// [`crate::shuffle`]). `None` when the plan needs no shuffle, or reads something a plan
/// cannot carry to another process (a Hive-partitioned or empty Delta input).
///
/// # Errors
/// Returns the classified error of registering the inputs or planning the SQL.
pub async fn plan_shuffle(
    config: &ExecutionConfig,
    inputs: &[TaskInput],
    sql: &str,
    partitions: usize,
) -> Result<Option<crate::shuffle::StagedPlan>, TaskError> {
    let config = ExecutionConfig {
        target_partitions: partitions.max(1),
        ..config.clone()
    };
    let (ctx, _pool) = session(&config)?;
    // Each map task executes one input partition: a round-robin repartition inside a stage
    // would make every task read everything, and byte ranges of split files do not survive
    // datafusion-proto (each task would read whole files): whole files per partition.
    for setting in [
        "set datafusion.optimizer.enable_round_robin_repartition = false",
        "set datafusion.optimizer.repartition_file_scans = false",
    ] {
        ctx.sql(setting).await?.collect().await?;
    }
    if !register_inputs_with(&ctx, inputs, true).await? {
        return Ok(None);
    }
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    Ok(crate::shuffle::plan_stages(plan, &ctx.task_ctx())?)
}

/// Registers the inputs; with `delta_as_files`, an upstream Delta table is registered as the
/// Parquet files of its pinned version (a scan datafusion-proto can serialize). Returns false
/// when such a table cannot be read that way (Hive-partitioned or without files).
async fn register_inputs_with(
    ctx: &SessionContext,
    inputs: &[TaskInput],
    delta_as_files: bool,
) -> Result<bool, TaskError> {
    for input in inputs {
        ensure_schema(ctx, &input.schema)?;
        let reference = TableReference::partial(input.schema.clone(), input.name.clone());
        let provider = match &input.source {
            Some(task_input::Source::Files(files)) => {
                let format = FileFormat::try_from(files.format).unwrap_or(FileFormat::Unspecified);
                let table = listing_table(ctx, &files.location, format, &files.files)
                    .await
                    .map_err(|err| {
                        err.context(format!(
                            "cannot read {}.{} from {}",
                            input.schema, input.name, files.location
                        ))
                    })?;
                if files.column_types.is_empty() {
                    table
                } else {
                    // A seed with column_types: register the raw CSV, then a casting view.
                    let raw = format!("__raw_{}", input.name);
                    ctx.register_table(
                        TableReference::partial(input.schema.clone(), raw.clone()),
                        table,
                    )
                    .map_err(TaskError::from)?;
                    let columns: Vec<String> = ctx
                        .table(TableReference::partial(input.schema.clone(), raw.clone()))
                        .await
                        .map_err(TaskError::from)?
                        .schema()
                        .fields()
                        .iter()
                        .map(|field| {
                            let name = field.name();
                            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
                            match files
                                .column_types
                                .iter()
                                .find(|(column, _)| column.eq_ignore_ascii_case(name))
                            {
                                Some((_, data_type)) => {
                                    format!("cast({quoted} as {data_type}) as {quoted}")
                                }
                                None => quoted,
                            }
                        })
                        .collect();
                    let sql = format!(
                        "select {} from \"{}\".\"{raw}\"",
                        columns.join(", "),
                        input.schema
                    );
                    ctx.sql(&sql).await.map_err(TaskError::from)?.into_view()
                }
            }
            Some(task_input::Source::Delta(delta)) => {
                let url = url::Url::parse(&delta.table_uri).map_err(|err| {
                    TaskError::user(format!("invalid table location {}: {err}", delta.table_uri))
                })?;
                let table = deltalake::DeltaTableBuilder::from_url(url)
                    .map_err(TaskError::from)?
                    .with_version(u64::try_from(delta.version).map_err(|_| {
                        TaskError::internal(format!("invalid table version {}", delta.version))
                    })?)
                    .load()
                    .await
                    .map_err(|err| {
                        TaskError::from(err)
                            .context(format!("cannot open {}.{}", input.schema, input.name))
                    })?;
                if delta_as_files {
                    let snapshot = table.snapshot().map_err(TaskError::from)?;
                    let files: Vec<String> =
                        table.get_file_uris().map_err(TaskError::from)?.collect();
                    if !snapshot.metadata().partition_columns().is_empty() || files.is_empty() {
                        return Ok(false);
                    }
                    let schema = snapshot.snapshot().arrow_schema();
                    strata_storage::register(ctx, &delta.table_uri)?;
                    let urls = files
                        .iter()
                        .map(|file| strata_storage::listing_url(file))
                        .collect::<Result<Vec<_>, _>>()?;
                    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                        .with_file_extension("");
                    let config = ListingTableConfig::new_with_multi_paths(urls)
                        .with_listing_options(options)
                        .with_schema(schema);
                    Arc::new(ListingTable::try_new(config).map_err(TaskError::from)?)
                } else {
                    table
                        .update_datafusion_session(&ctx.state())
                        .map_err(TaskError::from)?;
                    table.table_provider().await.map_err(TaskError::from)?
                }
            }
            Some(task_input::Source::ViewSql(sql)) => ctx
                .sql(sql)
                .await
                .map_err(|err| {
                    TaskError::from(err).context(format!("in view {}.{}", input.schema, input.name))
                })?
                .into_view(),
            None => {
                return Err(TaskError::internal(format!(
                    "input {}.{} has no source",
                    input.schema, input.name
                )));
            }
        };
        ctx.register_table(reference, provider)
            .map_err(TaskError::from)?;
    }
    Ok(true)
}

async fn listing_table(
    ctx: &SessionContext,
    location: &str,
    format: FileFormat,
    only: &[String],
) -> Result<Arc<ListingTable>, TaskError> {
    let (file_format, extension): (Arc<dyn DataFusionFileFormat>, &str) = match format {
        FileFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
        FileFormat::Csv => (Arc::new(CsvFormat::default().with_has_header(true)), ""),
        FileFormat::Json => (Arc::new(JsonFormat::default()), ""),
        FileFormat::Unspecified => {
            return Err(TaskError::user(format!("no file format for {location}")));
        }
    };
    strata_storage::register(ctx, location)?;
    let urls: Vec<ListingTableUrl> = if only.is_empty() {
        vec![strata_storage::listing_url(location)?]
    } else {
        only.iter()
            .map(|file| strata_storage::listing_url(file))
            .collect::<Result<_, _>>()?
    };
    let extension =
        if urls.iter().any(|url| url.as_str().ends_with(extension)) || location.contains('*') {
            ""
        } else {
            extension
        };
    let options = ListingOptions::new(file_format).with_file_extension(extension);
    let schema = options
        .infer_schema(&ctx.state(), &urls[0])
        .await
        .map_err(TaskError::from)?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(
        ListingTable::try_new(config).map_err(TaskError::from)?,
    ))
}

/// Maps types Delta cannot store onto the closest type it can: nanosecond timestamps to
/// microseconds, string and binary views to plain arrays, unsigned integers to wider signed
/// ones, the null type to strings.
pub fn delta_compatible(schema: &Schema) -> SchemaRef {
    fn map(data_type: &DataType) -> DataType {
        match data_type {
            DataType::Timestamp(_, zone) => {
                DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            }
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            DataType::UInt8 => DataType::Int16,
            DataType::UInt16 => DataType::Int32,
            DataType::UInt32 | DataType::UInt64 => DataType::Int64,
            DataType::Float16 => DataType::Float32,
            DataType::Null => DataType::Utf8,
            DataType::Date64 => DataType::Date32,
            DataType::Time32(_) | DataType::Time64(_) => DataType::Utf8,
            DataType::Dictionary(_, value) => map(value),
            other => other.clone(),
        }
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| Field::new(field.name(), map(field.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, TaskError> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast(column, field.data_type())
                    .map_err(|err| TaskError::user(format!("column {}: {err}", field.name())))
            }
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|err| TaskError::internal(err.to_string()))
}

/// Runs a query over registered inputs and returns its rows (for `strata show`).
///
/// # Errors
/// Returns the classified error of registration or execution.
pub async fn query(
    config: &ExecutionConfig,
    inputs: &[TaskInput],
    sql: &str,
) -> Result<Vec<RecordBatch>, TaskError> {
    let (ctx, _pool) = session(config)?;
    register_inputs(&ctx, inputs).await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Runs a task and reports its result. Never fails: a failure is reported in the result with
/// its class, so that the coordinator decides about retries.
pub async fn run_task(
    config: &ExecutionConfig,
    task: &Task,
    attempt: u32,
    worker_id: &str,
) -> TaskResult {
    let started = Instant::now();
    let mut result = TaskResult {
        run_id: task.run_id.clone(),
        task_id: task.task_id.clone(),
        attempt,
        worker_id: worker_id.to_string(),
        ..TaskResult::default()
    };
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    if task.kind == TaskKind::Noop as i32 {
        return result;
    }
    match execute(config, task, &mut result, &peak).await {
        Ok(()) => {}
        Err(err) => {
            result.failure_class = match err.class() {
                crate::error::Class::User => FailureClass::User,
                crate::error::Class::Transient => FailureClass::Transient,
                crate::error::Class::Internal => FailureClass::Internal,
            } as i32;
            result.error = err.to_string();
            result.files.clear();
        }
    }
    result.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    result.peak_memory_bytes = peak.load(std::sync::atomic::Ordering::Relaxed);
    result
}

async fn execute(
    config: &ExecutionConfig,
    task: &Task,
    result: &mut TaskResult,
    peak: &Arc<std::sync::atomic::AtomicI64>,
) -> Result<(), TaskError> {
    let (ctx, pool) = session(config)?;
    register_inputs(&ctx, &task.inputs).await?;
    let kind = TaskKind::try_from(task.kind).unwrap_or(TaskKind::Unspecified);
    let record_peak = |pool: &Arc<dyn MemoryPool>| {
        let reserved = i64::try_from(pool.reserved()).unwrap_or(i64::MAX);
        peak.fetch_max(reserved, std::sync::atomic::Ordering::Relaxed);
    };
    // Operators such as sorts reserve and release memory before their first output batch:
    // sample the pool while the task runs, not only between batches.
    let sampler = {
        let (pool, peak) = (pool.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let reserved = i64::try_from(pool.reserved()).unwrap_or(i64::MAX);
                peak.fetch_max(reserved, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let _stop_sampler = AbortOnDrop(sampler);
    match kind {
        TaskKind::Test => {
            let frame = ctx
                .sql(&format!(
                    "select count(*) as failures from ({}) as dbt_internal_test",
                    task.sql
                ))
                .await?;
            let batches = frame.collect().await?;
            record_peak(&pool);
            let failures = batches
                .first()
                .and_then(|batch| {
                    batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .map(|array| array.value(0))
                })
                .unwrap_or(0);
            result.failing_rows = failures;
            Ok(())
        }
        TaskKind::Model | TaskKind::Seed => {
            let output = task
                .output
                .as_ref()
                .ok_or_else(|| TaskError::internal("a model task without an output"))?;
            let sql = match &task.incremental {
                Some(incremental) => {
                    let (sql, mode) =
                        crate::incremental::incremental_sql(&ctx, &task.sql, incremental).await?;
                    result.append = mode == crate::incremental::CommitMode::Append;
                    sql
                }
                None => task.sql.clone(),
            };
            // A stage of a shuffled model runs its serialized plan; any other task its SQL.
            let (plan_schema, mut stream) = if task.plan.is_empty() {
                let frame = ctx.sql(&sql).await?;
                let schema = frame.schema().as_arrow().clone();
                (schema, frame.execute_stream().await?)
            } else {
                let plan = decode_stage(&ctx, task, config.fetch_timeout).await?;
                let stream = plan.execute(task.partition as usize, ctx.task_ctx())?;
                (plan.schema().as_ref().clone(), stream)
            };
            let schema = delta_compatible(&plan_schema);
            let delta_schema: deltalake::kernel::StructType =
                schema.as_ref().try_into_kernel().map_err(|err| {
                    TaskError::user(format!(
                        "the model's columns cannot be stored in Delta: {err}"
                    ))
                })?;
            result.delta_schema_json = serde_json::to_string(&delta_schema)
                .map_err(|err| TaskError::internal(err.to_string()))?;
            let partition_by =
                (!output.partition_by.is_empty()).then(|| output.partition_by.clone());
            for column in output.partition_by.iter() {
                if schema.field_with_name(column).is_err() {
                    return Err(TaskError::user(format!(
                        "partition_by column '{column}' is not a column of the model"
                    )));
                }
            }
            // Files go under a folder named for the run, task and attempt: two attempts never
            // write the same name, and what an attempt left behind is easy to find.
            let folder = attempt_folder(output, result.attempt);
            let mut writer = RecordBatchWriter::try_new(
                format!("{}/{folder}", output.table_uri),
                schema.clone(),
                partition_by,
                None,
            )
            .map_err(TaskError::from)?
            .with_writer_properties(writer_properties())
            .with_target_file_size(config.target_file_size);
            let mut rows = 0i64;
            while let Some(batch) = stream.next().await {
                let batch = conform(&note_lost_output(batch, result)?, &schema)?;
                rows += i64::try_from(batch.num_rows()).unwrap_or(i64::MAX);
                record_peak(&pool);
                writer.write(batch).await.map_err(TaskError::from)?;
            }
            let adds = writer.flush().await.map_err(TaskError::from)?;
            result.rows = rows;
            for add in adds {
                result.bytes += add.size;
                let file_rows = add
                    .stats
                    .as_deref()
                    .and_then(|stats| serde_json::from_str::<serde_json::Value>(stats).ok())
                    .and_then(|stats| stats.get("numRecords").and_then(serde_json::Value::as_i64))
                    .unwrap_or(0);
                result.files.push(WrittenFile {
                    path: format!("{folder}/{}", add.path),
                    size_bytes: add.size,
                    rows: file_rows,
                    partition_values: add
                        .partition_values
                        .iter()
                        .filter_map(|(key, value)| value.clone().map(|value| (key.clone(), value)))
                        .collect::<HashMap<_, _>>(),
                    stats_json: add.stats.clone().unwrap_or_default(),
                });
            }
            Ok(())
        }
        TaskKind::ShuffleMap => {
            let shuffle = config.shuffle.as_ref().ok_or_else(|| {
                TaskError::internal("a shuffle task reached a worker without a Flight server")
            })?;
            let plan = decode_stage(&ctx, task, config.fetch_timeout).await?;
            let output = crate::shuffle::run_map(
                plan,
                ctx.task_ctx(),
                &shuffle.store,
                &crate::shuffle::shuffle_name(&task.run_id, &task.node_unique_id),
                task.stage,
                task.partition,
            )
            .await;
            let output = note_lost_output(output, result)?;
            record_peak(&pool);
            result.rows = output.rows;
            result.bytes = output.bytes;
            result.shuffle_outputs.push(ShuffleLocation {
                stage: task.stage,
                map_partition: task.partition,
                address: shuffle.address.clone(),
            });
            Ok(())
        }
        TaskKind::Noop => Ok(()),
        TaskKind::Unspecified => Err(TaskError::internal("a task of unknown kind")),
    }
}

/// Decodes the stage plan of a shuffled model's task, with the stores of its inputs registered
/// (the plan reads their files directly).
async fn decode_stage(
    ctx: &SessionContext,
    task: &Task,
    fetch_timeout: std::time::Duration,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, TaskError> {
    // This task runs one partition in isolation: with work stealing, the partition would read
    // the files of its siblings too — which run elsewhere.
    ctx.sql("set datafusion.execution.enable_file_stream_work_stealing = false")
        .await?
        .collect()
        .await?;
    for input in &task.inputs {
        match &input.source {
            Some(task_input::Source::Files(files)) => {
                strata_storage::register(ctx, &files.location)?
            }
            Some(task_input::Source::Delta(delta)) => {
                strata_storage::register(ctx, &delta.table_uri)?
            }
            _ => {}
        }
    }
    crate::shuffle::decode(
        &task.plan,
        &ctx.task_ctx(),
        &crate::shuffle::shuffle_name(&task.run_id, &task.node_unique_id),
        &task.shuffle_locations,
        &task.traceparent,
        fetch_timeout,
    )
    .map_err(|err| TaskError::internal(format!("cannot decode the stage plan: {err}")))
}

/// Passes a value through; for a failed shuffle fetch, first notes the lost map output in the
/// result, so that the coordinator runs its map task again.
fn note_lost_output<T>(
    value: Result<T, DataFusionError>,
    result: &mut TaskResult,
) -> Result<T, TaskError> {
    value.map_err(|err| {
        if let Some(lost) = crate::shuffle::find_fetch_error(&err) {
            result.lost_shuffle_outputs.push(ShuffleLocation {
                stage: lost.stage,
                map_partition: lost.map,
                address: lost.address.clone(),
            });
        }
        TaskError::from(err)
    })
}

/// The folder, relative to the table, where one attempt of a task writes its files.
fn attempt_folder(output: &TaskOutput, attempt: u32) -> String {
    let prefix = if output.file_prefix.is_empty() {
        "task"
    } else {
        output.file_prefix.as_str()
    };
    format!("{prefix}-a{attempt}")
}

/// Aborts a background task when dropped, whichever way the enclosing function returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    datafusion::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

impl From<DataFusionError> for TaskError {
    fn from(err: DataFusionError) -> Self {
        crate::error::classify_datafusion(err)
    }
}
