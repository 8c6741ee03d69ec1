//! A task's memory beside its pool: the pool's peak and the process's real allocation
//! (jemalloc, see [`strata_engine::memory`]) sampled while the task runs, and the signal that
//! stops the task when the process goes over its slots' pools plus the margin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use datafusion::execution::memory_pool::MemoryPool;
use strata_engine::{EngineConfig, TaskError};
use tokio::sync::watch;

/// A task's memory peaks: its pool's reservation, and the process's real allocation while it
/// ran (see [`strata_engine::memory`]).
#[derive(Debug, Default)]
pub(crate) struct Peaks {
    pub(crate) pool: AtomicI64,
    pub(crate) allocated: AtomicI64,
}

/// How often a running task samples its pool and the process's allocation. Operators such as
/// sorts reserve and release memory before their first output batch: sampling while the task
/// runs, not only between batches, sees it.
const MEMORY_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Samples a task's pool and the process's allocation into [`Peaks`] while it lives, on a
/// thread of its own: a task stuck in one long poll on the runtime's threads must not stop the
/// sampling.
pub(crate) struct MemorySampler {
    running: Arc<AtomicBool>,
}

impl MemorySampler {
    /// Starts sampling; the receiver turns to the allocation the first time it is above
    /// `limit` bytes.
    pub(crate) fn start(
        pool: Arc<dyn MemoryPool>,
        peaks: Arc<Peaks>,
        limit: usize,
    ) -> Result<(Self, watch::Receiver<Option<u64>>), TaskError> {
        let (exceeded, exceeded_at) = watch::channel(None);
        let running = Arc::new(AtomicBool::new(true));
        let still_running = Arc::clone(&running);
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        std::thread::Builder::new()
            .name(String::from("strata-memory"))
            .spawn(move || {
                while still_running.load(Ordering::Relaxed) {
                    let reserved = i64::try_from(pool.reserved()).unwrap_or(i64::MAX);
                    peaks.pool.fetch_max(reserved, Ordering::Relaxed);
                    if let Some(allocated) = strata_engine::memory::allocated_bytes() {
                        let as_i64 = i64::try_from(allocated).unwrap_or(i64::MAX);
                        peaks.allocated.fetch_max(as_i64, Ordering::Relaxed);
                        if allocated > limit && exceeded.borrow().is_none() {
                            let _ = exceeded.send(Some(allocated));
                        }
                    }
                    std::thread::sleep(MEMORY_SAMPLE_INTERVAL);
                }
            })
            .map_err(|err| TaskError::transient(format!("cannot start a thread: {err}")))?;
        Ok((Self { running }, exceeded_at))
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// Waits until the process's allocation has gone over its limit; returns it.
pub(crate) async fn memory_over_limit(mut exceeded_at: watch::Receiver<Option<u64>>) -> u64 {
    let allocated = match exceeded_at.wait_for(Option::is_some).await {
        Ok(allocated) => *allocated,
        Err(_) => None,
    };
    match allocated {
        Some(allocated) => allocated,
        None => std::future::pending().await,
    }
}

/// The error of a task stopped because the process allocated more than its pools allow.
pub(crate) fn memory_exceeded(allocated: u64, config: &EngineConfig) -> TaskError {
    TaskError::user(format!(
        "the task was stopped: its process had allocated {} MiB, more than its task pools and \
         their margin allow ({} MiB: the slots' engine.memory_limit_mib of {} MiB each, plus \
         engine.memory_margin_percent); some operator held memory its pool does not account \
         for. Raise engine.memory_limit_mib (--memory-limit-mib) or \
         engine.memory_margin_percent, or run fewer tasks at once",
        allocated >> 20,
        config.process_memory_limit_bytes >> 20,
        config.memory_limit_bytes >> 20,
    ))
}
