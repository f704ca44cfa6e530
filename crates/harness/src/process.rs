//! One child process of a service: its own process group, a pid file for the watchdog, killed
//! on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal, kill_process};

/// A running service process. `home` is its directory under the harness's temporary directory;
/// the pid is written to `home/pid` so a [`Watchdog`](crate::watchdog::Watchdog) over the
/// parent directory can end it.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    home: PathBuf,
}

impl Proc {
    /// Spawns `command` out of the terminal's process group (Ctrl-C reaches only the parent,
    /// whose watchdog then ends this), with standard input, output and error discarded: services
    /// log to files in `home`.
    pub fn spawn(mut command: Command, home: &Path) -> std::io::Result<Self> {
        let child =
            command.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        std::fs::write(home.join("pid"), child.id().to_string())?;
        Ok(Self { child: Some(child), home: home.to_owned() })
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (or was killed); `Some(status text)` once it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("killed".into()),
            Some(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
        }
    }

    /// Sends `signal` (for example `SIGSTOP`/`SIGCONT` to freeze and thaw it, `SIGTERM` to ask
    /// it to stop). Does nothing once it has been killed.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.id().and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)) {
            let _ = kill_process(pid, signal);
        }
    }

    /// Waits up to `timeout` for it to exit by itself (after a `SIGTERM`); kills it if it has not.
    pub fn wait_or_kill(&mut self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kills it (`SIGKILL`, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.home.join("pid"));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    format!("--- {} (last lines) ---\n{}", path.display(), all[all.len().saturating_sub(lines)..].join("\n"))
}
