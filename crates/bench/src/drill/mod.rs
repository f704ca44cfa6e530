//! `flashback-bench drill`: a deployment of its own (two instances behind nginx on MariaDB,
//! Redis and RabbitMQ, all from Debian's packages on free loopback ports), a steady mixed load
//! through nginx, and one fault after another; then the audits, the acknowledged writes read
//! back, the dead letters, and each target met or missed.

mod acked;
mod audits;
mod calls;
mod cluster;
mod config;
mod fixture;
mod inflight;
mod phases;
mod record;
mod report;
mod summary;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use self::calls::Context;
use self::cluster::Cluster;
use self::phases::{Fault, Timing};
use self::record::{Class, Recorder};
use self::report::{PhaseReport, Report, Settings};
use crate::api::{Api, http_client};
use crate::run::Interrupted;

/// `drill` flags.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// How long each backend (Redis, MariaDB, RabbitMQ) stays down.
    #[arg(long, default_value_t = 20)]
    pub outage_secs: u64,
    /// Steady load before each fault.
    #[arg(long, default_value_t = 5)]
    pub baseline_secs: u64,
    /// Steady load after the instance or backend is back, in which recovery is measured.
    #[arg(long, default_value_t = 12)]
    pub recovery_secs: u64,
    /// Requests per second through nginx, every class together.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// The faults, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sigkill,sigterm,redis,mariadb,rabbitmq")]
    pub phases: Vec<Fault>,
    /// How long the read-back waits for tickets and tracking events to settle.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout_secs: u64,
    /// The flashback binary [default: next to this binary, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub flashback: Option<PathBuf>,
    /// The nginx configuration to run [default: the repository's deploy/nginx].
    #[arg(long, value_name = "DIR")]
    pub nginx_config: Option<PathBuf>,
    /// Keep nginx's access and error logs and every request of the load (`requests.csv`) in
    /// this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// Print one JSON object as the last line of standard output (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

fn check(args: &DrillArgs) -> anyhow::Result<()> {
    for (flag, secs) in [
        ("--outage-secs", args.outage_secs),
        ("--baseline-secs", args.baseline_secs),
        ("--recovery-secs", args.recovery_secs),
        ("--settle-timeout-secs", args.settle_timeout_secs),
    ] {
        anyhow::ensure!((1..=600).contains(&secs), "{flag}: 1 to 600 seconds");
    }
    anyhow::ensure!((1..=1000).contains(&args.rate), "--rate: 1 to 1000 requests per second");
    anyhow::ensure!(!args.phases.is_empty(), "--phases: at least one");
    Ok(())
}

/// Runs the drill; `Ok(every target met)`.
pub async fn main(args: DrillArgs) -> anyhow::Result<bool> {
    check(&args)?;
    let binary = crate::server::locate(args.flashback.as_deref())?;
    let deploy = args.nginx_config.clone().unwrap_or_else(flashback_harness::nginx::repo_deploy_dir);
    anyhow::ensure!(
        deploy.join("flashback.conf").is_file(),
        "{}: no flashback.conf (--nginx-config)",
        deploy.display()
    );
    let http = http_client(64)?;
    let mut cluster = tokio::select! {
        c = Cluster::start(binary, &deploy, http.clone()) => c?,
        _ = tokio::signal::ctrl_c() => return Err(Interrupted.into()),
    };
    let outcome = tokio::select! {
        r = drill(&args, &mut cluster, http) => r,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    };
    cluster.shutdown().await;
    let report = outcome?;
    if args.json {
        eprint!("{}", report.human());
        println!("{}", serde_json::to_string(&report).context("serialising the report")?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.targets_met)
}

async fn drill(args: &DrillArgs, cluster: &mut Cluster, http: reqwest::Client) -> anyhow::Result<Report> {
    let base = cluster.url()?;
    let api = Api::new(http.clone(), base.clone());
    let fixture = fixture::prepare(&api).await.context("preparing the drill's products, buyers and sale")?;
    let recorder = Recorder::new();
    let ctx = Arc::new(Context {
        http,
        base,
        event_prefix: u64::from_str_radix(&fixture.tag, 16).unwrap_or(1),
        fixture,
        recorder: recorder.clone(),
        events_sent: AtomicU64::new(0),
        requests_sent: AtomicU64::new(0),
    });
    let timing = Timing {
        baseline: Duration::from_secs(args.baseline_secs),
        outage: Duration::from_secs(args.outage_secs),
        recovery: Duration::from_secs(args.recovery_secs),
    };
    let load = traffic::Traffic::start(Arc::clone(&ctx), args.rate);
    let mut runs = Vec::new();
    for &fault in &args.phases {
        match phases::run(cluster, &recorder, fault, timing).await {
            Ok(run) => runs.push(run),
            Err(e) => {
                load.stop().await;
                return Err(e.context(format!("phase {}", fault.name())));
            }
        }
    }
    let skipped_requests = load.stop().await;
    eprintln!("drill: load stopped; reading back the acknowledged writes");
    let samples = recorder.samples();
    if let Some(dir) = &args.logs {
        keep_logs(dir, cluster, &samples)?;
    }
    let access_log = inflight::upstreams_by_request(&cluster.access_log());
    let phases: Vec<PhaseReport> = runs
        .iter()
        .map(|run| {
            let tally = summary::tally(&samples, run.start_ms, run.end_ms);
            let recovery = summary::recovery_ms(&samples, &Class::ALL, run.back_ms, run.end_ms);
            let kill = run.killed.map(|(addr, dead_ms)| {
                inflight::attribute(&samples, &access_log, addr, (run.fault_ms, dead_ms), (run.start_ms, run.end_ms))
            });
            PhaseReport::new(run, tally, recovery, kill)
        })
        .collect();
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let acked = recorder.acknowledged();
    let acknowledged =
        acked::check(&api, &ctx.fixture.buyers, &acked, &cluster.store_url(), &ctx.module(), settle).await;
    let audits = audits::run(cluster, &ctx.fixture.sale_id).await;
    let (dead_letters, dead_letters_error) = match cluster.dead_letters() {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let report = Report {
        settings: Settings {
            outage_secs: args.outage_secs,
            baseline_secs: args.baseline_secs,
            recovery_secs: args.recovery_secs,
            rate: args.rate,
        },
        phases,
        total: summary::tally(&samples, 0, u64::MAX),
        skipped_requests,
        audits,
        acknowledged,
        dead_letters,
        dead_letters_error,
        missed: Vec::new(),
        targets_met: false,
    };
    Ok(report.judge())
}

/// Writes nginx's logs and one line per request (`rid,class,start_ms,end_ms,outcome`, on the
/// drill's clock) into `dir`.
fn keep_logs(dir: &std::path::Path, cluster: &Cluster, samples: &[record::Sample]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("--logs {}", dir.display()))?;
    let mut csv = String::from("rid,class,start_ms,end_ms,outcome\n");
    for s in samples {
        let outcome = match s.verdict {
            record::Verdict::Ok => "ok",
            record::Verdict::Refused => "refused",
            record::Verdict::Failed(kind) => kind.name(),
        };
        let _ = writeln!(csv, "{},{},{},{},{outcome}", calls::request_id(s.rid), s.class.name(), s.start_ms, s.end_ms);
    }
    for (name, text) in
        [("nginx-access.log", cluster.access_log()), ("nginx-error.log", cluster.error_log()), ("requests.csv", csv)]
    {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    eprintln!("drill: logs kept in {}", dir.display());
    Ok(())
}
