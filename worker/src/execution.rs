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
    FailureClass, FileFormat, Task, TaskInput, TaskKind, TaskOutput, TaskResult, WrittenFile,
    task_input,
};

use crate::distinct_rewrite::CountWithDistinctToGroupBy;
use crate::error::TaskError;

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
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, usize::from),
            spill_dir: None,
            target_file_size: 128 << 20,
        }
    }
}

/// Builds a session for one task, under the configured memory limit, with Strata's
/// optimizer rule for `count` next to `count(distinct …)`.
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
                table
                    .update_datafusion_session(&ctx.state())
                    .map_err(TaskError::from)?;
                table.table_provider().await.map_err(TaskError::from)?
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
    Ok(())
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
            let frame = ctx.sql(&sql).await?;
            let schema = delta_compatible(frame.schema().as_arrow());
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
            let mut stream = frame.execute_stream().await?;
            let mut rows = 0i64;
            while let Some(batch) = stream.next().await {
                let batch = conform(&batch?, &schema)?;
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
        TaskKind::Noop => Ok(()),
        TaskKind::Unspecified => Err(TaskError::internal("a task of unknown kind")),
    }
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
