//! Process settings: one typed value per Strata process, layered once.
//!
//! Every role (coordinator, worker, embedded runs) starts from a [`Settings`] resolved by
//! [`load`] from four layers, each overriding the one before:
//!
//! 1. the defaults, written once, in the `Default` impls below;
//! 2. a YAML file (`--config FILE`), with the sections of [`Settings`] as top-level keys;
//! 3. the environment: `STRATA__SECTION__KEY` (e.g. `STRATA__WORKER__SLOTS=8`);
//! 4. command-line flags.
//!
//! Layering and type coercion are figment's (see docs/design-notes.md for why figment); an
//! unknown key in any layer is an error naming the layer and the closest known key. Where each
//! value came from is kept for `strata config show` ([`Resolved::explain`]), with secrets
//! redacted.

mod layers;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use layers::{ENV_PREFIX, Flags, Origin, SettingsError, load};

/// The broker a process uses when no layer names one: the local RabbitMQ, guest/guest.
pub const LOCAL_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every setting of every Strata process; each role reads the sections it needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The RabbitMQ broker and the task queue (coordinator, workers, cluster builds).
    pub broker: BrokerSettings,
    /// What the processes of one cluster share.
    pub cluster: ClusterSettings,
    /// The execution engine of every task (workers, embedded runs).
    pub engine: EngineSettings,
    /// A worker process.
    pub worker: WorkerSettings,
    /// An ingest agent process.
    pub ingest_agent: IngestAgentSettings,
    /// The coordinator service.
    pub coordinator: CoordinatorSettings,
    /// The metrics and health endpoint of the coordinator, of each worker and ingest agent.
    pub metrics: MetricsSettings,
}

/// The HTTP endpoint serving `/metrics` (Prometheus), `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Where it listens (`0.0.0.0:9464`, say); no endpoint when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The bearer token a scrape of `/metrics` must carry (prefer `token_file` or
    /// `STRATA__METRICS__TOKEN`); without one `/metrics` refuses every scrape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretString>,
    /// A file holding the token (a mounted Kubernetes Secret, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl MetricsSettings {
    /// The token from `token` or, failing that, `token_file`.
    ///
    /// # Errors
    /// When the token file cannot be read.
    pub fn token(&self) -> Result<Option<SecretString>, SettingsError> {
        read_secret(self.token.as_ref(), self.token_file.as_ref())
    }
}

/// A secret given inline or in a file (trimmed); `None` when neither is set.
fn read_secret(
    inline: Option<&SecretString>,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, SettingsError> {
    if let Some(secret) = inline {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(Some(SecretString(text.trim().to_string())))
}

/// The broker between coordinator and workers.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// AMQP URL of RabbitMQ (its password is redacted wherever settings are shown).
    pub url: String,
    /// The queue workers take tasks from (one per pool of workers).
    pub task_queue: String,
    /// The queue ingest agents take ingest tasks from (kept apart: only agents reach the
    /// sources).
    pub ingest_queue: String,
}

impl fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &redact_url_password(&self.url))
            .field("task_queue", &self.task_queue)
            .field("ingest_queue", &self.ingest_queue)
            .finish()
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            url: LOCAL_BROKER.to_string(),
            task_queue: crate::queue::TASK_QUEUE.to_string(),
            ingest_queue: crate::queue::INGEST_QUEUE.to_string(),
        }
    }
}

/// A secret setting: its `Debug` output is redacted, so it never reaches a log line through a
/// settings dump.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for SecretString {
    fn from(text: &str) -> Self {
        SecretString(text.to_string())
    }
}

/// What the processes of one cluster share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// The secret every Flight call between workers (and from the coordinator) carries; prefer
    /// `secret_file` or `STRATA__CLUSTER__SECRET` to writing it in a file that gets copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretString>,
    /// A file holding the secret (a mounted Kubernetes Secret, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl ClusterSettings {
    /// The cluster secret from `secret` or, failing that, `secret_file`; `None` when neither
    /// is set.
    ///
    /// # Errors
    /// Returns an error when the secret file cannot be read.
    pub fn secret(&self) -> Result<Option<SecretString>, SettingsError> {
        read_secret(self.secret.as_ref(), self.secret_file.as_ref())
    }
}

/// The execution engine: the same for every task of a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Memory pool of each task, in MiB: a query that needs more spills to disk or fails with
    /// a clear error (default: [`TASK_MEMORY_SHARE_PERCENT`] of the machine's or container's
    /// memory divided among the task slots, at least [`MIN_TASK_MEMORY_MIB`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<usize>,
    /// How far a process's real allocation may exceed its pools (slots × the pool) before its
    /// running tasks stop with a clear error instead of the process being killed, in percent
    /// of the pools; never less than [`MIN_MEMORY_MARGIN_MIB`].
    pub memory_margin_percent: usize,
    /// Partitions DataFusion splits a task's work into (default: the machine's CPUs).
    pub target_partitions: usize,
    /// Folder for spill files (default: the system's temporary folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    /// Target size of the Parquet files a task writes, in MiB.
    pub target_file_size_mib: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            memory_limit_mib: None,
            memory_margin_percent: 50,
            target_partitions: crate::machine::cpus(),
            spill_dir: None,
            target_file_size_mib: 128,
        }
    }
}

/// The part of the machine's or container's memory the task pools share by default: the rest
/// is for what no pool accounts (the runtime, buffers of readers and writers, the allocator).
pub const TASK_MEMORY_SHARE_PERCENT: u64 = 60;

/// The smallest default pool per task, in MiB.
pub const MIN_TASK_MEMORY_MIB: usize = 64;

/// The smallest allowance for memory outside the pools, in MiB.
pub const MIN_MEMORY_MARGIN_MIB: usize = 256;

impl EngineSettings {
    /// The memory pool of each task, in MiB, when `slots` tasks run at once: the setting, or
    /// the machine's share divided among the slots.
    pub fn task_memory_mib(&self, slots: usize) -> usize {
        self.memory_limit_mib
            .unwrap_or_else(|| {
                let machine_mib = crate::machine::memory_bytes().map_or(8192, |bytes| bytes >> 20);
                let share = machine_mib * TASK_MEMORY_SHARE_PERCENT / 100;
                usize::try_from(share).unwrap_or(usize::MAX) / slots.max(1)
            })
            .max(MIN_TASK_MEMORY_MIB)
    }

    /// The pool of each task and the real allocation above which a process running `slots`
    /// tasks stops them (the pools plus the margin), in MiB; the machine's memory is read once.
    pub fn memory_budget(&self, slots: usize) -> MemoryBudget {
        let task_mib = self.task_memory_mib(slots);
        let pools = task_mib.saturating_mul(slots.max(1));
        let margin = (pools / 100)
            .saturating_mul(self.memory_margin_percent)
            .max(MIN_MEMORY_MARGIN_MIB);
        MemoryBudget {
            task_mib,
            process_mib: pools.saturating_add(margin),
        }
    }
}

/// The memory of a process's tasks, from [`EngineSettings::memory_budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Each task's pool, in MiB.
    pub task_mib: usize,
    /// The process's real allocation above which its tasks stop, in MiB.
    pub process_mib: usize,
}

/// A worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Name in run records and logs (default: the host name and the process id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tasks run at the same time (default: the machine's CPUs).
    pub slots: usize,
    /// Where the Flight server for shuffle outputs listens.
    pub flight_listen: String,
    /// The address other workers reach it at: a host, or host:port (default: the host name
    /// and the port listened on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flight_advertise: Option<String>,
    /// Folder for shuffle outputs (default: the system's temporary folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shuffle_dir: Option<PathBuf>,
    /// How often a running task tells its coordinator it is alive, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How long a shuffle fetch waits for another worker to answer, in seconds.
    pub fetch_timeout_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            id: None,
            slots: crate::machine::cpus(),
            flight_listen: String::from("0.0.0.0:0"),
            flight_advertise: None,
            shuffle_dir: None,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            fetch_timeout_secs: 30,
        }
    }
}

/// How often a running task tells its coordinator it is alive, in milliseconds, unless set.
pub const HEARTBEAT_INTERVAL_MS: u64 = 5000;

/// An ingest agent process (`strata ingest-agent`): it takes ingest tasks from
/// `broker.ingest_queue` and lands sources into bronze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestAgentSettings {
    /// Name in run records and logs (default: the host name and the process id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Source tables landed at the same time (each may read in parallel parts of its own).
    pub slots: usize,
    /// How often a running ingest task tells its coordinator it is alive, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

impl Default for IngestAgentSettings {
    fn default() -> Self {
        IngestAgentSettings {
            id: None,
            slots: 2,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        }
    }
}

/// The coordinator service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorSettings {
    /// Address the gRPC API listens on.
    pub listen: String,
    /// Folder for the run store and uploaded projects.
    pub data_dir: PathBuf,
    /// Bearer tokens inline (prefer `token_file`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<SecretString>,
    /// A file of bearer tokens, one per line; every RPC but health then needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with `tls_key`, the API serves TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Runs executing at once; later ones wait queued.
    pub max_concurrent_runs: usize,
    /// The coordinator's environment variables a submitted project's `env_var()` may read;
    /// any other is a compile error unless the submission sends it.
    pub env_allowlist: Vec<String>,
    /// Defaults of submitted runs.
    pub runs: RunDefaults,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            listen: String::from("127.0.0.1:7070"),
            data_dir: PathBuf::from("strata-coordinator"),
            tokens: Vec::new(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            max_concurrent_runs: 8,
            env_allowlist: Vec::new(),
            runs: RunDefaults::default(),
        }
    }
}

/// Settings of a run that neither its command line nor its submission sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunDefaults {
    /// The warehouse (default: `<project>/warehouse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Nodes executing at the same time.
    pub threads: usize,
    /// Partitions of shuffles on a cluster (0 or 1: no shuffles).
    pub shuffle_partitions: usize,
    /// Seconds a started task may stay silent before it is retried.
    pub task_timeout_secs: u64,
    /// Retries after transient failures (a model's `retries` config wins).
    pub retries: u32,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            warehouse: None,
            threads: 4,
            shuffle_partitions: 4,
            task_timeout_secs: 60,
            retries: 2,
        }
    }
}

/// The roles whose settings `strata config show` explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `strata coordinator`.
    Coordinator,
    /// `strata worker`.
    Worker,
    /// `strata ingest-agent`.
    IngestAgent,
    /// `strata run` / `build` in one process.
    Embedded,
}

impl Role {
    /// The sections of [`Settings`] the role reads.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Role::Coordinator => &["broker", "cluster", "coordinator", "metrics"],
            Role::Worker => &["broker", "cluster", "engine", "worker", "metrics"],
            Role::IngestAgent => &["broker", "ingest_agent", "metrics"],
            Role::Embedded => &["engine"],
        }
    }
}

/// Settings with the layer each value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The effective settings.
    pub settings: Settings,
    /// Where each value (by dotted key) came from; keys absent were defaults.
    origins: BTreeMap<String, Origin>,
}

/// One effective setting as `strata config show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    /// Dotted key, e.g. `worker.slots`.
    pub key: String,
    /// The value as text; secrets redacted.
    pub value: String,
    /// Where it came from: `default`, `file <path>`, `env STRATA__…`, `flag --…`.
    pub source: String,
}

impl Resolved {
    /// Where the value of `key` came from.
    pub fn origin(&self, key: &str) -> &Origin {
        self.origins.get(key).unwrap_or(&Origin::Default)
    }

    /// Every effective setting of `role`'s sections with its source, secrets redacted.
    pub fn explain(&self, role: Role) -> Vec<Explained> {
        let value = serde_json::to_value(&self.settings).unwrap_or_default();
        let mut explained = Vec::new();
        for section in role.sections() {
            if let Some(fields) = value.get(section).and_then(|fields| fields.as_object()) {
                flatten(section, fields, &mut explained);
            }
        }
        for entry in &mut explained {
            entry.source = self.origin(&entry.key).to_string();
            entry.value = redact(&entry.key, &entry.value);
        }
        if role.sections().contains(&"engine") && self.settings.engine.memory_limit_mib.is_none() {
            explained.push(self.derived_memory_limit());
        }
        explained
    }

    /// The task pool the machine's memory gives when no layer sets one.
    fn derived_memory_limit(&self) -> Explained {
        let slots = self.settings.worker.slots.max(1);
        let machine = crate::machine::memory_bytes().map_or_else(
            || String::from("unknown memory"),
            |bytes| format!("{} MiB", bytes >> 20),
        );
        Explained {
            key: String::from("engine.memory_limit_mib"),
            value: self.settings.engine.task_memory_mib(slots).to_string(),
            source: format!(
                "derived: {TASK_MEMORY_SHARE_PERCENT}% of the machine's or container's {machine} \
                 over {slots} slots"
            ),
        }
    }
}

fn flatten(
    prefix: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<Explained>,
) {
    for (name, value) in fields {
        let key = format!("{prefix}.{name}");
        match value {
            serde_json::Value::Object(inner) => flatten(&key, inner, out),
            serde_json::Value::String(text) => out.push(explained(key, text.clone())),
            other => out.push(explained(key, other.to_string())),
        }
    }
}

fn explained(key: String, value: String) -> Explained {
    Explained {
        key,
        value,
        source: String::new(),
    }
}

/// Keys whose whole value is secret.
const SECRET_KEYS: &[&str] = &["cluster.secret", "coordinator.tokens", "metrics.token"];

/// A value as it may be shown: secrets replaced, a URL's password masked.
fn redact(key: &str, value: &str) -> String {
    if SECRET_KEYS.contains(&key) {
        return String::from("<redacted>");
    }
    redact_url_password(value)
}

/// `scheme://user:password@host` → `scheme://user:***@host`; anything else unchanged.
pub fn redact_url_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return value.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => value.to_string(),
    }
}

/// Reads the settings file's text.
fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })
}
