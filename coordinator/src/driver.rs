//! The driver of a run: it feeds the [`Scheduler`] the run's events — results and heartbeats
//! from the run's result queue, the clock, cancellation — and performs what the scheduler asks:
//! plan a node (`crate::planning`), publish a task, commit a node (`crate::commit`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use strata_core::config::Materialization;
use strata_core::dag::Dag;
use strata_core::manifest::{Manifest, Node, ResourceType};
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, Delivery, HEARTBEAT, INGEST_QUEUE, JobQueue, KIND_HEADER, Message,
    RESULT_QUEUE, Settler, TASK_HEADER, TASK_QUEUE,
};
use strata_proto::v1::{FailureClass, Task, TaskKind, TaskResult};

use crate::commit;
use crate::metrics::CoordinatorMetrics;
use crate::run::{
    NodeResult, NodeStatus, RunControl, RunError, RunEvent, RunRecord, RunRequest, random_hex,
    test_status,
};
use crate::scheduler::{Action, Completion, Job, Policy, Scheduler};
use crate::spans::RunSpans;
use tracing::Instrument;

/// Executes a run over a job queue on which workers consume [`TASK_QUEUE`] (or the queue set
/// with [`Coordinator::with_task_queue`]) and ingest agents [`INGEST_QUEUE`] (or
/// [`Coordinator::with_ingest_queue`]'s); results come back on a queue of the run's own.
pub struct Coordinator<Q: JobQueue> {
    queue: Arc<Q>,
    task_queue: String,
    ingest_queue: String,
    /// How the coordinator reaches workers' Flight servers (to delete a run's shuffle outputs).
    fetch: strata_engine::exchange::FetchSettings,
    /// Where runs are counted, when the process serves metrics.
    metrics: Option<CoordinatorMetrics>,
}

/// What the driver keeps for one run besides the scheduler.
struct RunContext<'a> {
    request: &'a RunRequest,
    run_id: &'a str,
    /// The run's open spans (and its trace id).
    spans: RunSpans,
    /// Versions of the tables this run reads: committed by it, or current at its start.
    versions: HashMap<String, i64>,
    /// The last task number used (task ids stay unique across a resume).
    task_counter: u64,
}

impl<Q: JobQueue> Coordinator<Q> {
    /// A coordinator publishing on `queue`.
    pub fn new(queue: Arc<Q>) -> Self {
        Self {
            queue,
            task_queue: TASK_QUEUE.to_string(),
            ingest_queue: INGEST_QUEUE.to_string(),
            fetch: strata_engine::exchange::FetchSettings::default(),
            metrics: None,
        }
    }

    /// Counts runs, nodes and tasks in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<CoordinatorMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Publishes tasks on `task_queue` instead of [`TASK_QUEUE`] (a pool of workers of its own).
    pub fn with_task_queue(mut self, task_queue: &str) -> Self {
        self.task_queue = task_queue.to_string();
        self
    }

    /// Publishes ingest tasks on `ingest_queue` instead of [`INGEST_QUEUE`].
    pub fn with_ingest_queue(mut self, ingest_queue: &str) -> Self {
        self.ingest_queue = ingest_queue.to_string();
        self
    }

    /// The queue a task goes to: ingest tasks to the ingest agents', the others to workers'.
    fn queue_of(&self, task: &Task) -> &str {
        if task.kind == TaskKind::Ingest as i32 {
            &self.ingest_queue
        } else {
            &self.task_queue
        }
    }

    /// Calls workers' Flight servers with the cluster's secret.
    pub fn with_cluster_secret(
        mut self,
        secret: Option<strata_engine::exchange::ClusterSecret>,
    ) -> Self {
        self.fetch.secret = secret;
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
    /// Returns an error when consuming the run's result queue fails.
    pub async fn run_with(
        &self,
        request: &RunRequest,
        run_id: &str,
        control: RunControl,
        mut on_event: impl FnMut(RunEvent),
    ) -> Result<RunRecord, RunError> {
        let started = Instant::now();
        let RunControl {
            resume,
            cancel,
            trace_id,
        } = control;
        let trace_id = trace_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| random_hex(16));
        let jobs = jobs(request);
        let spans = RunSpans::new(run_id, &trace_id, jobs.len(), resume.is_some());
        let mut run = RunContext {
            request,
            run_id,
            spans,
            versions: HashMap::new(),
            task_counter: resume.as_ref().map_or(0, |resume| resume.first_task_number),
        };
        let mut scheduler = Scheduler::new(run_id, jobs, Policy::from(request));
        if let Some(resume) = resume {
            for result in &resume.finished {
                if let Some(version) = result.version {
                    run.versions.insert(result.unique_id.clone(), version);
                }
            }
            scheduler.resume(resume, Instant::now());
        }
        let reply_to = format!("{RESULT_QUEUE}.{run_id}");
        let run_span = run.spans.run().clone();
        if let Some(metrics) = &self.metrics {
            metrics.run_started();
        }
        let driven = self
            .drive(&mut run, &mut scheduler, &reply_to, cancel, &mut on_event)
            .instrument(run_span)
            .await;
        if let Err(err) = driven {
            if let Some(metrics) = &self.metrics {
                metrics.run_aborted();
            }
            return Err(err);
        }
        for address in scheduler.shuffle_addresses() {
            // A worker that is gone took its outputs with it.
            let _ = strata_engine::exchange::remove_run(address, run_id, &self.fetch).await;
        }
        let nodes = scheduler.into_results();
        let success = nodes
            .iter()
            .all(|node| !matches!(node.status, NodeStatus::Error | NodeStatus::Fail));
        let record = RunRecord {
            run_id: run_id.to_string(),
            elapsed_ms: elapsed_ms(started),
            success,
            nodes,
            trace_id: run.spans.trace_id().to_string(),
        };
        run.spans.finish(&record);
        if let Some(metrics) = &self.metrics {
            metrics.run_finished(&record);
        }
        Ok(record)
    }

    /// Feeds the scheduler until the run is done: its actions performed, the results and
    /// heartbeats of the run's result queue `reply_to` handed to it.
    async fn drive(
        &self,
        run: &mut RunContext<'_>,
        scheduler: &mut Scheduler,
        reply_to: &str,
        cancel: Option<tokio::sync::watch::Receiver<bool>>,
        on_event: &mut impl FnMut(RunEvent),
    ) -> Result<(), RunError> {
        let mut consumer = self.queue.consume(reply_to, 64).await?;
        scheduler.start();
        loop {
            if cancel.as_ref().is_some_and(|cancel| *cancel.borrow()) {
                scheduler.cancel();
            }
            while let Some(action) = scheduler.next_action() {
                self.perform(action, run, scheduler, on_event).await;
            }
            if scheduler.is_done() {
                break;
            }
            let wake = tokio::time::Instant::from_std(scheduler.next_wake(Instant::now()));
            if let Ok(delivery) = tokio::time::timeout_at(wake, consumer.next()).await {
                match delivery? {
                    Some(delivery) => receive(delivery, scheduler).await,
                    None => break,
                }
            }
            // Also after a message: a steady flow of heartbeats must not hold back retries.
            scheduler.tick(Instant::now());
        }
        drop(consumer);
        // Late duplicates may still arrive there; nobody reads them once the run is over.
        let _ = self.queue.delete(reply_to).await;
        Ok(())
    }

    /// Performs one of the scheduler's actions and reports its outcome back to it.
    async fn perform(
        &self,
        action: Action,
        run: &mut RunContext<'_>,
        scheduler: &mut Scheduler,
        on_event: &mut impl FnMut(RunEvent),
    ) {
        match action {
            Action::Emit(event) => {
                run.spans.observe(&event);
                if let Some(metrics) = &self.metrics {
                    metrics.observe(&event);
                }
                if let RunEvent::Finished { result, .. } = event.as_ref() {
                    run.spans.node_finished(result);
                    if let (Some(metrics), Some(node)) = (
                        &self.metrics,
                        run.request.manifest.nodes.get(&result.unique_id),
                    ) {
                        metrics.node_finished(node, result);
                    }
                }
                on_event(*event);
            }
            Action::Plan { node } => {
                let planned = plan(run, &node).await.map_err(|err| err.to_string());
                scheduler.planned(&node, planned, Instant::now());
            }
            Action::Publish { task, attempt } => {
                let message = task_message(&task, attempt);
                let queue = self.queue_of(&task);
                let span = run.spans.publish(&task, attempt, queue);
                let published = self.queue.publish(queue, message).instrument(span).await;
                if let Err(err) = published {
                    tracing::warn!(task = %task.task_id, attempt, error = %err, "publishing a task failed");
                    scheduler.publish_failed(
                        &task.task_id,
                        attempt,
                        &err.to_string(),
                        Instant::now(),
                    );
                }
            }
            Action::Complete(completion) => {
                let record = complete(run, &completion).await;
                scheduler.completed(record);
            }
        }
    }
}

/// Plans a node into tasks, each carrying the run's trace context.
async fn plan(
    run: &mut RunContext<'_>,
    id: &str,
) -> Result<crate::planning::Planned, crate::planning::PlanError> {
    let recompiled;
    let mut node = &run.request.manifest.nodes[id];
    let span = run.spans.node(node);
    if node.deferred_compile.is_some() {
        recompiled = recompile(run.request, id).instrument(span.clone()).await?;
        node = &recompiled;
    }
    let (mut tasks, mut later) = crate::planning::build_tasks(
        run.request,
        run.run_id,
        node,
        &mut run.versions,
        &mut run.task_counter,
    )
    .instrument(span)
    .await?;
    for task in tasks.iter_mut().chain(later.iter_mut().flatten()) {
        task.traceparent = run.spans.task(node, task);
    }
    Ok((tasks, later))
}

/// The node `id` compiled again now that its parents are built (off the driver's thread: a
/// compile takes as long as the project's).
async fn recompile(request: &RunRequest, id: &str) -> Result<Node, crate::planning::PlanError> {
    let failed = |message: String| crate::planning::PlanError::Recompile {
        node: request.manifest.nodes[id].name.clone(),
        message,
    };
    let recompiler = request.recompile.clone().ok_or_else(|| {
        failed(
            request.manifest.nodes[id]
                .deferred_compile
                .clone()
                .unwrap_or_default(),
        )
    })?;
    let unique_id = id.to_string();
    tokio::task::spawn_blocking(move || recompiler.node(&unique_id))
        .await
        .map_err(|err| failed(format!("the compile stopped: {err}")))?
        .map_err(failed)
}

/// Hands one message of the run's result queue to the scheduler: a heartbeat, a task's
/// result, or something malformed (dead-lettered with the reason). A message is handled
/// before it is settled, and a settlement that fails (the broker went away) only means the
/// broker delivers it again: duplicates of results are ignored by attempt.
async fn receive<S: Settler>(delivery: Delivery<S>, scheduler: &mut Scheduler) {
    let headers = &delivery.message.headers;
    if headers.get(KIND_HEADER).map(String::as_str) == Some(HEARTBEAT) {
        let task = headers.get(TASK_HEADER).cloned();
        let attempt = headers
            .get(ATTEMPT_HEADER)
            .and_then(|attempt| attempt.parse::<u32>().ok());
        if let (Some(task), Some(attempt)) = (task, attempt) {
            scheduler.heartbeat(&task, attempt, Instant::now());
        }
        settled(delivery.ack().await);
        return;
    }
    match TaskResult::decode(delivery.message.body.as_slice()) {
        Ok(result) => {
            scheduler.task_result(result, Instant::now());
            settled(delivery.ack().await);
        }
        Err(_) => settled(
            delivery
                .dead_letter("malformed task result: not a strata.v1.TaskResult")
                .await,
        ),
    }
}

/// Logs a settlement the broker did not take (the message comes again).
fn settled(outcome: Result<(), strata_core::queue::QueueError>) {
    if let Err(err) = outcome {
        tracing::warn!(error = %err, "cannot settle a message of the result queue; it will be delivered again");
    }
}

impl From<&RunRequest> for Policy {
    fn from(request: &RunRequest) -> Policy {
        Policy {
            threads: request.threads.max(1),
            fail_fast: request.fail_fast,
            retries: request.retries,
            retry_backoff: request.retry_backoff,
            task_timeout: request.task_timeout,
        }
    }
}

/// The run's nodes as the scheduler sees them: every selected node the command executes
/// (not ephemeral models; sources only when they are landed, see [`landed_sources`]), with
/// what each waits for.
fn jobs(request: &RunRequest) -> Vec<Job> {
    let manifest = &request.manifest;
    let mut to_run: BTreeSet<String> = request
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
    let dag = manifest.dag();
    to_run.extend(landed_sources(request, &dag, &to_run));
    let mut waits = waits_for(manifest, &dag, &to_run);
    to_run
        .iter()
        .map(|id| {
            let node = &manifest.nodes[id];
            Job {
                unique_id: id.clone(),
                name: node.name.clone(),
                resource_type: node.resource_type,
                relation_name: node.relation_name.clone(),
                retries: node.config.retries,
                waits_for: waits.remove(id).unwrap_or_default(),
            }
        })
        .collect()
}

/// The sources with an `ingest:` block the run lands before anything reads them (the seed's
/// `ingest_bronze >> process_silver`): the selected ones, and — for `build` — those upstream
/// of a node it runs, so that `strata build --select model` lands what the model reads.
fn landed_sources(request: &RunRequest, dag: &Dag, to_run: &BTreeSet<String>) -> BTreeSet<String> {
    if !request.resource_types.contains(&ResourceType::Source) {
        return BTreeSet::new();
    }
    let manifest = &request.manifest;
    let lands = |id: &str| {
        manifest.nodes.get(id).is_some_and(|node| {
            node.resource_type == ResourceType::Source
                && node
                    .source
                    .as_ref()
                    .is_some_and(|source| source.ingest.is_some())
        })
    };
    // One walk up from every node to run: a node's ancestors are visited once, however many
    // nodes share them.
    let mut upstream: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = to_run.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        for parent in dag.parents(id) {
            if upstream.insert(parent) {
                stack.push(parent);
            }
        }
    }
    request
        .selected
        .iter()
        .map(String::as_str)
        .chain(upstream)
        .filter(|id| lands(id))
        .map(str::to_string)
        .collect()
}

/// The nodes each node waits for: its selected parents (through ephemeral models, and sources
/// loaded by the project's own seeds or models), plus, as in
/// `dbt build`, the tests of those parents whose every parent is upstream of the node, so a
/// failing test stops what is downstream of all it tests (a `relationships` test between two
/// models blocks only what reads both).
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
            } else if manifest.nodes.get(parent).is_some_and(|node| {
                node.config.materialized == Materialization::Ephemeral
                    || node.resource_type == ResourceType::Source
            }) {
                stack.extend(dag.parents(parent));
            }
        }
        let descendants = dag.descendants(id, None);
        let ancestors = dag.ancestors(id, None);
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
            .filter(|test| dag.parents(test).all(|tested| ancestors.contains(tested)))
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

/// Records a node's outcome: a failure as it is, a test judged by its failing rows, a model
/// or seed committed in one Delta transaction (its version kept for its dependants' inputs).
async fn complete(run: &mut RunContext<'_>, completion: &Completion) -> NodeResult {
    let Completion {
        node,
        result,
        class,
        progress,
    } = completion;
    let (request, run_id, class) = (run.request, run.run_id, *class);
    let node = &request.manifest.nodes[node];
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
        peak_allocated_bytes: result.peak_allocated_bytes,
        workers: progress.workers.iter().cloned().collect(),
        stages: progress.stages.clone(),
        quarantined: None,
    };
    if class != FailureClass::Unspecified {
        record.status = if node.resource_type == ResourceType::Test {
            NodeStatus::Fail
        } else {
            NodeStatus::Error
        };
        record.error = Some(result.error.clone());
    } else if node.resource_type == ResourceType::Source {
        // The ingest agent committed each chunk itself, with the source's position.
        if result.table_version >= 0 {
            run.versions
                .insert(node.unique_id.clone(), result.table_version);
            record.version = Some(result.table_version);
        }
        record.quarantined = (result.quarantined_rows > 0).then_some(result.quarantined_rows);
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
        let span = tracing::info_span!(
            parent: &run.spans.node(node),
            "delta_commit",
            otel.name = %format!("delta commit {}", node.name),
            strata.table_uri = %location,
            strata.files = files.len(),
            strata.append = result.append,
        );
        let committed = if result.append {
            commit::append(&location, schema, partition_by, files, &commit_id)
                .instrument(span)
                .await
        } else {
            commit::overwrite(&location, schema, partition_by, files, &commit_id)
                .instrument(span)
                .await
        };
        match committed {
            Ok(version) => {
                run.versions.insert(node.unique_id.clone(), version);
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

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use strata_core::manifest::Manifest;

    use super::{jobs, waits_for};
    use crate::RunRequest;

    /// Compiles a project of `files` (path, text) and selects with `select`.
    fn compiled(files: &[(&str, &str)], select: &[&str]) -> (Manifest, BTreeSet<String>) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let select: Vec<String> = select.iter().map(|term| term.to_string()).collect();
        let outcome = strata_core::invocation::run_compile(
            dir.path(),
            None,
            "dev",
            &select,
            &[],
            &BTreeMap::new(),
        );
        (outcome.manifest.expect("compiles"), outcome.selected)
    }

    /// What `command` runs of the project, each node with what it waits for.
    fn planned(
        manifest: &Manifest,
        selected: &BTreeSet<String>,
        command: &str,
    ) -> BTreeMap<String, Vec<String>> {
        let request = RunRequest {
            manifest: Arc::new(manifest.clone()),
            selected: selected.clone(),
            resource_types: crate::prepare::resource_types(command).unwrap(),
            project_dir: std::path::PathBuf::from("/project"),
            warehouse: crate::Warehouse::parse("memory:///lake", std::path::Path::new("/"))
                .unwrap(),
            threads: 1,
            fail_fast: false,
            retries: 0,
            retry_backoff: std::time::Duration::ZERO,
            incremental_models: BTreeSet::new(),
            shuffle_partitions: 0,
            task_timeout: std::time::Duration::from_secs(1),
            full_refresh: false,
            recompile: None,
        };
        jobs(&request)
            .into_iter()
            .map(|job| (job.unique_id, job.waits_for.into_iter().collect()))
            .collect()
    }

    const LANDED_PROJECT: &[(&str, &str)] = &[
        ("dbt_project.yml", "name: shop\n"),
        (
            "models/sources.yml",
            "version: 2\nsources:\n  - name: crm\n    tables:\n      - name: customers\n        ingest: {connector: files, path: 'in/*.csv'}\n      - name: orders\n        ingest: {connector: files, path: 'in/o*.csv'}\n  - name: lake\n    tables:\n      - name: events\n",
        ),
        (
            "models/by_country.sql",
            "select country, count(*) as n from {{ source('crm', 'customers') }} group by country",
        ),
        (
            "models/events.sql",
            "select * from {{ source('lake', 'events') }}",
        ),
    ];

    #[test]
    fn build_lands_the_sources_of_what_it_builds_before_the_models_that_read_them() {
        let (manifest, everything) = compiled(LANDED_PROJECT, &[]);
        let build = planned(&manifest, &everything, "build");
        assert_eq!(
            build.keys().collect::<Vec<_>>(),
            [
                "model.shop.by_country",
                "model.shop.events",
                "source.shop.crm.customers",
                "source.shop.crm.orders",
            ],
            "sources without an ingest block are not run"
        );
        assert_eq!(
            build["model.shop.by_country"],
            ["source.shop.crm.customers"]
        );
        assert!(build["model.shop.events"].is_empty());

        let (manifest, one_model) = compiled(LANDED_PROJECT, &["by_country"]);
        let build = planned(&manifest, &one_model, "build");
        assert_eq!(
            build.keys().collect::<Vec<_>>(),
            ["model.shop.by_country", "source.shop.crm.customers"],
            "build --select model lands the sources it reads"
        );
        assert_eq!(
            planned(&manifest, &one_model, "run")
                .keys()
                .collect::<Vec<_>>(),
            ["model.shop.by_country"],
            "run lands nothing"
        );
    }

    #[test]
    fn ingest_lands_only_the_selected_sources_with_an_ingest_block() {
        let (manifest, everything) = compiled(LANDED_PROJECT, &[]);
        assert_eq!(
            planned(&manifest, &everything, "ingest")
                .keys()
                .collect::<Vec<_>>(),
            ["source.shop.crm.customers", "source.shop.crm.orders"]
        );
        let (manifest, one) = compiled(LANDED_PROJECT, &["source:crm.orders"]);
        assert_eq!(
            planned(&manifest, &one, "ingest")
                .keys()
                .collect::<Vec<_>>(),
            ["source.shop.crm.orders"]
        );
        let (manifest, upstream) = compiled(LANDED_PROJECT, &["+by_country"]);
        assert_eq!(
            planned(&manifest, &upstream, "ingest")
                .keys()
                .collect::<Vec<_>>(),
            ["source.shop.crm.customers"]
        );
    }

    /// `orders` and `customers`; `order_totals` reads orders, `customer_orders` reads both; a
    /// `not_null` test on orders and a `relationships` test from orders to customers.
    #[test]
    fn a_node_waits_for_the_tests_whose_every_tested_node_is_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("dbt_project.yml", "name: shop\n");
        write("models/orders.sql", "select 1 as id, 1 as customer_id");
        write("models/customers.sql", "select 1 as id");
        write(
            "models/order_totals.sql",
            "select * from {{ ref('orders') }}",
        );
        write(
            "models/customer_orders.sql",
            "select * from {{ ref('orders') }} join {{ ref('customers') }} using (id)",
        );
        write(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n        data_tests: [not_null]\n      - name: customer_id\n        data_tests:\n          - relationships: {to: ref('customers'), field: id}\n",
        );
        let outcome = strata_core::invocation::run_compile(
            dir.path(),
            None,
            "dev",
            &[],
            &[],
            &BTreeMap::new(),
        );
        let manifest = outcome.manifest.expect("compiles");
        let waits = waits_for(&manifest, &manifest.dag(), &outcome.selected);
        let tests_waited = |model: &str| -> Vec<String> {
            waits[&format!("model.shop.{model}")]
                .iter()
                .filter(|id| id.starts_with("test."))
                .map(|id| id.split('.').nth(2).unwrap().to_string())
                .collect()
        };
        assert_eq!(tests_waited("order_totals"), ["not_null_orders_id"]);
        assert_eq!(
            tests_waited("customer_orders"),
            [
                "not_null_orders_id",
                "relationships_orders_customer_id__id__ref_customers_"
            ]
        );
    }
}
