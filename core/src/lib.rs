//! Strata core.
pub mod config;
pub mod diagnostics;
pub mod jinja;
pub mod project;
pub mod properties;
pub mod yaml;
