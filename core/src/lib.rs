//! Strata core: what every Strata process shares.
//!
//! Today that is the project compiler — everything from a dbt-style project folder to a
//! manifest of compiled SQL:
//!
//! - [`project`] reads `dbt_project.yml` / `strata_project.yml`, models, seeds, macros, tests
//!   and property files, and the installed packages, collecting every problem as a
//!   [`diagnostics::ProjectDiagnostic`]; [`packages`] installs the declared packages
//!   (`strata deps`);
//! - [`properties`] and [`config`] read sources, columns, tests and layered configuration;
//! - [`jinja`] renders SQL with dbt's functions (`ref`, `source`, `config`, `var`, `env_var`,
//!   `is_incremental`, `this`, `target`), the project's and packages' macros, dispatch and
//!   dbt's own macros;
//! - [`compiler`] resolves configuration, inlines ephemeral models, writes test SQL
//!   ([`data_tests`]) and checks the DAG ([`dag`]), producing a [`manifest::Manifest`];
//! - [`selection`] applies dbt's `--select` / `--exclude` syntax to a manifest;
//! - [`settings`] holds every process's settings, layered once (defaults < file <
//!   `STRATA__*` environment < flags), with defaults fitted to the [`machine`];
//! - [`queue`] is the job queue between coordinator and workers, with its in-memory
//!   implementation and the conformance suite every implementation passes.

#![warn(missing_docs)]

pub mod blocks;
pub mod compiler;
pub mod config;
pub mod dag;
pub mod data_tests;
pub mod diagnostics;
pub mod export;
pub mod invocation;
pub mod jinja;
pub mod machine;
pub mod manifest;
pub mod packages;
pub mod project;
pub mod properties;
pub mod queue;
pub mod retry;
pub mod selection;
pub mod settings;
pub mod snapshots;
pub mod yaml;
