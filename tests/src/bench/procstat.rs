//! Process figures from `/proc` (Linux): CPU time (the user and system counters `getrusage`
//! reports, per process or per named thread), resident memory of any process, load average.
//! Read from files because the workspace forbids `unsafe`, and so `libc::getrusage`.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub user: Duration,
    pub sys: Duration,
}

impl Cpu {
    pub fn total(self) -> Duration {
        self.user + self.sys
    }

    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

/// Clock ticks per second of the `/proc` CPU counters (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_sec() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `utime` and `stime` (fields 14 and 15) of a `stat` file; the command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Cpu> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0], so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tck = ticks_per_sec();
    Some(Cpu {
        user: Duration::from_secs_f64(utime as f64 / tck),
        sys: Duration::from_secs_f64(stime as f64 / tck),
    })
}

/// CPU time of this whole process, threads that ended included.
pub fn process_cpu() -> Cpu {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .unwrap_or_default()
}

/// CPU time of this process's live threads whose name starts with `prefix` (thread names are
/// cut to 15 bytes). Threads that ended are not counted: keep pools' threads alive while measuring.
pub fn threads_cpu(prefix: &str) -> Cpu {
    let mut sum = Cpu::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return sum;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some(cpu) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            sum.user += cpu.user;
            sum.sys += cpu.sys;
        }
    }
    sum
}

/// CPU time of another process (alive), e.g. a child worker.
pub fn pid_cpu(pid: u32) -> Option<Cpu> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
}

/// Resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some(Memory {
        rss: kb("VmRSS:")?,
        peak: kb("VmHWM:")?,
    })
}

/// `/proc/loadavg`'s first three numbers: other work on the machine skews timings.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        let cpu = parse_stat(line).expect("parses");
        let tck = ticks_per_sec();
        assert_eq!(cpu.user, Duration::from_secs_f64(250.0 / tck));
        assert_eq!(cpu.sys, Duration::from_secs_f64(50.0 / tck));
    }

    #[test]
    fn this_process_has_resident_memory_and_cpu_time() {
        let m = memory(std::process::id()).expect("own status");
        assert!(m.rss > 0 && m.peak >= m.rss);
        let spin: u64 = (0..5_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(process_cpu().total() > Duration::ZERO);
    }
}
