//! `flashback-bench track`: the tracking ingest path end to end. Prepared batches are posted
//! to `POST /api/v1/track` by concurrent clients (every 202 is durable), the writer's drain is
//! timed through the stats API, and on a self-started embedded server the same `track.db` then
//! takes a raw bulk insert of as many events, the baseline both rates are compared with.
//!
//! Verified means: the server accepted every distinct event once and reported every re-send as
//! a duplicate, the rollups and the day tables (hourly) both hold exactly the distinct events
//! per action, the writer's backlog returned to 0, and (self-started) the day tables hold
//! exactly that many rows.

mod check;
pub mod events;
mod ingest;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use flashback_store::StoreOptions;
use flashback_store::track::TrackStore;
use serde_json::{Value, json};

use crate::api::{self, Api, field};
use crate::cpu::CpuSample;
use crate::load::ms;
use crate::report::Machine;
use crate::server::{Server, ServerSpec};

/// The admin account a self-started server gets for the stats API.
const ADMIN: (&str, &str) = ("bench-admin", "bench-admin-password");

/// `track` flags.
#[derive(Debug, Clone, Args)]
pub struct TrackArgs {
    /// Events sent in all (re-sent duplicates included).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent clients (tokio tasks sharing one keep-alive HTTP/1.1 client).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Distinct objects, with a skewed popularity.
    #[arg(long, default_value_t = 1_000)]
    pub objects: u64,
    /// Distinct visitors (a fifth of them signed in).
    #[arg(long, default_value_t = 50_000)]
    pub visitors: u64,
    /// Share of events that re-send an event of an earlier batch, in percent.
    #[arg(long, default_value_t = 0.5)]
    pub duplicates_pct: f64,
    /// Gzip the request bodies.
    #[arg(long)]
    pub gzip: bool,
    /// Events in the raw-insert baseline [default: as many as the distinct events sent].
    #[arg(long)]
    pub raw_events: Option<usize>,
    /// How long to wait for the writer to store everything.
    #[arg(long, default_value_t = 600)]
    pub drain_timeout_secs: u64,
    /// An existing deployment instead of a self-started server (no raw baseline then).
    #[arg(long, value_name = "URL")]
    pub target: Option<url::Url>,
    /// The flashback binary [default: next to this binary, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub flashback: Option<PathBuf>,
    /// With --target: an admin account (the stats API is for admins).
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// With --target: its password.
    #[arg(long, default_value = "admin-password")]
    pub admin_password: String,
    /// Print one JSON object as the last line of standard output (the summary goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark; `Ok(false)` when it was not verified.
pub async fn main(args: TrackArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.events > 0 && args.batch > 0 && args.clients > 0, "--events, --batch, --clients: positive");
    anyhow::ensure!(args.objects > 0 && args.visitors > 0, "--objects, --visitors: positive");
    anyhow::ensure!((0.0..50.0).contains(&args.duplicates_pct), "--duplicates-pct: 0 to 50");
    let run = async {
        match &args.target {
            Some(target) => {
                let api = Api::new(api::http_client(args.clients + 4)?, target.clone());
                let mut report =
                    measure(&args, &api, (&args.admin_user, &args.admin_password), None, format!("target {target}"))
                        .await?;
                report.finish(false);
                Ok(report)
            }
            None => self_started(&args).await,
        }
    };
    let report = tokio::select! {
        r = run => r?,
        _ = tokio::signal::ctrl_c() => return Err(crate::run::Interrupted.into()),
    };
    let verified = report.verified();
    let summary = report.json();
    if args.json {
        eprintln!("{}", report.human());
        println!("{summary}");
    } else {
        println!("{}", report.human());
    }
    Ok(verified)
}

/// Server settings: quiet logs and the per-client limit raised (all load comes from one IP);
/// everything else is the default.
fn env() -> Vec<(String, String)> {
    [
        ("FLASHBACK_LOG_LEVEL", "warn"),
        ("FLASHBACK_LOG_FORMAT", "pretty"),
        ("FLASHBACK_TRACK_PER_CLIENT_PER_SEC", "1000000000"),
        // Stopped at the end with nothing in front of it: no need to drain.
        ("FLASHBACK_HTTP_DRAIN_DELAY_MS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn self_started(args: &TrackArgs) -> anyhow::Result<Report> {
    let binary = crate::server::locate(args.flashback.as_deref())?;
    let data_dir = tempfile::Builder::new().prefix("flashback-bench-track-").tempdir().context("making a data dir")?;
    let spec = ServerSpec { binary, data_dir: data_dir.path().to_owned(), env: env() };
    let out = spec
        .command()
        .args(["user", "add", "--username", ADMIN.0, "--password", ADMIN.1, "--role", "admin"])
        .output()
        .await
        .context("running flashback user add")?;
    anyhow::ensure!(out.status.success(), "flashback user add failed: {}", String::from_utf8_lossy(&out.stderr));

    let http = api::http_client(args.clients + 4)?;
    let server = Server::start(&spec, &http, &[]).await?;
    let api = Api::new(http, server.base().clone());
    let measured =
        measure(args, &api, ADMIN, server.pid(), "self-started (embedded: local queue, SQLite)".into()).await;
    let mut report = match measured {
        Ok(r) => r,
        Err(e) => return Err(e.context(format!("the server's stderr ends:\n{}", server.tail()))),
    };
    let tail = server.tail();
    let stopped = server.stop().await?;
    if !stopped {
        eprintln!("bench: warning: the server did not exit cleanly; its stderr ends:\n{tail}");
    }
    report.stopped_cleanly = Some(stopped);

    // The baseline, on the same file the writer filled.
    let options = StoreOptions {
        url: None,
        data_dir: data_dir.path().to_owned(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        breaker: Default::default(),
    };
    let store =
        TrackStore::open_file(&data_dir.path().join("track.db"), &options, 0).await.context("opening track.db")?;
    report.stored_rows = Some(store.stored_events().await.context("counting stored events")?);
    let n = args.raw_events.unwrap_or(usize::try_from(report.unique).unwrap_or(usize::MAX)).max(1);
    let received = crate::setup::now_ms();
    let rows: Vec<_> = (0..n as u64).map(|i| report.shape.stored(i, received)).collect();
    eprintln!("bench: raw baseline: inserting {n} events into a scratch table of the same track.db");
    let started = Instant::now();
    store.raw_insert(&rows).await.context("the raw insert")?;
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    report.raw = Some((n, secs));
    report.finish(true);
    Ok(report)
}

/// Builds the bodies, ingests, waits for the drain and reads the run back.
async fn measure(
    args: &TrackArgs,
    api: &Api,
    (user, password): (&str, &str),
    server_pid: Option<u32>,
    server: String,
) -> anyhow::Result<Report> {
    let machine = Machine::detect();
    let login = crate::setup::login(api, user, password).await.context("logging in for the stats API")?;
    let token = field(&login, "token", "login")?.to_owned();
    let role = login.pointer("/user/role").and_then(Value::as_str).unwrap_or_default();
    anyhow::ensure!(role == "admin", "{user} has role {role:?}: the stats API needs an admin");

    let now_ms = crate::setup::now_ms();
    let nonce = u64::try_from(now_ms).unwrap_or(0) ^ (u64::from(std::process::id()) << 40);
    let shape = events::Shape {
        events: args.events,
        batch: args.batch,
        objects: args.objects,
        visitors: args.visitors,
        duplicates_per_million: per_million(args.duplicates_pct),
        module: format!("bench-{:012x}", nonce & 0xffff_ffff_ffff),
        id_prefix: nonce,
        now_ms,
        gzip: args.gzip,
    };
    eprintln!(
        "bench: building {} events in batches of {}{} (module {})",
        args.events,
        args.batch,
        if args.gzip { ", gzip" } else { "" },
        shape.module
    );
    let built = shape.build()?;
    eprintln!(
        "bench: {} bodies, {:.1} MiB; {} distinct events, {} re-sends; {} on {} cpus ({}), load {:?}",
        built.bodies.len(),
        built.bytes as f64 / 1_048_576.0,
        built.unique,
        built.duplicates,
        server,
        machine.cpus,
        machine.cpu_model,
        machine.load_avg_1m
    );
    let days = check::days(now_ms);
    let before: i64 = check::rollup_pv(api, &token, &days, &shape.module).await?.iter().sum();
    anyhow::ensure!(before == 0, "the run's module already has {before} events");

    let (bodies, sizes) = (Arc::new(built.bodies), Arc::new(built.sizes));
    eprintln!("bench: ingest: {} clients", args.clients);
    let cpu = CpuSample::take(server_pid);
    let start = Instant::now();
    let ingested = ingest::run(api.http(), api.url("api/v1/track")?, bodies, sizes, args.clients, args.gzip).await?;
    let cpu_ingest = cpu.since(server_pid);
    let cpu = CpuSample::take(server_pid);
    let expected = i64::try_from(ingested.accepted).unwrap_or(i64::MAX);
    let timeout = Duration::from_secs(args.drain_timeout_secs);
    let (drained, stored) = check::wait_drained(api, &token, &days, &shape.module, expected, start, timeout).await?;
    let cpu_drain = cpu.since(server_pid);
    let rollup = check::rollup_pv(api, &token, &days, &shape.module).await?;
    let hourly = check::hourly_pv(api, &token, &days, &shape.module).await?;
    let uv = check::view_uv(api, &token, &days, &shape.module).await?;
    let backlog = check::backlog_settles(api, Duration::from_secs(10)).await?;
    Ok(Report {
        server,
        machine,
        args: args.clone(),
        unique: built.unique,
        duplicates: built.duplicates,
        per_action: built.per_action,
        bytes: built.bytes,
        shape,
        ingested,
        drained,
        stored,
        rollup,
        hourly,
        uv,
        backlog,
        cpu_ingest,
        cpu_drain,
        stopped_cleanly: None,
        stored_rows: None,
        raw: None,
        problems: Vec::new(),
    })
}

/// What a run measured and found.
#[derive(Debug)]
struct Report {
    server: String,
    machine: Machine,
    args: TrackArgs,
    unique: u64,
    duplicates: u64,
    per_action: [u64; 3],
    bytes: u64,
    shape: events::Shape,
    ingested: ingest::IngestResult,
    drained: Option<Duration>,
    stored: i64,
    rollup: [i64; 3],
    hourly: [i64; 3],
    uv: u64,
    backlog: Option<i64>,
    cpu_ingest: crate::cpu::CpuSplit,
    cpu_drain: crate::cpu::CpuSplit,
    stopped_cleanly: Option<bool>,
    /// Rows in the day tables, counted on the file (self-started only).
    stored_rows: Option<i64>,
    /// Raw baseline: events and seconds (self-started only).
    raw: Option<(usize, f64)>,
    problems: Vec<String>,
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

impl Report {
    fn events_per_sec(&self) -> f64 {
        per_sec(self.ingested.accepted, self.ingested.elapsed.as_secs_f64())
    }

    fn drain_per_sec(&self) -> Option<f64> {
        self.drained.map(|d| per_sec(self.unique, d.as_secs_f64()))
    }

    fn raw_per_sec(&self) -> Option<f64> {
        self.raw.map(|(n, secs)| per_sec(n as u64, secs))
    }

    /// Collects the problems; `baseline_expected` when the raw insert should have run.
    fn finish(&mut self, baseline_expected: bool) {
        let mut p = Vec::new();
        let i = &self.ingested;
        if i.accepted != self.unique {
            p.push(format!("the server accepted {} events; {} distinct were sent", i.accepted, self.unique));
        }
        if i.duplicates != self.duplicates {
            p.push(format!("the server reported {} duplicates; {} were re-sent", i.duplicates, self.duplicates));
        }
        if i.too_late > 0 {
            p.push(format!("{} events were refused as too late", i.too_late));
        }
        if i.failed_batches > 0 {
            p.push(format!("{} batches ({} events) never got a 202", i.failed_batches, i.failed_events));
        }
        if self.drained.is_none() {
            p.push(format!("the writer had stored {} of {} events at the timeout", self.stored, i.accepted));
        }
        let expected: Vec<i64> = self.per_action.iter().map(|n| i64::try_from(*n).unwrap_or(i64::MAX)).collect();
        if self.rollup[..] != expected[..] {
            p.push(format!("rollup PV per action {:?}, expected {expected:?}", self.rollup));
        }
        if self.hourly[..] != expected[..] {
            p.push(format!("hourly PV per action {:?}, expected {expected:?}", self.hourly));
        }
        if self.backlog != Some(0) {
            p.push(format!("flashback_track_backlog is {:?}, not 0", self.backlog));
        }
        if let Some(rows) = self.stored_rows
            && rows != i64::try_from(self.unique).unwrap_or(i64::MAX)
        {
            p.push(format!("the day tables hold {rows} rows; {} distinct events were sent", self.unique));
        }
        if baseline_expected && self.raw.is_none() {
            p.push("the raw baseline did not run".into());
        }
        if self.stopped_cleanly == Some(false) {
            p.push("the server did not exit cleanly".into());
        }
        self.problems = p;
    }

    fn verified(&self) -> bool {
        self.problems.is_empty()
    }

    fn json(&self) -> Value {
        let q = |x: f64| ms(self.ingested.latency.value_at_quantile(x));
        let raw = self.raw_per_sec();
        let ratio = |x: Option<f64>| match (x, raw) {
            (Some(x), Some(r)) if r > 0.0 => Some((x / r * 1000.0).round() / 1000.0),
            _ => None,
        };
        let actions: serde_json::Map<String, Value> = events::ACTIONS
            .iter()
            .enumerate()
            .map(|(k, (a, _))| {
                (
                    a.to_string(),
                    json!({ "sent": self.per_action[k], "rollup": self.rollup[k], "hourly": self.hourly[k] }),
                )
            })
            .collect();
        json!({
            "bench": "track",
            "server": self.server,
            "machine": self.machine,
            "events": self.args.events,
            "batch": self.args.batch,
            "clients": self.args.clients,
            "gzip": self.args.gzip,
            "body_bytes": self.bytes,
            "module": self.shape.module,
            "unique_events": self.unique,
            "duplicates_sent": self.duplicates,
            "duplicates_reported": self.ingested.duplicates,
            "accepted": self.ingested.accepted,
            "ingest_secs": round3(self.ingested.elapsed.as_secs_f64()),
            "events_per_sec": self.events_per_sec().round(),
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "p999_ms": q(0.999),
            "max_ms": ms(self.ingested.latency.max()),
            "non_202": self.ingested.non_202,
            "failed_batches": self.ingested.failed_batches,
            "drain_secs": self.drained.map(|d| round3(d.as_secs_f64())),
            "drain_per_sec": self.drain_per_sec().map(f64::round),
            "raw_insert_events": self.raw.map(|r| r.0),
            "raw_insert_secs": self.raw.map(|r| round3(r.1)),
            "raw_insert_per_sec": raw.map(f64::round),
            "ingest_ratio_to_raw": ratio(Some(self.events_per_sec())),
            "drain_ratio_to_raw": ratio(self.drain_per_sec()),
            "pv_by_action": actions,
            "uv_views": self.uv,
            "stored_rows": self.stored_rows,
            "backlog": self.backlog,
            "cpu_ingest": self.cpu_ingest,
            "cpu_drain": self.cpu_drain,
            "server_stopped_cleanly": self.stopped_cleanly,
            "problems": self.problems,
            "verified": self.verified(),
        })
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let i = &self.ingested;
        let _ = writeln!(s, "track bench: {}", self.server);
        let load = self.machine.load_avg_1m.map_or_else(String::new, |l| format!(", load average {l:.2} at the start"));
        let _ = writeln!(s, "  machine       {} cpus ({}){load}", self.machine.cpus, self.machine.cpu_model);
        let _ = writeln!(
            s,
            "  load          {} events ({} distinct, {} re-sent) in batches of {}, {} clients{}",
            self.args.events,
            self.unique,
            self.duplicates,
            self.args.batch,
            self.args.clients,
            if self.args.gzip { ", gzip" } else { "" }
        );
        let _ = writeln!(
            s,
            "  ingest        {} accepted in {:.2} s = {:.0} events/s (202 = durable); duplicates reported {}",
            i.accepted,
            i.elapsed.as_secs_f64(),
            self.events_per_sec(),
            i.duplicates
        );
        let non: Vec<String> = i.non_202.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let _ = writeln!(
            s,
            "  latency       p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms per batch; non-202: {}",
            ms(i.latency.value_at_quantile(0.5)),
            ms(i.latency.value_at_quantile(0.99)),
            ms(i.latency.value_at_quantile(0.999)),
            ms(i.latency.max()),
            if non.is_empty() { "none".into() } else { non.join(", ") }
        );
        let _ = match (self.drained, self.drain_per_sec()) {
            (Some(d), Some(r)) => writeln!(
                s,
                "  drain         all stored {:.2} s after the ingest started = {r:.0} events/s",
                d.as_secs_f64()
            ),
            _ => writeln!(s, "  drain         NOT finished: {} of {} stored", self.stored, i.accepted),
        };
        match (self.raw, self.raw_per_sec()) {
            (Some((n, secs)), Some(r)) => {
                let _ = writeln!(
                    s,
                    "  raw insert    {n} events in {secs:.2} s = {r:.0} events/s; ingest {:.2}x, drain {} of it",
                    self.events_per_sec() / r,
                    self.drain_per_sec().map_or_else(|| "-".into(), |d| format!("{:.2}x", d / r))
                );
            }
            _ => {
                let _ = writeln!(s, "  raw insert    skipped (only on a self-started embedded server)");
            }
        }
        let pct = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
        let _ = writeln!(
            s,
            "  cpu           of one core; ingest: server {}, bench {}; drain wait: server {}, bench {}",
            pct(self.cpu_ingest.server_pct),
            pct(self.cpu_ingest.bench_pct),
            pct(self.cpu_drain.server_pct),
            pct(self.cpu_drain.bench_pct)
        );
        let _ = writeln!(
            s,
            "  stored        PV per action (view, click, add_to_cart): rollups {:?}, hourly {:?}, sent {:?}; view UV ≈ {}",
            self.rollup, self.hourly, self.per_action, self.uv
        );
        for p in &self.problems {
            let _ = writeln!(s, "  problem       {p}");
        }
        let _ = write!(s, "  verified      {}", if self.verified() { "yes" } else { "NO" });
        s
    }
}

#[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "main checks 0 <= pct < 50")]
fn per_million(pct: f64) -> u64 {
    (pct * 10_000.0).round() as u64
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
