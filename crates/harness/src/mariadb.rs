//! A throwaway MariaDB primary (`mariadbd`) on a free loopback port: installed into a temporary
//! directory, killed and started again on the same port and data, as an outage would.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::{Proc, log_tail};
use crate::watchdog::Watchdog;

/// How long `mariadb-install-db` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a started server may take to greet a client (crash recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server asked to stop (`SIGTERM`) may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts; a retry happens only when another process took the free port.
const START_ATTEMPTS: u32 = 3;

/// A running (or stopped) `mariadbd` of its own: root without a password, over TCP on
/// 127.0.0.1 only. Dropping it kills the process and removes its files.
#[derive(Debug)]
pub struct MariaDb {
    port: u16,
    home: PathBuf,
    proc: Option<Proc>,
    _watchdog: Watchdog,
    // Last, so the directory goes only after the process is dead.
    _dir: tempfile::TempDir,
}

impl MariaDb {
    /// Installs a data directory and starts the server. Panics, with the server's log, if it
    /// does not come up in time; [`try_start`](Self::try_start) returns the reason instead.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|why| panic!("{why}"))
    }

    /// Installs a data directory and starts the server; `Err` says why it did not come up.
    pub fn try_start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("flashback-mariadb-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let home = dir.path().join("mariadb");
        std::fs::create_dir_all(home.join("tmp")).map_err(|e| format!("creating {}: {e}", home.display()))?;
        let watchdog = Watchdog::spawn(dir.path());
        install(&home)?;
        let mut server = Self { port: 0, home, proc: None, _watchdog: watchdog, _dir: dir };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(log) if log.contains("Address already in use") && attempt < START_ATTEMPTS => {}
                Err(log) => return Err(format!("mariadbd did not start on port {}:\n{log}", server.port)),
            }
        }
        unreachable!("the last attempt either returns or fails")
    }

    /// `mysql://root@127.0.0.1:<port>` (no database: append `/<name>`).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// Kills the server (`SIGKILL`, as a crash would): connections drop, new ones are refused.
    /// Committed transactions survive (InnoDB recovers them at the next start).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Stops the server cleanly (`SIGTERM`, then waits; kills it after a timeout).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(rustix::process::Signal::TERM);
            p.wait_or_kill(STOP_TIMEOUT);
        }
    }

    /// Starts it again on the same port and data (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop); a running server is killed first). Panics if it does not come up.
    pub fn restart(&mut self) {
        if let Err(why) = self.try_restart() {
            panic!("{why}");
        }
    }

    /// [`restart`](Self::restart), returning why it failed instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch().map_err(|log| format!("mariadbd did not restart on port {}:\n{log}", self.port))
    }

    /// The last lines of the server's error log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 30)
    }

    fn log_path(&self) -> PathBuf {
        self.home.join("error.log")
    }

    fn launch(&mut self) -> Result<(), String> {
        let h = &self.home;
        let mut command = Command::new(mariadbd());
        command
            .arg("--no-defaults")
            // mariadbd refuses to run as root without it; as another user it is only a warning.
            .arg("--user=root")
            .arg(format!("--datadir={}", h.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", h.join("sock").display()))
            .arg(format!("--tmpdir={}", h.join("tmp").display()))
            .arg(format!("--pid-file={}", h.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"])
            // Probes and clients killed mid-handshake must never get 127.0.0.1 blocked.
            .arg("--max-connect-errors=1000000")
            // Each commit is written to the OS at once and flushed to disk every second: a killed
            // process (the outages here) loses nothing; only a host crash could.
            .arg("--innodb-flush-log-at-trx-commit=2");
        let mut proc = Proc::spawn(command, h).map_err(|e| format!("starting {}: {e}", mariadbd().display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if greets(self.port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.exited() {
                return Err(format!("exited with {status}\n{}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                proc.kill();
                return Err(format!("no greeting within {START_TIMEOUT:?}\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a server on `port` sends its handshake (protocol version 10) within a second: it
/// listens only once recovery is done and it accepts clients.
fn greets(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    // A packet header (3 bytes of length, 1 of sequence), then the protocol version.
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && head[4] == 10
}

/// `mariadb-install-db` into `home/data`, root reachable over TCP without a password.
fn install(home: &Path) -> Result<(), String> {
    let log_path = home.join("install.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let mut child = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", home.join("data").display()))
        .arg(format!("--tmpdir={}", home.join("tmp").display()))
        .args(["--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg("--innodb-log-file-size=16M")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own group, so a timeout ends the bootstrap server it runs, too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("running mariadb-install-db (is MariaDB installed?): {e}"))?;
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("mariadb-install-db failed ({status}):\n{}", log_tail(&log_path, 30)));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.wait();
                return Err(format!("mariadb-install-db did not finish within {INSTALL_TIMEOUT:?}"));
            }
        }
    }
}

fn mariadbd() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.exists() { sbin } else { PathBuf::from("mariadbd") }
}
