//! Process CPU time and memory from `/proc/PID/stat` and `/proc/PID/status`
//! (Linux only), used to report the broker's cost when `--broker-pid` is given.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Clock ticks per second used by `/proc/PID/stat`, from `getconf CLK_TCK`
/// (read once), or 100, the value on virtually every Linux system.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Parses `utime + stime` (fields 14 and 15, in clock ticks) out of the
/// content of `/proc/PID/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let close = stat
        .rfind(')')
        .context("malformed /proc/PID/stat: no ')' after the command name")?;
    // After ")": field 3 (state) is at index 0, so field N is at index N - 3.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let raw = fields
            .get(n - 3)
            .with_context(|| format!("malformed /proc/PID/stat: field {n} missing"))?;
        raw.parse::<u64>()
            .with_context(|| format!("malformed /proc/PID/stat: field {n} is '{raw}'"))
    };
    Ok(field(14)? + field(15)?)
}

/// Parses a `Key:   123 kB` line of `/proc/PID/status` and returns bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(value * 1024),
            Some(_) => None,
        }
    })
}

/// Memory of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Peak resident set size (`VmHWM`).
    pub peak_rss: u64,
    /// Current resident set size (`VmRSS`).
    pub rss: u64,
}

/// Reads CPU time and memory of one process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMonitor {
    pid: u32,
}

impl ProcessMonitor {
    /// Monitors process `pid`; fails if `/proc/PID/stat` cannot be read.
    pub fn new(pid: u32) -> Result<Self> {
        let monitor = Self { pid };
        monitor
            .cpu_seconds()
            .with_context(|| format!("cannot monitor process {pid} (is it running?)"))?;
        Ok(monitor)
    }

    /// User + system CPU seconds consumed by the process so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("in {path}"))?;
        Ok(ticks as f64 / clock_ticks_per_second() as f64)
    }

    /// Peak and current resident set size.
    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let (Some(peak_rss), Some(rss)) = (
            parse_status_kb(&status, "VmHWM"),
            parse_status_kb(&status, "VmRSS"),
        ) else {
            bail!(
                "{path} has no VmHWM/VmRSS lines (is process {} a zombie?)",
                self.pid
            );
        };
        Ok(Memory { peak_rss, rss })
    }
}

/// CPU used by a process over a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    monitor: ProcessMonitor,
    start: f64,
}

impl CpuMeter {
    /// Starts measuring the CPU time of `monitor`'s process.
    pub fn start(monitor: ProcessMonitor) -> Result<Self> {
        Ok(Self {
            monitor,
            start: monitor.cpu_seconds()?,
        })
    }

    /// CPU seconds used since `start`.
    pub fn elapsed(&self) -> Result<f64> {
        Ok((self.monitor.cpu_seconds()? - self.start).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_command_name() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 4 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat).expect("parse"), 325);
        assert!(parse_stat_cpu_ticks("1234 (x) S 1 2").is_err());
        assert!(parse_stat_cpu_ticks("garbage").is_err());
    }

    #[test]
    fn parses_status_lines() {
        let status =
            "Name:\tcauseway\nVmPeak:\t  999 kB\nVmHWM:\t   43008 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(43_008 * 1024));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(40_960 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb(status, "Vm"), None);
    }

    #[test]
    fn reads_own_process() {
        let monitor = ProcessMonitor::new(std::process::id()).expect("own pid");
        let meter = CpuMeter::start(monitor).expect("start");
        // Burn a little CPU so the counter can move.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(meter.elapsed().expect("cpu") >= 0.0);
        assert!(monitor.cpu_seconds().expect("cpu") >= 0.0);
        let mem = monitor.memory().expect("memory");
        assert!(mem.rss > 0);
        assert!(mem.peak_rss >= mem.rss);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn missing_process_is_an_error() {
        // PIDs are bounded by pid_max (at most 2^22), so this one cannot exist.
        let err = ProcessMonitor::new(u32::MAX).expect_err("no such process");
        assert!(format!("{err:#}").contains("cannot monitor process"));
    }
}
