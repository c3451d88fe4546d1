//! Where the machine's CPU went during a measurement: the busy share of all its cores
//! (`/proc/stat`) and the shares of given processes (`/proc/<pid>/stat`).
//!
//! Both files count in the same clock ticks, so a process's share of all cores is its
//! ticks over the ticks of every core, with no tick length to look up. Linux only:
//! elsewhere [`Window::start`] gives `None` and nothing is reported.

use std::time::Instant;

use serde::Serialize;

/// Busy shares over a window, each a fraction of all cores' time (0 to 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuShares {
    pub cores: usize,
    pub secs: f64,
    /// Every process and the kernel: all but idle and I/O wait.
    pub busy: f64,
    /// The audit-stream pipeline under measurement.
    pub pipeline: Option<f64>,
    /// The broker, when the bench started it.
    pub broker: Option<f64>,
    /// The bench itself: the client producing the records.
    pub load_producer: Option<f64>,
}

/// The ticks of all cores at the start of a window, and of each watched process.
#[derive(Debug)]
pub struct Window {
    at: Instant,
    cores: usize,
    machine: Ticks,
    pipeline: Option<(u32, u64)>,
    broker: Option<(u32, u64)>,
    load_producer: Option<(u32, u64)>,
}

/// Clock ticks of all cores: busy and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticks {
    busy: u64,
    total: u64,
}

impl Window {
    /// Starts a window watching the pipeline and the broker (where their pids are known)
    /// and this process, which produces the records.
    pub fn start(pipeline: Option<u32>, broker: Option<u32>) -> Option<Window> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (machine, cores) = machine_ticks(&stat)?;
        let watch = |pid: Option<u32>| pid.and_then(|pid| Some((pid, process_ticks(pid)?)));
        Some(Window {
            at: Instant::now(),
            cores,
            machine,
            pipeline: watch(pipeline),
            broker: watch(broker),
            load_producer: watch(Some(std::process::id())),
        })
    }

    /// The shares since [`Window::start`]; `None` if the machine's ticks cannot be read
    /// again or did not advance. A process that cannot be read (it ended) has no share.
    pub fn end(self) -> Option<CpuShares> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (now, _) = machine_ticks(&stat)?;
        let total = now
            .total
            .checked_sub(self.machine.total)
            .filter(|t| *t > 0)? as f64;
        let share = |watched: Option<(u32, u64)>| {
            let (pid, before) = watched?;
            Some(process_ticks(pid)?.saturating_sub(before) as f64 / total)
        };
        Some(CpuShares {
            cores: self.cores,
            secs: self.at.elapsed().as_secs_f64(),
            busy: now.busy.saturating_sub(self.machine.busy) as f64 / total,
            pipeline: share(self.pipeline),
            broker: share(self.broker),
            load_producer: share(self.load_producer),
        })
    }
}

/// All cores' ticks from `/proc/stat`'s `cpu` line (user, nice, system, idle, iowait,
/// irq, softirq, steal; guest time is already in user), and the number of `cpuN` lines.
fn machine_ticks(stat: &str) -> Option<(Ticks, usize)> {
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((
        Ticks {
            busy,
            total: busy + idle + iowait,
        },
        cores,
    ))
}

/// User plus system ticks of a process, all its threads, from `/proc/<pid>/stat`.
fn process_ticks(pid: u32) -> Option<u64> {
    parse_process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself: fields are counted from
/// after its last `)`.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_split_busy_from_idle_and_count_cores() {
        let stat = "cpu  100 5 50 800 40 3 2 1 7 0\n\
                    cpu0 50 2 25 400 20 1 1 0 3 0\n\
                    cpu1 50 3 25 400 20 2 1 1 4 0\n\
                    intr 12345\nctxt 999\n";
        let (ticks, cores) = machine_ticks(stat).unwrap();
        assert_eq!(ticks.busy, 100 + 5 + 50 + 3 + 2 + 1);
        assert_eq!(ticks.total, ticks.busy + 800 + 40);
        assert_eq!(cores, 2);
        assert_eq!(machine_ticks("intr 1\n"), None);
        assert_eq!(machine_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn process_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    37 11 0 0 20 0 9 0 123 456789 100 18446744073709551615";
        assert_eq!(parse_process_ticks(stat), Some(48));
        assert_eq!(parse_process_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn a_window_sees_this_process_busy_for_the_cpu_it_burnt() {
        let Some(window) = Window::start(None, Some(u32::MAX)) else {
            // Not Linux: nothing to read, and nothing is reported.
            assert!(std::fs::read_to_string("/proc/stat").is_err());
            return;
        };
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let shares = window.end().expect("the machine's ticks advanced");
        assert!(shares.cores >= 1);
        assert!(shares.secs >= 0.3);
        // One core spun for the whole window: at least a tick's worth of it, and never
        // more than the machine's busy share.
        let own = shares.load_producer.expect("this process is readable");
        assert!(own > 0.0, "{shares:?}");
        assert!(own <= shares.busy + 0.05, "{shares:?}");
        assert_eq!(shares.pipeline, None);
        assert_eq!(shares.broker, None, "no such process: no share");
    }
}
