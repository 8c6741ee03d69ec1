//! The files connector: CSV, newline-delimited JSON and Parquet files on the local disk or
//! in object storage, optionally gzip-compressed, each landed once (remembered by path,
//! size and entity tag or modification time; a file that changes lands again).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use strata_storage::ListedFile;

use crate::IngestError;
use crate::connector::{Chunk, Connector};
use crate::http::land_records;
use crate::landing::ChunkWriter;
use crate::quarantine::Reject;
use crate::spec::{FileFormat, FilesSpec};
use crate::state::SourceState;

/// Rows per Arrow batch read from a file.
const BATCH_ROWS: usize = 8192;

/// The files landed so far: location → fingerprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FilesPosition {
    seen: BTreeMap<String, String>,
}

/// Reads the files of one source table.
pub struct FilesConnector {
    spec: FilesSpec,
    location: String,
    source_name: String,
}

impl FilesConnector {
    /// A connector for `spec`, whose relative paths are under `project_dir`.
    pub fn new(spec: FilesSpec, project_dir: &std::path::Path, source_name: &str) -> Self {
        let location =
            if spec.path.contains("://") || std::path::Path::new(&spec.path).is_absolute() {
                spec.path.clone()
            } else {
                project_dir.join(&spec.path).display().to_string()
            };
        FilesConnector {
            spec,
            location,
            source_name: source_name.to_string(),
        }
    }

    fn read_error(&self, position: &str, reason: impl ToString) -> IngestError {
        IngestError::Read {
            source_name: self.source_name.clone(),
            position: position.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Lands one file into `chunk`; a file that cannot be read at all is rejected whole.
    async fn land_file(
        &self,
        file: &ListedFile,
        chunk: &mut ChunkWriter,
    ) -> Result<(), IngestError> {
        let bytes = strata_storage::read(&file.location).await?;
        let name = file.location.trim_end_matches(".gz");
        let bytes = if file.location.ends_with(".gz") {
            let mut text = Vec::new();
            match flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_end(&mut text) {
                Ok(_) => text,
                Err(err) => {
                    return chunk.reject(Reject::new(
                        file.location.clone(),
                        format!("not a readable gzip file: {err}"),
                        None,
                    ));
                }
            }
        } else {
            bytes
        };
        let Some(format) = self.spec.format.or_else(|| format_of(name)) else {
            return Err(self.read_error(
                &file.location,
                "cannot tell the file's format from its name; set `format:` (csv, json or parquet)",
            ));
        };
        match format {
            FileFormat::Csv => self.land_csv(&file.location, &bytes, chunk).await,
            FileFormat::Json => land_json(&file.location, &bytes, chunk).await,
            FileFormat::Parquet => land_parquet(&file.location, bytes, chunk).await,
        }
    }

    /// Every column of a CSV file lands as text (bronze is a copy; silver types it); a row
    /// with the wrong number of fields or invalid UTF-8 goes to quarantine.
    async fn land_csv(
        &self,
        location: &str,
        bytes: &[u8],
        chunk: &mut ChunkWriter,
    ) -> Result<(), IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(u8::try_from(self.spec.delimiter).unwrap_or(b','))
            .flexible(true)
            .from_reader(bytes);
        let header: Vec<String> = match reader.headers() {
            Ok(header) => header.iter().map(str::to_string).collect(),
            Err(err) => {
                return chunk.reject(Reject::new(
                    format!("{location}:1"),
                    format!("unreadable header: {err}"),
                    None,
                ));
            }
        };
        let schema: SchemaRef = Arc::new(Schema::new(
            header
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let mut builders = text_builders(header.len());
        let mut byte_record = csv::ByteRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_byte_record(&mut byte_record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(err) => {
                    chunk.reject(Reject::new(
                        format!("{location}:{line}"),
                        err.to_string(),
                        None,
                    ))?;
                    continue;
                }
            }
            let line = byte_record.position().map_or(line, csv::Position::line);
            let raw = String::from_utf8_lossy(byte_record.as_slice()).into_owned();
            if byte_record.len() != header.len() {
                chunk.reject(Reject::new(
                    format!("{location}:{line}"),
                    format!(
                        "the row has {} fields where the header has {}",
                        byte_record.len(),
                        header.len()
                    ),
                    Some(&raw),
                ))?;
                continue;
            }
            let Ok(fields) = byte_record
                .iter()
                .map(std::str::from_utf8)
                .collect::<Result<Vec<_>, _>>()
            else {
                chunk.reject(Reject::new(
                    format!("{location}:{line}"),
                    "the row is not valid UTF-8",
                    Some(&raw),
                ))?;
                continue;
            };
            for (builder, field) in builders.iter_mut().zip(fields) {
                builder.append_value(field);
            }
            if builders[0].len() >= BATCH_ROWS {
                chunk.write(finish_text(&schema, &mut builders)?).await?;
            }
        }
        if builders.first().is_some_and(|builder| builder.len() > 0) {
            chunk.write(finish_text(&schema, &mut builders)?).await?;
        }
        Ok(())
    }
}

fn text_builders(columns: usize) -> Vec<StringBuilder> {
    (0..columns).map(|_| StringBuilder::new()).collect()
}

fn finish_text(
    schema: &SchemaRef,
    builders: &mut [StringBuilder],
) -> Result<RecordBatch, IngestError> {
    let columns: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|builder| Arc::new(builder.finish()) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|err| IngestError::Internal(err.to_string()))
}

/// Newline-delimited JSON: records land in batches, their columns inferred from the first
/// and then held; a line that is not a JSON object, or whose values do not fit the columns,
/// goes to quarantine.
async fn land_json(
    location: &str,
    bytes: &[u8],
    chunk: &mut ChunkWriter,
) -> Result<(), IngestError> {
    let text = String::from_utf8_lossy(bytes);
    let mut records = Vec::with_capacity(BATCH_ROWS);
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => records.push((index + 1, value)),
            Err(err) => chunk.reject(Reject::new(
                format!("{location}:{}", index + 1),
                format!("not valid JSON: {err}"),
                Some(line),
            ))?,
        }
        if records.len() >= BATCH_ROWS {
            land_records(&records, |line| format!("{location}:{line}"), chunk).await?;
            records.clear();
        }
    }
    land_records(&records, |line| format!("{location}:{line}"), chunk).await
}

/// A Parquet file lands as it is; one that cannot be read goes to quarantine whole.
async fn land_parquet(
    location: &str,
    bytes: Vec<u8>,
    chunk: &mut ChunkWriter,
) -> Result<(), IngestError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|builder| builder.with_batch_size(BATCH_ROWS).build());
    let reader = match reader {
        Ok(reader) => reader,
        Err(err) => {
            return chunk.reject(Reject::new(
                location.to_string(),
                format!("not a readable Parquet file: {err}"),
                None,
            ));
        }
    };
    for batch in reader {
        match batch {
            Ok(batch) => chunk.write(batch).await?,
            Err(err) => {
                return chunk.reject(Reject::new(
                    location.to_string(),
                    format!("Parquet file is corrupt: {err}"),
                    None,
                ));
            }
        }
    }
    Ok(())
}

fn format_of(name: &str) -> Option<FileFormat> {
    let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "csv" | "tsv" => Some(FileFormat::Csv),
        "json" | "ndjson" | "jsonl" => Some(FileFormat::Json),
        "parquet" => Some(FileFormat::Parquet),
        _ => None,
    }
}

/// What identifies a version of a file: its size and entity tag (or modification time).
fn fingerprint(file: &ListedFile) -> String {
    match &file.e_tag {
        Some(tag) => format!("{}:{tag}", file.size),
        None => format!("{}:{}", file.size, file.modified_ms),
    }
}

#[async_trait::async_trait]
impl Connector for FilesConnector {
    async fn read_chunk(
        &mut self,
        state: &SourceState,
        mut chunk: ChunkWriter,
    ) -> Result<Option<Chunk>, IngestError> {
        let mut position: FilesPosition = state
            .position_as()
            .map_err(|reason| self.read_error(&self.location, reason))?
            .unwrap_or_default();
        let listed = strata_storage::list_objects(&self.location).await?;
        let pending: Vec<&ListedFile> = listed
            .iter()
            .filter(|file| position.seen.get(&file.location) != Some(&fingerprint(file)))
            .collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let take = pending.len().min(self.spec.files_per_commit);
        for file in &pending[..take] {
            self.land_file(file, &mut chunk).await?;
            position
                .seen
                .insert(file.location.clone(), fingerprint(file));
        }
        Ok(Some(Chunk {
            parts: vec![chunk],
            position: serde_json::to_value(&position)
                .map_err(|err| IngestError::Internal(err.to_string()))?,
            last: take == pending.len(),
        }))
    }
}
