//! The process's own resources under Prometheus' standard `process_*` names, read from /proc at scrape time (memory alerts need them).

use prometheus::{Counter, IntGauge, Registry};

use super::register;

/// Linux reports CPU times in USER_HZ ticks, fixed at 100 per second by its ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// The `process_*` families; [`ProcessMetrics::refresh`] fills them from /proc/self.
pub struct ProcessMetrics {
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: IntGauge,
    cpu: Counter,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        r,
        IntGauge::new(name, help).expect("valid gauge definition"),
    )
}

impl ProcessMetrics {
    pub fn new(r: &Registry) -> ProcessMetrics {
        ProcessMetrics {
            resident: gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: gauge(
                r,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: gauge(r, "process_open_fds", "Number of open file descriptors."),
            max_fds: gauge(
                r,
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
            ),
            start_time: gauge(
                r,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
            ),
            cpu: register(
                r,
                Counter::new(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                )
                .expect("valid counter definition"),
            ),
        }
    }

    /// Reads /proc/self; a value that cannot be read keeps its last one.
    pub fn refresh(&self) {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        if let Some(status) = read("/proc/self/status") {
            for (field, gauge) in [
                ("VmRSS:", &self.resident),
                ("VmSize:", &self.virtual_memory),
            ] {
                if let Some(kb) = status_kb(&status, field) {
                    gauge.set(kb.saturating_mul(1024));
                }
            }
        }
        if let Some(stat) = read("/proc/self/stat") {
            if let Some(fields) = stat_fields(&stat) {
                let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                // utime and stime are fields 14 and 15 of proc(5), starttime 22; `fields` starts
                // at field 3.
                if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                    let total = (user + system) as f64 / TICKS_PER_SECOND;
                    self.cpu.inc_by((total - self.cpu.get()).max(0.0));
                }
                let boot = read("/proc/stat").and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
                });
                if let (Some(start), Some(boot)) = (ticks(19), boot) {
                    let at = boot + start / TICKS_PER_SECOND as u64;
                    self.start_time.set(i64::try_from(at).unwrap_or(i64::MAX));
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
        }
        if let Some(limit) = read("/proc/self/limits").and_then(|l| soft_open_files(&l)) {
            self.max_fds.set(limit);
        }
    }
}

/// `VmRSS:   1234 kB` → 1234.
fn status_kb(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The fields of /proc/self/stat after the command name (which may hold spaces and parentheses):
/// field 3 (state) first.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// The soft limit of "Max open files" in /proc/self/limits.
fn soft_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let r = Registry::new();
        let m = ProcessMetrics::new(&r);
        m.refresh();
        assert!(m.resident.get() > 1 << 20, "{}", m.resident.get());
        assert!(m.virtual_memory.get() >= m.resident.get());
        assert!(m.open_fds.get() >= 3);
        assert!(m.max_fds.get() >= m.open_fds.get());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        assert!((now - 86_400..=now + 1).contains(&m.start_time.get()));
    }

    #[test]
    fn stat_fields_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
        let fields = stat_fields(stat).unwrap_or_default();
        assert_eq!(fields.first(), Some(&"S"));
        assert_eq!(fields.get(11), Some(&"11"));
        assert_eq!(
            soft_open_files(
                "Max open files            1024                 4096                 files\n"
            ),
            Some(1024)
        );
        assert_eq!(status_kb("VmRSS:\t   2048 kB\n", "VmRSS:"), Some(2048));
    }
}
