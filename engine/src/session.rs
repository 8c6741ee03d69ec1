//! The DataFusion session every task and every planner uses: a memory pool with a limit,
//! Strata's optimizer rules and operators, and the task's inputs registered as tables.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::datasource::file_format::FileFormat as DataFusionFileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_core::settings::EngineSettings;
use strata_proto::v1::{FileFormat, TaskInput, task_input};

use crate::distinct_rewrite::DistinctAggregatesToGroupBy;
use crate::division::FractionalIntegerDivision;
use crate::error::TaskError;
use crate::first_row::{FirstRowPerKeyRule, StrataQueryPlanner};
use crate::lenient_casts::LenientTemporalCasts;
use datafusion::optimizer::{Analyzer, AnalyzerRule, Optimizer, OptimizerRule};

/// Settings of the execution engine, the same for every task of a process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory pool limit per task; a query that needs more spills, or fails with a clear
    /// error instead of taking the process down.
    pub memory_limit_bytes: usize,
    /// The process's real allocation (see [`crate::memory`]) above which its running tasks
    /// stop with a clear error: every slot's pool plus the margin.
    pub process_memory_limit_bytes: usize,
    /// DataFusion's target partitions (parallelism within a task).
    pub target_partitions: usize,
    /// Folder for spill files; the system temporary folder when `None`.
    pub spill_dir: Option<PathBuf>,
    /// `/` between integers truncates (a model's `integer_division: truncate`); otherwise it
    /// is fractional, as in DuckDB (see [`crate::division`]).
    pub truncating_division: bool,
}

impl EngineConfig {
    /// The engine of a process that runs `slots` tasks at once.
    pub fn new(settings: &EngineSettings, slots: usize) -> Self {
        let budget = settings.memory_budget(slots);
        Self {
            memory_limit_bytes: budget.task_mib << 20,
            process_memory_limit_bytes: budget.process_mib << 20,
            target_partitions: settings.target_partitions.max(1),
            spill_dir: settings.spill_dir.clone(),
            truncating_division: false,
        }
    }
}

/// The engine of the default settings, with one task slot per CPU.
impl Default for EngineConfig {
    fn default() -> Self {
        Self::new(&EngineSettings::default(), strata_core::machine::cpus())
    }
}

/// Builds a session for one task, under the configured memory limit, with Strata's
/// optimizer rules for distinct aggregates and for `row_number() = 1`
/// deduplication (and the planner for the latter's operator).
///
/// # Errors
/// Returns an internal error when the runtime cannot be built.
pub fn session(config: &EngineConfig) -> Result<(SessionContext, Arc<dyn MemoryPool>), TaskError> {
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
    // CSV values in quotes may span lines (as DuckDB reads them): such files are scanned
    // whole, never split at a byte offset that could fall inside a value.
    session_config.options_mut().catalog.newlines_in_values = true;
    // One spilled batch per file: DataFusion 55's `RepartitionExec` shares a pool of spill
    // files among its input tasks, and when two of them appended to two open files at once
    // its reader could wait forever on the older one (apache/datafusion#24883, fixed after
    // 55.2). A file that is sealed as soon as its one batch is written is never left open.
    session_config
        .options_mut()
        .execution
        .max_spill_file_size_bytes = ConfigNonZeroUsize::try_new(1).map_err(TaskError::from)?;
    let state = SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_analyzer_rules(analyzer_rules(config))
        .with_optimizer_rules(optimizer_rules())
        .with_query_planner(Arc::new(StrataQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for function in crate::duckdb_functions::duckdb_functions()
        .into_iter()
        .chain(crate::lenient_casts::lenient_cast_functions())
    {
        ctx.register_udf(function);
    }
    for function in crate::duckdb_functions::duckdb_aggregates() {
        ctx.register_udaf(function);
    }
    for (name, function) in [
        crate::duckdb_series::DuckDbSeries::generate_series(),
        crate::duckdb_series::DuckDbSeries::range(),
    ] {
        ctx.register_udtf(name, function);
    }
    Ok((ctx, pool))
}

/// DataFusion's analyzer rules, with fractional integer division (unless truncating) before
/// type coercion, so that coercion sees the new types everywhere they flow, and DuckDB's
/// lenient casts of text to timestamps and dates after it (see [`crate::lenient_casts`]).
fn analyzer_rules(config: &EngineConfig) -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    let mut rules = Analyzer::new().rules;
    let coercion = |rules: &[Arc<dyn AnalyzerRule + Send + Sync>]| {
        rules
            .iter()
            .position(|rule| rule.name() == "type_coercion")
            .unwrap_or(0)
    };
    if !config.truncating_division {
        let at = coercion(&rules);
        rules.insert(at, Arc::new(FractionalIntegerDivision));
    }
    // After coercion, so that the casts it adds (`ts > '2024-1-5'`) are lenient too.
    let at = coercion(&rules) + 1;
    rules.insert(at.min(rules.len()), Arc::new(LenientTemporalCasts));
    rules
}

/// DataFusion's optimizer rules with Strata's: the distinct rewrite just before DataFusion's
/// own `single_distinct_aggregation_to_group_by`, so that every shape Strata rewrites is
/// Strata's (DataFusion 55's rule sums a decimal `sum` again into a wider decimal than the
/// plan declares: `count(distinct a), sum(d)` with `d` a `decimal(16,2)` produced
/// `decimal(36,2)` rows under a `decimal(26,2)` schema, which a comparison above it then
/// refused); the deduplication rule last.
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    let at = rules
        .iter()
        .position(|rule| rule.name() == "single_distinct_aggregation_to_group_by")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(DistinctAggregatesToGroupBy));
    rules.push(Arc::new(FirstRowPerKeyRule));
    rules
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
/// [`crate::stages`]). `None` when the plan needs no shuffle, or reads something a plan
/// cannot carry to another process (a Hive-partitioned or empty Delta input).
///
/// # Errors
/// Returns the classified error of registering the inputs or planning the SQL.
pub async fn plan_shuffle(
    config: &EngineConfig,
    inputs: &[TaskInput],
    sql: &str,
    partitions: usize,
) -> Result<Option<crate::stages::StagedPlan>, TaskError> {
    let config = EngineConfig {
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
    let sql = crate::identifiers::resolve_case(&ctx, sql).await;
    let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
    Ok(crate::stages::plan_stages(plan, &ctx.task_ctx())?)
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
                    // A seed with column_types: the raw CSV under a casting view.
                    casting_view(ctx, &input.schema, &input.name, table, |name, _| {
                        files
                            .column_types
                            .iter()
                            .find(|(column, _)| column.eq_ignore_ascii_case(name))
                            .map(|(_, data_type)| data_type.clone())
                    })
                    .await?
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
                    let options =
                        ListingOptions::new(Arc::new(parquet_format())).with_file_extension("");
                    let config = ListingTableConfig::new_with_multi_paths(urls)
                        .with_listing_options(options)
                        .with_schema(schema);
                    Arc::new(ListingTable::try_new(config).map_err(TaskError::from)?)
                } else {
                    table
                        .update_datafusion_session(&ctx.state())
                        .map_err(TaskError::from)?;
                    let provider = table.table_provider().await.map_err(TaskError::from)?;
                    // delta-rs reads strings as views whatever the session says; views into
                    // decoded pages, grouped by, kept the pages alive outside the pool (8 GB
                    // for a 512 MB pool: a conditional sum beside a distinct count over the
                    // medallion's silver_events at 2 M events). Plain strings, as elsewhere.
                    if provider
                        .schema()
                        .fields()
                        .iter()
                        .any(|field| is_view(field.data_type()))
                    {
                        casting_view(ctx, &input.schema, &input.name, provider, |_, data_type| {
                            is_view(data_type).then(|| plain_type(data_type).to_string())
                        })
                        .await?
                    } else {
                        provider
                    }
                }
            }
            Some(task_input::Source::ViewSql(sql)) => ctx
                .sql(&crate::identifiers::resolve_case(ctx, sql).await)
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

/// Whether `data_type` is a string or binary view.
fn is_view(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Utf8View | DataType::BinaryView)
}

/// The plain type of a view type, as SQL.
fn plain_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::BinaryView => "bytea",
        _ => "varchar",
    }
}

/// Registers `provider` as `schema.__raw_<name>` and returns a view over it that casts the
/// columns `cast_to` gives a SQL type for (by column name and Arrow type).
async fn casting_view(
    ctx: &SessionContext,
    schema: &str,
    name: &str,
    provider: Arc<dyn TableProvider>,
    cast_to: impl Fn(&str, &DataType) -> Option<String>,
) -> Result<Arc<dyn TableProvider>, TaskError> {
    let raw = format!("__raw_{name}");
    let columns: Vec<String> = provider
        .schema()
        .fields()
        .iter()
        .map(|field| {
            let quoted = crate::identifiers::quoted(field.name());
            match cast_to(field.name(), field.data_type()) {
                Some(data_type) => format!("cast({quoted} as {data_type}) as {quoted}"),
                None => quoted,
            }
        })
        .collect();
    ctx.register_table(TableReference::partial(schema, raw.clone()), provider)
        .map_err(TaskError::from)?;
    let sql = format!("select {} from \"{schema}\".\"{raw}\"", columns.join(", "));
    Ok(ctx.sql(&sql).await.map_err(TaskError::from)?.into_view())
}

/// Parquet read with plain strings, as the session's own reads are (`schema_force_view_types`
/// off): a `ParquetFormat` of its own defaults to string views, whose values point into the
/// pages they were read from. Grouped by, those views kept whole pages alive outside the
/// memory pool: 4 GB allocated for a 64 MB pool on 1.5 M events with a distinct count beside
/// a conditional sum (tests/memory_bound, docs/benchmarks.md).
fn parquet_format() -> ParquetFormat {
    ParquetFormat::default().with_force_view_types(false)
}

async fn listing_table(
    ctx: &SessionContext,
    location: &str,
    format: FileFormat,
    only: &[String],
) -> Result<Arc<ListingTable>, TaskError> {
    let (file_format, extension): (Arc<dyn DataFusionFileFormat>, &str) = match format {
        FileFormat::Parquet => (Arc::new(parquet_format()), ".parquet"),
        // Quoted values may span lines (an address with a line break), as DuckDB reads them;
        // a file is then read whole rather than in byte ranges.
        FileFormat::Csv => (
            Arc::new(
                CsvFormat::default()
                    .with_has_header(true)
                    .with_newlines_in_values(true),
            ),
            "",
        ),
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
    let inferred = match format {
        FileFormat::Csv => csv_schema(location, only).await?,
        _ => None,
    };
    let schema = match inferred {
        Some(schema) => Arc::new(schema),
        None => options
            .infer_schema(&ctx.state(), &urls[0])
            .await
            .map_err(TaskError::from)?,
    };
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(
        ListingTable::try_new(config).map_err(TaskError::from)?,
    ))
}

/// How many CSV records decide a column's type, as DataFusion's own inference reads.
const CSV_INFERENCE_RECORDS: usize = 1000;

/// The schema of CSV data, from its first file, inferred by a reader that knows a quoted value
/// may span lines (DataFusion 55 infers from chunks split at line ends, which cut such a value
/// in two and fail). `None` when there is no file to read.
async fn csv_schema(
    location: &str,
    only: &[String],
) -> Result<Option<datafusion::arrow::datatypes::Schema>, TaskError> {
    let first = match only.first() {
        Some(file) => file.clone(),
        None => match strata_storage::list_files(location)
            .await?
            .into_iter()
            .next()
        {
            Some(file) => file,
            None => return Ok(None),
        },
    };
    let bytes = strata_storage::read(&first).await?;
    let (schema, _) = datafusion::arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(std::io::Cursor::new(bytes), Some(CSV_INFERENCE_RECORDS))
        .map_err(|err| {
            TaskError::user(format!(
                "cannot read the CSV header and rows of {first}: {err}"
            ))
        })?;
    Ok(Some(schema))
}

/// Runs a query over registered inputs and returns its rows (for `strata show`).
///
/// # Errors
/// Returns the classified error of registration or execution.
pub async fn query(
    config: &EngineConfig,
    inputs: &[TaskInput],
    sql: &str,
) -> Result<Vec<RecordBatch>, TaskError> {
    let (ctx, _pool) = session(config)?;
    register_inputs(&ctx, inputs).await?;
    let sql = crate::identifiers::resolve_case(&ctx, sql).await;
    Ok(ctx.sql(&sql).await?.collect().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DataFusion 55's `RepartitionExec` spills a batch it cannot reserve memory for into a
    /// pool of files shared by its input tasks; when two of them spilled at once, the reader
    /// waited on a file that would never receive the batch it needed, and every thread
    /// parked (apache/datafusion#24883, fixed after 55.2). The query is that issue's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repartition_spills_under_a_small_pool_never_deadlock() {
        let config = EngineConfig {
            memory_limit_bytes: 2 << 20,
            target_partitions: 2,
            ..EngineConfig::default()
        };
        let (ctx, _pool) = session(&config).unwrap_or_else(|err| panic!("{err}"));
        for statement in [
            "set datafusion.execution.batch_size = 64",
            "create table t as select v % 13 as g, md5(cast(v % 337 as varchar)) as trace_id \
             from generate_series(1, 40000) as s(v)",
        ] {
            let run = async { ctx.sql(statement).await?.collect().await };
            run.await.unwrap_or_else(|err| panic!("{statement}: {err}"));
        }
        let query = "select g, count(distinct trace_id) as n from t group by g";
        for attempt in 0..8 {
            let run = async { ctx.sql(query).await?.collect().await };
            let batches = tokio::time::timeout(std::time::Duration::from_secs(30), run)
                .await
                .unwrap_or_else(|_| panic!("attempt {attempt} did not finish in 30 s"))
                .unwrap_or_else(|err| panic!("attempt {attempt}: {err}"));
            // 13 and 337 are coprime: each of the 13 groups holds all 337 distinct values.
            let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap_or_else(|err| panic!("{err}"))
                .to_string();
            let counts: Vec<&str> = shown
                .lines()
                .filter(|line| line.ends_with("| 337 |"))
                .collect();
            assert_eq!(counts.len(), 13, "attempt {attempt}: {shown}");
        }
    }

    #[tokio::test]
    async fn csv_values_may_span_lines_in_files_larger_than_a_read_chunk() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let path = dir.path().join("customers.csv");
        let mut text = String::from("id,address,city\n");
        for id in 0..20_000 {
            if id % 997 == 3 {
                text.push_str(&format!(
                    "{id},\"Studio {id}\nGarden \"\"Row\"\"\",London\n"
                ));
            } else {
                text.push_str(&format!("{id},{id} High Street,Leeds\n"));
            }
        }
        std::fs::write(&path, text).unwrap_or_else(|err| panic!("{err}"));
        let (ctx, _pool) = session(&EngineConfig::default()).unwrap_or_else(|err| panic!("{err}"));
        let location = path.display().to_string();
        let table = listing_table(&ctx, &location, FileFormat::Csv, &[])
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        ctx.register_table("customers", table)
            .unwrap_or_else(|err| panic!("{err}"));
        let batches = ctx
            .sql("select count(*), count(*) filter (where city = 'London'), max(length(address)) from customers")
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap_or_else(|err| panic!("{err}"))
            .to_string();
        assert!(shown.contains("| 20000 "), "{shown}");
        assert!(shown.contains("| 21 "), "{shown}");
    }
}
