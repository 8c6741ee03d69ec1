//! Strata coordinator.
//!
//! Owns a run from submission to its record: it compiles the project with `strata-core`, plans
//! each selected model into tasks, publishes them on the job queue, consumes results, commits
//! each model's files in one Delta transaction and runs its tests. The execution issue fills
//! this crate; until then `strata compile` covers everything up to planning.

#![warn(missing_docs)]
