//! A throwaway `redis-server` on a free loopback port: stop it, freeze it, start it again on
//! the same port and files, as an outage would.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::ports::free_port;
use crate::process::{Proc, log_tail};
use crate::watchdog::Watchdog;

/// How long a started server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) `redis-server` of its own; see the module docs.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    home: PathBuf,
    proc: Option<Proc>,
    _watchdog: Watchdog,
    // Last, so the directory goes only after the process is dead.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server that keeps every write on disk before it answers (`appendonly yes`,
    /// `appendfsync always`, `noeviction`), as production should run, so a restart keeps data.
    /// Panics, with the server's log, if it does not answer in time.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("flashback-redis-").tempdir().expect("temporary directory");
        let home = dir.path().join("redis");
        std::fs::create_dir_all(&home).expect("redis directory");
        let watchdog = Watchdog::spawn(dir.path());
        let mut server = Self { port: 0, home, proc: None, _watchdog: watchdog, _dir: dir };
        for attempt in 1..=3 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") && attempt < 3 => {}
                Err(log) => panic!("redis-server did not start on port {}:\n{log}", server.port),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (`SIGKILL`): connections drop, new ones are refused.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and calls hang, as with a stalled
    /// host or a network that drops packets.
    pub fn freeze(&self) {
        if let Some(p) = &self.proc {
            p.signal(Signal::STOP);
        }
    }

    /// Thaws a frozen server (`SIGCONT`).
    pub fn thaw(&self) {
        if let Some(p) = &self.proc {
            p.signal(Signal::CONT);
        }
    }

    /// Starts it again on the same port and files (after [`kill`](Self::kill)). Panics if it
    /// does not answer in time.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.launch() {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = self.home.join("redis.log");
        let mut command = Command::new(redis_server());
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
            // Keeps the command line (with --dir) as it was: by default redis-server rewrites
            // it to `redis-server <addr>`, and the watchdog, which kills only processes whose
            // command line names the harness's directory, then never ends an orphaned server.
            .args(["--set-proc-title", "no"])
            .arg("--dir")
            .arg(&self.home)
            .arg("--logfile")
            .arg(&log);
        let mut proc = Proc::spawn(command, &self.home).map_err(|e| format!("starting redis-server: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.exited() {
                return Err(format!("exited with {status}\n{}", log_tail(&log, 30)));
            }
            if Instant::now() >= deadline {
                proc.kill();
                return Err(format!("no answer within {START_TIMEOUT:?}\n{}", log_tail(&log, 30)));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// One `PING` over a plain TCP connection, answered `+PONG` within a second.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn redis_server() -> PathBuf {
    let bin = PathBuf::from("/usr/bin/redis-server");
    if bin.exists() { bin } else { PathBuf::from("redis-server") }
}
