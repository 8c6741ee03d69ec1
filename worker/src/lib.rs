//! Strata worker.
//!
//! A stateless executor of tasks: it registers a task's inputs (files, Delta tables pinned at
//! a version, view definitions) in a DataFusion session running under a memory-pool limit,
//! runs the task's SQL, and streams the output into Parquet files of the model's Delta table.
//! It reports the files; only the coordinator commits them, so nothing a worker writes is
//! visible until the model's single commit.

#![warn(missing_docs)]

pub mod distinct_rewrite;
pub mod error;
pub mod execution;
pub mod first_row;
pub mod incremental;
pub mod service;
pub mod shuffle;

pub use error::{Class, TaskError};
pub use execution::{ExecutionConfig, ShuffleService, run_task};
pub use service::{WorkerConfig, serve};
