//! The commit of a model's output: one Delta transaction with exactly the files of the
//! winning attempts. Before it, nothing a worker wrote is visible; after it, all of it is.

use std::collections::HashMap;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
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
    /// Another run committed to the table at the same time, and this commit could not be
    /// retried: nothing of this model was committed; the table holds the other run's version.
    #[error(
        "another run committed {location} concurrently, so this model's output was not committed (the table holds the other run's version); run the model again ({detail})"
    )]
    Conflict {
        /// The table.
        location: String,
        /// delta-rs' account of the conflict.
        detail: String,
    },
    /// delta-rs refused or failed the transaction (storage error).
    #[error("delta commit of {location} failed: {source}")]
    Delta {
        /// The table.
        location: String,
        /// The cause.
        source: DeltaTableError,
    },
}

/// Who commits: a node of a run. Recorded in the commit as a Delta application transaction
/// (`txn` action), so committing the same node of the same run twice is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitId {
    /// The run.
    pub run_id: String,
    /// The node's unique id.
    pub unique_id: String,
    /// Whether a commit that lost a race may be retried on the newer version (not for an
    /// incremental model: its output depends on the version it read).
    pub retry_conflicts: bool,
}

impl CommitId {
    /// The Delta application id: `strata:<run>:<node>`.
    pub fn app_id(&self) -> String {
        format!("strata:{}:{}", self.run_id, self.unique_id)
    }
}

/// Opens a Delta table, or returns `None` when there is none at the location yet.
///
/// # Errors
/// Returns an error for an invalid location or a storage failure.
pub async fn open_table(location: &str) -> Result<Option<DeltaTable>, CommitError> {
    strata_storage::open_delta_table(location)
        .await
        .map_err(|err| match err {
            strata_storage::StorageError::Delta { location, source } => CommitError::Delta {
                location,
                source: *source,
            },
            other => CommitError::Storage(other),
        })
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
    commit_id: &CommitId,
) -> Result<i64, CommitError> {
    write(
        location,
        schema_json,
        partition_by,
        files,
        commit_id,
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
    commit_id: &CommitId,
) -> Result<i64, CommitError> {
    write(
        location,
        schema_json,
        partition_by,
        files,
        commit_id,
        SaveMode::Overwrite,
    )
    .await
}

/// Commits, retrying a commit that lost a race with another run's commit to the same table:
/// a whole-table overwrite (or an append) is as valid on the newer version. Up to
/// [`CONFLICT_RETRIES`] tries; then, or for an incremental model (whose output was computed
/// from the version it read), a [`CommitError::Conflict`].
async fn write(
    location: &str,
    schema_json: &str,
    partition_by: &[String],
    files: &[WrittenFile],
    commit_id: &CommitId,
    mode: SaveMode,
) -> Result<i64, CommitError> {
    let mut attempt = 1;
    loop {
        match write_once(location, schema_json, partition_by, files, commit_id, mode).await {
            Err(CommitError::Delta { location, source }) if is_conflict(&source) => {
                if !commit_id.retry_conflicts || attempt >= CONFLICT_RETRIES {
                    return Err(CommitError::Conflict {
                        location,
                        detail: source.to_string(),
                    });
                }
                tracing::info!(%location, attempt, "commit conflict with another run; retrying");
                attempt += 1;
                tokio::time::sleep(CONFLICT_BACKOFF.delay(attempt)).await;
            }
            other => return other,
        }
    }
}

/// Commit attempts of a model that races other runs.
const CONFLICT_RETRIES: u32 = 5;

/// Waits between commit attempts that lost a race.
const CONFLICT_BACKOFF: strata_core::retry::Backoff = strata_core::retry::Backoff::new(
    std::time::Duration::from_millis(50),
    std::time::Duration::from_secs(2),
);

/// True when another writer committed to the table between our read and our commit.
fn is_conflict(error: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    match error {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::VersionAlreadyExists(_)
                | TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
        ),
        // Two runs creating the table at once: the loser sees it exists.
        other => other.to_string().contains("already exists"),
    }
}

async fn write_once(
    location: &str,
    schema_json: &str,
    partition_by: &[String],
    files: &[WrittenFile],
    commit_id: &CommitId,
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
        serde_json::Value::from(commit_id.run_id.as_str()),
    )]);
    let transaction = Transaction::new(commit_id.app_id(), 1);
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
                        .with_metadata(metadata)
                        .with_application_transaction(transaction),
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
            // This run committed this node already (a coordinator restarted between the
            // commit and recording it): committing again would append the rows twice.
            if snapshot
                .transaction_version(table.log_store().as_ref(), commit_id.app_id())
                .await
                .map_err(delta_error)?
                .is_some()
            {
                return Ok(i64::try_from(snapshot.version()).unwrap_or(i64::MAX));
            }
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
            let committed = CommitBuilder::from(
                CommitProperties::default().with_application_transaction(transaction),
            )
            .with_actions(actions)
            .with_app_metadata(metadata)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(delta_error)?;
            Ok(i64::try_from(committed.version()).unwrap_or(i64::MAX))
        }
    }
}
