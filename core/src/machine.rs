//! What the machine or container offers a process: CPUs and memory, read where Linux keeps
//! them, so that defaults fit a laptop, a CI runner and a Kubernetes pod alike.

use std::path::Path;

/// The CPUs this process may use (at least one).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The memory this process may use, in bytes: the smaller of the machine's memory
/// (`MemTotal` of `/proc/meminfo`) and its control group's limit (cgroup v2 `memory.max`,
/// v1 `memory.limit_in_bytes`) when one is set; `None` when neither can be read.
pub fn memory_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| cgroup_limit(&text, Path::new("/sys/fs/cgroup")));
    match (machine, cgroup) {
        (Some(machine), Some(limit)) => Some(machine.min(limit)),
        (machine, limit) => machine.or(limit),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of this process's control group, from `/proc/self/cgroup`'s text and the
/// cgroup file system's root; `None` when unlimited or unreadable.
fn cgroup_limit(proc_cgroup: &str, root: &Path) -> Option<u64> {
    let mut candidates = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: the process's own group, then the namespace's root (a container).
            candidates.push(root.join(relative).join("memory.max"));
            candidates.push(root.join("memory.max"));
        } else if controllers.split(',').any(|name| name == "memory") {
            candidates.push(
                root.join("memory")
                    .join(relative)
                    .join("memory.limit_in_bytes"),
            );
            candidates.push(root.join("memory").join("memory.limit_in_bytes"));
        }
    }
    candidates
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .find_map(|text| parse_limit(text.trim()))
}

/// A limit file's value; `None` for `max` and for v1's "unlimited" (close to `i64::MAX`).
fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       24684084 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24_684_084 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
    }

    #[test]
    fn reads_cgroup_v2_and_v1_limits_and_ignores_unlimited() {
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("kubepods/pod1");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(
            cgroup_limit("0::/kubepods/pod1\n", root.path()),
            Some(2 << 30)
        );
        std::fs::write(group.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit("0::/kubepods/pod1\n", root.path()), None);

        let v1 = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "536870912").unwrap();
        assert_eq!(
            cgroup_limit(
                "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n",
                root.path()
            ),
            Some(512 << 20)
        );
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        assert_eq!(cgroup_limit("4:memory:/docker/abc\n", root.path()), None);
        assert_eq!(cgroup_limit("", root.path()), None);
    }
}
