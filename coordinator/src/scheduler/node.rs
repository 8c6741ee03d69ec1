//! The bookkeeping of one node while its tasks are out: how many tasks its current stage has,
//! the results in so far, the stages still to come, and the shuffle outputs written.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use strata_proto::v1::{ShuffleLocation, Task, TaskKind, TaskResult};

use crate::run::StageRecord;

/// A node whose tasks are out: it completes when all of them have succeeded.
#[derive(Debug)]
pub(crate) struct PendingNode {
    /// When the node was planned.
    pub started: Instant,
    /// Tasks of the current stage.
    pub tasks: usize,
    /// Successful results of the current stage.
    pub results: Vec<TaskResult>,
    /// The highest attempt any of its tasks made.
    pub attempts: u32,
    /// The workers that reported results for the node's tasks.
    pub workers: BTreeSet<String>,
    /// Stages still to run after the current one (shuffled models).
    pub later: VecDeque<Vec<Task>>,
    /// Map outputs written so far, for the readers of later stages.
    pub locations: Vec<ShuffleLocation>,
    /// Completed stages, for the record.
    pub stages: Vec<StageRecord>,
    /// Every map task published so far, by (stage, map partition): run again when the worker
    /// holding its output is lost.
    map_tasks: HashMap<(u32, u32), Task>,
    /// Map tasks running again to replace lost outputs.
    pub recovering: BTreeSet<String>,
    /// Tasks waiting for the recovered outputs, with the attempt they will run as and whether
    /// they are recovery map tasks themselves.
    pub blocked: Vec<(Task, u32, bool)>,
}

impl PendingNode {
    /// A node whose first stage has `tasks` tasks, with `later` stages to follow.
    pub fn new(tasks: usize, later: VecDeque<Vec<Task>>, now: Instant) -> PendingNode {
        PendingNode {
            started: now,
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
    pub fn remember_maps(&mut self, tasks: &[Task]) {
        for task in tasks {
            if task.kind == TaskKind::ShuffleMap as i32 {
                self.map_tasks
                    .insert((task.stage, task.partition), task.clone());
            }
        }
    }

    /// Forgets every output held by the workers of `lost` and returns the map tasks to run
    /// again (those not already running again).
    pub fn lose_outputs(&mut self, lost: &[ShuffleLocation]) -> Vec<Task> {
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
    pub fn next_stage(&mut self) -> Option<Vec<Task>> {
        let mut tasks = self.later.pop_front()?;
        let results = std::mem::take(&mut self.results);
        self.stages.push(stage_record("map", &results));
        for result in results {
            self.locations.extend(result.shuffle_outputs);
        }
        for task in &mut tasks {
            task.shuffle_locations = self.locations.clone();
        }
        self.tasks = tasks.len();
        Some(tasks)
    }

    /// Records the final (reduce) stage of a shuffled model; a node without stages keeps none.
    pub fn record_final_stage(&mut self) {
        if !self.stages.is_empty() {
            let record = stage_record("reduce", &self.results);
            self.stages.push(record);
        }
    }
}

/// A stage's record from its tasks' results.
fn stage_record(kind: &str, results: &[TaskResult]) -> StageRecord {
    let workers: BTreeSet<String> = results
        .iter()
        .map(|result| result.worker_id.clone())
        .collect();
    StageRecord {
        kind: kind.to_string(),
        tasks: u32::try_from(results.len()).unwrap_or(u32::MAX),
        workers: workers.into_iter().collect(),
        rows: results.iter().map(|result| result.rows).sum(),
        bytes: results.iter().map(|result| result.bytes).sum(),
    }
}

/// Partition-aligned tasks of one node wrote files of different schemas.
#[derive(Debug, thiserror::Error)]
#[error(
    "the input files do not share one schema (partition-aligned tasks produced different columns); align the files or read them in one task"
)]
pub(crate) struct SchemaMismatch;

/// Combines the results of a node's tasks: all their files, summed counts.
pub(crate) fn merge_results(results: Vec<TaskResult>) -> Result<TaskResult, SchemaMismatch> {
    let mut merged = TaskResult {
        table_version: -1,
        ..TaskResult::default()
    };
    for result in results {
        if merged.delta_schema_json.is_empty() {
            merged.delta_schema_json = result.delta_schema_json.clone();
        } else if !result.delta_schema_json.is_empty()
            && result.delta_schema_json != merged.delta_schema_json
        {
            return Err(SchemaMismatch);
        }
        merged.files.extend(result.files);
        merged.rows += result.rows;
        merged.bytes += result.bytes;
        merged.failing_rows += result.failing_rows;
        merged.peak_memory_bytes = merged.peak_memory_bytes.max(result.peak_memory_bytes);
        merged.peak_allocated_bytes = merged.peak_allocated_bytes.max(result.peak_allocated_bytes);
        merged.append = result.append;
        // Tasks that commit themselves (ingest): the latest version any of them made.
        merged.table_version = merged.table_version.max(result.table_version);
        merged.quarantined_rows += result.quarantined_rows;
        merged.task_id = result.task_id;
        merged.attempt = result.attempt;
    }
    Ok(merged)
}
