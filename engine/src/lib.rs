//! Strata's execution engine, shared by the coordinator (which plans) and the worker (which
//! executes).
//!
//! - [`session`]: a DataFusion session under a memory-pool limit with Strata's optimizer rules
//!   and operators, and a task's inputs registered as tables;
//! - [`distinct_rewrite`], [`first_row`]: the rules and the deduplication operator;
//! - [`division`]: fractional integer division, as in DuckDB;
//! - [`duckdb_functions`]: DuckDB functions dbt-duckdb projects call (`strftime`, `date_diff`,
//!   `count_if`); [`duckdb_series`]: `generate_series` / `range` with DuckDB's column names;
//!   [`duckdb_syntax`]: DuckDB syntax rewritten before planning (`interval (n) day`);
//! - [`identifiers`]: unquoted identifiers resolving to mixed-case columns, as in DuckDB;
//! - [`compile_queries`]: `run_query` and `statement` blocks answered while compiling;
//! - [`memory`]: the process's real allocation (jemalloc), beside the pools;
//! - [`stages`]: cutting a plan at its hash repartitions into map and final stages;
//! - [`codec`]: Strata's plan nodes on the wire;
//! - [`exchange`]: the Flight client side of shuffles and the cluster secret;
//! - [`error`]: task failures and their class.
//!
//! It must not import the worker or the coordinator.

#![warn(missing_docs)]

pub mod codec;
pub mod compile_queries;
pub mod distinct_rewrite;
pub mod division;
pub mod duckdb_functions;
pub mod duckdb_series;
pub mod duckdb_syntax;
pub mod error;
pub mod exchange;
pub mod first_row;
pub mod identifiers;
pub mod lenient_casts;
pub mod memory;
pub mod output_names;
pub mod session;
pub mod stages;

pub use error::{Class, TaskError};
pub use session::{EngineConfig, plan_shuffle, query, register_inputs, session};
