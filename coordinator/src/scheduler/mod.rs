//! The run's state machine: which nodes are ready, which tasks are out and at which attempt,
//! when a failed or silent task goes again, when a lost shuffle output is made again, when a
//! node is complete — as transitions on events, with no I/O.
//!
//! The driver ([`crate::Coordinator`]) feeds it events — a node planned, a task's result, a
//! heartbeat, a publish that failed, the clock, a cancellation — and performs the
//! [`Action`]s it asks for: plan a node, publish a task, commit a node, tell the caller. Since
//! time arrives as an argument, unit tests drive whole runs with scripted results and a
//! made-up clock.

mod node;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use strata_core::manifest::ResourceType;
use strata_proto::v1::{FailureClass, Task, TaskKind, TaskResult};

use crate::run::{NodeResult, NodeStatus, Resume, RunEvent};
pub(crate) use node::{PendingNode, merge_results};

/// Attempts a task may make when its failures are shuffle outputs lost with their workers.
const MAX_SHUFFLE_RECOVERIES: u32 = 4;

/// Tries to publish one attempt of a task before its node fails.
pub(crate) const PUBLISH_TRIES: u32 = 4;

/// How often the scheduler wants the clock while nothing else happens (silent tasks).
pub(crate) const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// One node of the run, as the scheduler sees it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Unique id.
    pub unique_id: String,
    /// Name, for messages.
    pub name: String,
    /// Kind: a test fails (`fail`) where a model errors (`error`).
    pub resource_type: ResourceType,
    /// The relation, for the record.
    pub relation_name: Option<String>,
    /// Retries after a transient failure, when the node sets its own.
    pub retries: Option<u32>,
    /// Nodes of the run that must finish first.
    pub waits_for: BTreeSet<String>,
}

/// How the run treats failures and concurrency.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Nodes planned or running at once.
    pub threads: usize,
    /// Stop starting nodes after the first failure.
    pub fail_fast: bool,
    /// Retries of a task after a transient failure (a node's own setting wins).
    pub retries: u32,
    /// Delay before the first retry (of a task or of a publish); doubled for each further one.
    pub retry_backoff: Duration,
    /// A started task silent for this long is taken for lost.
    pub task_timeout: Duration,
}

/// The longest wait before a retry, however many came before.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

impl Policy {
    /// The delay before try `number` (1-based) after a failure: the backoff doubled each time.
    fn backoff(&self, number: u32) -> Duration {
        strata_core::retry::Backoff::new(self.retry_backoff, MAX_RETRY_DELAY).delay(number)
    }
}

/// What the scheduler asks its driver to do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Plan the node into tasks, then call [`Scheduler::planned`].
    Plan {
        /// The node.
        node: String,
    },
    /// Publish this attempt of the task on the task queue; on failure call
    /// [`Scheduler::publish_failed`].
    Publish {
        /// The task.
        task: Box<Task>,
        /// Its attempt.
        attempt: u32,
    },
    /// Commit the node's files (or judge its test) and call [`Scheduler::completed`].
    Complete(Box<Completion>),
    /// Tell the caller.
    Emit(Box<RunEvent>),
}

/// A node whose tasks are over: the merged result of its tasks, or the failure that ended it.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The node.
    pub node: String,
    /// The merged result, or the failing one.
    pub result: TaskResult,
    /// `Unspecified` for success.
    pub class: FailureClass,
    /// Its tasks' bookkeeping, for the record.
    pub progress: PendingNode,
}

/// One task out on the queue (or waiting to go out again).
#[derive(Debug)]
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
    /// Set while the attempt waits to be published (a retry's backoff, or a failed publish).
    due: Option<Instant>,
    /// Failed publishes of this attempt.
    publish_failures: u32,
    /// Attempts its process stopped to shut down (not retries), at most [`MAX_HANDOFFS`].
    handoffs: u32,
    /// Rows and quarantined records the handed-off attempts committed.
    carried: (i64, i64),
}

/// Handoffs of one task after which a further interruption counts as a transient failure: a
/// task whose every process drains is not handed on forever.
const MAX_HANDOFFS: u32 = 16;

/// Where a node stands.
#[derive(Debug)]
enum Phase {
    /// Asked to be planned.
    Planning,
    /// Its tasks are out.
    Running(Box<PendingNode>),
    /// Asked to be completed.
    Completing,
}

/// The state of one run.
pub(crate) struct Scheduler {
    run_id: String,
    jobs: BTreeMap<String, Job>,
    policy: Policy,
    results: BTreeMap<String, NodeResult>,
    order: Vec<String>,
    active: BTreeMap<String, Phase>,
    tasks: BTreeMap<String, InFlight>,
    stopped: bool,
    cancelled: bool,
    actions: VecDeque<Action>,
    shuffle_addresses: BTreeSet<String>,
}

impl Scheduler {
    /// A run of `jobs` (every node to execute) under `policy`.
    pub fn new(run_id: &str, jobs: Vec<Job>, policy: Policy) -> Scheduler {
        Scheduler {
            run_id: run_id.to_string(),
            jobs: jobs
                .into_iter()
                .map(|job| (job.unique_id.clone(), job))
                .collect(),
            policy,
            results: BTreeMap::new(),
            order: Vec::new(),
            active: BTreeMap::new(),
            tasks: BTreeMap::new(),
            stopped: false,
            cancelled: false,
            actions: VecDeque::new(),
            shuffle_addresses: BTreeSet::new(),
        }
    }

    /// The next thing the driver must do.
    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// True when nothing is planned, running or being committed and the driver has nothing
    /// left to do: every node that could finish has (nodes start as soon as they can).
    pub fn is_done(&self) -> bool {
        self.active.is_empty() && self.actions.is_empty()
    }

    /// When the scheduler next needs [`Scheduler::tick`]: a retry falling due, or the next
    /// look for silent tasks.
    pub fn next_wake(&self, now: Instant) -> Instant {
        self.tasks
            .values()
            .filter_map(|flight| flight.due)
            .fold(now + SILENCE_CHECK, Instant::min)
    }

    /// The workers holding shuffle outputs of this run (to delete them at its end).
    pub fn shuffle_addresses(&self) -> &BTreeSet<String> {
        &self.shuffle_addresses
    }

    /// The nodes' records in the order they finished.
    pub fn into_results(mut self) -> Vec<NodeResult> {
        let order = std::mem::take(&mut self.order);
        order
            .iter()
            .filter_map(|id| self.results.remove(id))
            .collect()
    }

    /// Starts the run: the nodes without dependencies are planned.
    pub fn start(&mut self) {
        self.advance();
    }

    /// Takes over where an earlier coordinator stopped: finished nodes stay finished, and the
    /// nodes whose tasks are all known to be out wait for their results instead of running
    /// again (tasks are marked started, so silence beyond the task timeout retries them).
    pub fn resume(&mut self, resume: Resume, now: Instant) {
        for result in resume.finished {
            if self.jobs.contains_key(&result.unique_id) {
                self.order.push(result.unique_id.clone());
                self.results.insert(result.unique_id.clone(), result);
            }
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
            if shuffled || self.results.contains_key(&node) || !self.jobs.contains_key(&node) {
                continue;
            }
            self.emit(RunEvent::Started {
                unique_id: node.clone(),
                done: self.results.len(),
                total: self.jobs.len(),
                tasks: tasks.len(),
                stages: 1,
            });
            let mut progress = PendingNode::new(tasks.len(), VecDeque::new(), now);
            progress.attempts = tasks.iter().map(|(_, attempt)| *attempt).max().unwrap_or(1);
            self.active
                .insert(node.clone(), Phase::Running(Box::new(progress)));
            for (task, attempt) in tasks {
                let mut flight = InFlight::new(task, attempt, &node, false, now);
                flight.started = true;
                self.tasks.insert(flight.task.task_id.clone(), flight);
            }
        }
    }

    /// Cancels the run: no node starts any more, and every unfinished node ends `cancelled`
    /// (tasks in flight are forgotten; their files are never committed).
    pub fn cancel(&mut self) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        // Nothing planned, published or committed after this point.
        self.actions
            .retain(|action| matches!(action, Action::Emit(_)));
        self.tasks.clear();
        self.active.clear();
        let unfinished: Vec<String> = self
            .jobs
            .keys()
            .filter(|id| !self.results.contains_key(*id))
            .cloned()
            .collect();
        for id in unfinished {
            let mut result = skipped(&self.jobs[&id], String::from("the run was cancelled"));
            result.status = NodeStatus::Cancelled;
            self.finish(result);
        }
    }

    /// The node was planned into tasks (the first stage, then the stages that follow it), or
    /// could not be.
    pub fn planned(
        &mut self,
        node: &str,
        planned: Result<(Vec<Task>, VecDeque<Vec<Task>>), String>,
        now: Instant,
    ) {
        if !matches!(self.active.get(node), Some(Phase::Planning)) {
            return;
        }
        match planned {
            Ok((tasks, later)) => {
                self.emit(RunEvent::Started {
                    unique_id: node.to_string(),
                    done: self.results.len(),
                    total: self.jobs.len(),
                    tasks: tasks.len(),
                    stages: later.len() + 1,
                });
                let mut progress = PendingNode::new(tasks.len(), later, now);
                progress.remember_maps(&tasks);
                self.active
                    .insert(node.to_string(), Phase::Running(Box::new(progress)));
                for task in tasks {
                    self.dispatch(task, 1, node, false, now);
                }
            }
            Err(message) => {
                self.active.remove(node);
                let job = &self.jobs[node];
                let mut result = skipped(job, message);
                result.status = failed_status(job);
                self.stopped |= self.policy.fail_fast;
                self.finish(result);
                self.advance();
            }
        }
    }

    /// The node's outcome is recorded (committed, or failed): its dependants may start.
    pub fn completed(&mut self, result: NodeResult) {
        if !matches!(self.active.get(&result.unique_id), Some(Phase::Completing)) {
            return;
        }
        self.active.remove(&result.unique_id);
        if !result.status.is_ok() {
            self.stopped |= self.policy.fail_fast;
        }
        self.finish(result);
        self.advance();
    }

    /// A worker says it still runs this attempt of the task. (Silence is judged by
    /// [`Scheduler::tick`], which the driver calls after every message.)
    pub fn heartbeat(&mut self, task_id: &str, attempt: u32, now: Instant) {
        if let Some(flight) = self.tasks.get_mut(task_id)
            && flight.attempt == attempt
            && flight.due.is_none()
        {
            flight.last_seen = flight.last_seen.max(now);
            flight.started = true;
        }
    }

    /// The clock moved: retries that fell due are published, silent tasks are failed.
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, flight)| flight.due.is_some_and(|due| due <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(flight) = self.tasks.get_mut(&id) {
                flight.due = None;
                flight.last_seen = now;
                flight.started = false;
                let (task, attempt) = (flight.task.clone(), flight.attempt);
                self.publish(task, attempt);
            }
        }
        self.report_silent(now);
    }

    /// Publishing this attempt of the task failed: it is tried again after a backoff, and
    /// after [`PUBLISH_TRIES`] failures its node fails with the broker's error — a task is
    /// never left waiting for a publish that did not happen.
    pub fn publish_failed(&mut self, task_id: &str, attempt: u32, error: &str, now: Instant) {
        let Some(flight) = self.tasks.get_mut(task_id) else {
            return;
        };
        if flight.attempt != attempt || flight.due.is_some() {
            return;
        }
        flight.publish_failures += 1;
        if flight.publish_failures < PUBLISH_TRIES {
            flight.due = Some(now + self.policy.backoff(flight.publish_failures));
            return;
        }
        let failure = TaskResult {
            run_id: self.run_id.clone(),
            task_id: task_id.to_string(),
            attempt,
            failure_class: FailureClass::Transient as i32,
            error: format!(
                "cannot publish task {task_id} (attempt {attempt}) on the task queue after {PUBLISH_TRIES} tries: {error}; check the broker"
            ),
            ..TaskResult::default()
        };
        let node = flight.node.clone();
        self.tasks.remove(task_id);
        self.fail_node(&node, failure, FailureClass::Transient);
    }

    /// A worker reported the result of a task.
    pub fn task_result(&mut self, result: TaskResult, now: Instant) {
        if result.run_id != self.run_id {
            return; // not this run's (a misrouted or replayed result)
        }
        let Some(flight) = self.tasks.get(&result.task_id) else {
            return;
        };
        if result.attempt != flight.attempt || flight.due.is_some() {
            return; // a stale duplicate of an earlier attempt
        }
        self.emit(RunEvent::TaskReported {
            task_id: result.task_id.clone(),
            unique_id: flight.node.clone(),
            attempt: result.attempt,
            worker: result.worker_id.clone(),
            error: (!result.error.is_empty()).then(|| result.error.clone()),
        });
        let class =
            FailureClass::try_from(result.failure_class).unwrap_or(FailureClass::Unspecified);
        if class == FailureClass::Unspecified {
            self.task_succeeded(result, now);
        } else {
            self.task_failed(result, class, now);
        }
    }

    fn task_succeeded(&mut self, mut result: TaskResult, now: Instant) {
        let Some(flight) = self.tasks.remove(&result.task_id) else {
            return;
        };
        // What attempts stopped by a drain committed is part of the task's work.
        result.rows += flight.carried.0;
        result.quarantined_rows += flight.carried.1;
        let Some(Phase::Running(progress)) = self.active.get_mut(&flight.node) else {
            return;
        };
        progress.attempts = progress.attempts.max(flight.attempt);
        if !result.worker_id.is_empty() {
            progress.workers.insert(result.worker_id.clone());
        }
        if flight.recovery {
            // A lost output is back: once all are, the tasks waiting for them go again.
            progress.locations.extend(result.shuffle_outputs);
            progress.recovering.remove(&result.task_id);
            self.note_shuffle_addresses(&flight.node);
            self.release_blocked(&flight.node, now);
            return;
        }
        progress.results.push(result);
        if progress.results.len() < progress.tasks {
            return;
        }
        // A shuffled model's stage is done: start the next one.
        if let Some(tasks) = progress.next_stage() {
            progress.remember_maps(&tasks);
            self.note_shuffle_addresses(&flight.node);
            for task in tasks {
                self.dispatch(task, 1, &flight.node, false, now);
            }
            return;
        }
        progress.record_final_stage();
        let merged = merge_results(std::mem::take(&mut progress.results));
        let (result, class) = match merged {
            Ok(merged) => (merged, FailureClass::Unspecified),
            Err(mismatch) => (
                TaskResult {
                    error: mismatch.to_string(),
                    ..TaskResult::default()
                },
                FailureClass::User,
            ),
        };
        self.complete(&flight.node, result, class);
    }

    fn task_failed(&mut self, result: TaskResult, class: FailureClass, now: Instant) {
        let Some(flight) = self.tasks.get(&result.task_id) else {
            return;
        };
        if class == FailureClass::Interrupted && flight.handoffs < MAX_HANDOFFS {
            self.hand_off(&result, now);
            return;
        }
        let job = &self.jobs[&flight.node];
        let allowed = flight.handoffs
            + match class {
                FailureClass::Transient | FailureClass::Interrupted => {
                    job.retries.unwrap_or(self.policy.retries)
                }
                FailureClass::Internal => 1,
                _ => 0,
            };
        // Shuffle outputs lost with their worker: run their map tasks again, then this task
        // (lost outputs are not the task's fault: a few more tries are allowed).
        if !result.lost_shuffle_outputs.is_empty()
            && flight.attempt <= allowed.max(MAX_SHUFFLE_RECOVERIES)
        {
            self.recover_lost_outputs(&result, now);
            return;
        }
        if flight.attempt <= allowed {
            let delay = self.policy.backoff(flight.attempt - flight.handoffs);
            if let Some(flight) = self.tasks.get_mut(&result.task_id) {
                flight.attempt += 1;
                flight.due = Some(now + delay);
                flight.started = false;
                flight.publish_failures = 0;
            }
            return;
        }
        let node = flight.node.clone();
        self.tasks.remove(&result.task_id);
        self.fail_node(&node, result, class);
    }

    /// The task's process stopped it to shut down after committing part of its work: the
    /// next attempt goes out at once and does not count as a retry.
    fn hand_off(&mut self, result: &TaskResult, now: Instant) {
        if let Some(flight) = self.tasks.get_mut(&result.task_id) {
            flight.handoffs += 1;
            flight.carried.0 += result.rows;
            flight.carried.1 += result.quarantined_rows;
            flight.attempt += 1;
            flight.due = Some(now);
            flight.started = false;
            flight.publish_failures = 0;
        }
    }

    /// The task read shuffle outputs whose workers are gone: their map tasks run again, and
    /// the task waits for them.
    fn recover_lost_outputs(&mut self, result: &TaskResult, now: Instant) {
        let Some(flight) = self.tasks.remove(&result.task_id) else {
            return;
        };
        let Some(Phase::Running(progress)) = self.active.get_mut(&flight.node) else {
            return;
        };
        let attempt = flight.attempt + 1;
        progress.attempts = progress.attempts.max(attempt);
        // A recovery task that itself lost inputs waits like the others (and is counted as
        // recovering again when released).
        progress.recovering.remove(&result.task_id);
        let reruns = progress.lose_outputs(&result.lost_shuffle_outputs);
        progress
            .blocked
            .push((flight.task, attempt, flight.recovery));
        for map in &reruns {
            progress.recovering.insert(map.task_id.clone());
        }
        for map in reruns {
            self.dispatch(map, attempt, &flight.node, true, now);
        }
        self.release_blocked(&flight.node, now);
    }

    /// Publishes the tasks that waited for recovered shuffle outputs, once none is being
    /// recovered, reading the current locations. Recovery map tasks go first and alone: the
    /// others may read their outputs, so they wait until those are back too.
    fn release_blocked(&mut self, node: &str, now: Instant) {
        let Some(Phase::Running(progress)) = self.active.get_mut(node) else {
            return;
        };
        if !progress.recovering.is_empty() {
            return;
        }
        let blocked = std::mem::take(&mut progress.blocked);
        let (release, keep): (Vec<_>, Vec<_>) = if blocked.iter().any(|(_, _, recovery)| *recovery)
        {
            blocked.into_iter().partition(|(_, _, recovery)| *recovery)
        } else {
            (blocked, Vec::new())
        };
        progress.blocked = keep;
        let locations = progress.locations.clone();
        for (mut task, attempt, recovery) in release {
            task.shuffle_locations = locations.clone();
            if recovery && let Some(Phase::Running(progress)) = self.active.get_mut(node) {
                progress.recovering.insert(task.task_id.clone());
            }
            self.dispatch(task, attempt, node, recovery, now);
        }
    }

    /// One failed task fails its node: its other tasks are forgotten (their files are never
    /// committed).
    fn fail_node(&mut self, node: &str, result: TaskResult, class: FailureClass) {
        self.tasks.retain(|_, other| other.node != node);
        if let Some(Phase::Running(progress)) = self.active.get_mut(node) {
            progress.attempts = progress.attempts.max(result.attempt);
        }
        self.complete(node, result, class);
        self.advance();
    }

    /// Hands the node's outcome to the driver to commit.
    fn complete(&mut self, node: &str, result: TaskResult, class: FailureClass) {
        let Some(Phase::Running(progress)) =
            self.active.insert(node.to_string(), Phase::Completing)
        else {
            return;
        };
        self.actions
            .push_back(Action::Complete(Box::new(Completion {
                node: node.to_string(),
                result,
                class,
                progress: *progress,
            })));
    }

    /// Reports started tasks silent for longer than the task timeout as failed, transiently:
    /// the usual handling then retries them (a new attempt, so a late result of the silent one
    /// is ignored) or fails the node when retries are used up.
    fn report_silent(&mut self, now: Instant) {
        let timeout = self.policy.task_timeout;
        let silent: Vec<TaskResult> = self
            .tasks
            .values()
            .filter(|flight| {
                flight.started
                    && flight.due.is_none()
                    && now.saturating_duration_since(flight.last_seen) >= timeout
            })
            .map(|flight| TaskResult {
                run_id: self.run_id.clone(),
                task_id: flight.task.task_id.clone(),
                attempt: flight.attempt,
                failure_class: FailureClass::Transient as i32,
                error: format!(
                    "no heartbeat for {} s: the worker running it hung or was stopped",
                    timeout.as_secs()
                ),
                ..TaskResult::default()
            })
            .collect();
        for result in silent {
            self.task_result(result, now);
        }
    }

    /// Starts every node whose dependencies are done, up to `threads` at once; skips those
    /// behind a failure (or all, once `--fail-fast` stopped the run).
    fn advance(&mut self) {
        if self.cancelled {
            return;
        }
        loop {
            let ready: Vec<String> = self
                .jobs
                .values()
                .filter(|job| {
                    !self.results.contains_key(&job.unique_id)
                        && !self.active.contains_key(&job.unique_id)
                        && job
                            .waits_for
                            .iter()
                            .all(|dep| self.results.contains_key(dep))
                })
                .map(|job| job.unique_id.clone())
                .collect();
            let mut skipped_any = false;
            for id in ready {
                let job = &self.jobs[&id];
                let blocked = job
                    .waits_for
                    .iter()
                    .find(|dep| !self.results[*dep].status.is_ok());
                if blocked.is_some() || self.stopped {
                    let reason = match blocked {
                        Some(dep) => {
                            format!(
                                "skipped because '{}' did not succeed",
                                self.results[dep].name
                            )
                        }
                        None => String::from("skipped: --fail-fast stopped the run"),
                    };
                    let result = skipped(job, reason);
                    self.finish(result);
                    skipped_any = true;
                    continue;
                }
                if self.active.len() >= self.policy.threads.max(1) {
                    break;
                }
                self.active.insert(id.clone(), Phase::Planning);
                self.actions.push_back(Action::Plan { node: id });
            }
            if !skipped_any {
                break;
            }
        }
    }

    /// Publishes a task of `node` and tracks it as running.
    fn dispatch(&mut self, task: Task, attempt: u32, node: &str, recovery: bool, now: Instant) {
        let flight = InFlight::new(task.clone(), attempt, node, recovery, now);
        self.tasks.insert(task.task_id.clone(), flight);
        self.publish(task, attempt);
    }

    fn publish(&mut self, task: Task, attempt: u32) {
        self.emit(RunEvent::TaskDispatched {
            task: Box::new(task.clone()),
            attempt,
        });
        self.actions.push_back(Action::Publish {
            task: Box::new(task),
            attempt,
        });
    }

    fn note_shuffle_addresses(&mut self, node: &str) {
        if let Some(Phase::Running(progress)) = self.active.get(node) {
            self.shuffle_addresses
                .extend(strata_engine::exchange::addresses(&progress.locations));
        }
    }

    fn finish(&mut self, result: NodeResult) {
        self.order.push(result.unique_id.clone());
        self.results
            .insert(result.unique_id.clone(), result.clone());
        self.emit(RunEvent::Finished {
            result,
            done: self.results.len(),
            total: self.jobs.len(),
        });
    }

    fn emit(&mut self, event: RunEvent) {
        self.actions.push_back(Action::Emit(Box::new(event)));
    }
}

impl InFlight {
    fn new(task: Task, attempt: u32, node: &str, recovery: bool, now: Instant) -> InFlight {
        InFlight {
            attempt,
            task,
            node: node.to_string(),
            recovery,
            last_seen: now,
            started: false,
            due: None,
            publish_failures: 0,
            handoffs: 0,
            carried: (0, 0),
        }
    }
}

/// The status of a node that failed: tests fail, models error.
fn failed_status(job: &Job) -> NodeStatus {
    if job.resource_type == ResourceType::Test {
        NodeStatus::Fail
    } else {
        NodeStatus::Error
    }
}

/// The record of a node that did not run, with the reason.
pub(crate) fn skipped(job: &Job, reason: String) -> NodeResult {
    NodeResult {
        unique_id: job.unique_id.clone(),
        name: job.name.clone(),
        resource_type: job.resource_type,
        status: NodeStatus::Skipped,
        rows: 0,
        bytes: 0,
        duration_ms: 0,
        failures: None,
        version: None,
        attempts: 0,
        tasks: 0,
        relation: job.relation_name.clone(),
        error: Some(reason),
        peak_memory_bytes: 0,
        peak_allocated_bytes: 0,
        workers: Vec::new(),
        stages: Vec::new(),
        quarantined: None,
    }
}
