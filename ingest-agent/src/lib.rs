//! Strata ingest agent.
//!
//! Lands data from HTTP APIs, files and external databases (PostgreSQL, MySQL) into bronze
//! tables. Built in the ingestion issue.

#![warn(missing_docs)]
