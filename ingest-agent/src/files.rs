//! The files connector: CSV, newline-delimited JSON and Parquet files on the local disk or
//! in object storage, optionally gzip-compressed, each landed once (remembered by path,
//! size and entity tag or modification time; a file that changes lands again).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

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

/// Bytes read from a file at a time.
const READ_BUFFER: usize = 1 << 16;

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

    /// Lands one file into `chunk`, read as a stream (a remote object through a local copy),
    /// so that memory holds a batch of it, not the file; a file that cannot be read at all is
    /// rejected whole.
    async fn land_file(
        &self,
        file: &ListedFile,
        chunk: &mut ChunkWriter,
    ) -> Result<(), IngestError> {
        let location = &file.location;
        let gzipped = location.ends_with(".gz");
        let Some(format) = self
            .spec
            .format
            .or_else(|| format_of(location.trim_end_matches(".gz")))
        else {
            return Err(self.read_error(
                location,
                "cannot tell the file's format from its name; set `format:` (csv, json or parquet)",
            ));
        };
        let opened = strata_storage::open_local(location).await?;
        let not_gzip = |err: std::io::Error| {
            Reject::new(
                location.clone(),
                format!("not a readable gzip file: {err}"),
                None,
            )
        };
        match format {
            FileFormat::Csv | FileFormat::Json => {
                let reader = match text_reader(opened, gzipped) {
                    Ok(reader) => reader,
                    Err(err) => return chunk.reject(not_gzip(err)),
                };
                if format == FileFormat::Csv {
                    self.land_csv(location, reader, chunk).await
                } else {
                    land_json(location, reader, chunk).await
                }
            }
            FileFormat::Parquet => {
                let opened = if gzipped {
                    match decompressed_copy(opened) {
                        Ok(copy) => copy,
                        Err(err) => return chunk.reject(not_gzip(err)),
                    }
                } else {
                    opened
                };
                land_parquet(location, opened, chunk).await
            }
        }
    }

    /// Every column of a CSV file lands as text (bronze is a copy; silver types it); a row
    /// with the wrong number of fields or invalid UTF-8 goes to quarantine.
    async fn land_csv(
        &self,
        location: &str,
        text: Box<dyn BufRead + Send>,
        chunk: &mut ChunkWriter,
    ) -> Result<(), IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(u8::try_from(self.spec.delimiter).unwrap_or(b','))
            .flexible(true)
            .from_reader(text);
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
                Err(err) if matches!(err.kind(), csv::ErrorKind::Io(_)) => {
                    chunk.reject(unreadable_from(location, line, err))?;
                    break;
                }
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
    mut text: Box<dyn BufRead + Send>,
    chunk: &mut ChunkWriter,
) -> Result<(), IngestError> {
    let mut records = Vec::with_capacity(BATCH_ROWS);
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        number += 1;
        match text.read_until(b'\n', &mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                chunk.reject(unreadable_from(location, number, err))?;
                break;
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => records.push((number, value)),
            Err(err) => chunk.reject(Reject::new(
                format!("{location}:{number}"),
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

/// The rest of a file from `line` on, which cannot be read (a truncated or corrupt compressed
/// stream): what was read before lands, this goes to quarantine.
fn unreadable_from(
    location: &str,
    line: impl std::fmt::Display,
    err: impl std::fmt::Display,
) -> Reject {
    Reject::new(
        format!("{location}:{line}"),
        format!("the file cannot be read from this line on: {err}"),
        None,
    )
}

/// A file's text, decompressed when it is gzipped; an error when it is not readable gzip.
fn text_reader(file: File, gzipped: bool) -> std::io::Result<Box<dyn BufRead + Send>> {
    let file = BufReader::with_capacity(READ_BUFFER, file);
    if !gzipped {
        return Ok(Box::new(file));
    }
    let mut text = BufReader::with_capacity(READ_BUFFER, MultiGzDecoder::new(file));
    // The first read checks the gzip header, so that a file that is not gzip is rejected
    // whole rather than as a bad first line.
    text.fill_buf()?;
    Ok(Box::new(text))
}

/// A decompressed copy of a gzipped file in a temporary file (Parquet is read by offset, not
/// as a stream).
fn decompressed_copy(file: File) -> std::io::Result<File> {
    let mut copy = tempfile::tempfile()?;
    std::io::copy(
        &mut MultiGzDecoder::new(BufReader::with_capacity(READ_BUFFER, file)),
        &mut copy,
    )?;
    copy.rewind()?;
    Ok(copy)
}

/// A Parquet file lands as it is; one that cannot be read goes to quarantine whole.
async fn land_parquet(
    location: &str,
    file: File,
    chunk: &mut ChunkWriter,
) -> Result<(), IngestError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
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
