//! Wire ↔ domain: every conversion between `strata.v1` messages and the coordinator's own
//! types, in one place — run states and records out, submissions in.

use std::path::PathBuf;

use strata_proto::v1 as pb;

use crate::prepare::{RunSpec, SubmittedEnv, resource_types};
use crate::run::NodeResult;
use crate::store::{RunState, StoredRun};

impl From<RunState> for pb::RunStatus {
    fn from(state: RunState) -> pb::RunStatus {
        match state {
            RunState::Queued => pb::RunStatus::Queued,
            RunState::Running => pb::RunStatus::Running,
            RunState::Succeeded => pb::RunStatus::Succeeded,
            RunState::Failed => pb::RunStatus::Failed,
            RunState::Cancelled => pb::RunStatus::Cancelled,
        }
    }
}

/// A node's record as the API shows it.
impl From<&NodeResult> for pb::NodeState {
    fn from(result: &NodeResult) -> pb::NodeState {
        pb::NodeState {
            unique_id: result.unique_id.clone(),
            name: result.name.clone(),
            resource_type: result.resource_type.as_str().to_string(),
            status: result.status.as_str().to_string(),
            rows: result.rows,
            bytes: result.bytes,
            duration_ms: result.duration_ms,
            attempts: result.attempts,
            error: result.error.clone().unwrap_or_default(),
            version: result.version.unwrap_or(-1),
            workers: result.workers.clone(),
            failures: result.failures.unwrap_or(0),
        }
    }
}

/// A node without a record yet: `running` or `pending`.
pub(crate) fn pending_node(unique_id: &str, status: &str) -> pb::NodeState {
    let name = unique_id.rsplit('.').next().unwrap_or(unique_id);
    let resource_type = unique_id.split('.').next().unwrap_or("model");
    pb::NodeState {
        unique_id: unique_id.to_string(),
        name: name.to_string(),
        resource_type: resource_type.to_string(),
        status: status.to_string(),
        version: -1,
        ..pb::NodeState::default()
    }
}

/// A stored run as the API shows it: finished nodes with their records, the others
/// `running` or `pending`. The variables its submission sent are not shown.
impl From<&StoredRun> for pb::Run {
    fn from(run: &StoredRun) -> pb::Run {
        let mut nodes: Vec<pb::NodeState> = Vec::new();
        for id in &run.selected {
            nodes.push(match run.finished.get(id) {
                Some(result) => pb::NodeState::from(result),
                None if run.started.contains_key(id) => pending_node(id, "running"),
                None => pending_node(id, "pending"),
            });
        }
        for (id, result) in &run.finished {
            if !run.selected.contains(id) {
                nodes.push(pb::NodeState::from(result));
            }
        }
        pb::Run {
            run_id: run.run_id.clone(),
            status: pb::RunStatus::from(run.state) as i32,
            command: run.spec.command.clone(),
            project: run.spec.project_dir.display().to_string(),
            select: run.spec.select.clone(),
            exclude: run.spec.exclude.clone(),
            idempotency_key: run.idempotency_key.clone(),
            submitted_at_ms: run.submitted_at_ms,
            started_at_ms: run.started_at_ms,
            finished_at_ms: run.finished_at_ms,
            error: run.error.clone(),
            nodes,
            trace_id: run.trace_id.clone(),
            dry_run: run.dry_run,
        }
    }
}

/// A `SubmitRun` request with what it does not carry: the folder its project is in (given,
/// or unpacked from its archive) and the service's defaults it overrides.
pub(crate) struct Submission<'a> {
    /// The request.
    pub request: &'a pb::SubmitRunRequest,
    /// The project folder on this machine.
    pub project_dir: PathBuf,
    /// The service's run defaults.
    pub defaults: &'a RunSpec,
}

/// A submission that cannot become a run.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    /// The command is not one Strata runs.
    #[error("unknown command '{command}': use build, run, seed, snapshot, test or ingest")]
    UnknownCommand {
        /// The command asked for.
        command: String,
    },
    /// A config override names no run setting.
    #[error(
        "unknown config override '{key}': use warehouse, target, threads, shuffle_partitions, retries, task_timeout_secs or fail_fast"
    )]
    UnknownOverride {
        /// The key.
        key: String,
    },
    /// A config override's value has the wrong type.
    #[error("config override {key}={value}: expected {expected}")]
    BadOverride {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// The run a submission asks for, on top of the service's defaults.
impl TryFrom<Submission<'_>> for RunSpec {
    type Error = SubmissionError;

    fn try_from(submission: Submission<'_>) -> Result<RunSpec, SubmissionError> {
        let request = submission.request;
        let mut spec = RunSpec {
            project_dir: submission.project_dir,
            select: request.select.clone(),
            exclude: request.exclude.clone(),
            vars: (!request.vars.trim().is_empty()).then(|| request.vars.clone()),
            full_refresh: request.full_refresh,
            env: SubmittedEnv(request.env.clone().into_iter().collect()),
            ..submission.defaults.clone()
        };
        if !request.command.is_empty() {
            spec.command = request.command.clone();
        }
        if resource_types(&spec.command).is_none() {
            return Err(SubmissionError::UnknownCommand {
                command: spec.command,
            });
        }
        for (key, value) in &request.config_overrides {
            apply_override(&mut spec, key, value)?;
        }
        Ok(spec)
    }
}

/// Sets one run setting from a `config_overrides` entry.
fn apply_override(spec: &mut RunSpec, key: &str, value: &str) -> Result<(), SubmissionError> {
    let bad = |expected| SubmissionError::BadOverride {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    };
    let number = || value.parse::<u64>().map_err(|_| bad("a whole number"));
    match key {
        "warehouse" => spec.warehouse = Some(value.to_string()),
        "target" => spec.target = value.to_string(),
        "threads" => spec.threads = usize::try_from(number()?).unwrap_or(usize::MAX).max(1),
        "shuffle_partitions" => {
            spec.shuffle_partitions = usize::try_from(number()?).unwrap_or(usize::MAX);
        }
        "retries" => spec.retries = u32::try_from(number()?).unwrap_or(u32::MAX),
        "task_timeout_secs" => spec.task_timeout_secs = number()?,
        "fail_fast" => {
            spec.fail_fast = value.parse::<bool>().map_err(|_| bad("true or false"))?;
        }
        _ => {
            return Err(SubmissionError::UnknownOverride {
                key: key.to_string(),
            });
        }
    }
    Ok(())
}
