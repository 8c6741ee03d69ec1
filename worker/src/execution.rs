//! Executing one task: a session from the engine, the task's inputs registered as tables,
//! the SQL (or a stage's plan) run, and the output streamed into Parquet files of the model's
//! Delta table (not committed: only the coordinator commits) or into shuffle files.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::FutureExt;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use strata_engine::exchange::{ClusterSecret, FetchSettings};
use strata_engine::{EngineConfig, TaskError, register_inputs, session};
use strata_proto::v1::{
    FailureClass, ShuffleLocation, Task, TaskKind, TaskOutput, TaskResult, WrittenFile, task_input,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::task_memory::{MemorySampler, Peaks, memory_exceeded, memory_over_limit};

/// Settings of a worker's task execution.
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// The engine's session settings (memory pool, partitions, spill folder).
    pub engine: EngineConfig,
    /// Target size of the Parquet files a task writes.
    pub target_file_size: u64,
    /// Where shuffle map outputs go and the Flight address they are served at; `None` for a
    /// worker without a Flight server (embedded mode never shuffles).
    pub shuffle: Option<ShuffleService>,
    /// How long a shuffle fetch waits for the worker holding the output to answer.
    pub fetch_timeout: std::time::Duration,
    /// The secret every Flight call between workers carries.
    pub cluster_secret: Option<ClusterSecret>,
}

/// A worker's shuffle outputs and the address its Flight server advertises.
#[derive(Debug, Clone)]
pub struct ShuffleService {
    /// The map outputs on local disk.
    pub store: Arc<crate::shuffle::ShuffleStore>,
    /// `host:port` other workers fetch from.
    pub address: String,
}

/// The execution of the default settings, without shuffles or a secret.
impl Default for ExecutionConfig {
    fn default() -> Self {
        crate::process::worker_config(&strata_core::settings::Settings::default(), None).execution
    }
}

impl ExecutionConfig {
    /// How this worker's shuffle reads fetch map outputs from other workers.
    fn fetch_settings(&self) -> FetchSettings {
        FetchSettings {
            timeout: self.fetch_timeout,
            secret: self.cluster_secret.clone(),
        }
    }
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

/// The outcome of `work`, or an internal error when it panics.
async fn failing_on_panic(
    work: impl std::future::Future<Output = Result<(), TaskError>>,
) -> Result<(), TaskError> {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(TaskError::internal(panic_message(panic.as_ref()))))
}

/// The message a caught panic carries (the ingest agent's task runner reports it too).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("no message"))
}

/// What a caught panic in the engine says.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic_text(panic);
    format!(
        "the engine panicked ({text}); this is a bug in Strata or DataFusion — please report it with the model's SQL"
    )
}

/// Runs a task and reports its result. Never fails: a failure is reported in the result with
/// its class, so that the coordinator decides about retries.
///
/// The attempt is one span, the child of the task's span in the coordinator (through the
/// task's `traceparent`), with what it read, wrote and used.
pub async fn run_task(
    config: &ExecutionConfig,
    task: &Task,
    attempt: u32,
    worker_id: &str,
) -> TaskResult {
    let span = attempt_span(task, attempt, worker_id);
    let result = run_attempt(config, task, attempt, worker_id)
        .instrument(span.clone())
        .await;
    record_outcome(&span, &result);
    result
}

/// The span of one attempt of `task` on this worker.
fn attempt_span(task: &Task, attempt: u32, worker_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "attempt",
        otel.name = %format!("attempt {}", task.task_id),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.message.id = %format!("{}#{attempt}", task.task_id),
        strata.run_id = %task.run_id,
        strata.task_id = %task.task_id,
        strata.node_id = %task.node_unique_id,
        strata.attempt = attempt,
        strata.worker_id = %worker_id,
        strata.rows_out = tracing::field::Empty,
        strata.bytes_written = tracing::field::Empty,
        strata.files_written = tracing::field::Empty,
        strata.memory_peak_bytes = tracing::field::Empty,
        strata.allocated_peak_bytes = tracing::field::Empty,
        strata.failing_rows = tracing::field::Empty,
        strata.failure_class = tracing::field::Empty,
    );
    strata_telemetry::set_remote_parent(&span, &task.traceparent);
    span
}

/// Records what an attempt did on its span; a failure sets the span's status.
fn record_outcome(span: &tracing::Span, result: &TaskResult) {
    span.record("strata.rows_out", result.rows);
    span.record("strata.bytes_written", result.bytes);
    span.record("strata.files_written", result.files.len() as u64);
    span.record("strata.memory_peak_bytes", result.peak_memory_bytes);
    span.record("strata.allocated_peak_bytes", result.peak_allocated_bytes);
    span.record("strata.failing_rows", result.failing_rows);
    if result.failure_class != FailureClass::Unspecified as i32 {
        let class = FailureClass::try_from(result.failure_class)
            .map(|class| class.as_str_name())
            .unwrap_or("FAILURE_CLASS_UNSPECIFIED");
        span.record("strata.failure_class", class);
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", result.error.as_str());
        span.in_scope(|| tracing::warn!(error = %result.error, class, "attempt failed"));
    }
}

async fn run_attempt(
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
    let peaks = Arc::new(Peaks::default());
    if task.kind == TaskKind::Noop as i32 {
        return result;
    }
    // A panic in the engine (a bug, or a function given what it cannot take) fails the task
    // like any internal error instead of taking the worker's slot down without a result.
    match failing_on_panic(execute(config, task, &mut result, &peaks)).await {
        Ok(()) => {}
        Err(err) => {
            result.failure_class = match err.class() {
                strata_engine::Class::User => FailureClass::User,
                strata_engine::Class::Transient => FailureClass::Transient,
                strata_engine::Class::Internal => FailureClass::Internal,
            } as i32;
            result.error = err.to_string();
            result.files.clear();
        }
    }
    result.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    result.peak_memory_bytes = peaks.pool.load(Ordering::Relaxed);
    result.peak_allocated_bytes = peaks.allocated.load(Ordering::Relaxed);
    result
}

async fn execute(
    config: &ExecutionConfig,
    task: &Task,
    result: &mut TaskResult,
    peaks: &Arc<Peaks>,
) -> Result<(), TaskError> {
    let engine = strata_engine::EngineConfig {
        truncating_division: task.truncating_division,
        ..config.engine.clone()
    };
    let (ctx, pool) = session(&engine)?;
    let (_sampler, exceeded_at) = MemorySampler::start(
        Arc::clone(&pool),
        Arc::clone(peaks),
        config.engine.process_memory_limit_bytes,
    )?;
    register_inputs(&ctx, &task.inputs).await?;
    // Unquoted names of mixed-case source columns, spelled as the columns are.
    let mut sql = strata_engine::identifiers::resolve_case(&ctx, &task.sql).await;
    let kind = TaskKind::try_from(task.kind).unwrap_or(TaskKind::Unspecified);
    if kind == TaskKind::Seed {
        let typed: Vec<String> = task
            .inputs
            .iter()
            .filter_map(|input| match &input.source {
                Some(strata_proto::v1::task_input::Source::Files(files)) => {
                    Some(files.column_types.keys().cloned().collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect();
        sql = crate::seeds::seed_sql(&ctx, &sql, &typed).await?;
    }
    let run = TaskRun {
        config,
        task,
        sql,
        ctx,
        pool,
        peaks,
        exceeded_at,
    };
    if matches!(kind, TaskKind::Model | TaskKind::Seed) {
        // Stops between batches by itself: an upload to the table is never cut short.
        return run.model(result).await;
    }
    let work = async {
        match kind {
            TaskKind::Test => run.test(result).await,
            TaskKind::ShuffleMap => run.map(result).await,
            TaskKind::Noop | TaskKind::Model | TaskKind::Seed => Ok(()),
            TaskKind::Ingest => Err(TaskError::user(
                "an ingest task reached a worker: ingest tasks go on the ingest queue \
                 (broker.ingest_queue), served by `strata ingest-agent`",
            )),
            TaskKind::Unspecified => Err(TaskError::internal("a task of unknown kind")),
        }
    };
    tokio::select! {
        outcome = work => outcome,
        allocated = memory_over_limit(run.exceeded_at.clone()) => {
            Err(memory_exceeded(allocated, &config.engine))
        }
    }
}

/// One task being executed: its session, memory pool and peaks.
struct TaskRun<'a> {
    config: &'a ExecutionConfig,
    task: &'a Task,
    /// The task's SQL, identifiers resolved against its inputs.
    sql: String,
    ctx: SessionContext,
    pool: Arc<dyn MemoryPool>,
    peaks: &'a Arc<Peaks>,
    /// Turns to the process's allocation when it goes over the limit.
    exceeded_at: watch::Receiver<Option<u64>>,
}

impl TaskRun<'_> {
    /// Notes the pool's current reservation in the peak.
    fn record_peak(&self) {
        let reserved = i64::try_from(self.pool.reserved()).unwrap_or(i64::MAX);
        self.peaks.pool.fetch_max(reserved, Ordering::Relaxed);
    }

    /// A data test: counts its failing rows.
    async fn test(&self, result: &mut TaskResult) -> Result<(), TaskError> {
        let frame = self
            .ctx
            .sql(&format!(
                "select count(*) as failures from ({}) as dbt_internal_test",
                self.sql
            ))
            .await?;
        let batches = frame.collect().await?;
        self.record_peak();
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

    /// A model or seed: its rows streamed into Parquet files of its Delta table (reported,
    /// not committed).
    async fn model(&self, result: &mut TaskResult) -> Result<(), TaskError> {
        let output = self
            .task
            .output
            .as_ref()
            .ok_or_else(|| TaskError::internal("a model task without an output"))?;
        let sql = match (&self.task.snapshot, &self.task.incremental) {
            (Some(snapshot), _) => {
                crate::snapshot::snapshot_sql(&self.ctx, &self.sql, snapshot).await?
            }
            (None, Some(incremental)) => {
                let (sql, mode) =
                    crate::incremental::incremental_sql(&self.ctx, &self.sql, incremental).await?;
                result.append = mode == crate::incremental::CommitMode::Append;
                sql
            }
            (None, None) => self.sql.clone(),
        };
        // A stage of a shuffled model runs its serialized plan; any other task its SQL.
        let (plan_schema, mut stream) = if self.task.plan.is_empty() {
            // The schema after analysis: Strata's analyzer rules (fractional division) change
            // types, which the unanalyzed frame's schema does not show.
            let plan = self.ctx.sql(&sql).await?.create_physical_plan().await?;
            let stream =
                datafusion::physical_plan::execute_stream(Arc::clone(&plan), self.ctx.task_ctx())?;
            (plan.schema().as_ref().clone(), stream)
        } else {
            let plan = decode_stage(&self.ctx, self.task, self.config.fetch_settings()).await?;
            let stream = plan.execute(self.task.partition as usize, self.ctx.task_ctx())?;
            (plan.schema().as_ref().clone(), stream)
        };
        let schema = strata_storage::delta_files::delta_compatible(&plan_schema);
        if let Some(reason) = strata_storage::delta_files::unstorable_columns(&schema) {
            return Err(TaskError::user(reason));
        }
        let delta_schema: deltalake::kernel::StructType =
            schema.as_ref().try_into_kernel().map_err(|err| {
                // delta-kernel's message may carry a backtrace: its first line says it all.
                let message = err.to_string();
                TaskError::user(format!(
                    "the model's columns cannot be stored in Delta: {}",
                    message.lines().next().unwrap_or_default()
                ))
            })?;
        result.delta_schema_json = serde_json::to_string(&delta_schema)
            .map_err(|err| TaskError::internal(err.to_string()))?;
        let partition_by = (!output.partition_by.is_empty()).then(|| output.partition_by.clone());
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
        .with_writer_properties(strata_storage::delta_files::writer_properties())
        .with_target_file_size(self.config.target_file_size);
        let mut rows = 0i64;
        loop {
            let batch = tokio::select! {
                batch = stream.next() => batch,
                allocated = memory_over_limit(self.exceeded_at.clone()) => {
                    return Err(memory_exceeded(allocated, &self.config.engine));
                }
            };
            let Some(batch) = batch else { break };
            let batch = conform(&note_lost_output(batch, result)?, &schema)?;
            rows += i64::try_from(batch.num_rows()).unwrap_or(i64::MAX);
            self.record_peak();
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
        crate::export::write_exports(
            &self.ctx,
            &self.task.exports,
            &output.table_uri,
            &result.files,
            &schema,
        )
        .await?;
        Ok(())
    }

    /// A map task of a shuffle: its partition of the input split into the worker's shuffle
    /// files, served over Flight.
    async fn map(&self, result: &mut TaskResult) -> Result<(), TaskError> {
        let shuffle = self.config.shuffle.as_ref().ok_or_else(|| {
            TaskError::internal("a shuffle task reached a worker without a Flight server")
        })?;
        let plan = decode_stage(&self.ctx, self.task, self.config.fetch_settings()).await?;
        let output = crate::shuffle::run_map(
            plan,
            self.ctx.task_ctx(),
            &shuffle.store,
            &strata_engine::stages::shuffle_name(&self.task.run_id, &self.task.node_unique_id),
            self.task.stage,
            self.task.partition,
        )
        .await;
        let output = note_lost_output(output, result)?;
        self.record_peak();
        result.rows = output.rows;
        result.bytes = output.bytes;
        result.shuffle_outputs.push(ShuffleLocation {
            stage: self.task.stage,
            map_partition: self.task.partition,
            address: shuffle.address.clone(),
        });
        Ok(())
    }
}

/// Decodes the stage plan of a shuffled model's task, with the stores of its inputs registered
/// (the plan reads their files directly).
async fn decode_stage(
    ctx: &SessionContext,
    task: &Task,
    fetch: FetchSettings,
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
    strata_engine::stages::decode(
        &task.plan,
        &ctx.task_ctx(),
        strata_engine::exchange::ReaderContext {
            run: strata_engine::stages::shuffle_name(&task.run_id, &task.node_unique_id),
            locations: task.shuffle_locations.clone(),
            // The attempt's span parents the Flight calls of the reducer.
            traceparent: strata_telemetry::current_traceparent()
                .unwrap_or_else(|| task.traceparent.clone()),
            fetch,
        },
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
        if let Some(lost) = strata_engine::exchange::find_fetch_error(&err) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_fails_as_an_internal_error() {
        let outcome = failing_on_panic(async {
            let text: Option<&str> = std::hint::black_box(None);
            // What DataFusion did with to_char over a non-text format.
            let _ = text.expect("string array");
            Ok(())
        })
        .await;
        let err = outcome.err().map(|err| (err.class(), err.to_string()));
        assert!(
            matches!(&err, Some((strata_engine::Class::Internal, message))
                if message.contains("the engine panicked (string array)")),
            "{err:?}"
        );
        assert!(failing_on_panic(async { Ok(()) }).await.is_ok());
    }
}
