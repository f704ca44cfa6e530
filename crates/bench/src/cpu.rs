//! Where the cores went during a phase: CPU time of the bench itself and of the server it
//! started, read from /proc (Linux; absent elsewhere).

use std::time::Instant;

use serde::Serialize;

/// CPU use over one phase, in percent of one core (so up to 100 × cores).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSplit {
    /// The bench process (all its client tasks).
    pub bench_pct: Option<f64>,
    /// The server process, when the bench started it.
    pub server_pct: Option<f64>,
}

/// CPU seconds used so far, taken at the start of a phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    bench: Option<f64>,
    server: Option<f64>,
}

/// User + system CPU seconds of `pid` (`self` for this process).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

impl CpuSample {
    /// Now, for this process and `server` (its pid), if any.
    pub fn take(server: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            bench: cpu_seconds("self"),
            server: server.and_then(|pid| cpu_seconds(&pid.to_string())),
        }
    }

    /// Use since this sample, in percent of one core.
    pub fn since(&self, server: Option<u32>) -> CpuSplit {
        let now = Self::take(server);
        let wall = now.at.duration_since(self.at).as_secs_f64();
        let pct = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) if wall > 0.0 => Some(((a - b) / wall * 1000.0).round() / 10.0),
            _ => None,
        };
        CpuSplit { bench_pct: pct(self.bench, now.bench), server_pct: pct(self.server, now.server) }
    }
}
