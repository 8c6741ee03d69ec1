//! The commit of a model's output: one Delta transaction with exactly the files of the
//! winning attempts. Before it, nothing a worker wrote is visible; after it, all of it is.

use std::collections::HashMap;

use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, MetadataExt, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use strata_proto::v1::WrittenFile;

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The table location is not a valid URL.
    #[error("invalid table location '{location}': {reason}")]
    InvalidLocation {
        /// The location.
        location: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The table's storage could not be listed.
    #[error(transparent)]
    Storage(strata_storage::StorageError),
    /// The workers reported a schema that is not valid Delta schema JSON.
    #[error("the model's schema is invalid: {0}")]
    InvalidSchema(String),
    /// delta-rs refused or failed the transaction (conflict, storage error).
    #[error("delta commit of {location} failed: {source}")]
    Delta {
        /// The table.
        location: String,
        /// The cause.
        source: DeltaTableError,
    },
}

/// Opens a Delta table, or returns `None` when there is none at the location yet.
///
/// # Errors
/// Returns an error for an invalid location or a storage failure.
pub async fn open_table(location: &str) -> Result<Option<DeltaTable>, CommitError> {
    strata_storage::install();
    let url = url::Url::parse(location).map_err(|err| CommitError::InvalidLocation {
        location: location.to_string(),
        reason: err.to_string(),
    })?;
    if !strata_storage::delta_table_exists(location)
        .await
        .map_err(CommitError::Storage)?
    {
        return Ok(None);
    }
    let builder = DeltaTableBuilder::from_url(url).map_err(|source| CommitError::Delta {
        location: location.to_string(),
        source,
    })?;
    match builder.load().await {
        Ok(table) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(source) => Err(CommitError::Delta {
            location: location.to_string(),
            source,
        }),
    }
}

fn add_action(file: &WrittenFile, now_ms: i64) -> Add {
    Add {
        path: file.path.clone(),
        partition_values: file
            .partition_values
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        size: file.size_bytes,
        modification_time: now_ms,
        data_change: true,
        stats: (!file.stats_json.is_empty()).then(|| file.stats_json.clone()),
        ..Add::default()
    }
}

/// Adds `files` to the table in one transaction (an incremental append) and returns the new
/// version. A changed schema (new columns) is committed with the files.
///
/// # Errors
/// Returns an error when the schema is invalid or the transaction fails.
pub async fn append(
    location: &str,
    schema_json: &str,
    partition_by: &[String],
    files: &[WrittenFile],
    run_id: &str,
) -> Result<i64, CommitError> {
    write(
        location,
        schema_json,
        partition_by,
        files,
        run_id,
        SaveMode::Append,
    )
    .await
}

/// Replaces the table's content with `files` in one transaction (creating the table on first
/// use) and returns the new version.
///
/// # Errors
/// Returns an error when the schema is invalid or the transaction fails.
pub async fn overwrite(
    location: &str,
    schema_json: &str,
    partition_by: &[String],
    files: &[WrittenFile],
    run_id: &str,
) -> Result<i64, CommitError> {
    write(
        location,
        schema_json,
        partition_by,
        files,
        run_id,
        SaveMode::Overwrite,
    )
    .await
}

async fn write(
    location: &str,
    schema_json: &str,
    partition_by: &[String],
    files: &[WrittenFile],
    run_id: &str,
    mode: SaveMode,
) -> Result<i64, CommitError> {
    let schema: StructType = serde_json::from_str(schema_json)
        .map_err(|err| CommitError::InvalidSchema(err.to_string()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    let adds: Vec<Action> = files
        .iter()
        .map(|file| Action::Add(add_action(file, now_ms)))
        .collect();
    let delta_error = |source| CommitError::Delta {
        location: location.to_string(),
        source,
    };
    let metadata = HashMap::from([(
        String::from("strata.run_id"),
        serde_json::Value::from(run_id),
    )]);
    match open_table(location).await? {
        None => {
            let url = url::Url::parse(location).map_err(|err| CommitError::InvalidLocation {
                location: location.to_string(),
                reason: err.to_string(),
            })?;
            let table = deltalake::operations::create::CreateBuilder::new()
                .with_location(url.as_str())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(partition_by.to_vec())
                .with_actions(adds)
                .with_commit_properties(
                    deltalake::kernel::transaction::CommitProperties::default()
                        .with_metadata(metadata),
                )
                .await
                .map_err(delta_error)?;
            Ok(table
                .version()
                .and_then(|version| i64::try_from(version).ok())
                .unwrap_or(0))
        }
        Some(table) => {
            let snapshot = table.snapshot().map_err(delta_error)?;
            let mut actions: Vec<Action> = if mode == SaveMode::Overwrite {
                snapshot
                    .log_data()
                    .into_iter()
                    .map(|file| Action::Remove(file.remove_action(true)))
                    .collect()
            } else {
                Vec::new()
            };
            if snapshot.schema().as_ref() != &schema
                || snapshot.metadata().partition_columns() != partition_by
            {
                let metadata_action = snapshot
                    .metadata()
                    .clone()
                    .with_schema(&schema)
                    .map_err(|err| delta_error(DeltaTableError::from(err)))?;
                actions.push(Action::Metadata(metadata_action));
            }
            actions.extend(adds);
            let operation = DeltaOperation::Write {
                mode,
                partition_by: (!partition_by.is_empty()).then(|| partition_by.to_vec()),
                predicate: None,
            };
            let committed = CommitBuilder::default()
                .with_actions(actions)
                .with_app_metadata(metadata)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(delta_error)?;
            Ok(i64::try_from(committed.version()).unwrap_or(i64::MAX))
        }
    }
}
