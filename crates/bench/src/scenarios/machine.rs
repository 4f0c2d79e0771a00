//! How busy the machine is, from `/proc`: CPU samples of the runs and the
//! wait for a quiet machine before measuring.

use std::time::{Duration, Instant};

/// CPU time counters: the machine's and ours (this process, its waited-for
/// children such as wrk, and the servers under test), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuSample {
    total: u64,
    /// user + nice + system (irq and softirq excluded: loopback traffic of
    /// our own runs is accounted there).
    task: u64,
    steal: u64,
    ours: u64,
}

pub(super) fn proc_times(path: &str) -> u64 {
    // Fields 14-17 (utime, stime, cutime, cstime), after the `(comm)`.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0)
}

impl CpuSample {
    pub(super) fn take(pids: &[u32]) -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        let ours = proc_times("/proc/self/stat")
            + pids
                .iter()
                .map(|pid| proc_times(&format!("/proc/{pid}/stat")))
                .sum::<u64>();
        CpuSample {
            total: fields.iter().take(8).sum(),
            task: at(0) + at(1) + at(2),
            steal: at(7),
            ours,
        }
    }

    /// The fraction of the machine used by other work (and stolen by the
    /// hypervisor) since `before`.
    pub(super) fn others_since(&self, before: &CpuSample) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        let task = self.task.saturating_sub(before.task);
        let ours = self.ours.saturating_sub(before.ours);
        let steal = self.steal.saturating_sub(before.steal);
        (task.saturating_sub(ours) + steal) as f64 / total as f64
    }
}

/// Waits (at most `limit`) until the machine is less than 10% busy.
pub(super) fn wait_for_quiet(limit: Duration) {
    let deadline = Instant::now() + limit;
    eprintln!("bench:   other work is running; waiting for a quieter machine");
    while Instant::now() < deadline {
        if machine_busy(Duration::from_secs(1)) < 0.10 {
            return;
        }
    }
}

/// The fraction of all CPUs busy (user, system, steal, ...) over `window`,
/// from `/proc/stat`.
pub fn machine_busy(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some((total, idle))
    }
    let Some((t0, i0)) = sample() else { return 0.0 };
    std::thread::sleep(window);
    let Some((t1, i1)) = sample() else { return 0.0 };
    let total = t1.saturating_sub(t0);
    if total == 0 {
        return 0.0;
    }
    1.0 - i1.saturating_sub(i0) as f64 / total as f64
}
