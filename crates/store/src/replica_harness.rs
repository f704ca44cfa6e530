//! A throwaway MariaDB primary and a replica replicating from it (GTID), as two extra
//! `mariadbd` processes on free loopback ports in a temporary directory, for tests of reads
//! served by a replica. The machine's own server is never touched.
//!
//! Everything is bounded: installing, starting and catching up each have a timeout and panic
//! with the server's error log when it runs out. Dropping the [`ReplicaPair`] kills both
//! processes and removes the directory; a watchdog process does the same if the test process
//! dies without unwinding (killed, or `panic = "abort"`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flashback_harness::ports::free_port;
use flashback_harness::watchdog::Watchdog;
use sqlx::{Connection, MySqlConnection};

/// How long `mariadb-install-db` may take for one data directory.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started server may take to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the replica may take to apply everything the primary has logged.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection attempt or one statement (other than waiting to catch up) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Start attempts per server; a retry happens only when another process took the free port.
const START_ATTEMPTS: u32 = 3;

const REPLICATION_USER: &str = "repl";
const REPLICATION_PASSWORD: &str = "repl-test-only";

/// A running primary and replica; see the module docs. Dropping it kills both and removes
/// their files.
#[derive(Debug)]
pub struct ReplicaPair {
    primary: Server,
    replica: Server,
    _watchdog: Watchdog,
    // Last, so the directory goes only after both processes are dead.
    _dir: tempfile::TempDir,
}

impl ReplicaPair {
    /// Installs two data directories, starts a primary (binary log on) and a read-only replica,
    /// and starts GTID replication between them. Panics, with the server's log, if any step
    /// fails or runs out of time.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("flashback-replica-").tempdir().expect("temporary directory");
        let watchdog = Watchdog::spawn(dir.path());
        // Both installs run to the end before anything can panic, so no installer outlives a
        // failure (it would race the directory's removal).
        let installs = tokio::join!(install(dir.path(), Role::Primary), install(dir.path(), Role::Replica));
        if let Err(e) = installs.0.and(installs.1) {
            panic!("{e}");
        }
        let (primary, replica) =
            tokio::join!(Server::start(Role::Primary, dir.path()), Server::start(Role::Replica, dir.path()));
        let pair = Self { primary, replica, _watchdog: watchdog, _dir: dir };
        pair.set_up_replication().await;
        pair
    }

    /// The URL of database `db` on the primary (root, no password, loopback only).
    pub fn primary_url(&self, db: &str) -> String {
        format!("{}/{db}", self.primary.url())
    }

    /// The URL of database `db` on the replica.
    pub fn replica_url(&self, db: &str) -> String {
        format!("{}/{db}", self.replica.url())
    }

    /// Creates database `db` on the primary and waits until the replica has it too.
    pub async fn create_database(&self, db: &str) {
        assert!(
            !db.is_empty() && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names here are plain identifiers: {db:?}"
        );
        self.primary.run(&format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4")).await;
        self.wait_caught_up().await;
    }

    /// Waits until the replica has applied every transaction the primary has logged so far
    /// (`MASTER_GTID_WAIT` on the primary's `@@gtid_binlog_pos`). Panics after a timeout,
    /// naming the replica's last replication errors.
    pub async fn wait_caught_up(&self) {
        let mut primary = self.primary.connect().await;
        let position: String =
            sqlx::query_scalar("SELECT @@gtid_binlog_pos").fetch_one(&mut primary).await.expect("primary position");
        let _ = primary.close().await;
        if position.is_empty() {
            return;
        }
        let mut replica = self.replica.connect().await;
        let waited: Option<i64> = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, ?)")
            .bind(&position)
            .bind(CATCH_UP_TIMEOUT.as_secs_f64())
            .fetch_one(&mut replica)
            .await
            .expect("wait for the replica");
        if waited != Some(0) {
            let status = replication_status(&mut replica).await;
            panic!(
                "the replica did not reach the primary's position {position} within {CATCH_UP_TIMEOUT:?}: {status}\n{}",
                self.replica.log_tail()
            );
        }
        let _ = replica.close().await;
    }

    /// Pauses replication (`STOP SLAVE`): the replica keeps answering but stops seeing new writes.
    pub async fn stop_replication(&self) {
        self.replica.run("STOP SLAVE").await;
    }

    /// Resumes replication (`START SLAVE`); the replica catches up from where it stopped.
    pub async fn start_replication(&self) {
        self.replica.run("START SLAVE").await;
    }

    /// Kills the replica's process, as a crash would; connections to it fail from now on.
    pub fn stop_replica(&mut self) {
        self.replica.kill();
    }

    async fn set_up_replication(&self) {
        let mut c = self.primary.connect().await;
        for statement in [
            // Not logged, so the replica does not try to create the user again.
            "SET SESSION sql_log_bin = 0".to_owned(),
            format!("CREATE USER '{REPLICATION_USER}'@'127.0.0.1' IDENTIFIED BY '{REPLICATION_PASSWORD}'"),
            format!("GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1'"),
        ] {
            within(&statement, sqlx::raw_sql(&statement).execute(&mut c))
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let _ = c.close().await;
        self.replica
            .run(&format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = '{REPLICATION_USER}', \
                 MASTER_PASSWORD = '{REPLICATION_PASSWORD}', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                self.primary.port
            ))
            .await;
        self.start_replication().await;
        // Something to replicate, so catching up proves the link works.
        self.primary.run("CREATE DATABASE flashback_replica_probe").await;
        self.wait_caught_up().await;
    }
}

async fn replication_status(replica: &mut MySqlConnection) -> String {
    use sqlx::Row;
    match sqlx::raw_sql("SHOW SLAVE STATUS").fetch_all(replica).await.map(|rows| rows.into_iter().next()) {
        Ok(Some(row)) => ["Slave_IO_Running", "Slave_SQL_Running", "Last_IO_Error", "Last_SQL_Error"]
            .iter()
            .map(|col| format!("{col}={}", row.try_get::<String, _>(*col).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        Ok(None) => "replication is not configured".to_owned(),
        Err(e) => format!("SHOW SLAVE STATUS failed: {e}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    fn server_id(self) -> u32 {
        match self {
            Role::Primary => 1,
            Role::Replica => 2,
        }
    }
}

/// One `mariadbd` process and its directory (`<pair dir>/<role>`); killed on drop.
#[derive(Debug)]
struct Server {
    role: Role,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts the server of `role` on its installed directory, retrying on a taken port.
    async fn start(role: Role, pair_dir: &Path) -> Self {
        let dir = pair_dir.join(role.name());
        let mut server = Self { role, dir, port: 0, child: None };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            let _ = std::fs::remove_file(server.log_path());
            server.child = Some(server.spawn());
            match server.wait_until_answering().await {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") && attempt < START_ATTEMPTS => server.kill(),
                Err(log) => panic!("the {} mariadbd did not start on port {}:\n{log}", role.name(), server.port),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    fn spawn(&self) -> Child {
        let d = &self.dir;
        let mut args = vec![
            "--no-defaults".to_owned(),
            // mariadbd refuses to run as root without it; as another user it is only a warning.
            "--user=root".to_owned(),
            format!("--datadir={}", d.join("data").display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--socket={}", d.join("sock").display()),
            format!("--tmpdir={}", d.join("tmp").display()),
            format!("--pid-file={}", d.join("pid").display()),
            format!("--log-error={}", self.log_path().display()),
            format!("--server-id={}", self.role.server_id()),
            "--skip-name-resolve".to_owned(),
            "--gtid-strict-mode=1".to_owned(),
            "--innodb-buffer-pool-size=32M".to_owned(),
            "--innodb-log-file-size=8M".to_owned(),
            "--innodb-flush-log-at-trx-commit=2".to_owned(),
        ];
        if self.role == Role::Primary {
            args.push(format!("--log-bin={}", d.join("data").join("binlog").display()));
            args.push("--binlog-format=ROW".to_owned());
        } else {
            args.push(format!("--relay-log={}", d.join("data").join("relay").display()));
            args.push("--read-only".to_owned());
        }
        Command::new(mariadbd())
            .args(&args)
            // Out of the terminal's process group, so Ctrl-C reaches only the test (and the
            // watchdog then ends these).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", mariadbd().display()))
    }

    /// Polls until a connection succeeds; `Err(log)` if the process exits or time runs out.
    async fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let url = self.url();
            if let Ok(Ok(c)) = tokio::time::timeout(STEP_TIMEOUT, MySqlConnection::connect(&url)).await {
                let _ = c.close().await;
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("exited with {status}\n{}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer within {START_TIMEOUT:?}\n{}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    async fn connect(&self) -> MySqlConnection {
        within("connecting", MySqlConnection::connect(&self.url()))
            .await
            .unwrap_or_else(|e| panic!("connecting to the {} on port {}: {e}", self.role.name(), self.port))
    }

    /// Runs one statement (text protocol, so replication statements work too).
    async fn run(&self, statement: &str) {
        let mut c = self.connect().await;
        within(statement, sqlx::raw_sql(statement).execute(&mut c))
            .await
            .unwrap_or_else(|e| panic!("{statement} on the {}: {e}", self.role.name()));
        let _ = c.close().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} error log (last lines) ---\n{}",
            self.role.name(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `mariadb-install-db` into `<pair dir>/<role>/data`, root reachable over TCP without a
/// password. Each server gets its own `tmp` directory: installs sharing `/tmp` have been seen
/// to trip over each other's temporary tables.
async fn install(pair_dir: &Path, role: Role) -> Result<(), String> {
    let dir = pair_dir.join(role.name());
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let child = tokio::process::Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .args(["--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg("--innodb-log-file-size=8M")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout can end the bootstrap server it runs, too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running mariadb-install-db (is MariaDB installed?): {e}"))?;
    let group = child.id().map(|id| format!("-{id}"));
    let out = match tokio::time::timeout(INSTALL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("waiting for mariadb-install-db: {e}")),
        Err(_) => {
            if let Some(group) = group {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            }
            return Err(format!(
                "mariadb-install-db for the {} did not finish within {INSTALL_TIMEOUT:?}",
                role.name()
            ));
        }
    };
    if !out.status.success() {
        return Err(format!(
            "mariadb-install-db for the {} failed ({}):\n{}\n{}",
            role.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// `step`, or a panic naming `what` if it takes longer than [`STEP_TIMEOUT`].
async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP_TIMEOUT:?}"))
}

fn mariadbd() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.exists() { sbin } else { PathBuf::from("mariadbd") }
}
