//! Landing rows in a bronze table: each chunk a connector reads is written as Parquet files
//! and committed in one Delta transaction together with the source's new position, so a
//! chunk is either wholly landed with its position or not at all.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};

use crate::IngestError;
use crate::drift::{self, DriftError};
use crate::quarantine::{self, Reject};
use crate::spec::{BadRecordPolicy, DriftPolicy, MetadataColumns};
use crate::state::{STATE_PROPERTY, SourceState};

/// A bronze table and where its source's ingestion stands.
pub struct BronzeTable {
    uri: String,
    name: String,
    table: Option<DeltaTable>,
    state: SourceState,
    data_schema: Option<SchemaRef>,
    landing: Landing,
}

/// What every chunk of one table shares: the drift policy and the metadata columns.
#[derive(Debug, Clone)]
pub struct Landing {
    /// The source table (`source.table`), for errors.
    pub source_name: String,
    /// What happens when the source's columns change.
    pub drift: DriftPolicy,
    /// What happens to a record that cannot be read.
    pub bad_records: BadRecordPolicy,
    /// The metadata columns' names.
    pub columns: MetadataColumns,
    /// The source-system column's value.
    pub source_system: String,
}

/// What one commit landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The batch number (the `_batch_id` of its rows).
    pub batch: i64,
    /// The table's new version.
    pub version: i64,
    /// Rows landed.
    pub rows: u64,
    /// Records sent to quarantine.
    pub quarantined: u64,
}

impl BronzeTable {
    /// Opens the bronze table at `uri` (named `name` in errors) and reads its state.
    ///
    /// # Errors
    /// A storage failure, or a state property that is not Strata's.
    pub async fn open(uri: &str, name: &str, landing: Landing) -> Result<Self, IngestError> {
        let mut table = BronzeTable {
            uri: uri.to_string(),
            name: name.to_string(),
            table: None,
            state: SourceState::default(),
            data_schema: None,
            landing,
        };
        table.reload().await?;
        Ok(table)
    }

    async fn reload(&mut self) -> Result<(), IngestError> {
        self.table = strata_storage::open_delta_table(&self.uri).await?;
        let Some(table) = &self.table else {
            return Ok(());
        };
        let snapshot = table.snapshot().map_err(|err| self.delta_error(err))?;
        self.state = SourceState::from_properties(snapshot.metadata().configuration()).map_err(
            |reason| IngestError::State {
                table: self.name.clone(),
                reason,
            },
        )?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|err| self.delta_error(DeltaTableError::from(err)))?;
        let metadata = self.landing.columns.names();
        self.data_schema = Some(Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|field| !metadata.contains(&field.name().as_str()))
                .cloned()
                .collect::<Vec<_>>(),
        )));
        Ok(())
    }

    /// Empties the table and forgets the source's position in one commit (`--full-refresh`):
    /// the next chunk lands from the start, with the source's columns as they are now. Batch
    /// numbers go on counting.
    ///
    /// # Errors
    /// A storage or Delta failure.
    pub async fn reset(&mut self) -> Result<(), IngestError> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        let snapshot = table.snapshot().map_err(|err| self.delta_error(err))?;
        let mut actions: Vec<Action> = snapshot
            .log_data()
            .into_iter()
            .map(|file| Action::Remove(file.remove_action(true)))
            .collect();
        let state = SourceState {
            batch: self.state.batch,
            position: serde_json::Value::Null,
        };
        let state_json =
            serde_json::to_string(&state).map_err(|err| IngestError::Internal(err.to_string()))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .add_config_key(STATE_PROPERTY.to_string(), state_json)
            .map_err(|err| self.delta_error(DeltaTableError::from(err)))?;
        actions.push(Action::Metadata(metadata));
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        CommitBuilder::default()
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(|err| self.delta_error(err))?;
        self.reload().await?;
        // The source's columns now are the table's: nothing to drift from.
        self.data_schema = None;
        Ok(())
    }

    /// Where the source's ingestion stands.
    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// A writer for the next chunk.
    pub fn begin_chunk(&self) -> ChunkWriter {
        ChunkWriter {
            uri: self.uri.clone(),
            data_schema: self.data_schema.clone(),
            landing: self.landing.clone(),
            batch: self.state.batch + 1,
            ingested_at: chrono::Utc::now().timestamp_micros(),
            writer: None,
            adds: Vec::new(),
            rows: 0,
            rejects: Vec::new(),
        }
    }

    /// Commits a chunk's files (from one or more writers) and the source's `position` after
    /// it, in one transaction: a new batch. Its rejected records go to the quarantine table
    /// first (idempotently: a batch is quarantined once even if its commit is redone).
    ///
    /// # Errors
    /// A storage or Delta failure, or another agent committing the same table meanwhile.
    pub async fn commit(
        &mut self,
        parts: Vec<ChunkWriter>,
        position: serde_json::Value,
    ) -> Result<Committed, IngestError> {
        let batch = self.state.batch + 1;
        let mut adds = Vec::new();
        let mut rejects = Vec::new();
        let mut rows = 0;
        let mut data_schema = self.data_schema.clone();
        for part in parts {
            let finished = part.finish().await?;
            adds.extend(finished.adds);
            rejects.extend(finished.rejects);
            rows += finished.rows;
            data_schema = union(data_schema.as_ref(), finished.data_schema.as_ref());
        }
        let quarantined = rejects.len() as u64;
        if !rejects.is_empty() {
            let landing = &self.landing;
            quarantine::land(&quarantine::uri(&self.uri), batch, rejects, landing).await?;
        }
        // A first chunk with no rows still needs columns: the metadata columns alone.
        let full = self
            .landing
            .with_metadata_fields(data_schema.as_ref().map_or(&[][..], |s| s.fields()));
        let state = SourceState { batch, position };
        let state_json = serde_json::to_string(&state).map_err(|err| IngestError::State {
            table: self.name.clone(),
            reason: err.to_string(),
        })?;
        let version = commit_files(
            &self.uri,
            self.table.as_ref(),
            &full,
            adds,
            Some((STATE_PROPERTY, state_json)),
            &Transaction::new(format!("strata-ingest:{}", self.name), batch),
        )
        .await?;
        self.reload().await?;
        Ok(Committed {
            batch,
            version,
            rows,
            quarantined,
        })
    }

    fn delta_error(&self, source: DeltaTableError) -> IngestError {
        IngestError::Delta {
            location: self.uri.clone(),
            source,
        }
    }
}

/// `current`'s fields with those of `more` it lacks after them.
fn union(current: Option<&SchemaRef>, more: Option<&SchemaRef>) -> Option<SchemaRef> {
    match (current, more) {
        (None, more) => more.cloned(),
        (Some(current), None) => Some(Arc::clone(current)),
        (Some(current), Some(more)) => {
            let mut fields: Vec<FieldRef> = current.fields().iter().cloned().collect();
            fields.extend(
                more.fields()
                    .iter()
                    .filter(|field| current.field_with_name(field.name()).is_err())
                    .cloned(),
            );
            Some(Arc::new(Schema::new(fields)))
        }
    }
}

impl MetadataColumns {
    fn names(&self) -> [&str; 3] {
        [&self.batch_id, &self.ingested_at, &self.source_system]
    }
}

impl Landing {
    /// `fields` followed by the metadata columns.
    fn with_metadata_fields(&self, fields: &[FieldRef]) -> SchemaRef {
        let mut all: Vec<FieldRef> = fields.to_vec();
        all.push(Arc::new(Field::new(
            &self.columns.batch_id,
            DataType::Int64,
            true,
        )));
        all.push(Arc::new(Field::new(
            &self.columns.ingested_at,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )));
        all.push(Arc::new(Field::new(
            &self.columns.source_system,
            DataType::Utf8,
            true,
        )));
        Arc::new(Schema::new(all))
    }

    /// `batch` with the metadata columns of batch `number` landed at `ingested_at`.
    pub(crate) fn with_metadata(
        &self,
        batch: &RecordBatch,
        number: i64,
        ingested_at: i64,
    ) -> Result<RecordBatch, IngestError> {
        let rows = batch.num_rows();
        let schema = self.with_metadata_fields(batch.schema().fields());
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(Int64Array::from_value(number, rows)));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_value(ingested_at, rows).with_timezone("UTC"),
        ));
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(self.source_system.as_str(), rows),
        )));
        RecordBatch::try_new(schema, columns).map_err(|err| IngestError::Internal(err.to_string()))
    }
}

/// Writes one chunk's rows as Parquet files in the table's folder; nothing is visible until
/// [`BronzeTable::commit`].
pub struct ChunkWriter {
    uri: String,
    data_schema: Option<SchemaRef>,
    landing: Landing,
    batch: i64,
    ingested_at: i64,
    writer: Option<RecordBatchWriter>,
    adds: Vec<Add>,
    rows: u64,
    rejects: Vec<Reject>,
}

struct Finished {
    adds: Vec<Add>,
    rejects: Vec<Reject>,
    rows: u64,
    data_schema: Option<SchemaRef>,
}

impl ChunkWriter {
    /// Another writer for the same chunk (a parallel reader's), with the same columns.
    pub fn part(&self) -> ChunkWriter {
        ChunkWriter {
            uri: self.uri.clone(),
            data_schema: self.data_schema.clone(),
            landing: self.landing.clone(),
            batch: self.batch,
            ingested_at: self.ingested_at,
            writer: None,
            adds: Vec::new(),
            rows: 0,
            rejects: Vec::new(),
        }
    }

    /// The number of the batch this chunk becomes.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// The table's data columns as this chunk has them so far (none before a first write
    /// to a new table).
    pub fn data_schema(&self) -> Option<&SchemaRef> {
        self.data_schema.as_ref()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Lands `batch`: fits it to the table's columns (schema drift) and adds the metadata
    /// columns.
    ///
    /// # Errors
    /// [`IngestError::Drift`] when it does not fit; a write failure.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), IngestError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (batch, schema) = drift::conform(&batch, self.data_schema.as_ref(), self.landing.drift)
            .map_err(|DriftError(reason)| IngestError::Drift {
                table: self.landing.source_name.clone(),
                reason,
            })?;
        if self.data_schema.as_ref() != Some(&schema) {
            // New columns: the files so far keep the old ones (Delta reads them as NULL).
            self.flush().await?;
            self.data_schema = Some(schema);
        }
        let batch = self
            .landing
            .with_metadata(&batch, self.batch, self.ingested_at)?;
        self.rows += batch.num_rows() as u64;
        if self.writer.is_none() {
            let writer = RecordBatchWriter::try_new(&self.uri, batch.schema(), None, None)
                .map_err(|source| self.delta_error(source))?
                .with_writer_properties(strata_storage::delta_files::writer_properties());
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("created above");
        let written = writer.write(batch).await;
        written.map_err(|source| self.delta_error(source))
    }

    /// Keeps a record that could not be read for the quarantine table, or under
    /// `on_bad_record: fail` fails the load naming it.
    ///
    /// # Errors
    /// [`IngestError::BadRecord`] under `on_bad_record: fail`.
    pub fn reject(&mut self, reject: Reject) -> Result<(), IngestError> {
        match self.landing.bad_records {
            BadRecordPolicy::Quarantine => {
                tracing::warn!(source = %self.landing.source_name, position = %reject.position, reason = %reject.reason, "record quarantined");
                self.rejects.push(reject);
                Ok(())
            }
            BadRecordPolicy::Fail => Err(IngestError::BadRecord {
                source_name: self.landing.source_name.clone(),
                position: reject.position,
                reason: reject.reason,
            }),
        }
    }

    async fn flush(&mut self) -> Result<(), IngestError> {
        if let Some(mut writer) = self.writer.take() {
            let adds = writer.flush().await;
            self.adds
                .extend(adds.map_err(|source| self.delta_error(source))?);
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Finished, IngestError> {
        self.flush().await?;
        Ok(Finished {
            adds: self.adds,
            rejects: self.rejects,
            rows: self.rows,
            data_schema: self.data_schema,
        })
    }

    fn delta_error(&self, source: DeltaTableError) -> IngestError {
        IngestError::Delta {
            location: self.uri.clone(),
            source,
        }
    }
}

/// Commits `adds` to the table at `uri` (creating it) with `schema`, a table property, and
/// the application transaction `transaction` — unless the table holds that transaction's
/// version already (the commit was done before a crash), in which case nothing is committed.
pub(crate) async fn commit_files(
    uri: &str,
    table: Option<&DeltaTable>,
    schema: &SchemaRef,
    adds: Vec<Add>,
    property: Option<(&str, String)>,
    transaction: &Transaction,
) -> Result<i64, IngestError> {
    let delta_error = |source| IngestError::Delta {
        location: uri.to_string(),
        source,
    };
    let schema: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|err| delta_error(DeltaTableError::from(err)))?;
    let adds: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let properties = CommitProperties::default().with_application_transaction(transaction.clone());
    let Some(table) = table else {
        let configuration: HashMap<String, Option<String>> = property
            .into_iter()
            .map(|(key, value)| (key.to_string(), Some(value)))
            .collect();
        let created = deltalake::operations::create::CreateBuilder::new()
            .with_location(uri)
            .with_columns(schema.fields().cloned())
            .with_configuration(configuration)
            // Strata's own property (strata.ingest.state) is not a Delta one.
            .with_raise_if_key_not_exists(false)
            .with_actions(adds)
            .with_commit_properties(properties)
            .await
            .map_err(delta_error)?;
        return Ok(created
            .version()
            .and_then(|version| i64::try_from(version).ok())
            .unwrap_or(0));
    };
    let snapshot = table.snapshot().map_err(delta_error)?;
    let done = snapshot
        .transaction_version(table.log_store().as_ref(), transaction.app_id.clone())
        .await
        .map_err(delta_error)?;
    if done.is_some_and(|version| version >= transaction.version) {
        return Ok(i64::try_from(snapshot.version()).unwrap_or(i64::MAX));
    }
    let mut metadata = snapshot.metadata().clone();
    if snapshot.schema().as_ref() != &schema {
        metadata = metadata
            .with_schema(&schema)
            .map_err(|err| delta_error(DeltaTableError::from(err)))?;
    }
    if let Some((key, value)) = property {
        metadata = metadata
            .add_config_key(key.to_string(), value)
            .map_err(|err| delta_error(DeltaTableError::from(err)))?;
    }
    let mut actions = Vec::with_capacity(adds.len() + 1);
    if &metadata != snapshot.metadata() {
        actions.push(Action::Metadata(metadata));
    }
    actions.extend(adds);
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    let committed = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(delta_error)?;
    Ok(i64::try_from(committed.version()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quarantine::Reject;
    use crate::spec::{BadRecordPolicy, DriftPolicy, MetadataColumns};

    fn landing(bad_records: BadRecordPolicy) -> Landing {
        Landing {
            source_name: "src.t".into(),
            drift: DriftPolicy::AppendNewColumns,
            bad_records,
            columns: MetadataColumns::default(),
            source_system: "test".into(),
        }
    }

    fn ids(values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from(values.to_vec())) as ArrayRef,
        )])
        .unwrap()
    }

    /// Rows of the Delta table at `uri`, from its log's file statistics.
    async fn count(uri: &str) -> usize {
        let Some(table) = strata_storage::open_delta_table(uri).await.unwrap() else {
            return 0;
        };
        let snapshot = table.snapshot().unwrap();
        snapshot
            .log_data()
            .into_iter()
            .map(|file| file.num_records().unwrap())
            .sum()
    }

    /// A bronze table in a new folder (kept alive by the returned guard).
    async fn fresh_table(policy: BadRecordPolicy) -> (tempfile::TempDir, String, BronzeTable) {
        let folder = tempfile::tempdir().unwrap();
        let uri = url::Url::from_directory_path(folder.path().join("bronze"))
            .unwrap()
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let table = BronzeTable::open(&uri, "src.t", landing(policy))
            .await
            .unwrap();
        (folder, uri, table)
    }

    #[tokio::test]
    async fn a_chunk_lands_with_its_position_or_not_at_all() {
        let (_folder, uri, mut table) = fresh_table(BadRecordPolicy::Quarantine).await;
        let uri = uri.as_str();
        let mut chunk = table.begin_chunk();
        chunk.write(ids(&[1, 2, 3])).await.unwrap();
        let committed = table
            .commit(vec![chunk], serde_json::json!({"after": 3}))
            .await
            .unwrap();
        assert_eq!((committed.batch, committed.rows), (1, 3));

        // A chunk written but never committed (the agent died) leaves no trace.
        let mut lost = table.begin_chunk();
        lost.write(ids(&[4, 5])).await.unwrap();
        lost.flush().await.unwrap();
        drop(lost);
        let reopened = BronzeTable::open(uri, "src.t", landing(BadRecordPolicy::Quarantine))
            .await
            .unwrap();
        assert_eq!(reopened.state().batch, 1);
        assert_eq!(reopened.state().position, serde_json::json!({"after": 3}));
        assert_eq!(count(uri).await, 3);

        // The redone chunk lands once, in parts, with a new column in one of them.
        let mut table = reopened;
        let first = table.begin_chunk();
        let mut second = first.part();
        let mut first = first;
        first.write(ids(&[4])).await.unwrap();
        let wider = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![5])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec!["five"])) as ArrayRef,
            ),
        ])
        .unwrap();
        second.write(wider).await.unwrap();
        let committed = table
            .commit(vec![first, second], serde_json::json!({"after": 5}))
            .await
            .unwrap();
        assert_eq!((committed.batch, committed.rows), (2, 2));
        assert_eq!(count(uri).await, 5);
        let schema = table.data_schema.clone().unwrap();
        assert!(schema.field_with_name("name").is_ok());

        // A full refresh empties the table and forgets the position; batches go on counting.
        table.reset().await.unwrap();
        assert_eq!(count(uri).await, 0);
        assert_eq!(table.state().position, serde_json::Value::Null);
        assert_eq!(table.begin_chunk().batch(), 3);
    }

    #[tokio::test]
    async fn bad_records_are_quarantined_or_fail_the_load() {
        let (_folder, uri, mut table) = fresh_table(BadRecordPolicy::Quarantine).await;
        let uri = uri.as_str();
        let mut chunk = table.begin_chunk();
        chunk
            .reject(Reject::new("f.csv:2".into(), "bad", Some("x,y")))
            .unwrap();
        chunk.write(ids(&[1])).await.unwrap();
        let committed = table
            .commit(vec![chunk], serde_json::json!(1))
            .await
            .unwrap();
        assert_eq!(committed.quarantined, 1);
        assert_eq!(count(&crate::quarantine::uri(uri)).await, 1);

        let strict = BronzeTable::open(uri, "src.t", landing(BadRecordPolicy::Fail))
            .await
            .unwrap();
        let mut chunk = strict.begin_chunk();
        let error = chunk
            .reject(Reject::new("f.csv:3".into(), "bad", None))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("f.csv:3") && error.contains("on_bad_record"),
            "{error}"
        );
    }
}
