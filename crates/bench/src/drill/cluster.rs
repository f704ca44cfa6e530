//! The drill's deployment, all of it its own on free loopback ports: `mariadbd` (main store and
//! two order shards), `redis-server`, a RabbitMQ node, two `flashback serve` instances and nginx
//! in front; and the faults: kill or stop an instance, kill a backend and start it again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flashback_harness::mariadb::MariaDb;
use flashback_harness::nginx::Nginx;
use flashback_harness::rabbitmq::RabbitMq;
use flashback_harness::redis::RedisServer;
use flashback_harness::watchdog::Watchdog;
use sqlx::Connection;

use super::config::{self, Backends};
use crate::server::{Server, ServerSpec};

/// Instances behind nginx.
pub const INSTANCES: usize = 2;
/// How long a stopping instance (SIGTERM) may take before it is killed: the drain delay and
/// the shutdown grace, with room.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(40);

/// A backend the drill takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `redis-server`.
    Redis,
    /// `mariadbd`.
    MariaDb,
    /// The RabbitMQ node.
    RabbitMq,
}

/// Runs a harness step that may block for seconds (and panics on failure) off the async
/// workers, turning a panic into an error.
fn blocking<T>(what: &str, step: impl FnOnce() -> T) -> anyhow::Result<T> {
    let outcome = tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)));
    outcome.map_err(|panic| anyhow::anyhow!("{what}: {}", panic_message(panic.as_ref())))
}

/// The message a harness panicked with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".into())
}

/// The running deployment. Dropping it kills every process it started and removes its files.
#[derive(Debug)]
pub struct Cluster {
    /// Instances first, so they stop before their backends.
    servers: [Option<Server>; INSTANCES],
    nginx: Nginx,
    specs: [ServerSpec; INSTANCES],
    ports: [u16; INSTANCES],
    http: reqwest::Client,
    config: PathBuf,
    mariadb: MariaDb,
    redis: RedisServer,
    rabbitmq: RabbitMq,
    /// Kills the instances (their `instance-<n>/pid` files) if the drill dies without unwinding.
    _watchdog: Watchdog,
    // Last: the instances' data directories and the configuration.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Brings everything up: backends, databases, the demo data, both instances, nginx.
    pub async fn start(binary: PathBuf, deploy_dir: &Path, http: reqwest::Client) -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("flashback-drill-").tempdir().context("making the drill's directory")?;
        let watchdog = Watchdog::spawn(dir.path());
        eprintln!("drill: starting mariadbd, redis-server and a RabbitMQ node");
        let (mariadb, redis, rabbitmq) = tokio::join!(
            tokio::task::spawn_blocking(MariaDb::try_start),
            tokio::task::spawn_blocking(|| std::panic::catch_unwind(RedisServer::start)),
            tokio::task::spawn_blocking(RabbitMq::try_start),
        );
        let mariadb = mariadb.context("starting mariadbd")?.map_err(anyhow::Error::msg)?;
        let redis =
            redis.context("starting redis-server")?.map_err(|p| anyhow::anyhow!("{}", panic_message(p.as_ref())))?;
        let rabbitmq = rabbitmq.context("starting RabbitMQ")?.map_err(anyhow::Error::msg)?;
        let backends = Backends { mysql_server: mariadb.url(), redis_url: redis.url(), amqp_url: rabbitmq.url() };
        create_databases(&backends).await?;
        let config = config::write(dir.path(), &backends)?;
        let specs: [ServerSpec; INSTANCES] = std::array::from_fn(|i| ServerSpec {
            binary: binary.clone(),
            data_dir: dir.path().join(format!("instance-{}", i + 1)),
            // Node numbers are leased from the store, as in deploy/k8s.
            env: Vec::new(),
        });
        run(&specs[0], &config, &["demo"]).await.context("loading the demo data (and applying migrations)")?;
        let ports: [u16; INSTANCES] = std::array::from_fn(|_| flashback_harness::ports::free_port());
        eprintln!("drill: starting {INSTANCES} instances on ports {ports:?}");
        let (a, b) =
            tokio::join!(launch(&specs[0], &config, &http, ports[0]), launch(&specs[1], &config, &http, ports[1]));
        let servers = [Some(a?), Some(b?)];
        let upstreams: Vec<SocketAddr> = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let nginx = blocking("starting nginx", || Nginx::start(deploy_dir, &upstreams))?;
        eprintln!("drill: nginx on {}", nginx.url());
        Ok(Self {
            servers,
            nginx,
            specs,
            ports,
            http,
            config,
            mariadb,
            redis,
            rabbitmq,
            _watchdog: watchdog,
            _dir: dir,
        })
    }

    /// nginx's base URL, `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> anyhow::Result<url::Url> {
        let base = self.nginx.url();
        let base = if base.ends_with('/') { base } else { format!("{base}/") };
        url::Url::parse(&base).with_context(|| format!("nginx url {base}"))
    }

    /// The address of instance `i`, as nginx's access log names it.
    pub fn upstream(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        self.nginx.error_log()
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> String {
        self.nginx.access_log()
    }

    /// Kills instance `i` (SIGKILL, as a crash would).
    pub async fn kill_instance(&mut self, i: usize) -> anyhow::Result<()> {
        match self.servers[i].take() {
            Some(s) => s.kill().await,
            None => bail!("instance {} is not running", i + 1),
        }
    }

    /// Asks instance `i` to stop (SIGTERM) and waits until it has; `Ok(clean exit)`.
    pub async fn stop_instance(&mut self, i: usize) -> anyhow::Result<bool> {
        match self.servers[i].take() {
            Some(s) => s.stop_within(STOP_TIMEOUT).await,
            None => bail!("instance {} is not running", i + 1),
        }
    }

    /// Starts instance `i` again on its port and data directory; returns once it is ready.
    pub async fn start_instance(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.servers[i].is_none(), "instance {} is already running", i + 1);
        self.servers[i] = Some(launch(&self.specs[i], &self.config, &self.http, self.ports[i]).await?);
        Ok(())
    }

    /// Kills `backend` (SIGKILL): its clients' connections drop, new ones are refused.
    pub fn kill(&mut self, backend: Backend) -> anyhow::Result<()> {
        match backend {
            Backend::Redis => blocking("killing redis-server", || self.redis.kill()),
            Backend::MariaDb => blocking("killing mariadbd", || self.mariadb.kill()),
            Backend::RabbitMq => blocking("killing RabbitMQ", || self.rabbitmq.kill()),
        }
    }

    /// Starts `backend` again on its port and data; returns once it answers.
    pub fn restart(&mut self, backend: Backend) -> anyhow::Result<()> {
        match backend {
            Backend::Redis => blocking("restarting redis-server", || self.redis.restart()),
            Backend::MariaDb => {
                blocking("restarting mariadbd", || self.mariadb.try_restart())?.map_err(anyhow::Error::msg)
            }
            Backend::RabbitMq => {
                blocking("restarting RabbitMQ", || self.rabbitmq.try_restart())?.map_err(anyhow::Error::msg)
            }
        }
    }

    /// Messages in `<prefix>.dead-letters` on the drill's RabbitMQ node. The instances declare
    /// it at start, so a node without it is an error, not zero.
    pub fn dead_letters(&self) -> anyhow::Result<u64> {
        let queues = blocking("listing queues", || self.rabbitmq.queues())?.map_err(anyhow::Error::msg)?;
        let name = format!("{}.dead-letters", config::EXCHANGE_PREFIX);
        match queues.iter().find(|(q, _)| *q == name) {
            Some((_, messages)) => Ok(*messages),
            None => bail!("no queue {name} on the drill's RabbitMQ node (queues: {queues:?})"),
        }
    }

    /// The main store's URL (root on the drill's own MariaDB).
    pub fn store_url(&self) -> String {
        format!("{}/{}", self.mariadb.url(), config::DATABASE)
    }

    /// Runs `flashback --config <drill config> <args>` as instance 1 would; its output.
    pub async fn flashback(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        output(&self.specs[0], &self.config, args).await
    }

    /// Stops both instances (SIGTERM) and everything else.
    pub async fn shutdown(mut self) {
        for server in self.servers.iter_mut().filter_map(Option::take) {
            let _ = server.stop_within(STOP_TIMEOUT).await;
        }
        let _ = blocking("stopping the backends", move || drop(self));
    }
}

/// `flashback --config <config> serve` on `port`, once it is ready.
/// Its pid goes to `<data dir>/pid`, where the cluster's [`Watchdog`] looks (the command line
/// names the data dir, as the watchdog requires).
async fn launch(spec: &ServerSpec, config: &Path, http: &reqwest::Client, port: u16) -> anyhow::Result<Server> {
    let config = config.to_string_lossy();
    let args = ["--config", config.as_ref()];
    let server = Server::start_at(spec, http, port, &args)
        .await
        .with_context(|| format!("starting the instance on port {port}"))?;
    if let Some(pid) = server.pid() {
        let file = spec.data_dir.join("pid");
        std::fs::write(&file, pid.to_string()).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(server)
}

/// `flashback --config <config> <args>` with the spec's data dir and environment.
async fn output(spec: &ServerSpec, config: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = spec.command();
    cmd.arg("--config").arg(config).args(args).kill_on_drop(true);
    let run = cmd.output();
    tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .with_context(|| format!("flashback {args:?} did not finish within 3 minutes"))?
        .with_context(|| format!("running flashback {args:?}"))
}

/// [`output`], failing with its standard error unless it succeeded.
async fn run(spec: &ServerSpec, config: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = output(spec, config, args).await?;
    anyhow::ensure!(
        out.status.success(),
        "flashback {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The main database and the order shards' databases.
async fn create_databases(backends: &Backends) -> anyhow::Result<()> {
    let mut conn = sqlx::MySqlConnection::connect(&backends.mysql_server).await.context("connecting to mariadbd")?;
    let shards = (0..config::SHARDS).map(|i| format!("{}_orders_{i}", config::DATABASE));
    for name in std::iter::once(config::DATABASE.to_owned()).chain(shards) {
        sqlx::query(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    conn.close().await.ok();
    Ok(())
}
