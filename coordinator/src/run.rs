//! One run's request, events and record. A run executes the selected nodes of a compiled
//! project in DAG order, as many at once as dependencies and `threads` allow: each model or
//! seed becomes tasks on the job queue, each model is committed in one Delta transaction
//! before its dependants start, and tests run as tasks too and, with severity `error`, stop
//! the models downstream of what they test (as `dbt build` does). The state machine is in
//! `crate::scheduler`, its driver in `crate::driver`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_core::config::{TestSeverity, parse_condition};
use strata_core::manifest::{Manifest, Node, ResourceType};
use strata_proto::v1::Task;

use crate::warehouse::Warehouse;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The compiled project.
    pub manifest: Arc<Manifest>,
    /// Unique ids of the selected nodes (tests included).
    pub selected: BTreeSet<String>,
    /// Kinds of node this command executes (`run`: models; `seed`: seeds; `build`: all).
    pub resource_types: BTreeSet<ResourceType>,
    /// The project folder, for relative source locations and seed files.
    pub project_dir: PathBuf,
    /// Where tables are written.
    pub warehouse: Warehouse,
    /// Nodes executing at the same time.
    pub threads: usize,
    /// Stop starting nodes after the first failure.
    pub fail_fast: bool,
    /// Retries of a task after a transient failure (a model's `retries` config wins).
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Incremental models and snapshots that fold new rows into their existing table (their
    /// table exists and, for models, this is not a full refresh); the others are built from
    /// scratch.
    pub incremental_models: BTreeSet<String>,
    /// Partitions of a shuffle: a table model whose plan repartitions by hash runs as map and
    /// reduce tasks over this many partitions, exchanging data over Flight. 0 or 1: no
    /// shuffles (embedded mode, where one task already uses every core).
    pub shuffle_partitions: usize,
    /// A running task that sends neither a heartbeat nor a result for this long is taken for
    /// lost (its worker hung, or stopped with its connection open) and retried elsewhere.
    pub task_timeout: Duration,
    /// `--full-refresh`: besides rebuilding incremental models, empty the bronze tables of the
    /// sources the run lands and land them from the start.
    pub full_refresh: bool,
    /// Compiles nodes marked [`strata_core::manifest::Node::deferred_compile`] again when
    /// their parents are built; without it such a node fails with the reason.
    pub recompile: Option<crate::prepare::Recompiler>,
}

impl RunRequest {
    /// Node `unique_id` as the run sees it now: compiled again during the run when it was
    /// (see [`crate::prepare::Recompiler`]), else as the manifest has it.
    pub fn node(&self, unique_id: &str) -> Option<std::borrow::Cow<'_, Node>> {
        if let Some(node) = self
            .recompile
            .as_ref()
            .and_then(|recompiler| recompiler.compiled(unique_id))
        {
            return Some(std::borrow::Cow::Owned(node));
        }
        self.manifest
            .nodes
            .get(unique_id)
            .map(std::borrow::Cow::Borrowed)
    }
}

/// One stage of a shuffled model in the run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// `map` (writes shuffle outputs) or `reduce` (reads them and writes the table).
    pub kind: String,
    /// Tasks of the stage.
    pub tasks: u32,
    /// The workers that ran them.
    pub workers: Vec<String>,
    /// Rows the stage produced.
    pub rows: i64,
    /// Bytes the stage wrote (map: shuffle files served over Flight).
    pub bytes: i64,
}

/// The outcome of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// A model or seed was built.
    Success,
    /// A model or seed failed.
    Error,
    /// Not run because something upstream failed (or `--fail-fast` stopped the run).
    Skipped,
    /// A test found no failing rows (or fewer than its thresholds).
    Pass,
    /// A test failed with severity `warn`, or crossed `warn_if` only.
    Warn,
    /// A test failed with severity `error`.
    Fail,
    /// Not finished because the run was cancelled (nothing of it was committed).
    Cancelled,
}

impl NodeStatus {
    /// True when dependants may run.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Success | Self::Pass | Self::Warn)
    }

    /// The lowercase name used in run records and over gRPC.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Skipped => "skipped",
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The record of one node in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResult {
    /// Unique id.
    pub unique_id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub resource_type: ResourceType,
    /// Outcome.
    pub status: NodeStatus,
    /// Rows written (models, seeds).
    pub rows: i64,
    /// Bytes written.
    pub bytes: i64,
    /// Wall time from the first task's dispatch to the commit.
    pub duration_ms: u64,
    /// Failing rows of a test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
    /// Delta version committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Attempts of the node's task(s), retries included (the most any one task needed).
    pub attempts: u32,
    /// Tasks the node ran as (more than one for partition-aligned models).
    pub tasks: u32,
    /// Relation written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Peak memory of the node's tasks in their memory pools.
    pub peak_memory_bytes: i64,
    /// Peak of the real allocation of the processes that ran the node's tasks, while they ran
    /// (the process's, neighbouring tasks included; see `strata_engine::memory`).
    #[serde(default)]
    pub peak_allocated_bytes: i64,
    /// The workers that ran the node's tasks.
    pub workers: Vec<String>,
    /// The stages of a shuffled model, in order (empty for single-stage nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
    /// Records of a landed source set aside in its quarantine table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<i64>,
}

/// The record of a run, saved as JSON under `target/` and in the warehouse.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Wall time of the whole run.
    pub elapsed_ms: u64,
    /// True when no node ended in error or fail.
    pub success: bool,
    /// Every node that was considered, in completion order.
    pub nodes: Vec<NodeResult>,
    /// The run's W3C trace id: every task, and every Flight request of a shuffle, carries it
    /// in its `traceparent`.
    pub trace_id: String,
}

/// Progress of a run, for a display.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A node started.
    Started {
        /// Unique id.
        unique_id: String,
        /// Nodes finished so far.
        done: usize,
        /// Nodes in the run.
        total: usize,
        /// Tasks of its first stage.
        tasks: usize,
        /// Stages (more than one for a shuffled model).
        stages: usize,
    },
    /// A node finished.
    Finished {
        /// Its record.
        result: NodeResult,
        /// Nodes finished so far.
        done: usize,
        /// Nodes in the run.
        total: usize,
    },
    /// A task went out to the workers: a first attempt, a retry, or a map task run again.
    TaskDispatched {
        /// The task as published.
        task: Box<Task>,
        /// Its attempt.
        attempt: u32,
    },
    /// A worker reported the result of a task's current attempt.
    TaskReported {
        /// The task.
        task_id: String,
        /// Its node.
        unique_id: String,
        /// The attempt.
        attempt: u32,
        /// The worker that ran it.
        worker: String,
        /// Why it failed, when it did.
        error: Option<String>,
    },
}

/// How a caller steers a run beyond its request.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Where a run interrupted by a coordinator restart stood.
    pub resume: Option<Resume>,
    /// Set to true to cancel: no node starts any more, nodes in flight are not committed
    /// (each ends `cancelled`), and the run's result queue is deleted, which tells workers
    /// to drop its tasks.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// The run's W3C trace id (32 hex digits), kept across restarts; a new one when `None`.
    pub trace_id: Option<String>,
}

/// A run picked up again after the coordinator stopped.
#[derive(Debug, Default)]
pub struct Resume {
    /// Nodes that had finished, committed versions included: they are not run again.
    pub finished: Vec<NodeResult>,
    /// Tasks that were out, with their attempts. A node all of whose tasks are here, none
    /// finished and none of a shuffle, waits for their results (which may already be on the
    /// result queue); any other unfinished node is planned again.
    pub in_flight: Vec<(Task, u32)>,
    /// Task numbers start here, so a node planned again gets task ids never used before.
    pub first_task_number: u64,
}

/// Errors that stop a run as a whole (not a node failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] strata_core::queue::QueueError),
}

/// Status of a test from its failing rows, its severity and `warn_if` / `error_if`.
pub fn test_status(node: &Node, failures: i64) -> NodeStatus {
    let crosses = |condition: &str| {
        parse_condition(condition).is_some_and(|(operator, threshold)| {
            let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
            match operator {
                ">" => failures > threshold,
                ">=" => failures >= threshold,
                "<" => failures < threshold,
                "<=" => failures <= threshold,
                "=" => failures == threshold,
                _ => failures != threshold,
            }
        })
    };
    match node.config.severity {
        TestSeverity::Error if crosses(&node.config.error_if) => NodeStatus::Fail,
        _ if crosses(&node.config.warn_if) => NodeStatus::Warn,
        _ => NodeStatus::Pass,
    }
}

/// A new run id: `run-` and a UUID v7, so ids sort by the time they were made.
pub fn new_run_id() -> String {
    format!("run-{}", uuid::Uuid::now_v7())
}

/// `bytes` random bytes as lowercase hex, for W3C trace and span ids (never all zero).
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut hex = String::new();
    while hex.len() < bytes * 2 {
        // RandomState is seeded from the OS once per process and advanced per instance.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hex.push_str(&format!("{:016x}", hasher.finish() | 1));
    }
    hex.truncate(bytes * 2);
    hex
}
