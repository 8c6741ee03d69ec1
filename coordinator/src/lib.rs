//! Strata coordinator.
//!
//! Owns a run from its request to its record: it turns each selected node of a compiled
//! project into tasks on the job queue, collects the workers' results, retries transient
//! failures with backoff, commits each model's files in one Delta transaction (nothing is
//! visible before it), runs tests, and skips what is downstream of a failure.

#![warn(missing_docs)]

pub mod commit;
pub mod partitioning;
pub mod prepare;
pub mod run;
pub mod service;
pub mod store;
pub mod warehouse;

pub use run::{
    Coordinator, NodeResult, NodeStatus, Resume, RunControl, RunEvent, RunRecord, RunRequest,
    inputs_for,
};
pub use warehouse::Warehouse;
