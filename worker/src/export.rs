//! A model materialized `external` (dbt-duckdb's files at `location`), or with a post_hook
//! `COPY {{ this }} TO 'file'`: after its task has written the model's Delta files, the same
//! rows are written as one file per export in the requested format, read back from those
//! files. Each file is written whole by the object store (a local one goes to a temporary
//! name first), so a reader never sees half of it; a retried task writes it again.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::CsvOptions;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::prelude::SessionContext;
use strata_engine::TaskError;
use strata_proto::v1::{Export, FileFormat, FileInput, TaskInput, WrittenFile, task_input};

/// The schema and name the written files are read under.
const ROWS: (&str, &str) = ("strata_export", "rows");

/// Writes the rows of `files` (relative to `table_uri`, with `schema`) to each export's file.
///
/// # Errors
/// Returns a user error for a location that cannot be written, a transient one for I/O.
pub(crate) async fn write_exports(
    ctx: &SessionContext,
    exports: &[Export],
    table_uri: &str,
    files: &[WrittenFile],
    schema: &SchemaRef,
) -> Result<(), TaskError> {
    if exports.is_empty() {
        return Ok(());
    }
    let rows = written_rows(ctx, table_uri, files, schema).await?;
    for export in exports {
        write_export(ctx, export, rows.clone()).await?;
    }
    Ok(())
}

/// Writes `rows` to the export's file.
async fn write_export(
    ctx: &SessionContext,
    export: &Export,
    rows: DataFrame,
) -> Result<(), TaskError> {
    strata_storage::register(ctx, &export.location)?;
    let options = DataFrameWriteOptions::new().with_single_file_output(true);
    let location = &export.location;
    let written = match FileFormat::try_from(export.format) {
        Ok(FileFormat::Parquet) => rows.write_parquet(location, options, None).await,
        Ok(FileFormat::Csv) => {
            let mut csv = CsvOptions::default().with_has_header(true);
            if let [delimiter] = export.delimiter.as_bytes() {
                csv = csv.with_delimiter(*delimiter);
            }
            rows.write_csv(location, options, Some(csv)).await
        }
        Ok(FileFormat::Json) => rows.write_json(location, options, None).await,
        _ => return Err(TaskError::internal("an export task without a file format")),
    };
    written.map_err(|err| TaskError::from(err).context(format!("writing {location}")))?;
    Ok(())
}

/// The rows of the files the task wrote; no rows of `schema` when it wrote none.
async fn written_rows(
    ctx: &SessionContext,
    table_uri: &str,
    files: &[WrittenFile],
    schema: &SchemaRef,
) -> Result<DataFrame, TaskError> {
    if files.is_empty() {
        return Ok(ctx.read_batch(RecordBatch::new_empty(SchemaRef::clone(schema)))?);
    }
    let root = table_uri.trim_end_matches('/');
    let input = TaskInput {
        schema: ROWS.0.to_string(),
        name: ROWS.1.to_string(),
        source: Some(task_input::Source::Files(FileInput {
            location: table_uri.to_string(),
            format: FileFormat::Parquet as i32,
            column_types: Default::default(),
            files: files
                .iter()
                .map(|file| format!("{root}/{}", file.path))
                .collect(),
        })),
    };
    strata_engine::register_inputs(ctx, &[input]).await?;
    Ok(ctx
        .sql(&format!("select * from {}.{}", ROWS.0, ROWS.1))
        .await?)
}
