//! A `flashback serve` child process on a free loopback port: started, awaited until ready,
//! stopped with SIGTERM at the end, and killed by its guard if the bench stops early.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of the child's standard error kept for error messages.
const TAIL_LINES: usize = 40;
/// How long the server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `flashback` binary: `explicit`, else beside this executable, else on `PATH`.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.is_file(), "--flashback {}: no such file", path.display());
        return Ok(path.to_owned());
    }
    let sibling = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("flashback")));
    if let Some(path) = sibling.filter(|p| p.is_file()) {
        return Ok(path);
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("flashback"))
        .find(|p| p.is_file())
    {
        return Ok(path);
    }
    bail!(
        "no flashback binary: pass --flashback PATH, build it next to this one \
         (cargo build -p flashback --bin flashback), or put it on PATH"
    )
}

/// How to run the server and its commands: binary, data dir and `FLASHBACK_*` variables.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `flashback` binary.
    pub binary: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Configuration variables; every other inherited `FLASHBACK_*` variable is removed.
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    /// A `flashback` command with this spec's data dir and environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLASHBACK_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("RUST_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--data-dir").arg(&self.data_dir);
        cmd
    }
}

/// A running server. Dropping it kills the process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    base: url::Url,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `flashback serve <extra>` on a free loopback port and waits until `/readyz`
    /// answers 200. Retries twice when another process takes the port first.
    pub async fn start(spec: &ServerSpec, http: &reqwest::Client, extra: &[&str]) -> anyhow::Result<Server> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("finding a free loopback port")?
                .port();
            match Self::start_once(spec, http, port, extra).await {
                Ok(server) => return Ok(server),
                Err(e) if attempt < 3 && format!("{e:#}").contains("in use") => {
                    eprintln!("bench: port taken, retrying ({e:#})");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts `flashback serve <extra>` on loopback `port` (chosen by the caller, who may need
    /// the same port again after a restart) and waits until `/readyz` answers 200.
    pub async fn start_at(
        spec: &ServerSpec,
        http: &reqwest::Client,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        Self::start_once(spec, http, port, extra).await
    }

    async fn start_once(
        spec: &ServerSpec,
        http: &reqwest::Client,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let mut cmd = spec.command();
        cmd.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).args(extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", spec.binary.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&tail);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let base = url::Url::parse(&format!("http://127.0.0.1:{port}/")).context("server url")?;
        let mut server = Server { child, base, tail };
        server.wait_ready(http).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let ready = self.base.join("readyz").context("readyz url")?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().context("checking the server process")? {
                // Let the reader catch the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("flashback serve exited with {status} before it was ready; its stderr ends:\n{}", self.tail());
            }
            if let Ok(r) = http.get(ready.clone()).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("flashback serve was not ready after {READY_TIMEOUT:?}; its stderr ends:\n{}", self.tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The last lines the server wrote to standard error.
    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() { "(nothing)".to_owned() } else { t.iter().cloned().collect::<Vec<_>>().join("\n") }
    }

    /// SIGTERM, then wait for a graceful exit (killing it after [`STOP_TIMEOUT`]).
    /// Returns whether it exited cleanly (status 0).
    pub async fn stop(self) -> anyhow::Result<bool> {
        self.stop_within(STOP_TIMEOUT).await
    }

    /// SIGKILL, as a crash would, and reap it.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing the server")
    }

    /// SIGTERM, then wait up to `timeout` for it to exit (killing it after that). Returns
    /// whether it exited cleanly (status 0).
    pub async fn stop_within(mut self, timeout: Duration) -> anyhow::Result<bool> {
        if let Some(pid) =
            self.child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw)
        {
            // The process may already be gone; waiting below tells.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status.context("waiting for the server to stop")?.success()),
            Err(_) => {
                eprintln!("bench: the server did not stop within {timeout:?}; killing it");
                self.child.kill().await.context("killing the server")?;
                Ok(false)
            }
        }
    }
}
