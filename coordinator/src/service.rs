//! The coordinator as a service: `strata.v1.PipelineService` over gRPC. Runs submitted here
//! execute on the job queue like CLI runs (same planner, same commits); their state is kept
//! in a [`RunStore`], so `GetRun`/`ListRuns` answer after a restart and a coordinator
//! restarted mid-run resumes its runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use strata_core::manifest::Manifest;
use strata_core::queue::JobQueue;
use strata_proto::v1 as pb;
use strata_proto::v1::pipeline_service_server::PipelineService;
use tokio::sync::{Semaphore, broadcast, watch};
use tonic::{Request, Response, Status};

use crate::driver::Coordinator;
use crate::prepare::{PrepareError, RunSpec, prepare};
use crate::run::{Resume, RunControl, RunEvent, RunRecord};
use crate::store::{RunState, RunStore, StoredRun, StoredTask};

/// Settings of a coordinator service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where uploaded projects are unpacked (and the run store lives, for [`RedbStore`]
    /// users).
    ///
    /// [`RedbStore`]: crate::store::RedbStore
    pub data_dir: PathBuf,
    /// The queue workers take tasks from.
    pub task_queue: String,
    /// The queue ingest agents take ingest tasks from.
    pub ingest_queue: String,
    /// Runs executing at once; later submissions wait in `queued`.
    pub max_concurrent_runs: usize,
    /// Settings of a run that its submission does not override.
    pub defaults: RunSpec,
    /// The coordinator's own variables submitted projects may read (`env_var()`,
    /// `STRATA_WAREHOUSE`): only those its allowlist names. A submission adds its own.
    pub env: BTreeMap<String, String>,
    /// The secret the cluster's Flight calls carry (to delete a run's shuffle outputs).
    pub cluster_secret: Option<strata_engine::exchange::ClusterSecret>,
    /// Where runs are counted, when the process serves metrics.
    pub metrics: Option<crate::metrics::CoordinatorMetrics>,
}

/// A run this process is executing (or executed): its events so far, for watchers.
struct LiveRun {
    events: Vec<pb::RunEvent>,
    sender: broadcast::Sender<pb::RunEvent>,
    cancel: watch::Sender<bool>,
    manifest: Option<Arc<Manifest>>,
}

struct Inner<Q: JobQueue> {
    queue: Arc<Q>,
    store: Arc<dyn RunStore>,
    config: ServiceConfig,
    live: Mutex<HashMap<String, LiveRun>>,
    slots: Arc<Semaphore>,
}

/// The `PipelineService` implementation.
pub struct Pipeline<Q: JobQueue> {
    inner: Arc<Inner<Q>>,
}

impl<Q: JobQueue> Clone for Pipeline<Q> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

fn internal(err: impl std::fmt::Display) -> Status {
    Status::internal(err.to_string())
}

impl<Q: JobQueue> Pipeline<Q> {
    /// A service publishing tasks on `queue` and keeping runs in `store`.
    pub fn new(queue: Arc<Q>, store: Arc<dyn RunStore>, config: ServiceConfig) -> Pipeline<Q> {
        let slots = Arc::new(Semaphore::new(config.max_concurrent_runs.max(1)));
        Pipeline {
            inner: Arc::new(Inner {
                queue,
                store,
                config,
                live: Mutex::new(HashMap::new()),
                slots,
            }),
        }
    }

    /// Picks up the runs a previous coordinator left queued or running: finished nodes stay
    /// finished, tasks still out are waited for, the rest runs. Returns their ids.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn resume_unfinished(&self) -> Result<Vec<String>, crate::store::StoreError> {
        let mut resumed = Vec::new();
        for mut run in self.inner.store.runs()? {
            if run.state.is_final() {
                continue;
            }
            let tasks = self.inner.store.tasks(&run.run_id)?;
            let resume = resume_point(&run, &tasks);
            run.resumed += 1;
            self.inner.store.save_run(&run)?;
            tracing::info!(run = %run.run_id, finished = run.finished.len(), in_flight = resume.in_flight.len(), "resuming a run");
            resumed.push(run.run_id.clone());
            self.start(run, None, Some(resume));
        }
        Ok(resumed)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveRun>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers the run as live and executes it in the background.
    fn start(
        &self,
        run: StoredRun,
        prepared: Option<crate::run::RunRequest>,
        resume: Option<Resume>,
    ) {
        let cancelled = self.go_live(
            &run.run_id,
            prepared
                .as_ref()
                .map(|request| Arc::clone(&request.manifest)),
        );
        let service = self.clone();
        tokio::spawn(async move {
            service.execute(run, prepared, resume, cancelled).await;
        });
    }

    /// Registers a run as live in this process (watchers, cancellation, its manifest) and
    /// returns its cancel switch.
    fn go_live(&self, run_id: &str, manifest: Option<Arc<Manifest>>) -> watch::Receiver<bool> {
        let (cancel, cancelled) = watch::channel(false);
        let (sender, _) = broadcast::channel(4096);
        self.live().insert(
            run_id.to_string(),
            LiveRun {
                events: Vec::new(),
                sender,
                cancel,
                manifest,
            },
        );
        cancelled
    }

    /// Records an event for watchers.
    fn publish(&self, run_id: &str, event: pb::run_event::Event) {
        let event = pb::RunEvent {
            run_id: run_id.to_string(),
            at_ms: now_ms(),
            event: Some(event),
        };
        if let Some(live) = self.live().get_mut(run_id) {
            live.events.push(event.clone());
            let _ = live.sender.send(event);
        }
    }

    fn save(&self, run: &StoredRun) {
        if let Err(err) = self.inner.store.save_run(run) {
            tracing::error!(run = %run.run_id, %err, "cannot save the run's state");
        }
    }

    async fn execute(
        &self,
        mut run: StoredRun,
        prepared: Option<crate::run::RunRequest>,
        resume: Option<Resume>,
        cancelled: watch::Receiver<bool>,
    ) {
        let permit = Arc::clone(&self.inner.slots).acquire_owned().await;
        let request = match prepared {
            Some(request) => Ok(request),
            None => prepare(&run.spec, &self.inner.config.env)
                .await
                .map(|prepared| prepared.request),
        };
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                run.state = RunState::Failed;
                run.error = format!("cannot prepare the run again: {err}");
                return self.end(run, None);
            }
        };
        if let Some(live) = self.live().get_mut(&run.run_id) {
            live.manifest = Some(Arc::clone(&request.manifest));
        }
        if *cancelled.borrow() {
            run.state = RunState::Cancelled;
            return self.end(run, None);
        }
        run.state = RunState::Running;
        if run.started_at_ms == 0 {
            run.started_at_ms = now_ms();
        }
        run.selected = request.selected.iter().cloned().collect();
        self.save(&run);
        let coordinator = Coordinator::new(Arc::clone(&self.inner.queue))
            .with_task_queue(&self.inner.config.task_queue)
            .with_ingest_queue(&self.inner.config.ingest_queue)
            .with_cluster_secret(self.inner.config.cluster_secret.clone())
            .with_metrics(self.inner.config.metrics.clone());
        let control = RunControl {
            resume,
            cancel: Some(cancelled.clone()),
            trace_id: Some(run.trace_id.clone()),
        };
        let run_id = run.run_id.clone();
        let mut state = run.clone();
        let outcome = coordinator
            .run_with(&request, &run_id, control, |event| {
                self.on_event(&mut state, event);
            })
            .await;
        drop(permit);
        let mut run = state;
        match outcome {
            Ok(record) => {
                run.trace_id = record.trace_id.clone();
                run.state = if *cancelled.borrow() {
                    RunState::Cancelled
                } else if record.success {
                    RunState::Succeeded
                } else {
                    RunState::Failed
                };
                save_record(&record, &request.warehouse).await;
                self.end(run, Some(record));
            }
            Err(err) => {
                run.state = RunState::Failed;
                run.error = err.to_string();
                self.end(run, None);
            }
        }
    }

    /// Keeps the stored state in step with the run and tells watchers.
    fn on_event(&self, run: &mut StoredRun, event: RunEvent) {
        let store = &self.inner.store;
        let run_id = run.run_id.clone();
        let logged = |result: Result<(), crate::store::StoreError>| {
            if let Err(err) = result {
                tracing::error!(run = %run_id, %err, "cannot save the run's state");
            }
        };
        match event {
            RunEvent::Started {
                unique_id,
                done,
                total,
                tasks,
                stages,
            } => {
                run.started.insert(unique_id.clone(), (tasks, stages));
                logged(store.save_run(run));
                self.publish(
                    &run.run_id,
                    pb::run_event::Event::NodeStarted(pb::NodeStarted {
                        unique_id,
                        done: u32::try_from(done).unwrap_or(u32::MAX),
                        total: u32::try_from(total).unwrap_or(u32::MAX),
                    }),
                );
            }
            RunEvent::Finished {
                result,
                done,
                total,
            } => {
                run.started.remove(&result.unique_id);
                run.finished
                    .insert(result.unique_id.clone(), result.clone());
                logged(store.save_run(run));
                logged(store.remove_tasks(&run.run_id, &result.unique_id));
                self.publish(
                    &run.run_id,
                    pb::run_event::Event::NodeFinished(pb::NodeFinished {
                        node: Some(pb::NodeState::from(&result)),
                        done: u32::try_from(done).unwrap_or(u32::MAX),
                        total: u32::try_from(total).unwrap_or(u32::MAX),
                    }),
                );
            }
            RunEvent::TaskDispatched { task, attempt } => {
                use prost::Message as _;
                let stored = StoredTask {
                    task_id: task.task_id.clone(),
                    unique_id: task.node_unique_id.clone(),
                    attempt,
                    task: task.encode_to_vec(),
                    done: false,
                };
                logged(store.save_task(&run.run_id, &stored));
                self.publish(
                    &run.run_id,
                    pb::run_event::Event::Task(pb::TaskEvent {
                        task_id: task.task_id.clone(),
                        unique_id: task.node_unique_id.clone(),
                        attempt,
                        state: String::from(if attempt > 1 { "retried" } else { "dispatched" }),
                        worker: String::new(),
                        error: String::new(),
                    }),
                );
            }
            RunEvent::TaskReported {
                task_id,
                unique_id,
                attempt,
                worker,
                error,
            } => {
                if error.is_none() {
                    logged(store.mark_task_done(&run.run_id, &task_id));
                }
                self.publish(
                    &run.run_id,
                    pb::run_event::Event::Task(pb::TaskEvent {
                        task_id,
                        unique_id,
                        attempt,
                        state: String::from(if error.is_some() {
                            "failed"
                        } else {
                            "succeeded"
                        }),
                        worker,
                        error: error.unwrap_or_default(),
                    }),
                );
            }
        }
    }

    /// Ends a run: its final state saved, watchers told, its slot in the live map kept for
    /// late watchers (without the cancel switch's effect).
    fn end(&self, mut run: StoredRun, record: Option<RunRecord>) {
        run.finished_at_ms = now_ms();
        if let Some(record) = &record {
            for node in &record.nodes {
                run.finished.insert(node.unique_id.clone(), node.clone());
            }
            run.started.clear();
        }
        self.save(&run);
        let finished = pb::Run::from(&run);
        self.publish(
            &run.run_id,
            pb::run_event::Event::RunFinished(pb::RunFinished {
                run: Some(finished),
            }),
        );
        tracing::info!(run = %run.run_id, state = ?run.state, "run ended");
    }

    fn stored(&self, run_id: &str) -> Result<StoredRun, Status> {
        if run_id.is_empty() {
            return Err(Status::invalid_argument("run_id is empty"));
        }
        self.inner
            .store
            .run(run_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no run '{run_id}' (strata runs lists them)")))
    }
}

/// Where a stored run stands, as a [`Resume`]: its finished nodes, and the tasks of the nodes
/// that are safe to wait for — every planned task known, none finished, a single stage.
fn resume_point(run: &StoredRun, tasks: &[StoredTask]) -> Resume {
    use prost::Message as _;
    let mut by_node: BTreeMap<&str, Vec<&StoredTask>> = BTreeMap::new();
    for task in tasks {
        by_node
            .entry(task.unique_id.as_str())
            .or_default()
            .push(task);
    }
    let mut in_flight = Vec::new();
    for (node, tasks) in by_node {
        let complete = run
            .started
            .get(node)
            .is_some_and(|(planned, stages)| *stages == 1 && *planned == tasks.len());
        if !complete || tasks.iter().any(|task| task.done) {
            continue;
        }
        for task in tasks {
            if let Ok(decoded) = pb::Task::decode(task.task.as_slice()) {
                in_flight.push((decoded, task.attempt));
            }
        }
    }
    Resume {
        finished: run.finished.values().cloned().collect(),
        in_flight,
        first_task_number: u64::from(run.resumed + 1) * 100_000,
    }
}

/// Saves the run record in the warehouse, as CLI runs do.
async fn save_record(record: &RunRecord, warehouse: &crate::Warehouse) {
    let Ok(json) = serde_json::to_string_pretty(record) else {
        return;
    };
    let location = format!("{}/run_results.json", warehouse.run_uri(&record.run_id));
    if let Err(err) = strata_storage::write(&location, json.into_bytes()).await {
        tracing::warn!(%location, %err, "cannot save the run record");
    }
}

/// Unpacks an uploaded project (tar.gz) under `dir` and returns its folder: the archive's
/// root, or its single top folder, whichever holds `dbt_project.yml`.
fn unpack_project(archive: &[u8], dir: &Path) -> Result<PathBuf, Status> {
    std::fs::create_dir_all(dir).map_err(internal)?;
    let mut unpacked = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    // `unpack` refuses entries that would land outside `dir` (absolute paths, `..`).
    unpacked.unpack(dir).map_err(|err| {
        Status::invalid_argument(format!(
            "project_archive is not a readable tar.gz archive: {err}"
        ))
    })?;
    if dir.join("dbt_project.yml").is_file() {
        return Ok(dir.to_path_buf());
    }
    let folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(internal)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    match folders.as_slice() {
        [only] if only.join("dbt_project.yml").is_file() => Ok(only.clone()),
        _ => Err(Status::invalid_argument(
            "project_archive has no dbt_project.yml at its root or in its single top folder",
        )),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<Q: JobQueue> PipelineService for Pipeline<Q> {
    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let submission = request.into_inner();
        let key = submission.idempotency_key.trim().to_string();
        // Checked before compiling (the insert below decides atomically).
        if !key.is_empty()
            && let Some(run_id) = self.inner.store.run_for_key(&key).map_err(internal)?
        {
            return Ok(Response::new(pb::SubmitRunResponse {
                run_id,
                existing: true,
            }));
        }
        let run_id = crate::run::new_run_id();
        let project_dir = match &submission.project {
            Some(pb::submit_run_request::Project::ProjectDir(dir)) if !dir.trim().is_empty() => {
                let dir = PathBuf::from(dir);
                if !dir.join("dbt_project.yml").is_file() {
                    return Err(Status::invalid_argument(format!(
                        "project_dir {} has no dbt_project.yml the coordinator can read; give a folder on the coordinator's machine, or upload the project as project_archive",
                        dir.display()
                    )));
                }
                dir
            }
            Some(pb::submit_run_request::Project::ProjectArchive(archive)) => {
                let dir = self.inner.config.data_dir.join("projects").join(&run_id);
                let inner = archive.clone();
                let unpack_dir = dir.clone();
                tokio::task::spawn_blocking(move || unpack_project(&inner, &unpack_dir))
                    .await
                    .map_err(internal)??
            }
            _ => {
                return Err(Status::invalid_argument(
                    "no project: set project_dir (a folder the coordinator can read) or project_archive (a tar.gz)",
                ));
            }
        };
        let spec = RunSpec::try_from(crate::wire::Submission {
            request: &submission,
            project_dir,
            defaults: &self.inner.config.defaults,
        })
        .map_err(|err| Status::invalid_argument(err.to_string()))?;
        // Compile now: a bad project, selector or var is the caller's to fix, at once.
        let prepared = match prepare(&spec, &self.inner.config.env).await {
            Ok(prepared) => prepared,
            Err(PrepareError::Project(diagnostics)) => {
                return Err(Status::invalid_argument(format!(
                    "the project does not compile:\n{}",
                    diagnostics.render(false)
                )));
            }
            Err(PrepareError::Invalid(message)) => return Err(Status::invalid_argument(message)),
        };
        let mut run = StoredRun {
            run_id: run_id.clone(),
            spec,
            state: RunState::Queued,
            idempotency_key: key,
            dry_run: submission.dry_run,
            submitted_at_ms: now_ms(),
            started_at_ms: 0,
            finished_at_ms: 0,
            error: String::new(),
            trace_id: crate::run::random_hex(16),
            selected: prepared.request.selected.iter().cloned().collect(),
            finished: BTreeMap::new(),
            started: BTreeMap::new(),
            resumed: 0,
        };
        if let Some(existing) = self.inner.store.insert_run(&run).map_err(internal)? {
            return Ok(Response::new(pb::SubmitRunResponse {
                run_id: existing,
                existing: true,
            }));
        }
        tracing::info!(run = %run_id, project = %run.spec.project_dir.display(), "run submitted");
        if submission.dry_run {
            self.go_live(&run_id, Some(Arc::clone(&prepared.request.manifest)));
            run.state = RunState::Succeeded;
            run.started_at_ms = run.submitted_at_ms;
            self.end(run, None);
        } else {
            self.start(run, Some(prepared.request), None);
        }
        Ok(Response::new(pb::SubmitRunResponse {
            run_id,
            existing: false,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run = self.stored(&request.into_inner().run_id)?;
        Ok(Response::new(pb::Run::from(&run)))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let offset: usize = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| Status::invalid_argument("page_token is not one ListRuns returned"))?
        };
        let page_size = match request.page_size {
            0 => 50,
            size => usize::try_from(size.min(1000)).unwrap_or(1000),
        };
        let mut runs: Vec<StoredRun> = self
            .inner
            .store
            .runs()
            .map_err(internal)?
            .into_iter()
            .filter(|run| {
                request.status.is_empty()
                    || request
                        .status
                        .contains(&(pb::RunStatus::from(run.state) as i32))
            })
            .filter(|run| run.submitted_at_ms >= request.submitted_after_ms)
            .filter(|run| {
                request.submitted_before_ms == 0
                    || run.submitted_at_ms < request.submitted_before_ms
            })
            .collect();
        runs.sort_by(|a, b| {
            b.submitted_at_ms
                .cmp(&a.submitted_at_ms)
                .then_with(|| b.run_id.cmp(&a.run_id))
        });
        let next = offset.saturating_add(page_size);
        let next_page_token = if next < runs.len() {
            next.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .iter()
                .skip(offset)
                .take(page_size)
                .map(pb::Run::from)
                .collect(),
            next_page_token,
        }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let run = self.stored(&request.into_inner().run_id)?;
        let (history, receiver) = match self.live().get(&run.run_id) {
            Some(live) => (live.events.clone(), Some(live.sender.subscribe())),
            None => (Vec::new(), None),
        };
        let ended = history
            .iter()
            .any(|event| matches!(event.event, Some(pb::run_event::Event::RunFinished(_))));
        let run_id = run.run_id.clone();
        let stream = async_stream(history, receiver.filter(|_| !ended), move || {
            // Not live here (finished before this coordinator started): its final state.
            pb::RunEvent {
                run_id: run_id.clone(),
                at_ms: now_ms(),
                event: Some(pb::run_event::Event::RunFinished(pb::RunFinished {
                    run: Some(pb::Run::from(&run)),
                })),
            }
        });
        Ok(Response::new(stream))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run = self.stored(&request.into_inner().run_id)?;
        if !run.state.is_final() {
            match self.live().get(&run.run_id) {
                Some(live) => {
                    let _ = live.cancel.send(true);
                }
                None => {
                    return Err(Status::failed_precondition(
                        "the run is not executing on this coordinator",
                    ));
                }
            }
            tracing::info!(run = %run.run_id, "cancel requested");
        }
        Ok(Response::new(pb::Run::from(&self.stored(&run.run_id)?)))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeDetail>, Status> {
        let request = request.into_inner();
        let run = self.stored(&request.run_id)?;
        let live_manifest = self
            .live()
            .get(&run.run_id)
            .and_then(|live| live.manifest.clone());
        let manifest = match live_manifest {
            Some(manifest) => manifest,
            None => Arc::new(
                prepare(&run.spec, &self.inner.config.env)
                    .await
                    .map_err(|err| {
                        Status::failed_precondition(format!(
                            "cannot compile the run's project again: {err}"
                        ))
                    })?
                    .request
                    .manifest
                    .as_ref()
                    .clone(),
            ),
        };
        let Some(node) = manifest.nodes.get(&request.unique_id) else {
            return Err(Status::not_found(format!(
                "the run's project has no node '{}' (unique ids look like model.<project>.<name>)",
                request.unique_id
            )));
        };
        let state = match run.finished.get(&node.unique_id) {
            Some(result) => pb::NodeState::from(result),
            None if run.started.contains_key(&node.unique_id) => {
                crate::wire::pending_node(&node.unique_id, "running")
            }
            None => crate::wire::pending_node(&node.unique_id, "pending"),
        };
        Ok(Response::new(pb::NodeDetail {
            node: Some(state),
            compiled_sql: node.compiled_code.clone().unwrap_or_default(),
            original_file_path: node.original_file_path.clone(),
        }))
    }
}

/// The events of a run: the history, then live ones until the run finishes; a run not live
/// in this process gets its final state.
fn async_stream(
    history: Vec<pb::RunEvent>,
    receiver: Option<broadcast::Receiver<pb::RunEvent>>,
    final_state: impl FnOnce() -> pb::RunEvent + Send + 'static,
) -> EventStream {
    let (sender, output) = tokio::sync::mpsc::channel::<Result<pb::RunEvent, Status>>(256);
    tokio::spawn(async move {
        let mut ended = false;
        for event in history {
            ended |= matches!(event.event, Some(pb::run_event::Event::RunFinished(_)));
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        let Some(mut receiver) = receiver else {
            let _ = sender.send(Ok(final_state())).await;
            return;
        };
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    let last = matches!(event.event, Some(pb::run_event::Event::RunFinished(_)));
                    if sender.send(Ok(event)).await.is_err() || last {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = sender
                        .send(Err(Status::data_loss(format!(
                            "the watcher fell {missed} events behind; watch again (the history is replayed)"
                        ))))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(output))
}

// -------------------------------------------------------------------------------------------
// Serving: authentication, health, reflection, TLS.

/// Bearer tokens accepted on every RPC except health.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<String>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// Reads a token file: one token per line; blank lines and `#` comments are skipped. The
/// coordinator reads its accepted tokens this way, and clients their own.
///
/// # Errors
/// Returns the I/O error when the file cannot be read.
pub fn read_tokens(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl Tokens {
    /// The tokens (empty: no authentication).
    pub fn new(tokens: Vec<String>) -> Tokens {
        Tokens(Arc::new(
            tokens
                .into_iter()
                .map(|token| token.trim().to_string())
                .filter(|token| !token.is_empty())
                .collect(),
        ))
    }

    fn accepts(&self, presented: &str) -> bool {
        // Compare every byte of every token: the time taken does not tell how much matched.
        self.0.iter().fold(false, |found, token| {
            let same_length = token.len() == presented.len();
            let differences = token
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (same_length && differences == 0)
        })
    }

    /// A tonic interceptor: UNAUTHENTICATED without a valid `authorization: Bearer …`; the
    /// rejection is logged with the peer address, never the token.
    ///
    /// # Errors
    /// UNAUTHENTICATED for a missing or unknown token.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.0.is_empty() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if self.accepts(token) => Ok(request),
            other => {
                let peer = request
                    .remote_addr()
                    .map_or_else(|| String::from("unknown"), |addr| addr.to_string());
                let reason = if other.is_some() { "an invalid" } else { "no" };
                tracing::warn!(%peer, "rejected a call with {reason} bearer token");
                Err(Status::unauthenticated(
                    "a valid bearer token is required: send `authorization: Bearer <token>` (strata submit --token-file FILE)",
                ))
            }
        }
    }
}

/// TLS material in PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Serves the pipeline service, gRPC health and reflection on `listener` until `shutdown`
/// resolves.
///
/// # Errors
/// When the TLS files cannot be read or the server fails.
pub async fn serve<Q: JobQueue>(
    pipeline: Pipeline<Q>,
    tokens: Tokens,
    tls: Option<TlsFiles>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use strata_proto::v1::pipeline_service_server::PipelineServiceServer;
    // One rustls crypto provider for the process (two back-ends are linked in).
    strata_storage::install();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<PipelineServiceServer<Pipeline<Q>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|err| format!("cannot read {}: {err}", tls.cert.display()))?;
        let key = std::fs::read(&tls.key)
            .map_err(|err| format!("cannot read {}: {err}", tls.key.display()))?;
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
    }
    let guarded = |tokens: Tokens| move |request| tokens.check(request);
    builder
        .add_service(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            guarded(tokens.clone()),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1alpha,
            guarded(tokens.clone()),
        ))
        .add_service(PipelineServiceServer::with_interceptor(
            pipeline,
            guarded(tokens),
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}
