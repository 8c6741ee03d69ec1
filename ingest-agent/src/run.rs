//! Landing one source table: its connector reads it chunk by chunk, and each chunk is
//! committed with the source's new position, so that a landing cut short anywhere goes on
//! from the last commit.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::IngestError;
use crate::connector::Connector;
use crate::database::DatabaseConnector;
use crate::landing::{BronzeTable, Landing};
use crate::spec::{ConnectorSpec, IngestSpec};

/// One source table to land.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    /// `source.table`.
    pub name: String,
    /// Its bronze table.
    pub table_uri: String,
    /// Its ingest block.
    pub spec: IngestSpec,
}

/// Tells a landing to stop after the chunk it is committing: its agent is draining. The rest
/// lands on the task's next attempt, on another agent, from the last commit.
#[derive(Debug, Clone, Default)]
pub struct Draining(Option<tokio::sync::watch::Receiver<bool>>);

impl Draining {
    /// Stops landings once `stop` turns true.
    pub fn on(stop: tokio::sync::watch::Receiver<bool>) -> Draining {
        Draining(Some(stop))
    }

    /// True once the agent asked its landings to stop.
    pub fn asked(&self) -> bool {
        self.0.as_ref().is_some_and(|stop| *stop.borrow())
    }
}

/// What landing one source table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Commits made (batches).
    pub batches: u32,
    /// Rows landed.
    pub rows: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// The table's version after the last commit.
    pub version: Option<i64>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Lands one source table: chunk after chunk until the source has nothing new, or until
/// `draining` asks it to stop. With `full_refresh`, the bronze table is emptied first and the
/// source landed from the start; relative file paths are under `project_dir`.
///
/// # Errors
/// When the source cannot be read, a chunk cannot be committed, a policy refuses what the
/// source holds, or the landing stopped for a drain; chunks committed before stay, with the
/// position they reached.
pub async fn land(
    target: &IngestTarget,
    project_dir: &Path,
    full_refresh: bool,
    draining: &Draining,
) -> Result<TableReport, IngestError> {
    let started = Instant::now();
    let policies = &target.spec.policies;
    let landing = Landing {
        source_name: target.name.clone(),
        drift: policies.schema_drift,
        bad_records: policies.on_bad_record,
        columns: policies.metadata_columns.clone(),
        source_system: policies
            .source_system
            .clone()
            .unwrap_or_else(|| format!("{}:{}", target.spec.connector.name(), target.name)),
    };
    let mut table = BronzeTable::open(&target.table_uri, &target.name, landing).await?;
    if full_refresh {
        table.reset().await?;
    }
    let mut connector = connector_for(target, project_dir)?;
    let mut report = TableReport::default();
    loop {
        let chunk = table.begin_chunk();
        let Some(read) = connector.read_chunk(table.state(), chunk).await? else {
            break;
        };
        let committed = table.commit(read.parts, read.position).await?;
        tracing::info!(source = %target.name, batch = committed.batch, rows = committed.rows, quarantined = committed.quarantined, version = committed.version, "batch landed");
        report.batches += 1;
        report.rows += committed.rows;
        report.quarantined += committed.quarantined;
        report.version = Some(committed.version);
        if read.last {
            break;
        }
        if draining.asked() {
            return Err(IngestError::Interrupted {
                source_name: target.name.clone(),
                batches: report.batches,
                rows: report.rows,
                quarantined: report.quarantined,
            });
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn connector_for(
    target: &IngestTarget,
    project_dir: &Path,
) -> Result<Box<dyn Connector>, IngestError> {
    let retries = target.spec.policies.retries;
    Ok(match &target.spec.connector {
        ConnectorSpec::Postgres(spec) => Box::new(DatabaseConnector::new(
            spec.clone(),
            crate::postgres::Postgres::new(spec.connection.clone(), retries, &target.name),
            &target.name,
        )),
        ConnectorSpec::Mysql(spec) => Box::new(DatabaseConnector::new(
            spec.clone(),
            crate::mysql::Mysql::new(spec.connection.clone(), retries, &target.name),
            &target.name,
        )),
        ConnectorSpec::Http(spec) => Box::new(crate::http::HttpConnector::new(
            spec.clone(),
            retries,
            &target.name,
        )?),
        ConnectorSpec::Files(spec) => Box::new(crate::files::FilesConnector::new(
            spec.clone(),
            project_dir,
            &target.name,
        )),
    })
}
