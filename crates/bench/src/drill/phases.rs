//! The phases, one fault each, under the same steady load: a baseline, the fault (an instance
//! killed or stopped and started again, or a backend killed for the outage and started again on
//! the same port and data), then a recovery window from the moment it is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use super::cluster::{Backend, Cluster, INSTANCES};
use super::record::{Class, Recorder};
use super::{inflight, summary};

/// How long after the recovery window a phase waits at most for the deployment to be whole
/// again (every class succeeding promptly, both instances taking traffic), so the next phase
/// starts from a steady baseline and a slow recovery is measured rather than cut off.
const SETTLE_MAX: Duration = Duration::from_secs(90);
/// How long the load must have succeeded before the deployment counts as whole again, ms.
const STEADY_MS: u64 = 1_000;
/// How often settling is checked.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// One fault of the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// SIGKILL instance 1, then start it again.
    Sigkill,
    /// SIGTERM instance 2, then start it again.
    Sigterm,
    /// Kill redis-server for the outage, then start it again.
    Redis,
    /// Kill mariadbd for the outage, then start it again.
    Mariadb,
    /// Kill the RabbitMQ node for the outage, then start it again.
    Rabbitmq,
}

impl Fault {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Sigkill => "sigkill",
            Fault::Sigterm => "sigterm",
            Fault::Redis => "redis",
            Fault::Mariadb => "mariadb",
            Fault::Rabbitmq => "rabbitmq",
        }
    }
}

/// How long each part of a phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Steady load before the fault.
    pub baseline: Duration,
    /// How long a backend stays down.
    pub outage: Duration,
    /// Steady load after the instance or backend is back.
    pub recovery: Duration,
}

/// When things happened in a phase, ms on the drill's clock.
#[derive(Debug, Clone)]
pub struct PhaseRun {
    /// Which fault.
    pub fault: Fault,
    /// What was done, for people.
    pub action: String,
    /// The phase began (baseline).
    pub start_ms: u64,
    /// The fault happened.
    pub fault_ms: u64,
    /// The instance was ready again, or the backend answered again.
    pub back_ms: u64,
    /// The recovery window closed.
    pub end_ms: u64,
    /// The instance killed (SIGKILL only), and when it was dead (reaped).
    pub killed: Option<(SocketAddr, u64)>,
    /// Anything worth knowing that is not a number (an instance that did not exit cleanly).
    pub notes: Vec<String>,
}

/// Runs one phase.
pub async fn run(cluster: &mut Cluster, recorder: &Recorder, fault: Fault, timing: Timing) -> anyhow::Result<PhaseRun> {
    let start_ms = recorder.now_ms();
    eprintln!("drill: phase {}: baseline {:?}", fault.name(), timing.baseline);
    tokio::time::sleep(timing.baseline).await;
    let fault_ms = recorder.now_ms();
    let mut notes = Vec::new();
    let mut killed = None;
    let action = match fault {
        Fault::Sigkill => {
            cluster.kill_instance(0).await?;
            killed = Some((cluster.upstream(0), recorder.now_ms()));
            cluster.start_instance(0).await?;
            "SIGKILL instance 1, then start it again".to_owned()
        }
        Fault::Sigterm => {
            if !cluster.stop_instance(1).await? {
                notes.push("instance 2 did not exit cleanly after SIGTERM".into());
            }
            cluster.start_instance(1).await?;
            "SIGTERM instance 2, then start it again".to_owned()
        }
        Fault::Redis => outage(cluster, Backend::Redis, "redis-server", timing.outage).await?,
        Fault::Mariadb => outage(cluster, Backend::MariaDb, "mariadbd", timing.outage).await?,
        Fault::Rabbitmq => outage(cluster, Backend::RabbitMq, "the RabbitMQ node", timing.outage).await?,
    };
    let back_ms = recorder.now_ms();
    let log_at_back = cluster.access_log().lines().count();
    eprintln!(
        "drill: phase {}: back after {:.1} s; recovery window {:?}",
        fault.name(),
        back_ms.saturating_sub(fault_ms) as f64 / 1000.0,
        timing.recovery
    );
    tokio::time::sleep(timing.recovery).await;
    if let Some(note) = settle(cluster, recorder, back_ms, log_at_back).await {
        eprintln!("drill: phase {}: {note}", fault.name());
        notes.push(note);
    }
    let end_ms = recorder.now_ms();
    Ok(PhaseRun { fault, action, start_ms, fault_ms, back_ms, end_ms, killed, notes })
}

/// Kills `backend`, waits `outage`, starts it again; says what it did.
async fn outage(cluster: &mut Cluster, backend: Backend, name: &str, outage: Duration) -> anyhow::Result<String> {
    cluster.kill(backend)?;
    tokio::time::sleep(outage).await;
    cluster.restart(backend)?;
    Ok(format!("kill {name} for {} s, then start it again", outage.as_secs()))
}

/// Waits (at most [`SETTLE_MAX`]) until the load has succeeded promptly for [`STEADY_MS`]
/// since it recovered from the fault that ended at `back_ms`, and nginx has had answers from
/// every instance since then (access log lines after the first `log_at_back`). Says what it
/// waited for, if it waited.
async fn settle(cluster: &Cluster, recorder: &Recorder, back_ms: u64, log_at_back: usize) -> Option<String> {
    let started = Instant::now();
    loop {
        let now = recorder.now_ms();
        let recovered = summary::recovery_ms(&recorder.samples(), &Class::ALL, back_ms, now)
            .is_some_and(|r| now >= back_ms.saturating_add(r).saturating_add(STEADY_MS));
        let serving = inflight::serving(&cluster.access_log(), log_at_back);
        let idle: Vec<String> = (0..INSTANCES)
            .filter(|&i| !serving.contains(&cluster.upstream(i).to_string()))
            .map(|i| format!("instance {}", i + 1))
            .collect();
        let waited = started.elapsed();
        if recovered && idle.is_empty() {
            return (waited >= SETTLE_POLL)
                .then(|| format!("waited {:.1} s past the recovery window to settle", waited.as_secs_f64()));
        }
        if waited >= SETTLE_MAX {
            let why = if recovered {
                format!("{} took no traffic", idle.join(" and "))
            } else {
                "the load still failed".into()
            };
            return Some(format!("not settled {} s past the recovery window: {why}", SETTLE_MAX.as_secs()));
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}
