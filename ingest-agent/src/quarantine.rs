//! The quarantine table beside each bronze table (`<table>__quarantine`): records and files
//! that could not be read, with the reason and where they were, so the rest of a source
//! lands and nothing is silently dropped.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::Transaction;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use crate::IngestError;
use crate::landing::{Landing, commit_files};

/// A record or file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Where it was: `file.csv:12`, `page 3 of https://…`, `row id=42`.
    pub position: String,
    /// Why it was not landed.
    pub reason: String,
    /// The record as read (truncated), when there is one.
    pub record: Option<String>,
}

/// The most of a rejected record the quarantine keeps.
const RECORD_LIMIT: usize = 64 * 1024;

impl Reject {
    /// A rejected record, truncated to a size the quarantine keeps.
    pub fn new(position: String, reason: impl Into<String>, record: Option<&str>) -> Reject {
        Reject {
            position,
            reason: reason.into(),
            record: record.map(|text| {
                let mut end = text.len().min(RECORD_LIMIT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text[..end].to_string()
            }),
        }
    }
}

/// The quarantine table of the bronze table at `table_uri`.
pub fn uri(table_uri: &str) -> String {
    format!("{}__quarantine", table_uri.trim_end_matches('/'))
}

/// Lands `rejects` of batch `batch` in the quarantine table at `uri`, once per batch.
pub(crate) async fn land(
    uri: &str,
    batch: i64,
    rejects: Vec<Reject>,
    landing: &Landing,
) -> Result<(), IngestError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("position", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("record", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|reject| reject.position.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|reject| reject.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rejects.iter().map(|reject| reject.record.as_deref()),
        )),
    ];
    let records = RecordBatch::try_new(schema, columns)
        .map_err(|err| IngestError::Internal(err.to_string()))?;
    let records = landing.with_metadata(&records, batch, chrono::Utc::now().timestamp_micros())?;
    let delta_error = |source| IngestError::Delta {
        location: uri.to_string(),
        source,
    };
    let mut writer = RecordBatchWriter::try_new(uri, records.schema(), None, None)
        .map_err(delta_error)?
        .with_writer_properties(strata_storage::delta_files::writer_properties());
    let schema = records.schema();
    writer.write(records).await.map_err(delta_error)?;
    let adds = writer.flush().await.map_err(delta_error)?;
    let table = strata_storage::open_delta_table(uri).await?;
    commit_files(
        uri,
        table.as_ref(),
        &schema,
        adds,
        None,
        &Transaction::new("strata-ingest:quarantine", batch),
    )
    .await?;
    Ok(())
}
