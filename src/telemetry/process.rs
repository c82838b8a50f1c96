//! Process metrics in the Prometheus client conventions — resident memory,
//! open file descriptors, CPU seconds and start time — read from `/proc/self`
//! each time `/metrics` is rendered and appended to the exposition as text
//! (so `process_cpu_seconds_total` can be a fractional counter). On systems
//! without `/proc`, or when a file cannot be read, the affected lines are left
//! out.
//!
//! `/proc` reports CPU and start times in clock ticks of `USER_HZ`, which the
//! Linux user ABI fixes at 100 on the architectures remora builds for (the
//! Prometheus Go client's procfs makes the same assumption); asking `sysconf`
//! would need `unsafe`, which this crate forbids.

use crate::telemetry::catalogue;

/// Clock ticks per second in `/proc` (`USER_HZ`).
const USER_HZ: f64 = 100.0;

pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const OPEN_FDS: &str = "process_open_fds";
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const START_TIME: &str = "process_start_time_seconds";

/// The process metrics now, as Prometheus text (possibly empty).
pub fn render() -> String {
    let mut out = String::new();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().and_then(stat_fields);
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(resident_bytes)
    {
        sample(&mut out, RESIDENT_MEMORY, rss);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle being read is itself one of the entries.
        let fds = entries.count().saturating_sub(1);
        sample(&mut out, OPEN_FDS, fds as f64);
    }
    if let Some(fields) = &fields {
        let cpu = (fields.utime + fields.stime) as f64 / USER_HZ;
        sample(&mut out, CPU_SECONDS, cpu);
        if let Some(boot) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(boot_time)
        {
            let start = boot as f64 + fields.start_ticks as f64 / USER_HZ;
            sample(&mut out, START_TIME, start);
        }
    }
    out
}

/// One metric with its help and type from the catalogue.
fn sample(out: &mut String, name: &str, value: f64) {
    let labels = Vec::new();
    catalogue::write_family(out, name, &[catalogue::Sample { labels, value }]);
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from after its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come fields 3 (state) onwards: utime is field 14,
    // stime 15, starttime 22.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("btime "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_with_a_tricky_command_name() {
        let stat =
            "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 200";
        assert_eq!(
            stat_fields(stat),
            Some(StatFields {
                utime: 250,
                stime: 50,
                start_ticks: 12345
            })
        );
    }

    #[test]
    fn reads_rss_and_boot_time() {
        assert_eq!(
            resident_bytes("Name:\tremora\nVmRSS:\t    2048 kB\n"),
            Some(2048.0 * 1024.0)
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn renders_all_four_on_linux() {
        let text = render();
        for name in [RESIDENT_MEMORY, OPEN_FDS, CPU_SECONDS, START_TIME] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }
}
