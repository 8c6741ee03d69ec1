//! One run: the selected nodes of a compiled project executed in DAG order, as many at once
//! as dependencies and `threads` allow. Each model or seed becomes tasks on the job queue; the
//! coordinator collects the results, commits each model in one Delta transaction, then lets
//! its dependants start. Tests run as tasks too and, with severity `error`, stop the models
//! downstream of what they test (as `dbt build` does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use strata_core::config::{Materialization, TestSeverity, parse_condition};
use strata_core::dag::Dag;
use strata_core::manifest::{Manifest, Node, ResourceType};
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, HEARTBEAT, JobQueue, KIND_HEADER, Message, RESULT_QUEUE, TASK_HEADER,
    TASK_QUEUE,
};
use strata_proto::v1::{
    DeltaInput, FailureClass, FileFormat, FileInput, Incremental, ShuffleLocation, Task, TaskInput,
    TaskKind, TaskOutput, TaskResult, task_input,
};

use crate::commit;
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
    /// Incremental models that fold new rows into their existing table (their table exists
    /// and this is not a full refresh); the others are built from scratch.
    pub incremental_models: BTreeSet<String>,
    /// Partitions of a shuffle: a table model whose plan repartitions by hash runs as map and
    /// reduce tasks over this many partitions, exchanging data over Flight. 0 or 1: no
    /// shuffles (embedded mode, where one task already uses every core).
    pub shuffle_partitions: usize,
    /// A running task that sends neither a heartbeat nor a result for this long is taken for
    /// lost (its worker hung, or stopped with its connection open) and retried elsewhere.
    pub task_timeout: Duration,
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
    /// The workers that ran the node's tasks.
    pub workers: Vec<String>,
    /// The stages of a shuffled model, in order (empty for single-stage nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
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

/// How often the coordinator looks for tasks gone silent while no message arrives.
const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// Attempts a task may make when its failures are shuffle outputs lost with their workers.
const MAX_SHUFFLE_RECOVERIES: u32 = 4;

struct InFlight {
    attempt: u32,
    task: Task,
    node: String,
    /// A map task run again to replace an output lost with its worker.
    recovery: bool,
    /// When the task was last heard of (published, a heartbeat, a result).
    last_seen: Instant,
    /// True once a worker took it (its first heartbeat): only then can it go silent — a task
    /// waiting in the queue for a free worker is not lost.
    started: bool,
}

/// The tasks out on the queue, by task id, and the dispatches not yet reported as events.
#[derive(Default)]
struct Running {
    tasks: BTreeMap<String, InFlight>,
    dispatched: Vec<RunEvent>,
}

/// The bookkeeping of a run that [`Coordinator::resume`] fills in.
struct RunState<'a> {
    results: &'a mut BTreeMap<String, NodeResult>,
    order: &'a mut Vec<String>,
    versions: &'a mut HashMap<String, i64>,
    running: &'a mut Running,
    pending: &'a mut BTreeMap<String, PendingNode>,
}

/// A node whose tasks are out: it completes when all of them have succeeded.
struct PendingNode {
    started: Instant,
    tasks: usize,
    results: Vec<TaskResult>,
    attempts: u32,
    /// The workers that reported results for the node's tasks.
    workers: BTreeSet<String>,
    /// Stages still to run after the current one (shuffled models).
    later: std::collections::VecDeque<Vec<Task>>,
    /// Map outputs written so far, for the readers of later stages.
    locations: Vec<ShuffleLocation>,
    /// Completed stages, for the record.
    stages: Vec<StageRecord>,
    /// Every map task published so far, by (stage, map partition): run again when the worker
    /// holding its output is lost.
    map_tasks: HashMap<(u32, u32), Task>,
    /// Map tasks running again to replace lost outputs.
    recovering: BTreeSet<String>,
    /// Tasks waiting for the recovered outputs, with the attempt they will run as and whether
    /// they are recovery map tasks themselves.
    blocked: Vec<(Task, u32, bool)>,
}

impl PendingNode {
    fn new(tasks: usize, later: std::collections::VecDeque<Vec<Task>>) -> PendingNode {
        PendingNode {
            started: Instant::now(),
            tasks,
            results: Vec::new(),
            attempts: 0,
            workers: BTreeSet::new(),
            later,
            locations: Vec::new(),
            stages: Vec::new(),
            map_tasks: HashMap::new(),
            recovering: BTreeSet::new(),
            blocked: Vec::new(),
        }
    }

    /// Remembers the map tasks among `tasks`.
    fn remember_maps(&mut self, tasks: &[Task]) {
        for task in tasks {
            if task.kind == TaskKind::ShuffleMap as i32 {
                self.map_tasks
                    .insert((task.stage, task.partition), task.clone());
            }
        }
    }

    /// Forgets every output held by the workers of `lost` and returns the map tasks to run
    /// again (those not already running again).
    fn lose_outputs(&mut self, lost: &[ShuffleLocation]) -> Vec<Task> {
        let gone: BTreeSet<&str> = lost
            .iter()
            .map(|location| location.address.as_str())
            .collect();
        let (lost, kept): (Vec<ShuffleLocation>, Vec<ShuffleLocation>) =
            std::mem::take(&mut self.locations)
                .into_iter()
                .partition(|location| gone.contains(location.address.as_str()));
        self.locations = kept;
        lost.iter()
            .filter_map(|location| {
                self.map_tasks
                    .get(&(location.stage, location.map_partition))
            })
            .filter(|task| !self.recovering.contains(&task.task_id))
            .cloned()
            .collect()
    }

    /// Ends the current stage of a shuffled model: records it, keeps its map outputs, and
    /// returns the next stage's tasks with the locations they read.
    fn next_stage(&mut self) -> Option<Vec<Task>> {
        let mut tasks = self.later.pop_front()?;
        let results = std::mem::take(&mut self.results);
        let mut workers: BTreeSet<String> = BTreeSet::new();
        let mut stage = StageRecord {
            kind: String::from("map"),
            tasks: u32::try_from(results.len()).unwrap_or(u32::MAX),
            workers: Vec::new(),
            rows: 0,
            bytes: 0,
        };
        for result in results {
            workers.insert(result.worker_id.clone());
            stage.rows += result.rows;
            stage.bytes += result.bytes;
            self.locations.extend(result.shuffle_outputs);
        }
        stage.workers = workers.into_iter().collect();
        self.stages.push(stage);
        for task in &mut tasks {
            task.shuffle_locations = self.locations.clone();
        }
        self.tasks = tasks.len();
        Some(tasks)
    }
}

/// Combines the results of a node's tasks: all their files, summed counts.
fn merge_results(results: Vec<TaskResult>) -> Result<TaskResult, String> {
    let mut merged = TaskResult::default();
    for result in results {
        if merged.delta_schema_json.is_empty() {
            merged.delta_schema_json = result.delta_schema_json.clone();
        } else if !result.delta_schema_json.is_empty()
            && result.delta_schema_json != merged.delta_schema_json
        {
            return Err(String::from(
                "the input files do not share one schema (partition-aligned tasks produced different columns); align the files or read them in one task",
            ));
        }
        merged.files.extend(result.files);
        merged.rows += result.rows;
        merged.bytes += result.bytes;
        merged.failing_rows += result.failing_rows;
        merged.peak_memory_bytes = merged.peak_memory_bytes.max(result.peak_memory_bytes);
        merged.append = result.append;
        merged.task_id = result.task_id;
        merged.attempt = result.attempt;
    }
    Ok(merged)
}

/// Executes a run over a job queue on which workers consume [`TASK_QUEUE`] (or the queue set
/// with [`Coordinator::with_task_queue`]); results come back on a queue of the run's own.
pub struct Coordinator<Q: JobQueue> {
    queue: Arc<Q>,
    task_queue: String,
}

impl<Q: JobQueue> Coordinator<Q> {
    /// A coordinator publishing on `queue`.
    pub fn new(queue: Arc<Q>) -> Self {
        Self {
            queue,
            task_queue: TASK_QUEUE.to_string(),
        }
    }

    /// Publishes tasks on `task_queue` instead of [`TASK_QUEUE`] (a pool of workers of its own).
    pub fn with_task_queue(mut self, task_queue: &str) -> Self {
        self.task_queue = task_queue.to_string();
        self
    }

    /// Runs the request to the end and returns its record. Node failures are in the record;
    /// only a failing queue ends the run with an error.
    ///
    /// # Errors
    /// Returns an error when the queue fails.
    pub async fn run(
        &self,
        request: &RunRequest,
        run_id: &str,
        on_event: impl FnMut(RunEvent),
    ) -> Result<RunRecord, RunError> {
        self.run_with(request, run_id, RunControl::default(), on_event)
            .await
    }

    /// Like [`Coordinator::run`], resuming where an earlier coordinator stopped and/or
    /// watching for cancellation.
    ///
    /// # Errors
    /// Returns an error when the queue fails.
    pub async fn run_with(
        &self,
        request: &RunRequest,
        run_id: &str,
        control: RunControl,
        mut on_event: impl FnMut(RunEvent),
    ) -> Result<RunRecord, RunError> {
        let started = Instant::now();
        let manifest = &request.manifest;
        let dag = manifest.dag();
        let to_run: BTreeSet<String> = request
            .selected
            .iter()
            .filter(|id| {
                manifest.nodes.get(*id).is_some_and(|node| {
                    request.resource_types.contains(&node.resource_type)
                        && node.config.materialized != Materialization::Ephemeral
                        && node.resource_type != ResourceType::Source
                })
            })
            .cloned()
            .collect();
        let waits_for = waits_for(manifest, &dag, &to_run);
        let total = to_run.len();
        let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut versions: HashMap<String, i64> = HashMap::new();
        let mut running = Running::default();
        let mut pending: BTreeMap<String, PendingNode> = BTreeMap::new();
        let reply_to = format!("{RESULT_QUEUE}.{run_id}");
        let mut consumer = self.queue.consume(&reply_to, 64).await?;
        let mut stopped = false;
        let RunControl {
            resume,
            cancel,
            trace_id,
        } = control;
        let mut task_counter = resume.as_ref().map_or(0, |resume| resume.first_task_number);
        let trace_id = trace_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| random_hex(16));
        // Workers holding shuffle outputs of this run, told to delete them at the end.
        let mut shuffle_addresses: BTreeSet<String> = BTreeSet::new();
        if let Some(resume) = resume {
            self.resume(
                resume,
                &to_run,
                total,
                &mut RunState {
                    results: &mut results,
                    order: &mut order,
                    versions: &mut versions,
                    running: &mut running,
                    pending: &mut pending,
                },
                &mut on_event,
            );
        }

        loop {
            for event in running.dispatched.drain(..) {
                on_event(event);
            }
            if cancel.as_ref().is_some_and(|cancel| *cancel.borrow()) {
                for id in &to_run {
                    if !results.contains_key(id) {
                        let mut result =
                            skipped(&manifest.nodes[id], String::from("the run was cancelled"));
                        result.status = NodeStatus::Cancelled;
                        finish(&mut results, &mut order, result, total, &mut on_event);
                    }
                }
                running.tasks.clear();
                pending.clear();
                break;
            }
            // Start every node whose dependencies are done, up to `threads` at once.
            let ready: Vec<String> = to_run
                .iter()
                .filter(|id| !results.contains_key(*id) && !pending.contains_key(*id))
                .filter(|id| {
                    waits_for
                        .get(*id)
                        .is_none_or(|deps| deps.iter().all(|dep| results.contains_key(dep)))
                })
                .cloned()
                .collect();
            for id in ready {
                let node = &manifest.nodes[&id];
                let blocked = waits_for
                    .get(&id)
                    .and_then(|deps| deps.iter().find(|dep| !results[*dep].status.is_ok()));
                if blocked.is_some() || stopped {
                    let reason = match blocked {
                        Some(dep) => {
                            format!("skipped because '{}' did not succeed", results[dep].name)
                        }
                        None => String::from("skipped: --fail-fast stopped the run"),
                    };
                    let result = skipped(node, reason);
                    finish(&mut results, &mut order, result, total, &mut on_event);
                    continue;
                }
                if pending.len() >= request.threads.max(1) {
                    break;
                }
                match self
                    .build_tasks(request, run_id, node, &mut versions, &mut task_counter)
                    .await
                {
                    Ok((mut tasks, mut later)) => {
                        for task in tasks.iter_mut().chain(later.iter_mut().flatten()) {
                            task.traceparent = format!("00-{trace_id}-{}-01", random_hex(8));
                        }
                        on_event(RunEvent::Started {
                            unique_id: id.clone(),
                            done: results.len(),
                            total,
                            tasks: tasks.len(),
                            stages: later.len() + 1,
                        });
                        let mut progress = PendingNode::new(tasks.len(), later);
                        progress.remember_maps(&tasks);
                        pending.insert(id.clone(), progress);
                        for task in tasks {
                            self.dispatch(&mut running, task, 1, &id, false).await?;
                        }
                    }
                    Err(message) => {
                        let mut result = skipped(node, message);
                        result.status = if node.resource_type == ResourceType::Test {
                            NodeStatus::Fail
                        } else {
                            NodeStatus::Error
                        };
                        stopped |= request.fail_fast;
                        finish(&mut results, &mut order, result, total, &mut on_event);
                    }
                }
            }
            if pending.is_empty() {
                if results.len() >= total {
                    break;
                }
                continue;
            }

            // Wait for the next result, checking now and then for tasks gone silent.
            let delivery = match tokio::time::timeout(SILENCE_CHECK, consumer.next()).await {
                Ok(delivery) => delivery?,
                Err(_) => {
                    self.report_silent(&mut running, run_id, &reply_to, request.task_timeout)
                        .await?;
                    continue;
                }
            };
            let Some(delivery) = delivery else {
                break;
            };
            if delivery
                .message
                .headers
                .get(KIND_HEADER)
                .map(String::as_str)
                == Some(HEARTBEAT)
            {
                let task = delivery.message.headers.get(TASK_HEADER).cloned();
                let attempt = delivery.message.headers.get(ATTEMPT_HEADER).cloned();
                delivery.ack().await?;
                if let Some(flight) = task.and_then(|task| running.tasks.get_mut(&task))
                    && attempt.is_some_and(|attempt| attempt == flight.attempt.to_string())
                {
                    flight.last_seen = flight.last_seen.max(Instant::now());
                    flight.started = true;
                }
                self.report_silent(&mut running, run_id, &reply_to, request.task_timeout)
                    .await?;
                continue;
            }
            let Ok(result) = TaskResult::decode(delivery.message.body.as_slice()) else {
                delivery
                    .dead_letter("malformed task result: not a strata.v1.TaskResult")
                    .await?;
                continue;
            };
            delivery.ack().await?;
            if result.run_id != run_id {
                continue; // not this run's (a misrouted or replayed result)
            }
            let Some(flight) = running.tasks.get(&result.task_id) else {
                continue;
            };
            if result.attempt != flight.attempt {
                continue; // a stale duplicate of an earlier attempt
            }
            on_event(RunEvent::TaskReported {
                task_id: result.task_id.clone(),
                unique_id: flight.node.clone(),
                attempt: result.attempt,
                worker: result.worker_id.clone(),
                error: (!result.error.is_empty()).then(|| result.error.clone()),
            });
            let node = &manifest.nodes[&flight.node];
            let class =
                FailureClass::try_from(result.failure_class).unwrap_or(FailureClass::Unspecified);
            if class != FailureClass::Unspecified {
                let allowed = match class {
                    FailureClass::Transient => node.config.retries.unwrap_or(request.retries),
                    FailureClass::Internal => 1,
                    _ => 0,
                };
                // Shuffle outputs lost with their worker: run their map tasks again, then this
                // task (lost outputs are not the task's fault: a few more tries are allowed).
                if !result.lost_shuffle_outputs.is_empty()
                    && flight.attempt <= allowed.max(MAX_SHUFFLE_RECOVERIES)
                {
                    let attempt = flight.attempt + 1;
                    let recovery = flight.recovery;
                    let (task, node_id) = (flight.task.clone(), flight.node.clone());
                    running.tasks.remove(&result.task_id);
                    let Some(progress) = pending.get_mut(&node_id) else {
                        continue;
                    };
                    progress.attempts = progress.attempts.max(attempt);
                    // A recovery task that itself lost inputs waits like the others (and is
                    // counted as recovering again when released).
                    progress.recovering.remove(&result.task_id);
                    let reruns = progress.lose_outputs(&result.lost_shuffle_outputs);
                    progress.blocked.push((task, attempt, recovery));
                    for map in reruns {
                        progress.recovering.insert(map.task_id.clone());
                        self.dispatch(&mut running, map, attempt, &node_id, true)
                            .await?;
                    }
                    if progress.recovering.is_empty() {
                        self.release_blocked(progress, &node_id, &mut running)
                            .await?;
                    }
                    continue;
                }
                if flight.attempt <= allowed {
                    let attempt = flight.attempt + 1;
                    let delay = request.retry_backoff * 2u32.saturating_pow(flight.attempt - 1);
                    let task = flight.task.clone();
                    running.dispatched.push(RunEvent::TaskDispatched {
                        task: Box::new(task.clone()),
                        attempt,
                    });
                    if let Some(flight) = running.tasks.get_mut(&result.task_id) {
                        flight.attempt = attempt;
                        flight.last_seen = Instant::now() + delay;
                        flight.started = false;
                    }
                    let (queue, task_queue) = (self.queue.clone(), self.task_queue.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = queue
                            .publish(&task_queue, task_message(&task, attempt))
                            .await;
                    });
                    continue;
                }
            }
            let Some(flight) = running.tasks.remove(&result.task_id) else {
                continue;
            };
            let Some(progress) = pending.get_mut(&flight.node) else {
                continue;
            };
            progress.attempts = progress.attempts.max(flight.attempt);
            if !result.worker_id.is_empty() {
                progress.workers.insert(result.worker_id.clone());
            }
            if flight.recovery && class == FailureClass::Unspecified {
                // A lost output is back: once all are, the tasks waiting for them go again.
                progress.locations.extend(result.shuffle_outputs);
                shuffle_addresses.extend(strata_worker::shuffle::addresses(&progress.locations));
                progress.recovering.remove(&result.task_id);
                if progress.recovering.is_empty() {
                    self.release_blocked(progress, &flight.node, &mut running)
                        .await?;
                }
                continue;
            }
            let (result, class) = if class == FailureClass::Unspecified {
                progress.results.push(result);
                if progress.results.len() < progress.tasks {
                    continue;
                }
                // A shuffled model's stage is done: start the next one.
                if let Some(tasks) = progress.next_stage() {
                    progress.remember_maps(&tasks);
                    shuffle_addresses
                        .extend(strata_worker::shuffle::addresses(&progress.locations));
                    for task in tasks {
                        self.dispatch(&mut running, task, 1, &flight.node, false)
                            .await?;
                    }
                    continue;
                }
                if !progress.stages.is_empty() {
                    let workers: BTreeSet<String> = progress
                        .results
                        .iter()
                        .map(|result| result.worker_id.clone())
                        .collect();
                    progress.stages.push(StageRecord {
                        kind: String::from("reduce"),
                        tasks: u32::try_from(progress.results.len()).unwrap_or(u32::MAX),
                        workers: workers.into_iter().collect(),
                        rows: progress.results.iter().map(|result| result.rows).sum(),
                        bytes: progress.results.iter().map(|result| result.bytes).sum(),
                    });
                }
                match merge_results(std::mem::take(&mut progress.results)) {
                    Ok(merged) => (merged, class),
                    Err(message) => (
                        TaskResult {
                            error: message,
                            ..TaskResult::default()
                        },
                        FailureClass::User,
                    ),
                }
            } else {
                // One failed task fails the node: forget its other tasks (their files are
                // never committed).
                running.tasks.retain(|_, other| other.node != flight.node);
                (result, class)
            };
            let Some(progress) = pending.remove(&flight.node) else {
                continue;
            };
            let node_result = self
                .complete(
                    request,
                    run_id,
                    node,
                    &progress,
                    &result,
                    class,
                    &mut versions,
                )
                .await;
            if !node_result.status.is_ok() {
                stopped |= request.fail_fast;
            }
            finish(&mut results, &mut order, node_result, total, &mut on_event);
        }
        drop(consumer);
        // Late duplicates may still arrive there; nobody reads them once the run is over.
        let _ = self.queue.delete(&reply_to).await;
        for address in &shuffle_addresses {
            // A worker that is gone took its outputs with it.
            let _ = strata_worker::shuffle::remove_run(address, run_id).await;
        }
        let nodes: Vec<NodeResult> = order.iter().filter_map(|id| results.remove(id)).collect();
        let success = nodes
            .iter()
            .all(|node| !matches!(node.status, NodeStatus::Error | NodeStatus::Fail));
        Ok(RunRecord {
            run_id: run_id.to_string(),
            elapsed_ms: elapsed_ms(started),
            success,
            nodes,
            trace_id,
        })
    }

    /// Takes over where an earlier coordinator stopped: finished nodes stay finished, and the
    /// nodes whose tasks are all known to be out wait for their results instead of running
    /// again (tasks are marked started, so silence beyond the task timeout retries them).
    fn resume(
        &self,
        resume: Resume,
        to_run: &BTreeSet<String>,
        total: usize,
        state: &mut RunState<'_>,
        on_event: &mut impl FnMut(RunEvent),
    ) {
        for result in resume.finished {
            if !to_run.contains(&result.unique_id) {
                continue;
            }
            if let Some(version) = result.version {
                state.versions.insert(result.unique_id.clone(), version);
            }
            state.order.push(result.unique_id.clone());
            state.results.insert(result.unique_id.clone(), result);
        }
        let mut by_node: BTreeMap<String, Vec<(Task, u32)>> = BTreeMap::new();
        for (task, attempt) in resume.in_flight {
            by_node
                .entry(task.node_unique_id.clone())
                .or_default()
                .push((task, attempt));
        }
        for (node, tasks) in by_node {
            let shuffled = tasks.iter().any(|(task, _)| {
                task.kind == TaskKind::ShuffleMap as i32 || !task.shuffle_locations.is_empty()
            });
            if shuffled || state.results.contains_key(&node) || !to_run.contains(&node) {
                continue;
            }
            on_event(RunEvent::Started {
                unique_id: node.clone(),
                done: state.results.len(),
                total,
                tasks: tasks.len(),
                stages: 1,
            });
            let mut progress = PendingNode::new(tasks.len(), std::collections::VecDeque::new());
            progress.attempts = tasks.iter().map(|(_, attempt)| *attempt).max().unwrap_or(1);
            state.pending.insert(node.clone(), progress);
            for (task, attempt) in tasks {
                state.running.tasks.insert(
                    task.task_id.clone(),
                    InFlight {
                        attempt,
                        task,
                        node: node.clone(),
                        recovery: false,
                        last_seen: Instant::now(),
                        started: true,
                    },
                );
            }
        }
    }

    /// Publishes the tasks that waited for recovered shuffle outputs, reading the current
    /// locations. Recovery map tasks go first and alone: the others may read their outputs,
    /// so they wait until those are back too.
    async fn release_blocked(
        &self,
        progress: &mut PendingNode,
        node: &str,
        running: &mut Running,
    ) -> Result<(), RunError> {
        let blocked = std::mem::take(&mut progress.blocked);
        let (release, keep): (Vec<_>, Vec<_>) = if blocked.iter().any(|(_, _, recovery)| *recovery)
        {
            blocked.into_iter().partition(|(_, _, recovery)| *recovery)
        } else {
            (blocked, Vec::new())
        };
        progress.blocked = keep;
        for (mut task, attempt, recovery) in release {
            task.shuffle_locations = progress.locations.clone();
            if recovery {
                progress.recovering.insert(task.task_id.clone());
            }
            self.dispatch(running, task, attempt, node, recovery)
                .await?;
        }
        Ok(())
    }

    /// Reports tasks silent for longer than `timeout` as failed, transiently, on the run's own
    /// result queue: the usual handling then retries them (a new attempt, so a late result of
    /// the silent one is ignored) or fails the model when retries are used up.
    async fn report_silent(
        &self,
        running: &mut Running,
        run_id: &str,
        reply_to: &str,
        timeout: Duration,
    ) -> Result<(), RunError> {
        let now = Instant::now();
        for flight in running.tasks.values_mut() {
            if !flight.started || now.saturating_duration_since(flight.last_seen) < timeout {
                continue;
            }
            flight.last_seen = now;
            let result = TaskResult {
                run_id: run_id.to_string(),
                task_id: flight.task.task_id.clone(),
                attempt: flight.attempt,
                failure_class: FailureClass::Transient as i32,
                error: format!(
                    "no heartbeat for {} s: the worker running it hung or was stopped",
                    timeout.as_secs()
                ),
                ..TaskResult::default()
            };
            self.queue
                .publish(reply_to, Message::new(result.encode_to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Publishes a task of `node` and tracks it as running.
    async fn dispatch(
        &self,
        running: &mut Running,
        task: Task,
        attempt: u32,
        node: &str,
        recovery: bool,
    ) -> Result<(), RunError> {
        self.publish(&task, attempt).await?;
        running.dispatched.push(RunEvent::TaskDispatched {
            task: Box::new(task.clone()),
            attempt,
        });
        running.tasks.insert(
            task.task_id.clone(),
            InFlight {
                attempt,
                task,
                node: node.to_string(),
                recovery,
                last_seen: Instant::now(),
                started: false,
            },
        );
        Ok(())
    }

    async fn publish(&self, task: &Task, attempt: u32) -> Result<(), RunError> {
        self.queue
            .publish(&self.task_queue, task_message(task, attempt))
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        request: &RunRequest,
        run_id: &str,
        node: &Node,
        progress: &PendingNode,
        result: &TaskResult,
        class: FailureClass,
        versions: &mut HashMap<String, i64>,
    ) -> NodeResult {
        let mut record = NodeResult {
            unique_id: node.unique_id.clone(),
            name: node.name.clone(),
            resource_type: node.resource_type,
            status: NodeStatus::Success,
            rows: result.rows,
            bytes: result.bytes,
            duration_ms: 0,
            failures: None,
            version: None,
            attempts: progress.attempts,
            tasks: u32::try_from(progress.tasks).unwrap_or(u32::MAX),
            relation: node.relation_name.clone(),
            error: None,
            peak_memory_bytes: result.peak_memory_bytes,
            workers: progress.workers.iter().cloned().collect(),
            stages: progress.stages.clone(),
        };
        if class != FailureClass::Unspecified {
            record.status = if node.resource_type == ResourceType::Test {
                NodeStatus::Fail
            } else {
                NodeStatus::Error
            };
            record.error = Some(result.error.clone());
        } else if node.resource_type == ResourceType::Test {
            record.failures = Some(result.failing_rows);
            record.status = test_status(node, result.failing_rows);
            if record.status != NodeStatus::Pass {
                record.error = Some(format!("{} failing rows", result.failing_rows));
            }
        } else if let Some(relation) = &node.relation {
            let location = request.warehouse.table_uri(relation);
            let (schema, partition_by) = (&result.delta_schema_json, &node.config.partition_by);
            let commit_id = commit::CommitId {
                run_id: run_id.to_string(),
                unique_id: node.unique_id.clone(),
                retry_conflicts: !request.incremental_models.contains(&node.unique_id),
            };
            let files = &result.files;
            let committed = if result.append {
                commit::append(&location, schema, partition_by, files, &commit_id).await
            } else {
                commit::overwrite(&location, schema, partition_by, files, &commit_id).await
            };
            match committed {
                Ok(version) => {
                    versions.insert(node.unique_id.clone(), version);
                    record.version = Some(version);
                }
                Err(err) => {
                    record.status = NodeStatus::Error;
                    record.error = Some(err.to_string());
                }
            }
        }
        record.duration_ms = elapsed_ms(progress.started);
        record
    }

    /// Builds the node's tasks: one, or one per group of input files when the model is
    /// row-wise over a single multi-file source.
    async fn build_tasks(
        &self,
        request: &RunRequest,
        run_id: &str,
        node: &Node,
        versions: &mut HashMap<String, i64>,
        counter: &mut u64,
    ) -> Result<(Vec<Task>, std::collections::VecDeque<Vec<Task>>), String> {
        let tasks = self
            .split_tasks(request, run_id, node, versions, counter)
            .await?;
        let shuffle_candidate = request.shuffle_partitions > 1
            && tasks.len() == 1
            && node.resource_type == ResourceType::Model
            && node.config.materialized == Materialization::Table
            && tasks[0].incremental.is_none();
        if shuffle_candidate {
            let task = &tasks[0];
            // A plan that cannot be staged (or fails to plan) runs as one task, which then
            // reports any real error.
            if let Ok(Some(staged)) = strata_worker::execution::plan_shuffle(
                &strata_worker::ExecutionConfig::default(),
                &task.inputs,
                &task.sql,
                request.shuffle_partitions,
            )
            .await
            {
                return Ok(stage_tasks(task, &staged));
            }
        }
        Ok((tasks, std::collections::VecDeque::new()))
    }

    /// The node's tasks without shuffles: one, or one per group of input files when the model
    /// is row-wise over a single multi-file source.
    async fn split_tasks(
        &self,
        request: &RunRequest,
        run_id: &str,
        node: &Node,
        versions: &mut HashMap<String, i64>,
        counter: &mut u64,
    ) -> Result<Vec<Task>, String> {
        let task = self
            .build_task(request, run_id, node, versions, counter)
            .await?;
        let aligned_candidate = node.resource_type == ResourceType::Model
            && node.config.materialized == Materialization::Table
            && task.incremental.is_none()
            && task.inputs.len() == 1;
        if !aligned_candidate {
            return Ok(vec![task]);
        }
        let input = &task.inputs[0];
        let Some(task_input::Source::Files(files)) = &input.source else {
            return Ok(vec![task]);
        };
        let format = match FileFormat::try_from(files.format) {
            Ok(FileFormat::Parquet) => "parquet",
            Ok(FileFormat::Csv) => "csv",
            Ok(FileFormat::Json) => "json",
            _ => return Ok(vec![task]),
        };
        // A location that cannot be listed runs as one task, which reports the real error.
        let listed = strata_storage::list_files(&files.location)
            .await
            .unwrap_or_default();
        if listed.len() < 2
            || !crate::partitioning::row_wise_over(
                &task.sql,
                &input.schema,
                &input.name,
                &listed[0],
                format,
            )
            .await
        {
            return Ok(vec![task]);
        }
        let groups = crate::partitioning::group_files(&listed, request.threads.max(2));
        Ok(groups
            .into_iter()
            .enumerate()
            .map(|(index, group)| {
                let mut part = task.clone();
                part.task_id = format!("{}-p{index:03}", task.task_id);
                if let Some(output) = &mut part.output {
                    output.file_prefix = format!("{}-{}", part.run_id, part.task_id);
                }
                if let Some(task_input::Source::Files(files)) = &mut part.inputs[0].source {
                    files.files = group;
                }
                part
            })
            .collect())
    }

    async fn build_task(
        &self,
        request: &RunRequest,
        run_id: &str,
        node: &Node,
        versions: &mut HashMap<String, i64>,
        counter: &mut u64,
    ) -> Result<Task, String> {
        *counter += 1;
        let task_id = format!("{}-{counter:05}", node.name);
        let mut inputs = Vec::new();
        let (kind, sql) = match node.resource_type {
            ResourceType::Seed => {
                let relation = node.relation.as_ref().ok_or("a seed without a relation")?;
                let path = request.project_dir.join(&node.original_file_path);
                let location = file_url(&path)?;
                inputs.push(TaskInput {
                    schema: relation.schema.clone(),
                    name: relation.identifier.clone(),
                    source: Some(task_input::Source::Files(FileInput {
                        location,
                        format: FileFormat::Csv as i32,
                        column_types: node.config.column_types.clone().into_iter().collect(),
                        files: Vec::new(),
                    })),
                });
                (TaskKind::Seed, format!("select * from {relation}"))
            }
            ResourceType::Test => (
                TaskKind::Test,
                node.compiled_code.clone().unwrap_or_default(),
            ),
            _ => (
                TaskKind::Model,
                node.compiled_code.clone().unwrap_or_default(),
            ),
        };
        let mut incremental = None;
        if node.resource_type != ResourceType::Seed {
            let mut seen = BTreeSet::new();
            for parent in &node.depends_on {
                add_inputs(request, parent, versions, &mut inputs, &mut seen).await?;
            }
            if request.incremental_models.contains(&node.unique_id)
                && let Some(relation) = &node.relation
            {
                // `{{ this }}`: the model's own table at its current version (the run was
                // planned knowing it exists), even though the node has not run yet.
                add_inputs(request, &node.unique_id, versions, &mut inputs, &mut seen).await?;
                incremental = Some(Incremental {
                    // As dbt: merge when a unique key is set, append otherwise.
                    strategy: match node.config.incremental_strategy {
                        Some(strategy) => strategy_name(strategy).to_string(),
                        None if node.config.unique_key.is_empty() => String::from("append"),
                        None => String::from("merge"),
                    },
                    unique_key: node.config.unique_key.clone(),
                    partition_by: node.config.partition_by.clone(),
                    on_schema_change: serde_json::to_value(node.config.on_schema_change)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_string))
                        .unwrap_or_else(|| String::from("ignore")),
                    this_schema: relation.schema.clone(),
                    this_name: relation.identifier.clone(),
                });
            }
        }
        let output = match (node.resource_type, &node.relation) {
            (ResourceType::Model | ResourceType::Seed, Some(relation)) => Some(TaskOutput {
                table_uri: request.warehouse.table_uri(relation),
                file_prefix: format!("{run_id}-{task_id}"),
                partition_by: node.config.partition_by.clone(),
            }),
            _ => None,
        };
        Ok(Task {
            run_id: run_id.to_string(),
            task_id,
            kind: kind as i32,
            node_unique_id: node.unique_id.clone(),
            sql,
            inputs,
            output,
            incremental,
            reply_to: format!("{RESULT_QUEUE}.{run_id}"),
            ..Task::default()
        })
    }
}

/// Adds the relation of `id` to the inputs, and for views and ephemeral models the
/// relations they read, dependencies first.
fn add_inputs<'a>(
    request: &'a RunRequest,
    id: &'a str,
    versions: &'a mut HashMap<String, i64>,
    inputs: &'a mut Vec<TaskInput>,
    seen: &'a mut BTreeSet<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
    Box::pin(async move {
        if !seen.insert(id.to_string()) {
            return Ok(());
        }
        let Some(node) = request.manifest.nodes.get(id) else {
            return Ok(());
        };
        let materialized = node.config.materialized;
        if matches!(
            materialized,
            Materialization::View | Materialization::Ephemeral
        ) && node.resource_type == ResourceType::Model
        {
            for parent in &node.depends_on {
                add_inputs(request, parent, versions, inputs, seen).await?;
            }
            if materialized == Materialization::Ephemeral {
                return Ok(());
            }
        }
        let relation = node
            .relation
            .as_ref()
            .ok_or_else(|| format!("'{}' has no relation", node.name))?;
        let source = match node.resource_type {
            ResourceType::Source => {
                let info = node
                    .source
                    .as_ref()
                    .ok_or("a source without its location")?;
                let location = info.location.as_deref().ok_or_else(|| {
                    format!(
                        "source '{}.{}' has no location; set meta.external_location in {}",
                        info.source_name, node.name, node.original_file_path
                    )
                })?;
                let format = match info.format.as_deref() {
                    Some("parquet") => FileFormat::Parquet,
                    Some("csv") => FileFormat::Csv,
                    Some("json") => FileFormat::Json,
                    _ => FileFormat::Unspecified,
                };
                task_input::Source::Files(FileInput {
                    location: resolve_location(&request.project_dir, location)?,
                    format: format as i32,
                    column_types: HashMap::new(),
                    files: Vec::new(),
                })
            }
            ResourceType::Model if materialized == Materialization::View => {
                task_input::Source::ViewSql(node.compiled_code.clone().unwrap_or_default())
            }
            _ => {
                let table_uri = request.warehouse.table_uri(relation);
                let version = match versions.get(id) {
                    Some(version) => *version,
                    None => {
                        let table = commit::open_table(&table_uri)
                            .await
                            .map_err(|err| err.to_string())?;
                        let version = table.and_then(|table| table.version()).and_then(|version| i64::try_from(version).ok()).ok_or_else(|| {
                            let command = if node.resource_type == ResourceType::Seed { "strata seed" } else { "strata run" };
                            format!("'{}' has not been built yet ({table_uri} has no table); run `{command} --select {}` first", node.name, node.name)
                        })?;
                        versions.insert(id.to_string(), version);
                        version
                    }
                };
                task_input::Source::Delta(DeltaInput { table_uri, version })
            }
        };
        inputs.push(TaskInput {
            schema: relation.schema.clone(),
            name: relation.identifier.clone(),
            source: Some(source),
        });
        Ok(())
    })
}

/// The inputs a query over node `id` needs: its relation (and, for views and ephemeral
/// models, what they read), tables pinned at their current version.
///
/// # Errors
/// Returns a message when a table has not been built or a source has no location.
pub async fn inputs_for(request: &RunRequest, id: &str) -> Result<Vec<TaskInput>, String> {
    let mut inputs = Vec::new();
    let mut versions = HashMap::new();
    let mut seen = BTreeSet::new();
    add_inputs(request, id, &mut versions, &mut inputs, &mut seen).await?;
    Ok(inputs)
}

/// The nodes each node waits for: its selected parents (through ephemeral models), plus, as in
/// `dbt build`, the tests of those parents, so a failing test stops what is downstream of it.
fn waits_for(
    manifest: &Manifest,
    dag: &Dag,
    to_run: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut waits: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in to_run {
        let mut parents = BTreeSet::new();
        let mut stack: Vec<&str> = dag.parents(id).collect();
        let mut visited = BTreeSet::new();
        while let Some(parent) = stack.pop() {
            if !visited.insert(parent) {
                continue;
            }
            if to_run.contains(parent) {
                parents.insert(parent.to_string());
            } else if manifest
                .nodes
                .get(parent)
                .is_some_and(|node| node.config.materialized == Materialization::Ephemeral)
            {
                stack.extend(dag.parents(parent));
            }
        }
        let descendants = dag.descendants(id, None);
        let tests: BTreeSet<String> = parents
            .iter()
            .flat_map(|parent| dag.children(parent))
            .filter(|child| {
                *child != id && to_run.contains(*child) && !descendants.contains(*child)
            })
            .filter(|child| {
                manifest
                    .nodes
                    .get(*child)
                    .is_some_and(|node| node.resource_type == ResourceType::Test)
            })
            .map(str::to_string)
            .collect();
        if manifest
            .nodes
            .get(id)
            .is_some_and(|node| node.resource_type != ResourceType::Test)
        {
            parents.extend(tests);
        }
        waits.insert(id.clone(), parents);
    }
    waits
}

fn strategy_name(strategy: strata_core::config::IncrementalStrategy) -> &'static str {
    use strata_core::config::IncrementalStrategy;
    match strategy {
        IncrementalStrategy::Append => "append",
        IncrementalStrategy::Merge => "merge",
        IncrementalStrategy::DeleteInsert => "delete+insert",
        IncrementalStrategy::InsertOverwrite => "insert_overwrite",
    }
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

fn skipped(node: &Node, reason: String) -> NodeResult {
    NodeResult {
        unique_id: node.unique_id.clone(),
        name: node.name.clone(),
        resource_type: node.resource_type,
        status: NodeStatus::Skipped,
        rows: 0,
        bytes: 0,
        duration_ms: 0,
        failures: None,
        version: None,
        attempts: 0,
        tasks: 0,
        relation: node.relation_name.clone(),
        error: Some(reason),
        peak_memory_bytes: 0,
        workers: Vec::new(),
        stages: Vec::new(),
    }
}

fn finish(
    results: &mut BTreeMap<String, NodeResult>,
    order: &mut Vec<String>,
    result: NodeResult,
    total: usize,
    on_event: &mut impl FnMut(RunEvent),
) {
    order.push(result.unique_id.clone());
    results.insert(result.unique_id.clone(), result.clone());
    on_event(RunEvent::Finished {
        result,
        done: results.len(),
        total,
    });
}

/// The tasks of a shuffled model from its base task: each map stage's tasks (one per input
/// partition), then the reduce tasks (one per output partition) that write the table.
fn stage_tasks(
    base: &Task,
    staged: &strata_worker::shuffle::StagedPlan,
) -> (Vec<Task>, std::collections::VecDeque<Vec<Task>>) {
    let mut stages: std::collections::VecDeque<Vec<Task>> = std::collections::VecDeque::new();
    for (stage, (plan, inputs)) in staged.map_stages.iter().enumerate() {
        let stage = u32::try_from(stage).unwrap_or(u32::MAX);
        stages.push_back(
            (0..*inputs)
                .map(|map| Task {
                    task_id: format!("{}-s{stage}-m{map:03}", base.task_id),
                    kind: TaskKind::ShuffleMap as i32,
                    plan: plan.clone(),
                    partition: map,
                    stage,
                    output: None,
                    ..base.clone()
                })
                .collect(),
        );
    }
    let (plan, partitions) = &staged.final_stage;
    stages.push_back(
        (0..*partitions)
            .map(|partition| {
                let task_id = format!("{}-r{partition:03}", base.task_id);
                let output = base.output.clone().map(|output| TaskOutput {
                    file_prefix: format!("{}-{task_id}", base.run_id),
                    ..output
                });
                Task {
                    task_id,
                    plan: plan.clone(),
                    partition,
                    output,
                    ..base.clone()
                }
            })
            .collect(),
    );
    let first = stages.pop_front().unwrap_or_default();
    (first, stages)
}

/// A task's queue message: the task, its attempt, and its trace context.
fn task_message(task: &Task, attempt: u32) -> Message {
    let message =
        Message::new(task.encode_to_vec()).with_header(ATTEMPT_HEADER, attempt.to_string());
    if task.traceparent.is_empty() {
        message
    } else {
        message.with_header("traceparent", task.traceparent.clone())
    }
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

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn file_url(path: &std::path::Path) -> Result<String, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|err| err.to_string())?
            .join(path)
    };
    url::Url::from_file_path(&absolute)
        .map(|url| url.to_string())
        .map_err(|()| format!("cannot make a URL of {}", absolute.display()))
}

/// Turns a source location into an absolute URL: URLs stay, paths are taken relative to the
/// project folder.
fn resolve_location(project_dir: &std::path::Path, location: &str) -> Result<String, String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let path = std::path::Path::new(location);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        project_dir.join(path)
    };
    let absolute = match absolute.canonicalize() {
        Ok(canonical) => canonical,
        // A glob does not exist as a path; canonicalize its folder instead.
        Err(_) => match (
            absolute
                .parent()
                .and_then(|parent| parent.canonicalize().ok()),
            absolute.file_name(),
        ) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => {
                return Err(format!(
                    "source location {} does not exist",
                    absolute.display()
                ));
            }
        },
    };
    // A plain absolute path, not a file:// URL: DataFusion expands globs only in paths.
    Ok(absolute.display().to_string())
}
