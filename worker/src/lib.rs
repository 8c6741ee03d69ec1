//! Strata worker.
//!
//! A stateless executor of tasks: it registers a task's inputs (files, Delta tables pinned at
//! a version, view definitions) in a session of the engine (`strata-engine`) running under a
//! memory-pool limit, runs the task's SQL or stage plan, and streams the output into Parquet
//! files of the model's Delta table or into shuffle files served over Flight. It reports the
//! files; only the coordinator commits them, so no table row a worker writes is visible until
//! the model's single commit. (A model materialized `external` also gets one file of its rows
//! at its location, written by its task before that commit, as dbt-duckdb writes it before its
//! view.) Each task's real memory is sampled beside its pool, and the task stops clearly when
//! the process outgrows its pools (`task_memory`).

#![warn(missing_docs)]

pub mod execution;
mod export;
pub mod incremental;
pub mod metrics;
pub mod process;
pub mod seeds;
pub mod service;
pub mod shuffle;
pub mod snapshot;
mod task_memory;

pub use execution::{ExecutionConfig, ShuffleService, run_task};
pub use process::{RunningWorker, WorkerError, start, start_on};
pub use service::{TaskLoop, TaskRunner, WorkerConfig, serve, serve_with};
pub use strata_engine::{Class, TaskError};
