//! Durable run state: what a coordinator must remember to answer `GetRun`/`ListRuns` after a
//! restart and to resume the runs it was executing — each run's spec and state, its finished
//! nodes, and the tasks it has out. [`RedbStore`] keeps it in a file of the coordinator's data
//! folder ([redb](https://docs.rs/redb): transactional, crash-safe, pure Rust);
//! [`MemoryStore`] keeps it in memory for tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::prepare::RunSpec;
use crate::run::NodeResult;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Accepted, not started.
    Queued,
    /// Executing.
    Running,
    /// Every node ended well.
    Succeeded,
    /// Some node ended in error or fail, or the run could not start.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl RunState {
    /// True for the states a run ends in.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A run as the coordinator remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRun {
    /// Run id.
    pub run_id: String,
    /// What was asked.
    pub spec: RunSpec,
    /// Where it stands.
    pub state: RunState,
    /// The key it was submitted with, if any.
    pub idempotency_key: String,
    /// Compile and plan only.
    pub dry_run: bool,
    /// Milliseconds since the epoch.
    pub submitted_at_ms: i64,
    /// When it started executing (0: not yet).
    pub started_at_ms: i64,
    /// When it ended (0: not yet).
    pub finished_at_ms: i64,
    /// Why the run as a whole failed.
    pub error: String,
    /// The W3C trace id of its tasks.
    pub trace_id: String,
    /// Selected nodes, in execution order as far as known.
    pub selected: Vec<String>,
    /// Finished nodes.
    pub finished: BTreeMap<String, NodeResult>,
    /// Nodes started and not finished, with the number of tasks and stages they were planned as.
    pub started: BTreeMap<String, (usize, usize)>,
    /// How many times a coordinator picked the run up again.
    pub resumed: u32,
}

/// A task a run has out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTask {
    /// Task id.
    pub task_id: String,
    /// Its node.
    pub unique_id: String,
    /// The attempt last published.
    pub attempt: u32,
    /// The task, protobuf-encoded.
    pub task: Vec<u8>,
    /// True once a result for it was accepted.
    pub done: bool,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file cannot be opened: another coordinator holds it, or it is not a store.
    #[error("cannot open the run store {}: {source}", path.display())]
    Open {
        /// The store file.
        path: std::path::PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// The store's folder cannot be created.
    #[error("cannot create the run store's folder {}: {source}", path.display())]
    Folder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed (I/O, a transaction, a table).
    #[error("run store: {0}")]
    Database(#[from] redb::Error),
    /// A stored record cannot be written or read back.
    #[error("run store record: {0}")]
    Record(#[from] serde_json::Error),
}

/// A database failure of any of redb's kinds.
fn database(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(err.into())
}

/// Keeps runs, their nodes and their tasks.
pub trait RunStore: Send + Sync + 'static {
    /// Saves a run (replacing what was saved under its id).
    ///
    /// # Errors
    /// When the store cannot write.
    fn save_run(&self, run: &StoredRun) -> Result<(), StoreError>;

    /// A run by id.
    ///
    /// # Errors
    /// When the store cannot read.
    fn run(&self, run_id: &str) -> Result<Option<StoredRun>, StoreError>;

    /// Every run, in no particular order.
    ///
    /// # Errors
    /// When the store cannot read.
    fn runs(&self) -> Result<Vec<StoredRun>, StoreError>;

    /// Saves `run` unless its idempotency key already names a run, whose id it returns
    /// instead; atomic, so two submissions with one key start one run.
    ///
    /// # Errors
    /// When the store cannot write.
    fn insert_run(&self, run: &StoredRun) -> Result<Option<String>, StoreError>;

    /// The run submitted with `key`, if any.
    ///
    /// # Errors
    /// When the store cannot read.
    fn run_for_key(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Marks a task done (its result was accepted); unknown tasks are ignored.
    ///
    /// # Errors
    /// When the store cannot write.
    fn mark_task_done(&self, run_id: &str, task_id: &str) -> Result<(), StoreError>;

    /// Saves a task of a run (replacing an earlier save of the same task).
    ///
    /// # Errors
    /// When the store cannot write.
    fn save_task(&self, run_id: &str, task: &StoredTask) -> Result<(), StoreError>;

    /// Forgets the tasks of a node (it finished).
    ///
    /// # Errors
    /// When the store cannot write.
    fn remove_tasks(&self, run_id: &str, unique_id: &str) -> Result<(), StoreError>;

    /// The tasks a run has out.
    ///
    /// # Errors
    /// When the store cannot read.
    fn tasks(&self, run_id: &str) -> Result<Vec<StoredTask>, StoreError>;
}

/// A store in memory: for tests, and for a coordinator that need not survive restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    runs: BTreeMap<String, StoredRun>,
    keys: BTreeMap<String, String>,
    tasks: BTreeMap<(String, String), StoredTask>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RunStore for MemoryStore {
    fn save_run(&self, run: &StoredRun) -> Result<(), StoreError> {
        self.lock().runs.insert(run.run_id.clone(), run.clone());
        Ok(())
    }

    fn run(&self, run_id: &str) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.lock().runs.get(run_id).cloned())
    }

    fn runs(&self) -> Result<Vec<StoredRun>, StoreError> {
        Ok(self.lock().runs.values().cloned().collect())
    }

    fn insert_run(&self, run: &StoredRun) -> Result<Option<String>, StoreError> {
        let mut state = self.lock();
        if !run.idempotency_key.is_empty() {
            if let Some(existing) = state.keys.get(&run.idempotency_key) {
                return Ok(Some(existing.clone()));
            }
            state
                .keys
                .insert(run.idempotency_key.clone(), run.run_id.clone());
        }
        state.runs.insert(run.run_id.clone(), run.clone());
        Ok(None)
    }

    fn run_for_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().keys.get(key).cloned())
    }

    fn mark_task_done(&self, run_id: &str, task_id: &str) -> Result<(), StoreError> {
        if let Some(task) = self
            .lock()
            .tasks
            .get_mut(&(run_id.to_string(), task_id.to_string()))
        {
            task.done = true;
        }
        Ok(())
    }

    fn save_task(&self, run_id: &str, task: &StoredTask) -> Result<(), StoreError> {
        self.lock()
            .tasks
            .insert((run_id.to_string(), task.task_id.clone()), task.clone());
        Ok(())
    }

    fn remove_tasks(&self, run_id: &str, unique_id: &str) -> Result<(), StoreError> {
        self.lock()
            .tasks
            .retain(|(run, _), task| run != run_id || task.unique_id != unique_id);
        Ok(())
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<StoredTask>, StoreError> {
        Ok(self
            .lock()
            .tasks
            .iter()
            .filter(|((run, _), _)| run == run_id)
            .map(|(_, task)| task.clone())
            .collect())
    }
}

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("idempotency_keys");
const TASKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tasks");

/// A store in one redb file: every save is a committed (fsynced) transaction.
#[derive(Debug)]
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened — another coordinator holds it, or it is not a store.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let db = redb::Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // Create the tables, so that reads of a fresh store find them.
        let write = db.begin_write().map_err(database)?;
        write.open_table(RUNS).map_err(database)?;
        write.open_table(KEYS).map_err(database)?;
        write.open_table(TASKS).map_err(database)?;
        write.commit().map_err(database)?;
        Ok(RedbStore { db })
    }

    fn write(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(database)?;
        change(&write)?;
        write.commit().map_err(database)
    }
}

fn encode(run: &StoredRun) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(run).map_err(StoreError::Record)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Record)
}

impl RunStore for RedbStore {
    fn save_run(&self, run: &StoredRun) -> Result<(), StoreError> {
        let bytes = encode(run)?;
        self.write(|write| {
            let mut runs = write.open_table(RUNS).map_err(database)?;
            runs.insert(run.run_id.as_str(), bytes.as_slice())
                .map_err(database)?;
            Ok(())
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<StoredRun>, StoreError> {
        let read = self.db.begin_read().map_err(database)?;
        let runs = read.open_table(RUNS).map_err(database)?;
        runs.get(run_id)
            .map_err(database)?
            .map(|bytes| decode(bytes.value()))
            .transpose()
    }

    fn runs(&self) -> Result<Vec<StoredRun>, StoreError> {
        let read = self.db.begin_read().map_err(database)?;
        let runs = read.open_table(RUNS).map_err(database)?;
        let mut all = Vec::new();
        for entry in runs.iter().map_err(database)? {
            let (_, bytes) = entry.map_err(database)?;
            all.push(decode(bytes.value())?);
        }
        Ok(all)
    }

    fn insert_run(&self, run: &StoredRun) -> Result<Option<String>, StoreError> {
        let bytes = encode(run)?;
        let mut existing = None;
        self.write(|write| {
            if !run.idempotency_key.is_empty() {
                let mut keys = write.open_table(KEYS).map_err(database)?;
                if let Some(run_id) = keys.get(run.idempotency_key.as_str()).map_err(database)? {
                    existing = Some(run_id.value().to_string());
                    return Ok(());
                }
                keys.insert(run.idempotency_key.as_str(), run.run_id.as_str())
                    .map_err(database)?;
            }
            let mut runs = write.open_table(RUNS).map_err(database)?;
            runs.insert(run.run_id.as_str(), bytes.as_slice())
                .map_err(database)?;
            Ok(())
        })?;
        Ok(existing)
    }

    fn run_for_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let read = self.db.begin_read().map_err(database)?;
        let keys = read.open_table(KEYS).map_err(database)?;
        Ok(keys
            .get(key)
            .map_err(database)?
            .map(|run_id| run_id.value().to_string()))
    }

    fn mark_task_done(&self, run_id: &str, task_id: &str) -> Result<(), StoreError> {
        self.write(|write| {
            let mut tasks = write.open_table(TASKS).map_err(database)?;
            let stored = tasks.get((run_id, task_id)).map_err(database)?;
            let Some(mut task) = stored
                .map(|bytes| decode::<StoredTask>(bytes.value()))
                .transpose()?
            else {
                return Ok(());
            };
            task.done = true;
            let bytes = serde_json::to_vec(&task).map_err(StoreError::Record)?;
            tasks
                .insert((run_id, task_id), bytes.as_slice())
                .map_err(database)?;
            Ok(())
        })
    }

    fn save_task(&self, run_id: &str, task: &StoredTask) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(task).map_err(StoreError::Record)?;
        self.write(|write| {
            let mut tasks = write.open_table(TASKS).map_err(database)?;
            tasks
                .insert((run_id, task.task_id.as_str()), bytes.as_slice())
                .map_err(database)?;
            Ok(())
        })
    }

    fn remove_tasks(&self, run_id: &str, unique_id: &str) -> Result<(), StoreError> {
        let doomed: Vec<String> = self
            .tasks(run_id)?
            .into_iter()
            .filter(|task| task.unique_id == unique_id)
            .map(|task| task.task_id)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        self.write(|write| {
            let mut tasks = write.open_table(TASKS).map_err(database)?;
            for task_id in &doomed {
                tasks.remove((run_id, task_id.as_str())).map_err(database)?;
            }
            Ok(())
        })
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<StoredTask>, StoreError> {
        let read = self.db.begin_read().map_err(database)?;
        let tasks = read.open_table(TASKS).map_err(database)?;
        let mut found = Vec::new();
        // Keys sort by run id first: every task of the run is in this range.
        for entry in tasks.range((run_id, "")..).map_err(database)? {
            let (key, bytes) = entry.map_err(database)?;
            if key.value().0 != run_id {
                break;
            }
            found.push(decode(bytes.value())?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, key: &str) -> StoredRun {
        StoredRun {
            run_id: id.to_string(),
            spec: RunSpec::new("/p".into()),
            state: RunState::Queued,
            idempotency_key: key.to_string(),
            dry_run: false,
            submitted_at_ms: 1,
            started_at_ms: 0,
            finished_at_ms: 0,
            error: String::new(),
            trace_id: String::new(),
            selected: vec![String::from("model.p.a")],
            finished: BTreeMap::new(),
            started: BTreeMap::new(),
            resumed: 0,
        }
    }

    fn task(id: &str, node: &str) -> StoredTask {
        StoredTask {
            task_id: id.to_string(),
            unique_id: node.to_string(),
            attempt: 1,
            task: vec![1, 2, 3],
            done: false,
        }
    }

    fn conformance(store: &dyn RunStore) {
        assert_eq!(store.insert_run(&run("r1", "k")).unwrap(), None);
        assert_eq!(
            store.insert_run(&run("r2", "k")).unwrap(),
            Some(String::from("r1")),
            "a key names one run"
        );
        assert!(store.run("r2").unwrap().is_none());
        assert_eq!(store.run_for_key("k").unwrap(), Some(String::from("r1")));
        assert_eq!(store.run_for_key("other").unwrap(), None);
        assert_eq!(store.insert_run(&run("r3", "")).unwrap(), None);
        assert_eq!(
            store.insert_run(&run("r4", "")).unwrap(),
            None,
            "no key, no dedup"
        );
        let mut changed = run("r1", "k");
        changed.state = RunState::Running;
        store.save_run(&changed).unwrap();
        assert_eq!(store.run("r1").unwrap().unwrap().state, RunState::Running);
        assert_eq!(store.runs().unwrap().len(), 3);

        store.save_task("r1", &task("t1", "a")).unwrap();
        store.save_task("r1", &task("t2", "b")).unwrap();
        store.save_task("r10", &task("t1", "a")).unwrap();
        let mut again = task("t1", "a");
        again.attempt = 2;
        store.save_task("r1", &again).unwrap();
        let mut tasks = store.tasks("r1").unwrap();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        assert_eq!(tasks, vec![again, task("t2", "b")]);
        store.mark_task_done("r1", "t2").unwrap();
        store.mark_task_done("r1", "unknown").unwrap();
        assert!(
            store
                .tasks("r1")
                .unwrap()
                .iter()
                .any(|task| task.task_id == "t2" && task.done)
        );
        store.remove_tasks("r1", "a").unwrap();
        let mut done = task("t2", "b");
        done.done = true;
        assert_eq!(store.tasks("r1").unwrap(), vec![done]);
        assert_eq!(
            store.tasks("r10").unwrap().len(),
            1,
            "other runs keep theirs"
        );
    }

    #[test]
    fn memory_store_conforms() {
        conformance(&MemoryStore::default());
    }

    #[test]
    fn redb_store_conforms_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.redb");
        conformance(&RedbStore::open(&path).unwrap());
        let reopened = RedbStore::open(&path).unwrap();
        assert_eq!(
            reopened.run("r1").unwrap().unwrap().state,
            RunState::Running
        );
        assert_eq!(reopened.tasks("r1").unwrap().len(), 1);
    }
}
