//! What the node measures about itself for its heartbeat: CPU since the previous
//! heartbeat, memory, the data dir's file system, and load, all from /proc and
//! statvfs (no child processes).
use std::path::Path;
use std::sync::Mutex;

use nanoscale_core::cluster::NodeUsage;

/// Keeps the previous CPU counters so each sample covers the time since the last.
#[derive(Default)]
pub struct UsageSampler {
    previous: Mutex<Option<CpuTimes>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl UsageSampler {
    pub fn sample(&self, data_dir: &Path) -> NodeUsage {
        let mut usage = NodeUsage::default();
        if let Some(now) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(cpu_times)
        {
            if let Ok(mut previous) = self.previous.lock() {
                if let Some(before) = *previous {
                    usage.cpu_percent = cpu_percent(before, now);
                }
                *previous = Some(now);
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            let total = meminfo_bytes(&text, "MemTotal:").unwrap_or(0);
            let available = meminfo_bytes(&text, "MemAvailable:").unwrap_or(total);
            usage.memory_total_bytes = total;
            usage.memory_used_bytes = total.saturating_sub(available);
        }
        if let Ok(stat) = nix::sys::statvfs::statvfs(data_dir) {
            let fragment = stat.fragment_size() as i64;
            let total = stat.blocks() as i64 * fragment;
            let free = stat.blocks_free() as i64 * fragment;
            usage.disk_total_bytes = total;
            usage.disk_used_bytes = total.saturating_sub(free);
        }
        if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
            let mut fields = text
                .split_whitespace()
                .map(|f| f.parse::<f64>().unwrap_or(0.0));
            usage.load1 = fields.next().unwrap_or(0.0);
            usage.load5 = fields.next().unwrap_or(0.0);
            usage.load15 = fields.next().unwrap_or(0.0);
        }
        usage
    }
}

/// The aggregate `cpu` line of /proc/stat: busy and total jiffies.
fn cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    let total: u64 = values.iter().take(8).sum();
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

fn cpu_percent(before: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = now.busy.saturating_sub(before.busy);
    ((busy as f64 / total as f64) * 1000.0).round() / 10.0
}

/// Resident memory of an instance: every process in the app's process group (the
/// shim makes the app a group leader, so a `sh -c` wrapper, a forking server and
/// its workers all count), from the `rss` field of `/proc/<pid>/stat`. `None` when
/// no process of the group is left.
pub fn resident_bytes(group: i32) -> Option<u64> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096);
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue; // gone meanwhile
        };
        if let Some((pgrp, pages)) = group_and_rss(&stat) {
            if pgrp == group {
                total = Some(total.unwrap_or(0) + pages * page);
            }
        }
    }
    total
}

/// The process group and resident pages of a `/proc/<pid>/stat` line. The command
/// name is in parentheses and may hold spaces or ')', so fields count from the last ')'.
fn group_and_rss(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) … rss(24), 1-based in proc(5).
    Some((fields.get(2)?.parse().ok()?, fields.get(21)?.parse().ok()?))
}

fn meminfo_bytes(text: &str, key: &str) -> Option<i64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_group_has_resident_memory() {
        let group = nix::unistd::getpgrp().as_raw();
        let own = resident_bytes(group).expect("this test's process group");
        assert!(own > 1024 * 1024, "{own}");
        assert_eq!(resident_bytes(i32::MAX), None);
    }

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "42 (we ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 99 12345678 321 18446744073709551615";
        assert_eq!(group_and_rss(stat), Some((4242, 321)));
        assert_eq!(group_and_rss("garbage"), None);
    }

    #[test]
    fn cpu_share_between_two_samples() {
        let before = cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("cpu");
        let now = cpu_times("cpu  200 0 200 1300 100 0 0 0 0 0\n").expect("cpu");
        assert_eq!(
            before,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        // 200 busy of 800 elapsed.
        assert_eq!(cpu_percent(before, now), 25.0);
        assert_eq!(cpu_percent(now, now), 0.0);
    }

    #[test]
    fn reads_this_host() {
        let sampler = UsageSampler::default();
        let first = sampler.sample(Path::new("/"));
        assert!(first.memory_total_bytes > 0);
        assert!(first.memory_used_bytes > 0 && first.memory_used_bytes <= first.memory_total_bytes);
        assert!(first.disk_total_bytes > 0);
        assert!(first.load1 >= 0.0);
        let second = sampler.sample(Path::new("/"));
        assert!((0.0..=100.0).contains(&second.cpu_percent));
    }
}
