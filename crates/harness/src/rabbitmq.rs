//! A throwaway RabbitMQ node on free loopback ports: its own node name, AMQP and distribution
//! ports, database and logs in a temporary directory; killed and started again on the same
//! ports and data, as an outage would. The machine's own node (`rabbit@…` on 5672) is left
//! alone; both register with the one `epmd` of the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::{Proc, log_tail};
use crate::watchdog::Watchdog;

/// How long a started node may take until `rabbitmqctl await_startup` succeeds.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `rabbitmqctl` call may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node asked to stop (`SIGTERM`) may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts; a retry happens only when another process took a free port.
const START_ATTEMPTS: u32 = 3;

/// Nodes started by this process, to make node names unique.
static NODES: AtomicU32 = AtomicU32::new(0);
/// `rabbitmqctl` calls made by this process, to name their output files.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) RabbitMQ node of its own; user `guest`/`guest` (loopback only) on
/// the default vhost. Dropping it kills the node and removes its files.
#[derive(Debug)]
pub struct RabbitMq {
    node: String,
    port: u16,
    dist_port: u16,
    home: PathBuf,
    proc: Option<Proc>,
    _watchdog: Watchdog,
    // Last, so the directory goes only after the process is dead.
    _dir: tempfile::TempDir,
}

impl RabbitMq {
    /// Starts a node and waits for `rabbitmqctl await_startup`. Panics, with the node's log,
    /// if it does not come up in time; [`try_start`](Self::try_start) returns the reason.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts a node; `Err` says why it did not come up.
    pub fn try_start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("flashback-rabbitmq-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let home = dir.path().join("rabbitmq");
        std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
        write_files(&home)?;
        let watchdog = Watchdog::spawn(dir.path());
        let node =
            format!("flashback_harness_{}_{}@localhost", std::process::id(), NODES.fetch_add(1, Ordering::Relaxed));
        let mut server = Self { node, port: 0, dist_port: 0, home, proc: None, _watchdog: watchdog, _dir: dir };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            server.dist_port = free_port();
            if server.dist_port == server.port {
                continue;
            }
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(log) if log.contains("eaddrinuse") && attempt < START_ATTEMPTS => {
                    // The next attempt is a fresh node on the same (empty) database.
                    let _ = std::fs::remove_dir_all(server.home.join("mnesia"));
                }
                Err(log) => return Err(format!("RabbitMQ node {} did not start:\n{log}", server.node)),
            }
        }
        Err(format!("RabbitMQ node {}: no free pair of ports after {START_ATTEMPTS} attempts", server.node))
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's name (`flashback_harness_<pid>_<n>@localhost`), for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Kills the node (`SIGKILL`, as a crash would): connections drop, new ones are refused.
    /// Durable queues and persistent messages survive.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Stops the node cleanly (`SIGTERM`, then waits; kills it after a timeout).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(rustix::process::Signal::TERM);
            p.wait_or_kill(STOP_TIMEOUT);
        }
    }

    /// Starts it again on the same ports and data (a running node is killed first). Panics if
    /// it does not come up.
    pub fn restart(&mut self) {
        if let Err(why) = self.try_restart() {
            panic!("{why}");
        }
    }

    /// [`restart`](Self::restart), returning why it failed instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch().map_err(|log| format!("RabbitMQ node {} did not restart:\n{log}", self.node))
    }

    /// Runs `rabbitmqctl -n <node> <args>` (bounded by a timeout); its standard output, or
    /// why it failed.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let (out_path, err_path) =
            (self.home.join(format!("ctl-{call}.out")), self.home.join(format!("ctl-{call}.err")));
        let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("creating {}: {e}", p.display()));
        let mut command = Command::new(rabbitmqctl());
        self.environment(&mut command);
        command.arg("-n").arg(&self.node).args(args);
        command.stdin(Stdio::null()).stdout(file(&out_path)?).stderr(file(&err_path)?);
        let mut child = command.spawn().map_err(|e| format!("running rabbitmqctl: {e}"))?;
        let deadline = Instant::now() + CTL_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => break Err(format!("rabbitmqctl {args:?}: no answer within {CTL_TIMEOUT:?}")),
                Err(e) => break Err(format!("waiting for rabbitmqctl: {e}")),
            }
        };
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = (std::fs::remove_file(&out_path), std::fs::remove_file(&err_path));
        match status? {
            s if s.success() => Ok(out),
            s => Err(format!("rabbitmqctl {args:?} failed ({s}): {}{}", err.trim(), out.trim())),
        }
    }

    /// Every queue of the default vhost with its messages (ready and unacknowledged).
    pub fn queues(&self) -> Result<Vec<(String, u64)>, String> {
        let out = self.ctl(&["-q", "list_queues", "name", "messages"])?;
        Ok(parse_queues(&out))
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.home.join("log").join(format!("{}.log", self.node)), 30)
    }

    /// The variables both the server and `rabbitmqctl` need: where the cookie is (`HOME`), the
    /// node, and an empty environment file instead of the machine's `/etc/rabbitmq` one.
    fn environment(&self, command: &mut Command) {
        command
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", self.home.join("rabbitmq-env.conf"));
    }

    fn launch(&mut self) -> Result<(), String> {
        let h = &self.home;
        let mut command = Command::new(rabbitmq_server());
        self.environment(&mut command);
        command
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", h.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", h.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", h.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", h.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", h.join("log"))
            .env("RABBITMQ_PID_FILE", h.join("rabbitmq.pid"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            // The script then replaces itself with the Erlang VM instead of waiting on it as a
            // child, so the process held here (and killed) is the broker itself.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env_remove("NOTIFY_SOCKET");
        let mut proc = Proc::spawn(command, h).map_err(|e| format!("starting rabbitmq-server: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ctl(&["-q", "await_startup", "--timeout", "10"]).is_ok() {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.exited() {
                return Err(format!("exited with {status}\n{}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                proc.kill();
                return Err(format!("not started within {START_TIMEOUT:?}\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The node's files: an empty environment file and configuration, no plugins.
fn write_files(home: &Path) -> Result<(), String> {
    for (name, text) in [
        ("rabbitmq-env.conf", "# Empty: everything is set through the environment.\n"),
        ("rabbitmq.conf", "log.file.level = info\n"),
        ("enabled_plugins", "[].\n"),
    ] {
        std::fs::write(home.join(name), text).map_err(|e| format!("writing {name}: {e}"))?;
    }
    Ok(())
}

/// `name messages` lines (tab- or space-separated) into pairs; header and notice lines, which
/// do not end in a number, are skipped.
fn parse_queues(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|line| {
            let (name, count) = line.trim().rsplit_once(['\t', ' '])?;
            Some((name.trim().to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// The scripts without Debian's `/usr/sbin` wrappers, which switch to the `rabbitmq` user
/// (and its home, cookie and environment file) when run as root.
fn rabbitmq_server() -> PathBuf {
    script("rabbitmq-server")
}

fn rabbitmqctl() -> PathBuf {
    script("rabbitmqctl")
}

fn script(name: &str) -> PathBuf {
    let lib = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if lib.exists() { lib } else { PathBuf::from(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_listings_parse_with_or_without_a_header() {
        let out = "name\tmessages\nflashback.stock\t0\nflashback.dead-letters\t3\n";
        assert_eq!(
            parse_queues(out),
            vec![("flashback.stock".to_owned(), 0), ("flashback.dead-letters".to_owned(), 3)]
        );
        assert_eq!(parse_queues("Timeout: 60.0 seconds ...\n"), vec![]);
    }
}
