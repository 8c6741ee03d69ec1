//! Strata worker.
//!
//! A stateless process that takes tasks from the job queue, executes them with DataFusion,
//! writes Parquet files under the model's table location and reports the result. It keeps
//! nothing a run needs after its task is committed, except shuffle outputs it serves over Arrow
//! Flight. Built in the execution and distribution issues.

#![warn(missing_docs)]
