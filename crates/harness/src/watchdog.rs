//! A cleanup process that outlives an abruptly ended parent.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A shell loop that waits for this process to die, then kills every process whose pid is in a
/// file named `pid` one level under `dir` (`dir/*/pid`) — only if its command line names `dir`,
/// so a reused pid is left alone — and removes `dir`. Killed on drop, when normal cleanup runs.
#[derive(Debug)]
pub struct Watchdog(Child);

impl Watchdog {
    const SCRIPT: &'static str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        for f in "$2"/*/pid; do
            p=$(cat "$f" 2>/dev/null) || continue
            grep -qF "$2" "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p"
        done
        sleep 1
        rm -rf "$2"
    "#;

    /// Starts watching over `dir`.
    pub fn spawn(dir: &Path) -> Self {
        let child = Command::new("/bin/sh")
            .args(["-c", Self::SCRIPT, "flashback-harness-watchdog"])
            .arg(std::process::id().to_string())
            .arg(dir)
            // Out of the terminal's process group, so Ctrl-C does not end it with the parent.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cleanup watchdog");
        Self(child)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
