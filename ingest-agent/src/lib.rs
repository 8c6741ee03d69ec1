//! Strata ingest agent: lands PostgreSQL and MySQL/MariaDB tables, HTTP JSON APIs and files
//! into bronze Delta tables, exactly once.
//!
//! A source table with an `ingest:` block in the project's YAML is read by its connector in
//! chunks; each chunk lands as one Delta commit that also records the source's new position
//! (a watermark, the next page, the files seen), so an agent killed at any moment and run
//! again lands every row once. Rows get metadata columns (`_batch_id`, `_ingested_at`,
//! `_source_system`); records that cannot be read go to a quarantine table beside the bronze
//! table. See docs/ingest.md.
//!
//! The role (`strata ingest-agent`, [`start`]) takes ingest tasks from the ingest queue — the
//! coordinator plans one per landed source, before the models that read it — with the same
//! task loop, heartbeats, drain and metrics as a worker; it is the only role that needs
//! network access to the sources and their credentials.

#![warn(missing_docs)]

pub mod agent;
pub mod connector;
pub mod database;
pub mod drift;
pub mod files;
pub mod http;
pub mod landing;
pub mod mysql;
pub mod mysql_tls;
pub mod postgres;
pub mod postgres_tls;
pub mod quarantine;
pub mod run;
pub mod secrets;
pub mod spec;
pub mod state;
pub mod task;

pub use agent::{AgentError, RunningAgent, start, start_on};
pub use run::{Draining, IngestTarget, TableReport, land};
pub use task::{IngestRunner, run_ingest_task};

/// Why a source could not be landed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The `ingest:` block is wrong.
    #[error("{origin}: invalid ingest block: {reason}")]
    Spec {
        /// `file:line` of the source table.
        origin: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A secret reference cannot be resolved.
    #[error("cannot read the secret from {reference}: {reason}")]
    Secret {
        /// The variable or file.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The source cannot be reached or refused the agent, after the retries.
    #[error("cannot reach source {source_name}: {reason}")]
    Connect {
        /// The source table (`source.table`).
        source_name: String,
        /// Why (never the secret itself).
        reason: String,
    },
    /// Reading the source failed.
    #[error("reading source {source_name} failed at {position}: {reason}")]
    Read {
        /// The source table.
        source_name: String,
        /// Where: a file and line, a page, a key range.
        position: String,
        /// Why.
        reason: String,
    },
    /// A bad record under `on_bad_record: fail`.
    #[error(
        "source {source_name} has a bad record at {position}: {reason} (on_bad_record is fail; set it to quarantine to land the rest)"
    )]
    BadRecord {
        /// The source table.
        source_name: String,
        /// Where the record is.
        position: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source's columns changed in a way the drift policy refuses.
    #[error("schema drift in {table}: {reason}")]
    Drift {
        /// The bronze table.
        table: String,
        /// Which columns and what to do.
        reason: String,
    },
    /// The table's recorded ingestion state is unusable.
    #[error("the ingestion state of {table} is unusable: {reason}")]
    State {
        /// The bronze table.
        table: String,
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] strata_storage::StorageError),
    /// A Delta read or commit failed (another agent committing the same table at once is
    /// one cause: run one agent per source).
    #[error("delta table {location}: {source}")]
    Delta {
        /// The table.
        location: String,
        /// delta-rs' error.
        source: deltalake::DeltaTableError,
    },
    /// The agent is draining: the landing stopped after a committed chunk.
    #[error(
        "landing {source_name} stopped after {batches} batches: the ingest agent is draining; the rest lands on the next attempt, from the last commit"
    )]
    Interrupted {
        /// The source table.
        source_name: String,
        /// Batches landed by this attempt.
        batches: u32,
        /// Rows landed by this attempt.
        rows: u64,
        /// Records this attempt quarantined.
        quarantined: u64,
    },
    /// A task that is not an ingest task reached the ingest queue.
    #[error(
        "task {task} is not an ingest task: only ingest tasks belong on the ingest queue (broker.ingest_queue); model, seed and test tasks go to `strata worker` processes on broker.task_queue"
    )]
    Misrouted {
        /// The task's id.
        task: String,
    },
    /// A bug in the agent.
    #[error("internal error in the ingest agent: {0}")]
    Internal(String),
}
