//! Real memory beside the pools' reservations.
//!
//! DataFusion's memory pool knows only what operators reserve; an operator that allocates
//! without reserving (a per-group hash set of a distinct aggregate, say) can grow a process
//! past its pod's limit while the pool reports a fraction of it. Strata's processes therefore
//! allocate through jemalloc, whose statistics give the bytes really allocated: each task
//! samples them beside its pool, records the peak in the run record, and stops with a clear
//! error when the process's allocation exceeds its pools by more than the configured margin
//! (`engine.memory_margin_percent`), instead of letting the kernel kill the process.
//!
//! The figure is the process's: allocations made on DataFusion's own spawned tasks cannot be
//! attributed to one Strata task, so with several task slots a task's real peak includes its
//! neighbours', and the limit applies to the process (the slots' pools plus the margin).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The bytes the process has allocated and not freed, as of now; `None` when jemalloc's
/// statistics cannot be read.
pub fn allocated_bytes() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    u64::try_from(allocated).ok()
}

#[cfg(test)]
mod tests {
    use super::allocated_bytes;

    #[test]
    fn counts_a_large_allocation_and_its_release() {
        let before = allocated_bytes().unwrap();
        // Far more than the other tests of this crate, running at the same time, allocate.
        let block = std::hint::black_box(vec![7u8; 256 << 20]);
        let during = allocated_bytes().unwrap();
        assert!(during >= before + (200 << 20), "{before} -> {during}");
        drop(block);
        let after = allocated_bytes().unwrap();
        assert!(after + (200 << 20) <= during, "{during} -> {after}");
    }
}
