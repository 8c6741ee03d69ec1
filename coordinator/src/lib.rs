//! Strata coordinator.
//!
//! Owns a run from its request to its record: it turns each selected node of a compiled
//! project into tasks on the job queue, collects the workers' results, retries transient
//! failures with backoff, commits each model's files in one Delta transaction (nothing is
//! visible before it), runs tests, and skips what is downstream of a failure.

#![warn(missing_docs)]

pub mod commit;
mod driver;
pub mod metrics;
pub mod partitioning;
pub mod planning;
pub mod prepare;
pub mod process;
pub mod run;
mod scheduler;
pub mod service;
mod spans;
pub mod store;
pub mod warehouse;
pub mod wire;

pub use driver::Coordinator;
pub use planning::{PlanError, inputs_for};
pub use process::{CoordinatorError, RunningCoordinator, run_on_broker, start, start_on};
pub use run::{
    NodeResult, NodeStatus, Resume, RunControl, RunError, RunEvent, RunRecord, RunRequest,
};
pub use warehouse::Warehouse;
