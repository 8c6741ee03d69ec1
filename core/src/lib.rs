//! Strata core.
pub mod config;
pub mod diagnostics;
pub mod project;
pub mod yaml;
